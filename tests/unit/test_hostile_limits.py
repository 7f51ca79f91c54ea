"""Resource bounds of the core, each tested by filling it (docs/reliability.md lists them all).

    staged packets per peer      MAX_STAGED_PACKETS (128): the oldest go, counted as drop staged_peer_full
    staged packets in all        MAX_STAGED_PACKETS_TOTAL (8192): new ones are refused, drop staged_total_full
    index tables                 at most 3 keypairs + 1 handshake per peer, whatever the network sends
    rate-limiter table           RATELIMIT_MAX_ENTRIES (8192) sources; sweeps at most once a second
    cookie state                 one 32-byte secret per device, one cookie per peer
    drop counters                a fixed set of reasons, whatever arrives
"""

from __future__ import annotations

import ipaddress
import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from wgpy.constants import (
    MAX_STAGED_PACKETS, MAX_STAGED_PACKETS_TOTAL, RATELIMIT_MAX_ENTRIES, REKEY_TIMEOUT,
)
from wgpy.protocol.device import Device, ratelimit_key
from wgpy.protocol.ratelimiter import RateLimiter

from wgpy_testkit.core_pair import A_IP4, B_IP4, Pair, make_key, mtype, seeded_rand, udp4
from test_fuzz import fuzz

# every reason the core counts a drop under (docs/reliability.md); a new one must be documented there too
DROP_REASONS = {
    "no_route", "no_endpoint", "staged_peer_full", "staged_total_full", "unknown_index", "expired_keypair",
    "invalid_tag", "replay", "dishonest_peer", "bad_inner_packet", "invalid_message", "invalid_cookie_reply",
    "invalid_mac1", "cookie_sent", "cookie_ratelimited", "ratelimited", "invalid_initiation", "invalid_response",
}


def staged_sum(dev: Device) -> int:
    return sum(len(p.staged) for p in dev.peers.values())


# ---------------------------------------------------------------------------------------------------------------
# staged packets
# ---------------------------------------------------------------------------------------------------------------

def test_staged_per_peer_keeps_the_newest_128():
    p = Pair()
    p.route = {}                                   # B is unreachable: the handshake never completes
    pkts = [udp4(A_IP4, B_IP4, i.to_bytes(2, "big")) for i in range(MAX_STAGED_PACKETS + 72)]
    p.send("A", pkts, 0.0)
    assert len(p.pa.staged) == MAX_STAGED_PACKETS == p.a.staged_total
    assert list(p.pa.staged) == pkts[-MAX_STAGED_PACKETS:]
    assert p.a.drops["staged_peer_full"] == 72
    # more, one at a time, in later batches: still bounded
    for i in range(50):
        p.send("A", [pkts[i]], 0.1 + i * 0.01)
    assert len(p.pa.staged) == MAX_STAGED_PACKETS == p.a.staged_total
    assert p.a.drops["staged_peer_full"] == 122


def _many_peers(n: int, seed: int = 3) -> tuple[Device, list]:
    rng = random.Random(seed)
    dev = Device(make_key(rng)[0], rand=seeded_rand(seed), wall=lambda: 1e9)
    peers = []
    for i in range(n):
        peer = dev.add_peer(make_key(rng)[1])
        net = ipaddress.ip_network(f"10.{i // 250}.{i % 250}.0/24")
        dev.allowed_ips.insert(net, peer)
        peer.endpoint = ("192.0.2.1", 10000 + i)
        peers.append((peer, net))
    return dev, peers


