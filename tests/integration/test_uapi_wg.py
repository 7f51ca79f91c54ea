"""The real `wg` / `wg-quick` tools driving wgpyd through WireGuard's cross-platform userspace API.

    WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd wg-quick up ./IFACE.conf

wgpyd runs in one namespace, the reference peer (wireguard-go) in another; every interface name is unique and is
the config file's stem. Every wait is bounded; the whole file runs in well under 90 seconds.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (UAPI_DIR, Keypair, PeerSpec, assert_ping, gen_keypair, gen_psk, link_exists, ns_pids,
                                 parse_wg_dump, parse_wg_show, pid_alive, random_public_key, render_config, run,
                                 unique_iface, wait_for, write_config)

pytestmark = pytest.mark.netns

VENV_BIN = Path(sys.executable).parent
# the implementation wg-quick falls back to (wireguard-go itself in the harness self-check mode)
USERSPACE = "wireguard-go" if netlab.STANDIN == netlab.WGGO_KIND else "wgpyd"
QUICK_ENV = {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
             "WG_QUICK_USERSPACE_IMPLEMENTATION": USERSPACE}

A_IP, B_IP = "10.99.0.1", "10.99.0.2"
A_PORT, B_PORT = 51820, 51821


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------

def sock_path(iface: str) -> Path:
    return UAPI_DIR / f"{iface}.sock"


def live_pids(ns: str) -> set[int]:
    return {p for p in ns_pids(ns) if pid_alive(p)}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def quick_up(lab, ns: str, conf: Path, impl: str | None = None) -> str:
    """`wg-quick up CONF` in `ns` with wgpyd (or `impl`) as the userspace implementation; returns the iface."""
    iface = conf.stem
    lab.ifaces[iface] = ns          # the lab unlinks a leftover socket at teardown

    def remove() -> None:
        if link_exists(ns, iface):
            run(ns, "ip", "link", "del", iface, timeout=10, check=False)
    lab.defer(f"ip link del {iface}", remove)
    env = dict(QUICK_ENV)
    if impl:
        env["WG_QUICK_USERSPACE_IMPLEMENTATION"] = impl
    run(ns, "wg-quick", "up", conf, env=env, timeout=30)
    assert link_exists(ns, iface)
    assert sock_path(iface).exists()
    return iface


def quick_down(ns: str, conf: Path) -> None:
    run(ns, "wg-quick", "down", conf, env=QUICK_ENV, timeout=30)


def wg(ns: str, *args) -> str:
    return run(ns, "wg", *args, timeout=10).stdout


def ping_fails(ns: str, addr: str) -> bool:
    """True when not a single echo reply comes back (2 probes, ~1.5 s)."""
    return run(ns, "ping", "-4", "-c", "2", "-i", "0.3", "-W", "1", addr, timeout=10, check=False).returncode != 0


def uapi_raw(iface: str, payload: bytes, timeout: float = 5.0, until_eof: bool = False) -> bytes:
    """Send raw bytes on the UAPI socket and read until the blank line that ends a reply (or until EOF)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path(iface)))
        s.sendall(payload)
        buf = b""
        while until_eof or not buf.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf
    finally:
        s.close()


def hexkey(b64: str) -> str:
    return base64.b64decode(b64).hex()


def blocks(text: str) -> list[str]:
    """Blank-line separated blocks, each stripped."""
    return [b.strip() for b in text.strip().split("\n\n") if b.strip()]


