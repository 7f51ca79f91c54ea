"""wgpy <-> wireguard-go (the reference implementation), each side initiating once.

The responder is not told the initiator's endpoint, so only the initiator can start the handshake and the
responder must learn the endpoint from it.
"""

from __future__ import annotations

import os

import pytest

from wgpy_testkit.netlab import WGGO_KIND, WGPY_KIND, assert_ping, start_mesh, wait_for

pytestmark = pytest.mark.netns

NBYTES = 50 * 1000 * 1000
TRANSFER_TIMEOUT = float(os.environ.get("WGPY_IT_TRANSFER_TIMEOUT", "180"))


@pytest.mark.parametrize("initiator, responder", [(WGPY_KIND, WGGO_KIND), (WGGO_KIND, WGPY_KIND)],
                         ids=["wgpy-initiates", "wireguard-go-initiates"])
def test_interop(lab, two_ns, transfer, initiator, responder):
    # node 0 = initiator (knows node 1's endpoint), node 1 = responder (knows no endpoint)
    init, resp = start_mesh(lab, two_ns, [initiator, responder], knows_endpoint=lambda i, j: i == 0)
    assert init.handshake_with(resp) == 0 and resp.handshake_with(init) == 0
    assert resp.peer(init)["endpoint"] is None

    assert_ping(init.ns, resp.ip4)  # the initiator speaks first
    assert init.handshake_with(resp) > 0
    wait_for(lambda: resp.handshake_with(init) > 0, 5, what="handshake on the responder")
    assert resp.peer(init)["endpoint"] == two_ns.endpoint(0, init.listen_port)
    assert_ping(resp.ns, init.ip4)

    # bulk data from the initiator to the responder
    server, client = transfer(resp.ns, init.ns, resp.ip4, NBYTES, timeout=TRANSFER_TIMEOUT)
    assert client["bytes"] == server["bytes"] == NBYTES
    assert client["sha256"] == server["sha256"]
    assert server["peer"] == init.ip4

    assert init.peer(resp)["tx"] > NBYTES
    assert resp.peer(init)["rx"] > NBYTES
