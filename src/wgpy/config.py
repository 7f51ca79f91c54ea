"""wg-quick style configuration files (``/etc/wireguard/wg0.conf``): parsing, checks and UAPI rendering.

Pure: ``parse()`` turns text into dataclasses; nothing here touches the network or the clock, and only
``load()`` (reads the file) and ``check_permissions()`` (stats it) touch the file system. Host names
in Endpoint are kept as written, never resolved. The format, as wg-quick(8)/wg(8) accept it:

* sections ``[Interface]`` and ``[Peer]`` (one per peer); section names and keys are case-insensitive;
* ``Key = Value`` lines, whitespace around ``=`` optional; ``#`` starts a comment anywhere on a line
  (in PostUp commands too, as in wg-quick); blank lines are ignored;
* list keys (Address, DNS, AllowedIPs) take comma-separated values and may repeat, values accumulate
  (like wg-quick, Address and DNS also split on whitespace); PreUp/PostUp/PreDown/PostDown may repeat
  and keep their order; every other key may be given once per interface or peer.

[Interface]: PrivateKey (required), ListenPort, FwMark, Address, DNS, MTU, Table, PreUp, PostUp,
PreDown, PostDown, SaveConfig; wgpy extensions: ``MTU = auto`` (also the default: the path MTU to each
peer is discovered and the interface MTU follows the smallest), ``MTUProbeInterval = <seconds>|off``, ``Mode = tun|tap``, ``Masquerade = <uplink
interface>[, ...]`` (forward and NAT the tunnel's traffic out of those interfaces), ``User = <name or uid>``
(drop to that user once the interface is set up) and, with Mode = tap, ``Relay = on|off``.
[Peer]: PublicKey (required), PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive; wgpy extension, with
Mode = tap: AllowedMACs. With Mode = tap a peer takes no AllowedIPs: frames are switched by MAC address, and
silently ignoring a source restriction the file asks for would be worse than refusing it.
Errors are ``ConfigError``s naming file, line and key; they never contain key material.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from wgpy.crypto import KeyError_, decode_key, encode_key
from wgpy.routing.mactable import format_mac, parse_mac

__all__ = [
    "ConfigError", "PeerConfig", "InterfaceConfig", "parse", "load", "interface_name_from_path",
    "check_permissions", "to_uapi",
]


class ConfigError(Exception):
    """A configuration problem at ``path``, ``line`` (1-based or None), ``key`` (as written or None)."""

    def __init__(self, path: str, line: int | None, key: str | None, message: str):
        super().__init__(path, line, key, message)
        self.path, self.line, self.key, self.message = path, line, key, message

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return ": ".join([where] + ([self.key] if self.key is not None else []) + [self.message])


@dataclass
class PeerConfig:
    public_key: bytes
    preshared_key: bytes | None = field(default=None, repr=False)   # never in a repr (tracebacks, logs)
    endpoint: tuple[str, int] | None = None  # (host, port); host without brackets, IPs normalised
    allowed_ips: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    persistent_keepalive: int = 0  # seconds; 0 = disabled
    allowed_macs: list[bytes] = field(default_factory=list)  # Mode = tap: source MACs accepted (empty: any)
    line: int = 0  # line of the [Peer] header
    # --- #7 transports (docs/transports.md): (scheme, host, port) with scheme "tcp" or "tls"
    stream_endpoint: tuple[str, str, int] | None = None     # Endpoint = tcp://... / tls://...
    fallback_endpoint: tuple[str, str, int] | None = None   # FallbackEndpoint
    fallback_after: float | None = None
    fallback_probe_interval: float | None = None
    tls_server_name: str | None = None
    tls_ca_file: str | None = None
    tls_pin: str | None = None


@dataclass
class InterfaceConfig:
    name: str
    path: str
    private_key: bytes = field(repr=False)   # never in a repr (tracebacks, logs)
    listen_port: int | None = None
    fwmark: int = 0
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=list)
    dns_servers: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    mtu: int | None = None  # None = automatic
    table: str | None = None  # "off", "auto", a number or a name; None = not given (auto)
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False
    mode: str = "tun"
    masquerade: list[str] = field(default_factory=list)  # uplink interface names
    user: str | None = None  # user name or numeric uid to run as after setup
    relay: bool = False  # Mode = tap: forward frames between peers (the hub of a star)
    mtu_probe_interval: float | None = None  # #8: seconds between path MTU re-probes (None: default, 0: off)
    peers: list[PeerConfig] = field(default_factory=list)
    # --- #7 transports
    listen_tcp: int | None = None
    listen_tls: int | None = None
    certificate_file: str | None = None
    key_file: str | None = None


# ------------------------------------------------------------------------------------------ value parsers

class _Bad(ValueError):
    """A bad value; the message must not contain secrets."""


_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_NAME_RE = re.compile(r"[A-Za-z0-9_=+.-]{1,15}")
_TABLE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_DOMAIN_RE = re.compile(r"~?[A-Za-z0-9_.-]+")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_UAPI_ENDPOINT_RE = re.compile(r"[0-9A-Za-z.:%_\[\]-]+")


def _uint(s: str, lo: int, hi: int, what: str = "number") -> int:
    if not (s.isascii() and s.isdigit() and len(s) <= 20):
        raise _Bad(f"invalid {what} {s!r}")
    n = int(s)
    if not lo <= n <= hi:
        raise _Bad(f"{what} {n} out of range {lo}..{hi}")
    return n


def _key(s: str) -> bytes:
    try:
        return decode_key(s)
    except KeyError_:
        raise _Bad("invalid key") from None


def _choice(s: str, options: tuple[str, ...], what: str) -> str:
    if s.lower() not in options:
        raise _Bad(f"invalid {what} {s!r} (expected {' or '.join(options)})")
    return s.lower()


def _fwmark(s: str) -> int:
    if s.lower() == "off":
        return 0
    if s[:2].lower() == "0x" and 0 < len(s) - 2 <= 8 and all(c in "0123456789abcdefABCDEF" for c in s[2:]):
        return int(s, 16)
    return _uint(s, 0, 0xFFFFFFFF, "fwmark")


def _table(s: str) -> str:
    if s.lower() in ("off", "auto"):
        return s.lower()
    if s.isascii() and s.isdigit():
        return str(_uint(s, 0, 0xFFFFFFFF, "table"))
    if not _TABLE_NAME_RE.fullmatch(s):
        raise _Bad(f"invalid table {s!r}")
    return s


def _items(s: str, whitespace: bool) -> list[str]:
    return [x for x in re.split(r"[,\s]+" if whitespace else r"\s*,\s*", s.strip()) if x]


def _ip_list(s: str, make: Callable[[str], Any], whitespace: bool, what: str) -> list[Any]:
    out = []
    for item in _items(s, whitespace):
        plen = item.partition("/")[2]
        try:
            if "/" in item and not (plen.isascii() and plen.isdigit() and len(plen) <= 3):
                raise ValueError  # no netmask notation, signs or spaces
            out.append(make(item))
        except ValueError:
            raise _Bad(f"invalid {what} {item!r}") from None
    return out


def _dns(s: str) -> tuple[list[str], list[str]]:
    servers, search = [], []
    for item in _items(s, whitespace=True):
        try:
            servers.append(str(ipaddress.ip_address(item)))
        except ValueError:
            if not _DOMAIN_RE.fullmatch(item) or re.fullmatch(r"[0-9.]+", item):
                raise _Bad(f"invalid DNS server or search domain {item!r}") from None
            search.append(item)
    return servers, search


def _endpoint(s: str) -> tuple[str, int]:
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        if not sep:
            raise _Bad(f"invalid endpoint {s!r} (expected [address]:port)")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _Bad(f"invalid IPv6 address {host!r}") from None
    else:
        host, sep, port = s.rpartition(":")
        if not sep or not host:
            raise _Bad(f"invalid endpoint {s!r} (expected host:port)")
        if ":" in host:
            raise _Bad(f"invalid endpoint {s!r} (write IPv6 addresses as [address]:port)")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise _Bad(f"invalid IPv4 address {host!r}") from None
        elif len(host) > 253 or not _HOSTNAME_RE.fullmatch(host):
            raise _Bad(f"invalid host name {host!r}")
    return host, _uint(port, 1, 65535, "port")


def _mac_list(s: str) -> list[bytes]:
    out = []
    for item in _items(s, whitespace=False):
        try:
            mac = parse_mac(item)
        except ValueError:
            raise _Bad(f"invalid MAC address {item!r}") from None
        if mac[0] & 1:
            raise _Bad(f"{item!r} is a multicast address, never a source")
        out.append(mac)
    return out


def _on_off(s: str) -> bool:
    v = s.lower()
    if v in ("on", "true", "yes"):
        return True
    if v in ("off", "false", "no"):
        return False
    raise _Bad(f"invalid value {s!r} (expected on or off)")


def _ifnames(s: str) -> list[str]:
    names = _items(s, whitespace=True)
    if not names:
        raise _Bad("expected one or more interface names")
    for n in names:
        if not _valid_name(n):
            raise _Bad(f"invalid interface name {n!r}")
    return names


_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")


def _user(s: str) -> str:
    if not _USER_RE.fullmatch(s):
        raise _Bad(f"invalid user name {s!r}")
    return s


def _command(s: str) -> list[str]:
    return [s] if s else []


# lower-case key -> (attribute, how to store, value parser); "set" keys may appear once per section
_Spec = tuple[str, str, Callable[[str], Any]]
_INTERFACE_KEYS: dict[str, _Spec] = {
    "privatekey": ("private_key", "set", _key),
    "listenport": ("listen_port", "set", lambda s: _uint(s, 0, 65535, "port")),
    "fwmark": ("fwmark", "set", _fwmark),
    "address": ("addresses", "extend", lambda s: _ip_list(s, ipaddress.ip_interface, True, "address")),
    "dns": ("dns", "dns", _dns),
    "mtu": ("mtu", "set", lambda s: None if s.lower() == "auto" else _uint(s, 576, 65535, "MTU")),
    "table": ("table", "set", _table),
    "preup": ("pre_up", "extend", _command),
    "postup": ("post_up", "extend", _command),
    "predown": ("pre_down", "extend", _command),
    "postdown": ("post_down", "extend", _command),
    "saveconfig": ("save_config", "set", lambda s: _choice(s, ("true", "false"), "boolean") == "true"),
    "mode": ("mode", "set", lambda s: _choice(s, ("tun", "tap"), "mode")),
    "masquerade": ("masquerade", "extend", _ifnames),
    "user": ("user", "set", _user),
    "relay": ("relay", "set", _on_off),
    # --- #8 path MTU ---
    "mtuprobeinterval": ("mtu_probe_interval", "set",
                         lambda s: 0.0 if s.lower() == "off" else float(_uint(s, 0, 86400, "MTUProbeInterval"))),
}
_PEER_KEYS: dict[str, _Spec] = {
    "publickey": ("public_key", "set", _key),
    "presharedkey": ("preshared_key", "set", _key),
    "allowedips": ("allowed_ips", "extend",
                   lambda s: _ip_list(s, lambda x: ipaddress.ip_network(x, strict=False), False, "CIDR")),
    "endpoint": ("endpoint", "set", _endpoint),
    "persistentkeepalive": ("persistent_keepalive", "set",
                            lambda s: 0 if s.lower() == "off" else _uint(s, 0, 65535, "persistent keepalive")),
    "allowedmacs": ("allowed_macs", "extend", _mac_list),
}


# ------------------------------------------------------------------------------------------------ parsing

def parse(text: str, path: str = "<string>", name: str | None = None) -> InterfaceConfig:
    """Parse configuration text. ``name`` defaults to the stem of ``path`` ("wg0" for "<...>" paths)."""
    if name is None:
        name = "wg0" if path.startswith("<") else interface_name_from_path(path)
    elif not _valid_name(name):
        raise ConfigError(path, None, None, f"invalid interface name {name!r}")

    iface: dict[str, Any] = {}
    peers: list[dict[str, Any]] = []
    public_keys: set[bytes] = set()
    section: str | None = None
    current: dict[str, Any] | None = None  # the dict that keys of the current section go to
    iface_seen: set[str] = set()  # "set" keys given in [Interface] (the header may repeat)
    seen = iface_seen

    def close_peer() -> None:
        if section == "peer" and "public_key" not in current:
            raise ConfigError(path, current["line"], "PublicKey", "missing")

    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[\s*([^\[\]]*?)\s*\]", line)
            if not m:
                raise ConfigError(path, lineno, None, "malformed section header")
            close_peer()
            kind = m.group(1).lower()
            if kind == "interface":
                section, current, seen = "interface", iface, iface_seen
            elif kind == "peer":
                section, current, seen = "peer", {"line": lineno}, set()
                peers.append(current)
            else:
                raise ConfigError(path, lineno, None, f"unknown section [{m.group(1)}]")
            continue
        if "=" not in line:
            raise ConfigError(path, lineno, None, "expected 'Key = Value'")
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not _KEY_RE.fullmatch(key):  # e.g. "PrivateKey <base64>=" missing its '=': never echo it
            raise ConfigError(path, lineno, None, "missing key before '='" if not key else "malformed key")
        if section is None:
            raise ConfigError(path, lineno, key, "key outside any section")
        spec = (_INTERFACE_KEYS if section == "interface" else _PEER_KEYS).get(key.lower())
        if spec is None:
            raise ConfigError(path, lineno, key, "unknown key")
        attr, how, parser = spec
        if how == "set" and attr in seen:
            raise ConfigError(path, lineno, key, "duplicate key")
        try:
            parsed = parser(value)
        except _Bad as e:
            raise ConfigError(path, lineno, key, str(e)) from None
        current.setdefault("_where", {}).setdefault(attr, (lineno, key))
        if how == "set":
            seen.add(attr)
            current[attr] = parsed
        elif how == "extend":
            current.setdefault(attr, []).extend(parsed)
        else:  # dns
            current.setdefault("dns_servers", []).extend(parsed[0])
            current.setdefault("dns_search", []).extend(parsed[1])
        if attr == "public_key":
            if parsed in public_keys:
                raise ConfigError(path, lineno, key, f"duplicate peer {encode_key(parsed)}")
            public_keys.add(parsed)
    close_peer()

    if "private_key" not in iface:
        raise ConfigError(path, None, "PrivateKey", "missing")
    _check_mode(path, iface, peers)
    _check_transports(path, iface, peers)     # --- #7 transports
    iface.pop("_where", None)
    for p in peers:
        p.pop("_where", None)
    return InterfaceConfig(name=name, path=path, **iface, peers=[PeerConfig(**p) for p in peers])


def _check_mode(path: str, iface: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    """Keys that only make sense in one mode (see the module docstring)."""
    if iface.get("mode") == "tap":
        for p in peers:
            if p.get("allowed_ips"):
                line, key = p["_where"]["allowed_ips"]
                raise ConfigError(path, line, key, "not used with Mode = tap (frames are switched by MAC "
                                                   "address); restrict a peer's sources with AllowedMACs")
        return
    if "relay" in iface:
        line, key = iface["_where"]["relay"]
        raise ConfigError(path, line, key, "needs Mode = tap")
    for p in peers:
        if "allowed_macs" in p:
            line, key = p["_where"]["allowed_macs"]
            raise ConfigError(path, line, key, "needs Mode = tap")


def _valid_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name)) and name not in (".", "..")


def interface_name_from_path(path: str) -> str:
    """The interface name wg-quick derives from a config path: the file name without ``.conf``."""
    base = path.rsplit("/", 1)[-1]
    if base.endswith(".conf"):
        stem = base[:-5]
    else:
        stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    if not _valid_name(stem):
        raise ConfigError(path, None, None,
                          f"invalid interface name {stem!r} (1..15 characters of A-Z a-z 0-9 _ = + . -)")
    return stem


def load(path: str) -> InterfaceConfig:
    """Read and parse a configuration file; unreadable files raise ConfigError."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, None, "cannot read: not valid UTF-8") from None
    return parse(text, path)


