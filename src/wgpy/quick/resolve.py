"""Endpoint host names to numeric addresses, at `up` (the core only ever sees addresses): IPv4 preferred, as wg
does. A name that does not resolve is a config error naming the peer's line and key. While the interface runs,
the runtime looks UDP endpoint names up again (io/reresolve.py; session.py hands them over)."""

from __future__ import annotations

import socket

from .. import config as cfgmod
from ..io.udp import format_endpoint, make_endpoint


def resolve_endpoints(cfg: cfgmod.InterfaceConfig) -> dict[int, str]:
    """peer index -> its UDP endpoint as the UAPI writes it."""
    resolved = {}
    for i, peer in enumerate(cfg.peers):
        if peer.endpoint is None:
            continue
        host, port = peer.endpoint
        try:
            ep = make_endpoint(host, port)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except socket.gaierror as e:
                raise cfgmod.ConfigError(cfg.path, peer.line, "Endpoint", f"cannot resolve {host!r}: {e.strerror}") from None
            infos.sort(key=lambda x: x[0] != socket.AF_INET)   # prefer IPv4, as wg does
            ep = make_endpoint(infos[0][4][0], port)
        resolved[i] = format_endpoint(ep)
    return resolved


def resolve_stream_endpoints(cfg: cfgmod.InterfaceConfig) -> dict[int, dict[str, str]]:
    """Numeric addresses for the host names of tcp:// and tls:// endpoints: peer index -> {"endpoint" |
    "fallback": address}; a name stays the TLS server name (config.transport_uapi_peer)."""
    resolved: dict[int, dict[str, str]] = {}
    for i, peer in enumerate(cfg.peers):
        for which, ep, key in (("endpoint", peer.stream_endpoint, "Endpoint"),
                               ("fallback", peer.fallback_endpoint, "FallbackEndpoint")):
            if ep is None:
                continue
            _, host, port = ep
            try:
                make_endpoint(host, port)
                continue                      # already numeric
            except ValueError:
                pass
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise cfgmod.ConfigError(cfg.path, peer.line, key, f"cannot resolve {host!r}: {e.strerror}") from None
            infos.sort(key=lambda x: x[0] != socket.AF_INET)
            resolved.setdefault(i, {})[which] = infos[0][4][0]
    return resolved
