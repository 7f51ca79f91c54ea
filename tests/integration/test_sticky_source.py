"""Source address stickiness (issue 16): wgpy answers a peer from the local address the peer wrote to.

Node 0, wgpy, has two IPv4 and two IPv6 addresses on its underlay veth; node 1, the peer (wgpy, Debian's
wireguard-go or upstream's), knows node 0's endpoint, node 0 knows none and learns it. The peer sets its endpoint
to each of node 0's addresses in turn and pings both ways: its `wg show IFACE endpoints` must still show the address
it set (an answer from another address would make it roam there), and node 0's must show the peer's address, not
the local one. Then the address in use is removed from node 0: the next ping from node 0 must get through (sent from
another address, the kernel's choice, which the peer roams to), one ping with a bounded wait.

Before wgpy kept the source, the answers to 10.201.0.11 left from 10.201.0.1 (the kernel's choice for the route)
and the peer roamed there, so the first check fails on that code.
"""

from __future__ import annotations

import pytest

from wgpy_testkit.netlab import (WGGO_KIND, WGPY_KIND, add_address, assert_ping, run,
                                 start_mesh, wait_for)

pytestmark = pytest.mark.netns

V4 = ["10.201.0.1", "10.201.0.11"]
V6 = ["fd00::1", "fd00::11"]
PEER_V6 = "fd00::2"


def _ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _endpoints(ns: str, iface: str) -> dict[str, str]:
    out = run(ns, "wg", "show", iface, "endpoints", timeout=10).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def _ping_once(ns: str, addr: str) -> None:
    res = run(ns, "ping", "-n", "-c", "1", "-W", "3", addr, timeout=10, check=False)
    assert res.returncode == 0, f"ping {addr} from {ns} failed:\n{res.stdout}\n{res.stderr}"


# Upstream's wireguard-go 0.0.20250522 is left out as the peer: after `wg set ... endpoint [fd00::11]:P` it kept
# sending to [fd00::1]:P, the IPv6 endpoint it had used before the last IPv4 one (seen in a capture on its veth,
# before wgpy had sent anything from fd00::1), which tests wireguard-go's endpoint handling, not wgpy's.
@pytest.mark.parametrize("kind", [pytest.param(WGPY_KIND, id="wgpy"), pytest.param(WGGO_KIND, id="debian")])
def test_answers_leave_from_the_address_the_peer_wrote_to(lab, two_ns, kind):
    host_ns, peer_ns = two_ns.ns
    host_veth, peer_veth = two_ns.veth
    add_address(host_ns, host_veth, f"{V4[1]}/24")
    for a in V6:
        add_address(host_ns, host_veth, f"{a}/64")
    add_address(peer_ns, peer_veth, f"{PEER_V6}/64")
    host, peer = start_mesh(lab, two_ns, [WGPY_KIND, kind], knows_endpoint=lambda i, j: i == 1)
    key = host.keys.public
    port = host.listen_port

    def use(addr: str) -> None:
        want = _ep(addr, port)
        run(peer_ns, "wg", "set", peer.iface, "peer", key, "endpoint", want, timeout=10)
        assert_ping(peer_ns, host.ip4)                  # peer -> host: the host answers
        assert_ping(host_ns, peer.ip4)                  # host -> peer: sent from the remembered address
        got = _endpoints(peer_ns, peer.iface)[key]
        assert got == want, f"the peer wrote to {want} but roamed to {got}: the answers left from another address"
        mine = _endpoints(host_ns, host.iface)[peer.keys.public]
        peer_addr = PEER_V6 if ":" in addr else two_ns.ip[1]
        assert mine == _ep(peer_addr, peer.listen_port), mine

    for addr in V4 + V6 + V4[::-1] + V6[::-1]:
        use(addr)

    # the address in use leaves the host: the next ping from the host still gets through, from another address
    for family, (keep, gone) in (("-4", V4), ("-6", V6)):
        use(gone)
        run(host_ns, "ip", family, "address", "del", f"{gone}/{24 if family == '-4' else 64}", "dev", host_veth,
            timeout=10)
        _ping_once(host_ns, peer.ip4)
        wait_for(lambda: _endpoints(peer_ns, peer.iface)[key] == _ep(keep, port), 5,
                 what=f"the peer follows to {keep}")
        assert_ping(peer_ns, host.ip4)
