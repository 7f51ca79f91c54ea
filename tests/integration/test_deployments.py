"""Real deployments (issue 9): site-to-site LANs behind NAT, an exit gateway with `Masquerade =`, a full-tunnel
client whose `down` restores routing and DNS exactly, running without root (attached to a user's persistent TUN,
or dropping to a user), and a NAT'd client kept reachable by PersistentKeepalive.

Every namespace, router and NAT here is made by the test; nothing is sent outside them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (PeerSpec, add_bridge, assert_ping, default_route, gen_keypair, lan_host, link_exists,
                                 nat_router, nft_load, ns_pids, proc_status, read_sysctl, render_config, run, sysctl,
                                 unique_iface, wait_for, write_config)

pytestmark = pytest.mark.netns

NOBODY = 65534
CAP_NET_ADMIN = 1 << 12
SETPRIV_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
RUN_DIR = Path("/run/wgpy")


def _nobody_can_run_wgpy() -> bool:
    res = run(None, *SETPRIV_NOBODY, netlab.WGPY.parent / "python", "-c", "import wgpy", timeout=30, check=False)
    return res.returncode == 0


def _require_nobody_can_run_wgpy() -> None:
    """Skip, saying why, where the checkout or its interpreter is out of reach of other users (a clone or a
    Python under root's 0700 home): then no daemon can drop to another user (scripts/setup.sh warns too)."""
    if not _nobody_can_run_wgpy():
        pytest.skip(f"user nobody cannot run {netlab.WGPY.parent / 'python'} or import wgpy from this checkout "
                    "(a directory on the way is closed to other users)")


def _tun_node_for_nobody(lab) -> list[str]:
    """A prefix that runs a command as nobody with a /dev/net/tun that nobody may open (0666, the Debian
    default), in a private mount namespace: machines of this kind ship a 0600 node, and the test must not
    change the machine's own."""
    node_dir = Path(tempfile.mkdtemp(prefix="wgpyt-tun-"))
    lab.defer(f"rm -r {node_dir}", lambda: shutil.rmtree(node_dir, ignore_errors=True))
    os.chmod(node_dir, 0o755)
    node = node_dir / "tun"
    os.mknod(node, 0o666 | __import__("stat").S_IFCHR, os.makedev(10, 200))
    os.chmod(node, 0o666)
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /dev/net/tun && exec "$@"', str(node), *SETPRIV_NOBODY]


def _wgpy_config(lab, name: str, text: str, *, readable_by_nobody: bool = False) -> Path:
    if not readable_by_nobody:
        return write_config(lab.tmp, name, text)
    # the pytest tmp dir is 0700 root: nobody needs a directory of its own to read the file
    cfg_dir = Path(tempfile.mkdtemp(prefix="wgpyt-cfg-"))
    lab.defer(f"rm -r {cfg_dir}", lambda: shutil.rmtree(cfg_dir, ignore_errors=True))
    os.chmod(cfg_dir, 0o755)
    path = write_config(cfg_dir, name, text)
    os.chown(path, NOBODY, NOBODY)
    return path


def _daemon_pid(ns: str) -> int:
    """The one wgpy daemon running in `ns`."""
    pids = [p for p in ns_pids(ns) if b"wgpy" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(pids) == 1, f"expected one wgpy daemon in {ns}, found {pids}"
    return pids[0]


def _assert_runs_as_nobody(pid: int, caps: int) -> None:
    st = proc_status(pid)
    assert st["Uid"].split() == [str(NOBODY)] * 4, st["Uid"]
    assert st["Gid"].split() == [str(NOBODY)] * 4, st["Gid"]
    assert int(st["CapEff"], 16) == caps, st["CapEff"]
    assert int(st["CapPrm"], 16) == caps, st["CapPrm"]
    if caps:
        assert int(st["CapBnd"], 16) == caps, st["CapBnd"]
        assert int(st["CapAmb"], 16) == caps, st["CapAmb"]


# ---------------------------------------------------------------------------------------------------------------
# Site to site (seed 002): LAN A - gateway A - NAT A - internet - NAT B (UDP port forwarded) - gateway B - LAN B
# ---------------------------------------------------------------------------------------------------------------

def test_site_to_site_behind_nat(lab):
    """
      a1 172.16.0.11 ┐                                                              ┌ b1 172.20.0.11
                     ├ br0 gwA 192.168.1.2 ─ natA ─ internet ─ natB ─ 192.168.2.2 gwB br0 ┤
      a2 172.16.0.12 ┘    172.16.0.1   (MASQUERADE) 198.51.100/24  (MASQUERADE,      172.20.0.1  └ b2 172.20.0.12
                                                    203.0.113/24    udp 51820 -> gwB)
      wgpy tunnel gwA 10.88.0.1 <-> gwB 10.88.0.2 carrying 172.16.0.0/16 <-> 172.20.0.0/16
    """
    inet, nat_a, nat_b, gw_a, gw_b = (lab.netns() for _ in range(5))
    # the "internet": two public subnets, routed
    wan_a, _ = lab.veth(nat_a, inet, "198.51.100.2/24", "198.51.100.1/24")
    wan_b, _ = lab.veth(nat_b, inet, "203.0.113.2/24", "203.0.113.1/24")
    sysctl(inet, "net.ipv4.ip_forward", 1)
    default_route(nat_a, "198.51.100.1")
    default_route(nat_b, "203.0.113.1")
    # private uplinks of the gateways behind their NAT routers
    lab.veth(gw_a, nat_a, "192.168.1.2/24", "192.168.1.1/24")
    lab.veth(gw_b, nat_b, "192.168.2.2/24", "192.168.2.1/24")
    default_route(gw_a, "192.168.1.1")
    default_route(gw_b, "192.168.2.1")
    nat_router(nat_a, wan_a)
    nat_router(nat_b, wan_b, dnat_udp=[(51820, "192.168.2.2:51820")])
    # the two LANs: hosts with nothing configured but their default gateway
    add_bridge(gw_a, "br0", "172.16.0.1/16")
    add_bridge(gw_b, "br0", "172.20.0.1/16")
    lan_a = [lan_host(lab, gw_a, "br0", f"172.16.0.{i}/16", "172.16.0.1") for i in (11, 12)]
    lan_b = [lan_host(lab, gw_b, "br0", f"172.20.0.{i}/16", "172.20.0.1") for i in (11, 12)]
    for gw in (gw_a, gw_b):
        sysctl(gw, "net.ipv4.ip_forward", 1)

    ka, kb = gen_keypair(), gen_keypair()
    iface_a, iface_b = unique_iface(), unique_iface()
    conf_b = render_config(kb.private, 51820, [PeerSpec(ka.public, ("10.88.0.1/32", "172.16.0.0/16"))],
                           addresses=["10.88.0.2/24"])
    conf_a = render_config(ka.private, None, [PeerSpec(kb.public, ("10.88.0.2/32", "172.20.0.0/16"),
                                                       endpoint="203.0.113.2:51820", persistent_keepalive=10)],
                           addresses=["10.88.0.1/24"])
    lab.wgpy_up(gw_b, write_config(lab.tmp, iface_b, conf_b))
    lab.wgpy_up(gw_a, write_config(lab.tmp, iface_a, conf_a))

    for src, src_ip in zip(lan_a, ("172.16.0.11", "172.16.0.12")):
        for dst, dst_ip in zip(lan_b, ("172.20.0.11", "172.20.0.12")):
            assert_ping(src, dst_ip)
            assert_ping(dst, src_ip)
    # gateway B learned gateway A's address as NAT A shows it to the internet
    peer_a = netlab.wg_dump(gw_b, iface_b)["peers"][ka.public]
    assert peer_a["endpoint"].startswith("198.51.100.2:"), peer_a
    # and LAN B sees LAN A's own addresses: the tunnel routes, it does not NAT
    nbytes = 4 * 1000 * 1000
    server, client = lab.transfer(lan_b[0], lan_a[0], "172.20.0.11", nbytes, timeout=120)
    assert server["bytes"] == client["bytes"] == nbytes and server["sha256"] == client["sha256"]
    server, client = lab.transfer(lan_a[1], lan_b[1], "172.16.0.12", nbytes, timeout=120)
    assert server["bytes"] == client["bytes"] == nbytes and server["sha256"] == client["sha256"]


# ---------------------------------------------------------------------------------------------------------------
# Exit gateway with Masquerade, full-tunnel client, exact restore; as root and dropping to a user
# ---------------------------------------------------------------------------------------------------------------

def _client_state(ns: str) -> dict[str, str]:
    """Routing, rules, nftables, forwarding sysctls and resolv.conf of `ns`, as text to compare exactly."""
    # link-local addresses get their local route only once duplicate address detection is done
    wait_for(lambda: not run(ns, "ip", "-6", "addr", "show", "tentative").stdout.strip(), 10,
             what=f"IPv6 DAD to finish in {ns}")
    state = {}
    for cmd in (("ip", "-4", "rule"), ("ip", "-6", "rule"), ("ip", "-4", "route", "show", "table", "all"),
                ("ip", "-6", "route", "show", "table", "all"), ("nft", "list", "ruleset"),
                ("sysctl", "-a", "-r", r"forwarding|ip_forward|src_valid_mark"), ("cat", "/etc/resolv.conf")):
        state[" ".join(cmd)] = run(ns, *cmd, timeout=10).stdout
    return state


HOST_RULESET = """table inet hostfw {
    chain input {
        type filter hook input priority filter; policy accept;
        tcp dport 9 drop
    }
}
table ip hostnat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 192.0.2.99 oifname "lo" masquerade
    }
}
"""


@pytest.mark.parametrize("run_as", ["root", "user"])
def test_exit_gateway_full_tunnel(lab, run_as):
    """
      client 192.0.2.2 ── router ── 203.0.113.1 server ── uplink 198.51.100.1, 2001:db8:100::1 ── host 198.51.100.50
      (the client reaches the server only through its default route; the host has no route to the tunnel)
    """
    lab.require_real_wgpy("Masquerade and full-tunnel routing")
    if run_as == "user":
        _require_nobody_can_run_wgpy()
    client, router, server, host = (lab.netns() for _ in range(4))
    client_wire, _ = lab.veth(client, router, "192.0.2.2/24", "192.0.2.1/24")
    lab.veth(server, router, "203.0.113.1/24", "203.0.113.254/24")
    uplink, host_wire = lab.veth(server, host, "198.51.100.1/24", "198.51.100.50/24")
    lab.add_address(server, uplink, "2001:db8:100::1/64")
    lab.add_address(host, host_wire, "2001:db8:100::50/64")
    sysctl(router, "net.ipv4.ip_forward", 1)
    default_route(client, "192.0.2.1")
    default_route(server, "203.0.113.254")
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        sysctl(server, key, 0)
    nft_load(server, HOST_RULESET)   # the host's own rules: must be untouched
    # the host has no route back to the tunnel: only NAT on the server can make replies find their way
    assert run(host, "ip", "route", "get", "10.77.0.2", check=False).returncode != 0
    assert run(host, "ip", "-6", "route", "get", "fd77::2", check=False).returncode != 0

    # the client's resolver, as `ip netns exec` shows it (/etc/netns/NS/resolv.conf bind-mounted over
    # /etc/resolv.conf); the host's real file must never change
    with_dns = run_as == "root" and shutil.which("resolvconf") is None
    host_resolv = hashlib.sha256(Path("/etc/resolv.conf").read_bytes()).hexdigest()
    netns_etc = Path("/etc/netns") / client
    netns_etc.mkdir(parents=True)
    lab.defer(f"rm -r {netns_etc}", lambda: shutil.rmtree(netns_etc, ignore_errors=True))
    (netns_etc / "resolv.conf").write_text("# the client's own resolver\nnameserver 192.0.2.53\n")

    ks, kc = gen_keypair(), gen_keypair()
    iface_s, iface_c = unique_iface(), unique_iface()
    user_line = ["User = nobody"] if run_as == "user" else []
    conf_s = render_config(ks.private, 51820, [PeerSpec(kc.public, ("10.77.0.2/32", "fd77::2/128"))],
                           addresses=["10.77.0.1/24", "fd77::1/64"],
                           extra_interface_lines=[f"Masquerade = {uplink}", *user_line])
    conf_c = render_config(kc.private, None, [PeerSpec(ks.public, ("0.0.0.0/0", "::/0"),
                                                       endpoint="203.0.113.1:51820")],
                           addresses=["10.77.0.2/24", "fd77::2/64"],
                           extra_interface_lines=[*(["DNS = 10.77.0.1, tunnel.test"] if with_dns else []),
                                                  *user_line])
    before_s, before_c = _client_state(server), _client_state(client)
    lab.wgpy_up(server, write_config(lab.tmp, iface_s, conf_s))
    lab.wgpy_up(client, write_config(lab.tmp, iface_c, conf_c))

    if run_as == "user":
        # both daemons run as nobody with CAP_NET_ADMIN alone (to undo their routing, nft and sysctl changes)
        for ns in (server, client):
            _assert_runs_as_nobody(_daemon_pid(ns), CAP_NET_ADMIN)
        # the UAPI socket stays where `wg` looks, usable by root and by the user
        assert "peer:" in run(server, "wg", "show", iface_s).stdout
        res = run(client, *SETPRIV_NOBODY, netlab.WGPY, "show", iface_c, check=False)
        assert res.returncode == 0 and ks.public in res.stdout, res.stderr

    # the server forwards and NATs: forwarding on, and one table of its own
    assert read_sysctl(server, "net.ipv4.ip_forward") == "1"
    assert read_sysctl(server, "net.ipv6.conf.all.forwarding") == "1"
    # the full tunnel: everything goes into it, except the tunnel's own packets (fwmark 51820)
    assert f"dev {iface_c}" in run(client, "ip", "route", "get", "198.51.100.50").stdout
    assert f"dev {iface_c}" in run(client, "ip", "route", "get", "203.0.113.1").stdout
    marked = run(client, "ip", "route", "get", "203.0.113.1", "mark", "51820").stdout
    assert "via 192.0.2.1" in marked and iface_c not in marked, marked
    assert "51820" in run(client, "ip", "-4", "rule").stdout and "51820" in run(client, "ip", "-6", "rule").stdout
    if with_dns:
        resolv = run(client, "cat", "/etc/resolv.conf").stdout
        assert "nameserver 10.77.0.1" in resolv and "search tunnel.test" in resolv, resolv
        assert "192.0.2.53" not in resolv, resolv

    capture = lab.capture(client, client_wire, "udp")
    assert_ping(client, "198.51.100.50")
    assert_ping(client, "2001:db8:100::50")
    nbytes = 3 * 1000 * 1000
    srv, cli = lab.transfer(host, client, "198.51.100.50", nbytes, timeout=120)
    assert srv["sha256"] == cli["sha256"] and srv["bytes"] == nbytes
    packets = capture.stop()
    ruleset = run(server, "nft", "list", "ruleset").stdout
    assert f'iifname "{iface_s}" oifname "{uplink}" masquerade' in ruleset, ruleset
    # on the client's wire there is nothing but WireGuard between it and the server
    assert packets, "no UDP captured on the client's uplink"
    assert all({p.src, p.dst} == {"192.0.2.2", "203.0.113.1"} and 51820 in (p.sport, p.dport) for p in packets), \
        {(p.src, p.sport, p.dst, p.dport) for p in packets}
    assert any(p.wg_type == 4 for p in packets)
    # (tcpdump may miss some packets under load: the byte count comes from the tunnel's own counters)
    _key, _rx, tx = run(client, "wg", "show", iface_c, "transfer").stdout.split()
    assert int(tx) > nbytes

    for ns, iface in ((client, iface_c), (server, iface_s)):
        res = lab.wgpy(ns, "down", iface, timeout=30)
        assert res.returncode == 0, res.stderr
        wait_for(lambda: not ns_pids(ns), 10, what=f"daemon in {ns} to exit")
        assert not link_exists(ns, iface)
        assert not (netlab.UAPI_DIR / f"{iface}.sock").exists()
        assert not (RUN_DIR / f"{iface}.pid").exists()
    after_s, after_c = _client_state(server), _client_state(client)
    for key in before_c:
        assert after_c[key] == before_c[key], f"client: `{key}` differs after down"
        assert after_s[key] == before_s[key], f"server: `{key}` differs after down"
    assert hashlib.sha256(Path("/etc/resolv.conf").read_bytes()).hexdigest() == host_resolv


def test_masquerade_failure_half_way_leaves_nothing(lab, netns):
    """A failure after the Masquerade step (here: PostUp) undoes it: no table, forwarding as before."""
    lab.require_real_wgpy("Masquerade")
    ns = netns()
    sysctl(ns, "net.ipv4.ip_forward", 0)
    nft_load(ns, HOST_RULESET)
    before = _client_state(ns)
    keys = gen_keypair()
    iface = unique_iface()
    conf = render_config(keys.private, None, [PeerSpec(gen_keypair().public, ("10.9.0.2/32",))],
                         addresses=["10.9.0.1/24"], extra_interface_lines=["Masquerade = eth9", "PostUp = false"])
    res = lab.try_wgpy_up(ns, write_config(lab.tmp, iface, conf))
    assert res.returncode != 0 and "PostUp" in res.stderr, res.stderr
    assert not link_exists(ns, iface)
    assert _client_state(ns) == before


# ---------------------------------------------------------------------------------------------------------------
# Without root: the daemon attached to a persistent TUN that root made for user nobody
# ---------------------------------------------------------------------------------------------------------------

def test_user_attaches_to_persistent_tun(lab, two_ns):
    lab.require_real_wgpy("running wgpy without root")
    _require_nobody_can_run_wgpy()
    as_nobody = _tun_node_for_nobody(lab)   # the attaching daemon opens /dev/net/tun as nobody
    ns_root, ns_user = two_ns.ns
    k_root, k_user = gen_keypair(), gen_keypair()
    peer = lab.node(netlab.WGPY_KIND, ns_root, keys=k_root, listen_port=51820, addresses=["10.99.0.1/24"],
                    peers=[PeerSpec(k_user.public, ("10.99.0.2/32",), endpoint="10.201.0.2:51821")])
    iface = unique_iface()
    user_dir = Path(f"/tmp/wgpy-{NOBODY}")
    for suffix in ("sock", "pid", "log"):
        lab.defer(f"rm {iface}.{suffix}", lambda p=user_dir / f"{iface}.{suffix}": p.unlink(missing_ok=True))
    conf = _wgpy_config(lab, iface, render_config(
        k_user.private, 51821, [PeerSpec(k_root.public, ("10.99.0.1/32", "10.98.0.0/24"),
                                         endpoint="10.201.0.1:51820")],
        addresses=["10.99.0.2/24"], mtu=1400), readable_by_nobody=True)

    # no TUN yet: the error names the capability and how root prepares one
    res = lab.try_wgpy_up(ns_user, conf, prefix=SETPRIV_NOBODY)
    assert res.returncode != 0 and "CAP_NET_ADMIN" in res.stderr and "ip tuntap add" in res.stderr, res.stderr
    # a TUN of nobody's, but not configured: the error lists exactly what root still has to do
    run(ns_user, "ip", "tuntap", "add", "dev", iface, "mode", "tun", "user", str(NOBODY))
    res = lab.try_wgpy_up(ns_user, conf, prefix=SETPRIV_NOBODY)
    assert res.returncode != 0, res.stderr
    for cmd in (f"ip address add 10.99.0.2/24 dev {iface}", f"ip link set {iface} mtu 1400",
                f"ip link set {iface} up", f"ip route add 10.98.0.0/24 dev {iface}"):
        assert cmd in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not ns_pids(ns_user)
    for cmd in (f"ip address add 10.99.0.2/24 dev {iface}", f"ip link set {iface} mtu 1400",
                f"ip link set {iface} up", f"ip route add 10.98.0.0/24 dev {iface}"):
        run(ns_user, *cmd.split())

    # in the foreground, as a service manager would run it for the user (the background mode re-executes
    # sys.executable, which here lives under root's 0700 home: nobody could not start it)
    daemon = lab.popen(ns_user, *as_nobody, netlab.WGPY, "up", "--foreground", conf, name="wgpy-nobody")
    lab.ifaces[iface] = ns_user
    wait_for(lambda: (user_dir / f"{iface}.sock").exists() or not daemon.alive(), 20, what="the daemon to start")
    assert daemon.alive(), daemon.describe()
    # every process of the interface runs as nobody, without any capability
    pid = _daemon_pid(ns_user)
    _assert_runs_as_nobody(pid, 0)
    assert all(proc_status(p)["Uid"].split()[0] == str(NOBODY) for p in ns_pids(ns_user))
    assert (user_dir / f"{iface}.sock").exists() and not (netlab.UAPI_DIR / f"{iface}.sock").exists()

    assert_ping(ns_user, "10.99.0.1")
    assert_ping(ns_root, "10.99.0.2")
    res = run(ns_user, *SETPRIV_NOBODY, netlab.WGPY, "show", iface, check=False)
    assert res.returncode == 0 and k_root.public in res.stdout and "latest handshake" in res.stdout, res.stderr
    assert peer.handshake_with(k_user.public) > 0

    res = run(ns_user, *SETPRIV_NOBODY, netlab.WGPY, "down", iface, check=False, timeout=30)
    assert res.returncode == 0, res.stderr
    assert daemon.wait(10) == 0, daemon.describe()
    assert not ns_pids(ns_user)
    assert not (user_dir / f"{iface}.sock").exists() and not (user_dir / f"{iface}.pid").exists()
    # the TUN is root's: it stays, with what root configured
    assert "10.99.0.2/24" in run(ns_user, "ip", "-o", "addr", "show", "dev", iface).stdout


# ---------------------------------------------------------------------------------------------------------------
# NAT'd client (seed 003): the server learns the client's address; keepalives hold the NAT mapping open
# ---------------------------------------------------------------------------------------------------------------

UDP_TIMEOUT = 2   # seconds a NAT mapping lives without traffic, in the NAT router only


def test_natd_client_reachable_with_keepalive(lab):
    """
      c1 (keepalive 1 s) 192.168.7.2 ─┐
                                       br0 192.168.7.1  nat  203.0.113.2 ─── 203.0.113.1 server (no Endpoint)
      c2 (no keepalive)  192.168.7.3 ─┘
    """
    nat, server = lab.netns(), lab.netns()
    wan, _ = lab.veth(nat, server, "203.0.113.2/24", "203.0.113.1/24")
    add_bridge(nat, "br0", "192.168.7.1/24")
    c1 = lan_host(lab, nat, "br0", "192.168.7.2/24", "192.168.7.1")
    c2 = lan_host(lab, nat, "br0", "192.168.7.3/24", "192.168.7.1")
    nat_router(nat, wan)
    for key in ("net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream"):
        sysctl(nat, key, UDP_TIMEOUT)

    ks, k1, k2 = gen_keypair(), gen_keypair(), gen_keypair()
    iface_s = unique_iface()
    lab.wgpy_up(server, write_config(lab.tmp, iface_s, render_config(
        ks.private, 51820, [PeerSpec(k1.public, ("10.66.0.2/32",)), PeerSpec(k2.public, ("10.66.0.3/32",))],
        addresses=["10.66.0.1/24"])))
    for ns, keys, ip, keepalive in ((c1, k1, "10.66.0.2", 1), (c2, k2, "10.66.0.3", None)):
        iface = unique_iface()
        lab.wgpy_up(ns, write_config(lab.tmp, iface, render_config(
            keys.private, None, [PeerSpec(ks.public, ("10.66.0.0/24",), endpoint="203.0.113.1:51820",
                                          persistent_keepalive=keepalive)], addresses=[f"{ip}/24"])))
        assert_ping(ns, "10.66.0.1")
    peers = netlab.wg_dump(server, iface_s)["peers"]
    assert peers[k1.public]["endpoint"].startswith("203.0.113.2:"), peers
    assert peers[k2.public]["endpoint"].startswith("203.0.113.2:"), peers

    # idle for twice the NAT timeout (and well inside the 10 s after which c2 would send a passive keepalive)
    time.sleep(2 * UDP_TIMEOUT + 0.5)
    # without keepalives the mapping is gone: the server cannot reach c2 any more ...
    res = run(server, "ping", "-c", "2", "-i", "0.2", "-W", "1", "10.66.0.3", check=False, timeout=15)
    assert res.returncode != 0, f"c2 still reachable: the NAT timeout did not apply\n{res.stdout}"
    # ... while c1's keepalives kept its mapping: the server reaches it, no packet from c1 needed
    assert_ping(server, "10.66.0.2", attempts=1)
    # and c2 is reachable again once it has sent something itself
    assert_ping(c2, "10.66.0.1")
    assert_ping(server, "10.66.0.3")


# ---------------------------------------------------------------------------------------------------------------
# DNS through resolvconf, when it is installed: Debian's openresolv, unpacked into the test's own directory
# ---------------------------------------------------------------------------------------------------------------

def _sandboxed_openresolv(lab, resolv_conf: Path) -> Path:
    """The real openresolv scripts with every path pointed into the test's directory, writing `resolv_conf`.
    Returns the directory to put first in PATH. Skips when the package cannot be fetched."""
    base = lab.tmp / "openresolv"
    base.mkdir()
    dl = subprocess.run(["apt-get", "download", "openresolv"], cwd=base, capture_output=True, text=True,
                        timeout=120)
    debs = list(base.glob("openresolv_*.deb"))
    if dl.returncode != 0 or not debs:
        pytest.skip(f"openresolv could not be fetched with apt-get download: {dl.stderr.strip()[-300:]}")
    run(None, "dpkg", "-x", debs[0], base / "pkg")
    for d in ("bin", "lib", "etc", "run"):
        (base / d).mkdir()

    def relocate(text: str) -> str:
        return (text.replace("SYSCONFDIR=/etc", f"SYSCONFDIR={base}/etc")
                .replace("LIBEXECDIR=/lib/resolvconf", f"LIBEXECDIR={base}/lib")
                .replace("VARDIR=/run/resolvconf", f"VARDIR={base}/run"))
    script = base / "bin" / "resolvconf"
    script.write_text(relocate((base / "pkg/sbin/resolvconf").read_text()))
    (base / "lib" / "libc").write_text(relocate((base / "pkg/lib/resolvconf/libc").read_text()))
    for f in (script, base / "lib" / "libc"):
        f.chmod(0o755)
    # resolv_conf: the namespace's own file (its backup lands next to it); nothing to restart
    (base / "etc" / "resolvconf.conf").write_text(
        f"resolv_conf={resolv_conf}\nlist_resolv=\"{script} -l\"\nlibc_restart=true\n")
    assert f"{base}" in script.read_text() and "/run/resolvconf" not in script.read_text()
    return base / "bin"


def test_dns_through_resolvconf_is_undone(lab, netns):
    lab.require_real_wgpy("DNS")
    ns = netns()
    netns_etc = Path("/etc/netns") / ns
    netns_etc.mkdir(parents=True)
    lab.defer(f"rm -r {netns_etc}", lambda: shutil.rmtree(netns_etc, ignore_errors=True))
    original = "# the namespace's own resolver\nnameserver 192.0.2.53\nsearch lan.test\n"
    (netns_etc / "resolv.conf").write_text(original)
    bindir = _sandboxed_openresolv(lab, netns_etc / "resolv.conf")
    host_resolv = Path("/etc/resolv.conf").read_bytes()

    keys = gen_keypair()
    iface = unique_iface()
    conf = write_config(lab.tmp, iface, render_config(
        keys.private, None, [PeerSpec(gen_keypair().public, ("10.55.0.2/32",))], addresses=["10.55.0.1/24"],
        extra_interface_lines=["DNS = 10.55.0.53, fd55::53, corp.test"]))
    path_env = f"PATH={bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    res = lab.try_wgpy_up(ns, conf, prefix=["env", path_env])
    assert res.returncode == 0, res.stderr
    seen = run(ns, "cat", "/etc/resolv.conf").stdout
    assert "# Generated by resolvconf" in seen, seen
    assert "nameserver 10.55.0.53" in seen and "nameserver fd55::53" in seen and "corp.test" in seen, seen
    assert "192.0.2.53" not in seen, seen   # -x: the tunnel's servers only, as wg-quick asks
    assert (bindir.parent / "run" / "interfaces" / f"tun.{iface}").exists()

    assert lab.wgpy(ns, "down", iface, timeout=30).returncode == 0
    wait_for(lambda: not ns_pids(ns), 10, what="the daemon to exit")
    assert run(ns, "cat", "/etc/resolv.conf").stdout == original
    assert not (bindir.parent / "run" / "interfaces" / f"tun.{iface}").exists()
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv
