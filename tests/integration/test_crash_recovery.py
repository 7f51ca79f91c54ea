"""Crash recovery, signals during `up`, and what root trusts (issue 21 items 4, 5 and 6), with the real `wgpy`
commands in namespaces.

* A daemon killed with SIGKILL: `wgpy down` puts back everything it changed (policy rules, the Masquerade nft
  table, forwarding and src_valid_mark, resolv.conf) and removes its files; `up` after such a crash restores the
  original first, so a later `down` still gets the original resolv.conf and sysctls back.
* SIGTERM (`wgpy down`) while `up` runs a slow PreUp or PostUp: up fails, nothing is left behind.
* A pid file or socket planted by another user in a directory that user can create (/tmp/wgpy-0) is never
  consulted by root; what a daemon's socket says reaches root's terminal without control characters.

Each namespace test compares `ip rule`, routes, `nft list ruleset`, the forwarding and src_valid_mark sysctls and
the namespace's resolv.conf (/etc/netns/NS/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf: the
host's own file is never touched, and checked) before up and after down.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (PeerSpec, default_route, gen_keypair, link_exists, ns_pids, pid_alive,
                                 read_sysctl, render_config, run, sysctl, unique_iface, wait_for, write_config)

pytestmark = pytest.mark.netns

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
RUN_DIR = netlab.WGPY_RUN_DIR
ORIGINAL_RESOLV = "# the namespace's own resolver\nnameserver 192.0.2.53\nsearch lan.test\n"


@pytest.fixture(autouse=True)
def _real_wgpy_only(lab):
    lab.require_real_wgpy("wgpy's own up/down")


def _state(ns: str) -> dict[str, str]:
    """What `up` may change in `ns`, as text to compare exactly."""
    wait_for(lambda: not run(ns, "ip", "-6", "addr", "show", "tentative").stdout.strip(), 10,
             what=f"IPv6 DAD to finish in {ns}")
    state = {}
    for cmd in (("ip", "-4", "rule"), ("ip", "-6", "rule"), ("ip", "-4", "route", "show", "table", "all"),
                ("ip", "-6", "route", "show", "table", "all"), ("nft", "list", "ruleset"),
                ("sysctl", "-a", "-r", r"forwarding|ip_forward|src_valid_mark"), ("cat", "/etc/resolv.conf")):
        state[" ".join(cmd)] = run(ns, *cmd, timeout=10).stdout
    return state


def _assert_same(before: dict[str, str], after: dict[str, str]) -> None:
    for key in before:
        assert after[key] == before[key], f"`{key}` differs after down:\n{before[key]}\n---\n{after[key]}"


def _gateway(lab, extra: list[str] = ()) -> tuple[str, str, Path]:
    """A namespace behind a router, and the config of an exit gateway with a full tunnel and DNS there:
    everything `up` changes on a host (rules, src_valid_mark, nft, forwarding, resolv.conf)."""
    if shutil.which("resolvconf") is not None:
        pytest.skip("resolvconf is installed: DNS would go through it, not through the namespace's resolv.conf")
    ns, router = lab.netns(), lab.netns()
    uplink, _ = lab.veth(ns, router, "192.0.2.2/24", "192.0.2.1/24")
    default_route(ns, "192.0.2.1")
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.src_valid_mark"):
        sysctl(ns, key, 0)
    netns_etc = Path("/etc/netns") / ns
    netns_etc.mkdir(parents=True)
    lab.defer(f"rm -r {netns_etc}", lambda: shutil.rmtree(netns_etc, ignore_errors=True))
    (netns_etc / "resolv.conf").write_text(ORIGINAL_RESOLV)
    iface = unique_iface()
    text = render_config(gen_keypair().private, 51820,
                         [PeerSpec(gen_keypair().public, ("0.0.0.0/0", "::/0"), endpoint="192.0.2.1:51820")],
                         addresses=["10.66.0.2/24", "fd66::2/64"],
                         extra_interface_lines=[f"Masquerade = {uplink}", "DNS = 10.66.0.1, tunnel.test", *extra])
    return ns, iface, write_config(lab.tmp, iface, text)


def _assert_changed(ns: str, iface: str) -> None:
    """`up` did change what the tests expect it to undo."""
    assert "51820" in run(ns, "ip", "-4", "rule").stdout and "51820" in run(ns, "ip", "-6", "rule").stdout
    assert read_sysctl(ns, "net.ipv4.ip_forward") == "1"
    assert read_sysctl(ns, "net.ipv6.conf.all.forwarding") == "1"
    assert read_sysctl(ns, "net.ipv4.conf.all.src_valid_mark") == "1"
    assert f"wgpy_{iface}" in run(ns, "nft", "list", "tables").stdout
    assert "nameserver 10.66.0.1" in run(ns, "cat", "/etc/resolv.conf").stdout


def _wgpy_pids(ns: str) -> list[int]:
    pids = []
    for p in ns_pids(ns):
        try:
            if b"wgpy" in Path(f"/proc/{p}/cmdline").read_bytes():
                pids.append(p)
        except OSError:
            continue
    return pids


def _daemon(ns: str) -> int:
    pids = _wgpy_pids(ns)
    assert len(pids) == 1, f"expected one wgpy daemon in {ns}, found {pids}"
    return pids[0]


def _sigkill(ns: str) -> int:
    pid = _daemon(ns)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, what=f"daemon {pid} to die")
    return pid


def _no_files_left(iface: str) -> None:
    for path in (netlab.UAPI_DIR / f"{iface}.sock", RUN_DIR / f"{iface}.pid", RUN_DIR / f"{iface}.state",
                 RUN_DIR / f"{iface}.resolv.conf"):
        assert not path.exists(), f"{path} left behind"


# ---- item 4: SIGKILL, then down; up after a crash ----------------------------------------------------------------

def test_down_after_sigkill_undoes_everything(lab):
    host_resolv = hashlib.sha256(Path("/etc/resolv.conf").read_bytes()).hexdigest()
    ns, iface, conf = _gateway(lab)
    before = _state(ns)
    lab.wgpy_up(ns, conf)
    _assert_changed(ns, iface)
    _sigkill(ns)
    assert not link_exists(ns, iface)            # the kernel removed the TUN; the rest is still there
    res = lab.wgpy(ns, "down", iface, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "gone without tearing down" in res.stderr and "Traceback" not in res.stderr, res.stderr
    _assert_same(before, _state(ns))
    assert run(ns, "cat", "/etc/resolv.conf").stdout == ORIGINAL_RESOLV
    _no_files_left(iface)
    again = lab.wgpy(ns, "down", iface)
    assert again.returncode == 1 and "is not up" in again.stderr, again.stderr
    assert hashlib.sha256(Path("/etc/resolv.conf").read_bytes()).hexdigest() == host_resolv


def test_up_after_a_crash_keeps_the_original_resolv_conf_and_sysctls(lab):
    """up, SIGKILL, up, down: the second up restores what the first left before it starts (before: it saved
    wgpy's own resolv.conf over the backup and took ip_forward=1 as the value to restore)."""
    ns, iface, conf = _gateway(lab)
    before = _state(ns)
    lab.wgpy_up(ns, conf)
    _sigkill(ns)
    res = lab.try_wgpy_up(ns, conf)
    assert res.returncode == 0, res.stderr
    assert "did not tear down; cleaned up what it left" in res.stderr, res.stderr
    _assert_changed(ns, iface)
    res = lab.wgpy(ns, "down", iface, timeout=30)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not ns_pids(ns), 10, what="the daemon to exit")
    _assert_same(before, _state(ns))
    assert run(ns, "cat", "/etc/resolv.conf").stdout == ORIGINAL_RESOLV
    _no_files_left(iface)


