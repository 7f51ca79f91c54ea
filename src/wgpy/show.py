"""`wgpy show`: a get reply, parsed into records, rendered through one table of show fields.

The get reply is the one `wg` reads (`get=1`, keys of settings/table.py in table order). parse_get() turns it
into a device record and peer records (key -> value; the table's list keys -> lists, allowed_ip under
"allowed_ips"). FIELDS then says, for each thing `wgpy show` prints, the get keys it reads, its label in the
human-readable listing, how its value is written there and when it is shown, whether it is a secret (printed
"(hidden)" unless WG_HIDE_KEYS=never, as wg does), its name as a field mode (`wgpy show IFACE NAME`) with that
mode's value, and its column in `dump`. The listing, the field modes and dump iterate it; a new setting is shown
by adding one row (tests/unit/test_show.py checks every get key of the settings table is read by a row or listed
in NOT_SHOWN).

Rendering is pure (records and `now` in, lines out); show() does the I/O: the UAPI request, stdout, stderr.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import crypto
from .constants import PMTU_PROBE_INTERVAL
from .protocol.shaper import default_burst
from .settings.table import LIST_KEYS

__all__ = ["Field", "FIELDS", "FIELD_NAMES", "NOT_SHOWN", "View", "parse_get", "listing", "field_lines", "dump",
           "show", "show_one", "interfaces"]

ZERO_HEX_KEY = "0" * 64


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def printable(text: str) -> str:
    """`text` with every control character (C0, DEL, C1, the bidirectional overrides, line separators) written
    as an escape (\\x1b, \\u202e): what a daemon or a peer says can never drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else
                        f"\\u{ord(m.group()):04x}", text)


def parse_get(text: str) -> tuple[dict, list[dict]]:
    """A get reply -> (device record, peer records): key -> value, the settings table's list keys -> lists
    (allowed_ip under "allowed_ips", always present in a peer). Every key and value is printable()."""
    dev: dict = {}
    peers: list[dict] = []
    cur = dev
    for line in text.splitlines():
        key, _, value = printable(line).partition("=")
        if key == "public_key":
            cur = {"public_key": value, "allowed_ips": []}
            peers.append(cur)
        elif key in LIST_KEYS:
            cur.setdefault("allowed_ips" if key == "allowed_ip" else key, []).append(value)
        elif key:
            cur[key] = value
    return dev, peers


@dataclass(frozen=True)
class View:
    """What a field's functions see besides its record."""
    name: str                     # the interface
    dev: dict
    peers: list[dict]
    now: float = 0.0              # wall clock, for "latest handshake: ... ago"

    @property
    def l2(self) -> bool:
        return self.dev.get("wgpy_mode") == "tap"


Fn = Callable[[Any, View], Any]


@dataclass(frozen=True)
class Field:
    section: str                  # "interface", "peer" (one per peer), "after" (after the peers)
    keys: tuple[str, ...]         # the get keys it reads (rows of settings/table.py)
    label: str | None = None      # the listing's "  label: value" (header: "label: value"; None: the text alone)
    text: Fn | None = None        # (record, view) -> the listing's value; None: no line (None: not listed)
    secret: bool = False          # the listing says "(hidden)" unless WG_HIDE_KEYS=never
    header: bool = False          # starts its section's block (peer: after a blank line; the key column)
    mode: str = "both"            # listed on "l3" or "l2" interfaces only ("both": on every one)
    name: str | None = None       # the field mode `wgpy show IFACE NAME`
    column: Fn | None = None      # (record, view) -> that mode's value (per peer: after the key and a tab;
                                  #  "after": a list of lines)
    dump: int | None = None       # position in the section's `dump` line
    dump_column: Fn | None = None  # dump's value, when it is not `column`'s


# ---- value formats ------------------------------------------------------------------------------------------

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


def _public_key(d: dict, v: View) -> str:
    return crypto.encode_key(crypto.public_from_private(bytes.fromhex(d["private_key"]))) \
        if "private_key" in d else "(none)"


def _fwmark(d: dict, v: View) -> str:
    return f"{int(d['fwmark']):#x}" if d.get("fwmark", "0") != "0" else "off"    # as wg: hex


