"""Path MTU in the sans-IO core (#8): control messages, the PathMTU search, two devices over a simulated path
with a fake clock (black holes, ICMP, growth), ICMP "too big" and fragmentation for oversized packets."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from wgpy.constants import PMTU_PROBE_TRIES
from wgpy.ext import control
from wgpy.ext.pmtu import PathMTU, fragment_ipv4, icmp_too_big, overhead

from wgpy_testkit.core_pair import A_IP4, A_IP6, B_IP4, B_IP6, Pair, ipv4, ipv6, seeded_rand, udp4

EP_A = ("192.0.2.1", 51820)
EP_B = ("192.0.2.2", 51821)
EP6_A = ("2001:db8::1", 51820, 0, 0)
EP6_B = ("2001:db8::2", 51821, 0, 0)
from wgpy.protocol.events import PATH_MTU_CHANGED, Fragmentable, TunPacket


def to_tun(dev) -> list[bytes]:
    """The packets the core handed to the local stack (ICMP errors), from its events."""
    return [e.packet for e in dev.events if type(e) is TunPacket]


# ---------------------------------------------------------------------------------------------------------------
# message format
# ---------------------------------------------------------------------------------------------------------------

def test_control_messages_are_never_ip_packets():
    for msg in (control.hello(True), control.probe(7, 1400, 1340), control.probe_reply(7, 1400, 1340)):
        assert msg[0] >> 4 not in (4, 6)
    assert control.parse(control.hello(True)) == (control.HELLO, 1, control.FLAG_REPLY_WANTED, control.EXT_PMTU)
    assert control.parse(control.hello(False))[2] == 0
    p = control.probe(0xDEADBEEF, 1400, 1340)
    assert len(p) == 1340 and p[10:] == bytes(1330)
    assert control.parse(p) == (control.PROBE, 0xDEADBEEF, 1400)
    assert control.parse(control.probe_reply(5, 1400, 1344)) == (control.PROBE_REPLY, 5, 1400, 1344)
    assert control.parse(b"\x57\x09") == (9,)
    for short in (b"", b"\x57", control.hello(True)[:7], control.probe(1, 2, 10)[:9],
                  control.probe_reply(1, 2, 3)[:11], b"\x45" + bytes(30)):
        assert control.parse(short) is None


def test_l2_control_frame_header_is_an_invalid_source():
    h = control.L2_CONTROL_HEADER
    assert len(h) == 14 and h[6:12] == bytes(6) and h[12:14] == b"\x88\xb5"


# ---------------------------------------------------------------------------------------------------------------
# PathMTU alone: a simulated path answering every probe up to `path`
# ---------------------------------------------------------------------------------------------------------------

def run_search(st: PathMTU, path: int, now: float = 0.0, rtt: float = 0.01, lose=lambda size, n: False):
    """Drive one round to its end; returns (end time, number of probes sent)."""
    out: list = []
    st.start_round(now, out)
    sent = 0
    for _ in range(10_000):
        sent += len(out)
        batch, out = out, []
        t = now + rtt
        for i, size in enumerate(batch):
            if size <= path and not lose(size, sent + i):
                st.answered(size, t, out)
        if not st.searching:
            return t, sent
        if out:
            now = t
            continue
        now = st.deadline
        st.expired(now, out)
        if not st.searching:
            return now, sent
    raise AssertionError("search does not end")


@pytest.mark.parametrize("path", [576, 577, 1000, 1279, 1280, 1281, 1400, 1499, 1500])
def test_search_finds_the_exact_path_mtu_v4(path):
    st = PathMTU(EP_B, 1500, 0.0, 300.0)
    end, sent = run_search(st, path)
    assert st.mtu == path and st.source == "probe"
    assert st.usable == path - 60
    assert end < 30 and sent < 80


@pytest.mark.parametrize("path", [1280, 1281, 1400, 1500])
def test_search_finds_the_exact_path_mtu_v6(path):
    st = PathMTU(EP6_B, 1500, 0.0, 300.0)
    assert st.floor == 1280 and st.overhead == 80
    run_search(st, path)
    assert st.mtu == path


def test_search_time_is_bounded_by_steps_times_tries():
    st = PathMTU(EP_B, 1500, 0.0, 300.0)
    end, _ = run_search(st, 1280, rtt=0.001)
    # after the first answers the timeout is 4 x RTT, at least 0.3 s: a few steps of 3 tries each
    assert end < 8 * PMTU_PROBE_TRIES * 0.3 + 2


def test_path_equal_to_link_mtu_takes_one_round_trip():
    st = PathMTU(EP_B, 1500, 0.0, 300.0)
    end, sent = run_search(st, 1500)
    assert st.mtu == 1500 and end == pytest.approx(0.01) and sent <= 6


def test_black_hole_lowers_the_estimate_before_the_search_ends():
    st = PathMTU(EP_B, 1500, 0.0, 300.0)
    out: list = []
    st.start_round(0.0, out)
    assert 1500 in out and 576 in out
    for size in out:
        if size <= 1280:
            st.answered(size, 0.01, [])
    assert st.mtu == 1500                          # not yet: 1500 may just be late
    for _ in range(PMTU_PROBE_TRIES):
        st.expired(st.deadline, out)
    assert st.mtu <= 1280 and st.searching         # the largest answered size, while the search goes on


def test_unresponsive_peer_keeps_its_estimate():
    st = PathMTU(EP_B, 1500, 0.0, 300.0)
    st.kernel(1400)
    end, sent = run_search(st, 0)                   # nothing is ever answered
    assert st.mtu == 1400 and st.unanswered_rounds == 1
    assert sent == 7 * PMTU_PROBE_TRIES and st.next_round == pytest.approx(end + 300.0)


def test_random_loss_does_not_make_the_estimate_too_big():
    st = PathMTU(EP_B, 1500, 0.0, 300.0)
    run_search(st, 1350, lose=lambda size, n: n % 3 == 0)
    assert 576 <= st.mtu <= 1350


def test_kernel_reports_are_clamped_and_never_raise():
    st = PathMTU(EP_B, 1400, 0.0, 300.0)
    assert st.ceiling == 1400 and st.mtu == 1400 and st.source == "link"
    st.kernel(9000)
    assert st.mtu == 1400
    st.kernel(1300)
    assert st.mtu == 1300 and st.source == "icmp"
    st.kernel(100)
    assert st.mtu == 576
    st6 = PathMTU(EP6_B, None, 0.0, 300.0)
    assert st6.ceiling == 1500
    st6.kernel(600)
    assert st6.mtu == 1280


def test_kernel_report_during_a_search_narrows_it():
    st = PathMTU(EP_B, 1500, 0.0, 300.0)
    out: list = []
    st.start_round(0.0, out)
    st.kernel(1280)
    assert st.hi == 1281 and all(s <= 1280 for s in st.pending)
    for s in list(st.pending):
        st.answered(s, 0.01, out)
    while st.searching:
        batch, out = out, []
        for s in batch:
            if s <= 1280:
                st.answered(s, st.sent_at + 0.01, out)
        if st.searching and not out:
            st.expired(st.deadline, out)
    assert st.mtu == 1280


def test_reset_goes_back_to_the_link_mtu():
    st = PathMTU(EP_B, 1500, 0.0, 60.0)
    st.kernel(1280)
    st.reset(10.0)
    assert st.mtu == 1500 and st.source == "link" and st.next_round == 70.0
    assert overhead(False) == 60 and overhead(True) == 80


# ---------------------------------------------------------------------------------------------------------------
# Two devices over a simulated path
# ---------------------------------------------------------------------------------------------------------------

class Path:
    """The underlay between A and B: outer packets above `mtu` are lost (a black hole: no ICMP)."""

    def __init__(self, mtu: int, v6: bool = False) -> None:
        self.mtu = mtu
        self.ip = 40 if v6 else 20
        self.lost = 0

    def __call__(self, sender: str, datagram: bytes) -> bool:
        if len(datagram) + 8 + self.ip > self.mtu:
            self.lost += 1
            return True
        return False


def pmtu_pair(path: Path, *, control_b: bool = True, auto: bool = True, interval: float = 30.0,
              v6: bool = False, l2: bool = False, link: int = 1500) -> Pair:
    ea, eb = (EP6_A, EP6_B) if v6 else (EP_A, EP_B)
    if l2:   # both devices in L2 mode, the same keys (seed 5)
        p = Pair(5, l2=True, endpoints=(ea, eb), rand_a=seeded_rand(1), rand_b=seeded_rand(2))
    else:
        p = Pair(5, endpoints=(ea, eb))
    for dev, on in ((p.a, True), (p.b, control_b)):
        dev.control_enabled = on
        dev.pmtu_interval = interval
        dev.link_mtu = lambda ep: link
        dev.mtu = 1500 - overhead(v6)
        dev.set_pmtu_auto(auto)
    p.drop = path
    return p


def settle(p: Pair, until: float) -> None:
    p.advance(until)


def test_hello_exchange_then_probes_find_a_black_hole_path():
    path = Path(1280)
    p = pmtu_pair(path)
    p.handshake(0.0)
    assert p.pa.wgpy and p.pb.wgpy                 # both sides said HELLO
    hellos = [e for e in p.log if len(e[3]) == 16 + control.HELLO_SIZE + 16]
    assert 2 <= len(hellos) <= 4
    settle(p, 20.0)
    assert p.pa.pmtu.mtu == 1280 and p.pb.pmtu.mtu == 1280
    assert p.pa.pmtu.source == "probe"
    assert p.pa.mtu == 1280 - 60 and p.pb.mtu == 1220
    assert PATH_MTU_CHANGED in p.a.events and p.a.smallest_usable_mtu() == 1220
    # the tunnel now carries exactly 1220-byte packets and nothing larger reaches the wire
    pkt = udp4(A_IP4, B_IP4, bytes(1220 - 28))
    n = path.lost
    p.send("A", [pkt], 21.0)
    assert p.tun["B"][-1] == pkt and path.lost == n
    assert not p.a.drops.get("control_malformed") and not p.b.drops.get("control_unknown")


def test_oversized_packet_with_df_is_answered_with_icmp_frag_needed():
    p = pmtu_pair(Path(1280))
    p.handshake(0.0)
    settle(p, 20.0)
    big = bytearray(udp4(A_IP4, B_IP4, bytes(1300)))
    big[6] |= 0x40                                   # DF
    sent = len(p.log)
    p.send("A", [bytes(big)], 21.0)
    assert len(p.log) == sent                        # nothing on the wire
    (icmp,) = to_tun(p.a)
    assert icmp[9] == 1 and icmp[12:16] == ipaddress.IPv4Address(B_IP4).packed
    assert icmp[16:20] == ipaddress.IPv4Address(A_IP4).packed
    assert icmp[20:22] == b"\x03\x04" and struct.unpack("!H", icmp[26:28])[0] == 1220
    assert icmp[28:48] == bytes(big[:20])
    assert p.a.drops["too_big_icmp_sent"] == 1


def test_oversized_packet_without_df_is_fragmented():
    p = pmtu_pair(Path(1280))
    p.handshake(0.0)
    settle(p, 20.0)
    pkt = udp4(A_IP4, B_IP4, bytes(range(256)) * 10)   # 2588 bytes, DF clear
    p.send("A", [pkt], 21.0)
    frags = p.tun["B"][-3:]
    assert all(len(f) <= 1220 for f in frags)
    assert b"".join(f[20:] for f in frags) == pkt[20:]
    assert [struct.unpack("!H", f[6:8])[0] & 0x2000 for f in frags] == [0x2000, 0x2000, 0]


def test_oversized_ipv6_packet_gets_packet_too_big():
    p = pmtu_pair(Path(1400))
    p.handshake(0.0)
    settle(p, 20.0)
    assert p.pa.mtu == 1340
    big = ipv6(A_IP6, B_IP6, bytes(1400))
    p.send("A", [big], 21.0)
    (icmp,) = to_tun(p.a)
    assert icmp[6] == 58 and icmp[40] == 2 and struct.unpack("!I", icmp[44:48])[0] == 1340
    assert icmp[8:24] == ipaddress.IPv6Address(B_IP6).packed


def test_icmp_is_rate_limited():
    p = pmtu_pair(Path(1280))
    p.handshake(0.0)
    settle(p, 20.0)
    big = bytearray(udp4(A_IP4, B_IP4, bytes(1300)))
    big[6] |= 0x40
    p.send("A", [bytes(big)] * 200, 21.0)
    assert 40 <= len(to_tun(p.a)) <= 60
    assert p.a.drops["too_big_icmp_ratelimited"] >= 140


def test_path_grows_back_within_the_reprobe_interval():
    path = Path(1280)
    p = pmtu_pair(path, interval=10.0)
    p.handshake(0.0)
    settle(p, 8.0)
    assert p.pa.pmtu.mtu == 1280
    path.mtu = 1500
    p.send("A", [udp4(A_IP4, B_IP4, b"x")], 9.0)     # keep the session alive
    settle(p, 25.0)
    assert p.pa.pmtu.mtu == 1500 and p.pa.mtu == 1440


def test_path_shrinking_silently_is_found_at_the_next_round():
    path = Path(1500)
    p = pmtu_pair(path, interval=10.0)
    p.handshake(0.0)
    settle(p, 5.0)
    assert p.pa.pmtu.mtu == 1500
    path.mtu = 1400
    settle(p, 25.0)
    assert p.pa.pmtu.mtu == 1400 and p.pa.mtu == 1340


def send_big(p: Pair, now: float, size: int = 1400) -> bytes:
    """A sends one IPv4 packet of `size` bytes to B; returns the datagram that went on the wire for it."""
    n = len(p.log)
    p.send("A", [udp4(A_IP4, B_IP4, bytes(size - 28))], now)
    return next(e[3] for e in p.log[n:] if e[1] == "A" and len(e[3]) >= size + 32)


def test_a_local_error_lowers_at_once_for_every_port_at_that_address():
    p = pmtu_pair(Path(1500), control_b=False)
    p.handshake(0.0)
    p.a.events.clear()
    assert p.a.path_mtu_learned("192.0.2.99", 0, 1280, 1.0, local=True) == 0
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1] + 1, 1280, 1.0, local=True) == 0
    assert p.a.path_mtu_learned(EP_B[0], 0, 1300, 1.0, local=True) == 1      # our own send: port 0 = any
    assert p.pa.pmtu.mtu == 1300 and p.pa.pmtu.source == "icmp" and p.pa.mtu == 1240 and PATH_MTU_CHANGED in p.a.events


def test_icmp_must_name_the_endpoint_and_a_datagram_really_sent():
    """An ICMP from the network (anyone can forge one) is about a peer only for its exact endpoint (port 0 is
    no wildcard), a datagram larger than the MTU it reports sent there in the last few seconds, and, when the
    router quoted it, the WireGuard header of one of our messages (the peer's receiver index, a counter sent)."""
    p = pmtu_pair(Path(1500), control_b=False)      # B is plain WireGuard: a believed ICMP lowers at once
    p.handshake(0.0)                                # small datagrams only so far
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 576, 1.0) == 0        # nothing larger than 576 sent
    dgram = send_big(p, 2.0)                        # plaintext 1400, padded 1408: outer 1468 bytes
    quote = dgram[:64]                              # the error queue gives the start of the UDP payload
    for port in (0, EP_B[1] + 1):
        assert p.a.path_mtu_learned(EP_B[0], port, 1280, 2.1, quote) == 0
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1468, 2.1, quote) == 0    # 1468 bytes fit 1468
    forged = bytearray(quote)
    forged[4:8] = b"\x11\x22\x33\x44"                                     # a receiver index of no session
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1280, 2.1, bytes(forged)) == 0
    ahead = quote[:8] + struct.pack("<Q", p.pa.current.send_counter + 5)   # a counter not sent yet
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1280, 2.1, ahead) == 0
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1280, 2.0 + 4.1, quote) == 0   # too long ago
    assert p.a.drops["icmp_unmatched"] == 7 and p.pa.pmtu.mtu == 1500
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1467, 2.1, quote) == 1
    assert p.pa.pmtu.mtu == 1467 and p.pa.pmtu.source == "icmp"
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1300, 2.2, quote[:8]) == 1      # a shorter quote: as far as it goes
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1280, 2.3) == 1                 # RFC 792's 8 bytes: UDP header only
    assert p.pa.pmtu.mtu == 1280 and p.pa.mtu == 1220