# ---- item 5: SIGTERM during up -------------------------------------------------------------------------------

@pytest.mark.parametrize("hook", ["PostUp", "PreUp"])
def test_down_during_a_slow_hook_of_up_leaves_nothing(lab, hook):
    """`wgpy down` while up runs `sleep 20` in PostUp (everything else done) or PreUp (nothing done, no socket
    yet: the daemon is found through its state file): up fails at once, down returns 0, nothing is left."""
    mark = lab.tmp / f"{hook}.started"
    ns, iface, conf = _gateway(lab, [f"{hook} = touch {mark} && sleep 20"])
    before = _state(ns)
    up = lab.popen(ns, netlab.WGPY, "up", conf, name="wgpy-up")
    lab.ifaces[iface] = ns
    wait_for(lambda: mark.exists() or not up.alive(), 30, what=f"{hook} to start")
    assert up.alive(), up.stderr()
    if hook == "PostUp":
        _assert_changed(ns, iface)
    t0 = time.monotonic()
    res = lab.wgpy(ns, "down", iface, timeout=30)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    rc = up.wait(30)
    wait_for(lambda: not _wgpy_pids(ns), 10, what="the daemon to exit")
    _assert_same(before, _state(ns))
    _no_files_left(iface)
    assert rc != 0, up.stderr()
    assert "interrupted by SIGTERM during up" in up.stderr(), up.stderr()
    assert took < 10, f"down took {took:.1f} s: the hook was not cut short"
    wait_for(lambda: not ns_pids(ns), 5, what="the hook's `sleep 20` to be killed with it")


