"""`wgpy down`: find the daemon of an interface, stop it and let it undo what it did; clean up after one that
died without tearing down; refuse anything else.

The daemon of NAME is the process behind its listening UAPI socket (SO_PEERCRED) in a trusted directory
(privileges.search_dirs: root's own only, never /tmp for root), else the pid its state file (recovery.py, in the
same trusted directories) records while it is still starting; either only if that process runs wgpy, names NAME
on its command line and holds the TUN/TAP NAME (where this user can see its file descriptors). A pid file is
never believed. Without either, a TUN/TAP of that name is stopped only when a wgpy process holds it open (found
through /proc/PID/fdinfo); a bridge, a veth pair, `lo`, a TUN of another program or a persistent TUN nobody runs
is left alone, with a message saying what it is.

No daemon left but a state file (or a resolv.conf backup): the daemon died without tearing down (SIGKILL, the OOM
killer), and `down` undoes what it recorded (recovery.recover: DNS, the nft table, policy rules, sysctls, stale
files). The same happens when `down` had to SIGKILL a daemon that did not stop in time.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time

from .. import config as cfgmod
from ..settings.values import shown
from ..host import dns, netlink
from ..host.privileges import has_net_admin
from ..uapi.server import find_socket
from ..uapi.server import socket_path as uapi_socket_path
from . import recovery


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] or None


def _holds_tun(pid: int, name: str) -> bool | None:
    """Whether `pid` holds TUN/TAP `name` open (fdinfo says `iff: NAME`); None when this user cannot see (the
    daemon is not dumpable: only root reads its file descriptors)."""
    want = f"iff:\t{name}\n"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return None
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "/dev/net/tun":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                if want in f.read():
                    return True
        except OSError:
            continue
    return False


def is_daemon_of(pid: int, name: str, starting: bool = False) -> bool:
    """`pid` is a running wgpy/wgpyd process for interface `name`: its command line names the interface (or
    NAME.conf) and it holds the TUN/TAP `name` -- unless `starting` (a daemon still in PreUp has no TUN yet) or
    this user cannot see its file descriptors."""
    if pid <= 0 or not _running(pid):
        return False
    args = _cmdline(pid)
    if not args or not _is_wgpy(" ".join(args)):
        return False
    if not any(os.path.basename(a) in (name, f"{name}.conf") for a in args[1:]):
        return False
    holds = _holds_tun(pid, name)
    return holds is None or holds or starting


def _socket_peer(name: str) -> int | None:
    """The pid behind NAME's listening UAPI socket in a trusted directory (SO_PEERCRED), or None."""
    path = find_socket(name)
    if path is None:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(path)
        return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
    except OSError:
        return None
    finally:
        s.close()


def daemon_pid(name: str) -> int | None:
    """The pid of the daemon serving interface `name`: its socket's peer, else the pid in its state file while
    it is still starting; either only if is_daemon_of() says so."""
    pid = _socket_peer(name)
    if pid is not None and is_daemon_of(pid, name):
        return pid
    found = recovery.find_state(name)
    if found is not None and found.pid is not None and is_daemon_of(found.pid, name, starting=True):
        return found.pid
    return None



