"""Router routes a run of packets to one destination once (send) and checks the source of a run of one flow once
(receive): the result must be what a lookup per packet gives, for any mix of versions, lengths and addresses,
including packets too short for a lookup, other IP versions, dishonest sources in the middle of a run and wgpy
control messages."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.ext.control import CONTROL_MARKER
from wgpy.protocol.router import Router
from wgpy.routing.allowedips import AllowedIPs

class _Peer(str):
    """A peer as the router sees it: compared by name here, without a RateLimit."""
    limit = None


P1, P2, P3 = _Peer("p1"), _Peer("p2"), _Peer("p3")
PEERS = (P1, P2, P3)


def _table() -> AllowedIPs:
    t = AllowedIPs()
    t.insert("10.0.1.0/24", P1)
    t.insert("10.0.2.0/24", P2)
    t.insert("10.0.2.128/25", P3)
    t.insert("fd00:1::/64", P1)
    t.insert("fd00:2::/64", P2)
    return t


ADDR4 = [bytes([10, 0, 1, 5]), bytes([10, 0, 2, 5]), bytes([10, 0, 2, 200]), bytes([10, 0, 9, 9])]
ADDR6 = [bytes.fromhex("fd000001" + "00" * 11 + "05"), bytes.fromhex("fd000002" + "00" * 11 + "05"),
         bytes.fromhex("fd000009" + "00" * 11 + "09")]


def _packet(rnd: random.Random, v: int, src: bytes, dst: bytes, size: int) -> bytes:
    if v == 4:
        hdr = bytearray(20)
        hdr[0] = 0x45
        hdr[2:4] = (size).to_bytes(2, "big")
        hdr[12:16], hdr[16:20] = src, dst
        pkt = bytes(hdr) + rnd.randbytes(max(0, size - 20))
    elif v == 6:
        hdr = bytearray(40)
        hdr[0] = 0x60
        hdr[4:6] = max(0, size - 40).to_bytes(2, "big")
        hdr[8:24], hdr[24:40] = src, dst
        pkt = bytes(hdr) + rnd.randbytes(max(0, size - 40))
    else:
        pkt = bytes([v << 4 | (CONTROL_MARKER & 15 if v == CONTROL_MARKER >> 4 else 0)]) + rnd.randbytes(60)
    cut = rnd.random()
    if cut < 0.1:                       # too short for a lookup (or for its own header)
        return pkt[:rnd.randrange(0, 41)]
    return pkt


def _batch(seed: int, n: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    while len(out) < n:
        v = rnd.choice((4, 4, 6, 6, 5, 7))
        if v == 4:
            src, dst = rnd.choice(ADDR4), rnd.choice(ADDR4)
        else:
            src, dst = rnd.choice(ADDR6), rnd.choice(ADDR6)
        for _ in range(rnd.choice((1, 1, 3, 12))):        # runs, as a super-packet's segments come
            out.append(_packet(rnd, v, src, dst, rnd.choice((20, 40, 60, 1420))))
    return out


class _Dev:
    def __init__(self) -> None:
        self.allowed_ips = _table()
        self.drops = {"no_route": 0, "dishonest_peer": 0, "bad_inner_packet": 0}
        self.sent: list = []
        self.control: list = []
        self.path_mtu = self
        self.rate_limit = self
        self.active = 0                 # no peer has a RateLimit

    def _send_to_peer(self, peer, pkts, now, out) -> None:
        self.sent.append((peer, list(pkts)))

    def receive_control(self, peer, pt, n, now, out) -> None:
        self.control.append((peer, pt))


def _send_reference(dev: _Dev, packets: list[bytes]) -> None:
    groups: dict = {}
    for pkt in packets:
        peer = dev.allowed_ips.lookup_dst(pkt)
        if peer is None:
            dev.drops["no_route"] += 1
        else:
            groups.setdefault(peer, []).append(pkt)
    for peer, pkts in groups.items():
        dev._send_to_peer(peer, pkts, 0.0, [])


def _receive_reference(dev: _Dev, opened: list, out_tun: list) -> None:
    for peer, pt in opened:
        if dev.allowed_ips.lookup_src(pt) is not peer:
            if pt[0] == CONTROL_MARKER:
                dev.receive_control(peer, pt, len(pt), 0.0, [])
            else:
                dev.drops["dishonest_peer"] += 1
            continue
        v = pt[0] >> 4
        length = (pt[2] << 8 | pt[3]) if v == 4 else ((pt[4] << 8 | pt[5]) + 40) if v == 6 else -1
        if length < 20 or length > len(pt):
            dev.drops["bad_inner_packet"] += 1
            continue
        out_tun.append(pt[:length])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 80))
def test_send_routes_runs_as_a_lookup_per_packet_would(seed: int, n: int) -> None:
    packets = _batch(seed, n)
    got, want = _Dev(), _Dev()
    Router(got).send(packets, 0.0, [])
    _send_reference(want, packets)
    assert got.sent == want.sent
    assert got.drops == want.drops


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 80))
def test_receive_checks_sources_of_runs_as_a_lookup_per_packet_would(seed: int, n: int) -> None:
    rnd = random.Random(seed ^ 0x5A5A)
    # what open_transport hands over: non-empty plaintexts, each with the peer whose key opened it (runs of one
    # peer, now and then another peer claiming the same addresses)
    opened = []
    peer = rnd.choice(PEERS)
    for pt in _batch(seed, n):
        if not pt:
            continue
        if rnd.random() < 0.15:
            peer = rnd.choice(PEERS)
        opened.append((peer, pt))
    got, want = _Dev(), _Dev()
    got_tun: list = []
    want_tun: list = []


    got.open_transport = lambda d, now, out: opened         # type: ignore[attr-defined]
    Router(got).receive([], 0.0, [], got_tun)
    _receive_reference(want, opened, want_tun)
    assert got_tun == want_tun
    assert got.drops == want.drops
    assert got.control == want.control


def test_a_dishonest_packet_inside_a_run_is_dropped() -> None:
    good = _packet(random.Random(1), 4, ADDR4[0], ADDR4[1], 100)
    forged = _packet(random.Random(2), 4, ADDR4[1], ADDR4[1], 100)     # p2's address, opened by p1's key
    dev = _Dev()
    dev.open_transport = lambda d, now, out: [(P1, good), (P1, forged), (P1, good)]   # type: ignore
    tun: list = []
    Router(dev).receive([], 0.0, [], tun)
    assert tun == [good, good]
    assert dev.drops["dishonest_peer"] == 1


def test_a_short_packet_of_another_version_with_the_same_bytes_is_not_taken_for_the_run() -> None:
    v4 = _packet(random.Random(3), 4, ADDR4[0], ADDR4[0], 100)
    v6 = bytearray(28)                  # IPv6, too short to route, whose bytes 24:28 are v4's destination
    v6[0] = 0x60
    v6[24:28] = ADDR4[0]
    dev = _Dev()
    Router(dev).send([v4, bytes(v6)], 0.0, [])
    assert dev.sent == [("p1", [v4])]
    assert dev.drops["no_route"] == 1