def _mtu(d: dict, v: View) -> str | None:
    if "wgpy_mtu" not in d:
        return None
    mtu, _, how = d["wgpy_mtu"].partition(" ")
    probe = float(d.get("wgpy_mtu_probe_interval", PMTU_PROBE_INTERVAL))
    every = "" if probe == PMTU_PROBE_INTERVAL else f", re-probed every {probe:g} s" if probe else ", not re-probed"
    return (f"{int(mtu) - (14 if v.l2 else 0)} "
            f"({'automatic: follows the path MTUs of the peers' if how == 'auto' else 'fixed'}{every})")


def _psk(p: dict, v: View | None = None) -> str:
    psk = p.get("preshared_key", ZERO_HEX_KEY)
    return "(none)" if psk == ZERO_HEX_KEY else _b64(psk)


def _keepalive(p: dict, v: View | None = None) -> str:
    ka = p.get("persistent_keepalive_interval", "0")
    return "off" if ka == "0" else ka


def _every(p: dict, v: View) -> str | None:
    ka = int(p.get("persistent_keepalive_interval", "0"))
    return f"every {ka} second{'s' if ka != 1 else ''}" if ka else None


def _transfer(p: dict, v: View) -> str | None:
    rx, tx = int(p.get("rx_bytes", "0")), int(p.get("tx_bytes", "0"))
    return f"{_bytes(rx)} received, {_bytes(tx)} sent" if rx or tx else None


def _handshake(p: dict, v: View) -> str | None:
    hs = int(p.get("last_handshake_time_sec", "0"))
    return _ago(max(0, int(v.now - hs))) if hs else None


def _rate(bits: int) -> str:
    for unit, size in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bits >= size:
            return f"{bits / size:g} {unit}"
    return f"{bits} bit/s"


def _rate_limit(p: dict, v: View) -> str | None:
    """RateLimit: the rate, the bucket (given or the default for the rate), what it dropped each way."""
    if "wgpy_rate_limit" not in p:
        return None
    bits = int(p["wgpy_rate_limit"])
    given = int(p.get("wgpy_rate_limit_burst", "0"))
    burst = f"burst {_bytes(given)}" if given else f"burst {_bytes(default_burst(bits))} (default)"
    sent, _, received = p.get("wgpy_rate_limit_dropped", "0 0").partition(" ")
    return f"{_rate(bits)} each way, {burst}; dropped {sent} sent, {received or '0'} received"


def _stream_endpoint(p: dict, v: View) -> str | None:
    return f"{p['wgpy_endpoint']} ({p.get('wgpy_endpoint_state', '?')})" if "wgpy_endpoint" in p else None


def _transport(p: dict, v: View) -> str | None:
    """The stream transport or the fallback's state (uapi/transport.py keys)."""
    if "wgpy_fallback_endpoint" not in p:
        return p["wgpy_endpoint"].partition(":")[0] if "wgpy_endpoint" in p else None
    counts = (f"switches {p.get('wgpy_fallback_switches', '0')}, returns {p.get('wgpy_fallback_returns', '0')}, "
              f"probes {p.get('wgpy_fallback_probes', '0')}")
    if p.get("wgpy_fallback") == "active":
        return (f"{p['wgpy_fallback_endpoint'].partition(':')[0]} (fallback active, UDP probed every "
                f"{p.get('wgpy_fallback_probe_interval', '?')} s; {counts})")
    return (f"udp (fallback {p['wgpy_fallback_endpoint']} on standby, used after "
            f"{p.get('wgpy_fallback_after', '?')} s without a handshake answer, UDP then probed every "
            f"{p.get('wgpy_fallback_probe_interval', '?')} s; {counts})")


def path_mtu_column(p: dict, v: View | None = None) -> str:
    """`wgpy show IFACE path-mtu`: bytes, a tab, how it was learned (link, icmp, probe), " (probing)"."""
    mtu, _, source = p.get("wgpy_path_mtu", "(none)").partition(" ")
    source, _, probing = source.partition(" ")
    return f"{mtu}\t{source or '-'}{' (probing)' if probing else ''}"


