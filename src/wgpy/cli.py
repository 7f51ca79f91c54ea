"""Command line: `wgpy genkey|pubkey|genpsk|up|down|show` and the `wgpyd` daemon for wg-quick.

`show` and everything else that inspects a running interface goes through the UAPI socket, the same control
path the `wg` tool uses.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
import time

from . import crypto
from .constants import PMTU_PROBE_INTERVAL
from .settings.table import LIST_KEYS

USAGE_SHOW_FIELDS = ("public-key", "private-key", "listen-port", "fwmark", "peers", "preshared-keys", "endpoints",
                     "allowed-ips", "latest-handshakes", "transfer", "persistent-keepalive", "dump", "stats",
                     "macs", "allowed-macs",   # L2 (Mode = tap) interfaces
                     "path-mtu")               # #8: each peer's path MTU


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


# ---- show ----------------------------------------------------------------------------------------------------

def _parse_get(text: str) -> tuple[dict, list[dict]]:
    """A get reply -> (device record, peer records): key -> value, the settings table's list keys -> lists
    (allowed_ip under "allowed_ips", always present in a peer)."""
    dev: dict = {}
    peers: list[dict] = []
    cur = dev
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "public_key":
            cur = {"public_key": value, "allowed_ips": []}
            peers.append(cur)
        elif key in LIST_KEYS:
            cur.setdefault("allowed_ips" if key == "allowed_ip" else key, []).append(value)
        elif key:
            cur[key] = value
    return dev, peers


def _b64(hexkey: str) -> str:
    return crypto.encode_key(bytes.fromhex(hexkey))


def _ago(seconds: int) -> str:
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {name}{'s' if n != 1 else ''}")
    return ", ".join(parts) + " ago" if parts else "Now"


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _mac_table(dev: dict, peers: list[dict]) -> list[tuple[str, str, str]]:
    """(MAC, "local" or the peer's public key, age in seconds) of an L2 interface's MAC table, by MAC."""
    rows = []
    for entry in dev.get("wgpy_local_mac", ()):
        mac, _, age = entry.partition(" ")
        rows.append((mac, "local", age))
    for p in peers:
        for entry in p.get("wgpy_mac", ()):
            mac, _, age = entry.partition(" ")
            rows.append((mac, _b64(p["public_key"]), age))
    rows.sort()
    return rows


def interfaces() -> list[str]:
    """Interfaces with a live UAPI socket in /var/run/wireguard or our own runtime directory (a socket nobody
    listens on any more is skipped, and removed when we may, as `wg` does)."""
    import socket
    from .host.privileges import search_dirs
    from .uapi.server import SOCKET_DIR
    names = set()
    for d in search_dirs(SOCKET_DIR):
        try:
            files = [f for f in os.listdir(d) if f.endswith(".sock")]
        except OSError:
            continue
        for f in files:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(os.path.join(d, f))
                names.add(f[:-5])
            except ConnectionRefusedError:
                try:
                    os.unlink(os.path.join(d, f))
                except OSError:
                    pass
            except OSError:
                names.add(f[:-5])   # e.g. another user's socket: it exists, show says why it cannot be read
            finally:
                s.close()
    return sorted(names)


def _psk(p: dict) -> str:
    psk = p.get("preshared_key", "0" * 64)
    return "(none)" if psk == "0" * 64 else _b64(psk)


def _keepalive(p: dict) -> str:
    ka = p.get("persistent_keepalive_interval", "0")
    return "off" if ka == "0" else ka


def _path_mtu(p: dict) -> str:
    mtu, _, source = p.get("wgpy_path_mtu", "(none)").partition(" ")
    source, _, probing = source.partition(" ")
    return f"{mtu}\t{source or '-'}{' (probing)' if probing else ''}"


# `wgpy show IFACE FIELD` for these fields: one line per peer, its public key, a tab, then this (as wg does)
_PEER_FIELDS = {
    "latest-handshakes": lambda p: p.get("last_handshake_time_sec", "0"),
    "transfer": lambda p: f"{p.get('rx_bytes', '0')}\t{p.get('tx_bytes', '0')}",
    "preshared-keys": _psk,
    "persistent-keepalive": _keepalive,
    "endpoints": lambda p: p.get("endpoint", "(none)"),
    "allowed-ips": lambda p: " ".join(p["allowed_ips"]) or "(none)",
    "path-mtu": _path_mtu,                                                  # #8
    "allowed-macs": lambda p: " ".join(p.get("wgpy_allowed_mac", ())) or "(any)",
}


def _show_one(name: str, field: str | None) -> int:
    from .uapi.server import request
    try:
        reply = request(name, "get=1\n")
    except OSError as e:
        print(f"wgpy: unable to access interface {name}: {e.strerror or e}", file=sys.stderr)
        return 1
    dev, peers = _parse_get(reply)
    if dev.get("errno", "0") != "0":
        print(f"wgpy: interface {name}: errno {dev['errno']}", file=sys.stderr)
        return 1
    # as wg: the human-readable listing hides private and preshared keys unless WG_HIDE_KEYS=never; the fields
    # that exist to print a key (private-key, preshared-keys, dump) print it
    hide = os.environ.get("WG_HIDE_KEYS", "always") != "never"
    pub = crypto.encode_key(crypto.public_from_private(bytes.fromhex(dev["private_key"]))) \
        if "private_key" in dev else "(none)"
    if field == "dump":
        priv = _b64(dev["private_key"]) if "private_key" in dev else "(none)"
        mark = int(dev.get("fwmark", "0"))
        print(f"{priv}\t{pub}\t{dev.get('listen_port', '0')}\t{f'{mark:#x}' if mark else 'off'}")   # as wg: hex
        for p in peers:
            print("\t".join([
                _b64(p["public_key"]), _psk(p), p.get("endpoint", "(none)"), ",".join(p["allowed_ips"]) or "(none)",
                p.get("last_handshake_time_sec", "0"), p.get("rx_bytes", "0"), p.get("tx_bytes", "0"),
                _keepalive(p)]))
        return 0
    column = _PEER_FIELDS.get(field)
    if column is not None:
        for p in peers:
            print(f"{_b64(p['public_key'])}\t{column(p)}")
        return 0
    if field == "public-key":
        print(pub)
        return 0
    if field == "private-key":
        print(_b64(dev["private_key"]) if "private_key" in dev else "(none)")
        return 0
    if field == "fwmark":
        print(f"{int(dev['fwmark']):#x}" if dev.get("fwmark", "0") != "0" else "off")
        return 0
    if field == "stats":
        return _show_stats(name)
    if field == "listen-port":
        print(dev.get("listen_port", "0"))
        return 0
    if field == "peers":
        for p in peers:
            print(_b64(p["public_key"]))
        return 0
    l2 = dev.get("wgpy_mode") == "tap"
    if field == "macs":
        for row in _mac_table(dev, peers):
            print("\t".join(row))
        return 0
    print(f"interface: {name}")
    print(f"  public key: {pub}")
    print(f"  private key: {'(hidden)' if hide else _b64(dev.get('private_key', '00' * 32))}")
    if dev.get("listen_port"):
        print(f"  listening port: {dev['listen_port']}")
    if dev.get("fwmark"):
        print(f"  fwmark: {int(dev['fwmark']):#x}")
    if l2:
        print(f"  mode: tap (Ethernet), relay {'on' if dev.get('wgpy_relay') == 'true' else 'off'}")
    if "wgpy_mtu" in dev:                                                   # #8
        mtu, _, how = dev["wgpy_mtu"].partition(" ")
        probe = float(dev.get("wgpy_mtu_probe_interval", PMTU_PROBE_INTERVAL))
        every = "" if probe == PMTU_PROBE_INTERVAL else f", re-probed every {probe:g} s" if probe else ", not re-probed"
        print(f"  mtu: {int(mtu) - (14 if l2 else 0)} "
              f"({'automatic: follows the smallest path MTU' if how == 'auto' else 'fixed'}{every})")
    _show_transport_device(dev)     # --- #7 transports
    now = time.time()
    peers.sort(key=lambda p: -int(p.get("last_handshake_time_sec", "0")))
    for p in peers:
        print()
        print(f"peer: {_b64(p['public_key'])}")
        if p.get("preshared_key", "0" * 64) != "0" * 64:
            print(f"  preshared key: {'(hidden)' if hide else _b64(p['preshared_key'])}")
        if "endpoint" in p:
            print(f"  endpoint: {p['endpoint']}")
        _show_transport_peer(p)     # --- #7 transports
        if "wgpy_last_error" in p:  # issue 20: a wrong key, a refused certificate ... (uapi/protocol.py)
            print(f"  last error: {p['wgpy_last_error']}")
        if l2:
            print(f"  allowed macs: {', '.join(p.get('wgpy_allowed_mac', ())) or '(any)'}")
        else:
            print(f"  allowed ips: {', '.join(p['allowed_ips']) or '(none)'}")
        hs = int(p.get("last_handshake_time_sec", "0"))
        if hs:
            print(f"  latest handshake: {_ago(max(0, int(now - hs)))}")
        rx, tx = int(p.get("rx_bytes", "0")), int(p.get("tx_bytes", "0"))
        if rx or tx:
            print(f"  transfer: {_bytes(rx)} received, {_bytes(tx)} sent")
        ka = int(p.get("persistent_keepalive_interval", "0"))
        if ka:
            print(f"  persistent keepalive: every {ka} second{'s' if ka != 1 else ''}")
        if "wgpy_path_mtu" in p:                                            # #8
            pm, _, src = p["wgpy_path_mtu"].partition(" ")
            src, _, probing = src.partition(" ")
            how = {"link": "link MTU, not yet lowered", "icmp": "from ICMP", "probe": "probed"}.get(src, src)
            print(f"  path mtu: {pm} ({how}{', probing' if probing else ''}"
                  f"{', peer is wgpy' if 'wgpy_peer_wgpy' in p else ''})")
    if l2:
        rows = _mac_table(dev, peers)
        print()
        print(f"mac table: {len(rows)} address{'es' if len(rows) != 1 else ''}")
        for mac, port, age in rows:
            print(f"  {mac}  {'local' if port == 'local' else 'peer ' + port:<50}  {age} s")
    return 0


# --- #7 transports: listening ports, stream endpoints and the fallback's state (uapi/transport.py keys)

def _show_transport_device(dev: dict) -> None:
    for scheme in ("tcp", "tls"):
        if dev.get(f"wgpy_listen_{scheme}"):
            print(f"  listening {scheme} port: {dev[f'wgpy_listen_{scheme}']}")


def _show_transport_peer(p: dict) -> None:
    if "wgpy_endpoint" in p:
        print(f"  endpoint: {p['wgpy_endpoint']} ({p.get('wgpy_endpoint_state', '?')})")
    if "wgpy_fallback_endpoint" not in p:
        if "wgpy_endpoint" in p:
            print(f"  transport: {p['wgpy_endpoint'].partition(':')[0]}")
        return
    counts = (f"switches {p.get('wgpy_fallback_switches', '0')}, returns {p.get('wgpy_fallback_returns', '0')}, "
              f"probes {p.get('wgpy_fallback_probes', '0')}")
    if p.get("wgpy_fallback") == "active":
        print(f"  transport: {p['wgpy_fallback_endpoint'].partition(':')[0]} (fallback active, UDP probed every "
              f"{p.get('wgpy_fallback_probe_interval', '?')} s; {counts})")
    else:
        print(f"  transport: udp (fallback {p['wgpy_fallback_endpoint']} on standby, used after "
              f"{p.get('wgpy_fallback_after', '?')} s without a handshake answer, UDP then probed every "
              f"{p.get('wgpy_fallback_probe_interval', '?')} s; {counts})")


def _show_stats(name: str) -> int:
    """wgpy extension: drop counters and table sizes of the core (UAPI `wgpy_stats=1`)."""
    from .uapi.server import request
    try:
        reply = request(name, "wgpy_stats=1\n")
    except OSError as e:
        print(f"wgpy: unable to access interface {name}: {e.strerror or e}", file=sys.stderr)
        return 1
    lines = [ln for ln in reply.splitlines() if ln]
    if not lines or lines[-1] != "errno=0":
        print(f"wgpy: interface {name}: {lines[-1] if lines else 'no reply'}", file=sys.stderr)
        return 1
    for ln in lines[:-1]:
        key, _, value = ln.partition("=")
        print(f"{key}\t{value}")
    return 0


def _show(name: str | None, field: str | None) -> int:
    if name in (None, "all", "interfaces"):
        names = interfaces()
        if name == "interfaces":
            print(" ".join(names))
            return 0
        rc = 0
        for i, n in enumerate(names):
            if i and field is None:
                print()
            rc |= _show_one(n, field)
        return rc
    return _show_one(name, field)


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
    p_show.add_argument("field", nargs="?", choices=USAGE_SHOW_FIELDS)
    args = ap.parse_args(argv)

    if args.cmd == "genkey":
        return _genkey()
    if args.cmd == "genpsk":
        return _genpsk()
    if args.cmd == "pubkey":
        return _pubkey()
    if args.cmd == "show":
        return _show(args.interface, args.field)
    if args.cmd == "down":
        from .quick import down
        return down(args.interface)
    if args.cmd == "up":
        from . import config as cfgmod
        from .quick import UpError, up_background, up_foreground
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s wgpy: %(message)s")
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
