"""`wgpy down`: find the daemon of an interface, stop it and let it undo what it did; refuse anything else.

The daemon of NAME is the process behind its listening UAPI socket (SO_PEERCRED), else the one in its pid file,
and only if that process still runs wgpy. Without either, a TUN/TAP of that name is stopped only when a wgpy
process holds it open (found through /proc/PID/fdinfo); a bridge, a veth pair, `lo`, a TUN of another program
or a persistent TUN nobody runs is left alone, with a message saying what it is.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time

from .. import config as cfgmod
from ..host import netlink, privileges
from ..host.privileges import RUN_DIR, has_net_admin
from ..uapi.server import socket_path as uapi_socket_path


def _daemon_pid(name: str) -> int | None:
    """The pid of the daemon serving interface `name`: the credentials of its listening UAPI socket
    (SO_PEERCRED), else its pid file; either only if that process still runs wgpy."""
    candidates = []
    path = uapi_socket_path(name)
    if os.path.exists(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(5)
            s.connect(path)
            candidates.append(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("3i")))[0])
        except OSError:
            pass
        finally:
            s.close()
    for d in privileges.search_dirs(RUN_DIR):
        try:
            with open(os.path.join(d, f"{name}.pid")) as f:
                candidates.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
    for pid in candidates:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if pid > 0 and _is_wgpy(f.read().replace(b"\0", b" ").decode(errors="replace")):
                    return pid
        except OSError:
            continue
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
    """A daemon that dropped root cannot unlink its socket and pid file in root's directories; once it has
    exited, whoever runs `down` removes them (a socket nobody listens on any more is stale)."""
    path = uapi_socket_path(name)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)
        except OSError:
            pass
    except OSError:
        pass        # e.g. EACCES: not ours to judge or remove
    finally:
        s.close()
    for d in privileges.search_dirs(RUN_DIR):
        try:
            os.unlink(os.path.join(d, f"{name}.pid"))
        except OSError:
            pass


def check_interface_name(name: str) -> str | None:
    """Why `name` cannot be an interface name, as the kernel judges it (dev_valid_name) and wg-quick's
    pattern, or None. Names reach paths (/run/wireguard/NAME.sock), so `..` and `/` never pass."""
    if name in (".", ".."):
        return f"invalid interface name {name!r}"
    if not cfgmod._NAME_RE.fullmatch(name):
        shown = name if name.isprintable() and len(name) <= 64 else repr(name[:64])
        return (f"invalid interface name {shown!r}: 1 to 15 characters of A-Z a-z 0-9 _ = + . - "
                f"({len(name)} given)" if len(name) > 15 else
                f"invalid interface name {shown!r}: only A-Z a-z 0-9 _ = + . - are allowed")
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


def _stop(pid: int, name: str, timeout: float) -> int:
    """SIGTERM the daemon `pid` of `name` and wait for it (SIGKILL after `timeout`). Returns an exit status."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    except PermissionError:
        print(f"wgpy: not allowed to stop the daemon of {name} (pid {pid}): it runs as another user; run "
              f"`wgpy down {name}` as that user or as root", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        print(f"wgpy: daemon {pid} did not stop in {timeout:.0f}s; killed", file=sys.stderr)
    return 0


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
    pid = _daemon_pid(name)
    if pid is not None:
        rc = _stop(pid, name, timeout)
        if rc == 0:
            _remove_leftovers(name)
        return rc
    if not netlink.link_exists(name):
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
    rc = 0
    for pid, _cmd in ours:
        rc |= _stop(pid, name, timeout)
    if rc == 0:
        _remove_leftovers(name)
    return rc
