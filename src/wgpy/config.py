"""wg-quick style configuration files (``/etc/wireguard/wg0.conf``): parsing, checks and UAPI rendering.

Pure: ``parse()`` turns text into dataclasses; nothing here touches the network or the clock, and only
``load()`` (reads the file and, through ``check_files()``, the TLS files it names), ``check_permissions()``
(stats it) and ``find_config()`` (looks for ``NAME.conf``) touch the file system. Host names
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
Errors are ``ConfigError``s naming file, line and key (an unknown key or section also names the closest known
one: "did you mean ListenPort?"); they never contain key material, nor the value of an unknown key.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from wgpy.crypto import KeyError_, decode_key, encode_key
from wgpy.routing.mactable import format_mac, parse_mac

__all__ = [
    "ConfigError", "PeerConfig", "InterfaceConfig", "parse", "load", "interface_name_from_path",
    "check_permissions", "check_files", "find_config", "parse_pin", "to_uapi",
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
    # the line and the key as written of every key given: attribute -> (line, key); for errors found after parse()
    where: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False, compare=False)


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
    where: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False, compare=False)  # as in PeerConfig


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


# key as documented -> (attribute, how to store, value parser); "set" keys may appear once per section. Keys are
# case-insensitive (looked up in _BY_LOWER); the spelling here is the one "did you mean" suggests.
_Spec = tuple[str, str, Callable[[str], Any]]
_INTERFACE_KEYS: dict[str, _Spec] = {
    "PrivateKey": ("private_key", "set", _key),
    "ListenPort": ("listen_port", "set", lambda s: _uint(s, 0, 65535, "port")),
    "FwMark": ("fwmark", "set", _fwmark),
    "Address": ("addresses", "extend", lambda s: _ip_list(s, ipaddress.ip_interface, True, "address")),
    "DNS": ("dns", "dns", _dns),
    "MTU": ("mtu", "set", lambda s: None if s.lower() == "auto" else _uint(s, 576, 65535, "MTU")),
    "Table": ("table", "set", _table),
    "PreUp": ("pre_up", "extend", _command),
    "PostUp": ("post_up", "extend", _command),
    "PreDown": ("pre_down", "extend", _command),
    "PostDown": ("post_down", "extend", _command),
    "SaveConfig": ("save_config", "set", lambda s: _choice(s, ("true", "false"), "boolean") == "true"),
    "Mode": ("mode", "set", lambda s: _choice(s, ("tun", "tap"), "mode")),
    "Masquerade": ("masquerade", "extend", _ifnames),
    "User": ("user", "set", _user),
    "Relay": ("relay", "set", _on_off),
    # --- #8 path MTU ---
    "MTUProbeInterval": ("mtu_probe_interval", "set",
                         lambda s: 0.0 if s.lower() == "off" else float(_uint(s, 0, 86400, "MTUProbeInterval"))),
}
_PEER_KEYS: dict[str, _Spec] = {
    "PublicKey": ("public_key", "set", _key),
    "PresharedKey": ("preshared_key", "set", _key),
    "AllowedIPs": ("allowed_ips", "extend",
                   lambda s: _ip_list(s, lambda x: ipaddress.ip_network(x, strict=False), False, "CIDR")),
    "Endpoint": ("endpoint", "set", _endpoint),
    "PersistentKeepalive": ("persistent_keepalive", "set",
                            lambda s: 0 if s.lower() == "off" else _uint(s, 0, 65535, "persistent keepalive")),
    "AllowedMACs": ("allowed_macs", "extend", _mac_list),
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
                hint = _did_you_mean(m.group(1), _SECTIONS)
                raise ConfigError(path, lineno, None, f"unknown section [{m.group(1)}]"
                                                      + (f" (did you mean [{hint}]?)" if hint else ""))
            continue
        if "=" not in line:
            raise ConfigError(path, lineno, None, "expected 'Key = Value'")
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not _KEY_RE.fullmatch(key):  # e.g. "PrivateKey <base64>=" missing its '=': never echo it
            raise ConfigError(path, lineno, None, "missing key before '='" if not key else "malformed key")
        if section is None:
            raise ConfigError(path, lineno, key, "key outside any section")
        spec = _BY_LOWER[section].get(key.lower())
        if spec is None:
            raise ConfigError(path, lineno, key, _unknown_key(key, section))  # never the value: it may be a key
        attr, how, parser = spec
        if how == "set" and attr in seen:
            raise ConfigError(path, lineno, key, "duplicate key")
        try:
            parsed = parser(value)
        except _Bad as e:
            raise ConfigError(path, lineno, key, str(e)) from None
        current.setdefault("where", {}).setdefault(attr, (lineno, key))
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
    return InterfaceConfig(name=name, path=path, **iface, peers=[PeerConfig(**p) for p in peers])


_SECTIONS = ("Interface", "Peer")


def _did_you_mean(word: str, names: Any) -> str | None:
    """The known name closest to ``word`` (case-insensitive, difflib), or None."""
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def _unknown_key(key: str, section: str) -> str:
    other = "peer" if section == "interface" else "interface"
    if key.lower() in _BY_LOWER[other]:
        return f"unknown key in [{section.title()}] (it belongs in the [{other.title()}] section)"
    hint = _did_you_mean(key, _INTERFACE_KEYS if section == "interface" else _PEER_KEYS)
    return f"unknown key (did you mean {hint}?)" if hint else "unknown key"


def _check_mode(path: str, iface: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    """Keys that only make sense in one mode (see the module docstring)."""
    if iface.get("mode") == "tap":
        for p in peers:
            if p.get("allowed_ips"):
                line, key = p["where"]["allowed_ips"]
                raise ConfigError(path, line, key, "not used with Mode = tap (frames are switched by MAC "
                                                   "address); restrict a peer's sources with AllowedMACs")
        return
    if "relay" in iface:
        line, key = iface["where"]["relay"]
        raise ConfigError(path, line, key, "needs Mode = tap")
    for p in peers:
        if "allowed_macs" in p:
            line, key = p["where"]["allowed_macs"]
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


# where `wgpy up NAME` looks for NAME.conf, in this order: wg-quick's directory first
CONFIG_DIRS = ("/etc/wireguard", "/etc/wgpy")


def find_config(name_or_path: str, search_dirs: tuple[str, ...] = CONFIG_DIRS) -> str:
    """The file `wgpy up` reads. As wg-quick, it takes a path or an interface name: an argument with a '/' or
    ending in ``.conf`` (``./wg0.conf``, ``wg0.conf``) is a path and returned as is; a bare interface name
    (``wg0``) is the first ``DIR/wg0.conf`` that exists, DIR in ``search_dirs``. Raises ConfigError listing
    where it looked when there is none."""
    if "/" in name_or_path or name_or_path.endswith(".conf") or not _valid_name(name_or_path):
        return name_or_path
    tried = [os.path.join(d, f"{name_or_path}.conf") for d in search_dirs]
    for candidate in tried:
        if os.path.lexists(candidate):
            return candidate
    here = f" (for the file {name_or_path} in this directory, write ./{name_or_path})" \
        if os.path.lexists(name_or_path) else ""
    raise ConfigError(name_or_path, None, None,
                      f"no configuration file for interface {name_or_path}: looked for {', '.join(tried)}{here}")


def load(path: str) -> InterfaceConfig:
    """Read and parse a configuration file, then check the files it names (check_files); unreadable files
    raise ConfigError."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, None, "cannot read: not valid UTF-8") from None
    cfg = parse(text, path)
    check_files(cfg)
    return cfg