def test_icmp_between_wgpy_peers_is_a_hint_that_probes_check_at_once():
    """A wgpy peer: an ICMP that cannot be checked further (only the UDP header quoted, as an off-path attacker
    who knows the endpoint can send it while traffic flows) leaves the estimate alone and starts a probe round at
    once; the old size answered, nothing changes (a spoofed ICMP costs a few probes). At most one such round per
    peer and PMTU_ICMP_PROBE_GAP."""
    p = pmtu_pair(Path(1500))
    p.handshake(0.0)
    settle(p, 5.0)
    assert p.pa.pmtu.mtu == 1500 and not p.pa.pmtu.searching
    send_big(p, 6.0)
    p.a.events.clear()
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 576, 6.01) == 1
    assert p.pa.pmtu.mtu == 1500 and p.pa.mtu == 1440 and PATH_MTU_CHANGED not in p.a.events
    assert p.pa.t_pmtu == 6.01                       # the round: at once
    n = len(p.log)
    settle(p, 6.01)
    probes = [e for e in p.log[n:] if e[1] == "A" and len(e[3]) > 200]
    assert probes and not p.pa.pmtu.searching and p.pa.pmtu.mtu == 1500
    assert p.a.drops["icmp_probed"] == 1 and p.a.drops["icmp_refuted"] == 1
    assert PATH_MTU_CHANGED not in p.a.events
    send_big(p, 6.5)
    p.a.path_mtu_learned(EP_B[0], EP_B[1], 576, 6.5)
    settle(p, 6.6)
    assert p.a.drops["icmp_probed"] == 1                 # within the gap: no second round
    send_big(p, 7.2)
    p.a.path_mtu_learned(EP_B[0], EP_B[1], 576, 7.2)
    settle(p, 7.3)
    assert p.a.drops["icmp_probed"] == 2 and p.a.drops["icmp_refuted"] == 2 and p.pa.pmtu.mtu == 1500


