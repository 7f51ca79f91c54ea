"""WireGuard's cross-platform userspace API: the `get=1` / `set=1` key=value protocol (wireguard.com/xplatform).

Rules of this file:
- No sockets: requests come in as text, responses go out as text. uapi/server.py owns the unix socket.
- A set request is parsed and validated completely into a SetPlan before anything is applied, so a bad request
  changes nothing; errors carry wireguard-go's negative errno values (errno=-22 for an invalid request).
- The only thing that can fail while applying is binding a new listen port; it is applied first.

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

#8 path MTU, get only: device `wgpy_mtu=<interface MTU in plaintext bytes> auto` in the automatic MTU mode;
per peer with a UDP path `wgpy_path_mtu=<outer packet bytes> <link|icmp|probe>[ probing]` (how it was learned;
`probing` while a probe search is still under way) and
`wgpy_peer_wgpy=<extension bits>` once the peer's HELLO said it is wgpy.

Failures that look like success (issue 20), get only, per peer, only when there is one:
`wgpy_last_error=<text>`, what is wrong in words, parts joined by "; ": the stream endpoint's last failure
("TLS: certificate does not match the pinned fingerprint", "connection refused", ...; io/stream.py), then
"no answer to N handshake initiations" once N >= UNANSWERED_INITIATIONS_REPORTED (2) initiations went out since
the last completed handshake (Peer.handshake_error). One line of printable text, at most LAST_ERROR_MAX
characters, never key material; `wg show` skips it.
"""

from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..protocol.device import Device
from ..routing.mactable import LOCAL, format_mac, parse_mac
from . import transport as _transport     # --- #7 transports: wgpy_listen_tcp, wgpy_endpoint, ... (transport.py)

EINVAL = -errno.EINVAL
EPROTO = -errno.EPROTO
EIO = -errno.EIO
EADDRINUSE = -errno.EADDRINUSE
UNSET = object()
ZERO_KEY = b"\x00" * 32
LAST_ERROR_MAX = 300


class UapiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Host(Protocol):
    """What a UAPI request acts on besides the core: the I/O-side settings of one interface."""
    device: Device
    listen_port: int
    fwmark: int

    def set_listen_port(self, port: int) -> None: ...      # raises OSError (EADDRINUSE) on failure
    def set_fwmark(self, mark: int) -> None: ...
    def parse_endpoint(self, text: str) -> object: ...     # raises ValueError
    def format_endpoint(self, endpoint: object) -> str: ...
    def now(self) -> float: ...
    def flush(self, out: list) -> None: ...                 # send datagrams produced while applying


@dataclass
class PeerOp:
    public_key: bytes
    line: int
    remove: bool = False
    update_only: bool = False
    preshared_key: object = field(default=UNSET, repr=False)   # never in a repr (tracebacks, logs)
    endpoint: object = UNSET
    persistent_keepalive: object = UNSET
    replace_allowed_ips: bool = False
    allowed_ips: list[tuple[bool, ipaddress.IPv4Network | ipaddress.IPv6Network]] = field(default_factory=list)
    replace_allowed_macs: bool = False
    allowed_macs: list[tuple[bool, bytes]] = field(default_factory=list)
    transport: dict = field(default_factory=dict, repr=False)   # --- #7 transports: wgpy_* peer keys


@dataclass
class SetPlan:
    private_key: object = field(default=UNSET, repr=False)
    listen_port: object = UNSET
    fwmark: object = UNSET
    replace_peers: bool = False
    relay: object = UNSET
    peers: list[PeerOp] = field(default_factory=list)
    transport: dict = field(default_factory=dict, repr=False)   # --- #7 transports: wgpy_* device keys


_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_PREFIX = re.compile(r"[^/]+/[0-9]{1,3}")


def _hex_key(value: str, key: str) -> bytes:
    if not _HEX_KEY.fullmatch(value):
        raise UapiError(EINVAL, f"{key}: expected 64 hex characters")
    return bytes.fromhex(value)


def _uint(value: str, key: str, limit: int) -> int:
    if not _DIGITS.fullmatch(value):
        raise UapiError(EINVAL, f"{key}: not a number")
    n = int(value)
    if n > limit:
        raise UapiError(EINVAL, f"{key}: out of range")
    return n


def _true(value: str, key: str) -> bool:
    if value != "true":
        raise UapiError(EINVAL, f"{key}: only 'true' is accepted")
    return True


_KEY_NAME = re.compile(r"[a-z_]{1,40}")


def _name(key: str) -> str:
    """A key name for an error message: only if it looks like one, so a line holding key material (a value typed
    where the name should be) never reaches the log."""
    return f" {key!r}" if _KEY_NAME.fullmatch(key) else ""


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
    lines += _transport.stats_lines(host)   # --- #7 transports: stream_* counters
    return "".join(line + "\n" for line in lines)


def _bool(value: str, key: str) -> bool:
    if value not in ("true", "false"):
        raise UapiError(EINVAL, f"{key}: expected true or false")
    return value == "true"


