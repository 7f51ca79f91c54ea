"""Path MTU discovery and the automatic tunnel MTU (#8), in namespaces:

    A 10.210.1.1 ── veth 1500 ── R ── veth MTU 1280 (later 1400, 1500) ── B 10.210.2.2
    tunnel 10.99.0.1 (A) <-> 10.99.0.2 (B), no MTU in either config, MTUProbeInterval = 3

R forwards; with `black_hole` it drops every ICMP (an nftables table of its own), so only wgpy's probes can find
the path MTU. The inner ping boundary is exact: with path MTU P over IPv4 the tunnel carries P - 60 bytes, so
`ping -M do -s P-88` gets through and `-s P-87` is refused with the tunnel's MTU (locally, "message too long",
or by wgpy's ICMP "fragmentation needed" written into A's TUN).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import PeerSpec, gen_keypair, render_config, run, sysctl, wait_for, write_config, nft_load

pytestmark = pytest.mark.netns

A_UL, R_A, R_B, B_UL = "10.210.1.1", "10.210.1.2", "10.210.2.1", "10.210.2.2"
A_IN, B_IN = "10.99.0.1", "10.99.0.2"
PORT_A, PORT_B = 51820, 51821
INTERVAL = 3
MB50 = 50 * 1024 * 1024

# every ICMP, and every ICMPv6 error (neighbour discovery is ICMPv6 too and must stay, or nothing flows)
BLACK_HOLE = """table inet pmtu_bh {
    chain forward_icmp {
        type filter hook forward priority 0; policy accept;
        meta l4proto icmp counter drop
        icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } counter drop
    }
    chain output_icmp {
        type filter hook output priority 0; policy accept;
        meta l4proto icmp counter drop
        icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } counter drop
    }
}
"""


A6_UL, R6_A, R6_B, B6_UL = "fd10:1::1", "fd10:1::2", "fd10:2::1", "fd10:2::2"


class ARB:
    def __init__(self, lab, link_mtu: int, black_hole: bool = False, v6: bool = False, tap: bool = False,
                 inner_v6: bool = False) -> None:
        self.lab = lab
        self.tap = tap
        self.inner_v6 = inner_v6
        self.a, self.r, self.b = lab.netns(), lab.netns(), lab.netns()
        if v6:
            a_ul, r_a, r_b, b_ul, plen = A6_UL, R6_A, R6_B, B6_UL, 64
        else:
            a_ul, r_a, r_b, b_ul, plen = A_UL, R_A, R_B, B_UL, 24
        self.a_ep = f"[{a_ul}]" if v6 else a_ul
        self.b_ep = f"[{b_ul}]" if v6 else b_ul
        lab.veth(self.a, self.r, f"{a_ul}/{plen}", f"{r_a}/{plen}")
        self.r_b, self.b_r = lab.veth(self.r, self.b, f"{r_b}/{plen}", f"{b_ul}/{plen}")
        self.set_link_mtu(link_mtu)
        fam = "-6" if v6 else "-4"
        run(self.a, "ip", fam, "route", "add", "default", "via", r_a)
        run(self.b, "ip", fam, "route", "add", "default", "via", r_b)
        sysctl(self.r, "net.ipv6.conf.all.forwarding" if v6 else "net.ipv4.ip_forward", 1)
        if black_hole:
            nft_load(self.r, BLACK_HOLE)
        self.ka, self.kb = gen_keypair(), gen_keypair()

    def set_link_mtu(self, mtu: int) -> None:
        run(self.r, "ip", "link", "set", self.r_b, "mtu", mtu)
        run(self.b, "ip", "link", "set", self.b_r, "mtu", mtu)

    def wgpy(self, ns: str, keys, port: int, addr: str, peer_keys, peer_ep: str, peer_in: str) -> str:
        iface = netlab.unique_iface()
        allowed, addrs = (f"{peer_in}/32",), [f"{addr}/24"]
        if self.inner_v6:
            allowed += (f"fd99::{peer_in.rsplit('.', 1)[1]}/128",)
            addrs.append(f"fd99::{addr.rsplit('.', 1)[1]}/64")
        text = render_config(keys.private, port, [PeerSpec(peer_keys.public, allowed, endpoint=peer_ep)],
                             addresses=addrs, extra_interface_lines=[f"MTUProbeInterval = {INTERVAL}"])
        if self.tap:
            text = text.replace("[Interface]\n", "[Interface]\nMode = tap\n").replace(f"AllowedIPs = {peer_in}/32\n", "")
        self.lab.wgpy_up(ns, write_config(self.lab.tmp, iface, text))
        return iface

    def up_both(self) -> tuple[str, str]:
        self.ia = self.wgpy(self.a, self.ka, PORT_A, A_IN, self.kb, f"{self.b_ep}:{PORT_B}", B_IN)
        self.ib = self.wgpy(self.b, self.kb, PORT_B, B_IN, self.ka, f"{self.a_ep}:{PORT_A}", A_IN)
        return self.ia, self.ib


def path_mtu(lab, ns: str, iface: str) -> tuple[int, str]:
    """(path MTU, how learned) of the only peer, from `wgpy show IFACE path-mtu`."""
    res = lab.wgpy(ns, "show", iface, "path-mtu", check=True)
    _key, pm, src = res.stdout.strip().split("\t")
    return (int(pm), src) if pm.isdigit() else (0, src)


def link_mtu(ns: str, iface: str) -> int:
    return json.loads(run(ns, "ip", "-j", "link", "show", "dev", iface).stdout)[0]["mtu"]


def ping_df(ns: str, dst: str, size: int, count: int = 2) -> "subprocess.CompletedProcess":
    return run(ns, "ping", "-4", "-M", "do", "-c", count, "-i", "0.2", "-W", "2", "-s", size, dst, timeout=20,
               check=False)


def converge(lab, ns: str, iface: str, want: int, timeout: float, kick=None, overhead: int = 60) -> float:
    """Wait until the peer's path MTU is `want` and the interface MTU is want - overhead; returns seconds taken."""
    t0 = time.monotonic()

    def ok():
        if kick is not None:
            kick()
        return path_mtu(lab, ns, iface)[0] == want and link_mtu(ns, iface) == want - overhead
    wait_for(ok, timeout, interval=0.3, what=f"path MTU {want} on {iface}")
    return time.monotonic() - t0


