"""NAT traversal for the mesh (issue 18) in namespaces: an "internet" router namespace with the control server
on it, and sites behind NAT routers (nftables masquerade; the WAN side lets in only what conntrack knows, as a
home router does). The nodes learn their public mapping by STUN from the WireGuard socket itself (the server
answers STUN on UDP 3478), report it with their own addresses to the server, and the peers punch through both
NATs by sending to each other at once.

    internet (10.100.0.1, 10.101.0.1, 10.102.0.1, ...) -- server 10.100.0.2 (HTTPS 8443, STUN 3478)
        |-- NAT a (WAN 10.101.0.2) -- LAN 192.168.1.0/24: nodes
        |-- NAT b (WAN 10.102.0.2) -- LAN 192.168.2.0/24: nodes
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import run, wait_for
from wgpy_testkit.wgconf import unique_iface

pytestmark = pytest.mark.netns

SERVER_IP = "10.100.0.2"
PORT = 8443


class NatLab:
    def __init__(self, lab) -> None:
        self.lab = lab
        self.inet = lab.netns()
        run(self.inet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.server = lab.netns()
        lab.veth(self.inet, self.server, "10.100.0.1/24", f"{SERVER_IP}/24")
        run(self.server, "ip", "route", "add", "default", "via", "10.100.0.1")
        self.sites: dict[str, dict] = {}
        self.nodes: list[dict] = []
        self.cert, self.key = lab.tmp / "server.pem", lab.tmp / "server.key"
        run(None, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=mesh.test", "-addext",
            f"subjectAltName=IP:{SERVER_IP}", timeout=30)
        (lab.tmp / "pw").write_text("correct horse battery\n")
        self.conf = lab.tmp / "server.toml"
        lab.defer("mesh nodes leave", self._leave_all)

    def _leave_all(self) -> None:
        import shutil
        for n in self.nodes:                      # the agents' logs kept for a failure's diagnosis
            for log in Path(n["state"]).glob("*.log"):
                shutil.copy(log, self.lab.tmp / f"agent-{n['name']}.log")
        for n in self.nodes:
            self.lab.wgpy(n["ns"], "leave", "--force", "--interface", n["iface"], "--state-dir", n["state"],
                          timeout=30)

    def site(self, name: str, index: int, masquerade: str = "masquerade") -> dict:
        """A NAT router: WAN 10.10{index}.0.2 towards the internet, LAN 192.168.{index}.1/24 on a bridge."""
        lab = self.lab
        nat = lab.netns()
        wan, _ = lab.veth(nat, self.inet, f"10.10{index}.0.2/24", f"10.10{index}.0.1/24")
        run(nat, "ip", "route", "add", "default", "via", f"10.10{index}.0.1")
        run(nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run(nat, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        run(nat, "ip", "addr", "add", f"192.168.{index}.1/24", "dev", "br0")
        run(nat, "ip", "link", "set", "br0", "up")
        rules = f"""
