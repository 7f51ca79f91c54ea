"""protocol/shaper.py: the per-peer token bucket with its bounded FIFO (RateLimit), on a fake clock."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from wgpy.constants import RATE_LIMIT_MIN_WAIT
from wgpy.protocol.shaper import Bucket, PeerLimit, default_burst, queue_bound


def pkts(n: int, size: int = 1000, tag: int = 0) -> list[bytes]:
    return [bytes([tag, i & 0xFF, i >> 8]) + b"x" * (size - 3) for i in range(n)]


def test_burst_goes_at_once_then_the_rate():
    b = Bucket(rate=100_000, burst=10_000, limit=50_000, now=0.0)     # 100 kB/s, 10 packets deep
    batch = pkts(30)
    ok = b.admit(batch, 0.0)
    assert ok == batch[:10]                     # the full bucket
    assert list(b.queue) == batch[10:30] and b.queued == 20_000 and b.dropped == 0 and b.delayed == 20
    assert b.next_release() == 0.01             # one packet's tokens: 1000 B at 100 kB/s
    assert b.release(0.005) == []               # not yet
    assert b.release(0.01) == batch[10:11]
    assert b.release(0.1) == batch[11:20]       # 90 ms more: 9 packets
    assert b.release(0.2) == batch[20:30] and b.queued == 0
    assert b.next_release() is None


def test_packets_behind_a_queue_wait_even_with_tokens():
    b = Bucket(rate=1_000, burst=2_000, limit=10_000, now=0.0)
    first = pkts(3, tag=1)
    assert b.admit(first, 0.0) == first[:2]
    later = pkts(1, 100, tag=2)                 # small enough for the tokens left (0)... and after a while
    assert b.admit(later, 0.5) == []            # 500 tokens now, enough for it, but first[2] waits: no overtaking
    assert b.release(1.0) == [first[2]]         # 1000 tokens by now: the head; the small one needs 100 more
    assert b.release(1.1) == later


def test_full_queue_drops_the_tail_and_counts():
    b = Bucket(rate=1_000, burst=1_000, limit=3_000, now=0.0)
    batch = pkts(6)
    assert b.admit(batch, 0.0) == batch[:1]
    assert list(b.queue) == batch[1:4] and b.dropped == 2
    assert b.admit(pkts(2, tag=9), 0.0) == [] and b.dropped == 4    # still full


def test_packet_larger_than_the_bucket_goes_when_full():
    b = Bucket(rate=1_000, burst=1_500, limit=100_000, now=0.0)
    big = [b"y" * 9000]
    assert b.admit(big, 0.0) == big and b.tokens == 1_500 - 9000     # in debt: the rate still holds
    nxt = pkts(1, 1000)
    assert b.admit(nxt, 1.0) == []
    # debt 7500 + 1000 B: the packet goes once the bucket has 1000 again, 8.5 s after the big one
    assert b.release(8.45) == [] and b.release(8.55) == nxt


def test_next_release_waits_at_least_the_minimum():
    b = Bucket(rate=1e9, burst=1_000, limit=100_000, now=0.0)
    b.admit(pkts(3), 0.0)
    assert b.next_release() == RATE_LIMIT_MIN_WAIT


def test_defaults_follow_the_rate():
    assert default_burst(20_000_000) == 64 * 1024                     # 10 ms of 20 Mbit/s is 25 kB: the floor
    assert default_burst(1_000_000_000) == 1_250_000                  # 10 ms of 1 Gbit/s
    assert queue_bound(20_000_000, 64 * 1024) == 125_000              # 50 ms of the rate
    assert queue_bound(1_000_000, 64 * 1024) == 64 * 1024             # at least the burst
    assert queue_bound(10**11, 10**6) == 4 * 1024 * 1024              # at most 4 MiB
    lim = PeerLimit(8_000_000, None, 5.0)
    assert lim.tx.rate == lim.rx.rate == 1_000_000 and lim.burst == 64 * 1024 and lim.burst_given is None
    assert lim.next_release() is None and lim.dropped() == (0, 0)


def test_long_run_rate_is_the_limit():
    """Offered at twice the rate for 10 s (a packet every 5 ms, released every ms): what goes out is the rate
    plus the burst, to within a packet."""
    rate, burst = 100_000, 4_000
    b = Bucket(rate=rate, burst=burst, limit=20_000, now=0.0)
    sent = 0
    t = 0.0
    i = 0
    while t < 10.0:
        if i % 5 == 0:
            sent += sum(len(p) for p in b.admit(pkts(1), t))
        sent += sum(len(p) for p in b.release(t))
        t = round(t + 0.001, 6)
        i += 1
    assert rate * 10 + burst - 1000 <= sent <= rate * 10 + burst
    assert b.dropped > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.2), st.integers(0, 12), st.integers(1, 3000), st.booleans()),
                max_size=60),
       st.integers(1_000, 1_000_000), st.integers(1_500, 20_000), st.integers(0, 40_000))
def test_order_kept_and_rate_bounded(steps, rate, burst, extra):
    """Whatever arrives when: what goes out is what came in, in order, less what was dropped (counted), and
    by any time no more than burst + rate x elapsed (+ one packet beyond a full bucket)."""
    b = Bucket(rate=rate, burst=burst, limit=burst + extra, now=0.0)
    now = 0.0
    seq = 0
    fed: list[bytes] = []
    out: list[bytes] = []
    biggest = 0
    for dt, n, size, rel in steps:
        now += dt
        if rel:
            out += b.release(now)
        batch = []
        for _ in range(n):
            batch.append(seq.to_bytes(4, "big") + b"z" * max(size - 4, 0))
            seq += 1
            biggest = max(biggest, len(batch[-1]))
        fed += batch
        out += b.admit(batch, now)
        assert sum(map(len, out)) <= burst + rate * now + biggest
        assert b.queued == sum(map(len, b.queue)) <= b.limit
    for i in range(1, 200):                     # drain: a bucketful per release
        out += b.release(now + i * 100.0)
    assert len(out) + b.dropped == len(fed)
    ids = [int.from_bytes(p[:4], "big") for p in out]
    assert ids == sorted(ids)