def assert_boundary(ns: str, dst: str, tunnel_mtu: int) -> None:
    """The largest inner ping with DF gets through; one byte more is refused with the tunnel's MTU."""
    fit = tunnel_mtu - 28
    res = None
    for _ in range(3):
        res = ping_df(ns, dst, fit)
        if res.returncode == 0:
            break
    assert res.returncode == 0, res.stdout + res.stderr
    res = ping_df(ns, dst, fit + 1, count=1)
    text = res.stdout + res.stderr
    assert res.returncode != 0, text
    assert re.search(rf"(message too long, mtu={tunnel_mtu}|Frag needed and DF set \(mtu = {tunnel_mtu}\))", text), text


def icmp_dropped(ns: str) -> int:
    text = run(ns, "nft", "list", "chain", "inet", "pmtu_bh", "output_icmp").stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", text))


def transfer_50mb(lab, server_ns: str, client_ns: str, server_ip: str) -> None:
    server, client = lab.transfer(server_ns, client_ns, server_ip, MB50, timeout=120)
    assert server["bytes"] == client["bytes"] == MB50
    assert server["sha256"] == client["sha256"]


def test_pmtu_icmp_1280_then_1400_then_1500(lab):
    """ICMP works: the boundary is exact at 1280 and 1400, 50 MB cross at 1280, and raising R's link to 1500
    grows both tunnels back within the re-probe interval."""
    t = ARB(lab, 1280)
    ia, ib = t.up_both()
    netlab.assert_ping(t.a, B_IN)
    # B's own link is 1280: known at once; A learns it from R's ICMP or from probes
    took = converge(lab, t.a, ia, 1280, 30, kick=lambda: ping_df(t.a, B_IN, 1300, count=1))
    converge(lab, t.b, ib, 1280, 30)
    assert_boundary(t.a, B_IN, 1220)
    assert_boundary(t.b, A_IN, 1220)
    transfer_50mb(lab, t.b, t.a, B_IN)
    t.set_link_mtu(1400)
    converge(lab, t.a, ia, 1400, INTERVAL + 20)
    converge(lab, t.b, ib, 1400, INTERVAL + 20)
    assert_boundary(t.a, B_IN, 1340)
    t.set_link_mtu(1500)
    t0 = time.monotonic()
    converge(lab, t.a, ia, 1500, INTERVAL + 20)
    converge(lab, t.b, ib, 1500, INTERVAL + 20)
    grow = time.monotonic() - t0
    assert_boundary(t.a, B_IN, 1440)
    show = lab.wgpy(t.a, "show", ia, check=True).stdout
    assert "path mtu: 1500" in show and "peer is wgpy" in show and "automatic" in show
    print(f"PMTU figures: first convergence {took:.1f}s, growth 1400->1500 seen after {grow:.1f}s")


