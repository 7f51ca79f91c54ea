"""WireGuard's cross-platform userspace API: the `get=1` / `set=1` key=value protocol (wireguard.com/xplatform).

Rules of this file:
- No sockets: requests come in as text, responses go out as text. uapi/server.py owns the unix socket.
- A set request is parsed and validated completely into a SetPlan (uapi/plan.py, from the settings table
  settings/table.py) before anything is applied, so a bad request changes nothing; errors carry wireguard-go's
  negative errno values (errno=-22 for an invalid request).
- A get reply lists the table's get keys in table order, each read by one reader below (or uapi/transport.py).
- The only thing that can fail while applying is binding a new listen port; it is applied first.
- Nothing holds the loop for long: request_steps is a generator that yields between the steps of a large set
  (over LARGE bytes: validated in a first pass, applied in a second, see "a large set, in slices" below) and of
  a get of many peers; the socket server runs steps for a few milliseconds per pass of the loop.

wgpy extension, `wgpy_stats=1`: what the core dropped and how full its bounded tables are, one `key=value` per
line (`drop_<reason>=N`, `peers=`, `keypairs=`, `handshakes=`, `staged_packets=`, `ratelimiter_entries=`,
`under_load=0|1`; L2 devices add `mac_table_entries=`, `mac_table_evicted=`, `mac_table_moved=`), then
`errno=0`. `wg` never sends it; `wgpy show IFACE stats` does.

Keys of a set (device section, then one section per public_key):
    private_key, listen_port, fwmark, replace_peers
    public_key, remove, update_only, preshared_key, endpoint, persistent_keepalive_interval,
    replace_allowed_ips, allowed_ip (a leading '-' removes the prefix), protocol_version

wgpy extension keys, L2 devices (Mode = tap) only; an L3 device refuses them, and an L2 device refuses
allowed_ip (frames are switched by MAC address; a source restriction must not be silently ignored):
    set, device:  wgpy_relay=true|false                   forward frames between peers (hub)
    set, peer:    wgpy_replace_allowed_macs=true, wgpy_allowed_mac=[-]aa:bb:cc:dd:ee:ff
    get, device:  wgpy_mode=tap, wgpy_relay=..., wgpy_local_mac=<mac> <age s>   (MACs behind the TAP)
    get, peer:    wgpy_allowed_mac=<mac>, wgpy_mac=<mac> <age s>                 (MACs learned behind it)
`wg` (wireguard-tools, checked with v1.0.20210914) skips keys it does not know in a get reply, so `wg show`
and `wg showconf` work on L2 interfaces; it never sends the set keys.

Path MTU: set, device: `wgpy_mtu=N` (the core's MTU: the largest plaintext, L2 with the Ethernet header),
`wgpy_mtu_probe_interval=SECONDS` (between re-probe rounds; 0: none), `wgpy_mtu_auto=true|false` (the automatic
MTU mode: the interface MTU follows the peers' path MTUs (L3: their upper median, L2: the smallest); the host sets its sockets' PMTU discovery mode,
Host.set_mtu_auto, applied after `wgpy_mtu`, from which the mode starts) and `wgpy_mtu_min=N` (its floor, an
interface MTU: 1280 when the interface carries IPv6), which `wgpy up` sends once the link has its MTU
(settings/render.py link_uapi); get, device: `wgpy_mtu=<N> auto`, `wgpy_mtu_probe_interval=<s>`,
`wgpy_mtu_auto=true` and `wgpy_mtu_min=<N>` in the automatic MTU mode only (a fixed MTU adds no key, as
wireguard-go's reply);
per peer with a UDP path `wgpy_path_mtu=<outer packet bytes> <link|icmp|probe>[ probing]` (how it was learned;
`probing` while a probe search is still under way) and
`wgpy_peer_wgpy=<extension bits>` once the peer's HELLO said it is wgpy.

Metrics: set, device: `wgpy_metrics_listen=ADDRESS:PORT` (MetricsListen; empty: off) serves Prometheus metrics
at http://ADDRESS:PORT/metrics from the daemon's event loop (ops/metrics.py); applied right after the listen
port, and like it the set fails (EADDRINUSE) when the address cannot be bound. get, device: the same key while
metrics are served.

Rate limits: set, peer: `wgpy_rate_limit=BITS_PER_SECOND` (RateLimit; 0: none) and `wgpy_rate_limit_burst=BYTES`
(RateLimitBurst; 0: the default for the rate), each alone keeping the other; both directions (ext/ratelimit.py).
get, peer, while a limit is set: `wgpy_rate_limit=`, `wgpy_rate_limit_burst=` when one was given, and
`wgpy_rate_limit_dropped=<sent> <received>`, the packets the limit dropped each way.

Failures that look like success, get only, per peer, only when there is one:
`wgpy_last_error=<text>`, what is wrong in words, parts joined by "; ": the stream endpoint's last failure
("TLS: certificate does not match the pinned fingerprint", "connection refused", ...; io/stream.py), then
"no answer to N handshake initiations" once N >= UNANSWERED_INITIATIONS_REPORTED (2) initiations went out since
the last completed handshake (Peer.handshake_error). One line of printable text, at most LAST_ERROR_MAX
characters, never key material; `wg show` skips it.

Host-name endpoints, get only, per peer: `wgpy_endpoint_name=HOST:PORT`, the name the peer's Endpoint was given
as, while its endpoint is still the address the name resolved to (the runtime looks names up again and moves the
peer: io/reresolve.py; a host that keeps no names never reports it).
"""

