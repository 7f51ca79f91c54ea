"""wg-quick style configuration text (``/etc/wireguard/wg0.conf``) -> InterfaceConfig, through the settings table.

Pure: text in, dataclasses out (config.py reads the file and checks the TLS files it names). Host names in
Endpoint are kept as written, never resolved. The format, as wg-quick(8)/wg(8) accept it:

* sections ``[Interface]`` and ``[Peer]`` (one per peer); section names and keys are case-insensitive;
* ``Key = Value`` lines, whitespace around ``=`` optional; ``#`` starts a comment anywhere on a line
  (in PostUp commands too, as in wg-quick); blank lines are ignored;
* list keys (Address, DNS, AllowedIPs) take comma-separated values and may repeat, values accumulate
  (like wg-quick, Address and DNS also split on whitespace); PreUp/PostUp/PreDown/PostDown may repeat
  and keep their order; every other key may be given once per interface or peer.

The keys are the INI rows of settings/table.py. With Mode = tap a peer takes no AllowedIPs: frames are switched
by MAC address, and silently ignoring a source restriction the file asks for would be worse than refusing it.
Errors are ``ConfigError``s naming file, line and key (an unknown key or section also names the closest known
one: "did you mean ListenPort?"); they never contain key material, nor the value of an unknown key.
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from .table import by_ini
from .values import Bad, redact, valid_ifname as _valid_name

__all__ = ["ConfigError", "PeerConfig", "InterfaceConfig", "parse", "interface_name_from_path"]

_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


class ConfigError(Exception):
    """A configuration problem at ``path``, ``line`` (1-based or None), ``key`` (as written or None)."""

    def __init__(self, path: str, line: int | None, key: str | None, message: str):
        message = redact(message)      # the last guard: nothing that could be a key is ever shown
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
    rate_limit: int = 0            # RateLimit, bits per second each way; 0 = none
    rate_limit_burst: int | None = None   # RateLimitBurst, bytes (None: the default for the rate)
    allowed_macs: list[bytes] = field(default_factory=list)  # Mode = tap: source MACs accepted (empty: any)
    line: int = 0  # line of the [Peer] header
    # TCP/TLS transports (docs/transports.md): (scheme, host, port) with scheme "tcp" or "tls"
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
    mtu_probe_interval: float | None = None  # seconds between path MTU re-probes (None: default, 0: off)
    peers: list[PeerConfig] = field(default_factory=list)
    # TCP/TLS transports
    listen_tcp: int | None = None
    listen_tls: int | None = None
    certificate_file: str | None = None
    key_file: str | None = None
    metrics_listen: tuple[str, int] | None = None   # MetricsListen: (address, port) of /metrics
    stun_server: tuple[str, int] | None = None      # StunServer: (address, port) asked for the public mapping
    where: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False, compare=False)  # as in PeerConfig



# every INI key of both sections (settings/table.py), by lower-case name: what parse() looks keys up in
_BY_LOWER = {"interface": by_ini("interface"), "peer": by_ini("peer")}


def parse(text: str, path: str = "<string>", name: str | None = None,
          base_dir: str | None = None) -> InterfaceConfig:
    """Parse configuration text. ``name`` defaults to the stem of ``path`` ("wg0" for "<...>" paths); relative
    file names (CertificateFile, KeyFile, TLSCAFile) are taken relative to ``base_dir`` (None: kept as written)."""
    if name is None:
        name = "wg0" if path.startswith("<") else interface_name_from_path(path)
    elif not _valid_name(name):
        raise ConfigError(path, None, None, f"invalid interface name {name!r}")

    iface: dict[str, Any] = {}
    peers: list[dict[str, Any]] = []
    public_keys: dict[bytes, int] = {}     # -> the line of its [Peer]
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
        attr, how, parser = spec.attr, spec.how, spec.parse_ini
        if how == "set" and attr in seen:
            raise ConfigError(path, lineno, key, "duplicate key")
        try:
            parsed = parser(value)
        except Bad as e:
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
            if parsed in public_keys:      # named by its line: the value may be a private key pasted twice
                raise ConfigError(path, lineno, key, f"duplicate peer (the same key as the [Peer] at line "
                                                     f"{public_keys[parsed]})")
            public_keys[parsed] = current["line"]
    close_peer()

    if "private_key" not in iface:
        raise ConfigError(path, None, "PrivateKey", "missing")
    _check_mode(path, iface, peers)
    _check_transports(path, iface, peers, base_dir)
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
    hint = _did_you_mean(key, [s.ini for s in _BY_LOWER[section].values()])
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


def _check_transports(path: str, iface: dict[str, Any], peers: list[dict[str, Any]], base: str | None) -> None:
    """ListenTCP, ListenTLS, CertificateFile, KeyFile; Endpoint = tcp:// or tls://, FallbackEndpoint and the
    TLS peer keys: which need which (docs/transports.md)."""

    def where(d: dict[str, Any], attr: str) -> tuple[int | None, str | None]:
        return d.get("where", {}).get(attr, (None, None))

    for attr in ("certificate_file", "key_file"):
        if attr in iface and base and not posixpath.isabs(iface[attr]):
            iface[attr] = posixpath.join(base, iface[attr])
    if "listen_tls" in iface and not ("certificate_file" in iface and "key_file" in iface):
        raise ConfigError(path, *where(iface, "listen_tls"), "needs CertificateFile and KeyFile")
    for attr in ("certificate_file", "key_file"):
        if attr in iface and "listen_tls" not in iface:
            raise ConfigError(path, *where(iface, attr), "only used with ListenTLS")
    for p in peers:
        ep = p.get("endpoint")
        if ep is not None and len(ep) == 3:
            p["stream_endpoint"] = p.pop("endpoint")
        if "tls_ca_file" in p and base and not posixpath.isabs(p["tls_ca_file"]):
            p["tls_ca_file"] = posixpath.join(base, p["tls_ca_file"])
        tls = any(e is not None and e[0] == "tls" for e in (p.get("stream_endpoint"), p.get("fallback_endpoint")))
        for attr in ("tls_server_name", "tls_ca_file", "tls_pin"):
            if attr in p and not tls:
                raise ConfigError(path, *where(p, attr), "only used with a tls:// Endpoint or FallbackEndpoint")
        if "tls_ca_file" in p and "tls_pin" in p:
            raise ConfigError(path, *where(p, "tls_pin"), "give TLSCAFile or TLSPin, not both")
        if "rate_limit_burst" in p and not p.get("rate_limit"):
            raise ConfigError(path, *where(p, "rate_limit_burst"), "only used with RateLimit")
        for attr in ("fallback_after", "fallback_probe_interval"):
            if attr in p and "fallback_endpoint" not in p:
                raise ConfigError(path, *where(p, attr), "needs FallbackEndpoint")
        if "fallback_endpoint" in p and "stream_endpoint" in p:
            raise ConfigError(path, *where(p, "fallback_endpoint"),
                              "the Endpoint is already a stream; FallbackEndpoint backs up a UDP Endpoint")
