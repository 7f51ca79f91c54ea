"""Per-peer rate limits in the core (ext/ratelimit.py): two Device cores on a fake clock, both directions, L3 and L2."""

from __future__ import annotations

from wgpy.constants import RATE_LIMIT_MIN_WAIT
from wgpy.protocol.events import TunPackets

from wgpy_testkit.core_pair import A_IP4, B_IP4, Net, Pair, udp4

PKT = 1000          # bytes per test packet (IPv4 + UDP + payload)


def packets(src: str, dst: str, n: int, first: int = 0) -> list[bytes]:
    return [udp4(src, dst, i.to_bytes(4, "big") + b"p" * (PKT - 32)) for i in range(first, first + n)]


def seqs(tun: list[bytes]) -> list[int]:
    return [int.from_bytes(p[28:32], "big") for p in tun]


def established() -> Pair:
    p = Pair()
    p.handshake(0.0)
    p.tun["B"].clear()
    p.tun["A"].clear()
    return p


def offer(p: Pair, name: str, seconds: float, per_ms: int) -> int:
    """`name` sends `per_ms` packets every millisecond for `seconds`, the timers running between; returns how
    many were offered."""
    src, dst = (A_IP4, B_IP4) if name == "A" else (B_IP4, A_IP4)
    n = 0
    t = p.clock.now
    end = t + seconds
    while t < end:
        p.advance(t)
        p.send(name, packets(src, dst, per_ms, n), t)
        n += per_ms
        t = round(t + 0.001, 6)
    return n


def test_sending_to_a_limited_peer_goes_at_the_rate_in_order():
    p = established()
    rate = 8_000_000                                   # 1 MB/s
    p.a.set_rate_limit(p.pa, rate, 16_000, 0.0, [])
    offered = offer(p, "A", 1.0, 2)                    # 2 MB/s offered for 1 s
    p.advance(p.clock.now + 1.0)                        # and let the queue drain
    got = seqs(p.tun["B"])
    assert got == sorted(got) and len(set(got)) == len(got)          # in order, nothing twice
    dropped = p.a.drops["rate_limit_sent"]
    assert len(got) + dropped == offered and dropped > 0
    # 1 s of offer at 1 MB/s plus the 16 kB bucket plus the queue (50 ms of the rate) emptied afterwards
    assert 1_000_000 <= len(got) * PKT <= 1_000_000 + 16_000 + 50_000 + PKT
    assert p.pa.limit.dropped() == (dropped, 0)
    assert not p.b.drops                                # B got only valid, in-order transport messages


def test_what_a_limited_peer_sends_reaches_the_tun_at_the_rate():
    p = established()
    p.a.set_rate_limit(p.pa, 8_000_000, 16_000, 0.0, [])   # A limits what B sends it
    t0 = p.clock.now
    offered = offer(p, "B", 1.0, 2)
    in_time = len(p.tun["A"])
    p.advance(p.clock.now + 1.0)
    got = seqs(p.tun["A"])
    assert got == sorted(got)
    assert len(got) + p.a.drops["rate_limit_received"] == offered
    assert in_time * PKT <= 16_000 + 1_000_000 * (p.clock.now - 1.0 - t0) + PKT
    assert 1_000_000 <= len(got) * PKT <= 1_000_000 + 16_000 + 50_000 + PKT
    assert not p.b.drops.get("rate_limit_sent") and p.pb.limit is None


def test_within_the_limit_nothing_waits():
    p = established()
    p.a.set_rate_limit(p.pa, 80_000_000, None, 0.0, [])    # 10 MB/s, offered 1 MB/s
    offered = offer(p, "A", 0.5, 1)
    assert seqs(p.tun["B"]) == list(range(offered))        # every packet when it was sent
    assert p.pa.limit.tx.delayed == 0 and p.pa.limit.next_release() is None


def test_unlimited_peers_are_untouched_beside_a_limited_one():
    n = Net("ABC", [("A", "B"), ("A", "C")])
    import ipaddress
    n.dev["A"].allowed_ips.insert(ipaddress.ip_network("10.0.0.2/32"), n.peer[("A", "B")])
    n.dev["A"].allowed_ips.insert(ipaddress.ip_network("10.0.0.3/32"), n.peer[("A", "C")])
    n.dev["B"].allowed_ips.insert(ipaddress.ip_network("10.0.0.1/32"), n.peer[("B", "A")])
    n.dev["C"].allowed_ips.insert(ipaddress.ip_network("10.0.0.1/32"), n.peer[("C", "A")])
    n.connect(("A", "B"), ("A", "C"))
    n.dev["A"].set_rate_limit(n.peer[("A", "B")], 800_000, None, 0.0, [])     # 100 kB/s
    assert n.dev["A"].rate_limit.active == 1 and n.peer[("A", "C")].limit is None
    t = 0.0
    for i in range(100):                                # 200 kB to each within 0.1 s
        n.advance(t)
        n.send("A", packets(A_IP4, "10.0.0.2", 1, 2 * i) + packets(A_IP4, "10.0.0.3", 1, 2 * i + 1), t)
        t += 0.001
    assert len(n.tun["C"]) == 100                       # the unlimited peer: everything, at once
    assert len(n.tun["B"]) * PKT <= 64 * 1024 + 100_000 * t + PKT     # the limited one: bucket + rate


