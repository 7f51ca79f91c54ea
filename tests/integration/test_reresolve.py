"""Host-name endpoints looked up again while the interface runs (io/reresolve.py, README "Endpoint").

wgpy (node A, ns[0]) knows its peer B (ns[1]) as `peer-b.wgpy.test:PORT`. The name is in a hosts file the test
owns, bind-mounted over /etc/hosts in a mount namespace of A's daemon alone (`unshare -m` under `ip netns
exec`): nothing on the host changes, and the test edits the file in place to move the name.

1. B moves to a new address and the name follows: A's tunnel works again within the documented bound, without
   a restart, and `wgpy show --json` says the endpoint is the name's.
2. B roams (A learns its new address from an authenticated packet); then B and the name move to a third address
   and A's handshakes fail: A keeps the roamed endpoint all the same.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from wgpy_testkit.netlab import (WGGO_UPSTREAM_KIND, WGPY_KIND, WGPY_RUN_DIR, Keypair, PeerSpec, assert_ping,
                                 WgNode, gen_keypair, ping, render_config, run, unique_iface, wait_for,
                                 write_config)

pytestmark = pytest.mark.netns

NAME = "peer-b.wgpy.test"
PORT_A, PORT_B = 51820, 51821
MOVED = "10.201.0.12"
THIRD = "10.201.0.22"
# io/reresolve.py: with traffic, KEEPALIVE + REKEY_TIMEOUT + 2 unanswered initiations + FAILING_RETRY ~ 40 s
FOLLOW_BOUND = 45.0


def _hosts(path: Path, addr: str) -> None:
    with open(path, "w") as f:        # in place: the bind mount shows this inode
        f.write(f"127.0.0.1 localhost\n{addr} {NAME}\n")


def _start(lab, two_ns, b_kind: str, b_knows_a: bool) -> tuple[str, Keypair, WgNode, Path]:
    ka, kb = gen_keypair(), gen_keypair()
    hosts = lab.tmp / "hosts"
    _hosts(hosts, two_ns.ip[1])
    iface = unique_iface("wgrr")
    conf = write_config(lab.tmp, iface, render_config(
        ka.private, PORT_A, [PeerSpec(kb.public, ("10.99.0.2/32",), endpoint=f"{NAME}:{PORT_B}")],
        addresses=["10.99.0.1/24"]))
    mount = ("unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
             str(hosts))
    res = lab.try_wgpy_up(two_ns.ns[0], conf, prefix=mount)
    assert res.returncode == 0, res.stderr
    b = lab.node(b_kind, two_ns.ns[1], keys=kb, listen_port=PORT_B, addresses=["10.99.0.2/24"],
             peers=[PeerSpec(ka.public, ("10.99.0.1/32",),
                             endpoint=f"{two_ns.ip[0]}:{PORT_A}" if b_knows_a else None)])
    return iface, ka, b, hosts


def kb_public(b: WgNode) -> str:
    return b.keys.public


def _peer_json(lab, ns: str, iface: str) -> dict:
    out = lab.wgpy(ns, "show", "--json", iface, check=True).stdout
    (peer,) = json.loads(out)["peers"]
    return peer


def _move_b(two_ns, old: str, new: str) -> None:
    veth = two_ns.veth[1]
    run(two_ns.ns[1], "ip", "address", "del", f"{old}/24", "dev", veth)
    run(two_ns.ns[1], "ip", "address", "add", f"{new}/24", "dev", veth)


def _log(iface: str) -> str:
    path = WGPY_RUN_DIR / f"{iface}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize("b_kind", [WGPY_KIND, WGGO_UPSTREAM_KIND])
def test_endpoint_follows_the_name(lab, two_ns, b_kind):
    lab.require_real_wgpy("re-resolution")
    iface, ka, b, hosts = _start(lab, two_ns, b_kind, b_knows_a=False)
    a_ns = two_ns.ns[0]
    assert_ping(a_ns, "10.99.0.2")
    # A's passive keepalive (10 s after the last reply) reaches B: B has no reason of its own to initiate from
    # its new address (which would move A there by roaming and prove nothing about names)
    rx = b.peer(ka.public)["rx"]
    wait_for(lambda: b.peer(ka.public)["rx"] > rx, 15, what="A's keepalive at B")
    peer = _peer_json(lab, a_ns, iface)
    assert peer["endpoint"] == f"{two_ns.ip[1]}:{PORT_B}" and peer["endpoint_name"] == f"{NAME}:{PORT_B}"
    # `wg` skips the key it does not know
    assert run(a_ns, "wg", "show", iface, "endpoints").stdout.split() == [kb_public(b), f"{two_ns.ip[1]}:{PORT_B}"]

    _move_b(two_ns, two_ns.ip[1], MOVED)
    _hosts(hosts, MOVED)
    moved_at = time.monotonic()
    pinger = lab.popen(a_ns, "ping", "-n", "-i", "0.2", "-W", "1", "10.99.0.2", name="ping")
    wait_for(lambda: _peer_json(lab, a_ns, iface)["endpoint"] == f"{MOVED}:{PORT_B}", FOLLOW_BOUND + 15,
             interval=0.5, what=f"A's endpoint for B to follow {NAME} to {MOVED}")
    wait_for(lambda: ping(a_ns, "10.99.0.2").returncode == 0, 15, interval=0.2, what="the tunnel works again")
    took = time.monotonic() - moved_at
    pinger.stop()
    assert took < FOLLOW_BOUND, f"the tunnel followed the name after {took:.0f} s"
    peer = _peer_json(lab, a_ns, iface)
    assert peer["endpoint_name"] == f"{NAME}:{PORT_B}"
    assert f"{NAME} now resolves to {MOVED}:{PORT_B}" in _log(iface)


def test_roamed_endpoint_is_not_overridden(lab, two_ns):
    lab.require_real_wgpy("re-resolution")
    # B is upstream wireguard-go: silent once its keepalive is sent (wgpy's path MTU probes would speak from
    # B's new address and make A roam there, legitimately); Debian's keeps a deleted source address for ~25 s
    iface, ka, b, hosts = _start(lab, two_ns, WGGO_UPSTREAM_KIND, b_knows_a=True)
    a_ns, b_ns = two_ns.ns
    assert_ping(a_ns, "10.99.0.2")

    # B roams to MOVED and speaks first: A learns the new address from an authenticated packet
    _move_b(two_ns, two_ns.ip[1], MOVED)
    assert_ping(b_ns, "10.99.0.1")
    wait_for(lambda: _peer_json(lab, a_ns, iface)["endpoint"] == f"{MOVED}:{PORT_B}", 10, what="A learns B's roam")
    assert _peer_json(lab, a_ns, iface)["endpoint_name"] is None        # no longer the name's address
    # B's passive keepalive (10 s after A's last reply) is the last packet either way: then both are silent
    rx = _peer_json(lab, a_ns, iface)["transfer_rx"]
    wait_for(lambda: _peer_json(lab, a_ns, iface)["transfer_rx"] > rx, 15, what="B's keepalive at A")

    # the name moves to a third address and B goes there too, silently; A's packets to the roamed address go
    # unanswered and its handshakes fail: the name, which would mend the tunnel, must not override the roam
    _hosts(hosts, THIRD)
    _move_b(two_ns, MOVED, THIRD)
    pinger = lab.popen(a_ns, "ping", "-n", "-i", "0.5", "-W", "1", "10.99.0.2", name="ping")
    deadline = time.monotonic() + FOLLOW_BOUND + 10
    while time.monotonic() < deadline:
        assert _peer_json(lab, a_ns, iface)["endpoint"] == f"{MOVED}:{PORT_B}", "the roamed endpoint was replaced"
        time.sleep(1)
    pinger.stop()
    assert "now resolves to" not in _log(iface)
    assert "no answer to" in (_peer_json(lab, a_ns, iface)["last_error"] or "")    # A's handshakes did fail
