"""TUN offloads in real namespaces: TSO super-packets read from the TUN, coalesced super-packets written to it,
the fallback without offloads, TCP over IPv6 inside the tunnel, and a TUN moved to another namespace than the
daemon's UDP socket.

tcpdump on a TUN device sees packets as the stack hands them over: with offloads on, the sender's TUN shows TCP
packets far larger than the tunnel MTU (TSO) and so does the receiver's (our coalesced GSO writes); with
WGPY_TUN_OFFLOAD=0 nothing exceeds the MTU.  Every transfer is checked byte for byte (SHA-256).
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (UAPI_DIR, WGPY_KIND, assert_ping, gen_keypair, run, start_mesh, wait_for)

pytestmark = pytest.mark.netns

NBYTES = 20 * 1000 * 1000
MTU = 1420
WGPYD = Path(sys.executable).parent / "wgpyd"


def frame_lengths(path: Path) -> list[int]:
    """Original lengths of every record of a classic pcap file."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16 + incl
        if off > len(data):
            break
        out.append(orig)
    return out


def transfer_with_captures(lab, a, b, server_ip: str, transfer) -> tuple[list[int], list[int]]:
    cap_a = lab.capture(a.ns, a.iface, "tcp", name="tx-tun")
    cap_b = lab.capture(b.ns, b.iface, "tcp", name="rx-tun")
    server, client = transfer(b.ns, a.ns, server_ip, NBYTES, timeout=120)
    assert client["bytes"] == server["bytes"] == NBYTES
    assert client["sha256"] == server["sha256"]
    time.sleep(0.3)
    cap_a.stop()
    cap_b.stop()
    return frame_lengths(cap_a.path), frame_lengths(cap_b.path)


def test_tso_reads_and_coalesced_writes(lab, two_ns, transfer):
    lab.require_real_wgpy("TUN offloads")
    a, b = start_mesh(lab, two_ns, [WGPY_KIND, WGPY_KIND])
    assert_ping(a.ns, b.ip4)
    sent, received = transfer_with_captures(lab, a, b, b.ip4, transfer)
    assert sent and received
    assert max(sent) > 2 * MTU, f"the sender's TUN never carried a TSO super-packet (max {max(sent)} B)"
    assert max(received) > 2 * MTU, f"no coalesced super-packet was written to the receiver's TUN " \
                                    f"(max {max(received)} B)"


def test_without_offloads_every_packet_fits_the_mtu(lab, two_ns, transfer, monkeypatch):
    lab.require_real_wgpy("TUN offloads")
    monkeypatch.setenv("WGPY_TUN_OFFLOAD", "0")
    a, b = start_mesh(lab, two_ns, [WGPY_KIND, WGPY_KIND])
    assert_ping(a.ns, b.ip4)
    sent, received = transfer_with_captures(lab, a, b, b.ip4, transfer)
    assert sent and received
    assert max(sent) <= MTU and max(received) <= MTU


def test_tcp_over_ipv6_inside_the_tunnel(lab, two_ns, transfer):
    lab.require_real_wgpy("TUN offloads")
    a, b = start_mesh(lab, two_ns, [WGPY_KIND, WGPY_KIND], inner_v6=True)
    wait_for(lambda: run(a.ns, "ping", "-6", "-c", "1", "-W", "1", b.ip6, timeout=5, check=False).returncode == 0,
             15, what="ping over IPv6 inside the tunnel")
    sent, received = transfer_with_captures(lab, a, b, b.ip6, transfer)
    assert max(sent) > 2 * MTU and max(received) > 2 * MTU


def test_interop_with_wireguard_go_both_directions(lab, two_ns, transfer):
    """wireguard-go (no offloads) must get normal, correctly checksummed packets from wgpy's splitting."""
    lab.require_real_wgpy("TUN offloads")
    a, g = start_mesh(lab, two_ns, [WGPY_KIND, netlab.WGGO_KIND])
    assert_ping(a.ns, g.ip4)
    for server, client, ip in ((g, a, g.ip4), (a, g, a.ip4)):
        s, c = transfer(server.ns, client.ns, ip, NBYTES, timeout=120)
        assert s["bytes"] == c["bytes"] == NBYTES and s["sha256"] == c["sha256"]


def test_tun_moved_to_another_namespace(lab, two_ns, netns, transfer):
    """wgpyd keeps its UDP socket where it started; its interface is moved into a third namespace (the
    'container' pattern).  The daemon must keep running and carry traffic for that namespace."""
    lab.require_real_wgpy("wgpyd")
    ns_sock, ns_peer = two_ns.ns
    ns_inner = netns()
    iface = netlab.unique_iface()
    lab.ifaces[iface] = ns_inner
    ka, kb = gen_keypair(), gen_keypair()
    proc = lab.popen(ns_sock, WGPYD, "-f", iface, name="wgpyd")
    sock = UAPI_DIR / f"{iface}.sock"
    wait_for(lambda: sock.exists() or not proc.alive(), 10, what="wgpyd socket")
    assert proc.alive(), proc.describe()
    run(ns_sock, "ip", "link", "set", iface, "netns", ns_inner)
    conf = lab.tmp / f"{iface}-set.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {ka.private}\nListenPort = 51820\n\n"
                    f"[Peer]\nPublicKey = {kb.public}\nAllowedIPs = 10.98.0.2/32\n"
                    f"Endpoint = {two_ns.endpoint(1, 51821)}\n")
    conf.chmod(0o600)
    run(ns_inner, "wg", "setconf", iface, conf)
    run(ns_inner, "ip", "addr", "add", "10.98.0.1/24", "dev", iface)
    run(ns_inner, "ip", "link", "set", iface, "mtu", MTU, "up")
    peer_iface = netlab.unique_iface()
    lab.wireguard_go_up(ns_peer, peer_iface, kb.private, 51821,
                        [netlab.PeerSpec(ka.public, ("10.98.0.1/32",), endpoint=two_ns.endpoint(0, 51820))],
                        "10.98.0.2/24")
    time.sleep(2.5)                      # past the daemon's once-a-second check that its interface exists
    assert proc.alive(), f"wgpyd stopped after its interface moved:\n{proc.describe()}"
    assert_ping(ns_inner, "10.98.0.2")
    s, c = transfer(ns_peer, ns_inner, "10.98.0.2", NBYTES, timeout=120)
    assert s["bytes"] == c["bytes"] == NBYTES and s["sha256"] == c["sha256"]
    # deleting the interface (in its new namespace) still stops the daemon
    run(ns_inner, "ip", "link", "del", iface)
    wait_for(lambda: not proc.alive(), 10, what="wgpyd to exit after its interface was deleted")
