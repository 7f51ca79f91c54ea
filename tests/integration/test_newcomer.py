"""A newcomer's first hour (issue 20): a fresh machine's runtime directories and device node, a `down` that only
removes what wgpy made, the system install, and what wgpyd leaves for a user to read.

Machines of CI's kind come with an empty /run, a 0600 /dev/net/tun and often `umask 077`; the tests that depend
on those run their commands inside a private mount namespace that recreates exactly that (as
`../shared/tools/fresh-env` does), so they neither depend on nor change the machine's own state.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (PeerSpec, gen_keypair, link_exists, ns_pids, pid_alive, render_config, run,
                                 unique_iface, wait_for, write_config)

pytestmark = pytest.mark.netns

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _real_wgpy_only(lab):
    lab.require_real_wgpy("wgpy's own command line")


def _nobody_can_run_wgpy() -> None:
    res = run(None, *AS_NOBODY, Path(sys.executable).parent / "python", "-c", "import wgpy", timeout=30,
              check=False)
    if res.returncode != 0:
        pytest.skip("user nobody cannot run this checkout's python or import wgpy from it (a directory on the "
                    "way is closed to other users)")


def _conf(lab, iface: str, extra: str = "", directory: Path | None = None, port: int = 51820) -> Path:
    own, peer = gen_keypair(), gen_keypair()
    text = render_config(own.private, port, [PeerSpec(peer.public, ("10.99.0.2/32",), endpoint="10.201.0.2:51820")],
                         addresses=["10.99.0.1/24"])
    if extra:
        text = text.replace("[Interface]\n", f"[Interface]\n{extra}\n", 1)
    return write_config(directory or lab.tmp, iface, text)


def _fresh(script: str) -> list[str]:
    """sh -c SCRIPT in a private mount namespace with an empty /run and umask 077, as on a fresh machine."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
            "mount -t tmpfs -o mode=0755 tmpfs /run\numask 077\n" + script]


# -- runtime directories ------------------------------------------------------------------------------------------

