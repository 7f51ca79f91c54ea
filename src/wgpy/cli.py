"""Command line: `wgpy genkey|pubkey|genpsk|up|down|show|reload|genconf|qr`, the mesh's `server|join|status|leave`
(mesh/cli.py) and the `wgpyd` daemon for wg-quick.

Argument parsing and dispatch only: `show` is show.py (through the UAPI socket, the control path the `wg` tool
uses), `up`/`down` are quick/, the operations commands (`show --json`, `reload`, `genconf`, `qr`) are ops/.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys

from . import crypto
from .show import FIELD_NAMES, show

def _warn_if_world_accessible() -> None:
    """As `wg genkey`: a key written to a file that others can read deserves a warning."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o007:
        print("Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.",
              file=sys.stderr)


def _genkey() -> int:
    _warn_if_world_accessible()
    print(crypto.encode_key(crypto.clamp(os.urandom(32))))
    return 0


def _genpsk() -> int:
    _warn_if_world_accessible()
    print(crypto.encode_key(os.urandom(32)))
    return 0


def _pubkey() -> int:
    try:
        raw = crypto.decode_key(sys.stdin.read(), "private key")
    except crypto.KeyError_ as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    print(crypto.encode_key(crypto.public_from_private(raw)))
    return 0


# ---- entry points -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from . import __version__
    ap = argparse.ArgumentParser(prog="wgpy", description="userspace WireGuard-compatible VPN")
    ap.add_argument("--version", action="version", version=f"wgpy {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("genkey", help="print a new private key (base64)")
    sub.add_parser("genpsk", help="print a new preshared key (base64)")
    sub.add_parser("pubkey", help="read a private key on stdin, print its public key")
    p_up = sub.add_parser("up", help="bring an interface up from a wg-quick style config file")
    p_up.add_argument("config", help="config file, or an interface name: NAME is /etc/wireguard/NAME.conf, "
                                     "else /etc/wgpy/NAME.conf (as wg-quick)")
    p_up.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p_up.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p_up.add_argument("-v", "--verbose", action="store_true")
    p_down = sub.add_parser("down", help="stop an interface and remove what up added")
    p_down.add_argument("interface", help="interface name or its config file")
    p_show = sub.add_parser("show", help="show interfaces like `wg show`")
    p_show.add_argument("interface", nargs="?")
    p_show.add_argument("field", nargs="?", choices=FIELD_NAMES)
    p_show.add_argument("--json", action="store_true", help="as JSON (docs/operations.md: the schema)")
    p_reload = sub.add_parser("reload", help="apply a changed config to a running interface live, as `wg "
                                             "syncconf` (unchanged peers keep their sessions)")
    p_reload.add_argument("interface")
    p_reload.add_argument("config", nargs="?", help="config file (default: the interface's, as `up` finds it)")
    p_gen = sub.add_parser("genconf", help="make a client config for a new peer and add the peer live")
    p_gen.add_argument("--peer-of", required=True, metavar="IFACE", help="the running interface to add it to")
    p_gen.add_argument("--address", required=True, action="append", help="the client's tunnel address(es)")
    p_gen.add_argument("--endpoint", help="HOST[:PORT] the client connects to (default: this host's "
                                          "default-route address and the interface's port)")
    p_gen.add_argument("--allowed-ips", action="append", help="what the client routes into the tunnel "
                                                               "(default: the interface's networks)")
    p_gen.add_argument("--dns", action="append", help="DNS server(s) for the client")
    p_gen.add_argument("--keepalive", type=int, default=25, help="PersistentKeepalive (default 25, 0: off)")
    p_gen.add_argument("--psk", action="store_true", help="add a preshared key")
    p_qr = sub.add_parser("qr", help="show a config as a QR code for the WireGuard phone apps")
    p_qr.add_argument("config", help="config file, or - for stdin")
    p_qr.add_argument("--png", metavar="FILE", help="write a PNG instead (mode 0600: it holds the private key)")
    from .mesh.cli import add_parsers as mesh_parsers, dispatch as mesh_dispatch
    mesh_parsers(sub)                      # server, join, status, leave (docs/mesh.md)
    args = ap.parse_args(argv)
    rc = mesh_dispatch(args)
    if rc is not None:
        return rc

    if args.cmd == "genkey":
        return _genkey()
    if args.cmd == "genpsk":
        return _genpsk()
    if args.cmd == "pubkey":
        return _pubkey()
    if args.cmd == "show":
        if args.json:
            from .ops.showjson import show_json
            return show_json(args.interface, args.field)
        return show(args.interface, args.field)
    if args.cmd == "reload":
        from .ops.reload import reload_main
        return reload_main(args.interface, args.config)
    if args.cmd == "genconf":
        from .ops.genconf import genconf_main
        return genconf_main(args)
    if args.cmd == "qr":
        from .ops.qr import qr_main
        return qr_main(args.config, args.png)
    if args.cmd == "down":
        from .quick import down
        return down(args.interface)
    if args.cmd == "up":
        from . import config as cfgmod
        from .quick import UpError, up_background, up_foreground
        # under systemd (JOURNAL_STREAM) journald stamps each line itself
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="wgpy: %(message)s" if os.environ.get("JOURNAL_STREAM")
                            else "%(asctime)s wgpy: %(message)s")
        try:
            path = cfgmod.find_config(args.config)
        except cfgmod.ConfigError as e:
            print(f"wgpy: {e}", file=sys.stderr)
            return 1
        if args.foreground or args.ready_fd is not None:
            return up_foreground(path, args.ready_fd)
        try:
            return up_background(path)
        except (cfgmod.ConfigError, UpError) as e:
            print(f"wgpy: {e}", file=sys.stderr)
            return 1
    return 2


def wgpyd_main(argv: list[str] | None = None) -> int:
    """`wgpyd [-f|--foreground] INTERFACE`: what wg-quick expects of a userspace implementation."""
    from .wgpyd import main as _main
    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