table ip nat {{
    chain postrouting {{ type nat hook postrouting priority srcnat; oifname "{wan}" {masquerade}; }}
}}
table inet filter {{
    chain input {{ type filter hook input priority filter; policy drop;
                   iifname != "{wan}" accept; ct state established,related accept; }}
    chain forward {{ type filter hook forward priority filter; policy drop;
                     iifname != "{wan}" accept; ct state established,related accept; }}
}}
"""
        (lab.tmp / f"nat-{name}.nft").write_text(rules)
        run(nat, "nft", "-f", lab.tmp / f"nat-{name}.nft")
        site = {"ns": nat, "wan": f"10.10{index}.0.2", "index": index, "hosts": 0}
        self.sites[name] = site
        return site

    def host(self, site: dict) -> tuple[str, str]:
        """A machine on the site's LAN: (namespace, its address)."""
        site["hosts"] += 1
        ns = self.lab.netns()
        addr = f"192.168.{site['index']}.{10 + site['hosts']}"
        _, v_nat = self.lab.veth(ns, site["ns"], f"{addr}/24", None)
        run(site["ns"], "ip", "link", "set", v_nat, "master", "br0", "up")
        run(ns, "ip", "route", "add", "default", "via", f"192.168.{site['index']}.1")
        return ns, addr

    def init_and_run(self) -> None:
        lab = self.lab
        res = lab.wgpy(None, "server", "--config", self.conf, "init", "--network", "100.80.0.0/16", "--db",
                       f"sqlite:///{lab.tmp}/server.db", "--admin-password-file", lab.tmp / "pw")
        assert res.returncode == 0, res.stderr
        proc = lab.popen(self.server, netlab.WGPY, "server", "--config", self.conf, "run", "--listen",
                         f"0.0.0.0:{PORT}", "--cert", self.cert, "--key", self.key, name="wgpy-server")
        wait_for(lambda: f":{PORT} " in run(self.server, "ss", "-ltn", timeout=5).stdout or not proc.alive(), 15,
                 what="wgpy server listening")
        assert proc.alive(), proc.describe()
        assert ":3478 " in run(self.server, "ss", "-lun", timeout=5).stdout            # STUN answered
        self.token = self.admin("token", "create", "--reusable")

    def admin(self, *args) -> str:
        res = self.lab.wgpy(None, "server", "--config", self.conf, *args, timeout=30)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def join(self, ns: str, name: str) -> dict:
        lab = self.lab
        node = {"ns": ns, "name": name, "iface": unique_iface("wgn"), "state": str(lab.tmp / f"state-{name}")}
        self.nodes.append(node)
        res = lab.wgpy(ns, "join", f"https://{SERVER_IP}:{PORT}", "--token", self.token, "--name", name, "--ca",
                       self.cert, "--interface", node["iface"], "--state-dir", node["state"], timeout=60)
        assert res.returncode == 0, res.stderr
        st = self.status(node)
        node["address"] = [r for r in st["nodes"] if r["self"]][0]["addresses"][0]
        node["public_key"] = json.loads((lab.tmp / f"state-{name}" / f"{node['iface']}.json").read_text())[
            "public_key"]
        return node

    def status(self, node: dict) -> dict:
        return json.loads(self.lab.wgpy(node["ns"], "status", "--json", "--interface", node["iface"],
                                        "--state-dir", node["state"], check=True).stdout)

    @staticmethod
    def wg(node: dict, what: str) -> dict[str, str]:
        out = run(node["ns"], "wg", "show", node["iface"], what, timeout=10).stdout
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

    def handshaken(self, a: dict, b: dict) -> bool:
        return int(self.wg(a, "latest-handshakes").get(b["public_key"], "0")) > 0

    def path(self, a: dict, b: dict) -> str | None:
        rows = {r["name"]: r for r in self.status(a)["nodes"]}
        return rows[b["name"]].get("path")


@pytest.fixture
def natlab(lab):
    return NatLab(lab)


def test_direct_path_through_two_port_preserving_nats(natlab):
    """Both nodes behind masquerading NATs whose WAN side drops what conntrack does not know: each learns its
    public mapping by STUN, the two punch through at once; a handshake within 3 s of the second join, 50 MB
    intact over the direct path (each side's endpoint is the other's NAT)."""
    n = natlab
    a_site, b_site = n.site("a", 1), n.site("b", 2)
    n.init_and_run()
    a = n.join(n.host(a_site)[0], "alpha")
    t0 = time.monotonic()
    b = n.join(n.host(b_site)[0], "bravo")
    wait_for(lambda: n.handshaken(a, b) and n.handshaken(b, a), 3.0 + (time.monotonic() - t0), interval=0.1,
             what="a handshake between the two NATed nodes")
    took = time.monotonic() - t0
    print(f"direct path {took:.2f} s after the second join started")
    assert n.wg(a, "endpoints")[b["public_key"]].startswith(b_site["wan"] + ":")
    assert n.wg(b, "endpoints")[a["public_key"]].startswith(a_site["wan"] + ":")
    assert n.path(a, b) == n.path(b, a) == "direct, through the NATs (STUN)"
    wait_for(lambda: n.status(a)["nat"].get("punched_direct") == 1, 3, interval=0.2, what="the punch counted")
    assert n.status(a)["nat"]["relayed"] == 0
    me = [r for r in n.status(a)["nodes"] if r["self"]][0]
    assert f"srflx {a_site['wan']}:51820" in me["candidates"]              # the mapping of the WireGuard socket
    netlab.assert_ping(a["ns"], b["address"])
    got, sent = n.lab.transfer(b["ns"], a["ns"], b["address"], 50 * 1024 * 1024)
    assert got["bytes"] == sent["bytes"] == 50 * 1024 * 1024 and got["sha256"] == sent["sha256"]