from __future__ import annotations

import dataclasses
import errno
from typing import Callable, Protocol

from ..protocol.device import Device
from ..routing.mactable import LOCAL, format_mac
from ..settings.table import rows
from ..settings.values import host_port
from . import transport as _transport     # the TCP/TLS transports' keys: wgpy_listen_tcp, wgpy_endpoint, ...
from ..settings.values import redact
from .plan import EADDRINUSE, EINVAL, EIO, EPROTO, UNSET, PeerOp, SetParser, SetPlan, UapiError, _name, parse_set

__all__ = ["EINVAL", "EPROTO", "EIO", "EADDRINUSE", "UNSET", "UapiError", "Host", "PeerOp", "SetPlan",
           "parse_set", "apply_set", "handle_get", "handle_stats", "handle_request", "request_steps", "last_error"]

ZERO_KEY = b"\x00" * 32
LAST_ERROR_MAX = 300


class Host(Protocol):
    """What a UAPI request acts on besides the core: the I/O-side settings of one interface."""
    device: Device
    listen_port: int
    fwmark: int
    mtu_min: int                                            # the automatic MTU's floor (get: wgpy_mtu_min)
    metrics_listen: tuple[str, int] | None                  # where /metrics is served (get: wgpy_metrics_listen)

    def set_listen_port(self, port: int) -> None: ...      # raises OSError (EADDRINUSE) on failure
    def set_fwmark(self, mark: int) -> None: ...
    def set_mtu_auto(self, enabled: bool, min_mtu: int | None) -> None: ...   # socket options; never fails
    def set_metrics_listen(self, addr: tuple[str, int] | None) -> None: ...   # raises OSError on failure
    def parse_endpoint(self, text: str) -> object: ...     # raises ValueError
    def format_endpoint(self, endpoint: object) -> str: ...
    def now(self) -> float: ...
    def flush(self, out: list) -> None: ...                 # send datagrams produced while applying