def _path_mtu(p: dict, v: View) -> str | None:
    if "wgpy_path_mtu" not in p:
        return None
    pm, _, src = p["wgpy_path_mtu"].partition(" ")
    src, _, probing = src.partition(" ")
    how = {"link": "link MTU, not yet lowered", "icmp": "from ICMP", "probe": "probed"}.get(src, src)
    return f"{pm} ({how}{', probing' if probing else ''}{', peer is wgpy' if 'wgpy_peer_wgpy' in p else ''})"


def mac_table(dev: dict, peers: list[dict]) -> list[tuple[str, str, str]]:
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


def _mac_table_text(d: dict, v: View) -> str:
    rows = mac_table(v.dev, v.peers)
    lines = ["", f"mac table: {len(rows)} address{'es' if len(rows) != 1 else ''}"]
    lines += [f"  {mac}  {'local' if port == 'local' else 'peer ' + port:<50}  {age} s" for mac, port, age in rows]
    return "\n".join(lines)


# ---- the fields, in listing order -----------------------------------------------------------------------------

F = Field
I, P = "interface", "peer"

FIELDS: tuple[Field, ...] = (
    F(I, (), "interface", lambda d, v: v.name, header=True),
    F(I, ("private_key",), "public key", _public_key, name="public-key", column=_public_key, dump=1),
    F(I, ("private_key",), "private key", lambda d, v: _b64(d.get("private_key", "00" * 32)), secret=True,
      name="private-key", column=lambda d, v: _b64(d["private_key"]) if "private_key" in d else "(none)", dump=0),
    F(I, ("listen_port",), "listening port", lambda d, v: d.get("listen_port") or None,
      name="listen-port", column=lambda d, v: d.get("listen_port", "0"), dump=2),
    F(I, ("fwmark",), "fwmark", lambda d, v: f"{int(d['fwmark']):#x}" if d.get("fwmark") else None,
      name="fwmark", column=_fwmark, dump=3, dump_column=lambda d, v: f"{int(d.get('fwmark', '0')):#x}"
      if int(d.get("fwmark", "0")) else "off"),
    F(I, ("wgpy_mode", "wgpy_relay"), "mode", mode="l2",
      text=lambda d, v: f"tap (Ethernet), relay {'on' if d.get('wgpy_relay') == 'true' else 'off'}"),
    F(I, ("wgpy_mtu", "wgpy_mtu_probe_interval"), "mtu", _mtu),
    F(I, ("wgpy_listen_tcp",), "listening tcp port", lambda d, v: d.get("wgpy_listen_tcp") or None),
    F(I, ("wgpy_listen_tls",), "listening tls port", lambda d, v: d.get("wgpy_listen_tls") or None),
    F(I, ("wgpy_metrics_listen",), "metrics", lambda d, v: f"http://{d['wgpy_metrics_listen']}/metrics"
      if d.get("wgpy_metrics_listen") else None),
    F(I, ("wgpy_stun_server", "wgpy_stun_mapped"), "public address",
      lambda d, v: f"{d.get('wgpy_stun_mapped') or '(asking)'} (STUN {d['wgpy_stun_server']})"
      if d.get("wgpy_stun_server") else None),

    F(P, ("public_key",), "peer", lambda p, v: _b64(p["public_key"]), header=True,
      name="peers", column=lambda p, v: _b64(p["public_key"]), dump=0),
    F(P, ("preshared_key",), "preshared key", lambda p, v: _psk(p) if p.get("preshared_key", ZERO_HEX_KEY)
      != ZERO_HEX_KEY else None, secret=True, name="preshared-keys", column=_psk, dump=1),
    F(P, ("endpoint",), "endpoint", lambda p, v: p.get("endpoint"),
      name="endpoints", column=lambda p, v: p.get("endpoint", "(none)"), dump=2),
    F(P, ("wgpy_endpoint_name",), "endpoint name", lambda p, v: p.get("wgpy_endpoint_name")),
    F(P, ("wgpy_endpoint", "wgpy_endpoint_state"), "endpoint", _stream_endpoint),
    F(P, ("wgpy_endpoint", "wgpy_fallback_endpoint", "wgpy_fallback", "wgpy_fallback_after",
          "wgpy_fallback_probe_interval", "wgpy_fallback_switches", "wgpy_fallback_returns", "wgpy_fallback_probes"),
      "transport", _transport),
    F(P, ("wgpy_last_error",), "last error", lambda p, v: p.get("wgpy_last_error")),
    F(P, ("allowed_ip",), "allowed ips", lambda p, v: ", ".join(p["allowed_ips"]) or "(none)", mode="l3",
      name="allowed-ips", column=lambda p, v: " ".join(p["allowed_ips"]) or "(none)",
      dump=3, dump_column=lambda p, v: ",".join(p["allowed_ips"]) or "(none)"),
    F(P, ("wgpy_allowed_mac",), "allowed macs", lambda p, v: ", ".join(p.get("wgpy_allowed_mac", ())) or "(any)",
      mode="l2", name="allowed-macs", column=lambda p, v: " ".join(p.get("wgpy_allowed_mac", ())) or "(any)"),
    F(P, ("last_handshake_time_sec",), "latest handshake", _handshake,
      name="latest-handshakes", column=lambda p, v: p.get("last_handshake_time_sec", "0"), dump=4),
    F(P, ("rx_bytes", "tx_bytes"), "transfer", _transfer,
      name="transfer", column=lambda p, v: f"{p.get('rx_bytes', '0')}\t{p.get('tx_bytes', '0')}", dump=5),
    F(P, ("persistent_keepalive_interval",), "persistent keepalive", _every,
      name="persistent-keepalive", column=_keepalive, dump=6),
    F(P, ("wgpy_rate_limit", "wgpy_rate_limit_burst", "wgpy_rate_limit_dropped"), "rate limit", _rate_limit),
    F(P, ("wgpy_path_mtu", "wgpy_peer_wgpy"), "path mtu", _path_mtu, name="path-mtu", column=path_mtu_column),

    F("after", ("wgpy_local_mac", "wgpy_mac"), None, _mac_table_text, mode="l2",
      name="macs", column=lambda d, v: ["\t".join(row) for row in mac_table(v.dev, v.peers)]),
)

