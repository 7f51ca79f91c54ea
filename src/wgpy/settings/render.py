"""InterfaceConfig -> the body of a UAPI ``set=1`` request, by iterating the settings table (table.py).

Pure. A row is written as its `render` says (table.py's docstring); the four "custom" rows (the UDP and stream
endpoints, the fallback endpoint, the TLS server name) need the resolved addresses `wgpy up` found, and are the
functions below. MTU, MTUProbeInterval and the automatic MTU mode ("link") are written by `wgpy up` once the
link's MTU is known (link_uapi), so a plain to_uapi() carries none of them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .table import Setting, rows
from .values import host_port, is_ip

__all__ = ["to_uapi", "link_uapi", "transport_uapi_peer"]

_UAPI_ENDPOINT_RE = re.compile(r"[0-9A-Za-z.:%_\[\]-]+")


def _uapi_endpoint(peer: Any, resolved: str | None) -> str | None:
    if resolved is None:
        return host_port(*peer.endpoint) if peer.endpoint else None
    if not _UAPI_ENDPOINT_RE.fullmatch(resolved):
        raise ValueError(f"invalid resolved endpoint {resolved!r}")
    try:  # a bare address takes the port from the configuration
        ip = ipaddress.ip_address(resolved)
    except ValueError:
        return resolved
    return host_port(str(ip), peer.endpoint[1]) if peer.endpoint else resolved


def _stream(ep: tuple[str, str, int] | None, addr: str | None) -> list[str]:
    if ep is None:
        return []
    scheme, host, port = ep
    return [f"{scheme}://{host_port(addr or host, port)}"]


def _server_name(peer: Any) -> str | None:
    """TLSServerName, else the host name of a tls:// endpoint (kept for the certificate check when `wgpy up`
    resolved it to an address)."""
    name = peer.tls_server_name
    for ep in (peer.stream_endpoint, peer.fallback_endpoint):
        if name is None and ep is not None and ep[0] == "tls" and not is_ip(ep[1]):
            name = ep[1]
    return name


def _custom(s: Setting, peer: Any, resolved: str | None, streams: dict[str, str]) -> list[str]:
    if s.uapi == "endpoint":
        ep = _uapi_endpoint(peer, resolved)
        return [] if ep is None else [ep]
    if s.uapi == "wgpy_endpoint":
        return _stream(peer.stream_endpoint, streams.get("endpoint"))
    if s.uapi == "wgpy_fallback_endpoint":
        return _stream(peer.fallback_endpoint, streams.get("fallback"))
    name = _server_name(peer)                     # wgpy_tls_server_name
    return [] if name is None else [name]


def _lines(section: str, obj: Any, l2: bool, custom=None) -> list[str]:
    out = []
    for s in rows(section, uapi=True):
        if s.render in (None, "link") or (s.mode == "l2" and not l2):
            continue          # (an l3 list row is empty on L2: the parser refuses AllowedIPs with Mode = tap)
        value = getattr(obj, s.attr) if s.attr else None
        if s.render == "custom":
            vals = custom(s)
        elif s.render == "always":
            vals = [s.fixed if s.fixed is not None else s.fmt(value)]
        elif s.render == "each":
            vals = [s.fmt(x) for x in value]
        elif s.render == "nonzero":
            vals = [s.fmt(value)] if value else []
        else:                                     # "given"
            vals = [s.fmt(value)] if value is not None else []
        out += [f"{s.uapi}={x}" for x in vals]
    return out


def to_uapi(cfg: Any, resolved_endpoints: dict[int, str] | None = None,
            resolved_streams: dict[int, dict[str, str]] | None = None) -> str:
    """The body of a cross-platform UAPI ``set=1`` request (without ``set=1`` and the final blank line).

    ``resolved_endpoints`` maps a peer's index in ``cfg.peers`` to its resolved endpoint, either
    "ip:port" / "[ip6]:port" or a bare IP (the configured port is then used). Peers not in it use the
    configured host as written, so the caller must resolve host names first. ``resolved_streams`` maps it to
    {"endpoint": address, "fallback": address} for tcp:// and tls:// URLs.
    """
    resolved_endpoints = resolved_endpoints or {}
    resolved_streams = resolved_streams or {}
    l2 = cfg.mode == "tap"
    out = _lines("interface", cfg, l2)
    for i, peer in enumerate(cfg.peers):
        out += _lines("peer", peer, l2,
                      lambda s, p=peer, i=i: _custom(s, p, resolved_endpoints.get(i), resolved_streams.get(i, {})))
    return "".join(line + "\n" for line in out)


def transport_uapi_peer(peer: Any, resolved: dict[str, str] | None = None) -> list[str]:
    """The wgpy_* stream lines of one peer (wgpy_endpoint ... wgpy_tls_pin); `resolved` maps "endpoint"/"fallback"
    to the numeric address of a host name (the name then stays the TLS server name unless TLSServerName says
    otherwise)."""
    lines = _lines("peer", peer, False, lambda s: _custom(s, peer, None, resolved or {}))
    return [ln for ln in lines if ln.startswith(("wgpy_endpoint=", "wgpy_fallback", "wgpy_tls_"))]


def link_uapi(mtu: int | None = None, probe_interval: float | None = None, mtu_auto: bool | None = None,
              mtu_min: int | None = None) -> str:
    """The "link" rows (MTU, MTUProbeInterval, the automatic MTU mode and its floor) as the body of a set: what
    `wgpy up` sends once it knows the MTU the link got (the core's MTU: L2 includes the Ethernet header)."""
    values = {"wgpy_mtu": mtu, "wgpy_mtu_probe_interval": probe_interval, "wgpy_mtu_auto": mtu_auto,
              "wgpy_mtu_min": mtu_min}
    return "".join(f"{s.uapi}={s.fmt(values[s.uapi])}\n" for s in rows("interface", uapi=True)
                   if s.render == "link" and values[s.uapi] is not None)