def handle_stats(host: Host) -> str:
    dev = host.device
    lines = [f"drop_{reason}={n}" for reason, n in sorted(dev.drops.items())]
    lines += [f"peers={len(dev.peers)}", f"keypairs={len(dev.keypairs_by_index)}",
              f"handshakes={len(dev.handshakes_by_index)}", f"staged_packets={dev.staged_total}",
              f"ratelimiter_entries={len(dev.ratelimiter.table)}",
              f"cookie_limiter_entries={len(dev.cookie_limiter.table)}",
              f"under_load={int(dev.is_under_load(host.now()))}"]
    if dev.macs is not None:   # L2: the learning switch's table (bounded by MAC_TABLE_SIZE)
        lines += [f"mac_table_entries={len(dev.macs)}", f"mac_table_evicted={dev.macs.evicted}",
                  f"mac_table_moved={dev.macs.moved}"]
    kernel_drops = getattr(getattr(host, "bind", None), "kernel_drops", None)
    if kernel_drops is not None:   # dropped by the kernel at the UDP sockets: the receiver filter, full queues
        lines.append(f"udp_kernel_drops={kernel_drops()}")
    stun = getattr(host, "stun", None)
    if stun is not None:           # STUN from the WireGuard socket: requests, answers, refused (unmatched, malformed)
        lines += [f"stun_{k}={n}" for k, n in sorted(stun.stats.items())]
    lines += _transport.stats_lines(host)   # the TCP/TLS transports: stream_* counters
    return "".join(line + "\n" for line in lines)


def apply_set(plan: SetPlan, host: Host) -> None:
    now = host.now()
    out: list = []
    _transport.prepare(plan, host)      # TLS files and stream endpoints, may refuse the set
    _apply_device(plan, host)
    for op in plan.peers:
        _apply_peer(op, host, now, out)
    _transport.after_set(host)
    if out:
        host.flush(out)


def _apply_device(plan: SetPlan, host: Host) -> None:
    """The device section; what can fail (a port in use) comes first, so a refusal changes nothing."""
    dev = host.device
    if plan.listen_port is not UNSET and plan.listen_port != host.listen_port:
        try:
            host.set_listen_port(plan.listen_port)
        except OSError as e:
            raise UapiError(EADDRINUSE if e.errno == errno.EADDRINUSE else EIO,
                            f"cannot listen on port {plan.listen_port}: {e.strerror}") from None
    _transport.apply_device(plan, host)     # TCP/TLS listeners (may fail: EADDRINUSE)
    if plan.metrics_listen is not UNSET and plan.metrics_listen != host.metrics_listen:
        try:
            host.set_metrics_listen(plan.metrics_listen)      # the Prometheus endpoint (may fail: EADDRINUSE)
        except OSError as e:
            raise UapiError(EADDRINUSE if e.errno == errno.EADDRINUSE else EIO,
                            f"cannot serve metrics on {plan.metrics_listen}: {e.strerror}") from None
    if plan.stun_server is not UNSET and hasattr(host, "set_stun_server"):
        host.set_stun_server(plan.stun_server)                 # STUN from the WireGuard socket (never fails)
    if plan.fwmark is not UNSET:
        host.set_fwmark(plan.fwmark)
    if plan.private_key is not UNSET:
        dev.set_private_key(None if plan.private_key == ZERO_KEY else plan.private_key)
    if plan.relay is not UNSET:
        dev.relay = plan.relay
    if plan.mtu_probe_interval is not UNSET:
        dev.pmtu_interval = plan.mtu_probe_interval
    if plan.mtu is not UNSET:
        dev.mtu = plan.mtu
    if plan.mtu_auto is not UNSET or plan.mtu_min is not UNSET:    # after the MTU: the mode starts from it
        host.set_mtu_auto(dev.pmtu_auto if plan.mtu_auto is UNSET else plan.mtu_auto,
                          None if plan.mtu_min is UNSET else plan.mtu_min)
    if plan.replace_peers:
        dev.remove_all_peers()