# get keys `wgpy show` reads through no field: wg shows none of the first two either; the "mtu" line says
# "automatic" from wgpy_mtu's own "auto" (the mode's floor is the host's business)
NOT_SHOWN = frozenset({"protocol_version", "last_handshake_time_nsec", "wgpy_mtu_auto", "wgpy_mtu_min"})

# the field modes, in the order of the usage message (wg's, then wgpy's); "dump" and "stats" are not one field
FIELD_NAMES = ("public-key", "private-key", "listen-port", "fwmark", "peers", "preshared-keys", "endpoints",
               "allowed-ips", "latest-handshakes", "transfer", "persistent-keepalive", "dump", "stats",
               "macs", "allowed-macs",   # L2 (Mode = tap) interfaces
               "path-mtu")               # each peer's path MTU

_BY_NAME = {f.name: f for f in FIELDS if f.name}


def _section(section: str) -> list[Field]:
    return [f for f in FIELDS if f.section == section]


def _lines(f: Field, rec: dict, view: View, hide: bool, out: list[str]) -> None:
    if f.text is None or f.mode not in ("both", "l2" if view.l2 else "l3"):
        return
    value = f.text(rec, view)
    if value is None:
        return
    if f.secret and hide:
        value = "(hidden)"
    if f.label is None:
        out.append(value)
    elif f.header:
        if out:
            out.append("")
        out.append(f"{f.label}: {value}")
    else:
        out.append(f"  {f.label}: {value}")


def listing(name: str, dev: dict, peers: list[dict], now: float, hide: bool = True) -> list[str]:
    """The human-readable listing of one interface (peers with the latest handshake first), as `wg show`."""
    peers = sorted(peers, key=lambda p: -int(p.get("last_handshake_time_sec", "0")))
    view = View(name, dev, peers, now)
    out: list[str] = []
    for f in _section(I):
        _lines(f, dev, view, hide, out)
    for p in peers:
        for f in _section(P):
            _lines(f, p, view, hide, out)
    for f in _section("after"):
        _lines(f, dev, view, hide, out)
    return out


