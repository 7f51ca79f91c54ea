"""The WireGuard device core: identity, peers, cryptokey routing, index table, cookies and the data path.

It is driven by three sources and performs no I/O; every call appends what to do to lists the caller owns:
    packets read from the TUN device      -> send_packets(packets, now, out_net)
    datagrams read from the network       -> receive_datagrams(datagrams, now, out_net, out_tun)
    a deadline passing                    -> tick(now, out_net); next_deadline() says when
`out_net` receives (datagram, endpoint) tuples; `out_tun` receives decrypted IP packets. Endpoints are opaque
values chosen by the I/O layer (for UDP: the address tuple of recvfrom/sendto).

Outbound flow (send_packets), batch at a time:
    1. route: the allowed-IPs table maps each packet's destination to a peer (no peer: dropped, counted)
    2. group by peer, so the per-peer work (keypair choice, timers, counters) is done once per batch
    3. no usable keypair: stage the packets (bounded) and start a handshake
    4. encrypt each packet with the current keypair, counter = nonce, padded to 16 bytes
Inbound flow (receive_datagrams):
    1. validate (type, length) before any crypto; garbage is dropped and counted, never answered
    2. transport: index -> keypair, decrypt, then replay check, then the inner source address must be allowed
       for the peer that owns the key ("dishonest peer" otherwise)
    3. handshake messages: mac1 first; under load mac2 (else a cookie reply) and a per-source rate limit
Randomness and wall-clock time come from the callables given to the constructor.

L2 mode (Device(..., l2=True), for a TAP device): the plaintext of a data message is one Ethernet frame and
the device is a learning switch whose ports are the local TAP (LOCAL) and the peers. Its data path is
send_frames / receive_datagrams_l2, installed under the names send_packets / receive_datagrams when the device
is made, so the I/O layer calls the same two methods and the L3 loops stay free of any mode test:
    send_frames: learn source MAC -> LOCAL; destination known at a peer -> that peer; destination known to be
       local -> filtered; broadcast, multicast or unknown -> every peer (one encryption per peer)
    receive_datagrams_l2: the transport checks of L3 (index, expiry, AEAD, replay, timers), then the source MAC
       must be a unicast address and, if the peer has a list of allowed MACs, on it; learn source -> peer;
       destination local or unknown or multi/broadcast -> out_tun; with `relay` on, destination known at
       another peer -> re-encrypted to it, and multi/broadcast/unknown also flooded to every other peer
Allowed IPs play no part in L2: neither for forwarding nor as a source check. Frames are padded like packets
(to 16 bytes, within the MTU); the receiver writes them to the TAP with that padding, see docs/architecture.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from .. import crypto
from ..constants import (
    MAX_PEERS, MAX_STAGED_PACKETS_TOTAL, MESSAGE_TRANSPORT_MIN_SIZE, REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, REKEY_TIMEOUT,
)
from ..routing.allowedips import AllowedIPs
from ..routing.mactable import MacTable
from . import noise
from .cookie import CookieChecker
from .handshake import Handshakes, ratelimit_key  # noqa: F401  (ratelimit_key: re-exported for the tests)
from .indextable import IndexTable
from .keypair import Keypair
from .peer import Peer
from .router import Router
from .switch import Switch
from .timers import Timers
from .transport import NATIVE, TRANSPORT_WORD, parse_header, seal_batch
# wgpy's extensions: the device is their composition root (ext/base.py is the interface they implement)
from ..ext.base import Extension, hooks_of
from ..ext.fallback import FallbackExtension
from ..ext.pmtu import PathMtuExtension
from ..ext.ratelimit import RateLimitExtension

_ZERO4 = b"\x00" * 4
InvalidTag = crypto.InvalidTag
open_run = NATIVE.open_run if NATIVE is not None else None


class ConfigurationError(ValueError):
    """Local misuse of the device API (bad key, too many peers); carries no secret."""


class Device:
    def __init__(self, private_key: bytes | None = None, *, rand: Callable[[int], bytes],
                 wall: Callable[[], float], mtu: int = 1420, l2: bool = False) -> None:
        self.events: list = []             # typed events for the runtime (protocol/events.py), rare
        self.peers: dict[bytes, Peer] = {}
        # wgpy's extensions, plug-ins with their own per-peer state (ext/base.py): path MTU and its control
        # channel, the UDP -> stream fallback, per-peer rate limits (which the forwarding steps also call, for a
        # limited peer only). The core calls them through the hook lists below only.
        self.path_mtu = PathMtuExtension(self)
        self.fallback = FallbackExtension(self)
        self.rate_limit = RateLimitExtension(self)
        self.extensions: list[Extension] = [self.path_mtu, self.fallback, self.rate_limit]
        self._on_initiation_sent = hooks_of(self.extensions, "initiation_sent")
        self._on_response_received = hooks_of(self.extensions, "response_received")
        self._on_handshake_complete = hooks_of(self.extensions, "handshake_complete")
        self._ext_timers = [e for e in self.extensions if hooks_of([e], "timer")]
        self._rand = rand
        self._wall = wall
        self.mtu = mtu
        self.identity: noise.StaticIdentity | None = None
        self.cookie_checker: CookieChecker | None = None
        self.allowed_ips = AllowedIPs()
        self.index = IndexTable(rand)      # receiver index -> handshake or keypair (indextable.py)
        self.keypairs_by_index = self.index.keypairs        # the same dicts, read by the data path
        self.handshakes_by_index = self.index.handshakes
        self.drops: Counter[str] = Counter()
        self.staged_total = 0          # packets staged over all peers (bounded by MAX_STAGED_PACKETS_TOTAL)
        self.timers = Timers(self, rand, wall)   # the five deadlines per peer, one heap (timers.py)
        self.timers.extensions = self._ext_timers
        self.handshakes = Handshakes(self)   # handshake and cookie messages, rate limits (handshake.py)
        self.receive_handshake = self.handshakes.receive
        # STUN messages on the WireGuard socket (protocol/stun.py): (data, src, now) -> None, set by the runtime
        # when it asks a STUN server; looked at only on the path of non-transport messages
        self.stun_sink: Callable | None = None
        self.initiate_handshake = self.handshakes.initiate
        self.new_initiation = self.handshakes.new_initiation
        self.is_up = True
        self.l2 = l2
        # the forwarding strategy, chosen once here, never per packet: a router (L3, router.py) or a learning
        # switch (L2, switch.py); the I/O layer calls send_packets / receive_datagrams either way
        self.forwarding = Switch(self) if l2 else Router(self)
        self.send_packets = self.forwarding.send
        self.receive_datagrams = self.forwarding.receive
        if private_key is not None:
            self.set_private_key(private_key)

    # ------------------------------------------------------------------------------------------------------
    # configuration
    # ------------------------------------------------------------------------------------------------------

    @property
    def mtu(self) -> int:
        """The interface MTU in plaintext bytes (L2: including the Ethernet header); every peer's limit follows
        (ext/pmtu.py lowers it per peer in the automatic mode)."""
        return self._mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        self._mtu = value
        limit = self.path_mtu.limit
        for peer in self.peers.values():
            peer.mtu = limit(peer)

    # the path MTU extension's settings and queries, on the device the runtime and the UAPI configure
    control_enabled = property(lambda self: self.path_mtu.control_enabled,
                               lambda self, v: setattr(self.path_mtu, "control_enabled", v))
    pmtu_auto = property(lambda self: self.path_mtu.pmtu_auto)
    pmtu_interval = property(lambda self: self.path_mtu.pmtu_interval,
                             lambda self, v: setattr(self.path_mtu, "pmtu_interval", v))
    link_mtu = property(lambda self: self.path_mtu.link_mtu, lambda self, f: setattr(self.path_mtu, "link_mtu", f))

    def set_pmtu_auto(self, auto: bool) -> None:
        self.path_mtu.set_pmtu_auto(auto)

    def smallest_usable_mtu(self) -> int | None:
        return self.path_mtu.smallest_usable_mtu()

    def interface_usable_mtu(self) -> int | None:
        return self.path_mtu.interface_usable_mtu()

    def path_mtu_learned(self, host: str, port: int, mtu: int, now: float, quote: bytes = b"",
                         local: bool = False) -> int:
        return self.path_mtu.path_mtu_learned(host, port, mtu, now, quote, local)

    # the parts' state the UAPI and the tests read or set on the device
    ratelimiter = property(lambda self: self.handshakes.ratelimiter)
    cookie_limiter = property(lambda self: self.handshakes.cookie_limiter)
    under_load_threshold = property(lambda self: self.handshakes.under_load_threshold,
                                    lambda self, v: setattr(self.handshakes, "under_load_threshold", v))

    def is_under_load(self, now: float) -> bool:
        return self.handshakes.is_under_load(now)

    @property
    def macs(self) -> MacTable | None:
        """L2: the switch's MAC table (None in L3)."""
        return self.forwarding.macs if self.l2 else None

    @macs.setter
    def macs(self, table: MacTable) -> None:
        self.forwarding.macs = table

    @property
    def relay(self) -> bool:
        return self.l2 and self.forwarding.relay

    @relay.setter
    def relay(self, on: bool) -> None:
        if self.l2:
            self.forwarding.relay = on

    def set_allowed_macs(self, peer: Peer, macs: Iterable[bytes] | None) -> None:
        if self.l2:
            self.forwarding.set_allowed_macs(peer, macs)
        else:
            peer.allowed_macs = frozenset(macs) if macs else None

    def peers_at(self, endpoint: object) -> list[Peer]:
        """The peers whose endpoint is `endpoint` (by identity: a stream endpoint is one connection's or one
        target's). Only an authenticated message or the configuration makes an endpoint a peer's, so for a
        fresh connection this says whom its messages proved it to be. Not for the data path: it scans."""
        return [p for p in self.peers.values() if p.endpoint is endpoint]

    def schedule(self, peer: Peer, when: float) -> None:
        """Wake `peer`'s timers at `when` (for extensions that moved a deadline earlier)."""
        self.timers.schedule(peer, when)

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def tick(self, now: float, out: list) -> None:
        """Run every expired timer."""
        self.timers.tick(now, out)

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float, out: list) -> None:
        self.timers.set_persistent_keepalive(peer, interval, now, out)

    def erase_keys(self, peer: Peer) -> None:
        """Forget every key of `peer`'s sessions and handshake (REJECT_AFTER_TIME * 3 after the last session)."""
        self.index.drop_handshake(peer)
        peer.handshake.clear()
        self.index.clear_keypairs(peer)

    @property
    def public_key(self) -> bytes | None:
        return self.identity.public if self.identity else None

    def set_private_key(self, private_key: bytes | None) -> None:
        """Install (or with None remove) the static private key. As wireguard-go does: a peer whose public key
        equals our own is removed, every handshake is reset and every session expired."""
        if private_key is not None and len(private_key) != 32:
            raise ConfigurationError("private key must be 32 bytes")
        if private_key is not None and self.identity and private_key == self.identity.private_raw:
            return
        self.identity = noise.StaticIdentity(private_key) if private_key is not None else None
        self.cookie_checker = (CookieChecker(self.identity.mac1_key, self.identity.cookie_key)
                               if self.identity else None)
        if self.identity and self.identity.public in self.peers:
            self.remove_peer(self.identity.public)
        for peer in self.peers.values():
            psk = peer.handshake.preshared_key
            self.index.drop_handshake(peer)
            peer.handshake = self._new_handshake(peer.public_key, psk)
            self.index.clear_keypairs(peer)
            peer.unanswered_initiations = 0      # a new identity: earlier initiations say nothing about it

    def _new_handshake(self, public_key: bytes, psk: bytes | None) -> noise.Handshake:
        if self.identity is None:
            hs = noise.Handshake(remote_static=public_key, precomputed_static_static=None,
                                 preshared_key=psk or noise.ZERO_KEY)
            return hs
        return noise.new_handshake(self.identity, public_key, psk)

    def add_peer(self, public_key: bytes) -> Peer:
        if len(public_key) != 32:
            raise ConfigurationError("public key must be 32 bytes")
        peer = self.peers.get(public_key)
        if peer is not None:
            return peer
        if len(self.peers) >= MAX_PEERS:
            raise ConfigurationError("too many peers")
        peer = Peer(public_key, self._new_handshake(public_key, None))
        peer.mtu = self.path_mtu.limit(peer)
        self.peers[public_key] = peer
        return peer

    def set_rate_limit(self, peer: Peer, bits_per_second: int, burst: int | None, now: float, out: list) -> None:
        """Limit `peer`'s traffic each way to `bits_per_second` (0: unlimited), bucket depth `burst` bytes (None:
        the default for the rate); ext/ratelimit.py."""
        self.rate_limit.set_limit(peer, bits_per_second, burst, now, out)

    def set_preshared_key(self, peer: Peer, psk: bytes | None) -> None:
        peer.handshake.preshared_key = psk or noise.ZERO_KEY

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        peer.removed = True
        self.allowed_ips.remove_by_peer(peer)
        if self.macs is not None:
            self.macs.remove_port(peer)
        self.index.drop_handshake(peer)
        self.index.clear_keypairs(peer)
        self.clear_staged(peer)
        self.rate_limit.peer_removed(peer)

    def remove_all_peers(self) -> None:
        for key in list(self.peers):
            self.remove_peer(key)

    # ------------------------------------------------------------------------------------------------------
    # outbound data path
    # ------------------------------------------------------------------------------------------------------

    def _send_to_peer(self, peer: Peer, pkts: list[bytes], now: float, out: list) -> None:
        kp = peer.current
        if (kp is None or now - kp.created >= REJECT_AFTER_TIME
                or kp.send_counter + len(pkts) > REJECT_AFTER_MESSAGES):
            self._stage(peer, pkts)
            self.initiate_handshake(peer, now, out, retry=False)
            return
        ep = peer.endpoint
        if ep is None:
            self.drops["no_endpoint"] += len(pkts)
            return
        mtu = peer.mtu                     # the interface MTU, or less when this peer's path is smaller
        nbytes, big = seal_batch(kp, pkts, mtu, ep, out)
        ctr = kp.send_counter
        peer.tx_bytes += nbytes
        if peer.pmtu is not None:          # the largest sent, to check ICMP about it against (ext/pmtu.py)
            peer.pmtu.note_sent(pkts, mtu, now)
        # data sent unless this is a keepalive, which always goes alone ([b""], send_keepalive)
        self.timers.sent(peer, now, pkts[0] != b"")
        # keep the key fresh
        if ctr > REKEY_AFTER_MESSAGES or (kp.is_initiator and now - kp.created >= REKEY_AFTER_TIME):
            self.initiate_handshake(peer, now, out, retry=False)
        if big is not None:
            self.path_mtu.packets_too_big(peer, big, mtu, now, out)   # ICMP / fragments / unpadded (ext/pmtu.py)

    def _stage(self, peer: Peer, pkts: list[bytes]) -> None:
        """Queue packets until the peer has a session: per peer the oldest go beyond MAX_STAGED_PACKETS, over
        all peers new ones are refused beyond MAX_STAGED_PACKETS_TOTAL (both counted as drops)."""
        room = MAX_STAGED_PACKETS_TOTAL - self.staged_total
        if len(pkts) > room:
            self.drops["staged_total_full"] += len(pkts) - max(room, 0)
            pkts = pkts[:max(room, 0)]
        staged = peer.staged
        before = len(staged)
        staged.extend(pkts)
        after = len(staged)
        if before + len(pkts) > after:
            self.drops["staged_peer_full"] += before + len(pkts) - after
        self.staged_total += after - before

    def clear_staged(self, peer: Peer) -> None:
        self.staged_total -= len(peer.staged)
        peer.staged.clear()

    def send_staged(self, peer: Peer, now: float, out: list) -> None:
        if not peer.staged:
            return
        pkts = list(peer.staged)
        self.clear_staged(peer)
        self._send_to_peer(peer, pkts, now, out)

    def punch(self, peer: Peer, now: float, out: list) -> None:
        """wgpy_punch: a packet to the peer's endpoint now (the mesh agent, on a new endpoint from the peer's
        candidates: it opens this side's NAT towards it). Over a session a keepalive; without one a handshake
        initiation, even if one went out within REKEY_TIMEOUT, to another endpoint (to this one: nothing)."""
        if peer.endpoint is None or not self.is_up:
            return
        kp = peer.current
        if kp is None or now - kp.created >= REJECT_AFTER_TIME:
            if peer.initiation_to == peer.endpoint and now - peer.last_sent_handshake < REKEY_TIMEOUT:
                return       # one went there already (its retry follows): a second within the timestamp's
                             # 16.8 ms would be refused as a replay, and later it would only replace the first
            peer.last_sent_handshake = -float("inf")
        self.send_keepalive(peer, now, out)

    def send_keepalive(self, peer: Peer, now: float, out: list) -> None:
        """Send staged packets, or an empty transport message if none are staged."""
        if peer.staged:
            self.send_staged(peer, now, out)
        else:
            self._send_to_peer(peer, [b""], now, out)

    # ------------------------------------------------------------------------------------------------------
    # inbound
    # ------------------------------------------------------------------------------------------------------

    def open_transport_py(self, datagrams: Iterable[tuple[bytes, object]], now: float,
                          out_net: list) -> list[tuple[Peer, bytes]]:
        """Inbound, step 1 for both forwarding strategies: open every transport message of a batch. The pure-Python
        reference of open_transport_native (Device.open_transport is one of the two, chosen at import).

        Handshake messages go to receive_handshake as they come. A transport message is checked in this order,
        each failure dropped and counted: known receiver index, keypair not expired, AEAD tag, replay window.
        Then it is authenticated: the peer's endpoint becomes the source and a `next` keypair is confirmed; the
        timer hooks of authenticated packets received run once per peer of the batch. Returns the non-empty
        plaintexts with their peers, in order, for the forwarding step (Router.receive / Switch.forward)."""
        kps = self.keypairs_by_index
        unpack = parse_header
        drops = self.drops
        opened: list[tuple[Peer, bytes]] = []
        append = opened.append
        # the timers of what was received run once per peer and batch (timers.py): `last` is the peer of the
        # current run of packets and `ndata` how many of them carried data; `others`, the earlier runs' peers
        # (a batch from several peers, rare), is made only when needed
        last: Peer | None = None
        ndata = 0
        others: dict[Peer, int] | None = None
        timers = self.timers
        for data, src in datagrams:
            if data[:4] != TRANSPORT_WORD or len(data) < MESSAGE_TRANSPORT_MIN_SIZE:
                if last is not None:     # what came before a handshake message is settled first, in order
                    self._settle(last, ndata, others, now, out_net)
                    last, ndata, others = None, 0, None
                self.receive_handshake(data, src, now, out_net)
                continue
            idx, ctr = unpack(data, 4)
            kp = kps.get(idx)
            if kp is None:
                drops["unknown_index"] += 1
                continue
            if ctr >= REJECT_AFTER_MESSAGES or now - kp.created >= REJECT_AFTER_TIME:
                drops["expired_keypair"] += 1
                continue
            try:
                pt = kp.recv.decrypt(_ZERO4 + data[8:16], data[16:], None)   # transport.open_body, inlined
            except InvalidTag:
                drops["invalid_tag"] += 1
                continue
            if not kp.replay.check_and_update(ctr):
                drops["replay"] += 1
                continue
            peer = kp.peer
            peer.endpoint = src
            if kp is not peer.current:
                self._received_with_keypair(peer, kp, now, out_net)
            peer.rx_bytes += len(data)
            if peer is not last:
                if last is not None:
                    if others is None:
                        others = {}
                    others[last] = others.get(last, 0) + ndata
                last, ndata = peer, 0
            if pt:
                ndata += 1
                append((peer, pt))
        if last is not None:
            if others is None:
                timers.received(last, now, ndata, out_net)
            else:
                self._settle(last, ndata, others, now, out_net)
        return opened

    def open_transport_native(self, datagrams: Iterable[tuple[bytes, object]], now: float,
                              out_net: list) -> list[tuple[Peer, bytes]]:
        """open_transport_py with wgpy._crypto's open_run: the same checks, in the same order, with the same
        results. A run of consecutive transport messages to one receiver index is opened in one call (decrypted
        with the GIL released, then the replay window in message order); per run, not per message, the peer's
        endpoint (the first accepted message's source, then the last's), keypair confirmation and byte count."""
        if datagrams.__class__ is not list:
            datagrams = list(datagrams)
        kps = self.keypairs_by_index
        unpack = parse_header
        drops = self.drops
        opened: list[tuple[Peer, bytes]] = []
        last: Peer | None = None
        ndata = 0
        others: dict[Peer, int] | None = None
        i, n = 0, len(datagrams)
        while i < n:
            data, src = datagrams[i]
            if data[:4] != TRANSPORT_WORD or len(data) < MESSAGE_TRANSPORT_MIN_SIZE:
                if last is not None:
                    self._settle(last, ndata, others, now, out_net)
                    last, ndata, others = None, 0, None
                self.receive_handshake(data, src, now, out_net)
                i += 1
                continue
            kp = kps.get(unpack(data, 4)[0])
            if kp is None:
                drops["unknown_index"] += 1
                i += 1
                continue
            if now - kp.created >= REJECT_AFTER_TIME:
                drops["expired_keypair"] += 1
                i += 1
                continue
            peer = kp.peer
            i, nok, nd, nbytes, first, final, bad, replayed, expired = open_run(kp.recv, kp.replay, datagrams, i,
                                                                                peer, opened)
            if bad:
                drops["invalid_tag"] += bad
            if replayed:
                drops["replay"] += replayed
            if expired:
                drops["expired_keypair"] += expired
            if not nok:
                continue
            peer.endpoint = datagrams[first][1]
            if kp is not peer.current:
                self._received_with_keypair(peer, kp, now, out_net)
            if final != first:
                peer.endpoint = datagrams[final][1]
            peer.rx_bytes += nbytes
            if peer is not last:
                if last is not None:
                    if others is None:
                        others = {}
                    others[last] = others.get(last, 0) + ndata
                last, ndata = peer, 0
            ndata += nd
        if last is not None:
            if others is None:
                self.timers.received(last, now, ndata, out_net)
            else:
                self._settle(last, ndata, others, now, out_net)
        return opened

    # the data path's inbound loop, chosen once (transport.NATIVE): nothing per packet asks which one runs
    open_transport = open_transport_native if NATIVE is not None else open_transport_py

    def _settle(self, last: Peer, ndata: int, others: dict[Peer, int] | None, now: float, out: list) -> None:
        """The receive timers of a batch from several peers, or of the packets before a handshake message."""
        if others is None:
            self.timers.received(last, now, ndata, out)
            return
        others[last] = others.get(last, 0) + ndata
        self.timers.received_batch(others, now, out)

    def receive_datagrams(self, datagrams: Iterable[tuple[bytes, object]], now: float, out_net: list,
                          out_tun: list) -> None:
        """Inbound: open a batch (open_transport), then forward it: the forwarding strategy's receive (the
        instance attribute of this name, set at construction, calls it without this hop)."""
        self.forwarding.receive(datagrams, now, out_net, out_tun)

    def _received_with_keypair(self, peer: Peer, kp: Keypair, now: float, out: list) -> None:
        """A transport message authenticated with `next` confirms the responder's new session."""
        if kp is not peer.next:
            return
        self.index.drop_keypair(peer.previous)
        peer.previous = peer.current
        peer.current = kp
        peer.next = None
        self.timers.handshake_complete(peer)
        self.send_staged(peer, now, out)
        for hook in self._on_handshake_complete:
            hook(peer, now, out)

    # ------------------------------------------------------------------------------------------------------
    # introspection
    # ------------------------------------------------------------------------------------------------------

    def zero_all(self) -> None:
        for peer in self.peers.values():
            self.erase_keys(peer)
