"""The handshake part of the device (whitepaper 5.4.2-5.4.4, 5.4.7; the kernel's receive.c and send.c):
receiving handshake and cookie messages, answering initiations, completing our own, starting handshakes.

Checked in this order, each failure dropped and counted, never answered beyond what the protocol allows:
    1. (type, length) exact, a private key configured
    2. mac1 (always), then under load (more than UNDER_LOAD_HANDSHAKES_PER_SECOND handshake messages in a second,
       for UNDER_LOAD_AFTER_TIME after): a valid mac2, else a cookie reply (rate limited per source); with a
       valid mac2 a per-source rate limit (IPv4 address, or the /64 of an IPv6 address)
    3. the Noise message itself (noise.py): a known peer, a newer timestamp, the right keys
Rules of this file: it owns the rate limiters and the under-load state; peers, the index table, keypairs and
timers are the device's, reached through `dev`; the extensions hear of initiations sent, responses received and
handshakes completed through their hooks (ext/base.py).
"""

from __future__ import annotations

import ipaddress

from ..constants import (
    COOKIE_REPLIES_PER_SECOND, COOKIE_REPLY_BURST, MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION, MESSAGE_RESPONSE,
    REKEY_TIMEOUT,
    UNDER_LOAD_AFTER_TIME, UNDER_LOAD_HANDSHAKES_PER_SECOND,
)
from . import noise
from .messages import (
    INITIATION_MAC1_OFFSET, INITIATION_MAC2_OFFSET, RESPONSE_MAC1_OFFSET, RESPONSE_MAC2_OFFSET, CookieReply,
    Initiation, Response, message_type,
)
from .peer import INF, Peer
from .ratelimiter import RateLimiter
from .stun import is_stun
from .transport import receiver_index

__all__ = ["Handshakes", "ratelimit_key"]


def ratelimit_key(src: object) -> object:
    """The rate limiter's key for a source endpoint: the IPv4 address, or the /64 of an IPv6 address (an IPv6
    host usually has a whole /64 to pick source addresses from). Other endpoint values are used as they are."""
    if isinstance(src, tuple) and src:
        host = src[0]
        if len(src) == 4 or ":" in str(host):
            try:
                return ipaddress.IPv6Address(host.split("%")[0]).packed[:8]
            except (ValueError, AttributeError):
                return host
        return host
    return src


