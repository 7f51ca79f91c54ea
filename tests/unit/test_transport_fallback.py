"""The UDP -> stream fallback of the sans-IO core (ext/fallback.py), with two Devices and a fake clock.

The wire below (a core_pair.Pair) has two paths between client A and server B:
    UDP     A sends to B_UDP and B sees source A_UDP; B sends to A_UDP and A sees source B_UDP. Each direction
            can be blocked on its own (B_UDP or A_UDP in `w.blocked`): the asymmetric cases.
    stream  A sends to its fallback target T (an opaque object, as io/stream.py makes); B sees the source C
            (the accepted connection's endpoint, another opaque object); B's messages to C reach A from T.
Only the roaming rule of the core and the fallback logic decide which path each side uses.
"""

from __future__ import annotations

import pytest

from wgpy.constants import FALLBACK_PROBE_ANSWER
from wgpy.ext import fallback
from wgpy.protocol.events import FallbackSwitched

from wgpy_testkit.core_pair import Pair, Stream, seeded_rand

A_UDP = ("192.0.2.1", 40000)
B_UDP = ("192.0.2.2", 51820)
BOTH_WAYS = {B_UDP, A_UDP}      # for `blocked`: UDP from A (sent to B_UDP) and from B (sent to A_UDP)
T, C = Stream("T"), Stream("C")  # A's and B's end of the stream connection


def wire(*, after: float = 3.0, probe: float = 10.0, a_endpoint=B_UDP) -> Pair:
    w = Pair(1, endpoints=(A_UDP, B_UDP), inner_v6=False, rand_a=seeded_rand(11), rand_b=seeded_rand(12),
             strict=True)
    w.pa.endpoint = a_endpoint
    w.pb.endpoint = None          # B is the server: it learns A's address from A's messages
    w.link(T, "B", seen_as=C)
    w.link(C, "A", seen_as=T)
    out: list = []
    fallback.configure(w.a, w.pa, T, 0.0, out, after=after, probe_interval=probe)
    assert out == []
    return w


def paths(w: Pair, since: int = 0) -> list[tuple[float, str, str, int]]:
    """(now, sender, "udp" or "stream", message type) of each datagram put on the wire from log entry `since`."""
    return [(t, s, "stream" if ep is T or ep is C else "udp", d[0]) for t, s, ep, d in w.log[since:]]


def data_paths(w: Pair, sender: str, since: float) -> set[str]:
    return {p for t, s, p, typ in paths(w) if s == sender and typ == 4 and t >= since}


def test_udp_working_never_falls_back():
    w = wire()
    to_b, to_a = w.traffic(0.0, 400.0, step=2.0)            # rekeys every 120 s on the way
    assert to_b == to_a == 200
    fb = w.pa.fallback
    assert fb.switches == 0 and w.pa.endpoint == B_UDP and w.pb.endpoint == A_UDP
    assert data_paths(w, "A", 0.0) == {"udp"} and data_paths(w, "B", 0.0) == {"udp"}


def test_udp_blocked_falls_back_after_the_configured_time():
    w = wire(after=3.0)
    w.blocked |= BOTH_WAYS
    w.send_udp("A", b"first", 0.0)
    assert w.tun["B"] == []
    w.advance(2.9)
    assert w.pa.endpoint == B_UDP and w.pa.fallback.switches == 0
    w.advance(3.0)
    assert w.pa.endpoint is T and w.pa.fallback.switches == 1
    # the initiation went over the stream at once; the staged packet followed the handshake
    assert [p for p in paths(w) if p[0] == 3.0][:2] == [(3.0, "A", "stream", 1), (3.0, "B", "stream", 2)]
    assert len(w.tun["B"]) == 1 and w.pb.endpoint is C
    to_b, to_a = w.traffic(4.0, 100.0)
    assert to_b == to_a == 192
    assert data_paths(w, "A", 4.0) == {"stream"} and data_paths(w, "B", 4.0) == {"stream"}


def test_configured_during_an_unanswered_handshake_counts_from_its_initiation():
    """The mesh agent gives a peer its relay when a punch got no answer: the initiation already out counts."""
    w = Pair(1, endpoints=(A_UDP, B_UDP), inner_v6=False, rand_a=seeded_rand(11), rand_b=seeded_rand(12),
             strict=True)
    w.pa.endpoint, w.pb.endpoint = B_UDP, None
    w.link(T, "B", seen_as=C)
    w.link(C, "A", seen_as=T)
    w.blocked |= BOTH_WAYS
    w.send_udp("A", b"first", 0.0)                     # an initiation at 0.0, unanswered
    w.advance(1.5)
    out: list = []
    fallback.configure(w.a, w.pa, T, 1.5, out, after=0.5, probe_interval=10.0)
    assert w.pa.fallback.unanswered_since == 0.0
    w.advance(1.6)
    assert w.pa.endpoint is T and w.pa.fallback.switches == 1        # at once, not after the retry at 5 s
    assert [p[1:] for p in paths(w)][:3] == [("A", "udp", 1), ("A", "stream", 1), ("B", "stream", 2)]
    assert len(w.tun["B"]) == 1