def _running(pid: int) -> bool:
    """True while `pid` exists and has not exited (a zombie waiting for its parent has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X")


def _remove_leftovers(name: str) -> None:
    """A daemon that dropped root cannot unlink its socket, pid and state files in root's directories; once it
    has exited, whoever runs `down` removes them (a socket nobody listens on any more is stale)."""
    recovery.remove_files(name)


def _recover(name: str, found: recovery.Found | None, why: str) -> int:
    """Undo what a daemon of `name` that is gone recorded; says what was done. Returns an exit status."""
    pid = found.pid if found is not None else None
    done, problems = recovery.recover(name, found)
    print(f"wgpy: the daemon of {name}{f' (pid {pid})' if pid else ''} {why}; cleaning up what it left"
          + (":" if done else ""), file=sys.stderr)
    for line in done:
        print(f"  {line}", file=sys.stderr)
    for problem in problems:
        print(f"wgpy: {problem}", file=sys.stderr)
    return 1 if problems else 0


def check_interface_name(name: str) -> str | None:
    """Why `name` cannot be an interface name, as the kernel judges it (dev_valid_name) and wg-quick's
    pattern, or None. Names reach paths (/run/wireguard/NAME.sock), so `..` and `/` never pass."""
    if name in (".", ".."):
        return f"invalid interface name {name!r}"
    if not cfgmod._NAME_RE.fullmatch(name):
        text = name if name.isprintable() and len(name) <= 64 else repr(name[:64])
        quoted = shown(text)        # a key typed where the name belongs is never echoed
        return (f"invalid interface name {quoted}: 1 to 15 characters of A-Z a-z 0-9 _ = + . - "
                f"({len(name)} given)" if len(name) > 15 else
                f"invalid interface name {quoted}: only A-Z a-z 0-9 _ = + . - are allowed")
    return None


def _tun_holders(name: str) -> list[tuple[int, str]]:
    """(pid, command) of the processes in our network namespace that hold TUN/TAP `name` open: the kernel
    prints `iff: NAME` in the fdinfo of such a file descriptor."""
    try:
        own_ns = os.readlink("/proc/self/ns/net")
    except OSError:
        own_ns = None
    want = f"iff:\t{name}\n"
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if own_ns is not None and os.readlink(f"/proc/{pid}/ns/net") != own_ns:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") != "/dev/net/tun":
                        continue
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        if want in f.read():
                            with open(f"/proc/{pid}/cmdline", "rb") as c:
                                cmd = c.read().replace(b"\0", b" ").decode(errors="replace").strip()
                            holders.append((pid, cmd))
                            break
                except OSError:
                    continue
        except OSError:
            continue
    return holders


def _is_wgpy(cmd: str) -> bool:
    words = cmd.split()
    return any(os.path.basename(w) in ("wgpy", "wgpyd") for w in words[:2]) or \
        (len(words) >= 3 and words[1:3] == ["-m", "wgpy"])


def _stop(pid: int, name: str, timeout: float) -> tuple[int, bool]:
    """SIGTERM the daemon `pid` of `name` and wait for it (SIGKILL after `timeout`). Returns (an exit status,
    whether it had to be killed)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0, False
    except PermissionError:
        print(f"wgpy: not allowed to stop the daemon of {name} (pid {pid}): it runs as another user; run "
              f"`wgpy down {name}` as that user or as root", file=sys.stderr)
        return 1, False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return 0, False
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    print(f"wgpy: daemon {pid} did not stop in {timeout:.0f}s; killed", file=sys.stderr)
    while _running(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    return 0, True


def _stop_all(name: str, pids: list[int], timeout: float) -> int:
    """Stop the daemons `pids` of `name`; then remove their leftover files, or, for one that had to be killed,
    undo what its state file records."""
    rc, killed = 0, False
    for pid in pids:
        r, k = _stop(pid, name, timeout)
        rc |= r
        killed |= k
    if rc != 0:
        return rc
    found = recovery.find_state(name)
    if killed and found is not None:
        return _recover(name, found, "was killed before it had torn down")
    _remove_leftovers(name)
    return 0


def _save_config(name: str, given: str | None) -> bool:
    """SaveConfig = true in the interface's file: write the running configuration into it first (ops/saveconf.py).
    True when that failed: as wg-quick, the interface is then not taken down."""
    from ..ops import saveconf
    path = saveconf.config_path_of(name, given)
    try:
        if saveconf.save(name, path):
            print(f"wgpy: saved the running configuration of {name} to {path} (SaveConfig)", file=sys.stderr)
    except saveconf.SaveError as e:
        print(f"wgpy: {e}; {name} stays up (remove SaveConfig from {path} to take it down without saving)",
              file=sys.stderr)
        return True
    return False


def down(name_or_path: str, timeout: float = 15.0) -> int:
    """Stop the daemon of an interface that wgpy (or wgpyd) runs and let it undo what it did; refuse anything
    else. Only TUN/TAP devices held by a wgpy process are ever touched: a bridge, a veth pair, `lo`, or a TUN of
    another program is left alone with a message saying what it is."""
    if name_or_path.endswith(".conf"):
        try:
            name = cfgmod.interface_name_from_path(name_or_path)
        except cfgmod.ConfigError as e:
            print(f"wgpy: {e}", file=sys.stderr)
            return 1
    else:
        name = name_or_path
        why = check_interface_name(name)
        if why is not None:
            print(f"wgpy: {why}", file=sys.stderr)
            return 1
    pid = daemon_pid(name)
    if pid is not None:
        if _save_config(name, name_or_path if name_or_path.endswith(".conf") else None):
            return 1
        return _stop_all(name, [pid], timeout)
    found = recovery.find_state(name)
    if not netlink.link_exists(name):
        if found is not None or os.path.exists(dns.backup_path(name)):
            return _recover(name, found, "is gone without tearing down")
        print(f"wgpy: {name} is not up (no daemon and no interface of that name)", file=sys.stderr)
        _remove_leftovers(name)
        return 1
    kind = netlink.link_kind(name) or "vanished"
    if kind not in ("tun", "tap"):
        print(f"wgpy: {name} is a {kind} interface, not one of wgpy's; not removing it", file=sys.stderr)
        return 1
    sock = uapi_socket_path(name)
    holders = _tun_holders(name)
    if not holders and not has_net_admin() and os.path.exists(sock):
        print(f"wgpy: cannot reach the daemon of {name}: {sock} is not accessible to this user; stopping it "
              f"needs root (or the daemon's own user)", file=sys.stderr)
        return 1
    ours = [(pid, cmd) for pid, cmd in holders if _is_wgpy(cmd)]
    if not ours:
        if found is not None and not holders:       # e.g. attach mode: root's persistent TUN stays
            return _recover(name, found, "is gone without tearing down")
        if holders:
            pid, cmd = holders[0]
            print(f"wgpy: {name} is a {kind.upper()} device of another program (pid {pid}: {cmd[:80]}); "
                  f"not removing it", file=sys.stderr)
        elif not has_net_admin():
            print(f"wgpy: {name} is a {kind.upper()} device, but this user cannot see which program runs it; "
                  f"run `wgpy down {name}` as root", file=sys.stderr)
        else:
            print(f"wgpy: {name} is a persistent {kind.upper()} device that no wgpy daemon runs; not removing it "
                  f"(`ip link del {name}` does)", file=sys.stderr)
        return 1
    return _stop_all(name, [pid for pid, _cmd in ours], timeout)