def _apply_peer(op: PeerOp, host: Host, now: float, out: list, first: bool = True) -> None:
    """One peer section, or (`first` False) a later piece of one whose replace_allowed_ips/macs are done."""
    dev = host.device
    if op.remove:
        dev.remove_peer(op.public_key)
        return
    if op.public_key == dev.public_key:
        return   # as wireguard-go: a peer with our own public key is ignored
    peer = dev.peers.get(op.public_key)
    if peer is None:
        if op.update_only:
            return
        peer = dev.add_peer(op.public_key)
    if op.preshared_key is not UNSET:
        dev.set_preshared_key(peer, None if op.preshared_key == ZERO_KEY else op.preshared_key)
    if op.endpoint is not UNSET:
        peer.endpoint = op.endpoint
    if op.replace_allowed_ips and first:
        dev.allowed_ips.remove_by_peer(peer)
    for remove, net in op.allowed_ips:
        if remove:
            dev.allowed_ips.remove(net, peer)
        else:
            dev.allowed_ips.insert(net, peer)
    replace_macs = op.replace_allowed_macs and first
    if replace_macs or op.allowed_macs:
        macs = set() if replace_macs else set(peer.allowed_macs or ())
        for remove, mac in op.allowed_macs:
            if remove:
                macs.discard(mac)
            else:
                macs.add(mac)
        dev.set_allowed_macs(peer, macs)
    if op.persistent_keepalive is not UNSET:
        dev.set_persistent_keepalive(peer, op.persistent_keepalive, now, out)
    if op.rate_limit is not UNSET or op.rate_limit_burst is not UNSET:
        # either key alone keeps the other's value; a burst for a peer without a rate has nothing to size
        lim = peer.limit
        bits = op.rate_limit if op.rate_limit is not UNSET else (lim.bits if lim is not None else 0)
        burst = (op.rate_limit_burst or None) if op.rate_limit_burst is not UNSET else (
            lim.burst_given if lim is not None else None)
        dev.set_rate_limit(peer, bits, burst, now, out)
    _transport.apply_peer(op, peer, host, now, out)     # the TCP/TLS transports and the fallback
    if op.punch:
        dev.punch(peer, now, out)


# ---- a large set, in slices -----------------------------------------------------------------------------------
# A set of many peers (wg setconf of a big config: ~100 bytes and one X25519 exchange, ~60 us, per peer) would
# hold the loop for seconds: 8 MB of text took 6.6 s of the data path and ~230 MB of plan objects before. Above
# LARGE bytes it is done in two passes over the text, in steps of STEP lines: the generator request_steps
# yields after each, and the server (UapiServer.work) runs steps for a few milliseconds, then lets the data path
# run, then the next slice:
#   1. validate every line (and the TLS files a peer names), keeping only 4 flag bits per peer section; a bad
#      request is refused having changed nothing, as a small one;
#   2. parse again and apply: the device section as soon as it is complete (a port in use refuses the request
#      before anything else changes), then each peer section, a long one (many allowed IPs) piece by piece, its
#      remove / update_only / replace_allowed_* taken from pass 1 so that the first piece already obeys them.
# Memory: the request text, the flags, and one slice of parsed lines. Between two slices the data path sees the
# set half applied (a peer already added, the next not yet), as with wireguard-go, which applies line by line.

LARGE = 64 << 10        # bytes: a set request above this is applied in slices
STEP = 64               # lines parsed (and, in pass 2, applied) between two yields
_REMOVE, _UPDATE_ONLY, _REPLACE_IPS, _REPLACE_MACS = 1, 2, 4, 8


def _body_lines(text: str):
    """The non-empty lines after the operation line, without splitting the whole text at once."""
    start = text.find("\n") + 1
    size = len(text)
    if start == 0:
        return
    while start < size:
        end = text.find("\n", start)
        if end < 0:
            end = size
        if end > start:
            yield text[start:end]
        start = end + 1


def _flags(op: PeerOp) -> int:
    return (_REMOVE * op.remove | _UPDATE_ONLY * op.update_only | _REPLACE_IPS * op.replace_allowed_ips
            | _REPLACE_MACS * op.replace_allowed_macs)