def test_two_nodes_behind_one_nat_use_the_lan(natlab):
    """Two nodes on one LAN behind the same NAT (the second one's mapping is not even port-preserving: the
    first took 51820 on the NAT) talk over the LAN, not through the NAT's public address; a node elsewhere
    reaches both through the NATs."""
    n = natlab
    a_site, b_site = n.site("a", 1), n.site("b", 2)
    n.init_and_run()
    (ns1, ip1), (ns2, ip2) = n.host(a_site), n.host(a_site)
    one, two = n.join(ns1, "one"), n.join(ns2, "two")
    far = n.join(n.host(b_site)[0], "far")
    wait_for(lambda: n.handshaken(one, two) and n.handshaken(two, one), 5, interval=0.1,
             what="a handshake on the LAN")
    assert n.wg(one, "endpoints")[two["public_key"]] == f"{ip2}:51820"
    assert n.wg(two, "endpoints")[one["public_key"]] == f"{ip1}:51820"
    assert n.path(one, two) == "direct, same LAN"
    netlab.assert_ping(one["ns"], two["address"])
    for x in (one, two):
        wait_for(lambda x=x: n.handshaken(far, x), 5, interval=0.1, what=f"far reaching {x['name']}")
        netlab.assert_ping(far["ns"], x["address"])
    eps = {n.wg(far, "endpoints")[x["public_key"]] for x in (one, two)}
    assert all(e.startswith(a_site["wan"] + ":") for e in eps) and len(eps) == 2     # two mappings on one NAT


def _flush_conntrack(ns: str) -> None:
    """Every connection-tracking entry of a NAT router forgotten (its mappings with them), as a reboot does."""
    import sys
    run(ns, sys.executable, "-c", "from pyroute2 import NFCTSocket\nwith NFCTSocket() as s: s.flush()", timeout=10)


def test_nat_mappings_flushed_mid_transfer(natlab):
    """Both NATs forget every mapping in the middle of a transfer (conntrack flushed, one after the other): the
    next packet out makes a new mapping and the tunnel goes on; the transfer completes intact. The stall is
    measured with a ping every 50 ms across both flushes."""
    import re
    n = natlab
    a_site, b_site = n.site("a", 1), n.site("b", 2)
    n.init_and_run()
    a, b = n.join(n.host(a_site)[0], "alpha"), n.join(n.host(b_site)[0], "bravo")
    wait_for(lambda: n.handshaken(a, b) and n.handshaken(b, a), 5, interval=0.1, what="the direct path")
    xfer = n.lab.start_transfer(a["ns"], b["ns"], a["address"], 20 << 20, timeout=60, rate=4 << 20)
    pinger = n.lab.popen(a["ns"], "ping", "-n", "-i", "0.05", "-c", "120", "-W", "1", b["address"], name="ping")
    time.sleep(1.5)
    _flush_conntrack(a_site["ns"])
    time.sleep(1.5)
    _flush_conntrack(b_site["ns"])
    got, sent = xfer.wait()
    assert got["bytes"] == sent["bytes"] == 20 << 20 and got["sha256"] == sent["sha256"]
    wait_for(lambda: not pinger.alive(), 20, what="the pings")
    seqs = sorted({int(m) for m in re.findall(r"icmp_seq=(\d+)", pinger.stdout())})
    assert len(seqs) > 60, pinger.stdout()[-500:]
    gaps = [y - x - 1 for x, y in zip(seqs, seqs[1:])] + [0]
    print(f"pings answered {len(seqs)}/120, longest run lost {max(gaps)} (stall <= {(max(gaps) + 1) * 0.05:.2f} s)")
    assert max(gaps) * 0.05 < 2.0                               # the path came back at once, not at a keepalive
    assert n.path(a, b) == "direct, through the NATs (STUN)"


