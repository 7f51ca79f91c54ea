"""`SaveConfig = true`: `wgpy down` writes the running configuration back into the file (ops/saveconf.py).

A (wgpy, ns[0]) has peer B (wgpy, ns[1]) at 10.201.0.2. While A runs, a peer C is added with `wg set`, one
with `wgpy genconf`, and B roams to 10.201.0.12 (A learns it from B's authenticated packets). `wgpy down` +
`wgpy up`: the added peers are still there,
A reaches B at its new address without B speaking first, and the file kept its mode and owner (comments go, as
with wg-quick).
"""

from __future__ import annotations

import os
import stat

import pytest

from wgpy_testkit.netlab import (PeerSpec, assert_ping, gen_keypair, random_public_key, render_config, run,
                                 unique_iface, wait_for, wg_dump, write_config)

pytestmark = pytest.mark.netns

PORT_A, PORT_B = 51820, 51821
MOVED = "10.201.0.12"
NOBODY = 65534


def test_live_peer_and_roamed_endpoint_survive_down_and_up(lab, two_ns):
    lab.require_real_wgpy("SaveConfig")
    a_ns, b_ns = two_ns.ns
    ka, kb = gen_keypair(), gen_keypair()
    a_if, b_if = unique_iface("wgsa"), unique_iface("wgsb")
    text = "# kept by wg-quick? no: comments go\n" + render_config(
        ka.private, PORT_A, [PeerSpec(kb.public, ("10.99.0.2/32",), endpoint=f"{two_ns.ip[1]}:{PORT_B}")],
        addresses=["10.99.0.1/24"], extra_interface_lines=["SaveConfig = true", "PostUp = true # a hook"])
    conf = write_config(lab.tmp, a_if, text, mode=0o640)
    os.chown(conf, NOBODY, NOBODY)            # root reads it all the same; the owner must survive the save
    lab.wgpy_up(a_ns, conf)
    b_conf = write_config(lab.tmp, b_if, render_config(
        kb.private, PORT_B, [PeerSpec(ka.public, ("10.99.0.1/32",), endpoint=f"{two_ns.ip[0]}:{PORT_A}")],
        addresses=["10.99.0.2/24"]))
    lab.wgpy_up(b_ns, b_conf)
    assert_ping(a_ns, "10.99.0.2")

    # a peer added live
    kc = random_public_key()
    run(a_ns, "wg", "set", a_if, "peer", kc, "allowed-ips", "10.99.0.3/32", "endpoint", "192.0.2.77:4444",
        "persistent-keepalive", "0")
    # and one from `wgpy genconf`, whose note says the file will have it
    gen = lab.wgpy(a_ns, "genconf", "--peer-of", a_if, "--address", "10.99.0.7/32", "--endpoint",
                   f"{two_ns.ip[0]}:{PORT_A}")
    assert gen.returncode == 0, gen.stderr
    assert "SaveConfig = true: `wgpy down" in gen.stderr and "was not changed" not in gen.stderr
    kg = next(ln.split("=", 1)[1].strip() for ln in gen.stdout.splitlines() if ln.startswith("PrivateKey"))
    kg_public = run(None, "wg", "pubkey", input=kg + "\n").stdout.strip()
    # B roams and speaks: A learns its new address
    veth = two_ns.veth[1]
    run(b_ns, "ip", "address", "del", f"{two_ns.ip[1]}/24", "dev", veth)
    run(b_ns, "ip", "address", "add", f"{MOVED}/24", "dev", veth)
    assert_ping(b_ns, "10.99.0.1")
    wait_for(lambda: wg_dump(a_ns, a_if)["peers"][kb.public]["endpoint"] == f"{MOVED}:{PORT_B}", 10,
             what="A learns B's new address")

    res = lab.wgpy(a_ns, "down", a_if)
    assert res.returncode == 0, res.stderr
    assert "saved the running configuration" in res.stderr
    st = os.stat(conf)
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    saved = conf.read_text()
    assert "#" not in saved and "PostUp = true\n" in saved and "SaveConfig = true\n" in saved
    assert f"Endpoint = {MOVED}:{PORT_B}\n" in saved and f"PublicKey = {kc}\n" in saved

    lab.wgpy_up(a_ns, conf)
    peers = wg_dump(a_ns, a_if)["peers"]
    assert peers[kc]["allowed_ips"] == ["10.99.0.3/32"] and peers[kc]["endpoint"] == "192.0.2.77:4444"
    assert peers[kb.public]["endpoint"] == f"{MOVED}:{PORT_B}"
    assert peers[kg_public]["allowed_ips"] == ["10.99.0.7/32"]
    assert_ping(a_ns, "10.99.0.2")            # A speaks first, to the address it learned before the restart
