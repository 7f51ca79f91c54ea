"""Value types of the settings table, parsed once: keys, CIDRs, endpoints, URLs, pins, durations, ports, fwmarks,
MACs, booleans. Pure (no os, socket, ssl or time): text in, values out.

Two spellings per type: the INI one (wg-quick files: base64 keys, host names, `off`) and the UAPI one (hex keys,
numeric endpoints, `true`). Every parser raises `Bad` with a message that never holds the secret it was given
(a key, a pin); `BadAtLine` asks the UAPI reader to prefix the request's line number, as its messages always did.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable

from ..constants import RATE_LIMIT_BURST_RANGE, RATE_LIMIT_MAX, RATE_LIMIT_MIN
from ..crypto import KeyError_, decode_key
from ..routing.mactable import format_mac, parse_mac
from ..streams.endpoint import parse_url

__all__ = ["Bad", "BadAtLine", "parse_pin", "host_port", "could_be_key", "shown", "redact"]


class Bad(ValueError):
    """A bad value; the message must not contain secrets."""


class BadAtLine(Bad):
    """A bad UAPI value whose message is given after the line number ("line 3: invalid endpoint")."""


_NAME_RE = re.compile(r"[A-Za-z0-9_=+.-]{1,15}")
_TABLE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_DOMAIN_RE = re.compile(r"~?[A-Za-z0-9_.-]+")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_PREFIX = re.compile(r"[^/]+/[0-9]{1,3}")
_PIN_PREFIX = re.compile(r"sha-?256(?:\s*fingerprint)?\s*[=:]\s*", re.IGNORECASE)


# A value that could be key material is never echoed in a message: a WireGuard key is 32 bytes, 44 characters of
# base64 ending in '=' (INI) or 64 hex digits (UAPI); a run of 40 or more characters of the base64 alphabet
# (hex digits are in it) covers both, and a key missing a few characters or pasted inside other text.
_KEYLIKE = re.compile(r"[A-Za-z0-9+/=]{40,}")
NOT_SHOWN = "(value not shown: it could be a key)"


def could_be_key(s: str) -> bool:
    return _KEYLIKE.search(s) is not None


def shown(s: str) -> str:
    """`s` quoted for a message, or a placeholder when it could be a key."""
    return NOT_SHOWN if could_be_key(s) else repr(s)


def redact(text: str) -> str:
    """`text` with everything that could be a key replaced: the last guard before a message is printed or
    logged."""
    return _KEYLIKE.sub("[not shown]", text)


def valid_ifname(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name)) and name not in (".", "..")


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------- INI spellings

def uint(s: str, lo: int, hi: int, what: str = "number") -> int:
    if not (s.isascii() and s.isdigit() and len(s) <= 20):
        raise Bad(f"invalid {what} {shown(s)}")
    n = int(s)
    if not lo <= n <= hi:
        raise Bad(f"{what} {n} out of range {lo}..{hi}")
    return n


def key(s: str) -> bytes:
    try:
        return decode_key(s)
    except KeyError_:
        raise Bad("invalid key") from None


def choice(s: str, options: tuple[str, ...], what: str) -> str:
    if s.lower() not in options:
        raise Bad(f"invalid {what} {shown(s)} (expected {' or '.join(options)})")
    return s.lower()


def fwmark(s: str) -> int:
    if s.lower() == "off":
        return 0
    if s[:2].lower() == "0x" and 0 < len(s) - 2 <= 8 and all(c in "0123456789abcdefABCDEF" for c in s[2:]):
        return int(s, 16)
    return uint(s, 0, 0xFFFFFFFF, "fwmark")


def table(s: str) -> str:
    if s.lower() in ("off", "auto"):
        return s.lower()
    if s.isascii() and s.isdigit():
        return str(uint(s, 0, 0xFFFFFFFF, "table"))
    if not _TABLE_NAME_RE.fullmatch(s):
        raise Bad(f"invalid table {shown(s)}")
    return s


def items(s: str, whitespace: bool) -> list[str]:
    return [x for x in re.split(r"[,\s]+" if whitespace else r"\s*,\s*", s.strip()) if x]


def ip_list(s: str, make: Callable[[str], Any], whitespace: bool, what: str) -> list[Any]:
    out = []
    for item in items(s, whitespace):
        plen = item.partition("/")[2]
        try:
            if "/" in item and not (plen.isascii() and plen.isdigit() and len(plen) <= 3):
                raise ValueError  # no netmask notation, signs or spaces
            out.append(make(item))
        except ValueError:
            raise Bad(f"invalid {what} {shown(item)}") from None
    return out


def addresses(s: str) -> list:
    return ip_list(s, ipaddress.ip_interface, True, "address")


def cidrs(s: str) -> list:
    return ip_list(s, lambda x: ipaddress.ip_network(x, strict=False), False, "CIDR")


def dns(s: str) -> tuple[list[str], list[str]]:
    servers, search = [], []
    for item in items(s, whitespace=True):
        try:
            servers.append(str(ipaddress.ip_address(item)))
        except ValueError:
            if not _DOMAIN_RE.fullmatch(item) or re.fullmatch(r"[0-9.]+", item):
                raise Bad(f"invalid DNS server or search domain {shown(item)}") from None
            search.append(item)
    return servers, search


def endpoint(s: str) -> tuple[str, int]:
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        if not sep:
            raise Bad(f"invalid endpoint {shown(s)} (expected [address]:port)")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise Bad(f"invalid IPv6 address {shown(host)}") from None
    else:
        host, sep, port = s.rpartition(":")
        if not sep or not host:
            raise Bad(f"invalid endpoint {shown(s)} (expected host:port)")
        if ":" in host:
            raise Bad(f"invalid endpoint {shown(s)} (write IPv6 addresses as [address]:port)")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise Bad(f"invalid IPv4 address {shown(host)}") from None
        elif len(host) > 253 or not HOSTNAME_RE.fullmatch(host):
            raise Bad(f"invalid host name {shown(host)}")
    return host, uint(port, 1, 65535, "port")


def stream_url(s: str) -> tuple[str, str, int]:
    scheme, sep, rest = s.partition("://")
    if not sep or scheme.lower() not in ("tcp", "tls"):
        raise Bad(f"invalid stream endpoint {shown(s)} (expected tcp://host:port or tls://host:port)")
    host, port = endpoint(rest)
    return scheme.lower(), host, port


def any_endpoint(s: str) -> tuple:
    """Endpoint = host:port (UDP) or tcp://host:port / tls://host:port (a stream, moved to stream_endpoint)."""
    return stream_url(s) if "://" in s else endpoint(s)


