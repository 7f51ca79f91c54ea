"""Three peers on one switch: full mesh of tunnels, and traffic to an address no peer allows is dropped."""

from __future__ import annotations

import itertools

import pytest

from wgpy_testkit.netlab import WGGO_KIND, WGPY_KIND, assert_ping, link_stats, ping, start_mesh

pytestmark = pytest.mark.netns

UNALLOWED = "10.99.0.77"  # inside the interfaces' 10.99.0.0/24, but in nobody's AllowedIPs
# one encrypted echo request is at least 84 (ICMP+IP) + 32 (WireGuard header and tag) bytes; keepalives are 32
ONE_LEAKED_PACKET = 116


@pytest.mark.parametrize("kinds", [(WGPY_KIND, WGPY_KIND, WGPY_KIND), (WGPY_KIND, WGGO_KIND, WGPY_KIND)],
                         ids=["all-wgpy", "wgpy-wireguard-go-wgpy"])
def test_three_peers(lab, three_ns_switch, kinds):
    nodes = start_mesh(lab, three_ns_switch, list(kinds))

    for src, dst in itertools.permutations(nodes, 2):
        assert_ping(src.ns, dst.ip4)
    for node in nodes:
        peers = node.dump()["peers"]
        assert len(peers) == 2
        assert all(p["latest_handshake"] > 0 for p in peers.values()), (node.kind, peers)

    sender, others = nodes[0], nodes[1:]
    before_tx = {o.keys.public: sender.peer(o)["tx"] for o in others}
    before_rx = {o.keys.public: o.peer(sender)["rx"] for o in others}
    tun_tx_before = link_stats(sender.ns, sender.iface)["tx"]["packets"]

    res = ping(sender.ns, UNALLOWED)
    assert res.returncode != 0, f"ping to {UNALLOWED} must fail:\n{res.stdout}"
    assert " 0 received" in res.stdout, res.stdout
    # the echo requests did enter the tunnel interface (and were dropped by the daemon behind it)
    assert link_stats(sender.ns, sender.iface)["tx"]["packets"] - tun_tx_before >= 3

    for o in others:
        sent = sender.peer(o)["tx"] - before_tx[o.keys.public]
        received = o.peer(sender)["rx"] - before_rx[o.keys.public]
        assert sent < ONE_LEAKED_PACKET, f"{sender.kind} sent {sent} bytes to {o.kind} for {UNALLOWED}"
        assert received < ONE_LEAKED_PACKET, f"{o.kind} received {received} bytes from {sender.kind}"

    # the mesh still works afterwards
    assert_ping(others[0].ns, others[1].ip4)
