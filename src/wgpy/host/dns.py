"""`DNS =`: the tunnel's resolvers, set the way wg-quick sets them and undone exactly.

With resolvconf installed: `resolvconf -a tun.IFACE -m 0 -x` (the tunnel's servers only), undone with
`resolvconf -d tun.IFACE -f`. Without it, /etc/resolv.conf is rewritten in place when it is a plain file (in place:
it may be a bind mount, as under `ip netns exec`), the previous contents kept in memory and in
RUN_DIR/IFACE.resolv.conf (for a manual restore should the daemon be killed with SIGKILL); the undo puts them
back only if the file still holds what wgpy wrote. A symlinked resolv.conf (systemd-resolved and the like) is left
alone with a warning.

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
    ours = (f"# written by wgpy for {name}; `wgpy down {name}` restores the previous file\n" + text).encode()
    backup = os.path.join(privileges.runtime_dir(RUN_DIR, create=True), f"{name}.resolv.conf")
    with open(backup, "wb") as f:
        f.write(old)
    push(f"DNS ({RESOLV_CONF})", lambda: restore(name, old, ours))
    with open(RESOLV_CONF, "wb") as f:
        f.write(ours)


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
        os.unlink(os.path.join(privileges.runtime_dir(RUN_DIR), f"{name}.resolv.conf"))
    except OSError as e:
        print(f"wgpy: cannot restore {RESOLV_CONF}: {e}", file=sys.stderr)
