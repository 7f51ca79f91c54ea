"""IPv6 underlay (veth with fd00::/64, `nodad`) carrying both IPv4 and IPv6 inside the tunnel."""

from __future__ import annotations

import pytest

from wgpy_testkit.netlab import WGGO_KIND, WGGO_UPSTREAM_KIND, WGPY_KIND, assert_ping, start_mesh, wait_for

pytestmark = pytest.mark.netns

NBYTES = 5 * 1000 * 1000


@pytest.mark.parametrize("kinds", [(WGPY_KIND, WGPY_KIND), (WGPY_KIND, WGGO_KIND), (WGPY_KIND, WGGO_UPSTREAM_KIND),
                                   (WGGO_UPSTREAM_KIND, WGPY_KIND)],
                         ids=["wgpy-wgpy", "wgpy-wireguard-go", "wgpy-upstream", "upstream-wgpy"])
def test_ipv6_underlay_dual_stack_inner(lab, two_ns_v6, transfer, kinds):
    a, b = start_mesh(lab, two_ns_v6, list(kinds), inner_v6=True)
    assert a.dump()["peers"][b.keys.public]["endpoint"] == f"[fd00::2]:{b.listen_port}"

    assert_ping(a.ns, b.ip4)
    assert_ping(a.ns, b.ip6)
    assert_ping(b.ns, a.ip4)
    assert_ping(b.ns, a.ip6)
    wait_for(lambda: b.handshake_with(a) > 0, 5, what="handshake on b")
    assert b.peer(a)["endpoint"] == f"[fd00::1]:{a.listen_port}"
    assert sorted(a.peer(b)["allowed_ips"]) == ["10.99.0.2/32", "fd99::2/128"]

    # TCP over IPv6 inside the tunnel over IPv6 outside
    server, client = transfer(b.ns, a.ns, b.ip6, NBYTES, timeout=60)
    assert client["bytes"] == server["bytes"] == NBYTES
    assert client["sha256"] == server["sha256"]
    assert server["peer"] == a.ip6