def parse_set(lines: list[str], parse_endpoint: Callable[[str], object], l2: bool = False) -> SetPlan:
    """Parse a set request for an L3 device, or with `l2` for an L2 (TAP) device."""
    plan = SetPlan()
    peer: PeerOp | None = None
    for n, line in enumerate(lines, 1):
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(EPROTO, f"line {n}: expected key=value")
        if key == "public_key":
            peer = PeerOp(_hex_key(value, key), n)
            plan.peers.append(peer)
            continue
        if peer is None:
            if key == "private_key":
                plan.private_key = _hex_key(value, key)
            elif key == "listen_port":
                plan.listen_port = _uint(value, key, 65535)
            elif key == "fwmark":
                plan.fwmark = _uint(value, key, 0xFFFFFFFF) if value else 0
            elif key == "replace_peers":
                plan.replace_peers = _true(value, key)
            elif key == "wgpy_relay" and l2:
                plan.relay = _bool(value, key)
            elif key in _transport.DEVICE_KEYS:     # --- #7 transports
                _transport.parse_device_key(plan.transport, key, value)
            else:
                raise UapiError(EINVAL, f"line {n}: invalid device key{_name(key)}")
            continue
        if key == "remove":
            peer.remove = _true(value, key)
        elif key == "update_only":
            peer.update_only = _true(value, key)
        elif key == "preshared_key":
            peer.preshared_key = _hex_key(value, key)
        elif key == "endpoint":
            try:
                peer.endpoint = parse_endpoint(value)
            except ValueError:
                raise UapiError(EINVAL, f"line {n}: invalid endpoint") from None
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = _uint(value, key, 65535)
        elif key == "replace_allowed_ips":
            peer.replace_allowed_ips = _true(value, key)
        elif key == "allowed_ip" and l2:
            raise UapiError(EINVAL, f"line {n}: allowed_ip is not used by an L2 (tap) device; "
                                    "use wgpy_allowed_mac")
        elif key == "wgpy_replace_allowed_macs" and l2:
            peer.replace_allowed_macs = _true(value, key)
        elif key == "wgpy_allowed_mac" and l2:
            remove = value.startswith("-")
            try:
                mac = parse_mac(value[1:] if remove else value)
            except ValueError:
                raise UapiError(EINVAL, f"line {n}: invalid wgpy_allowed_mac") from None
            peer.allowed_macs.append((remove, mac))
        elif key == "allowed_ip":
            remove = value.startswith("-")
            text = value[1:] if remove else value
            try:
                if not _PREFIX.fullmatch(text):
                    raise ValueError
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise UapiError(EINVAL, f"line {n}: invalid allowed_ip") from None
            peer.allowed_ips.append((remove, net))
        elif key == "protocol_version":
            if value != "1":
                raise UapiError(EINVAL, f"line {n}: unsupported protocol_version")
        elif key in _transport.PEER_KEYS:           # --- #7 transports
            _transport.parse_peer_key(peer.transport, key, value)
        else:
            raise UapiError(EINVAL, f"line {n}: invalid peer key{_name(key)}")
    return plan


def apply_set(plan: SetPlan, host: Host) -> None:
    dev = host.device
    now = host.now()
    out: list = []
    _transport.prepare(plan, host)      # --- #7 transports: TLS files and stream endpoints, may refuse the set
    if plan.listen_port is not UNSET and plan.listen_port != host.listen_port:
        try:
            host.set_listen_port(plan.listen_port)
        except OSError as e:
            raise UapiError(EADDRINUSE if e.errno == errno.EADDRINUSE else EIO,
                            f"cannot listen on port {plan.listen_port}: {e.strerror}") from None
    _transport.apply_device(plan, host)     # --- #7 transports: TCP/TLS listeners (may fail: EADDRINUSE)
    if plan.fwmark is not UNSET:
        host.set_fwmark(plan.fwmark)
    if plan.private_key is not UNSET:
        dev.set_private_key(None if plan.private_key == ZERO_KEY else plan.private_key)
    if plan.relay is not UNSET:
        dev.relay = plan.relay
    if plan.replace_peers:
        dev.remove_all_peers()
    own = dev.public_key
    for op in plan.peers:
        if op.remove:
            dev.remove_peer(op.public_key)
            continue
        if op.public_key == own:
            continue   # as wireguard-go: a peer with our own public key is ignored
        peer = dev.peers.get(op.public_key)
        if peer is None:
            if op.update_only:
                continue
            peer = dev.add_peer(op.public_key)
        if op.preshared_key is not UNSET:
            dev.set_preshared_key(peer, None if op.preshared_key == ZERO_KEY else op.preshared_key)
        if op.endpoint is not UNSET:
            peer.endpoint = op.endpoint
        if op.replace_allowed_ips:
            dev.allowed_ips.remove_by_peer(peer)
        for remove, net in op.allowed_ips:
            if remove:
                dev.allowed_ips.remove(net, peer)
            else:
                dev.allowed_ips.insert(net, peer)
        if op.replace_allowed_macs or op.allowed_macs:
            macs = set() if op.replace_allowed_macs else set(peer.allowed_macs or ())
            for remove, mac in op.allowed_macs:
                if remove:
                    macs.discard(mac)
                else:
                    macs.add(mac)
            dev.set_allowed_macs(peer, macs)
        if op.persistent_keepalive is not UNSET:
            dev.set_persistent_keepalive(peer, op.persistent_keepalive, now, out)
        _transport.apply_peer(op, peer, host, now, out)     # --- #7 transports
    _transport.after_set(host)
    if out:
        host.flush(out)


