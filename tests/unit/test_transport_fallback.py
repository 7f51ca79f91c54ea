"""The UDP -> stream fallback of the sans-IO core (ext/fallback.py), with two Devices and a fake clock.

The wire below has two paths between client A and server B:
    UDP     A sends to B_UDP and B sees source A_UDP; B sends to A_UDP and A sees source B_UDP. Each direction
            can be blocked on its own (`block_ab`, `block_ba`): the asymmetric cases.
    stream  A sends to its fallback target T (an opaque object, as io/stream.py makes); B sees the source C
            (the accepted connection's endpoint, another opaque object); B's messages to C reach A from T.
Only the roaming rule of the core and the fallback logic decide which path each side uses.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from wgpy.constants import FALLBACK_PROBE_ANSWER
from wgpy.ext import fallback
from wgpy.protocol.events import FallbackSwitched
from wgpy.protocol.device import Device

from wgpy_testkit.core_pair import A_IP4, B_IP4, Clock, make_key, seeded_rand, udp4

A_UDP = ("192.0.2.1", 40000)
B_UDP = ("192.0.2.2", 51820)


class Stream:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Stream({self.name})"


class Wire:
    def __init__(self, seed: int = 1, *, after: float = 3.0, probe: float = 10.0, a_endpoint=B_UDP) -> None:
        self.clock = Clock()
        rng = random.Random(seed)
        priv_a, pub_a = make_key(rng)
        priv_b, pub_b = make_key(rng)
        self.a = Device(priv_a, rand=seeded_rand(seed * 10 + 1), wall=self.clock.wall)
        self.b = Device(priv_b, rand=seeded_rand(seed * 10 + 2), wall=self.clock.wall)
        self.pa = self.a.add_peer(pub_b)
        self.pb = self.b.add_peer(pub_a)
        self.a.allowed_ips.insert(ipaddress.ip_network(B_IP4 + "/32"), self.pa)
        self.b.allowed_ips.insert(ipaddress.ip_network(A_IP4 + "/32"), self.pb)
        self.T, self.C = Stream("T"), Stream("C")
        self.pa.endpoint = a_endpoint
        out: list = []
        fallback.configure(self.a, self.pa, self.T, 0.0, out, after=after, probe_interval=probe)
        assert out == []
        self.block_ab = self.block_ba = False
        self.stream_first = False     # A's stream messages overtake the UDP ones sent in the same batch
        self.tun = {"A": [], "B": []}
        self.paths: list[tuple[float, str, str, int]] = []   # (now, sender, "udp"|"stream", type)

    def deliver(self, sender: str, out: list, now: float) -> None:
        if self.stream_first and sender == "A":
            out.sort(key=lambda item: item[1] is not self.T)
        queue = [(sender, d, ep) for d, ep in out]
        out.clear()
        while queue:
            s, d, ep = queue.pop(0)
            if s == "A":
                if ep == B_UDP:
                    path, src, ok = "udp", A_UDP, not self.block_ab
                elif ep is self.T:
                    path, src, ok = "stream", self.C, True
                else:
                    raise AssertionError(f"A sent to {ep!r}")
                dev, name = self.b, "B"
            else:
                if ep == A_UDP:
                    path, src, ok = "udp", B_UDP, not self.block_ba
                elif ep is self.C:
                    path, src, ok = "stream", self.T, True
                else:
                    raise AssertionError(f"B sent to {ep!r}")
                dev, name = self.a, "A"
            self.paths.append((now, s, path, d[0]))
            if not ok:
                continue
            net: list = []
            dev.receive_datagrams([(d, src)], now, net, self.tun[name])
            queue.extend((name, d2, ep2) for d2, ep2 in net)

    def advance(self, until: float) -> None:
        for _ in range(100_000):
            cands = [(d, n) for n, dev in (("A", self.a), ("B", self.b))
                     if (d := dev.next_deadline()) is not None and d <= until]
            if not cands:
                break
            d, n = min(cands)
            self.clock.now = max(self.clock.now, d)
            out: list = []
            (self.a if n == "A" else self.b).tick(d, out)
            self.deliver(n, out, d)
        self.clock.now = max(self.clock.now, until)

    def send(self, name: str, payload: bytes, now: float) -> None:
        self.advance(now)
        out: list = []
        if name == "A":
            self.a.send_packets([udp4(A_IP4, B_IP4, payload)], now, out)
        else:
            self.b.send_packets([udp4(B_IP4, A_IP4, payload)], now, out)
        self.deliver(name, out, now)

    def run_traffic(self, start: float, end: float, step: float = 0.5, both: bool = True) -> tuple[int, int]:
        """A and B each send one packet every `step` seconds; returns (delivered to B, delivered to A) in that
        time."""
        b0, a0 = len(self.tun["B"]), len(self.tun["A"])
        t = start
        i = 0
        while t < end:
            self.send("A", b"a%d" % i, t)
            if both:
                self.send("B", b"b%d" % i, t + step / 2)
            t += step
            i += 1
        return len(self.tun["B"]) - b0, len(self.tun["A"]) - a0

    def data_paths(self, sender: str, since: float) -> set[str]:
        return {p for t, s, p, typ in self.paths if s == sender and typ == 4 and t >= since}


def test_udp_working_never_falls_back():
    w = Wire()
    to_b, to_a = w.run_traffic(0.0, 400.0, step=2.0)        # rekeys every 120 s on the way
    assert to_b == to_a == 200
    fb = w.pa.fallback
    assert fb.switches == 0 and w.pa.endpoint == B_UDP and w.pb.endpoint == A_UDP
    assert w.data_paths("A", 0.0) == {"udp"} and w.data_paths("B", 0.0) == {"udp"}


def test_udp_blocked_falls_back_after_the_configured_time():
    w = Wire(after=3.0)
    w.block_ab = w.block_ba = True
    w.send("A", b"first", 0.0)
    assert w.tun["B"] == []
    w.advance(2.9)
    assert w.pa.endpoint == B_UDP and w.pa.fallback.switches == 0
    w.advance(3.0)
    assert w.pa.endpoint is w.T and w.pa.fallback.switches == 1
    # the initiation went over the stream at once; the staged packet followed the handshake
    assert [p for p in w.paths if p[0] == 3.0][:2] == [(3.0, "A", "stream", 1), (3.0, "B", "stream", 2)]
    assert len(w.tun["B"]) == 1 and w.pb.endpoint is w.C
    to_b, to_a = w.run_traffic(4.0, 100.0)
    assert to_b == to_a == 192
    assert w.data_paths("A", 4.0) == {"stream"} and w.data_paths("B", 4.0) == {"stream"}


def test_back_to_udp_within_the_probe_interval_once_unblocked():
    w = Wire(after=3.0, probe=10.0)
    w.block_ab = w.block_ba = True
    w.send("A", b"x", 0.0)
    w.advance(3.0)
    assert w.pa.endpoint is w.T
    w.run_traffic(3.5, 30.0)
    assert w.pa.endpoint is w.T            # probes at 13 and 23 went nowhere
    assert w.pa.fallback.probes >= 2
    w.block_ab = w.block_ba = False
    unblocked = 30.0
    to_b, to_a = w.run_traffic(30.0, 60.0)
    assert to_b == to_a == 60              # nothing lost while moving back
    assert w.pa.endpoint == B_UDP and w.pb.endpoint == A_UDP
    assert w.pa.fallback.returns == 1
    back = min(t for t, s, p, typ in w.paths if t >= unblocked and s == "A" and p == "udp" and typ == 4)
    assert back - unblocked <= 10.0        # the probe interval
    assert w.data_paths("A", back + 1) == {"udp"} and w.data_paths("B", back + 1) == {"udp"}


@pytest.mark.parametrize("reorder", [False, True])
@pytest.mark.parametrize("blocked", ["a_to_b", "b_to_a"])
def test_one_way_udp_never_gets_stuck(blocked, reorder):
    """UDP works in one direction only. A falls back; the probes never move traffic to the dead direction for
    longer than FALLBACK_PROBE_ANSWER (none at all when the keepalive over the stream arrives after the UDP
    probe; with `reorder` it arrives first); traffic both ways keeps flowing."""
    w = Wire(after=3.0, probe=10.0)
    w.stream_first = reorder
    w.block_ab = blocked == "a_to_b"
    w.block_ba = blocked == "b_to_a"
    w.send("A", b"x", 0.0)
    w.advance(3.0)
    assert w.pa.endpoint is w.T and w.pa.fallback.switches == 1
    # B -> A only, B sending every 0.25 s: each loss is a packet of B's that went to UDP while B->A is dead
    before = len(w.tun["A"])
    t, sent = 3.5, 0
    while t < 200.0:
        w.send("B", b"b", t)
        sent += 1
        t += 0.25
    got = len(w.tun["A"]) - before
    probes = w.pa.fallback.probes
    assert probes >= 15
    lost = sent - got
    if blocked == "a_to_b" or not reorder:
        assert lost == 0, (lost, probes)
    else:
        assert 0 < lost <= probes * (FALLBACK_PROBE_ANSWER / 0.25 + 1), (lost, probes)
    assert w.pa.endpoint is w.T and w.pa.fallback.returns == 0
    # and at the end both sides use the stream
    to_b, to_a = w.run_traffic(200.0, 205.0)
    assert to_b == 10 and to_a >= 8


def test_one_way_probe_reaching_b_is_pinned_back_by_a_keepalive():
    w = Wire(after=3.0, probe=10.0)
    w.block_ba = True
    w.send("A", b"x", 0.0)
    w.advance(3.0)
    w.run_traffic(3.5, 12.9)
    assert w.pb.endpoint is w.C
    n = len(w.paths)
    w.advance(13.0 + 0.01)                  # the probe at 13 s: UDP initiation reaches B, then A's keepalive
    kinds = [(s, p, typ) for _, s, p, typ in w.paths[n:]]
    assert ("A", "udp", 1) in kinds and ("A", "stream", 4) in kinds
    assert kinds.index(("A", "udp", 1)) < kinds.index(("A", "stream", 4))
    assert w.pb.endpoint is w.C             # B roamed to UDP for the initiation, then back for the keepalive


def test_no_primary_endpoint_starts_on_the_fallback():
    w = Wire(a_endpoint=None)
    assert w.pa.endpoint is w.T
    w.send("A", b"x", 0.0)
    assert len(w.tun["B"]) == 1
    assert w.pa.fallback.switches == 0 and w.pa.fallback.probes == 0
    w.run_traffic(1.0, 100.0)
    assert w.pa.fallback.probes == 0       # nothing to probe
    assert w.data_paths("A", 0.0) == {"stream"}


def test_removing_the_fallback_goes_back_to_the_primary():
    w = Wire()
    w.block_ab = w.block_ba = True
    w.send("A", b"x", 0.0)
    w.advance(3.0)
    assert w.pa.endpoint is w.T
    fallback.configure(w.a, w.pa, None, 4.0, [])
    assert w.pa.fallback is None and w.pa.endpoint == B_UDP


def test_a_session_that_dies_on_udp_falls_back_too():
    """UDP worked, then stops: WireGuard's own timers start a new handshake, which gets no answer."""
    w = Wire(after=3.0)
    w.run_traffic(0.0, 10.0)
    assert w.pa.endpoint == B_UDP
    w.block_ab = w.block_ba = True
    w.run_traffic(10.0, 60.0, both=False)
    assert w.pa.endpoint is w.T and w.pa.fallback.switches == 1
    to_b, _ = w.run_traffic(60.0, 70.0)
    assert to_b == 20


def test_switches_are_reported_to_the_io_layer():
    w = Wire(after=3.0, probe=10.0)
    notes = []

    def drain():
        notes.extend((e.peer, e.text) for e in w.a.events if type(e) is FallbackSwitched)
        w.a.events.clear()
    w.block_ab = w.block_ba = True
    w.send("A", b"x", 0.0)
    w.advance(3.0)
    drain()
    assert notes == [(w.pa, "no handshake answer over UDP for 3 s; using the fallback Stream(T)")]
    w.block_ab = w.block_ba = False
    w.run_traffic(3.5, 20.0)
    drain()
    assert notes[1:] == [(w.pa, f"UDP answered again; back from the fallback to {B_UDP!r}")]
