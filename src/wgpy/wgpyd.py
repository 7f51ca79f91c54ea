"""`wgpyd [-f|--foreground] INTERFACE`: the userspace implementation wg-quick drives, as it drives wireguard-go.

    WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd wg-quick up ./wg0.conf

It creates the TUN interface and the UAPI socket, then (unless -f, or WG_PROCESS_FOREGROUND=1) detaches and
returns, so wg-quick can go on with `wg setconf`, `ip address`, `ip link` and routes. Detached, it logs to
/run/wgpy/IFACE.log (in the foreground: to stderr, which systemd hands to journald). It stops, removing its
socket, when the interface is deleted (`wg-quick down`, `ip link del`) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .daemon import Interface, install_signal_handlers
from .host import netlink, privileges
from .host.harden import no_core_dumps
from .host.privileges import RUN_DIR
from .quick.down import check_interface_name, has_net_admin

log = logging.getLogger("wgpy")


def _detach(name: str) -> str:
    """Fork into the background as wireguard-go does. Its stdout and stderr (and so the log) go to
    /run/wgpy/NAME.log (owner-only; the log never holds key material), so that what went wrong under wg-quick
    can still be read afterwards. Returns the log's path."""
    path = os.path.join(privileges.runtime_dir(RUN_DIR, create=True), f"{name}.log")
    logfd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(logfd, 0o600)
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    os.close(logfd)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wgpyd", description="wgpy userspace WireGuard daemon (for wg-quick)")
    ap.add_argument("--version", action="version", version=f"wgpyd (wgpy {__version__})")
    ap.add_argument("-f", "--foreground", action="store_true")
    ap.add_argument("interface")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s wgpyd: %(message)s")
    foreground = args.foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1"
    why = check_interface_name(args.interface)      # the kernel would truncate a long name silently
    if why is not None:
        print(f"wgpyd: {why}", file=sys.stderr)
        return 1
    if not has_net_admin():
        print(f"wgpyd: creating interface {args.interface} needs CAP_NET_ADMIN", file=sys.stderr)
        return 1
    if netlink.link_exists(args.interface):
        print(f"wgpyd: interface {args.interface} already exists", file=sys.stderr)
        return 1
    no_core_dumps()   # before any key arrives over the UAPI
    iface = Interface(args.interface)
    try:
        iface.open()
    except OSError as e:
        print(f"wgpyd: {e.strerror or e}", file=sys.stderr)
        return 1
    if not foreground:
        _detach(iface.name)
    log.info("interface %s is up (wgpyd %s, pid %d), listening on UDP port %d", iface.name, __version__,
             os.getpid(), iface.listen_port)
    install_signal_handlers(iface)
    try:
        iface.run()
    finally:
        iface.close()
    return 0