def test_icmp_quoting_our_header_lowers_at_once_and_a_probe_restores_the_old_size():
    """An ICMP that quotes our WireGuard header (its sender saw the datagram: a router, or someone on the path)
    lowers a wgpy peer's estimate at once, and the probe round started with it restores the old size as soon as
    that is answered."""
    p = pmtu_pair(Path(1500))
    p.handshake(0.0)
    settle(p, 5.0)
    quote = send_big(p, 6.0)[:64]
    p.a.events.clear()
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 576, 6.0, quote) == 1
    assert p.pa.pmtu.mtu == 576 and p.pa.mtu == 516 and PATH_MTU_CHANGED in p.a.events
    settle(p, 6.0)
    assert p.pa.pmtu.mtu == 1500 and p.pa.mtu == 1440 and not p.pa.pmtu.searching
    assert p.a.drops["icmp_probed"] == 1 and p.a.drops["icmp_refuted"] == 1


@pytest.mark.parametrize("quoted", [False, True])
def test_a_real_shrink_reported_by_icmp_is_taken(quoted):
    """The path really shrinks and a router says so. Quoting our header: lowered at once, and the round started
    with it confirms the size. Quoting only the UDP header: the ICMP's size answered, the estimate not, after
    two probe timeouts: lowered then (before the 3 tries a black hole needs; one lost probe at the old size is
    not enough). Either way the round ends at the exact size."""
    path = Path(1500)
    p = pmtu_pair(path)
    p.handshake(0.0)
    settle(p, 5.0)
    path.mtu = 1400
    quote = send_big(p, 6.0)[:64]                   # lost: 1468 > 1400
    assert p.a.path_mtu_learned(EP_B[0], EP_B[1], 1400, 6.0, quote if quoted else b"") == 1
    timeout = p.pa.pmtu.timeout()
    if quoted:
        assert p.pa.pmtu.mtu == 1400 and p.pa.mtu == 1340
    else:
        assert p.pa.pmtu.mtu == 1500
        settle(p, 6.0 + timeout + 0.01)
        assert p.pa.pmtu.mtu == 1500 and p.pa.pmtu.searching
        settle(p, 6.0 + 2 * timeout + 0.02)
        assert p.pa.pmtu.mtu == 1400 and p.pa.mtu == 1340 and p.pa.pmtu.searching
    settle(p, 30.0)
    assert p.pa.pmtu.mtu == 1400 and p.pa.pmtu.source == "probe"
    assert p.a.drops["icmp_confirmed"] == 1 and not p.a.drops.get("icmp_refuted")


