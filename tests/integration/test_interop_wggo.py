"""wgpy <-> wireguard-go, each side initiating once, against both builds: Debian's (0.0.20220316, on PATH) and
upstream's newest release (0.0.20250522: UDP GSO/GRO and TUN offloads, what most userspace peers in the field
run; shipped read-only in ../shared/anchors, the tests of that kind skip with the reason where it is missing).

The responder is not told the initiator's endpoint, so only the initiator can start the handshake and the
responder must learn the endpoint from it.

The rekey test keeps traffic flowing past REKEY_AFTER_TIME (120 s) and checks the session rolls over without a
lost packet. Only the session's initiator rekeys on time, so with upstream wireguard-go initiating it takes the
real 130 s (its timers cannot be shortened); with wgpy initiating, wgpy's REKEY_AFTER_TIME is shortened for that
daemon alone (wgpy_testkit.shorttimers) and the peer's are the whitepaper's.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from wgpy_testkit.netlab import (WGGO_KIND, WGGO_UPSTREAM_KIND, WGPY_KIND, Proc, assert_ping, start_mesh,
                                 wait_for)
from wgpy_testkit.shorttimers import short_timers

pytestmark = pytest.mark.netns

NBYTES = 50 * 1000 * 1000
TRANSFER_TIMEOUT = float(os.environ.get("WGPY_IT_TRANSFER_TIMEOUT", "180"))

GO = [pytest.param(WGGO_KIND, id="debian"), pytest.param(WGGO_UPSTREAM_KIND, id="upstream")]
WHO = [pytest.param(True, id="wgpy-initiates"), pytest.param(False, id="wireguard-go-initiates")]


@pytest.mark.parametrize("go", GO)
@pytest.mark.parametrize("wgpy_initiates", WHO)
def test_interop(lab, two_ns, transfer, go, wgpy_initiates):
    initiator, responder = (WGPY_KIND, go) if wgpy_initiates else (go, WGPY_KIND)
    # node 0 = initiator (knows node 1's endpoint), node 1 = responder (knows no endpoint)
    init, resp = start_mesh(lab, two_ns, [initiator, responder], knows_endpoint=lambda i, j: i == 0)
    assert init.handshake_with(resp) == 0 and resp.handshake_with(init) == 0
    assert resp.peer(init)["endpoint"] is None

    assert_ping(init.ns, resp.ip4)  # the initiator speaks first
    assert init.handshake_with(resp) > 0
    wait_for(lambda: resp.handshake_with(init) > 0, 5, what="handshake on the responder")
    assert resp.peer(init)["endpoint"] == two_ns.endpoint(0, init.listen_port)
    assert_ping(resp.ns, init.ip4)

    # bulk data both ways: the initiator to the responder, then back
    for server_node, client_node in ((resp, init), (init, resp)):
        server, client = transfer(server_node.ns, client_node.ns, server_node.ip4, NBYTES,
                                  timeout=TRANSFER_TIMEOUT)
        assert client["bytes"] == server["bytes"] == NBYTES
        assert client["sha256"] == server["sha256"]
        assert server["peer"] == client_node.ip4

    assert init.peer(resp)["tx"] > NBYTES and init.peer(resp)["rx"] > NBYTES
    assert resp.peer(init)["rx"] > NBYTES and resp.peer(init)["tx"] > NBYTES


PING_INTERVAL = 0.1
WGPY_REKEY = 20.0        # wgpy's shortened REKEY_AFTER_TIME when it initiates
REKEY_AFTER_TIME = 120.0


def _ping_train(lab, ns: str, addr: str, seconds: float) -> Proc:
    count = int(seconds / PING_INTERVAL)
    return lab.popen(ns, "ping", "-n", "-i", str(PING_INTERVAL), "-c", str(count), "-W", "2", addr, name="ping")


def _ping_losses(proc: Proc, timeout: float) -> tuple[int, int, list[int]]:
    """(sent, received, missing sequence numbers) of a finished ping."""
    proc.wait(timeout)
    out = proc.stdout()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out[-2000:]
    sent, received = int(m.group(1)), int(m.group(2))
    seen = {int(s) for s in re.findall(r"icmp_seq=(\d+)", out)}
    return sent, received, [s for s in range(1, sent + 1) if s not in seen]


@pytest.mark.parametrize("wgpy_initiates", WHO)
def test_rekey_under_traffic(lab, two_ns, wgpy_initiates):
    """Pings every 0.1 s from the initiator across the first rekey: a new handshake, both sides on the new
    session, and not one echo lost."""
    if wgpy_initiates:
        lab.wgpy_env.update(short_timers(lab.tmp, rekey_after_time=WGPY_REKEY))
        rekey_after = WGPY_REKEY
    else:
        rekey_after = REKEY_AFTER_TIME
    kinds = [WGPY_KIND, WGGO_UPSTREAM_KIND] if wgpy_initiates else [WGGO_UPSTREAM_KIND, WGPY_KIND]
    init, resp = start_mesh(lab, two_ns, kinds, knows_endpoint=lambda i, j: i == 0)
    assert_ping(init.ns, resp.ip4)
    first = init.handshake_with(resp)
    wait_for(lambda: resp.handshake_with(init) > 0, 5, what="handshake on the responder")
    started = time.monotonic()

    seconds = rekey_after + 12          # past the rekey, and a few seconds on the new session
    train = _ping_train(lab, init.ns, resp.ip4, seconds)
    sent, received, missing = _ping_losses(train, seconds + 30)
    assert time.monotonic() - started > rekey_after
    rekeyed_init, rekeyed_resp = init.handshake_with(resp), resp.handshake_with(init)
    assert rekeyed_init > first and rekeyed_resp > first, (first, rekeyed_init, rekeyed_resp)
    assert rekeyed_init - first >= rekey_after - 3, "the new handshake was not the time-based rekey"
    assert sent >= int(seconds / PING_INTERVAL) - 1
    assert not missing and received == sent, f"{sent - received} of {sent} lost, icmp_seq {missing[:20]}"