def check_permissions(path: str) -> str | None:
    """wg-quick's warning if the file (it holds the private key) is accessible by others (mode & 0o007), and the
    same for its group (mode & 0o070), as `wg` would warn about a key file; else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o007:
        return f"Warning: `{path}' is world accessible"
    if mode & 0o070:
        return f"Warning: `{path}' is group accessible"
    return None


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


_PIN_PREFIX = re.compile(r"sha-?256(?:\s*fingerprint)?\s*[=:]\s*", re.IGNORECASE)


def parse_pin(text: str) -> bytes:
    """A certificate's SHA-256 fingerprint, for TLSPin and the UAPI's wgpy_tls_pin (one parser for both): as
    `openssl x509 -noout -fingerprint -sha256 -in cert.pem` prints it (``sha256 Fingerprint=AB:CD:...``, older
    versions ``SHA256 Fingerprint=...``), or its 64 hex digits alone, in any case, colons optional, a
    ``sha256:`` prefix allowed. Raises ValueError saying how to write one (never echoing the text)."""
    t = text.strip()
    m = _PIN_PREFIX.match(t)
    t = t[m.end():] if m else t
    t = t.replace(":", "")
    if len(t) != 64 or any(c not in "0123456789abcdefABCDEF" for c in t):
        raise _Bad("expected the certificate's SHA-256 fingerprint, as `openssl x509 -noout -fingerprint -sha256 "
                   "-in cert.pem` prints it (or its 64 hex digits)")
    return bytes.fromhex(t)


def _pin(s: str) -> str:
    return parse_pin(s).hex()


def _server_name(s: str) -> str:
    if len(s) > 253 or not _HOSTNAME_RE.fullmatch(s):
        raise _Bad(f"invalid server name {s!r}")
    return s


_INTERFACE_KEYS.update({
    "ListenTCP": ("listen_tcp", "set", lambda s: _uint(s, 1, 65535, "port")),
    "ListenTLS": ("listen_tls", "set", lambda s: _uint(s, 1, 65535, "port")),
    "CertificateFile": ("certificate_file", "set", _file),
    "KeyFile": ("key_file", "set", _file),
})
_PEER_KEYS.update({
    "Endpoint": ("endpoint", "set", _any_endpoint),
    "FallbackEndpoint": ("fallback_endpoint", "set", _stream_url),
    "FallbackAfter": ("fallback_after", "set", _seconds),
    "FallbackProbeInterval": ("fallback_probe_interval", "set", _seconds),
    "TLSServerName": ("tls_server_name", "set", _server_name),
    "TLSCAFile": ("tls_ca_file", "set", _file),
    "TLSPin": ("tls_pin", "set", _pin),
})


def _check_transports(path: str, iface: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    base = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else None

    def where(d: dict[str, Any], attr: str) -> tuple[int | None, str | None]:
        return d.get("where", {}).get(attr, (None, None))

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


# ---------------------------------------------------------------------------------- #7 transports: TLS files
# load() reads the files the config names, so that a missing, unreadable or wrong one is reported with the line and
# key naming it before anything is set up (the daemon could only answer errno=-22 to the UAPI set). The checks are
# the ones the daemon's ssl calls make (io/stream.py server_context, client_context), done first with the same
# calls; when one fails, the files are examined to say which is wrong and how. Nothing read is ever echoed: a key
# file is a secret.

_PEM_MAX = 1 << 20      # bytes read of one PEM file (a certificate chain is a few KB)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_SWAPPED = "are KeyFile and CertificateFile swapped?"


def check_files(cfg: InterfaceConfig) -> None:
    """Check the TLS files ``cfg`` names: with ListenTLS, CertificateFile and KeyFile (readable, a PEM certificate
    and an unencrypted PEM private key of that certificate); each peer's TLSCAFile (readable, PEM certificates).
    Raises ConfigError naming the config file, the line and the key."""
    if cfg.listen_tls is not None and cfg.certificate_file and cfg.key_file:
        _check_server_files(cfg)
    for peer in cfg.peers:
        if peer.tls_ca_file:
            _check_ca_file(cfg.path, peer)


def _where(where: dict[str, tuple[int, str]], attr: str, key: str) -> tuple[int | None, str]:
    return where.get(attr, (None, key))


def _read_pem(path: str, at: tuple[int | None, str], file: str) -> tuple[bytes, list[bytes]]:
    """The file's bytes and the labels of its PEM blocks ("CERTIFICATE", "PRIVATE KEY", ...)."""
    try:
        with open(file, "rb") as f:
            data = f.read(_PEM_MAX + 1)
    except OSError as e:
        raise ConfigError(path, *at, f"cannot read {file!r}: {e.strerror or e}") from None
    if len(data) > _PEM_MAX:
        raise ConfigError(path, *at, f"{file!r} is too large for a PEM file (over {_PEM_MAX >> 20} MiB)")
    return data, [m.group(1) for m in _PEM_BLOCK.finditer(data)]