def test_during_a_search_only_an_icmp_quoting_our_header_counts():
    """A search is under way (probes above the path unanswered): an ICMP about one of the probes, quoting our
    header, narrows it at once (fast convergence where ICMP works); one quoting only the UDP header is ignored."""
    for quoted in (False, True):
        p = pmtu_pair(Path(1280))
        n = len(p.log)
        p.handshake(0.0)                             # HELLOs
        settle(p, 0.0)                               # the first round's probes, those up to 1280 answered
        assert p.pa.pmtu.searching
        probe = max((e[3] for e in p.log[n:] if e[1] == "A" and e[3][0] == 4), key=len)
        assert len(probe) + 28 > 1280
        got = p.a.path_mtu_learned(EP_B[0], EP_B[1], 1280, 0.0, probe[:64] if quoted else b"")
        assert got == (1 if quoted else 0) and p.pa.pmtu.searching
        assert (p.pa.pmtu.hi == 1281) == quoted and (p.pa.pmtu.mtu == 1280) == quoted


def test_a_plain_wireguard_peer_gets_three_hellos_and_no_probes():
    path = Path(1280)
    p = pmtu_pair(path, control_b=False)
    for t in range(0, 600, 130):                    # several sessions
        p.send("A", [udp4(A_IP4, B_IP4, b"x")], float(t))
        settle(p, t + 125.0)
    from_a = [e for e in p.log if e[1] == "A" and e[3][0] == 4]
    probes = [e for e in from_a if len(e[3]) > 200]
    hellos = [e for e in from_a if len(e[3]) == 40]
    assert probes == [] and len(hellos) == 3
    assert p.b.drops["control_disabled"] == 3 and not p.pa.wgpy
    # passive: the kernel's report is what counts, and the estimate returns to the link MTU each interval
    quote = send_big(p, 700.0)[:64]
    p.a.path_mtu_learned(EP_B[0], EP_B[1], 1280, 700.0, quote)
    assert p.pa.pmtu.mtu == 1280
    settle(p, 700.0 + 31.0)
    assert p.pa.pmtu.mtu == 1500