def test_pmtu_black_hole(lab):
    """R drops all ICMP: wgpy-to-wgpy probes still find 1280 exactly within a bounded time, and 50 MB cross."""
    t = ARB(lab, 1280, black_hole=True)
    ia, ib = t.up_both()
    netlab.assert_ping(t.a, B_IN)
    took = converge(lab, t.a, ia, 1280, 40)
    assert path_mtu(lab, t.a, ia)[1] == "probe"
    assert icmp_dropped(t.r) > 0            # R did try to send ICMP
    assert_boundary(t.a, B_IN, 1220)
    transfer_50mb(lab, t.b, t.a, B_IN)
    # the path grows back: found again by probes within the interval
    t.set_link_mtu(1500)
    converge(lab, t.a, ia, 1500, INTERVAL + 20)
    print(f"PMTU figures: black hole converged in {took:.1f}s")


def test_pmtu_wgpy_and_wireguard_go_passive(lab):
    """A (wgpy) - R - B (wireguard-go, which answers no probes): A learns 1280 from R's ICMP alone and a 50 MB
    transfer from A to B completes."""
    t = ARB(lab, 1280)
    ia = t.wgpy(t.a, t.ka, PORT_A, A_IN, t.kb, f"{t.b_ep}:{PORT_B}", B_IN)
    lab.wireguard_go_up(t.b, netlab.unique_iface(), t.kb.private, PORT_B,
                        [PeerSpec(t.ka.public, (f"{A_IN}/32",), endpoint=f"{t.a_ep}:{PORT_A}")], f"{B_IN}/24",
                        mtu=1220)
    netlab.assert_ping(t.a, B_IN)
    converge(lab, t.a, ia, 1280, 30, kick=lambda: ping_df(t.a, B_IN, 1300, count=1))
    # learnt from ICMP: read the value and its source together (every MTUProbeInterval the estimate of a peer
    # that answers no probes goes back to the link MTU until ICMP lowers it again, so two reads may straddle that)
    wait_for(lambda: ping_df(t.a, B_IN, 1300, count=1) and path_mtu(lab, t.a, ia) == (1280, "icmp"), 15,
             interval=0.2, what="path MTU 1280 learnt from ICMP")
    assert "peer is wgpy" not in lab.wgpy(t.a, "show", ia, check=True).stdout
    transfer_50mb(lab, t.b, t.a, B_IN)
    assert_boundary(t.a, B_IN, 1220)


def test_pmtu_ipv6_underlay_black_hole(lab):
    """IPv6 underlay (overhead 80), R drops all ICMPv6: probes find 1280 (the IPv6 floor) and 1400 exactly."""
    t = ARB(lab, 1400, black_hole=True, v6=True)
    ia, ib = t.up_both()
    netlab.assert_ping(t.a, B_IN)
    converge(lab, t.a, ia, 1400, 40, overhead=80)
    assert path_mtu(lab, t.a, ia)[1] == "probe" and icmp_dropped(t.r) > 0
    assert_boundary(t.a, B_IN, 1320)
    t.set_link_mtu(1280)
    converge(lab, t.a, ia, 1280, INTERVAL + 30, overhead=80)
    assert_boundary(t.a, B_IN, 1200)


def test_pmtu_l2_tap_follows_the_path(lab):
    """Mode = tap without MTU: control frames work in L2, the TAP's MTU is path MTU - 60 - 14 - 4 (a VLAN tag)."""
    t = ARB(lab, 1280, black_hole=True, tap=True)
    ia, ib = t.up_both()
    netlab.assert_ping(t.a, B_IN)
    converge(lab, t.a, ia, 1280, 40, overhead=78)
    assert path_mtu(lab, t.a, ia)[1] == "probe"
    assert_boundary(t.a, B_IN, 1202)
    transfer_50mb(lab, t.b, t.a, B_IN)


