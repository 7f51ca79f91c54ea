"""UAPI extension keys of the TCP/TLS transports and the fallback; see docs/transports.md.

All are `wgpy_`-prefixed: `wg` skips unknown keys in a get reply (so `wg show` keeps working) but refuses them in
a set, so only `wgpy up` (or a client speaking the UAPI itself) sends them. Stream endpoints are numeric
(tcp://192.0.2.1:443, tls://[2001:db8::1]:8443): names are resolved by `wgpy up`, never by the daemon.

set, device section:
    wgpy_listen_tcp=PORT              accept framed WireGuard messages over TCP on PORT (0: stop)
    wgpy_listen_tls=PORT              ... over TLS 1.3 (needs the two keys below, in the same or an earlier set)
    wgpy_tls_cert_file=PATH           server certificate chain (PEM)
    wgpy_tls_key_file=PATH            its private key (PEM); both are read while the set is applied
set, peer section:
    wgpy_endpoint=URL                 the peer's endpoint is a stream (instead of `endpoint=`)
    wgpy_fallback_endpoint=URL        tried when UDP handshakes get no answer (empty value: none)
    wgpy_fallback_after=SECONDS       no answer for this long before falling back (default 15)
    wgpy_fallback_probe_interval=S    UDP probe interval while on the fallback (default 30)
    wgpy_tls_server_name=NAME         SNI and the name the certificate must carry (default: the URL's address)
    wgpy_tls_ca_file=PATH             verify the server against these CAs (default: the system's)
    wgpy_tls_pin=HEX                  ... or accept only the certificate with this SHA-256 fingerprint
get: device `wgpy_listen_tcp`, `wgpy_listen_tls`; peer `wgpy_endpoint=URL` and `wgpy_endpoint_state=` (up,
connecting, tls-handshake, backoff, idle, closed) when its endpoint is a stream (there is no `endpoint=` line
then: `wg` would try to resolve the URL), `wgpy_fallback_endpoint`, `wgpy_fallback=active|standby`,
`wgpy_fallback_switches`, `wgpy_fallback_returns`, `wgpy_fallback_probes`; the endpoint's last failure goes into
the peer's `wgpy_last_error` (uapi/protocol.py, endpoint_error below). Stats: the stream_* counters.
"""

from __future__ import annotations

import errno

from ..constants import FALLBACK_AFTER, FALLBACK_PROBE_INTERVAL
from ..ext import fallback
from ..streams.endpoint import StreamEndpoint
from .plan import EADDRINUSE, EINVAL, EIO, UNSET, UapiError

# the keys and their value types are rows of settings/table.py (dest "transport"); uapi/plan.py parses them
# into SetPlan.transport / PeerOp.transport, this module acts on them and reads them back for a get


def _error(code: int, message: str) -> Exception:
    return UapiError(code, message)


def _streams(host):
    streams = getattr(host, "streams", None)
    if streams is None:
        raise _error(EINVAL, "this interface has no stream transports")
    return streams


def prepare(plan, host) -> None:
    """Before anything of the set is applied: load TLS files and make the stream endpoints, so every error
    (unreadable certificate, bad CA file) refuses the whole request and changes nothing."""
    if plan.transport:
        _streams(host)
        cert = plan.transport.get("wgpy_tls_cert_file")
        key = plan.transport.get("wgpy_tls_key_file")
        if cert is not None or key is not None:
            streams = host.streams
            cert = cert if cert is not None else streams.cert_file
            key = key if key is not None else streams.key_file
            try:
                if not cert or not key:
                    raise ValueError("needs both wgpy_tls_cert_file and wgpy_tls_key_file")
                plan.transport["_server_ctx"] = (streams.load_identity(cert, key), cert, key)
            except (OSError, ValueError) as e:                      # a TLS error is an OSError
                raise _error(EINVAL, f"TLS certificate/key: {getattr(e, 'strerror', None) or e}") from None
        if plan.transport.get("wgpy_listen_tls") and "_server_ctx" not in plan.transport \
                and host.streams.server_ctx is None:
            raise _error(EINVAL, "wgpy_listen_tls needs wgpy_tls_cert_file and wgpy_tls_key_file")
    for op in plan.peers:
        t = op.transport
        if not t:
            continue
        streams = _streams(host)
        opts = {"server_name": t.get("wgpy_tls_server_name"), "ca_file": t.get("wgpy_tls_ca_file"),
                "pin": t.get("wgpy_tls_pin")}
        for key in ("wgpy_endpoint", "wgpy_fallback_endpoint"):
            url = t.get(key)
            if url is None:
                continue
            scheme, addr, port = url
            try:
                t["_" + key] = streams.target(scheme, addr, port, **(opts if scheme == "tls" else {}))
            except (OSError, ValueError) as e:
                raise _error(EINVAL, f"{key}: TLS settings: {getattr(e, 'strerror', None) or e}") from None
        if "_wgpy_endpoint" in t:
            op.endpoint = t["_wgpy_endpoint"]     # applied by the standard code, in the standard order