def _obey(op: PeerOp, f: int) -> PeerOp:
    op.remove, op.update_only = bool(f & _REMOVE), bool(f & _UPDATE_ONLY)
    op.replace_allowed_ips, op.replace_allowed_macs = bool(f & _REPLACE_IPS), bool(f & _REPLACE_MACS)
    return op


def _set_in_slices(request: str, host: Host):
    l2 = host.device.l2
    # pass 1: validate
    p = SetParser(host.parse_endpoint, l2)
    flags = bytearray()

    def checked(final: bool) -> None:
        done = p.plan.peers[:] if final else p.take_finished()
        flags.extend(_flags(op) for op in done)
        if final:
            _transport.prepare(p.plan, host)                 # the device's TLS files, the last peers'
        elif any(op.transport for op in done):
            _transport.prepare(SetPlan(peers=done), host)
        if not final and p.target is not p.plan:             # validated: the lists are not kept
            p.target.allowed_ips.clear()
            p.target.allowed_macs.clear()
    for i, line in enumerate(_body_lines(request), 1):
        p.line(line)
        if not i % STEP:
            checked(False)
            yield
    checked(True)
    del p
    yield
    # pass 2: apply
    q = SetParser(host.parse_endpoint, l2)
    state = {"device": False, "piece_of": -1}      # the device section applied; the section a piece was of

    def apply(final: bool) -> None:
        if not state["device"]:
            if q.target is q.plan and not final:
                return                                        # the device section goes on
            _transport.prepare(dataclasses.replace(q.plan, peers=[]), host)
            _apply_device(q.plan, host)
            state["device"] = True
        now = host.now()
        out: list = []
        done = q.plan.peers[:] if final else q.take_finished()
        if final:
            q.plan.peers.clear()
        for op in done:
            _obey(op, flags[op.section])
            if op.transport:
                _transport.prepare(SetPlan(peers=[op]), host)
            _apply_peer(op, host, now, out, first=state["piece_of"] != op.section)
            state["piece_of"] = -1
        cur = q.target
        if not final and cur is not q.plan and (cur.allowed_ips or cur.allowed_macs):
            piece = _obey(PeerOp(cur.public_key, cur.line, allowed_ips=cur.allowed_ips,
                                 allowed_macs=cur.allowed_macs, section=cur.section), flags[cur.section])
            cur.allowed_ips, cur.allowed_macs = [], []
            _apply_peer(piece, host, now, out, first=state["piece_of"] != cur.section)
            state["piece_of"] = cur.section
        if out:
            host.flush(out)
    for i, line in enumerate(_body_lines(request), 1):
        q.line(line)
        if not i % STEP:
            apply(False)
            yield
    apply(True)
    _transport.after_set(host)


def last_error(peer) -> str | None:
    """The peer's wgpy_last_error text (see the module docstring), or None when nothing looks wrong."""
    parts = [t for t in (_transport.endpoint_error(peer), peer.handshake_error()) if t]
    if not parts:
        return None
    text = "; ".join(parts)
    # one line of printable text whatever an error message carried (a reply line must not end early or hold
    # control characters)
    return "".join(c if c.isprintable() else " " for c in text)[:LAST_ERROR_MAX]


def _learned(host: Host) -> dict[object, list[str]]:
    """L2: the MAC table's entries by port (LOCAL or a peer), as get writes them ("MAC AGE")."""
    learned: dict[object, list[str]] = {}
    if host.device.macs is not None:
        for mac, port, age in host.device.macs.snapshot(host.now()):
            learned.setdefault(port, []).append(f"{format_mac(mac)} {int(age)}")
    return learned


def _l2(read):
    return lambda host, peer, ctx: read(host, peer, ctx) if host.device.macs is not None else []


def _if(cond, read):
    return lambda host, peer, ctx: [read(host, peer)] if cond(host, peer) else []