# ---- item 6: what root trusts ------------------------------------------------------------------------------------

FAKE_DAEMON = r"""
import os, socket, sys
path, reply = sys.argv[1], sys.argv[2].encode().decode("unicode_escape").encode("utf-8", "surrogateescape")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    buf = b""
    try:
        while not buf.endswith(b"\n\n"):
            chunk = c.recv(4096)
            if not chunk:
                break
            buf += chunk
        c.sendall(reply)
    except OSError:
        pass
    c.close()
"""

ESCAPES = "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202e"       # as the fake daemon's argument (unicode_escape)
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


def _fake_reply(bad_key: bool = False) -> str:
    """A get reply (unicode_escape-encoded) with escape sequences in every free-text field."""
    key = "zz" * 32 if bad_key else "11" * 32
    return (f"private_key={'22' * 32}\\nlisten_port=51820{ESCAPES}\\npublic_key={key}\\n"
            f"endpoint=192.0.2.9:51820{ESCAPES}\\nallowed_ip=10.9.0.0/24{ESCAPES}\\n"
            f"wgpy_last_error=handshake{ESCAPES}\\nwgpy_endpoint=tls://evil{ESCAPES}:443\\n"
            f"wgpy_endpoint_state=up{ESCAPES}\\nrx_bytes=1\\ntx_bytes=2\\nerrno=0\\n\\n")