def test_staged_total_is_bounded_over_all_peers():
    n = MAX_STAGED_PACKETS_TOTAL // MAX_STAGED_PACKETS + 8          # enough peers to pass the global bound
    dev, peers = _many_peers(n)
    out: list = []
    for i, (peer, net) in enumerate(peers):
        dst = str(net.network_address + 1)
        dev.send_packets([udp4("10.250.0.1", dst, bytes([j % 256])) for j in range(MAX_STAGED_PACKETS)],
                         0.0, out)
    assert dev.staged_total == MAX_STAGED_PACKETS_TOTAL == staged_sum(dev)
    assert dev.drops["staged_total_full"] == n * MAX_STAGED_PACKETS - MAX_STAGED_PACKETS_TOTAL
    # the peers that got in keep their packets; the late ones have none
    assert all(len(peer.staged) == MAX_STAGED_PACKETS for peer, _ in peers[:MAX_STAGED_PACKETS_TOTAL // 128])
    assert all(len(peer.staged) == 0 for peer, _ in peers[-8:])
    # removing a peer frees its share; a late peer can stage again
    dev.remove_peer(peers[0][0].public_key)
    assert dev.staged_total == MAX_STAGED_PACKETS_TOTAL - MAX_STAGED_PACKETS == staged_sum(dev)
    late, net = peers[-1]
    dev.send_packets([udp4("10.250.0.1", str(net.network_address + 1), b"x")] * 5, 1.0, out)
    assert len(late.staged) == 5 and dev.staged_total == staged_sum(dev)


def test_staged_total_freed_when_handshake_gives_up_and_when_sent():
    p = Pair()
    p.route = {}
    p.send("A", [udp4(A_IP4, B_IP4, b"x")] * 10, 0.0)
    assert p.a.staged_total == 10
    p.advance(200.0)                                # REKEY_ATTEMPT_TIME passes: the staged packets are dropped
    assert p.a.staged_total == 0 == len(p.pa.staged)
    p.route = {"A": "A", "B": "B"}
    p.send("A", [udp4(A_IP4, B_IP4, b"y")] * 3, 300.0)   # a new handshake completes and sends them
    assert p.pa.current is not None
    assert p.a.staged_total == 0 == len(p.pa.staged)
    assert p.tun["B"][-3:] == [udp4(A_IP4, B_IP4, b"y")] * 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "remove", "advance", "connect", "disconnect"]),
                          st.integers(0, 300)), max_size=25))
def test_staged_total_always_equals_the_sum(ops):
    """Whatever happens (staging, handshakes, giving up, removal), the global count matches the queues."""
    p = Pair(5)
    p.route = {}
    now = 0.0
    for op, n in ops:
        now += 1.0
        if op == "send" and not p.pa.removed:
            p.send("A", [udp4(A_IP4, B_IP4, bytes([n % 256]))] * n, now)
        elif op == "remove":
            p.a.remove_peer(p.pub_b)
        elif op == "advance":
            now += n
            p.advance(now)
        elif op == "connect":
            p.route = {"A": "A", "B": "B"}
        else:
            p.route = {}
        assert p.a.staged_total == staged_sum(p.a) <= MAX_STAGED_PACKETS_TOTAL


# ---------------------------------------------------------------------------------------------------------------
# index tables
# ---------------------------------------------------------------------------------------------------------------

def test_index_tables_bounded_per_peer_under_handshake_storm():
    """Hundreds of authenticated handshakes (each one a new session) leave at most 3 keypairs and 1 pending
    handshake per peer on either side."""
    p = Pair()
    p.handshake(0.0)
    now = 0.0
    for i in range(300):
        now += REKEY_TIMEOUT + 0.01
        out: list = []
        p.at(now)
        dev, peer, name = (p.a, p.pa, "A") if i % 2 else (p.b, p.pb, "B")
        dev.initiate_handshake(peer, now, out, retry=False)
        p.deliver(name, out, now)
        if i % 3 == 0:
            p.send("A", [udp4(A_IP4, B_IP4, b"d")], now)
        for d in (p.a, p.b):
            assert len(d.keypairs_by_index) <= 3
            assert len(d.handshakes_by_index) <= 1
            assert set(d.keypairs_by_index.values()) <= {k for k in (d.peers[next(iter(d.peers))].keypairs())}


# ---------------------------------------------------------------------------------------------------------------
# rate limiter
# ---------------------------------------------------------------------------------------------------------------