def _endpoint_name(host, peer) -> str | None:
    """The host-name endpoint in force (daemon.Interface.endpoint_name); hosts without names have none."""
    read = getattr(host, "endpoint_name", None)
    return read(peer) if read is not None else None


def _handshake_nsec(peer) -> int:
    wall = peer.last_handshake_wall
    return int((wall - int(wall)) * 1e9) if wall else 0


def _path_mtu(peer) -> str:
    st = peer.pmtu
    return f"{st.mtu} {st.source}{' probing' if st.searching else ''}"


# get: UAPI key -> reader(host, peer, learned) -> values, one per get row of settings/table.py
_DEVICE_GET = {
    "private_key": _if(lambda h, p: h.device.identity is not None, lambda h, p: h.device.identity.private_raw.hex()),
    "listen_port": _if(lambda h, p: h.listen_port, lambda h, p: h.listen_port),
    "fwmark": _if(lambda h, p: h.fwmark, lambda h, p: h.fwmark),
    "wgpy_mode": _l2(lambda h, p, ctx: ["tap"]),
    "wgpy_relay": _l2(lambda h, p, ctx: ["true" if h.device.relay else "false"]),
    "wgpy_local_mac": _l2(lambda h, p, ctx: ctx.get(LOCAL, [])),
    "wgpy_mtu": _if(lambda h, p: h.device.pmtu_auto, lambda h, p: f"{h.device.mtu} auto"),
    "wgpy_mtu_probe_interval": _if(lambda h, p: h.device.pmtu_auto, lambda h, p: f"{h.device.pmtu_interval:g}"),
    "wgpy_mtu_auto": _if(lambda h, p: h.device.pmtu_auto, lambda h, p: "true"),
    "wgpy_mtu_min": _if(lambda h, p: h.device.pmtu_auto, lambda h, p: h.mtu_min),
    "wgpy_metrics_listen": _if(lambda h, p: getattr(h, "metrics_listen", None),
                               lambda h, p: host_port(*h.metrics_listen)),
    "wgpy_stun_server": _if(lambda h, p: getattr(h, "stun", None) is not None,
                            lambda h, p: host_port(*h.stun_server)),
    "wgpy_stun_mapped": _if(lambda h, p: getattr(h, "stun", None) is not None and h.stun.mapped is not None,
                            lambda h, p: host_port(*h.stun.mapped)),
}
_PEER_GET = {
    "public_key": _if(lambda h, p: True, lambda h, p: p.public_key.hex()),
    "preshared_key": _if(lambda h, p: True, lambda h, p: p.handshake.preshared_key.hex()),
    "protocol_version": _if(lambda h, p: True, lambda h, p: 1),
    "endpoint": _if(lambda h, p: p.endpoint is not None and not _transport.is_stream(p.endpoint),
                    lambda h, p: h.format_endpoint(p.endpoint)),          # a stream: wgpy_endpoint
    "wgpy_endpoint_name": lambda h, p, ctx: [n for n in (_endpoint_name(h, p),) if n],
    "last_handshake_time_sec": _if(lambda h, p: True, lambda h, p: int(p.last_handshake_wall)),
    "last_handshake_time_nsec": _if(lambda h, p: True, lambda h, p: _handshake_nsec(p)),
    "tx_bytes": _if(lambda h, p: True, lambda h, p: p.tx_bytes),
    "rx_bytes": _if(lambda h, p: True, lambda h, p: p.rx_bytes),
    "persistent_keepalive_interval": _if(lambda h, p: True, lambda h, p: p.persistent_keepalive),
    "allowed_ip": lambda h, p, ctx: h.device.allowed_ips.entries(p),
    "wgpy_allowed_mac": _l2(lambda h, p, ctx: [format_mac(m) for m in sorted(p.allowed_macs or ())]),
    "wgpy_mac": _l2(lambda h, p, ctx: ctx.get(p, [])),
    "wgpy_rate_limit": _if(lambda h, p: p.limit is not None, lambda h, p: p.limit.bits),
    "wgpy_rate_limit_burst": _if(lambda h, p: p.limit is not None and p.limit.burst_given,
                                 lambda h, p: p.limit.burst_given),
    "wgpy_rate_limit_dropped": _if(lambda h, p: p.limit is not None, lambda h, p: "%d %d" % p.limit.dropped()),
    "wgpy_path_mtu": _if(lambda h, p: p.pmtu is not None and isinstance(p.endpoint, tuple), lambda h, p: _path_mtu(p)),
    "wgpy_peer_wgpy": _if(lambda h, p: p.wgpy, lambda h, p: p.wgpy & 0x7FFFFFFF),
    "wgpy_last_error": lambda h, p, ctx: [e for e in (last_error(p),) if e is not None],
}
for _k, _read in _transport.DEVICE_GET.items():
    _DEVICE_GET[_k] = lambda h, p, ctx, _read=_read: _read(h, p)
