"""`wgpyd [-f|--foreground] INTERFACE`: the userspace implementation wg-quick drives, as it drives wireguard-go.

    WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd wg-quick up ./wg0.conf

It creates the TUN interface and the UAPI socket, then (unless -f, or WG_PROCESS_FOREGROUND=1) detaches and
returns, so wg-quick can go on with `wg setconf`, `ip address`, `ip link` and routes. It stops, removing its
socket, when the interface is deleted (`wg-quick down`, `ip link del`) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .daemon import Interface, install_signal_handlers
from .harden import no_core_dumps
from .io import netlink
from .privileges import has_net_admin

log = logging.getLogger("wgpy")


def _detach() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wgpyd", description="wgpy userspace WireGuard daemon (for wg-quick)")
    ap.add_argument("-f", "--foreground", action="store_true")
    ap.add_argument("interface")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s wgpyd: %(message)s")
    foreground = args.foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1"
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
        _detach()
    install_signal_handlers(iface)
    try:
        iface.run()
    finally:
        iface.close()
    return 0