def test_fresh_run_dirs_let_a_user_daemon_work(lab, netns):
    """Empty /run, umask 077: `up` with `User = nobody` makes /run/wireguard and /run/wgpy 0755 (not 0700), the
    socket is nobody's, and nobody's `wgpy show` works; the log is owner-only."""
    _nobody_can_run_wgpy()
    ns = netns()
    iface = unique_iface()
    cfg_dir = Path(tempfile.mkdtemp(prefix="wgpyt-fresh-"))
    lab.defer(f"rm -r {cfg_dir}", lambda: shutil.rmtree(cfg_dir, ignore_errors=True))
    conf = _conf(lab, iface, "User = nobody", cfg_dir)
    w = shlex.quote(str(netlab.WGPY))
    # wireguard-go, started earlier under the same umask, leaves /run/wireguard 0700: `up` must open it
    script = f"""
mkdir -p /run/wireguard
{w} up {shlex.quote(str(conf))}
stat -c 'DIR %n %a %U' /run/wireguard /run/wgpy
stat -c 'FILE %n %a %U' /run/wireguard/{iface}.sock /run/wgpy/{iface}.log
{shlex.join(AS_NOBODY)} {w} show {iface}
{w} down {iface}
"""
    # the daemon lives in this mount namespace only: if anything fails, the lab's namespace cleanup ends it
    res = run(ns, *_fresh(script), timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    modes = {ln.split()[1]: ln.split()[2:] for ln in res.stdout.splitlines() if ln.startswith(("DIR ", "FILE "))}
    assert modes["/run/wireguard"] == ["755", "root"], modes
    assert modes["/run/wgpy"] == ["755", "root"], modes
    sock_mode, sock_owner = modes[f"/run/wireguard/{iface}.sock"]
    assert int(sock_mode, 8) & 0o077 == 0 and sock_owner == "nobody", modes     # its user's alone
    assert modes[f"/run/wgpy/{iface}.log"] == ["600", "root"], modes
    assert f"interface: {iface}" in res.stdout, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    wait_for(lambda: not ns_pids(ns), 10, what="the daemon to stop")


# -- `down` removes only what wgpy made ---------------------------------------------------------------------------

TUN_HOLDER = r"""
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0001 | 0x1000))
print("holding", flush=True)
time.sleep(120)
"""


def test_down_refuses_interfaces_wgpy_did_not_make(lab, netns):
    ns = netns()
    run(ns, "ip", "link", "add", "brx", "type", "bridge")
    run(ns, "ip", "link", "add", "vx1", "type", "veth", "peer", "name", "vx2")
    run(ns, "ip", "tuntap", "add", "dev", "tunp", "mode", "tun")          # persistent, no program behind it
    holder = lab.popen(ns, sys.executable, "-c", TUN_HOLDER, "tunh", name="tun-holder")
    wait_for(lambda: "holding" in holder.stdout() or not holder.alive(), 10, what="a TUN held by a program")
    cases = {"brx": "bridge", "vx1": "veth", "lo": "loopback", "tunp": "persistent TUN",
             "tunh": "TUN device of another program"}
    for name, words in cases.items():
        res = lab.wgpy(ns, "down", name)
        assert res.returncode == 1, (name, res.stdout, res.stderr)
        assert words in res.stderr and "not removing it" in res.stderr, (name, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
        assert link_exists(ns, name), f"{name} was removed"
    assert holder.alive()
    for bad in ("../..", "x/y", "a" * 16, "."):
        res = lab.wgpy(ns, "down", bad)
        assert res.returncode == 1 and "invalid interface name" in res.stderr, (bad, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
    res = lab.wgpy(ns, "down", "wgtnothing")
    assert res.returncode == 1 and "is not up" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_down_as_another_user_names_the_privilege(lab, netns):
    """Non-root `wgpy down` of root's interface, run by `wgpy up` (pid file) and by wgpyd under wg-quick (none):
    a message that says root is needed, no traceback, and the tunnel is untouched."""
    _nobody_can_run_wgpy()
    ns = netns()
    iface = unique_iface()
    lab.wgpy_up(ns, _conf(lab, iface))
    conf_q = _conf(lab, unique_iface(), port=51821)
    iface_q = conf_q.stem
    lab.ifaces[iface_q] = ns
    lab.defer(f"ip link del {iface_q}", lambda: run(ns, "ip", "link", "del", iface_q, check=False, timeout=10))
    env = {"PATH": f"{netlab.WGPY.parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
           "WG_QUICK_USERSPACE_IMPLEMENTATION": "wgpyd"}
    run(ns, "wg-quick", "up", conf_q, env=env, timeout=30)
    for name in (iface, iface_q):
        res = lab.wgpy(ns, "down", name, prefix=AS_NOBODY)
        assert res.returncode == 1, (name, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and "Error" not in res.stderr, res.stderr
        assert "root" in res.stderr, res.stderr
        assert link_exists(ns, name)
    # root's down still works for both
    assert lab.wgpy(ns, "down", iface, timeout=20).returncode == 0
    assert lab.wgpy(ns, "down", iface_q, timeout=20).returncode == 0
    wait_for(lambda: not link_exists(ns, iface) and not link_exists(ns, iface_q), 10, what="both interfaces gone")


# -- link-local addresses, wgpyd's log ------------------------------------------------------------------------------

def test_no_link_local_address_on_l3_tunnels_and_wgpyd_keeps_a_log(lab, netns):
    ns = netns()
    iface = unique_iface()
    lab.wgpy_up(ns, _conf(lab, iface, "Address = fd99::1/64"))
    addrs = run(ns, "ip", "-6", "-o", "addr", "show", "dev", iface).stdout
    assert "fd99::1/64" in addrs and "fe80" not in addrs, addrs
    # wgpyd under wg-quick: same, and what it did is in /run/wgpy/IFACE.log, owner-only
    conf_q = _conf(lab, unique_iface(), "Address = fd99::3/64", port=51821)
    iface_q = conf_q.stem
    lab.ifaces[iface_q] = ns
    lab.defer(f"ip link del {iface_q}", lambda: run(ns, "ip", "link", "del", iface_q, check=False, timeout=10))
    log = netlab.WGPY_RUN_DIR / f"{iface_q}.log"
    lab.defer(f"rm {log}", lambda: log.unlink(missing_ok=True))
    env = {"PATH": f"{netlab.WGPY.parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
           "WG_QUICK_USERSPACE_IMPLEMENTATION": "wgpyd"}
    run(ns, "wg-quick", "up", conf_q, env=env, timeout=30)
    addrs = run(ns, "ip", "-6", "-o", "addr", "show", "dev", iface_q).stdout
    assert "fd99::3/64" in addrs and "fe80" not in addrs, addrs
    wait_for(lambda: log.exists() and f"interface {iface_q} is up" in log.read_text(), 10, what="wgpyd's log")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "PrivateKey" not in text and "private_key" not in text
    run(ns, "wg-quick", "down", conf_q, env=env, timeout=30)


# -- /dev/net/tun ---------------------------------------------------------------------------------------------------

def test_tun_node_mode_is_named_in_the_error(lab, netns):
    """A 0600 /dev/net/tun (as on this kind of machine) and a user attaching to the TUN root made for it: the
    error says the node's mode is the problem and how to fix it, not that a capability is missing."""
    _nobody_can_run_wgpy()
    ns = netns()
    iface = unique_iface()
    cfg_dir = Path(tempfile.mkdtemp(prefix="wgpyt-node-"))
    lab.defer(f"rm -r {cfg_dir}", lambda: shutil.rmtree(cfg_dir, ignore_errors=True))
    os.chmod(cfg_dir, 0o755)
    own, peer = gen_keypair(), gen_keypair()
    conf = write_config(cfg_dir, iface, f"[Interface]\nPrivateKey = {own.private}\n\n[Peer]\n"
                                        f"PublicKey = {peer.public}\n")
    os.chown(conf, NOBODY, NOBODY)
    run(ns, "ip", "tuntap", "add", "dev", iface, "mode", "tun", "user", str(NOBODY))
    run(ns, "ip", "link", "set", iface, "up")
    node_dir = Path(tempfile.mkdtemp(prefix="wgpyt-tun-"))
    lab.defer(f"rm -r {node_dir}", lambda: shutil.rmtree(node_dir, ignore_errors=True))
    node = node_dir / "tun"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(10, 200))
    os.chmod(node, 0o600)
    script = (f'mount --bind {shlex.quote(str(node))} /dev/net/tun\n'
              f'exec {shlex.join(AS_NOBODY)} {shlex.quote(str(netlab.WGPY))} up --foreground {shlex.quote(str(conf))}')
    res = run(ns, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, timeout=30,
              check=False)
    assert res.returncode != 0
    assert "/dev/net/tun" in res.stderr and "0600" in res.stderr and "chmod 0666" in res.stderr, res.stderr
    assert "CAP_NET_ADMIN" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not ns_pids(ns)


# -- the system install -----------------------------------------------------------------------------------------------

def test_install_script_puts_wgpy_on_everyones_path(lab, netns):
    """scripts/install.sh under umask 077 into a private prefix: `wgpy --version` runs for root and for nobody,
    and wg-quick finds the installed wgpyd by PATH alone; --uninstall removes it."""
    base = Path(tempfile.mkdtemp(prefix="wgpyt-install-"))
    lab.defer(f"rm -r {base}", lambda: shutil.rmtree(base, ignore_errors=True))
    os.chmod(base, 0o755)
    prefix, bindir = base / "opt", base / "bin"
    env = {"WGPY_PREFIX": str(prefix), "WGPY_BIN_DIR": str(bindir), "PATH": os.environ.get("PATH", "")}
    res = run(None, "sh", "-c", f"umask 077; exec bash {shlex.quote(str(ROOT / 'scripts/install.sh'))}",
              env=env, timeout=480, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    for cmd in ("wgpy", "wgpyd"):
        assert (bindir / cmd).is_symlink()
    version = run(None, bindir / "wgpy", "--version", timeout=30).stdout
    assert version.startswith("wgpy "), version
    # a copy, not a link back to this checkout
    assert not list(prefix.glob("lib/python*/site-packages/__editable__*"))
    if stat.S_IMODE(os.stat(base).st_mode) & 0o001:
        res = run(None, *AS_NOBODY, bindir / "wgpy", "--version", timeout=30, check=False)
        assert res.returncode == 0 and res.stdout == version, res.stdout + res.stderr
    ns = netns()
    conf = _conf(lab, unique_iface())
    iface = conf.stem
    lab.ifaces[iface] = ns
    lab.defer(f"ip link del {iface}", lambda: run(ns, "ip", "link", "del", iface, check=False, timeout=10))
    quick_env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "WG_QUICK_USERSPACE_IMPLEMENTATION": "wgpyd"}
    run(ns, "wg-quick", "up", conf, env=quick_env, timeout=30)
    pids = [p for p in ns_pids(ns) if pid_alive(p)]
    assert pids and all(str(prefix) in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                        for p in pids), pids
    assert "listening port: 51820" in run(ns, "wg", "show", iface, timeout=10).stdout
    run(ns, "wg-quick", "down", conf, env=quick_env, timeout=30)
    res = run(None, "bash", ROOT / "scripts/install.sh", "--uninstall", env=env, timeout=60, check=False)
    assert res.returncode == 0 and not prefix.exists() and not (bindir / "wgpy").exists(), res.stderr