def dump(name: str, dev: dict, peers: list[dict]) -> list[str]:
    """`wgpy show IFACE dump`: as `wg show IFACE dump`, one tab-separated line for the interface, one per peer."""
    view = View(name, dev, peers)

    def line(section: str, rec: dict) -> str:
        cols = sorted((f for f in _section(section) if f.dump is not None), key=lambda f: f.dump)
        return "\t".join((f.dump_column or f.column)(rec, view) for f in cols)
    return [line(I, dev)] + [line(P, p) for p in peers]


def field_lines(field: str, name: str, dev: dict, peers: list[dict]) -> list[str]:
    """`wgpy show IFACE FIELD` for a field of the get record: per peer its public key, a tab, the value."""
    if field == "dump":
        return dump(name, dev, peers)
    f = _BY_NAME[field]
    view = View(name, dev, peers)
    if f.section == P:
        return [f.column(p, view) if f.header else f"{_b64(p['public_key'])}\t{f.column(p, view)}" for p in peers]
    if f.section == "after":
        return f.column(dev, view)
    return [f.column(dev, view)]


# ---- the I/O: the UAPI socket, stdout --------------------------------------------------------------------------

def interfaces() -> list[str]:
    """Interfaces with a live UAPI socket in /var/run/wireguard or our own runtime directory (a socket nobody
    listens on any more is skipped, and removed when we may, as `wg` does)."""
    import socket
    from .host.privileges import search_dirs
    from .quick.down import check_interface_name
    from .uapi.server import SOCKET_DIR
    names = set()
    for d in search_dirs(SOCKET_DIR):        # trusted directories only: never /tmp for root
        try:
            files = [f for f in os.listdir(d) if f.endswith(".sock") and check_interface_name(f[:-5]) is None]
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


def show_one(name: str, field: str | None) -> int:
    from .uapi.server import request
    try:
        reply = request(name, "get=1\n")
    except OSError as e:
        print(f"wgpy: unable to access interface {name}: {e.strerror or e}", file=sys.stderr)
        return 1
    dev, peers = parse_get(reply)
    if dev.get("errno", "0") != "0":
        print(f"wgpy: interface {name}: errno {dev['errno']}", file=sys.stderr)
        return 1
    if field == "stats":
        return _show_stats(name)
    try:
        if field is None:
            # as wg: the listing hides private and preshared keys unless WG_HIDE_KEYS=never; the fields that
            # exist to print a key (private-key, preshared-keys, dump) print it
            lines = listing(name, dev, peers, time.time(), os.environ.get("WG_HIDE_KEYS", "always") != "never")
        else:
            lines = field_lines(field, name, dev, peers)
    except (ValueError, KeyError, TypeError, IndexError) as e:     # a key that is not hex, a count not a number
        print(f"wgpy: interface {name}: malformed reply from its daemon ({type(e).__name__})", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _show_stats(name: str) -> int:
    """wgpy extension: drop counters and table sizes of the core (UAPI `wgpy_stats=1`)."""
    from .uapi.server import request
    try:
        reply = request(name, "wgpy_stats=1\n")
    except OSError as e:
        print(f"wgpy: unable to access interface {name}: {e.strerror or e}", file=sys.stderr)
        return 1
    lines = [printable(ln) for ln in reply.splitlines() if ln]
    if not lines or lines[-1] != "errno=0":
        print(f"wgpy: interface {name}: {lines[-1] if lines else 'no reply'}", file=sys.stderr)
        return 1
    for ln in lines[:-1]:
        key, _, value = ln.partition("=")
        print(f"{key}\t{value}")
    return 0


def show(name: str | None, field: str | None) -> int:
    """`wgpy show [IFACE|all|interfaces] [FIELD]`."""
    if name in (None, "all", "interfaces"):
        names = interfaces()
        if name == "interfaces":
            print(" ".join(names))
            return 0
        rc = 0
        for i, n in enumerate(names):
            if i and field is None:
                print()
            rc |= show_one(n, field)
        return rc
    from .quick.down import check_interface_name
    why = check_interface_name(name)     # a name becomes a socket path: never `../..`
    if why is not None:
        print(f"wgpy: {why}", file=sys.stderr)
        return 1
    return show_one(name, field)