def test_explicit_mtu_mode_limits_by_the_interface_only():
    p = pmtu_pair(Path(1280), auto=False)
    p.handshake(0.0)
    settle(p, 20.0)
    sent = [e for e in p.log if e[3][0] == 4 and len(e[3]) > 200]
    assert sent == []                                # no probes
    quote = send_big(p, 21.0)[:64]
    p.a.path_mtu_learned(EP_B[0], EP_B[1], 1280, 21.0, quote)
    assert p.pa.pmtu.mtu == 1280 and p.pa.mtu == p.a.mtu == 1440   # reported, not enforced


@pytest.mark.parametrize("v6_underlay", [False, True])
def test_ipv6_above_a_limit_below_1280_goes_out_whole_for_outer_fragmentation(v6_underlay):
    """A path of 1300 bytes: the peer's limit (1240 over IPv4, 1220 over IPv6) is below what IPv6 can be told
    (1280). An inner IPv6 packet above it is neither dropped nor answered: it goes out whole in a Fragmentable
    event (the I/O layer sends it with outer fragmentation allowed) and arrives."""
    p = pmtu_pair(Path(1300, v6=v6_underlay), v6=v6_underlay)
    p.handshake(0.0)
    settle(p, 20.0)
    limit = 1300 - overhead(v6_underlay)
    assert p.pa.mtu == limit
    pkt = ipv6(A_IP6, B_IP6, bytes(1280 - 40))
    n = len(p.log)
    p.a.events.clear()
    p.send("A", [pkt, ipv6(A_IP6, B_IP6, bytes(limit - 40))], 21.0)
    assert len(p.log) == n + 1                       # only the one that fits went the ordinary way
    (ev,) = [e for e in p.a.events if type(e) is Fragmentable]
    assert ev.path_mtu == 1300 and len(ev.datagrams) == 1 and ev.datagrams[0][1] == p.pa.endpoint
    assert to_tun(p.a) == [] and not p.a.drops.get("too_big_dropped")
    assert p.a.drops["too_big_outer_fragmented"] == 1
    p.drop = None                                    # the kernel fragments it, B's reassembles it
    p.deliver("A", list(ev.datagrams), 21.0)
    assert p.tun["B"][-1] == pkt