def test_hostile_stun_answers_are_dropped_and_counted(natlab):
    """STUN answers sent to a node's WireGuard port that match no request of its own (a machine on its LAN
    spraying them; one on the internet spoofing the STUN server's address and port, which the NAT lets in, with
    transaction ids the node never used): dropped and counted, the node's public address unchanged, its tunnel
    unaffected. (From any other internet address the NAT itself drops them: it has no mapping towards it.)"""
    import sys
    n = natlab
    a_site = n.site("a", 1)
    n.init_and_run()
    ans, ans_ip = n.host(a_site)
    a = n.join(ans, "alpha")
    b = n.join(n.server, "bravo")                     # a node on the internet itself (no NAT)
    wait_for(lambda: n.handshaken(a, b), 5, interval=0.1, what="the path")
    uapi_get = [netlab.WGPY, "show", a["iface"], "--json"]
    before = json.loads(run(a["ns"], *uapi_get, timeout=15).stdout)["stun_mapped"]
    assert before == f"{a_site['wan']}:51820"
    attacker, _ = n.host(a_site)                     # a machine on the node's LAN: no NAT in between
    import wgpy
    src = str(__import__("pathlib").Path(wgpy.__file__).parent.parent)
    spray = ("import os, socket, sys\n"
             "sys.path.insert(0, sys.argv[3])\n"
             "from wgpy.protocol import stun\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for i in range(100):\n"
             "    r = stun.binding_response(stun.binding_request(os.urandom(12)), ('6.6.6.6', 666))\n"
             "    s.sendto(r, (sys.argv[1], int(sys.argv[2])))\n")
    run(attacker, sys.executable, "-c", spray, ans_ip, "51820", src, timeout=30)
    # from the internet, spoofing the STUN server's address and port (the NAT lets those in: it has a mapping
    # towards them), with transaction ids the node never used: a raw socket writes the IP and UDP headers
    spoof = ("import os, socket, struct, sys\n"
             "sys.path.insert(0, sys.argv[4])\n"
             "from wgpy.protocol import stun\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n"
             "src, dst, dport = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), int(sys.argv[3])\n"
             "for i in range(100):\n"
             "    body = stun.binding_response(stun.binding_request(os.urandom(12)), ('6.6.6.6', 666))\n"
             "    udp = struct.pack('!HHHH', 3478, dport, 8 + len(body), 0) + body\n"
             "    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0, src, dst)\n"
             "    s.sendto(ip + udp, (sys.argv[2], 0))\n")
    run(n.server, sys.executable, "-c", spoof, SERVER_IP, a_site["wan"], "51820", src, timeout=30)
    time.sleep(0.5)
    out = n.lab.wgpy(a["ns"], "show", a["iface"], "stats", check=True).stdout
    stats = dict(line.split("\t") for line in out.splitlines())
    after = json.loads(run(a["ns"], *uapi_get, timeout=15).stdout)["stun_mapped"]
    assert after == before
    assert int(stats["stun_unmatched"]) >= 200, out                 # the LAN's 100 and the spoofed 100
    assert int(stats["stun_responses"]) >= 1
    assert int(stats.get("drop_invalid_message", "0")) == 0          # told apart from WireGuard, not junk
    netlab.assert_ping(a["ns"], b["address"])


def _relayed(n: NatLab, a: dict, b: dict) -> bool:
    rows = {r["name"]: r for r in n.status(a)["nodes"]}
    return bool(rows[b["name"]].get("relayed")) and n.handshaken(a, b)