def test_pmtu_black_hole_appears_during_transfer(lab):
    """The path shrinks to 1280 in the middle of a 50 MB transfer and R drops all ICMP: the next probe round
    finds it, wgpy's ICMP into the TUN shrinks the TCP segments, and the transfer completes intact."""
    t = ARB(lab, 1500, black_hole=True)
    ia, ib = t.up_both()
    netlab.assert_ping(t.a, B_IN)
    converge(lab, t.a, ia, 1500, 20)
    xfer = lab.start_transfer(t.b, t.a, B_IN, MB50, timeout=120, rate=8 * 1024 * 1024)
    time.sleep(1.5)
    t0 = time.monotonic()
    t.set_link_mtu(1280)
    converge(lab, t.a, ia, 1280, INTERVAL + 30)
    found = time.monotonic() - t0
    server, client = xfer.wait()
    assert server["bytes"] == client["bytes"] == MB50 and server["sha256"] == client["sha256"]
    assert icmp_dropped(t.r) > 0
    print(f"PMTU figures: black hole during a transfer found after {found:.1f}s; transfer {client['seconds']:.1f}s")


def test_pmtu_router_icmp_into_the_tun(lab):
    """With an IPv6 address on the tunnel its MTU stays at 1280 (Linux drops IPv6 below that) while the path
    carries 1220: wgpy answers larger packets into the TUN with ICMP "fragmentation needed" (mtu 1220), as a
    router would, and TCP adapts from it (50 MB intact)."""
    t = ARB(lab, 1280, black_hole=True, inner_v6=True)
    ia, ib = t.up_both()
    netlab.assert_ping(t.a, B_IN)
    wait_for(lambda: path_mtu(lab, t.a, ia)[0] == 1280, 40, interval=0.3, what="path MTU 1280")
    assert link_mtu(t.a, ia) == 1280
    res = ping_df(t.a, B_IN, 1193, count=1)
    assert re.search(r"From 10\.99\.0\.2 .*Frag needed and DF set \(mtu = 1220\)", res.stdout), res.stdout
    assert_boundary(t.a, B_IN, 1220)
    transfer_50mb(lab, t.b, t.a, B_IN)
    stats = lab.wgpy(t.a, "show", ia, "stats", check=True).stdout
    assert int(re.search(r"drop_too_big_icmp_sent\t(\d+)", stats).group(1)) >= 1, stats


@pytest.mark.parametrize("v6,black_hole", [(False, False), (False, True), (True, False)],
                         ids=["ipv4-icmp", "ipv4-black-hole", "ipv6-icmp"])