def test_the_interface_follows_the_upper_median_of_the_peers():
    """One peer on a bad path (or lying to our probes) cannot shrink everyone's MTU: the interface follows the
    largest usable MTU that at least half of the peers carry (in L2 the smallest: a switch cannot say "too big");
    the small peer keeps its own limit."""
    from wgpy_testkit.core_pair import Net
    for l2 in (False, True):
        eps = [("192.0.2.1", 1), ("192.0.2.2", 2), ("192.0.2.3", 3), ("192.0.2.4", 4)]
        net = Net("SABC", [("S", "A"), ("S", "B"), ("S", "C")], endpoints=eps, l2=l2)
        s = net.dev["S"]
        s.set_pmtu_auto(True)
        peers = [net.peer[("S", x)] for x in "ABC"]
        assert s.interface_usable_mtu() is None
        for peer in peers:
            peer.pmtu = PathMTU(peer.endpoint, 1500, 0.0, 0.0)
        peers[2].pmtu.mtu = 576                      # C's path
        want = 516 if l2 else 1440
        assert s.smallest_usable_mtu() == 516 and s.interface_usable_mtu() == want
        s.mtu = want                                 # what the runtime sets (io/pmtu.py); the limits follow
        assert peers[2].mtu == 516 and peers[0].mtu == want
        peers[1].pmtu.mtu = 1280                     # two of three small: the interface follows them
        assert s.interface_usable_mtu() == (516 if l2 else 1220)
        del s.peers[peers[2].public_key]             # two peers: the larger
        assert s.interface_usable_mtu() == (1220 if l2 else 1440)