def test_removing_the_limit_lets_the_queue_go_in_order():
    p = established()
    p.a.set_rate_limit(p.pa, 80_000, 2_100, 0.0, [])        # 10 kB/s
    p.send("A", packets(A_IP4, B_IP4, 4), 0.0)      # 2 go, 2 wait (the queue: the burst)
    assert len(p.tun["B"]) == 2 and p.pa.limit.tx.queued == 2 * PKT
    out: list = []
    p.a.set_rate_limit(p.pa, 0, None, 0.0, out)
    p.deliver("A", out, 0.0)
    assert seqs(p.tun["B"]) == list(range(4))
    assert p.pa.limit is None and p.a.rate_limit.active == 0


def test_a_new_rate_keeps_the_queue():
    p = established()
    p.a.set_rate_limit(p.pa, 80_000, 2_100, 0.0, [])
    p.send("A", packets(A_IP4, B_IP4, 4), 0.0)      # 2 go, 2 wait (the queue: the burst)
    p.a.set_rate_limit(p.pa, 8_000_000, 2_000, 0.0, [])     # 1 MB/s now: the 2 waiting go within ms
    assert p.pa.limit.tx.queued == 2 * PKT and p.a.rate_limit.active == 1
    p.advance(0.01)
    assert seqs(p.tun["B"]) == list(range(4))


def test_removed_peer_forgets_its_queue():
    p = established()
    p.a.set_rate_limit(p.pa, 80_000, 2_100, 0.0, [])
    p.send("A", packets(A_IP4, B_IP4, 4), 0.0)      # 2 go, 2 wait (the queue: the burst)
    p.a.remove_peer(p.pub_b)
    assert p.a.rate_limit.active == 0
    p.advance(5.0)
    assert len(p.tun["B"]) == 2


def test_release_is_batched_not_per_packet():
    """A limited peer wakes the timers at most once per RATE_LIMIT_MIN_WAIT, however small the packets."""
    p = established()
    p.a.set_rate_limit(p.pa, 80_000_000, 1_500, 0.0, [])
    small = [udp4(A_IP4, B_IP4, b"s%d" % i) for i in range(2000)]       # 2000 x 32 B
    p.send("A", small, 0.0)
    wakes = []
    while p.a.next_deadline() is not None and p.a.next_deadline() < 1.0:
        d = p.a.next_deadline()
        wakes.append(d)
        p.advance(d)
    assert len(p.tun["B"]) + p.a.drops["rate_limit_sent"] == 2000
    gaps = [b - a for a, b in zip(wakes, wakes[1:])]
    assert gaps and min(gaps) >= RATE_LIMIT_MIN_WAIT - 1e-9


def test_l2_frames_are_limited_both_ways():
    p = Pair(l2=True)
    amac, bmac = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"

    def frames(src, dst, n, first=0):
        return [dst + src + b"\x08\x00" + i.to_bytes(4, "big") + b"f" * (PKT - 18) for i in range(first, first + n)]

    p.connect(("A", "B"))
    p.send("B", frames(bmac, amac, 1, 10_000))             # A learns bmac behind B
    p.tap["A"].clear()
    p.a.set_rate_limit(p.pa, 800_000, 2_100, p.clock.now, [])   # 100 kB/s, 2 frames deep (received: padded)
    p.send("A", frames(amac, bmac, 7), p.clock.now)     # 2 go, 5 wait (50 ms of 100 kB/s), 0 dropped
    assert len(p.tap["B"]) == 2
    p.send("B", frames(bmac, amac, 7, 100), p.clock.now)     # 2, 4 wait (padded), 1 dropped
    assert len(p.tap["A"]) == 2
    p.advance(p.clock.now + 1.0)
    assert [int.from_bytes(f[14:18], "big") for f in p.tap["B"]] == list(range(7))
    assert [int.from_bytes(f[14:18], "big") for f in p.tap["A"]] == list(range(100, 106))
    assert p.a.drops["rate_limit_sent"] == 0 and p.a.drops["rate_limit_received"] == 1


def test_events_carry_the_released_packets_for_the_runtime():
    p = established()
    p.a.set_rate_limit(p.pa, 80_000, 2_100, 0.0, [])
    p.send("B", packets(B_IP4, A_IP4, 4), 0.0)
    assert len(p.tun["A"]) == 2
    out: list = []
    p.a.tick(p.a.next_deadline(), out)
    evs = [e for e in p.a.events if type(e) is TunPackets]
    assert len(evs) == 1 and seqs(evs[0].packets) == [2]
