"""Peers that must not get a session: wrong public keys and mismatched preshared keys.

Node 0 is the initiator (it knows node 1's endpoint and keeps retrying because pings are queued), node 1 is the
responder (it knows no endpoint, so it never initiates by itself).  tcpdump on the responder's veth records every
UDP packet in both directions while the initiator retries.

Wrong public key (either side): the responder cannot authenticate the initiation (mac1 does not match its key, or
the initiator's static key is not one of its peers) and must stay completely silent.

Mismatched preshared key: the PSK is only mixed in when the responder *builds its response*, so the responder
cannot detect the mismatch and does answer each initiation with a handshake response (WireGuard protocol,
whitepaper 5.4.3); it is the initiator that rejects the response.  What must never happen is a session: no
latest-handshake on either side, nothing but handshake responses (type 2) from the responder, no transport data.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from wgpy_testkit.netlab import (WGGO_KIND, WGPY_KIND, gen_keypair, gen_psk, ping, random_public_key, start_mesh,
                                 wait_for)

pytestmark = pytest.mark.netns

INITIATIONS = 2  # wait for this many handshake initiations (retry interval is REKEY_TIMEOUT = 5 s + jitter)


def _observe(lab, topo, init, resp):
    """Trigger handshakes from `init` and capture the responder's veth until the initiator has retried."""
    cap = lab.capture(resp.ns, topo.veth[1], "udp", name="resp-veth")
    assert ping(init.ns, resp.ip4).returncode != 0, "ping must fail without a session"
    # the queued pings keep the initiator retrying; wait (bounded) for the retries to show up on the wire
    wait_for(lambda: sum(1 for p in cap.packets() if p.sport == init.listen_port and p.wg_type == 1)
             >= INITIATIONS, 20, interval=0.25, what=f"{INITIATIONS} handshake initiations")
    time.sleep(1.0)  # give the responder time to (wrongly) answer the last initiation
    packets = cap.stop()
    from_init = [p for p in packets if p.sport == init.listen_port and p.src == topo.ip[0]]
    from_resp = [p for p in packets if p.sport == resp.listen_port]
    return from_init, from_resp


def _assert_no_session(init, resp):
    for node in (init, resp):
        peers = node.dump()["peers"]
        assert len(peers) == 1
        for key, peer in peers.items():
            assert peer["latest_handshake"] == 0, f"{node.kind} in {node.ns} has a handshake with {key}"


@pytest.mark.parametrize("who_is_wrong", ["initiator-has-wrong-responder-key", "responder-has-wrong-initiator-key"])
@pytest.mark.parametrize("initiator", [WGGO_KIND, WGPY_KIND], ids=["from-wireguard-go", "from-wgpy"])
def test_wrong_public_key_gets_no_reply(lab, two_ns, initiator, who_is_wrong):
    wrong = random_public_key()
    victim = 0 if who_is_wrong.startswith("initiator") else 1

    def tweak(i, j, spec):
        return dataclasses.replace(spec, public_key=wrong) if i == victim else spec

    init, resp = start_mesh(lab, two_ns, [initiator, WGPY_KIND], knows_endpoint=lambda i, j: i == 0,
                            peer_tweak=tweak)
    from_init, from_resp = _observe(lab, two_ns, init, resp)

    assert len([p for p in from_init if p.wg_type == 1]) >= INITIATIONS
    assert all(len(p.payload) == 148 for p in from_init if p.wg_type == 1)
    assert from_resp == [], f"responder must stay silent, but sent {len(from_resp)} packet(s): {from_resp[:3]}"
    _assert_no_session(init, resp)


@pytest.mark.parametrize("initiator, responder", [(WGGO_KIND, WGPY_KIND), (WGPY_KIND, WGGO_KIND),
                                                  (WGPY_KIND, WGPY_KIND)],
                         ids=["wireguard-go-to-wgpy", "wgpy-to-wireguard-go", "wgpy-to-wgpy"])
def test_mismatched_preshared_key_gets_no_session(lab, two_ns, initiator, responder):
    psks = [gen_psk(), gen_psk()]

    def tweak(i, j, spec):
        return dataclasses.replace(spec, preshared_key=psks[i])

    keys = [gen_keypair(), gen_keypair()]
    init, resp = start_mesh(lab, two_ns, [initiator, responder], knows_endpoint=lambda i, j: i == 0,
                            peer_tweak=tweak, keys=keys)
    from_init, from_resp = _observe(lab, two_ns, init, resp)

    initiations = [p for p in from_init if p.wg_type == 1]
    assert len(initiations) >= INITIATIONS
    # the initiator never accepted a response, so it never sent transport data or a keepalive
    assert [p for p in from_init if p.wg_type != 1] == []
    # the responder may only ever answer with handshake responses (92 bytes), at most one per initiation
    assert all(p.wg_type == 2 and len(p.payload) == 92 for p in from_resp), \
        [(p.wg_type, len(p.payload)) for p in from_resp]
    assert len(from_resp) <= len(initiations)
    _assert_no_session(init, resp)