def apply_device(plan, host) -> None:
    """Certificate, then listeners (a port in use refuses the request: EADDRINUSE)."""
    t = plan.transport
    if not t:
        return
    streams = host.streams
    if "_server_ctx" in t:
        streams.server_ctx, streams.cert_file, streams.key_file = t["_server_ctx"]
    for scheme in ("tcp", "tls"):
        port = t.get(f"wgpy_listen_{scheme}")
        if port is None:
            continue
        try:
            streams.listen(scheme, port)
        except OSError as e:
            raise _error(EADDRINUSE if e.errno == errno.EADDRINUSE else EIO,
                         f"cannot listen on {scheme.upper()} port {port}: {e.strerror}") from None
        except ValueError as e:
            raise _error(EINVAL, str(e)) from None


def apply_peer(op, peer, host, now: float, out: list) -> None:
    """After the standard keys of one peer section were applied."""
    dev = host.device
    t = op.transport
    if op.endpoint is not UNSET and peer.fallback is not None:
        fallback.endpoint_set(dev, peer, now)
    had_endpoint = peer.endpoint is not None
    if "wgpy_fallback_endpoint" in t or ((peer.fallback is not None) and (
            "wgpy_fallback_after" in t or "wgpy_fallback_probe_interval" in t)):
        target = t.get("_wgpy_fallback_endpoint", peer.fallback.target if peer.fallback else None)
        if "wgpy_fallback_endpoint" in t and t["wgpy_fallback_endpoint"] is None:
            target = None
        old = peer.fallback
        fallback.configure(dev, peer, target, now, out,
                           after=t.get("wgpy_fallback_after", old.after if old else FALLBACK_AFTER),
                           probe_interval=t.get("wgpy_fallback_probe_interval",
                                                old.probe_interval if old else FALLBACK_PROBE_INTERVAL))
    if not had_endpoint and peer.endpoint is not None and peer.persistent_keepalive and dev.is_up:
        # the fallback gave the peer its first endpoint: start the keepalives set_persistent_keepalive could not
        dev.timers.keepalive_now(peer, now, out)


def after_set(host) -> None:
    """Close outbound connections no peer refers to any more."""
    streams = getattr(host, "streams", None)
    if streams is None or not streams.targets:
        return
    used = set()
    for peer in host.device.peers.values():
        if isinstance(peer.endpoint, StreamEndpoint):
            used.add(id(peer.endpoint))
        if peer.fallback is not None:
            used.add(id(peer.fallback.target))
    streams.forget_unused(used)


def is_stream(ep: object) -> bool:
    return isinstance(ep, StreamEndpoint)


def _listen(scheme: str):
    def read(host, peer) -> list:
        streams = getattr(host, "streams", None)
        port = streams.listen_ports.get(scheme) if streams is not None else 0
        return [port] if port else []
    return read


def _stream_ep(attr: str):
    def read(host, peer) -> list:
        ep = peer.endpoint
        return [getattr(ep, attr)] if isinstance(ep, StreamEndpoint) else []
    return read


def _fb(read_fb):
    def read(host, peer) -> list:
        fb = peer.fallback
        return [read_fb(fb, peer)] if fb is not None else []
    return read


# get: UAPI key -> reader(host, peer) -> values, for the transport rows of settings/table.py
DEVICE_GET = {
    "wgpy_listen_tcp": _listen("tcp"),
    "wgpy_listen_tls": _listen("tls"),
}
PEER_GET = {
    "wgpy_endpoint": _stream_ep("url"),
    "wgpy_endpoint_state": _stream_ep("state"),
    "wgpy_fallback_endpoint": _fb(lambda fb, peer: fb.target.url),
    "wgpy_fallback": _fb(lambda fb, peer: "active" if fb.on_fallback(peer) else "standby"),
    "wgpy_fallback_after": _fb(lambda fb, peer: f"{fb.after:g}"),
    "wgpy_fallback_probe_interval": _fb(lambda fb, peer: f"{fb.probe_interval:g}"),
    "wgpy_fallback_switches": _fb(lambda fb, peer: fb.switches),
    "wgpy_fallback_returns": _fb(lambda fb, peer: fb.returns),
    "wgpy_fallback_probes": _fb(lambda fb, peer: fb.probes),
}


def endpoint_error(peer) -> str | None:
    """The last failure of the peer's stream endpoint in words (None: a UDP endpoint, or the connection came up
    since). Only the endpoint in use: a fallback on standby is not being tried."""
    ep = peer.endpoint
    return ep.last_error if isinstance(ep, StreamEndpoint) else None


def stats_lines(host) -> list[str]:
    streams = getattr(host, "streams", None)
    return streams.stats() if streams is not None else []