def test_ratelimiter_table_filled_stays_at_its_bound_and_cheap():
    rl = RateLimiter()
    for i in range(RATELIMIT_MAX_ENTRIES + 5000):
        rl.allow(("198.18.%d.%d" % (i >> 8 & 255, i & 255), i), 0.0)
    assert len(rl.table) == RATELIMIT_MAX_ENTRIES
    # while full of fresh entries, each further new source costs no sweep of the whole table
    t0 = time.perf_counter()
    refused = sum(not rl.allow(("new", i), 0.5) for i in range(20_000))
    per_packet = (time.perf_counter() - t0) / 20_000
    assert refused == 20_000
    assert per_packet < 20e-6, f"{per_packet * 1e6:.1f} us per refused source: a full sweep per packet?"
    # a second later the stale entries are swept and newcomers get in
    assert rl.allow(("late", 1), 1.6)
    assert len(rl.table) <= RATELIMIT_MAX_ENTRIES


@pytest.mark.parametrize("src, same_as", [
    (("2001:db8:1:2::1", 51820, 0, 0), ("2001:db8:1:2:ffff::9", 1, 0, 0)),     # same /64: one bucket
    (("198.51.100.1", 51820), ("198.51.100.1", 9)),                            # same IPv4 address, any port
])
def test_ratelimit_key_groups_a_host(src, same_as):
    assert ratelimit_key(src) == ratelimit_key(same_as)


def test_ratelimit_key_separates_hosts():
    assert ratelimit_key(("2001:db8:1:2::1", 1, 0, 0)) != ratelimit_key(("2001:db8:1:3::1", 1, 0, 0))
    assert ratelimit_key(("198.51.100.1", 1)) != ratelimit_key(("198.51.100.2", 1))
    assert ratelimit_key("opaque") == "opaque"


# ---------------------------------------------------------------------------------------------------------------
# cookie state and drop counters
# ---------------------------------------------------------------------------------------------------------------

def test_cookie_state_is_constant_size_under_a_flood_of_sources():
    tgt = fuzz.ReceiveTarget("under-load", seed=9)
    rng = random.Random(1)
    body = bytes((1, 0, 0, 0)) + rng.randbytes(112)
    from wgpy import crypto
    msg = body + crypto.mac(tgt.mac1_key, body) + bytes(16)
    for i in range(3000):
        tgt.feed(msg, (f"198.18.{i >> 8 & 255}.{i & 255}", 1000 + i))
    assert tgt.cookie_replies == 3000
    checker = tgt.dev.cookie_checker
    assert len(checker.secret) == 32 and not hasattr(checker, "__dict__")   # one secret, fixed slots
    assert len(tgt.dev.ratelimiter.table) == 0        # no mac2, so nothing reached the rate limiter


def test_drop_reasons_are_a_fixed_set():
    seen: set[str] = set()
    for name in ("responder", "initiator", "under-load"):
        res = fuzz.run(name, 5000, seed=21)
        seen |= {k for k in res["outcome"] if k != "cookie_replies_seen"}
    p = Pair()
    p.route = {}
    p.send("A", [udp4(A_IP4, "10.9.9.9", b"")], 0.0)
    p.send("A", [udp4(A_IP4, B_IP4, b"x")] * 200, 0.0)
    seen |= set(p.a.drops)
    assert seen <= DROP_REASONS, seen - DROP_REASONS
    assert {"no_route", "staged_peer_full", "invalid_tag", "invalid_mac1", "cookie_sent"} <= seen


def test_cookie_reply_only_type_under_load():
    """Under load, the one thing a stranger can make the device send is a 64-byte cookie reply."""
    tgt = fuzz.ReceiveTarget("under-load", seed=4)
    mut = fuzz.Mutator(tgt.world.corpus, 4, tgt.mac1_key, tgt.live_indices())
    sent = []
    for _ in range(5000):
        d = mut.next()
        out: list = []
        tgt.dev.receive_datagrams([(d, fuzz.EP_A)], tgt.now, out, [])
        sent += out
    assert sent and {(len(d), mtype(d)) for d, _ in sent} == {(64, 3)}