class Handshakes:
    """One device's handshakes (see the module docstring)."""

    def __init__(self, dev) -> None:
        self.dev = dev
        self.ratelimiter = RateLimiter()
        self.cookie_limiter = RateLimiter(COOKIE_REPLIES_PER_SECOND, COOKIE_REPLY_BURST, allow_when_full=True)
        self._hs_window_start = -INF
        self._hs_count = 0
        self._under_load_until = -INF
        self.under_load_threshold = UNDER_LOAD_HANDSHAKES_PER_SECOND
        # counters for the metrics endpoint (ops/metrics.py): handshake path only, never per data packet
        self.initiations_sent = 0        # initiations that went out to an endpoint
        self.completed_initiator = 0     # our initiation answered: a session derived from a response
        self.completed_responder = 0     # a peer's initiation answered: a session derived, response sent

    def under_load(self, now: float) -> bool:
        if now - self._hs_window_start >= 1.0:
            self._hs_window_start = now
            self._hs_count = 0
        self._hs_count += 1
        if self._hs_count > self.under_load_threshold:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME
        return now < self._under_load_until

    def is_under_load(self, now: float) -> bool:
        """Whether handshake messages currently need a valid mac2 (introspection; counts nothing)."""
        return now < self._under_load_until

    def receive(self, data: bytes, src: object, now: float, out: list) -> None:
        """A handshake or cookie message (or garbage): checked in the order of the kernel's receive.c."""
        dev = self.dev
        t = message_type(data)
        checker = dev.cookie_checker
        if t == 0 and dev.stun_sink is not None and is_stun(data):
            dev.stun_sink(data, src, now)                 # an answer from the runtime's STUN server (stun.py)
            return
        if t == 0 or checker is None:
            dev.drops["invalid_message"] += 1
            return
        if t == MESSAGE_COOKIE_REPLY:
            reply = CookieReply.unpack(data)
            peer = dev.handshakes_by_index.get(reply.receiver)
            if peer is None:
                kp = dev.keypairs_by_index.get(reply.receiver)   # a reply to our response
                peer = kp.peer if kp is not None else None
            if peer is None or not peer.cookie.consume_reply(reply, now):
                dev.drops["invalid_cookie_reply"] += 1
            return
        if t == MESSAGE_INITIATION:
            mac1_off, mac2_off = INITIATION_MAC1_OFFSET, INITIATION_MAC2_OFFSET
        elif t == MESSAGE_RESPONSE:
            mac1_off, mac2_off = RESPONSE_MAC1_OFFSET, RESPONSE_MAC2_OFFSET
        else:
            dev.drops["invalid_message"] += 1   # a transport message too short to hold a tag
            return
        if not checker.check_mac1(data, mac1_off):
            dev.drops["invalid_mac1"] += 1
            return
        if self.under_load(now):
            source = repr(src).encode()
            if not checker.check_mac2(data, mac2_off, source, now):
                if not self.cookie_limiter.allow(ratelimit_key(src), now):
                    dev.drops["cookie_ratelimited"] += 1
                    return
                sender = receiver_index(data)                # the sender field sits where a receiver would
                out.append((checker.create_reply(data, sender, mac1_off, source, now,
                                                 lambda: dev._rand(32), dev._rand(24)), src))
                dev.drops["cookie_sent"] += 1
                return
            if not self.ratelimiter.allow(ratelimit_key(src), now):
                dev.drops["ratelimited"] += 1
                return
        if t == MESSAGE_INITIATION:
            self._consume_initiation(Initiation.unpack(data), src, now, out)
        else:
            self._consume_response(Response.unpack(data), src, now, out)

    def _authenticated(self, peer: Peer, src: object, now: float) -> None:
        """A handshake message from `peer` authenticated: roam to its source; timers for any authenticated
        packet received (cancel the new-handshake timer) and traversal (re-arm persistent keepalive)."""
        peer.endpoint = src
        self.dev.timers.handshake_received(peer, now)

    def _consume_initiation(self, msg: Initiation, src: object, now: float, out: list) -> None:
        dev = self.dev
        peer = noise.consume_initiation(dev.identity, msg, dev.peers.get, now)
        if peer is None:
            dev.drops["invalid_initiation"] += 1
            return
        self._authenticated(peer, src, now)
        dev.index.drop_handshake(peer)
        idx = dev.index.new_index()
        resp = noise.create_response(peer.handshake, idx, dev._rand(32))
        if resp is None:
            dev.drops["invalid_initiation"] += 1
            return
        keys = noise.begin_session(peer.handshake)
        dev.index.install_keypair(peer, keys, now)
        dev.timers.session_derived(peer, now)
        dev.timers.authenticated_sent(peer, now)        # the response, below
        self.completed_responder += 1
        out.append((peer.cookie.add_macs(resp.pack(), RESPONSE_MAC1_OFFSET, now), src))

    def _consume_response(self, msg: Response, src: object, now: float, out: list) -> None:
        dev = self.dev
        peer = dev.handshakes_by_index.get(msg.receiver)
        if peer is None or not noise.consume_response(dev.identity, peer.handshake, msg):
            dev.drops["invalid_response"] += 1
            return
        self._authenticated(peer, src, now)
        for hook in dev._on_response_received:
            hook(peer, src, now)
        keys = noise.begin_session(peer.handshake)
        dev.index.install_keypair(peer, keys, now)
        dev.timers.session_derived(peer, now)
        dev.timers.handshake_complete(peer)
        self.completed_initiator += 1
        dev.send_keepalive(peer, now, out)
        for hook in dev._on_handshake_complete:
            hook(peer, now, out)


    def new_initiation(self, peer: Peer, now: float) -> bytes | None:
        """A fresh initiation to `peer` with its MACs, its index registered (the previous one dropped); None if
        the handshake state cannot make one. Sends nothing and touches no timer."""
        dev = self.dev
        dev.index.drop_handshake(peer)
        idx = dev.index.new_index()
        msg = noise.create_initiation(dev.identity, peer.handshake, idx, dev._wall(), dev._rand(32))
        if msg is None:
            return None
        dev.handshakes_by_index[idx] = peer
        return peer.cookie.add_macs(msg.pack(), INITIATION_MAC1_OFFSET, now)

    def initiate(self, peer: Peer, now: float, out: list, retry: bool) -> None:
        """Send a handshake initiation unless one went out less than REKEY_TIMEOUT ago."""
        dev = self.dev
        if not retry:
            peer.handshake_attempts = 0
        if now - peer.last_sent_handshake < REKEY_TIMEOUT or dev.identity is None or peer.removed:
            return
        peer.last_sent_handshake = now
        data = self.new_initiation(peer, now)
        if data is None:
            return
        if peer.endpoint is not None:
            out.append((data, peer.endpoint))
            peer.initiation_to = peer.endpoint
            peer.unanswered_initiations += 1     # until a handshake completes (Timers.handshake_complete)
            self.initiations_sent += 1
        else:
            dev.drops["no_endpoint"] += 1
        dev.timers.handshake_initiated(peer, now)     # with any authenticated packet sent and traversal
        for hook in dev._on_initiation_sent:
            hook(peer, now)