def check_permissions(path: str) -> str | None:
    """wg-quick's warning if the file is accessible by others (mode & 0o007), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return f"Warning: `{path}' is world accessible" if mode & 0o007 else None


# ------------------------------------------------------------------------------------------------- UAPI

def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _uapi_endpoint(peer: PeerConfig, resolved: str | None) -> str | None:
    if resolved is None:
        return _host_port(*peer.endpoint) if peer.endpoint else None
    if not _UAPI_ENDPOINT_RE.fullmatch(resolved):
        raise ValueError(f"invalid resolved endpoint {resolved!r}")
    try:  # a bare address takes the port from the configuration
        ip = ipaddress.ip_address(resolved)
    except ValueError:
        return resolved
    return _host_port(str(ip), peer.endpoint[1]) if peer.endpoint else resolved


def to_uapi(cfg: InterfaceConfig, resolved_endpoints: dict[int, str] | None = None,
            resolved_streams: dict[int, dict[str, str]] | None = None) -> str:
    """The body of a cross-platform UAPI ``set=1`` request (without ``set=1`` and the final blank line).

    ``resolved_endpoints`` maps a peer's index in ``cfg.peers`` to its resolved endpoint, either
    "ip:port" / "[ip6]:port" or a bare IP (the configured port is then used). Peers not in it use the
    configured host as written, so the caller must resolve host names first.
    """
    resolved_endpoints = resolved_endpoints or {}
    out = [f"private_key={cfg.private_key.hex()}"]
    if cfg.listen_port is not None:
        out.append(f"listen_port={cfg.listen_port}")
    if cfg.fwmark:
        out.append(f"fwmark={cfg.fwmark}")
    out.extend(transport_uapi_device(cfg))     # --- #7 transports
    l2 = cfg.mode == "tap"
    if l2:
        out.append(f"wgpy_relay={'true' if cfg.relay else 'false'}")
    out.append("replace_peers=true")
    for i, peer in enumerate(cfg.peers):
        out.append(f"public_key={peer.public_key.hex()}")
        if peer.preshared_key is not None:
            out.append(f"preshared_key={peer.preshared_key.hex()}")
        endpoint = _uapi_endpoint(peer, resolved_endpoints.get(i))
        if endpoint is not None:
            out.append(f"endpoint={endpoint}")
        if peer.persistent_keepalive:
            out.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        out.append("replace_allowed_ips=true")
        out.extend(f"allowed_ip={net}" for net in peer.allowed_ips)
        if l2:
            out.append("wgpy_replace_allowed_macs=true")
            out.extend(f"wgpy_allowed_mac={format_mac(mac)}" for mac in peer.allowed_macs)
        out.extend(transport_uapi_peer(peer, (resolved_streams or {}).get(i)))     # --- #7 transports
    return "".join(line + "\n" for line in out)


# ------------------------------------------------------------------------------------- #7 transports
# ListenTCP, ListenTLS, CertificateFile, KeyFile ([Interface]); Endpoint = tcp://host:port or tls://host:port,
# FallbackEndpoint, FallbackAfter, FallbackProbeInterval, TLSServerName, TLSCAFile, TLSPin ([Peer]).
# File names are taken relative to the config file's directory. See docs/transports.md.

def _stream_url(s: str) -> tuple[str, str, int]:
    scheme, sep, rest = s.partition("://")
    if not sep or scheme.lower() not in ("tcp", "tls"):
        raise _Bad(f"invalid stream endpoint {s!r} (expected tcp://host:port or tls://host:port)")
    host, port = _endpoint(rest)
    return scheme.lower(), host, port


def _any_endpoint(s: str) -> tuple:
    return _stream_url(s) if "://" in s else _endpoint(s)


def _seconds(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise _Bad(f"invalid number of seconds {s!r}") from None
    if not 0.5 <= v <= 86400:
        raise _Bad(f"{s} seconds out of range 0.5..86400")
    return v


def _file(s: str) -> str:
    if not s or "\x00" in s:
        raise _Bad("expected a file name")
    return s


def _pin(s: str) -> str:
    t = s.strip()
    t = t[7:] if t.lower().startswith("sha256:") else t
    t = t.replace(":", "").lower()
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise _Bad("expected a SHA-256 certificate fingerprint (64 hex digits, colons allowed)")
    return t


def _server_name(s: str) -> str:
    if len(s) > 253 or not _HOSTNAME_RE.fullmatch(s):
        raise _Bad(f"invalid server name {s!r}")
    return s


_INTERFACE_KEYS.update({
    "listentcp": ("listen_tcp", "set", lambda s: _uint(s, 1, 65535, "port")),
    "listentls": ("listen_tls", "set", lambda s: _uint(s, 1, 65535, "port")),
    "certificatefile": ("certificate_file", "set", _file),
    "keyfile": ("key_file", "set", _file),
})
_PEER_KEYS.update({
    "endpoint": ("endpoint", "set", _any_endpoint),
    "fallbackendpoint": ("fallback_endpoint", "set", _stream_url),
    "fallbackafter": ("fallback_after", "set", _seconds),
    "fallbackprobeinterval": ("fallback_probe_interval", "set", _seconds),
    "tlsservername": ("tls_server_name", "set", _server_name),
    "tlscafile": ("tls_ca_file", "set", _file),
    "tlspin": ("tls_pin", "set", _pin),
})


def _check_transports(path: str, iface: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    base = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else None

    def where(d: dict[str, Any], attr: str) -> tuple[int | None, str | None]:
        return d.get("_where", {}).get(attr, (None, None))

    for attr in ("certificate_file", "key_file"):
        if attr in iface and base and not os.path.isabs(iface[attr]):
            iface[attr] = os.path.join(base, iface[attr])
    if "listen_tls" in iface and not ("certificate_file" in iface and "key_file" in iface):
        raise ConfigError(path, *where(iface, "listen_tls"), "needs CertificateFile and KeyFile")
    for attr in ("certificate_file", "key_file"):
        if attr in iface and "listen_tls" not in iface:
            raise ConfigError(path, *where(iface, attr), "only used with ListenTLS")
    for p in peers:
        ep = p.get("endpoint")
        if ep is not None and len(ep) == 3:
            p["stream_endpoint"] = p.pop("endpoint")
        if "tls_ca_file" in p and base and not os.path.isabs(p["tls_ca_file"]):
            p["tls_ca_file"] = os.path.join(base, p["tls_ca_file"])
        tls = any(e is not None and e[0] == "tls" for e in (p.get("stream_endpoint"), p.get("fallback_endpoint")))
        for attr in ("tls_server_name", "tls_ca_file", "tls_pin"):
            if attr in p and not tls:
                raise ConfigError(path, *where(p, attr), "only used with a tls:// Endpoint or FallbackEndpoint")
        if "tls_ca_file" in p and "tls_pin" in p:
            raise ConfigError(path, *where(p, "tls_pin"), "give TLSCAFile or TLSPin, not both")
        for attr in ("fallback_after", "fallback_probe_interval"):
            if attr in p and "fallback_endpoint" not in p:
                raise ConfigError(path, *where(p, attr), "needs FallbackEndpoint")
        if "fallback_endpoint" in p and "stream_endpoint" in p:
            raise ConfigError(path, *where(p, "fallback_endpoint"),
                              "the Endpoint is already a stream; FallbackEndpoint backs up a UDP Endpoint")


def transport_uapi_device(cfg: InterfaceConfig) -> list[str]:
    out = []
    if cfg.certificate_file:
        out += [f"wgpy_tls_cert_file={cfg.certificate_file}", f"wgpy_tls_key_file={cfg.key_file}"]
    if cfg.listen_tcp:
        out.append(f"wgpy_listen_tcp={cfg.listen_tcp}")
    if cfg.listen_tls:
        out.append(f"wgpy_listen_tls={cfg.listen_tls}")
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def transport_uapi_peer(peer: PeerConfig, resolved: dict[str, str] | None = None) -> list[str]:
    """The wgpy_* lines of one peer; `resolved` maps "endpoint"/"fallback" to the numeric address of a host
    name (the name then stays the TLS server name unless TLSServerName says otherwise)."""
    resolved = resolved or {}
    out = []
    name = peer.tls_server_name
    for key, which, ep in (("wgpy_endpoint", "endpoint", peer.stream_endpoint),
                           ("wgpy_fallback_endpoint", "fallback", peer.fallback_endpoint)):
        if ep is None:
            continue
        scheme, host, port = ep
        addr = resolved.get(which, host)
        if name is None and scheme == "tls" and not _is_ip(host):
            name = host
        out.append(f"{key}={scheme}://{_host_port(addr, port)}")
    if peer.fallback_after is not None:
        out.append(f"wgpy_fallback_after={peer.fallback_after:g}")
    if peer.fallback_probe_interval is not None:
        out.append(f"wgpy_fallback_probe_interval={peer.fallback_probe_interval:g}")
    if name is not None:
        out.append(f"wgpy_tls_server_name={name}")
    if peer.tls_ca_file:
        out.append(f"wgpy_tls_ca_file={peer.tls_ca_file}")
    if peer.tls_pin:
        out.append(f"wgpy_tls_pin={peer.tls_pin}")
    return out
