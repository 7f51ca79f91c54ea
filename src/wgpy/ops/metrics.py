"""Prometheus metrics of one interface: a custom collector for prometheus_client, read at scrape time.

Nothing here runs on the per-packet path: a scrape reads the counters the core and the loop keep anyway (the
per-peer byte counters, the drop counters, the handshake counters of protocol/handshake.py, the path MTU state)
and the values a UAPI get reports (the same readers, uapi/protocol.py READERS), so `wg show` and the metrics
never disagree. Public keys only: no reader of a secret (private_key, preshared_key) is ever called.

Names (docs/operations.md lists them all): the three per-peer series that prometheus_wireguard_exporter users
graph keep that exporter's names and labels (`wireguard_sent_bytes_total{interface,public_key,allowed_ips}`,
`wireguard_received_bytes_total`, `wireguard_latest_handshake_seconds`: the Unix time of the latest handshake,
0 before the first); everything else is `wgpy_*`; process_* come from prometheus_client's ProcessCollector
(RSS, open fds, CPU time).
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import __version__, crypto

__all__ = ["InterfaceCollector", "registry_for", "render", "CONTENT_TYPE"]

# the text format generate_latest writes (0.0.4), whatever prometheus_client's newest default is
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# get keys whose readers the collector calls per peer: never a secret one
_PEER_KEYS = ("endpoint", "last_handshake_time_sec", "tx_bytes", "rx_bytes", "allowed_ip", "wgpy_path_mtu",
              "wgpy_endpoint", "wgpy_endpoint_state", "wgpy_fallback_endpoint", "wgpy_fallback",
              "wgpy_fallback_switches", "wgpy_fallback_returns", "wgpy_fallback_probes", "wgpy_last_error")
SECRET_KEYS = frozenset({"private_key", "preshared_key"})
assert not SECRET_KEYS & set(_PEER_KEYS)


def _one(values: list, default=None):
    return values[0] if values else default


class InterfaceCollector(Collector):
    """Collects the metrics of one daemon.Interface (`host`: the uapi.Host of the interface)."""

    def __init__(self, host, scrapes=None) -> None:
        self.host = host
        self.server_stats = scrapes          # callable -> dict of the HTTP server's own counters, or None

    def collect(self) -> Iterator:
        from ..uapi.protocol import READERS     # late: uapi imports the daemon's parts
        host = self.host
        dev = host.device
        name = host.name
        now = host.now()
        read = READERS["peer"]

        sent = CounterMetricFamily("wireguard_sent_bytes", "Bytes sent to the peer (as prometheus_wireguard_"
                                   "exporter)", labels=("interface", "public_key", "allowed_ips"))
        received = CounterMetricFamily("wireguard_received_bytes", "Bytes received from the peer (as "
                                       "prometheus_wireguard_exporter)",
                                       labels=("interface", "public_key", "allowed_ips"))
        handshake = GaugeMetricFamily("wireguard_latest_handshake_seconds", "Unix time of the latest handshake "
                                      "with the peer, 0 before the first (as prometheus_wireguard_exporter)",
                                      labels=("interface", "public_key", "allowed_ips"))
        info = GaugeMetricFamily("wgpy_peer_info", "A peer's endpoint and transport (udp, tcp, tls) and its "
                                 "fallback state (none, standby, active); always 1",
                                 labels=("interface", "public_key", "endpoint", "transport", "fallback"))
        pmtu = GaugeMetricFamily("wgpy_peer_path_mtu_bytes", "Path MTU towards the peer's UDP endpoint (outer "
                                 "packet bytes) and how it was learned (link, icmp, probe)",
                                 labels=("interface", "public_key", "source"))
        unanswered = GaugeMetricFamily("wgpy_peer_unanswered_initiations", "Handshake initiations sent to the "
                                       "peer since the last completed handshake", labels=("interface", "public_key"))
        failing = GaugeMetricFamily("wgpy_peer_last_error", "1 while `wgpy show` reports a last error for the peer "
                                    "(a stream endpoint's failure, unanswered handshakes)",
                                    labels=("interface", "public_key"))
        fb_counts = {k: CounterMetricFamily(f"wgpy_peer_fallback_{k}", doc, labels=("interface", "public_key"))
                     for k, doc in (("switches", "Switches from UDP to the fallback stream endpoint"),
                                    ("returns", "Returns from the fallback to UDP"),
                                    ("probes", "UDP probes sent while on the fallback"))}
        limit = GaugeMetricFamily("wgpy_peer_rate_limit_bits_per_second", "The peer's RateLimit, each way (peers "
                                  "with one)", labels=("interface", "public_key"))
        limited = CounterMetricFamily("wgpy_peer_rate_limit_dropped_packets", "Packets its RateLimit dropped, by "
                                      "direction (sent: to the peer, received: from it)",
                                      labels=("interface", "public_key", "direction"))
        for peer in list(dev.peers.values()):
            rec = {k: read[k](host, peer, {}) for k in _PEER_KEYS}
            key = crypto.encode_key(peer.public_key)
            allowed = ",".join(str(n) for n in rec["allowed_ip"])
            labels = (name, key, allowed)
            sent.add_metric(labels, float(_one(rec["tx_bytes"], 0)))
            received.add_metric(labels, float(_one(rec["rx_bytes"], 0)))
            handshake.add_metric(labels, float(_one(rec["last_handshake_time_sec"], 0)))
            stream = _one(rec["wgpy_endpoint"])
            fallback = _one(rec["wgpy_fallback"])
            if stream is not None:
                endpoint, transport = stream, stream.partition(":")[0]
            elif fallback == "active":
                endpoint = _one(rec["wgpy_fallback_endpoint"], "")
                transport = endpoint.partition(":")[0]
            else:
                endpoint, transport = str(_one(rec["endpoint"], "")), "udp"
            info.add_metric((name, key, endpoint, transport, fallback or "none"), 1.0)
            path = _one(rec["wgpy_path_mtu"])
            if path is not None:
                mtu, _, source = str(path).partition(" ")
                pmtu.add_metric((name, key, source.partition(" ")[0]), float(mtu))
            unanswered.add_metric((name, key), float(getattr(peer, "unanswered_initiations", 0)))
            lim = getattr(peer, "limit", None)
            if lim is not None:
                limit.add_metric((name, key), float(lim.bits))
                tx, rx = lim.dropped()
                limited.add_metric((name, key, "sent"), float(tx))
                limited.add_metric((name, key, "received"), float(rx))
            failing.add_metric((name, key), 1.0 if rec["wgpy_last_error"] else 0.0)
            if fallback is not None:
                for k, fam in fb_counts.items():
                    fam.add_metric((name, key), float(_one(rec[f"wgpy_fallback_{k}"], 0)))
        for fam in (sent, received, handshake, info, pmtu, unanswered, failing, *fb_counts.values(), limit, limited):
            if fam.samples or fam in (sent, received, handshake):
                yield fam

        lab = ("interface",)
        hs = dev.handshakes
        yield _gauge("wgpy_interface_info", "The interface: its public key, mode (tun, tap), UDP listen port, "
                     "wgpy version; always 1", ("interface", "public_key", "mode", "listen_port", "version"),
                     [((name, crypto.encode_key(dev.public_key) if dev.public_key else "", host.mode,
                        str(host.listen_port), __version__), 1.0)])
        yield _gauge("wgpy_peers", "Configured peers", lab, [((name,), len(dev.peers))])
        drops = CounterMetricFamily("wgpy_dropped_packets", "Packets and messages dropped, by reason (the reasons "
                                    "of `wgpy show IFACE stats`; cookie_sent: a handshake answered with a cookie "
                                    "reply under load)", labels=("interface", "reason"))
        for reason, n in sorted(dev.drops.items()):
            drops.add_metric((name, reason), float(n))
        drops.add_metric((name, "tun_read"), float(getattr(host, "tun_read_drops", 0)))
        drops.add_metric((name, "tun_write"), float(getattr(host, "tun_write_errors", 0)))
        yield drops
        yield _counter("wgpy_handshake_initiations_sent", "Handshake initiations sent", lab,
                       [((name,), hs.initiations_sent)])
        yield _counter("wgpy_handshakes_completed", "Handshakes completed, as initiator (a response received) or "
                       "responder (an initiation answered)", ("interface", "role"),
                       [((name, "initiator"), hs.completed_initiator), ((name, "responder"), hs.completed_responder)])
        yield _counter("wgpy_cookie_replies_sent", "Cookie replies sent (under load, to a handshake without a "
                       "valid mac2)", lab, [((name,), dev.drops.get("cookie_sent", 0))])
        yield _gauge("wgpy_under_load", "1 while handshakes need a valid mac2 (too many handshakes per second)",
                     lab, [((name,), 1.0 if dev.is_under_load(now) else 0.0)])
        yield _gauge("wgpy_staged_packets", "Packets waiting for a handshake, all peers", lab,
                     [((name,), dev.staged_total)])
        yield _gauge("wgpy_keypairs", "Live session keypairs", lab, [((name,), len(dev.keypairs_by_index))])
        yield _gauge("wgpy_handshakes_pending", "Handshakes in progress", lab,
                     [((name,), len(dev.handshakes_by_index))])
        yield _gauge("wgpy_ratelimiter_entries", "Sources tracked by the handshake rate limiter", lab,
                     [((name,), len(dev.ratelimiter.table))])
        yield _gauge("wgpy_mtu_bytes", "The tunnel MTU (largest plaintext; L2: the frame with its header), automatic "
                     "or fixed", ("interface", "mode"), [((name, "auto" if dev.pmtu_auto else "fixed"), dev.mtu)])
        streams = getattr(host, "streams", None)
        if streams is not None:
            yield _gauge("wgpy_stream_connections", "TCP/TLS transport connections open", lab,
                         [((name,), len(streams.conns))])
        if self.server_stats is not None:
            st = self.server_stats()
            yield _counter("wgpy_metrics_scrapes", "Requests for /metrics answered", lab, [((name,), st["scrapes"])])
            yield _counter("wgpy_metrics_connections_cut", "Metrics connections cut off, by reason (timeout: too "
                           "slow to send its request or take the reply; evicted: made room for a newer one; "
                           "bad_request: not HTTP, or a request head over the size limit)",
                           ("interface", "reason"),
                           [((name, r), st[r]) for r in ("timeout", "evicted", "bad_request")])


def _gauge(name: str, doc: str, labels: tuple, samples: list) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc, labels=labels)
    for lv, v in samples:
        fam.add_metric(lv, float(v))
    return fam


def _counter(name: str, doc: str, labels: tuple, samples: list) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for lv, v in samples:
        fam.add_metric(lv, float(v))
    return fam


def registry_for(host, server_stats=None) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) with the interface's collector and the
    process collector (process_resident_memory_bytes, process_open_fds, ...)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(InterfaceCollector(host, server_stats))
    ProcessCollector(registry=reg)
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """The exposition text of a scrape."""
    return generate_latest(registry)