def mac_list(s: str) -> list[bytes]:
    out = []
    for item in items(s, whitespace=False):
        try:
            mac = parse_mac(item)
        except ValueError:
            raise Bad(f"invalid MAC address {shown(item)}") from None
        if mac[0] & 1:
            raise Bad(f"{shown(item)} is a multicast address, never a source")
        out.append(mac)
    return out


def on_off(s: str) -> bool:
    v = s.lower()
    if v in ("on", "true", "yes"):
        return True
    if v in ("off", "false", "no"):
        return False
    raise Bad(f"invalid value {shown(s)} (expected on or off)")


def ifnames(s: str) -> list[str]:
    names = items(s, whitespace=True)
    if not names:
        raise Bad("expected one or more interface names")
    for n in names:
        if not valid_ifname(n):
            raise Bad(f"invalid interface name {shown(n)}")
    return names


def user(s: str) -> str:
    if not _USER_RE.fullmatch(s):
        raise Bad(f"invalid user name {shown(s)}")
    return s


def command(s: str) -> list[str]:
    return [s] if s else []


def seconds(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise Bad(f"invalid number of seconds {shown(s)}") from None
    if not 0.5 <= v <= 86400:
        raise Bad(f"{s} seconds out of range 0.5..86400")
    return v


def file(s: str) -> str:
    if not s or "\x00" in s:
        raise Bad("expected a file name")
    return s


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
        raise Bad("expected the certificate's SHA-256 fingerprint, as `openssl x509 -noout -fingerprint -sha256 "
                  "-in cert.pem` prints it (or its 64 hex digits)")
    return bytes.fromhex(t)


def pin(s: str) -> str:
    return parse_pin(s).hex()


def server_name(s: str) -> str:
    if len(s) > 253 or not HOSTNAME_RE.fullmatch(s):
        raise Bad(f"invalid server name {shown(s)}")
    return s


_RATE_RE = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,6})?)\s*([kmgt]?)(bit|bps)", re.IGNORECASE)
_SIZE_RE = re.compile(r"([0-9]{1,15})\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def rate(s: str) -> int:
    """RateLimit: bits per second, tc's spelling: `20mbit`, `500kbit`, `1.5gbit`, `64000bit` (k, m, g, t are
    powers of 1000); `off` or 0: no limit. tc's `mbps` (megabytes a second) is refused as easily misread."""
    t = s.strip()
    if t.lower() in ("off", "0"):
        return 0
    m = _RATE_RE.fullmatch(t)
    if m is None:
        raise Bad(f"invalid rate {shown(s)} (expected a number of bits per second with a unit: 20mbit, 500kbit, "
                  "1gbit)")
    if m.group(3).lower() == "bps":
        raise Bad(f"invalid rate {shown(s)}: write bits per second (20mbit); '{m.group(2)}bps' would be bytes to "
                  "tc and bits to most readers")
    bits = round(float(m.group(1)) * _SI[m.group(2).lower()])
    if not RATE_LIMIT_MIN <= bits <= RATE_LIMIT_MAX:
        raise Bad(f"rate {s.strip()} out of range 8kbit..100gbit")
    return bits


def size(s: str) -> int:
    """RateLimitBurst: bytes, with k, m, g as powers of 1024 (`256k`, `1m`, `64kb`, `1500`)."""
    m = _SIZE_RE.fullmatch(s.strip())
    if m is None:
        raise Bad(f"invalid size {shown(s)} (expected bytes: 1500, 256k, 1m)")
    n = int(m.group(1)) * _BINARY[m.group(2).lower()]
    lo, hi = RATE_LIMIT_BURST_RANGE
    if not lo <= n <= hi:
        raise Bad(f"size {s.strip()} ({n} bytes) out of range {lo}..{hi}")
    return n


def f_rate(bits: int) -> str:
    """Bits per second in RateLimit's spelling, exact (`20mbit`, `1500kbit`, `8001bit`)."""
    for unit, factor in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits % factor == 0:
            return f"{bits // factor}{unit}"
    return f"{bits}bit"


def mtu(s: str) -> int | None:
    return None if s.lower() == "auto" else uint(s, 576, 65535, "MTU")


def probe_interval(s: str) -> float:
    return 0.0 if s.lower() == "off" else float(uint(s, 0, 86400, "MTUProbeInterval"))


def keepalive(s: str) -> int:
    return 0 if s.lower() == "off" else uint(s, 0, 65535, "persistent keepalive")


def port(s: str) -> int:
    return uint(s, 0, 65535, "port")


def stream_port(s: str) -> int:
    return uint(s, 1, 65535, "port")


def save_config(s: str) -> bool:
    return choice(s, ("true", "false"), "boolean") == "true"


def mode(s: str) -> str:
    return choice(s, ("tun", "tap"), "mode")


# --------------------------------------------------------------------------------------------- UAPI spellings
# (value, key) -> value; messages as wireguard-go's shapes ("private_key: expected 64 hex characters").

def u_hex_key(value: str, k: str) -> bytes:
    if not _HEX_KEY.fullmatch(value):
        raise Bad(f"{k}: expected 64 hex characters")
    return bytes.fromhex(value)


def u_uint(limit: int) -> Callable[[str, str], int]:
    def parse(value: str, k: str) -> int:
        if not _DIGITS.fullmatch(value):
            raise Bad(f"{k}: not a number")
        n = int(value)
        if n > limit:
            raise Bad(f"{k}: out of range")
        return n
    return parse


u_port16 = u_uint(65535)


def u_range(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(value: str, k: str) -> int:
        n = u_uint(hi)(value, k)
        if n < lo:
            raise Bad(f"{k}: out of range")
        return n
    return parse


def u_fwmark(value: str, k: str) -> int:
    return u_uint(0xFFFFFFFF)(value, k) if value else 0


def u_true(value: str, k: str) -> bool:
    if value != "true":
        raise Bad(f"{k}: only 'true' is accepted")
    return True


def u_bool(value: str, k: str) -> bool:
    if value not in ("true", "false"):
        raise Bad(f"{k}: expected true or false")
    return value == "true"


def u_cidr_op(value: str, k: str) -> tuple[bool, Any]:
    remove = value.startswith("-")
    text = value[1:] if remove else value
    try:
        if not _PREFIX.fullmatch(text):
            raise ValueError
        return remove, ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadAtLine(f"invalid {k}") from None


def u_mac_op(value: str, k: str) -> tuple[bool, bytes]:
    remove = value.startswith("-")
    try:
        return remove, parse_mac(value[1:] if remove else value)
    except ValueError:
        raise BadAtLine(f"invalid {k}") from None


def u_protocol_version(value: str, k: str) -> str:
    if value != "1":
        raise BadAtLine(f"unsupported {k}")
    return value


def u_rate(value: str, k: str) -> int:
    """wgpy_rate_limit: bits per second, 0 = no limit."""
    n = u_uint(RATE_LIMIT_MAX)(value, k)
    if n and n < RATE_LIMIT_MIN:
        raise Bad(f"{k}: out of range")
    return n


def u_burst(value: str, k: str) -> int:
    """wgpy_rate_limit_burst: bytes, 0 = the default for the rate."""
    lo, hi = RATE_LIMIT_BURST_RANGE
    n = u_uint(hi)(value, k)
    if n and n < lo:
        raise Bad(f"{k}: out of range")
    return n


def u_port(value: str, k: str) -> int:
    if not value.isdigit() or len(value) > 5 or int(value) > 65535:
        raise Bad(f"{k}: expected a port number")
    return int(value)


def _u_seconds_in(value: str, k: str, lo: float, lo_text: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise Bad(f"{k}: expected seconds") from None
    if not lo <= v <= 86400:
        raise Bad(f"{k}: out of range {lo_text}..86400")
    return v


def u_seconds(value: str, k: str) -> float:
    return _u_seconds_in(value, k, 0.5, "0.5")


def u_path(value: str, k: str) -> str:
    if not value or "\x00" in value:
        raise Bad(f"{k}: expected a file name")
    return value


def u_url(value: str, k: str) -> tuple[str, str, int]:
    try:
        return parse_url(value)
    except ValueError as e:
        raise Bad(f"{k}: invalid stream endpoint ({e})") from None


def u_url_or_none(value: str, k: str) -> tuple[str, str, int] | None:
    return None if value == "" else u_url(value, k)


def u_pin(value: str, k: str) -> bytes:
    try:
        return parse_pin(value)
    except ValueError as e:
        raise Bad(f"{k}: {e}") from None


def u_server_name(value: str, k: str) -> str:
    if not value or len(value) > 253 or any(c.isspace() for c in value):
        raise Bad(f"{k}: expected a host name")
    return value


def u_probe_interval(value: str, k: str) -> float:
    return _u_seconds_in(value, k, 0, "0")


# the core's MTU: the largest plaintext (L2: the frame, so a TAP's link MTU + 14); a TUN's link MTU is >= 68
u_mtu = u_range(68, 65535 + 14)
# the automatic MTU's floor, an interface MTU (L2: the TAP's, without the Ethernet header)
u_mtu_min = u_range(576, 65535)


# ---------------------------------------------------------------------------------------- UAPI formatting

def f_hex(v: bytes) -> str:
    return v.hex()


def f_bool(v: bool) -> str:
    return "true" if v else "false"


def f_seconds(v: float) -> str:
    return f"{v:g}"


def f_mac(v: bytes) -> str:
    return format_mac(v)


def f_str(v: object) -> str:
    return str(v)
