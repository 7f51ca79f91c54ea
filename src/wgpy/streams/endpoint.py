"""Stream endpoints (wgpy extension, docs/transports.md): the URLs `tcp://host:port` and `tls://host:port`, and
the StreamEndpoint record the core keeps as an opaque endpoint (UDP endpoints are address tuples).

Identity is equality; there are two kinds:
    outbound  one per configured target (tcp://ip:port or tls://ip:port with its TLS settings), interned, so
              the same configuration always gives the same object; it owns at most one connection at a time and
              reconnects with backoff and jitter. Messages received on it come from the target itself, so a
              peer whose endpoint is the target keeps it across reconnections.
    inbound   one per accepted connection. The listening side does not know which peer a connection belongs to
              until a message from it authenticates (the core then sets that peer's endpoint to it: the ordinary
              roaming rule, so a peer moves between UDP and TCP like between two UDP addresses). Until then the
              connection is "unauthenticated" (limits in streams/connection.py). A peer has one inbound
              connection: a newer authenticated one replaces the older.
The socket side (io/stream.py) fills in `conn` and `context`; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import itertools

__all__ = ["SCHEMES", "CONNECTING", "HANDSHAKE", "UP", "CLOSED", "parse_url", "format_url", "StreamEndpoint"]

SCHEMES = ("tcp", "tls")
CONNECTING, HANDSHAKE, UP, CLOSED = "connecting", "tls-handshake", "up", "closed"   # a connection's states


def parse_url(text: str) -> tuple[str, str, int]:
    """'tcp://192.0.2.1:443' or 'tls://[2001:db8::1]:8443' -> (scheme, numeric host, port). Raises ValueError."""
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ValueError("expected tcp:// or tls://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected a port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("bad IPv6 address")
        host = host[1:-1]
    addr = ipaddress.ip_address(host)
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return scheme, str(addr), int(port)


def format_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


_ids = itertools.count(1)


class StreamEndpoint:
    """A stream endpoint, opaque to the core (see the module docstring). Identity is equality."""

    __slots__ = ("scheme", "host", "port", "outbound", "conn", "server_name", "ca_file", "pin", "context",
                 "label", "failures", "retry_at", "retry_armed", "last_used", "last_error", "connects")

    def __init__(self, scheme: str, host: str, port: int, outbound: bool, server_name: str | None = None,
                 ca_file: str | None = None, pin: bytes | None = None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.outbound = outbound
        self.conn = None                       # the connection (io/stream.py Conn), if any
        self.server_name = server_name
        self.ca_file = ca_file
        self.pin = pin
        self.context = None                    # the TLS client context (io/stream.py), made once
        self.label = format_url(scheme, host, port)
        if not outbound:
            self.label += f"#{next(_ids)}"         # unique: the core uses repr(src) as the cookie's source
        self.failures = 0
        self.retry_at = 0.0
        self.retry_armed = False
        self.last_used = -1e18
        self.last_error: str | None = None     # the last failure in words; cleared when a connection comes up
        self.connects = 0

    @property
    def url(self) -> str:
        return format_url(self.scheme, self.host, self.port)

    @property
    def state(self) -> str:
        if self.conn is not None:
            return self.conn.state
        if not self.outbound:
            return CLOSED
        return "backoff" if self.failures else "idle"

    def __repr__(self) -> str:
        return self.label