def test_ipv6_underlay_black_hole():
    p = pmtu_pair(Path(1400, v6=True), v6=True)
    p.handshake(0.0)
    settle(p, 20.0)
    assert p.pa.pmtu.mtu == 1400 and p.pa.mtu == 1400 - 80


def test_probe_lost_does_not_start_a_handshake_or_count_as_data():
    p = pmtu_pair(Path(600))
    p.handshake(0.0)
    settle(p, 60.0)
    assert p.pa.pmtu.mtu == 600
    inits = [e for e in p.log if e[3][0] == 1]
    assert len(inits) == 1


def test_l2_control_frames_and_oversized_frames():
    p = pmtu_pair(Path(1280), l2=True)
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + bytes(100)
    p.send("A", [frame], 0.0)
    assert p.pa.wgpy and p.pb.wgpy
    settle(p, 20.0)
    assert p.pa.pmtu.mtu == 1280 and p.pa.mtu == 1220
    assert p.tun["B"][0].startswith(frame) and all(f[6:12] != bytes(6) for f in p.tun["B"])
    assert not p.b.drops.get("l2_bad_src_mac")
    big = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + bytes(1300)
    p.send("A", [big], 21.0)
    assert p.a.drops["l2_frame_too_big"] == 1 and to_tun(p.a) == []


def test_garbage_control_messages_are_counted_not_answered():
    p = pmtu_pair(Path(1500))
    p.handshake(0.0)
    n = len(p.log)
    for msg in (b"\x57", b"\x57\x01\x01", b"\x57\x03" + bytes(10), b"\x57\x7f" + bytes(30)):
        out: list = []
        p.a.path_mtu._send_control(p.pa, msg, 1.0, out)
        p.deliver("A", out, 1.0)
    assert p.b.drops["control_malformed"] == 2
    assert p.b.drops["control_unknown"] == 1 and p.b.drops["control_stale_reply"] == 1
    assert [e for e in p.log[n:] if e[1] == "B"] == []