for _k, _read in _transport.PEER_GET.items():
    _PEER_GET[_k] = lambda h, p, ctx, _read=_read: _read(h, p)
GET_KEYS = {section: [s.uapi for s in rows(section, get=True)] for section in ("interface", "peer")}
READERS = {"interface": _DEVICE_GET, "peer": _PEER_GET}


def handle_get(host: Host) -> str:
    steps = _get_steps(host)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


GET_STEP = 256          # peers written between two yields of a get (80,000 peers: 1.4 s of text, 25 MB)


def _get_steps(host: Host):
    """The get reply, yielding every GET_STEP peers (the loop runs the data path between slices; the set of peers
    cannot change meanwhile: UAPI requests are served one at a time)."""
    learned = _learned(host)
    parts = []
    lines = []
    for key in GET_KEYS["interface"]:
        lines += [f"{key}={v}" for v in _DEVICE_GET[key](host, None, learned)]
    for i, peer in enumerate(list(host.device.peers.values()), 1):
        for key in GET_KEYS["peer"]:
            lines += [f"{key}={v}" for v in _PEER_GET[key](host, peer, learned)]
        if not i % GET_STEP:
            parts.append("".join(line + "\n" for line in lines))
            lines = []
            yield
    parts.append("".join(line + "\n" for line in lines))
    return "".join(parts)


def handle_request(request: str, host: Host, log: Callable[[str], None] | None = None) -> str:
    """One complete request (without its terminating blank line) -> the full response text."""
    steps = request_steps(request, host, log)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def request_steps(request: str, host: Host, log: Callable[[str], None] | None = None):
    """handle_request as a generator: it yields (None) between the slices of a large set, for the loop to run
    the data path (UapiServer.work), and returns the response text. Anything else is done at the first next()."""
    try:
        if len(request) > LARGE and request.startswith("set=1\n"):
            yield from _set_in_slices(request, host)
            return "errno=0\n\n"
        lines = request.split("\n")
        op = lines[0]
        if op == "get=1":
            if len(lines) > 1 and any(lines[1:]):
                raise UapiError(EINVAL, "get takes no arguments")
            return (yield from _get_steps(host)) + "errno=0\n\n"
        if op == "wgpy_stats=1":
            return handle_stats(host) + "errno=0\n\n"
        if op == "set=1":
            plan = parse_set([ln for ln in lines[1:] if ln], host.parse_endpoint, host.device.l2)
            apply_set(plan, host)
            return "errno=0\n\n"
        # the name of what came instead, never a value: a request may start with `private_key=...`
        raise UapiError(EINVAL, f"unknown operation{_name(op.partition('=')[0])} (expected get=1 or set=1)")
    except UapiError as e:
        if log is not None:
            log(f"UAPI request refused: {redact(str(e))}")
        return f"errno={e.code}\n\n"
    except Exception as e:   # a bug must not take the interface down; say so and refuse the request
        if log is not None:
            log(f"UAPI request failed: {type(e).__name__}")
        return f"errno={EIO}\n\n"