def canonical_conf(text: str) -> tuple[dict, dict]:
    """A wg config (showconf / `wg-quick strip` output) -> (interface, {public key: peer}) with normalised values."""
    sections: list[tuple[str, dict]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append((line.lower(), {}))
            continue
        key, _, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        cur = sections[-1][1]
        if key == "allowedips":
            cur.setdefault(key, []).extend(v.strip() for v in value.split(",") if v.strip())
        elif key == "fwmark":
            if value not in ("off", "0"):
                cur[key] = int(value, 0)
        elif key == "persistentkeepalive":
            if value not in ("off", "0"):
                cur[key] = int(value)
        else:
            cur[key] = value
    iface = next(s for n, s in sections if n == "[interface]")
    peers = {}
    for name, s in sections:
        if name == "[peer]":
            s["allowedips"] = sorted((ipaddress.ip_network(a) for a in s.get("allowedips", [])),
                                     key=lambda n: (n.version, n))
            peers[s["publickey"]] = s
    return iface, peers


@dataclass
class Pair:
    """wgpyd (via wg-quick) in ns_a, wireguard-go in ns_b, peered over the veth."""
    ns_a: str
    ns_b: str
    a: Keypair
    b: Keypair
    iface_a: str
    iface_b: str
    conf_a: Path

    def peer_b(self, **kw) -> PeerSpec:
        return PeerSpec(self.b.public, (f"{B_IP}/32",), endpoint=f"10.201.0.2:{B_PORT}", **kw)


def start_pair(lab, topo, *, a_knows_b: bool = True, extra_peers: tuple[PeerSpec, ...] = ()) -> Pair:
    a, b = gen_keypair(), gen_keypair()
    iface_a, iface_b = unique_iface(), unique_iface()
    pair = Pair(topo.ns[0], topo.ns[1], a, b, iface_a, iface_b, Path())
    peers = ([pair.peer_b()] if a_knows_b else []) + list(extra_peers)
    pair.conf_a = write_config(lab.tmp, iface_a, render_config(a.private, A_PORT, peers, addresses=[f"{A_IP}/24"]))
    lab.wireguard_go_up(topo.ns[1], iface_b, b.private, B_PORT,
                        [PeerSpec(a.public, (f"{A_IP}/32",), endpoint=f"10.201.0.1:{A_PORT}")], f"{B_IP}/24")
    quick_up(lab, topo.ns[0], pair.conf_a)
    return pair


def the_daemon(ns: str) -> int:
    pids = live_pids(ns)
    assert len(pids) == 1, {p: cmdline(p) for p in pids}
    pid = pids.pop()
    assert USERSPACE in cmdline(pid)
    return pid


# --------------------------------------------------------------------------------------------------------------
# 1. wg-quick up / down
# --------------------------------------------------------------------------------------------------------------

def test_wg_quick_up_ping_down(lab, two_ns):
    p = start_pair(lab, two_ns)
    pid = the_daemon(p.ns_a)
    addrs = run(p.ns_a, "ip", "-4", "-br", "addr", "show", "dev", p.iface_a, timeout=10).stdout
    assert f"{A_IP}/24" in addrs
    assert_ping(p.ns_a, B_IP)
    assert_ping(p.ns_b, A_IP)
    assert wg(p.ns_a, "show", p.iface_a, "latest-handshakes").split()[1] != "0"

    quick_down(p.ns_a, p.conf_a)
    assert not link_exists(p.ns_a, p.iface_a)
    wait_for(lambda: not pid_alive(pid) and not live_pids(p.ns_a), 5, what=f"wgpyd to exit from {p.ns_a}")
    wait_for(lambda: not sock_path(p.iface_a).exists(), 3, what=f"{sock_path(p.iface_a)} to go")
    assert A_IP not in run(p.ns_a, "ip", "-4", "addr", timeout=10).stdout
    assert p.iface_a not in run(p.ns_a, "ip", "route", timeout=10).stdout
    # and the interface name can be brought up again at once
    quick_up(lab, p.ns_a, p.conf_a)
    assert_ping(p.ns_a, B_IP)


# --------------------------------------------------------------------------------------------------------------
# 2. wg show / showconf / dump: same as wireguard-go for the same config
# --------------------------------------------------------------------------------------------------------------

VOLATILE_SHOW = ("latest handshake:", "transfer:")


def _show_blocks(text: str, iface: str) -> list[str]:
    out = []
    for block in blocks(text.replace(iface, "IFACE")):
        out.append("\n".join(ln for ln in block.splitlines() if not ln.strip().startswith(VOLATILE_SHOW)))
    return [out[0]] + sorted(out[1:])


def _dump_stable(text: str) -> list[list[str]]:
    lines = [ln.split("\t") for ln in text.strip().splitlines()]
    # peer columns: public key, psk, endpoint, allowed ips, [handshake, rx, tx], keepalive
    return [lines[0]] + sorted([f[:4] + f[7:] for f in lines[1:]])


def _both_up(lab, text: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """The same wg-quick config brought up by wgpyd and by wireguard-go, each in its own namespace."""
    ns_py, ns_go = lab.netns(), lab.netns()
    ifaces = unique_iface(), unique_iface()
    quick_up(lab, ns_py, write_config(lab.tmp, ifaces[0], text))
    quick_up(lab, ns_go, write_config(lab.tmp, ifaces[1], text), impl="wireguard-go")
    return (ns_py, ifaces[0]), (ns_go, ifaces[1])


def test_wg_show_matches_wireguard_go(lab):
    own = gen_keypair()
    peers = [
        PeerSpec(random_public_key(), ("10.98.0.2/32", "fd98::2/128"), endpoint="192.0.2.10:51820",
                 preshared_key=gen_psk(), persistent_keepalive=25),
        PeerSpec(random_public_key(), ("10.98.1.0/24",), endpoint="[2001:db8::5]:4500"),
        PeerSpec(random_public_key(), ("10.98.2.0/24", "172.16.0.0/12", "fd98:1::/64")),
        PeerSpec(random_public_key(), ("10.98.3.3/32",), preshared_key=gen_psk(), persistent_keepalive=1),
    ]
    text = render_config(own.private, 51999, peers, addresses=["10.98.0.1/24"],
                         extra_interface_lines=["FwMark = 0x1234"])
    (ns_py, py), (ns_go, go) = _both_up(lab, text)

    conf_py, conf_go = wg(ns_py, "showconf", py), wg(ns_go, "showconf", go)
    assert blocks(conf_py)[0] == blocks(conf_go)[0]
    assert sorted(blocks(conf_py)[1:]) == sorted(blocks(conf_go)[1:])
    assert len(blocks(conf_py)) == 5

    dump_py, dump_go = wg(ns_py, "show", py, "dump"), wg(ns_go, "show", go, "dump")
    assert _dump_stable(dump_py) == _dump_stable(dump_go)
    head = dump_py.splitlines()[0].split("\t")
    assert head == [own.private, own.public, "51999", "0x1234"]
    # (netlab.parse_wg_dump reads the fwmark column as decimal; wg prints it in hex, so drop it there)
    d = parse_wg_dump("\t".join(head[:3] + ["off"]) + "\n" + dump_py.split("\n", 1)[1])
    assert d["peers"][peers[1].public_key]["endpoint"] == "[2001:db8::5]:4500"
    assert d["peers"][peers[0].public_key]["preshared_key"] == peers[0].preshared_key

    assert _show_blocks(wg(ns_py, "show", py), py) == _show_blocks(wg(ns_go, "show", go), go)
    for field in ("public-key", "private-key", "listen-port", "fwmark", "peers", "preshared-keys", "endpoints",
                  "allowed-ips", "persistent-keepalive"):
        assert sorted(wg(ns_py, "show", py, field).splitlines()) == \
            sorted(wg(ns_go, "show", go, field).splitlines()), field


def test_showconf_allowed_ips_order_matches_wireguard_go(lab):
    lab.require_real_wgpy()
    text = render_config(gen_keypair().private, 51998,
                         [PeerSpec(random_public_key(), ("fd98::/64", "10.98.0.2/32", "10.98.0.0/24"))])
    (ns_py, py), (ns_go, go) = _both_up(lab, text)
    assert wg(ns_py, "showconf", py) == wg(ns_go, "showconf", go)


# --------------------------------------------------------------------------------------------------------------
# 3. live `wg set` while traffic flows
# --------------------------------------------------------------------------------------------------------------

def test_live_wg_set(lab, two_ns):
    dummy = PeerSpec(random_public_key(), ("10.99.0.3/32",), endpoint="10.201.0.3:51820")
    p = start_pair(lab, two_ns, a_knows_b=False, extra_peers=(dummy,))
    pid = the_daemon(p.ns_a)
    assert ping_fails(p.ns_a, B_IP)                     # wgpyd does not know B yet

    # add the peer
    run(p.ns_a, "wg", "set", p.iface_a, "peer", p.b.public, "endpoint", f"10.201.0.2:{B_PORT}",
        "allowed-ips", f"{B_IP}/32", timeout=10)
    assert_ping(p.ns_a, B_IP)
    assert_ping(p.ns_b, A_IP)

    # take B's address away from it (replace its allowed IPs): no route out, and B's packets are not accepted
    run(p.ns_a, "wg", "set", p.iface_a, "peer", p.b.public, "allowed-ips", "10.99.0.200/32", timeout=10)
    assert ping_fails(p.ns_a, B_IP)
    assert ping_fails(p.ns_b, A_IP)
    # give it back
    run(p.ns_a, "wg", "set", p.iface_a, "peer", p.b.public, "allowed-ips", f"10.99.0.200/32,{B_IP}/32",
        timeout=10)
    assert_ping(p.ns_a, B_IP)
    # remove just that prefix with the UAPI's '-' form, then add it again (incremental, no replace);
    # (the Debian wireguard-go, 0.0.20220316, predates the '-' form, hence not in the self-check mode)
    if lab.wgpy_is_real:
        _remove_and_readd_prefix(p)

    # remove the peer: traffic stops, the other peer is untouched
    run(p.ns_a, "wg", "set", p.iface_a, "peer", p.b.public, "remove", timeout=10)
    assert wg(p.ns_a, "show", p.iface_a, "peers").split() == [dummy.public_key]
    assert ping_fails(p.ns_a, B_IP)
    assert ping_fails(p.ns_b, A_IP)
    assert pid_alive(pid) and the_daemon(p.ns_a) == pid    # all of it live, same process


def _remove_and_readd_prefix(p: Pair) -> None:
    assert uapi_raw(p.iface_a, f"set=1\npublic_key={hexkey(p.b.public)}\nallowed_ip=-{B_IP}/32\n\n".encode()) \
        == b"errno=0\n\n"
    shown = wg(p.ns_a, "show", p.iface_a, "allowed-ips")
    assert "10.99.0.200/32" in shown and f"{B_IP}/32" not in shown
    assert ping_fails(p.ns_a, B_IP)
    assert uapi_raw(p.iface_a, f"set=1\npublic_key={hexkey(p.b.public)}\nallowed_ip={B_IP}/32\n\n".encode()) \
        == b"errno=0\n\n"
    assert_ping(p.ns_a, B_IP)


# --------------------------------------------------------------------------------------------------------------
# 4. wg syncconf round trip
# --------------------------------------------------------------------------------------------------------------

def test_syncconf_round_trip(lab, two_ns):
    dropped = PeerSpec(random_public_key(), ("10.99.0.3/32",), endpoint="10.201.0.3:51820")
    p = start_pair(lab, two_ns, extra_peers=(dropped,))
    assert_ping(p.ns_a, B_IP)
    hs_before = netlab.latest_handshake(p.ns_a, p.iface_a, p.b.public)
    assert hs_before > 0

    added = PeerSpec(random_public_key(), ("fd99::4/128", "10.99.0.4/32"), endpoint="[fd00::4]:51820",
                     preshared_key=gen_psk(), persistent_keepalive=25)
    new_text = render_config(p.a.private, A_PORT,
                             [PeerSpec(p.b.public, (f"{B_IP}/32", "10.99.5.0/24"), endpoint=f"10.201.0.2:{B_PORT}"),
                              added],
                             addresses=[f"{A_IP}/24"])
    write_config(lab.tmp, p.iface_a, new_text)
    run(p.ns_a, "bash", "-c", f"wg syncconf {p.iface_a} <(wg-quick strip {p.conf_a})", env=QUICK_ENV, timeout=15)

    stripped = run(None, "wg-quick", "strip", p.conf_a, timeout=10).stdout
    shown = wg(p.ns_a, "showconf", p.iface_a)
    assert canonical_conf(shown) == canonical_conf(stripped)
    iface, peers = canonical_conf(shown)
    assert set(peers) == {p.b.public, added.public_key}
    assert peers[added.public_key]["presharedkey"] == added.preshared_key
    assert peers[added.public_key]["persistentkeepalive"] == 25
    # the unchanged peer kept its session: still talking, no new handshake needed
    assert netlab.latest_handshake(p.ns_a, p.iface_a, p.b.public) == hs_before
    assert_ping(p.ns_a, B_IP)

    # and back again: syncconf to the original config
    write_config(lab.tmp, p.iface_a, render_config(p.a.private, A_PORT, [p.peer_b(), dropped],
                                                   addresses=[f"{A_IP}/24"]))
    run(p.ns_a, "bash", "-c", f"wg syncconf {p.iface_a} <(wg-quick strip {p.conf_a})", env=QUICK_ENV, timeout=15)
    stripped = run(None, "wg-quick", "strip", p.conf_a, timeout=10).stdout
    assert canonical_conf(wg(p.ns_a, "showconf", p.iface_a)) == canonical_conf(stripped)
    assert_ping(p.ns_a, B_IP)


# --------------------------------------------------------------------------------------------------------------
# 5. malformed requests over the real socket
# --------------------------------------------------------------------------------------------------------------

def _single(lab) -> tuple[str, str, Keypair, str]:
    """wgpyd via wg-quick in a namespace of its own, with two peers; (ns, iface, keys, a peer's hex key)."""
    ns = lab.netns()
    keys = gen_keypair()
    iface = unique_iface()
    peer = random_public_key()
    text = render_config(keys.private, A_PORT,
                         [PeerSpec(peer, ("10.99.0.2/32", "fd99::2/128"), endpoint="192.0.2.2:51820",
                                   preshared_key=gen_psk()),
                          PeerSpec(random_public_key(), ("10.99.0.3/32",))],
                         addresses=[f"{A_IP}/24"], extra_interface_lines=["FwMark = 77"])
    quick_up(lab, ns, write_config(lab.tmp, iface, text))
    return ns, iface, keys, hexkey(peer)


def test_malformed_set_over_socket(lab):
    ns, iface, keys, peer = _single(lab)
    pid = the_daemon(ns)
    before = wg(ns, "showconf", iface)
    dump_before = wg(ns, "show", iface, "dump")
    good = f"public_key={peer}"
    bad = {
        "bad hex": ["private_key=" + "zz" * 32],
        "short key": ["private_key=" + "ab" * 31],
        "long public key": ["public_key=" + "ab" * 33],
        "unknown device key": ["frobnicate=1"],
        "unknown peer key": [good, "frobnicate=1"],
        "non-numeric port": ["listen_port=http"],
        "port out of range": ["listen_port=65536"],
        "non-numeric keepalive": [good, "persistent_keepalive_interval=x"],
        "bad CIDR": [good, "allowed_ip=10.0.0.0/33"],
        "bad CIDR v6": [good, "allowed_ip=fd00::/200"],
        "bad endpoint": [good, "endpoint=192.0.2.1"],
        "hostname endpoint": [good, "endpoint=example.invalid:51820"],
        "remove=false": [good, "remove=false"],
        "update_only=no": [good, "update_only=no"],
        "protocol_version=2": [good, "protocol_version=2"],
        "valid first half, then a bad line": [
            f"private_key={os.urandom(32).hex()}", "listen_port=40000", "fwmark=0", "replace_peers=true",
            f"public_key={os.urandom(32).hex()}", "allowed_ip=10.0.0.0/8", "endpoint=192.0.2.9:9",
            good, "remove=true", "allowed_ip=nonsense"],
    }
    for name, lines in bad.items():
        reply = uapi_raw(iface, ("set=1\n" + "".join(ln + "\n" for ln in lines) + "\n").encode())
        assert reply == b"errno=-22\n\n", (name, reply)
    # a line without '=' is a protocol error, as in wireguard-go
    assert uapi_raw(iface, b"set=1\nfwmark=1\nnonsense\n\n") == f"errno={-errno.EPROTO}\n\n".encode()
    # wgpy validates a whole request before applying any of it (wireguard-go applies the lines before the bad
    # one), so nothing of the above may have stuck
    lab.require_real_wgpy("all-or-nothing set requests")

    assert wg(ns, "showconf", iface) == before
    assert _dump_stable(wg(ns, "show", iface, "dump")) == _dump_stable(dump_before)
    assert the_daemon(ns) == pid
    # `wg set` reports the refusal and changes nothing either
    res = run(ns, "wg", "set", iface, "peer", keys.public, "allowed-ips", "10.0.0.0/8", timeout=10, check=False)
    assert res.returncode == 0           # a peer with our own public key is ignored, as by wireguard-go
    assert wg(ns, "showconf", iface) == before
    # still serving ordinary requests, on the same connection too (two requests back to back)
    both = uapi_raw(iface, b"set=1\nfwmark=78\n\nget=1\n\n", until_eof=True).decode()
    assert both.startswith("errno=0\n\nprivate_key="), both
    assert both.endswith("errno=0\n\n") and "fwmark=78\n" in both


@pytest.mark.parametrize("payload", [b"set=1\nlisten_port=\xc2\xb2\n\n",
                                     ("set=1\nfwmark=5\npublic_key=" + "ab" * 31 + "  \n\n").encode()],
                         ids=["superscript-digit", "key-with-spaces"])
def test_regression_malformed_set_kills_daemon(lab, payload):
    lab.require_real_wgpy()
    ns, iface, _keys, _peer = _single(lab)
    pid = the_daemon(ns)
    before = wg(ns, "showconf", iface)
    try:
        reply = uapi_raw(iface, payload, timeout=3)
    except OSError as e:
        reply = repr(e).encode()
    time.sleep(0.3)
    assert (reply, pid_alive(pid), link_exists(ns, iface)) == (b"errno=-22\n\n", True, True)
    assert wg(ns, "showconf", iface) == before


# --------------------------------------------------------------------------------------------------------------
# 6. socket permissions; other users are refused
# --------------------------------------------------------------------------------------------------------------

NOBODY_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("CONNECT-FAILED", e.errno)
    sys.exit(0)
try:
    s.sendall(sys.argv[2].encode().decode("unicode_escape").encode())
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    print("REPLY", repr(buf))
except OSError as e:
    print("IO-FAILED", e.errno)
"""


def _as_nobody(ns: str, path: Path, request: str) -> str:
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    return run(ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", python, "-c",
               NOBODY_CLIENT, str(path), request, timeout=15).stdout.strip()


def test_socket_permissions_and_other_users(lab):
    ns, iface, _keys, _peer = _single(lab)
    path = sock_path(iface)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert st.st_uid == 0 and st.st_gid == 0
    mode = stat.S_IMODE(st.st_mode)
    assert mode & 0o077 == 0, oct(mode)              # nothing for group or others (wireguard-go: 0700)
    assert mode & 0o600 == 0o600, oct(mode)
    assert not stat.S_IMODE(os.stat(UAPI_DIR).st_mode) & 0o022
    before = wg(ns, "showconf", iface)

    out = _as_nobody(ns, path, r"get=1\n\n")
    assert out == f"CONNECT-FAILED {errno.EACCES}", out
    assert "private_key" not in out
    # root is served
    assert "private_key=" in uapi_raw(iface, b"get=1\n\n").decode()

    # even if the file mode were loosened, the daemon itself refuses other users (SO_PEERCRED): no reply at all
    lab.require_real_wgpy("SO_PEERCRED check of wgpyd")
    dir_mode = stat.S_IMODE(os.stat(UAPI_DIR).st_mode)
    os.chmod(UAPI_DIR, 0o755)      # wireguard-go made it under this run's umask, maybe 0700: let nobody reach
    lab.defer(f"chmod {dir_mode:o} {UAPI_DIR}", lambda: os.chmod(UAPI_DIR, dir_mode))
    os.chmod(path, 0o666)
    try:
        out = _as_nobody(ns, path, r"get=1\n\n")
        assert out in ("REPLY b''", f"IO-FAILED {errno.ECONNRESET}", f"IO-FAILED {errno.EPIPE}"), out
        out = _as_nobody(ns, path, r"set=1\nreplace_peers=true\nlisten_port=1\n\n")
        assert "errno=0" not in out and "REPLY b'errno" not in out, out
    finally:
        os.chmod(path, mode)
    assert wg(ns, "showconf", iface) == before
    assert "private_key=" in uapi_raw(iface, b"get=1\n\n").decode()


# --------------------------------------------------------------------------------------------------------------
# 7. wg set listen-port moves the UDP sockets
# --------------------------------------------------------------------------------------------------------------

def udp_ports(ns: str) -> set[int]:
    ports = set()
    for line in run(ns, "ss", "-ulnH", timeout=10).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            ports.add(int(fields[3].rsplit(":", 1)[1]))
    return ports


def udp_sockets_on(ns: str, port: int) -> list[str]:
    return [f.split()[3] for f in run(ns, "ss", "-ulnH", timeout=10).stdout.splitlines()
            if f.split() and f.split()[3].endswith(f":{port}")]


def test_listen_port_change(lab, two_ns):
    p = start_pair(lab, two_ns)
    assert_ping(p.ns_a, B_IP)
    assert udp_ports(p.ns_a) == {A_PORT}
    new_port = 51830

    run(p.ns_a, "wg", "set", p.iface_a, "listen-port", new_port, timeout=10)
    assert udp_ports(p.ns_a) == {new_port}
    if lab.wgpy_is_real:
        assert len(udp_sockets_on(p.ns_a, new_port)) == 4      # IPv4 and IPv6, each a steered pair (io/udp.py)
    assert wg(p.ns_a, "show", p.iface_a, "listen-port").strip() == str(new_port)

    # the peer learns the new endpoint from configuration, and the tunnel carries on (B speaks first)
    run(p.ns_b, "wg", "set", p.iface_b, "peer", p.a.public, "endpoint", f"10.201.0.1:{new_port}", timeout=10)
    assert_ping(p.ns_b, A_IP)
    assert netlab.wg_dump(p.ns_a, p.iface_a)["peers"][p.b.public]["endpoint"] == f"10.201.0.2:{B_PORT}"

    # a port that is taken: `wg set` fails with "Address in use", nothing moves, traffic still flows
    # (wireguard-go is left without any port then; wgpy binds the new port before closing the old one)
    lab.require_real_wgpy("keeping the old port when the new one is in use")
    holder = lab.popen(p.ns_a, sys.executable, "-c",
                       "import socket, time\n"
                       "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                       "s.bind(('0.0.0.0', 51840))\n"
                       "print('bound', flush=True)\n"
                       "time.sleep(60)\n", name="udp-holder")
    wait_for(lambda: "bound" in holder.stdout() or not holder.alive(), 10, what="UDP holder to bind")
    res = run(p.ns_a, "wg", "set", p.iface_a, "listen-port", "51840", timeout=10, check=False)
    assert res.returncode != 0
    assert "in use" in res.stderr.lower(), res.stderr
    assert wg(p.ns_a, "show", p.iface_a, "listen-port").strip() == str(new_port)
    assert udp_ports(p.ns_a) == {new_port, 51840}
    assert_ping(p.ns_b, A_IP)
    holder.stop()


# --------------------------------------------------------------------------------------------------------------
# 8. `wgpy show` on an interface wg-quick made
# --------------------------------------------------------------------------------------------------------------

def test_wgpy_show_on_wg_quick_interface(lab, two_ns):
    p = start_pair(lab, two_ns)
    assert_ping(p.ns_a, B_IP)

    res = lab.wgpy(p.ns_a, "show", p.iface_a, check=True)
    shown = parse_wg_show(res.stdout)
    assert shown["interface"] == p.iface_a
    assert shown["public key"] == p.a.public
    assert shown["private key"] == "(hidden)"
    assert shown["listening port"] == str(A_PORT)
    peer = shown["peers"][p.b.public]
    assert peer["endpoint"] == f"10.201.0.2:{B_PORT}"
    assert peer["allowed ips"] == f"{B_IP}/32"
    assert "latest handshake" in peer
    assert peer["rx"] > 0 and peer["tx"] > 0

    # the same answers as `wg show`, because it is the same socket and the same request
    wg_shown = parse_wg_show(wg(p.ns_a, "show", p.iface_a))
    for key in ("interface", "public key", "private key", "listening port"):
        assert shown[key] == wg_shown[key], key
    for key in ("endpoint", "allowed ips"):
        assert peer[key] == wg_shown["peers"][p.b.public][key], key
    dump_wgpy = lab.wgpy(p.ns_a, "show", p.iface_a, "dump", check=True).stdout
    assert _dump_stable(dump_wgpy) == _dump_stable(wg(p.ns_a, "show", p.iface_a, "dump"))
    for field in ("public-key", "listen-port", "peers", "endpoints", "allowed-ips"):
        assert lab.wgpy(p.ns_a, "show", p.iface_a, field, check=True).stdout == \
            wg(p.ns_a, "show", p.iface_a, field), field

    # a change made with `wg set` is what `wgpy show` reports next
    run(p.ns_a, "wg", "set", p.iface_a, "peer", p.b.public, "persistent-keepalive", "15", timeout=10)
    assert parse_wg_show(lab.wgpy(p.ns_a, "show", p.iface_a, check=True).stdout)["peers"][p.b.public][
        "persistent keepalive"] == "every 15 seconds"


# --------------------------------------------------------------------------------------------------------------
# 9. a stale socket from a crashed daemon is replaced; a live one is not stolen
# --------------------------------------------------------------------------------------------------------------

def test_stale_socket_replaced_live_socket_refused(lab):
    lab.require_real_wgpy("wgpyd's socket handling")
    ns = lab.netns()
    iface = unique_iface()
    path = sock_path(iface)
    lab.defer(f"remove {path}", lambda: path.unlink(missing_ok=True))
    UAPI_DIR.mkdir(parents=True, exist_ok=True)
    # a crashed daemon leaves its socket file behind: nobody listens on it any more
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert path.exists()
    run(ns, VENV_BIN / "wgpyd", iface, timeout=20, env=QUICK_ENV)
    lab.defer(f"delete {iface}", lambda: run(ns, "ip", "link", "del", iface, check=False, timeout=10))
    wait_for(lambda: link_exists(ns, iface), 5, what=f"{iface} to appear")
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert wg(ns, "show", iface, "listen-port").strip().isdigit()      # the new daemon answers on it
    # a second daemon for a name whose socket is live (here: from another namespace) must not take it over
    ns2 = lab.netns()
    r = run(ns2, VENV_BIN / "wgpyd", "-f", iface, timeout=20, check=False, env=QUICK_ENV)
    assert r.returncode != 0 and "in use" in r.stderr, r
    assert wg(ns, "show", iface, "listen-port").strip().isdigit()      # the first one is untouched
