"""wgpy <-> wgpy in two namespaces: handshake, ping both ways, 50 MB through TCP, `wgpy show`, lifecycle."""

from __future__ import annotations

import os
import signal
import time

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (UAPI_DIR, WGPY_KIND, assert_ping, gen_keypair, link_exists, ns_pids, parse_wg_show,
                                 render_config, start_mesh, wait_for, write_config)

pytestmark = pytest.mark.netns

NBYTES = 50 * 1000 * 1000
TRANSFER_TIMEOUT = float(os.environ.get("WGPY_IT_TRANSFER_TIMEOUT", "180"))


def test_ping_transfer_and_show(lab, two_ns, transfer):
    a, b = start_mesh(lab, two_ns, [WGPY_KIND, WGPY_KIND])

    assert_ping(a.ns, b.ip4)
    assert_ping(b.ns, a.ip4)
    assert a.handshake_with(b) > 0
    wait_for(lambda: b.handshake_with(a) > 0, 5, what="handshake on b")

    server, client = transfer(b.ns, a.ns, b.ip4, NBYTES, timeout=TRANSFER_TIMEOUT)
    assert client["bytes"] == server["bytes"] == NBYTES
    assert client["sha256"] == server["sha256"]

    dump_a = a.dump()
    assert dump_a["public_key"] == a.keys.public and dump_a["listen_port"] == a.listen_port
    peer_b = dump_a["peers"][b.keys.public]
    assert peer_b["endpoint"] == two_ns.endpoint(1, b.listen_port)
    assert peer_b["allowed_ips"] == ["10.99.0.2/32"]
    assert peer_b["tx"] > NBYTES and peer_b["rx"] > 0
    assert b.peer(a)["rx"] > NBYTES

    lab.require_real_wgpy("`wgpy show`")
    res = lab.wgpy(a.ns, "show", a.iface, check=True)
    show = parse_wg_show(res.stdout)
    assert show.get("interface") == a.iface, res.stdout
    assert show.get("public key") == a.keys.public, res.stdout
    assert show.get("listening port") == str(a.listen_port), res.stdout
    peer = show["peers"].get(b.keys.public)
    assert peer is not None, f"peer {b.keys.public} missing from `wgpy show`:\n{res.stdout}"
    assert peer.get("endpoint") == two_ns.endpoint(1, b.listen_port)
    assert "10.99.0.2/32" in peer.get("allowed ips", "")
    assert peer.get("latest handshake") and "never" not in peer["latest handshake"].lower(), res.stdout
    assert peer.get("tx", 0) > NBYTES * 0.9 and peer.get("rx", 0) > 0, res.stdout

    # `wgpy show` without an interface lists (at least) this one as well.
    res_all = lab.wgpy(a.ns, "show", check=True)
    assert f"interface: {a.iface}" in res_all.stdout


def test_cli_keys_match_wg(lab):
    lab.require_real_wgpy("wgpy key commands")
    private = lab.wgpy(None, "genkey", check=True).stdout.strip()
    assert len(private) == 44 and private.endswith("=")
    ours = lab.wgpy(None, "pubkey", input=private + "\n", check=True).stdout.strip()
    theirs = netlab.run(None, "wg", "pubkey", input=private + "\n").stdout.strip()
    assert ours == theirs
    psk = lab.wgpy(None, "genpsk", check=True).stdout.strip()
    assert len(psk) == 44 and psk != private


def _single_config(lab, ns):
    keys, peer = gen_keypair(), gen_keypair()
    iface = netlab.unique_iface()
    text = render_config(keys.private, 51820, [netlab.PeerSpec(peer.public, ("10.99.0.2/32",))],
                         addresses=["10.99.0.1/24"], mtu=1380)
    return iface, write_config(lab.tmp, iface, text)


def test_up_down_lifecycle(lab, netns):
    ns = netns()
    iface, conf = _single_config(lab, ns)
    lab.require_real_wgpy("`wgpy up`/`wgpy down`")
    assert lab.wgpy_up(ns, conf) == iface
    assert link_exists(ns, iface)
    assert (UAPI_DIR / f"{iface}.sock").exists()
    dump = netlab.wg_dump(ns, iface)
    assert dump["listen_port"] == 51820
    addrs = netlab.run(ns, "ip", "-4", "-o", "addr", "show", "dev", iface).stdout
    assert "10.99.0.1/24" in addrs
    assert " mtu 1380 " in netlab.run(ns, "ip", "link", "show", "dev", iface).stdout

    res = lab.wgpy(ns, "down", iface, timeout=20)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not link_exists(ns, iface), 5, what="interface removal")
    wait_for(lambda: not (UAPI_DIR / f"{iface}.sock").exists(), 5, what="socket removal")
    wait_for(lambda: not ns_pids(ns), 5, what="daemon exit")


def test_foreground_sigterm_tears_down(lab, netns):
    ns = netns()
    iface, conf = _single_config(lab, ns)
    lab.require_real_wgpy("`wgpy up --foreground`")
    proc = lab.popen(ns, netlab.WGPY, "up", "--foreground", conf, name="wgpy-fg")
    sock = UAPI_DIR / f"{iface}.sock"
    lab.ifaces[iface] = ns
    wait_for(lambda: (sock.exists() and link_exists(ns, iface)) or not proc.alive(), 20, what="foreground up")
    assert proc.alive(), proc.describe()
    assert netlab.wg_dump(ns, iface)["listen_port"] == 51820

    os.kill(proc.pid, signal.SIGTERM)
    rc = proc.wait(timeout=15)
    assert rc == 0 or rc == -signal.SIGTERM or rc == 128 + signal.SIGTERM, proc.describe()
    assert not link_exists(ns, iface)
    assert not sock.exists()
    assert not ns_pids(ns)

    # and SIGINT does the same
    proc = lab.popen(ns, netlab.WGPY, "up", "--foreground", conf, name="wgpy-fg-int")
    wait_for(lambda: (sock.exists() and link_exists(ns, iface)) or not proc.alive(), 20, what="foreground up")
    assert proc.alive(), proc.describe()
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=15)
    assert not link_exists(ns, iface)
    assert not sock.exists()