def test_pmtu_inner_ipv6_over_a_path_below_what_ipv6_can_be_told(lab, v6, black_hole):
    """A path of 1300 bytes, no attacker: the per-peer limit (1240 over IPv4, 1220 over IPv6) is below IPv6's
    minimum, which no ICMP can tell an IPv6 host, and the interface stays at 1280 (it has IPv6 addresses). Inner
    IPv6 packets above the limit go out whole with outer fragmentation allowed (as kernel WireGuard and
    wireguard-go send): a 1280-byte ping with DF crosses, and inner IPv6 TCP completes both ways (before: such
    packets were dropped, drop_too_big_dropped, and inner IPv6 TCP stalled). Over IPv6 the kernel fragments
    only to a path MTU it learnt from ICMPv6 (routers never fragment IPv6), so an IPv6 black hole of this size
    stays a limitation, as for kernel WireGuard and wireguard-go (docs/pmtu.md)."""
    t = ARB(lab, 1300, black_hole=black_hole, v6=v6, inner_v6=True)
    ia, ib = t.up_both()
    netlab.assert_ping(t.a, B_IN)
    for ns, iface in ((t.a, ia), (t.b, ib)):
        wait_for(lambda: path_mtu(lab, ns, iface)[0] == 1300, 40, interval=0.3, what=f"path MTU 1300 on {iface}",
                 ) if black_hole else converge(lab, ns, iface, 1300, 30, kick=lambda: ping_df(t.a, B_IN, 1300, 1),
                                                overhead=1300 - 1280)
        assert link_mtu(ns, iface) == 1280
    res = run(t.a, "ping", "-6", "-M", "do", "-c", 3, "-i", "0.2", "-W", "2", "-s", 1232, "fd99::2", timeout=20,
              check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    for server_ns, client_ns, server_ip in ((t.b, t.a, "fd99::2"), (t.a, t.b, "fd99::1")):
        server, client = lab.transfer(server_ns, client_ns, server_ip, 20 * 1024 * 1024, timeout=60)
        assert server["bytes"] == client["bytes"] == 20 * 1024 * 1024 and server["sha256"] == client["sha256"]
    for ns, iface in ((t.a, ia), (t.b, ib)):
        stats = lab.wgpy(ns, "show", iface, "stats", check=True).stdout
        assert int(re.search(r"drop_too_big_outer_fragmented\t(\d+)", stats).group(1)) > 0, stats
        assert "drop_too_big_dropped" not in stats, stats


def path_mtus(lab, ns: str, iface: str) -> dict[str, int]:
    """public key -> path MTU of every peer (`wgpy show IFACE path-mtu`)."""
    out = {}
    for line in lab.wgpy(ns, "show", iface, "path-mtu", check=True).stdout.splitlines():
        key, pm, _src = line.split("\t")
        out[key] = int(pm) if pm.isdigit() else 0
    return out


def test_pmtu_one_peer_on_a_bad_path_does_not_shrink_the_others(lab):
    """A server S with three peers on one switch; C's port carries only 576 bytes (frames above are dropped by the
    switch, no ICMP: S's probes find it). Before, the interface MTU was the minimum over the peers: S went to MTU
    576 and its TCP to A lost 59-72 %. Now the interface follows the upper median of the peers (1440): S->A
    packets stay full-size, while C keeps its own limit (516) and its traffic crosses."""
    from wgpy_testkit import hostile_lab as hl
    topo = hl.star(lab, 4)
    s_ns, a_ns, b_ns, c_ns = topo.ns
    run(c_ns, "ip", "link", "set", topo.veth[3], "mtu", 576)
    run(topo.switch, "ip", "link", "set", topo.peer_veth[3], "mtu", 576)
    keys = [gen_keypair() for _ in range(4)]
    inner = [f"10.99.0.{i + 1}" for i in range(4)]
    extra = [f"MTUProbeInterval = {INTERVAL}"]

    def up(i: int, peers) -> str:
        iface = netlab.unique_iface()
        text = render_config(keys[i].private, PORT_A + i, peers, addresses=[f"{inner[i]}/24"],
                             extra_interface_lines=extra)
        lab.wgpy_up(topo.ns[i], write_config(lab.tmp, iface, text))
        return iface

    i_s = up(0, [PeerSpec(keys[i].public, (f"{inner[i]}/32",)) for i in (1, 2, 3)])
    ifs = {i: up(i, [PeerSpec(keys[0].public, (f"{inner[0]}/32",), endpoint=f"{topo.ip[0]}:{PORT_A}")])
           for i in (1, 2)}
    for ns in (a_ns, b_ns):
        netlab.assert_ping(ns, inner[0])
    wait_for(lambda: [path_mtus(lab, s_ns, i_s).get(keys[i].public) for i in (1, 2)] == [1500, 1500], 30,
             interval=0.3, what="S probed A and B")
    assert link_mtu(s_ns, i_s) == 1440
    before = hl.iperf(lab, a_ns, s_ns, inner[1], 5)
    ifs[3] = up(3, [PeerSpec(keys[0].public, (f"{inner[0]}/32",), endpoint=f"{topo.ip[0]}:{PORT_A}")])
    netlab.assert_ping(c_ns, inner[0])
    wait_for(lambda: path_mtus(lab, s_ns, i_s).get(keys[3].public) == 576, 40, interval=0.3,
             what="S found C's 576-byte path")
    time.sleep(1)
    mtu_s = link_mtu(s_ns, i_s)
    after = hl.iperf(lab, a_ns, s_ns, inner[1], 5)
    hl.record("one_peer_on_a_bad_path", s_interface_mtu=mtu_s, s_to_a_mbit_before=round(before, 1),
              s_to_a_mbit_after=round(after, 1), ratio=round(after / before, 2))
    assert mtu_s == 1440, f"S's interface MTU went to {mtu_s} for one peer's path"
    assert_boundary(s_ns, inner[1], 1440)           # A still gets full-size packets from S
    # (the throughput is recorded, not asserted: on a shared 2-vCPU machine it varies by +-40 % run to run;
    # the old code's 576 cut it to 0.28-0.41 of the figure before)
    # C itself: its own limit, wgpy's ICMP into S's TUN, and TCP both ways intact
    assert link_mtu(c_ns, ifs[3]) == 576
    res = run(s_ns, "ping", "-4", "-M", "do", "-c", 1, "-W", "2", "-s", 1000, inner[3], timeout=20, check=False)
    assert "Frag needed and DF set (mtu = 516)" in res.stdout, res.stdout
    for server_ns, client_ns, ip in ((c_ns, s_ns, inner[3]), (s_ns, c_ns, inner[0])):
        server, client = lab.transfer(server_ns, client_ns, ip, 5 * 1024 * 1024, timeout=60)
        assert server["bytes"] == client["bytes"] == 5 * 1024 * 1024 and server["sha256"] == client["sha256"]
