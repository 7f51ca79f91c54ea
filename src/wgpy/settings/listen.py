"""Value types of the settings table for the operations settings (MetricsListen): an HTTP listening address.
Pure, like values.py, whose endpoint syntax it uses."""

from __future__ import annotations

from .values import Bad, endpoint, host_port, is_ip

__all__ = ["metrics_listen", "u_metrics_listen", "f_listen", "stun_server", "u_stun_server"]


def _numeric(s: str, example: str) -> tuple[str, int] | None:
    """ADDRESS:PORT with a numeric address (host names are not resolved), or off."""
    if s.lower() == "off":
        return None
    host, port = endpoint(s)
    if not is_ip(host):
        raise Bad(f"a numeric address is needed, e.g. {example} (host names are not resolved)")
    return host, port


def _uapi(parse, value: str, k: str) -> tuple[str, int] | None:
    """The UAPI spelling of either: ADDRESS:PORT, empty: off."""
    if value == "":
        return None
    try:
        return parse(value)
    except Bad:
        raise Bad(f"{k}: expected ADDRESS:PORT with a numeric address") from None


def metrics_listen(s: str) -> tuple[str, int] | None:
    """MetricsListen = ADDRESS:PORT (a numeric IPv4 address, or [IPv6]:PORT) or off: where the daemon serves
    Prometheus metrics over HTTP."""
    return _numeric(s, "MetricsListen = 127.0.0.1:9586")


def u_metrics_listen(value: str, k: str) -> tuple[str, int] | None:
    """wgpy_metrics_listen=ADDRESS:PORT, empty: off."""
    return _uapi(metrics_listen, value, k)


def f_listen(v: tuple[str, int] | None) -> str:
    return "" if v is None else host_port(*v)


def stun_server(s: str) -> tuple[str, int] | None:
    """StunServer = ADDRESS:PORT (numeric, as the daemon sends from its own socket) or off."""
    return _numeric(s, "StunServer = 192.0.2.1:3478")


def u_stun_server(value: str, k: str) -> tuple[str, int] | None:
    """wgpy_stun_server=ADDRESS:PORT, empty: off."""
    return _uapi(stun_server, value, k)
