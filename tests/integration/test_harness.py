"""Proves the harness itself: wireguard-go <-> wireguard-go, no wgpy involved.

If this fails, the environment or the harness is broken, not wgpy.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import PeerSpec, assert_ping, gen_keypair, parse_wg_dump, wait_for, wg_dump

pytestmark = pytest.mark.netns

NBYTES = 5 * 1000 * 1000


def test_wireguard_go_pair(lab, two_ns, wireguard_go_up, transfer):
    a_ns, b_ns = two_ns.ns
    ka, kb = gen_keypair(), gen_keypair()
    a_if, b_if = netlab.unique_iface(), netlab.unique_iface()

    wireguard_go_up(a_ns, a_if, ka.private, 51820,
                    [PeerSpec(kb.public, ("10.99.0.2/32",), endpoint=two_ns.endpoint(1, 51821))], "10.99.0.1/24")
    # b does not know a's endpoint: it has to learn it from a's handshake initiation.
    wireguard_go_up(b_ns, b_if, kb.private, 51821, [PeerSpec(ka.public, ("10.99.0.1/32",))], "10.99.0.2/24")

    before = wg_dump(a_ns, a_if)
    assert before["public_key"] == ka.public
    assert before["listen_port"] == 51820
    assert before["peers"][kb.public]["latest_handshake"] == 0

    started = time.time()
    assert_ping(a_ns, "10.99.0.2")
    hs = wait_for(lambda: wg_dump(a_ns, a_if)["peers"][kb.public]["latest_handshake"], 5, what="handshake on a")
    assert started - 5 <= hs <= time.time() + 5
    wait_for(lambda: wg_dump(b_ns, b_if)["peers"][ka.public]["latest_handshake"], 5, what="handshake on b")
    assert wg_dump(b_ns, b_if)["peers"][ka.public]["endpoint"] == two_ns.endpoint(0, 51820)
    assert_ping(b_ns, "10.99.0.1")

    server, client = transfer(b_ns, a_ns, "10.99.0.2", NBYTES, timeout=30)
    assert server["bytes"] == client["bytes"] == NBYTES
    assert server["sha256"] == client["sha256"]
    assert server["peer"] == "10.99.0.1"

    a_peer = wg_dump(a_ns, a_if)["peers"][kb.public]
    assert a_peer["tx"] > NBYTES and a_peer["rx"] > 0


def test_dump_parser():
    text = ("cHJpdg==\tcHVi\t51820\toff\n"
            "a2V5MQ==\t(none)\t10.0.0.2:51820\t10.99.0.2/32,fd99::2/128\t1700000000\t100\t200\toff\n"
            "a2V5Mg==\tcHNr\t(none)\t(none)\t0\t0\t0\t25\n")
    d = parse_wg_dump(text)
    assert d["listen_port"] == 51820 and d["fwmark"] is None
    p1, p2 = d["peers"]["a2V5MQ=="], d["peers"]["a2V5Mg=="]
    assert p1["allowed_ips"] == ["10.99.0.2/32", "fd99::2/128"] and p1["preshared_key"] is None
    assert (p1["latest_handshake"], p1["rx"], p1["tx"]) == (1700000000, 100, 200)
    assert p2["endpoint"] is None and p2["allowed_ips"] == [] and p2["persistent_keepalive"] == 25


def test_show_parser():
    text = ("interface: wgt123456\n  public key: cHVi\n  private key: (hidden)\n  listening port: 51820\n\n"
            "peer: a2V5MQ==\n  endpoint: 10.201.0.2:51821\n  allowed ips: 10.99.0.2/32\n"
            "  latest handshake: 3 seconds ago\n  transfer: 1.50 MiB received, 92 B sent\n")
    s = netlab.parse_wg_show(text)
    assert s["interface"] == "wgt123456" and s["listening port"] == "51820"
    peer = s["peers"]["a2V5MQ=="]
    assert peer["rx"] == int(1.5 * 1024 * 1024) and peer["tx"] == 92
    assert peer["latest handshake"] == "3 seconds ago"


def test_write_config_mode(tmp_path):
    path = netlab.write_config(tmp_path, "wgtmode", "[Interface]\n", mode=0o600)
    assert path.name == "wgtmode.conf" and path.is_absolute()
    assert (path.stat().st_mode & 0o777) == 0o600
    path = netlab.write_config(tmp_path, "wgtmode", "[Interface]\n", mode=0o644)
    assert (Path(path).stat().st_mode & 0o777) == 0o644