def _private_tmp(script: str) -> list[str]:
    """sh -c SCRIPT in a private mount namespace with an empty, world-writable /tmp (as any machine's), and
    without XDG_RUNTIME_DIR (root's runtime-dir fallback was /tmp/wgpy-0 then). A checkout that lives under
    /tmp (a CI clone) is bound back into the empty /tmp, so its wgpy still runs there."""
    repo = netlab.WGPY.resolve().parents[2]
    keep = ""
    if repo.is_relative_to("/tmp"):
        rel = shlex.quote(str(repo.relative_to("/tmp")))
        keep = (f"mount --bind /tmp /mnt\nmount -t tmpfs -o mode=1777 tmpfs /tmp\n"
                f"mkdir -p /tmp/{rel}\nmount --bind /mnt/{rel} /tmp/{rel}\n")
    return ["env", "-u", "XDG_RUNTIME_DIR", "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            (keep or "mount -t tmpfs -o mode=1777 tmpfs /tmp\n") + script]


def test_a_planted_pid_file_does_not_make_root_stop_another_tunnel(lab):
    """Before: nobody writes the victim daemon's pid into /tmp/wgpy-0/NAME.pid; root's `wgpy down NAME` of an
    interface that was never up killed the victim tunnel."""
    ns = lab.netns()
    victim = unique_iface()
    text = render_config(gen_keypair().private, 51820, [PeerSpec(gen_keypair().public, ("10.9.0.2/32",))],
                         addresses=["10.9.0.1/24"])
    lab.wgpy_up(ns, write_config(lab.tmp, victim, text))
    pid = _daemon(ns)
    name = unique_iface()
    w = shlex.quote(str(netlab.WGPY))
    script = f"""
{shlex.join(AS_NOBODY)} sh -c 'mkdir /tmp/wgpy-0 && echo {pid} > /tmp/wgpy-0/{name}.pid'
{w} down {name}
echo "rc=$?"
"""
    res = run(ns, *_private_tmp(script), timeout=60, check=False)
    assert "rc=1" in res.stdout and "is not up" in res.stderr, res.stdout + res.stderr
    time.sleep(0.5)
    assert pid_alive(pid) and link_exists(ns, victim), "the victim tunnel was stopped"
    assert "Traceback" not in res.stderr, res.stderr


def test_a_planted_socket_is_not_shown_to_root(lab):
    """Before: nobody serves /tmp/wgpy-0/NAME.sock; root's `wgpy show` listed the fake interface and printed its
    escape sequences."""
    ns = lab.netns()
    name = unique_iface()
    w = shlex.quote(str(netlab.WGPY))
    sock = f"/tmp/wgpy-0/{name}.sock"
    script = f"""
{shlex.join(AS_NOBODY)} mkdir -m 0700 /tmp/wgpy-0
{shlex.join(AS_NOBODY)} /usr/bin/python3 -c {shlex.quote(FAKE_DAEMON)} {sock} {shlex.quote(_fake_reply())} &
i=0; while [ ! -S {sock} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo "socket: $(stat -c %U {sock})"
echo "== show"; {w} show
echo "== interfaces"; {w} show interfaces
echo "== show name"; {w} show {name}; echo "rc=$?"
kill %1
"""
    res = run(ns, *_private_tmp(script), timeout=60, check=False)
    out = res.stdout + res.stderr
    assert "socket: nobody" in res.stdout, out           # the fake daemon was really there
    assert name not in res.stdout.split("== show name")[0].split("socket: nobody")[1], out
    assert "rc=1" in res.stdout, out
    assert not any(c in out for c in RAW), repr(out)
    assert "Traceback" not in out, out


@pytest.fixture
def trusted_fake_daemon(lab):
    """A socket in root's /var/run/wireguard served by this test (root): a daemon that says anything."""
    netlab.UAPI_DIR.mkdir(parents=True, exist_ok=True)
    servers = []

    def start(reply: bytes) -> str:
        name = unique_iface("wgf")
        path = netlab.UAPI_DIR / f"{name}.sock"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(8)
        servers.append((s, path))

        def serve():
            while True:
                try:
                    c, _ = s.accept()
                except OSError:
                    return
                with c:
                    c.settimeout(2)
                    try:
                        buf = b""
                        while not buf.endswith(b"\n\n"):
                            chunk = c.recv(4096)
                            if not chunk:
                                break
                            buf += chunk
                        c.sendall(reply)
                    except OSError:
                        pass
        threading.Thread(target=serve, daemon=True).start()
        return name
    yield start
    for s, path in servers:
        s.close()
        path.unlink(missing_ok=True)


def test_show_prints_no_control_characters_from_a_daemon(lab, trusted_fake_daemon):
    """Before: the escape sequences in endpoint, allowed ips, last error, listening port... reached the
    terminal as they were."""
    reply = _fake_reply().encode().decode("unicode_escape").encode("utf-8", "surrogateescape")
    name = trusted_fake_daemon(reply)
    outs = []
    for args in ([name], [name, "endpoints"], [name, "allowed-ips"], [name, "dump"], [name, "listen-port"],
                 ["all"]):
        res = lab.wgpy(None, "show", *args)
        outs.append(res.stdout + res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
        assert not any(c in res.stdout + res.stderr for c in RAW), (args, repr(res.stdout + res.stderr))
    listing = outs[0]
    assert "endpoint: 192.0.2.9:51820\\x1b]0;owned\\x07" in listing, listing
    assert "last error: handshake\\x1b" in listing and "\\u202e" in listing, listing


def test_show_reports_a_malformed_reply_without_a_traceback(lab, trusted_fake_daemon):
    reply = _fake_reply(bad_key=True).encode().decode("unicode_escape").encode("utf-8", "surrogateescape")
    bad_key = trusted_fake_daemon(reply)
    not_utf8 = trusted_fake_daemon(b"listen_port=1\xff\xfe\x1b[2J\nerrno=0\n\n")
    for name in (bad_key, not_utf8):
        for args in ([name], [name, "dump"], [name, "stats"]):
            res = lab.wgpy(None, "show", *args)
            out = res.stdout + res.stderr
            assert "Traceback" not in out, out
            assert not any(c in out for c in RAW), (args, repr(out))
    res = lab.wgpy(None, "show", bad_key)
    assert res.returncode == 1 and "malformed reply" in res.stderr, res.stderr