def test_relay_between_two_symmetric_nats(natlab):
    """Both NATs give every destination a mapping of its own (masquerade fully-random: the mapping STUN finds is
    not the one a peer would need): no direct path exists, so both nodes give each other the relay and the
    traffic goes through the server within 3 s of the second join; 20 MB intact; status says relayed."""
    n = natlab
    a_site, b_site = n.site("a", 1, "masquerade fully-random"), n.site("b", 2, "masquerade fully-random")
    n.init_and_run()
    a = n.join(n.host(a_site)[0], "alpha")
    t0 = time.monotonic()
    b = n.join(n.host(b_site)[0], "bravo")
    wait_for(lambda: _relayed(n, a, b) and _relayed(n, b, a), 3.0 + (time.monotonic() - t0), interval=0.1,
             what="the relayed path")
    print(f"relayed {time.monotonic() - t0:.2f} s after the second join started")
    assert n.path(a, b) == "relayed, through the server"
    wait_for(lambda: n.status(a)["nat"].get("relayed") == 1, 3, interval=0.2, what="the relay counted")
    assert n.status(a)["nat"]["punched_direct"] == 0
    netlab.assert_ping(a["ns"], b["address"])
    got, sent = n.lab.transfer(b["ns"], a["ns"], b["address"], 20 * 1024 * 1024)
    assert got["bytes"] == sent["bytes"] == 20 * 1024 * 1024 and got["sha256"] == sent["sha256"]


def test_one_symmetric_one_port_preserving_nat(natlab):
    """One NAT maps per destination (fully-random), the other preserves ports but, as both do, lets in only
    what conntrack knows. Punching cannot meet: the preserving side sends to the mapping STUN saw of the
    symmetric side, which only the STUN server may use; the symmetric side's mapping towards the preserving
    side is a port nobody learns. So the pair is relayed (the technique here is candidate exchange + a
    simultaneous punch, without port prediction); the traffic flows."""
    n = natlab
    a_site, b_site = n.site("a", 1, "masquerade fully-random"), n.site("b", 2)
    n.init_and_run()
    a = n.join(n.host(a_site)[0], "alpha")
    b = n.join(n.host(b_site)[0], "bravo")
    wait_for(lambda: _relayed(n, a, b) and _relayed(n, b, a), 6, interval=0.1, what="the relayed path")
    netlab.assert_ping(a["ns"], b["address"])
    got, sent = n.lab.transfer(b["ns"], a["ns"], b["address"], 5 * 1024 * 1024)
    assert got["bytes"] == sent["bytes"] and got["sha256"] == sent["sha256"]


def test_udp_blocked_for_one_node_then_back_to_direct(natlab):
    """UDP from and to one node blocked on its router (nftables drop, STUN included): the pair is relayed over
    the server's HTTPS port; a transfer runs across the unblocking and the return to the direct path, on one
    inner TCP connection, intact; back to direct within the fallback's probe interval (10 s) plus a probe."""
    n = natlab
    a_site, b_site = n.site("a", 1), n.site("b", 2)
    block = n.lab.tmp / "block.nft"
    block.write_text("table inet block {\n  chain udp_off { type filter hook forward priority -10; "
                     "meta l4proto udp drop; }\n}\n")
    run(a_site["ns"], "nft", "-f", block)
    n.init_and_run()
    a = n.join(n.host(a_site)[0], "alpha")
    b = n.join(n.host(b_site)[0], "bravo")
    wait_for(lambda: _relayed(n, a, b) and _relayed(n, b, a), 8, interval=0.1, what="the relayed path")
    xfer = n.lab.start_transfer(a["ns"], b["ns"], a["address"], 40 << 20, timeout=90, rate=2 << 20)
    time.sleep(2.0)
    run(a_site["ns"], "nft", "delete", "table", "inet", "block")
    t0 = time.monotonic()
    wait_for(lambda: not _relayed(n, a, b) and not _relayed(n, b, a), 25, interval=0.2,
             what="the return to the direct path")
    print(f"back to direct {time.monotonic() - t0:.1f} s after UDP was unblocked")
    got, sent = xfer.wait()
    assert got["bytes"] == sent["bytes"] == 40 << 20 and got["sha256"] == sent["sha256"]
    assert n.wg(a, "endpoints")[b["public_key"]].startswith(b_site["wan"] + ":")