def last_error(peer) -> str | None:
    """The peer's wgpy_last_error text (see the module docstring), or None when nothing looks wrong."""
    parts = [t for t in (_transport.endpoint_error(peer), peer.handshake_error()) if t]
    if not parts:
        return None
    text = "; ".join(parts)
    # one line of printable text whatever an error message carried (a reply line must not end early or hold
    # control characters)
    return "".join(c if c.isprintable() else " " for c in text)[:LAST_ERROR_MAX]


def handle_get(host: Host) -> str:
    dev = host.device
    lines = []
    if dev.identity is not None:
        lines.append(f"private_key={dev.identity.private_raw.hex()}")
    if host.listen_port:
        lines.append(f"listen_port={host.listen_port}")
    if host.fwmark:
        lines.append(f"fwmark={host.fwmark}")
    lines.extend(_transport.device_lines(host))     # --- #7 transports
    learned: dict[object, list[str]] = {}
    if dev.macs is not None:
        lines.append("wgpy_mode=tap")
        lines.append(f"wgpy_relay={'true' if dev.relay else 'false'}")
        for mac, port, age in dev.macs.snapshot(host.now()):
            learned.setdefault(port, []).append(f"{format_mac(mac)} {int(age)}")
        lines.extend(f"wgpy_local_mac={entry}" for entry in learned.get(LOCAL, ()))
    if dev.pmtu_auto:                                                       # #8
        lines.append(f"wgpy_mtu={dev.mtu} auto")
    for peer in dev.peers.values():
        lines.append(f"public_key={peer.public_key.hex()}")
        lines.append(f"preshared_key={peer.handshake.preshared_key.hex()}")
        lines.append("protocol_version=1")
        if peer.endpoint is not None and not _transport.is_stream(peer.endpoint):   # #7: wgpy_endpoint below
            lines.append(f"endpoint={host.format_endpoint(peer.endpoint)}")
        wall = peer.last_handshake_wall
        sec = int(wall)
        lines.append(f"last_handshake_time_sec={sec}")
        lines.append(f"last_handshake_time_nsec={int((wall - sec) * 1e9) if wall else 0}")
        lines.append(f"tx_bytes={peer.tx_bytes}")
        lines.append(f"rx_bytes={peer.rx_bytes}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        for net in dev.allowed_ips.entries(peer):
            lines.append(f"allowed_ip={net}")
        if dev.macs is not None:
            lines.extend(f"wgpy_allowed_mac={format_mac(mac)}" for mac in sorted(peer.allowed_macs or ()))
            lines.extend(f"wgpy_mac={entry}" for entry in learned.get(peer, ()))
        st = peer.pmtu                                                      # #8 path MTU
        if st is not None and type(peer.endpoint) is tuple:
            lines.append(f"wgpy_path_mtu={st.mtu} {st.source}{' probing' if st.searching else ''}")
        if peer.wgpy:
            lines.append(f"wgpy_peer_wgpy={peer.wgpy & 0x7FFFFFFF}")
        lines.extend(_transport.peer_lines(peer))       # --- #7 transports
        err = last_error(peer)                          # issue 20: what is wrong, in words
        if err is not None:
            lines.append(f"wgpy_last_error={err}")
    return "".join(line + "\n" for line in lines)


def handle_request(request: str, host: Host, log: Callable[[str], None] | None = None) -> str:
    """One complete request (without its terminating blank line) -> the full response text."""
    lines = request.split("\n")
    op = lines[0]
    try:
        if op == "get=1":
            if len(lines) > 1 and any(lines[1:]):
                raise UapiError(EINVAL, "get takes no arguments")
            return handle_get(host) + "errno=0\n\n"
        if op == "wgpy_stats=1":
            return handle_stats(host) + "errno=0\n\n"
        if op == "set=1":
            plan = parse_set([ln for ln in lines[1:] if ln], host.parse_endpoint, host.device.l2)
            apply_set(plan, host)
            return "errno=0\n\n"
        raise UapiError(EINVAL, f"unknown operation {op!r}")
    except UapiError as e:
        if log is not None:
            log(f"UAPI request refused: {e}")
        return f"errno={e.code}\n\n"
    except Exception as e:   # a bug must not take the interface down; say so and refuse the request
        if log is not None:
            log(f"UAPI request failed: {type(e).__name__}")
        return f"errno={EIO}\n\n"