def _ssl_reason(e: OSError) -> str:
    reason = getattr(e, "reason", None)
    return reason.lower().replace("_", " ") if isinstance(reason, str) else (e.strerror or str(e))


def _check_server_files(cfg: InterfaceConfig) -> None:
    import ssl
    cert_at = _where(cfg.where, "certificate_file", "CertificateFile")
    key_at = _where(cfg.where, "key_file", "KeyFile")
    cert_file, key_file = cfg.certificate_file, cfg.key_file
    cert_data, cert_labels = _read_pem(cfg.path, cert_at, cert_file)
    key_data, key_labels = _read_pem(cfg.path, key_at, key_file)
    if b"ENCRYPTED PRIVATE KEY" in key_labels or b"Proc-Type: 4,ENCRYPTED" in key_data:
        raise ConfigError(cfg.path, *key_at, f"{key_file!r} is encrypted with a passphrase, which the daemon cannot "
                                             f"ask for; decrypt it: openssl pkey -in {key_file} -out key.pem")
    if not any(label.endswith(b"PRIVATE KEY") for label in key_labels):
        hint = f" (it holds a certificate: {_SWAPPED})" if b"CERTIFICATE" in key_labels else ""
        raise ConfigError(cfg.path, *key_at, f"{key_file!r} is not a PEM private key "
                                             f"(no -----BEGIN PRIVATE KEY----- block){hint}")
    if b"CERTIFICATE" not in cert_labels:
        hint = f" (it holds a private key: {_SWAPPED})" \
            if any(label.endswith(b"PRIVATE KEY") for label in cert_labels) else ""
        raise ConfigError(cfg.path, *cert_at, f"{cert_file!r} is not a PEM certificate "
                                              f"(no -----BEGIN CERTIFICATE----- block){hint}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(cert_file, key_file, password=lambda: b"")   # never a passphrase prompt
        return
    except OSError as e:     # ssl.SSLError included
        reason = _ssl_reason(e)
    raise ConfigError(cfg.path, *_diagnose_server_files(cert_file, cert_data, key_file, key_data,
                                                        cert_at, key_at, reason))


def _diagnose_server_files(cert_file: str, cert_data: bytes, key_file: str, key_data: bytes,
                           cert_at: tuple[int | None, str], key_at: tuple[int | None, str],
                           reason: str) -> tuple[int | None, str, str]:
    """Why ssl refused the pair, as (line, key, message): which file cannot be read as what it should be, or
    that the key is not the certificate's."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_pem = next(m.group(0) for m in _PEM_BLOCK.finditer(key_data) if m.group(1).endswith(b"PRIVATE KEY"))
    cert_pem = next(m.group(0) for m in _PEM_BLOCK.finditer(cert_data) if m.group(1) == b"CERTIFICATE")  # the leaf
    try:
        key = serialization.load_pem_private_key(key_pem, password=None).public_key().public_bytes(*spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return (*key_at, f"{key_file!r}: the private key in it cannot be read (damaged, or of an unsupported type)")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(*spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return (*cert_at, f"{cert_file!r}: the certificate in it cannot be read (damaged, or of an unsupported "
                          f"type)")
    if key != cert:
        line = f", line {cert_at[0]}" if cert_at[0] else ""
        return (*key_at, f"{key_file!r} does not match the certificate {cert_file!r} (CertificateFile{line}): "
                         f"they are not one key pair")
    return (*cert_at, f"{cert_file!r} and {key_file!r} cannot be used for TLS ({reason})")


def _check_ca_file(path: str, peer: PeerConfig) -> None:
    import ssl
    at = _where(peer.where, "tls_ca_file", "TLSCAFile")
    _, labels = _read_pem(path, at, peer.tls_ca_file)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=peer.tls_ca_file)
    except OSError as e:
        hint = "" if labels else " (no -----BEGIN CERTIFICATE----- block)"
        raise ConfigError(path, *at, f"{peer.tls_ca_file!r} is not a file of PEM CA certificates{hint}: "
                                     f"{_ssl_reason(e)}") from None


# every key of both tables (with #7's), by lower-case name: what parse() looks keys up in
_BY_LOWER: dict[str, dict[str, _Spec]] = {
    "interface": {k.lower(): v for k, v in _INTERFACE_KEYS.items()},
    "peer": {k.lower(): v for k, v in _PEER_KEYS.items()},
}