def test_back_to_udp_within_the_probe_interval_once_unblocked():
    w = wire(after=3.0, probe=10.0)
    w.blocked |= BOTH_WAYS
    w.send_udp("A", b"x", 0.0)
    w.advance(3.0)
    assert w.pa.endpoint is T
    w.traffic(3.5, 30.0)
    assert w.pa.endpoint is T              # probes at 13 and 23 went nowhere
    assert w.pa.fallback.probes >= 2
    w.blocked.clear()
    unblocked = 30.0
    to_b, to_a = w.traffic(30.0, 60.0)
    assert to_b == to_a == 60              # nothing lost while moving back
    assert w.pa.endpoint == B_UDP and w.pb.endpoint == A_UDP
    assert w.pa.fallback.returns == 1
    back = min(t for t, s, p, typ in paths(w) if t >= unblocked and s == "A" and p == "udp" and typ == 4)
    assert back - unblocked <= 10.0        # the probe interval
    assert data_paths(w, "A", back + 1) == {"udp"} and data_paths(w, "B", back + 1) == {"udp"}


@pytest.mark.parametrize("reorder", [False, True])
@pytest.mark.parametrize("blocked", ["a_to_b", "b_to_a"])
def test_one_way_udp_never_gets_stuck(blocked, reorder):
    """UDP works in one direction only. A falls back; the probes never move traffic to the dead direction for
    longer than FALLBACK_PROBE_ANSWER (none at all when the keepalive over the stream arrives after the UDP
    probe; with `reorder` it arrives first); traffic both ways keeps flowing."""
    w = wire(after=3.0, probe=10.0)
    if reorder:
        w.overtake.add(T)                   # A's stream messages overtake the UDP ones sent in the same batch
    w.blocked.add(B_UDP if blocked == "a_to_b" else A_UDP)
    w.send_udp("A", b"x", 0.0)
    w.advance(3.0)
    assert w.pa.endpoint is T and w.pa.fallback.switches == 1
    # B -> A only, B sending every 0.25 s: each loss is a packet of B's that went to UDP while B->A is dead
    before = len(w.tun["A"])
    t, sent = 3.5, 0
    while t < 200.0:
        w.send_udp("B", b"b", t)
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
    assert w.pa.endpoint is T and w.pa.fallback.returns == 0
    # and at the end both sides use the stream
    to_b, to_a = w.traffic(200.0, 205.0)
    assert to_b == 10 and to_a >= 8


def test_one_way_probe_reaching_b_is_pinned_back_by_a_keepalive():
    w = wire(after=3.0, probe=10.0)
    w.blocked.add(A_UDP)                    # B -> A over UDP
    w.send_udp("A", b"x", 0.0)
    w.advance(3.0)
    w.traffic(3.5, 12.9)
    assert w.pb.endpoint is C
    n = len(w.log)
    w.advance(13.0 + 0.01)                  # the probe at 13 s: UDP initiation reaches B, then A's keepalive
    kinds = [(s, p, typ) for _, s, p, typ in paths(w, n)]
    assert ("A", "udp", 1) in kinds and ("A", "stream", 4) in kinds
    assert kinds.index(("A", "udp", 1)) < kinds.index(("A", "stream", 4))
    assert w.pb.endpoint is C               # B roamed to UDP for the initiation, then back for the keepalive


def test_no_primary_endpoint_starts_on_the_fallback():
    w = wire(a_endpoint=None)
    assert w.pa.endpoint is T
    w.send_udp("A", b"x", 0.0)
    assert len(w.tun["B"]) == 1
    assert w.pa.fallback.switches == 0 and w.pa.fallback.probes == 0
    w.traffic(1.0, 100.0)
    assert w.pa.fallback.probes == 0       # nothing to probe
    assert data_paths(w, "A", 0.0) == {"stream"}


def test_removing_the_fallback_goes_back_to_the_primary():
    w = wire()
    w.blocked |= BOTH_WAYS
    w.send_udp("A", b"x", 0.0)
    w.advance(3.0)
    assert w.pa.endpoint is T
    fallback.configure(w.a, w.pa, None, 4.0, [])
    assert w.pa.fallback is None and w.pa.endpoint == B_UDP


def test_a_session_that_dies_on_udp_falls_back_too():
    """UDP worked, then stops: WireGuard's own timers start a new handshake, which gets no answer."""
    w = wire(after=3.0)
    w.traffic(0.0, 10.0)
    assert w.pa.endpoint == B_UDP
    w.blocked |= BOTH_WAYS
    w.traffic(10.0, 60.0, both=False)
    assert w.pa.endpoint is T and w.pa.fallback.switches == 1
    to_b, _ = w.traffic(60.0, 70.0)
    assert to_b == 20


def test_switches_are_reported_to_the_io_layer():
    w = wire(after=3.0, probe=10.0)
    notes = []

    def drain():
        notes.extend((e.peer, e.text) for e in w.a.events if type(e) is FallbackSwitched)
        w.a.events.clear()
    w.blocked |= BOTH_WAYS
    w.send_udp("A", b"x", 0.0)
    w.advance(3.0)
    drain()
    assert notes == [(w.pa, "no handshake answer over UDP for 3 s; using the fallback Stream(T)")]
    w.blocked.clear()
    w.traffic(3.5, 20.0)
    drain()
    assert notes[1:] == [(w.pa, f"UDP answered again; back from the fallback to {B_UDP!r}")]
