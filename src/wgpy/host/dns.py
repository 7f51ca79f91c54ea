"""`DNS =`: the tunnel's resolvers, set the way wg-quick sets them and undone exactly.

With resolvconf installed: `resolvconf -a tun.IFACE -m 0 -x` (the tunnel's servers only), undone with
`resolvconf -d tun.IFACE -f`. Without it, /etc/resolv.conf is rewritten in place when it is a plain file (in place:
it may be a bind mount, as under `ip netns exec`), the previous contents kept in memory and in
RUN_DIR/IFACE.resolv.conf (never over an existing one); the undo puts them back only if the file still holds
what wgpy wrote. Should the daemon die without tearing down (SIGKILL), `wgpy down` -- or the next `wgpy up` of
that interface -- puts the backup back (recover()). A symlinked resolv.conf (systemd-resolved and the like) is
left alone with a warning.

apply() pushes each undo onto the caller's undo stack the moment there is something to undo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Callable

from . import privileges
from .privileges import RUN_DIR

RESOLV_CONF = "/etc/resolv.conf"

Push = Callable[[str, Callable[[], object]], None]


class DnsError(OSError):
    pass


def resolv_text(servers: list[str], search: list[str]) -> str:
    text = "".join(f"nameserver {s}\n" for s in servers)
    if search:
        text += "search " + " ".join(search) + "\n"
    return text


def apply(name: str, cfg_path: str, servers: list[str], search: list[str], push: Push) -> None:
    """Set the resolvers for interface `name` (nothing when both lists are empty). Raises DnsError."""
    if not servers and not search:
        return
    text = resolv_text(servers, search)
    if shutil.which("resolvconf") is not None:
        r = subprocess.run(["resolvconf", "-a", f"tun.{name}", "-m", "0", "-x"], input=text.encode())
        if r.returncode != 0:
            raise DnsError("resolvconf failed to apply DNS")
        push("DNS (resolvconf)", lambda: _resolvconf_delete(name))
        return
    if os.path.islink(RESOLV_CONF) or not os.path.isfile(RESOLV_CONF):
        print(f"wgpy: warning: DNS is set in {cfg_path} but resolvconf is not installed and {RESOLV_CONF} is "
              f"not a plain file; DNS not applied", file=sys.stderr)
        return
    with open(RESOLV_CONF, "rb") as f:
        old = f.read()
    ours = (_header(name) + text).encode()
    backup = backup_path(name, create=True)
    try:          # never over an existing backup: it may hold the only copy of the original (crash recovery)
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise DnsError(f"{backup} already holds a saved {RESOLV_CONF} (of an earlier `up` of {name} that did not "
                       f"stop cleanly, and that `wgpy down {name}` could not put back); restore or remove it "
                       f"first") from None
    with os.fdopen(fd, "wb") as f:
        f.write(old)
        f.flush()
        os.fsync(f.fileno())
    push(f"DNS ({RESOLV_CONF})", lambda: restore(name, old, ours))
    with open(RESOLV_CONF, "wb") as f:
        f.write(ours)


def _header(name: str) -> str:
    return f"# written by wgpy for {name}; `wgpy down {name}` restores the previous file\n"


def backup_path(name: str, create: bool = False) -> str:
    return os.path.join(privileges.runtime_dir(RUN_DIR, create=create), f"{name}.resolv.conf")


def recover(name: str, mode: str | None) -> tuple[list[str], list[str]]:
    """After a daemon of `name` died without tearing down: undo its DNS (`mode` "resolvconf" or "file" as it
    recorded; None: only a backup file, if any, tells). Returns (what was done, problems); never raises.
    The previous /etc/resolv.conf is put back only if the file still holds what wgpy wrote for `name`;
    otherwise it is left alone and the backup kept, and said so."""
    done: list[str] = []
    problems: list[str] = []
    if mode == "resolvconf" and shutil.which("resolvconf") is not None:
        r = subprocess.run(["resolvconf", "-d", f"tun.{name}", "-f"], capture_output=True)
        (done.append(f"resolvconf -d tun.{name}") if r.returncode == 0 else
         problems.append(f"resolvconf -d tun.{name} failed: {r.stderr.decode(errors='replace').strip()}"))
    backup = backup_path(name)
    try:
        with open(backup, "rb") as f:
            old = f.read()
    except FileNotFoundError:
        return done, problems
    except OSError as e:
        return done, problems + [f"cannot read {backup}: {e.strerror or e}"]
    try:
        with open(RESOLV_CONF, "rb") as f:
            now = f.read()
        if not now.startswith(_header(name).encode()):
            problems.append(f"{RESOLV_CONF} no longer holds what wgpy wrote for {name}: left as it is; the file "
                            f"it replaced is kept in {backup}")
            return done, problems
        with open(RESOLV_CONF, "wb") as f:     # in place: it may be a bind mount
            f.write(old)
        os.unlink(backup)
        done.append(f"{RESOLV_CONF} restored")
    except OSError as e:
        problems.append(f"cannot restore {RESOLV_CONF} from {backup}: {e.strerror or e}")
    return done, problems


def _resolvconf_delete(name: str) -> None:
    subprocess.run(["resolvconf", "-d", f"tun.{name}", "-f"])


def restore(name: str, old: bytes, ours: bytes) -> None:
    """Put `old` back if RESOLV_CONF still holds `ours`; remove the backup. Problems are reported, not raised."""
    try:
        with open(RESOLV_CONF, "rb") as f:
            now = f.read()
        if now == ours:
            with open(RESOLV_CONF, "wb") as f:
                f.write(old)
        else:
            print(f"wgpy: {RESOLV_CONF} was changed since up; left as it is", file=sys.stderr)
        os.unlink(backup_path(name))
    except OSError as e:
        print(f"wgpy: cannot restore {RESOLV_CONF}: {e}", file=sys.stderr)