# ---------------------------------------------------------------------------------------------------------------
# ICMP and fragments alone
# ---------------------------------------------------------------------------------------------------------------

def _csum_ok(data: bytes) -> bool:
    if len(data) & 1:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def test_icmp_checksums_and_no_errors_about_errors():
    pkt = udp4(A_IP4, B_IP4, bytes(1400))
    icmp = icmp_too_big(pkt, 1220)
    assert _csum_ok(icmp[:20]) and _csum_ok(icmp[20:])
    assert icmp_too_big(icmp, 1000) is None                       # never an error about an error
    assert icmp_too_big(ipv4("224.0.0.1", B_IP4, bytes(10)), 1000) is None
    frag = bytearray(pkt)
    frag[6:8] = b"\x00\x10"
    assert icmp_too_big(bytes(frag), 1000) is None                # not the first fragment
    v6 = ipv6(A_IP6, B_IP6, bytes(1400))
    icmp6 = icmp_too_big(v6, 1280)
    pseudo = icmp6[8:24] + icmp6[24:40] + struct.pack("!II", len(icmp6) - 40, 58)
    assert _csum_ok(pseudo + icmp6[40:]) and len(icmp6) <= 1280
    assert icmp_too_big(icmp6, 1280) is None


def test_fragments_have_valid_headers():
    pkt = udp4(A_IP4, B_IP4, bytes(3000))
    frags = fragment_ipv4(pkt, 1000)
    assert all(len(f) <= 1000 and _csum_ok(f[:20]) for f in frags)
    offs = [(struct.unpack("!H", f[6:8])[0] & 0x1FFF) * 8 for f in frags]
    assert offs == [0, 976, 1952, 2928][:len(frags)]
    assert fragment_ipv4(pkt, 20) == []


def test_mixed_batch_with_fragments_uses_every_counter_once():
    p = pmtu_pair(Path(1280))
    p.handshake(0.0)
    settle(p, 20.0)
    small = [udp4(A_IP4, B_IP4, bytes([i]) * 100) for i in range(3)]
    big = udp4(A_IP4, B_IP4, bytes(2000))
    n = len(p.log)
    p.send("A", [small[0], big, small[1], big, small[2]], 21.0)
    counters = [struct.unpack_from("<Q", e[3], 8)[0] for e in p.log[n:] if e[1] == "A" and e[3][0] == 4]
    assert len(counters) == len(set(counters)) == 3 + 4
    assert not p.b.drops.get("replay") and not p.b.drops.get("invalid_tag")
    assert [t for t in p.tun["B"] if len(t) == 128] == small


def test_explicit_mtu_sends_larger_packets_unpadded_as_before():
    p = pmtu_pair(Path(1500), auto=False)
    p.a.mtu = 1420
    p.handshake(0.0)
    pkt = udp4(A_IP4, B_IP4, bytes(1430 - 28))
    n = len(p.log)
    p.send("A", [pkt, udp4(A_IP4, B_IP4, b"y")], 1.0)
    sizes = sorted(len(e[3]) for e in p.log[n:] if e[1] == "A")
    assert sizes == [16 + 32 + 16, 16 + 1430 + 16]
    assert p.tun["B"][-2:] == [udp4(A_IP4, B_IP4, b"y"), pkt] or pkt in p.tun["B"]


def test_a_round_due_while_idle_runs_right_after_the_next_handshake():
    path = Path(1500)
    p = pmtu_pair(path, interval=200.0)
    p.handshake(0.0)
    settle(p, 5.0)
    assert p.pa.pmtu.mtu == 1500
    path.mtu = 1300                                  # shrinks while the tunnel is idle and the session expires
    settle(p, 700.0)
    assert p.pa.current is None and p.pa.pmtu.mtu == 1500 and p.pa.pmtu.due
    p.send("A", [udp4(A_IP4, B_IP4, b"again")], 701.0)
    settle(p, 720.0)
    assert p.pa.pmtu.mtu == 1300 and not p.pa.pmtu.due
