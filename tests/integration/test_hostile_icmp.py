"""Spoofed ICMP "too big" against a running wgpy (issue 21 item 1), in namespaces:

    A 10.201.0.1 / fd20::1 ──┐
    S 10.201.0.2 / fd20::2 ──┼── br0 (switch namespace)
    X 10.201.0.3 / fd20::3 ──┘  the attacker: raw socket, forged source 10.201.0.254 / fd20::fe ("a router")

A and S are wgpy with the automatic MTU (no MTU in the config) and a tunnel carrying IPv4 and IPv6
(10.99.0.1/24, fd99::1/64 <-> 10.99.0.2/24, fd99::2/64). While S sends inner TCP to A (iperf3, 9 s, inner IPv4
and inner IPv6 at once), X sends S three forged ICMP "fragmentation needed" (IPv4 underlay) or "packet too big" (IPv6
underlay), each quoting a datagram from S's listen port to A's address: at 3 s with destination port 0 (old wgpy:
"every peer at that address"), at 4 s with A's real port and only the UDP header quoted (RFC 792's minimum: no
WireGuard header to check), at 5 s with A's real port and a forged WireGuard header (random receiver index).

Before the fix the first one alone set S's path MTU for A to the floor (576 / 1280) for the 300 s re-probe interval:
the interface dropped to 1280, inner IPv6 above the per-peer limit was dropped (0 Mbit/s) and inner IPv4 TCP fell
to the MSS of a 516-byte tunnel (-88 %). Now: port 0 matches nothing, the forged header matches no session, the
bare one starts a probe round that finds the old size at once; the throughput after the ICMP stays within noise of
the throughput before it and the path MTU stays 1500.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from wgpy_testkit import hostile_lab as hl
from wgpy_testkit import netlab
from wgpy_testkit.netlab import PeerSpec, gen_keypair, render_config, run, wait_for, write_config

pytestmark = pytest.mark.netns

SPOOF = hl.TOOLS / "icmp_spoof.py"
PORT_A, PORT_S = 51820, 51821
A_IN, S_IN = ("10.99.0.1", "fd99::1"), ("10.99.0.2", "fd99::2")
SECONDS = 9
ATTACKS = ((3.0, "port0"), (4.0, "bare"), (5.0, "forged-wg"))
# after / before: the old code gave 0 (inner IPv6) and 0.13-0.32 (inner IPv4); without any attack the ratio
# of two windows of one run varies from about 0.55 to 1.5 on this shared 2-vCPU machine
KEEP = 0.35


def wgpy_up(lab, ns: str, keys, port: int, me: tuple[str, str], peer_keys, peer: tuple[str, str],
            endpoint: str | None) -> str:
    """A wgpy interface with the automatic MTU, one peer, both inner families."""
    iface = netlab.unique_iface()
    text = render_config(keys.private, port,
                         [PeerSpec(peer_keys.public, (f"{peer[0]}/32", f"{peer[1]}/128"), endpoint=endpoint)],
                         addresses=[f"{me[0]}/24", f"{me[1]}/64"])
    lab.wgpy_up(ns, write_config(lab.tmp, iface, text))
    return iface


def path_mtu(lab, ns: str, iface: str) -> tuple[int, str]:
    key, pm, src = lab.wgpy(ns, "show", iface, "path-mtu", check=True).stdout.strip().split("\t")
    return (int(pm) if pm.isdigit() else 0), src


def link_mtu(ns: str, iface: str) -> int:
    return json.loads(run(ns, "ip", "-j", "link", "show", "dev", iface).stdout)[0]["mtu"]


_INTERVAL = re.compile(r"\]\s+([\d.]+)-([\d.]+)\s+sec\s+\S+\s+\S+\s+([\d.]+)\s+([KMG]?)bits/sec")


def iperf_with_attacks(lab, server_ns: str, client_ns: str, server_ips: list[str], attacks) -> list[list[float]]:
    """One iperf3 per address of `server_ips`, all at once, from client_ns for SECONDS, calling each (time, fn)
    of `attacks` on time; returns per address the per-second sender throughput in Mbit/s (parsed as it is
    printed, so a stalled run still says what it did)."""
    runs = []
    for i, ip in enumerate(server_ips):
        port = 5301 + i
        server = lab.popen(server_ns, "iperf3", "-s", "-1", "-p", port, name="iperf3-s")
        wait_for(lambda: run(server_ns, "ss", "-ltn", timeout=5).stdout.count(f":{port} ") > 0, 10,
                 what="iperf3 server")
        runs.append((server, ip, port))
    clients = [lab.popen(client_ns, "iperf3", "-c", ip, "-p", port, "-t", SECONDS, "-i", 1, "-f", "m",
                         "--forceflush", "--connect-timeout", 5000, name="iperf3-c") for _, ip, port in runs]
    t0 = time.monotonic()
    for at, fn in attacks:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        fn()
    result = []
    for client, (server, _, _) in zip(clients, runs):
        try:
            client.wait(max(1.0, t0 + SECONDS + 20 - time.monotonic()))
        except Exception:               # a stalled tunnel: keep what was printed
            client.stop()
        server.stop()
        per_second = [0.0] * SECONDS
        for m in _INTERVAL.finditer(client.stdout()):
            start, end = float(m.group(1)), float(m.group(2))
            if end - start > 1.5:
                continue                # the summary lines
            scale = {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}[m.group(4)]
            i = int(start + 0.5)
            if i < SECONDS:
                per_second[i] = float(m.group(3)) * scale
        result.append(per_second)
    return result


@pytest.mark.parametrize("underlay", ["ipv4", "ipv6"])
def test_spoofed_icmp_too_big_does_not_shrink_the_tunnel(lab, underlay):
    lab.require_real_wgpy("wgpy's path MTU")
    topo = hl.star(lab, 3)
    v6 = underlay == "ipv6"
    if v6:
        for i, (ns, dev) in enumerate(zip(topo.ns, topo.veth)):
            lab.add_address(ns, dev, f"fd20::{i + 1}/64")
        ul = ["fd20::1", "fd20::2", "fd20::3"]
        forged, mtu, ep = "fd20::fe", 1280, "[fd20::2]"
    else:
        ul = topo.ip
        forged, mtu, ep = "10.201.0.254", 576, topo.ip[1]
    a_ns, s_ns, x_ns = topo.ns
    ka, ks = gen_keypair(), gen_keypair()
    ia = wgpy_up(lab, a_ns, ka, PORT_A, A_IN, ks, S_IN, f"{ep}:{PORT_S}")
    is_ = wgpy_up(lab, s_ns, ks, PORT_S, S_IN, ka, A_IN, None)
    netlab.assert_ping(a_ns, S_IN[0])
    netlab.assert_ping(a_ns, S_IN[1])
    wait_for(lambda: path_mtu(lab, s_ns, is_) == (1500, "probe"), 20, interval=0.3, what="S probed A's path")
    mtu_before = link_mtu(s_ns, is_)

    def spoof(dport: int, payload: str) -> None:
        res = run(x_ns, sys.executable, SPOOF, "--src", forged, "--dst", ul[1], "--quote-src", ul[1],
                  "--quote-dst", ul[0], "--sport", PORT_S, "--dport", dport, "--mtu", mtu, "--payload", payload,
                  timeout=20)
        assert json.loads(res.stdout)["sent"] == 1

    kinds = {"port0": (0, "none"), "bare": (PORT_A, "none"), "forged-wg": (PORT_A, "random-wg")}
    attacks = [(at, (lambda k=kind: spoof(*kinds[k]))) for at, kind in ATTACKS]
    figures = {}
    both = iperf_with_attacks(lab, a_ns, s_ns, list(A_IN), attacks)     # inner IPv4 and IPv6 at once
    for fam, rates in zip(("inner_ipv4", "inner_ipv6"), both):
        before = sum(rates[1:3]) / 2
        after = sum(rates[6:9]) / 3
        figures[fam] = {"before_mbit": round(before, 1), "after_mbit": round(after, 1), "per_second": rates}
    for fam, rates in zip(("inner_ipv4", "inner_ipv6"), both):
        before, after = figures[fam]["before_mbit"], figures[fam]["after_mbit"]
        assert before > 0, (fam, figures)
        assert after >= KEEP * before, f"{fam}: {before:.0f} -> {after:.0f} Mbit/s after spoofed ICMP {figures}"
    st = hl.stats(s_ns, is_)
    pm = path_mtu(lab, s_ns, is_)
    figures.update(path_mtu_after=pm, interface_mtu=(mtu_before, link_mtu(s_ns, is_)),
                   icmp={k: st.get(f"drop_icmp_{k}", 0) for k in ("unmatched", "probed", "refuted", "confirmed")})
    hl.record(f"spoofed_icmp_{underlay}", **figures)
    assert pm[0] == 1500 and link_mtu(s_ns, is_) == mtu_before
    assert st.get("drop_too_big_dropped", 0) == 0 and st.get("drop_too_big_icmp_sent", 0) == 0   # none to the TUN
    # the port-0 and the forged-header ICMP matched nothing; the bare one was checked by probes and refuted
    assert st.get("drop_icmp_unmatched", 0) >= 2
    assert st.get("drop_icmp_probed", 0) >= 1 and st.get("drop_icmp_refuted", 0) == st.get("drop_icmp_probed", 0)
    assert not st.get("drop_icmp_confirmed")
