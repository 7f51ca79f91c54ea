"""RateLimitExtension: per-peer bandwidth limits (RateLimit / RateLimitBurst, UAPI wgpy_rate_limit[_burst]).

A limited peer has a PeerLimit (protocol/shaper.py) in `peer.limit`; every other peer has None there, and the
data path pays one attribute test per peer and batch for it (sending), one test of `active` per batch
(receiving):
    sending     Router.send / Switch.send hand a peer's batch to outbound() before sealing it: what the bucket
                admits is sealed at once, the rest waits (plaintext) in the peer's queue or is dropped
                ("rate_limit_sent"); staged packets, keepalives and the control channel are not limited
    receiving   after the transport checks, inbound() takes a limited peer's plaintexts out of the batch into
                its queue the same way ("rate_limit_received"); the forwarding step (source check, trim, the
                switch) runs on them when they are let out
    the timer   deadline(peer) is the queue's next release; timer() seals what came free (Device._send_to_peer)
                and forwards what came in, writing it to the TUN through one TunPackets event
A limit set again (a new rate or burst) keeps what is queued; a limit removed lets the queues go at once.
"""

from __future__ import annotations

from ..protocol.events import TunPackets
from ..protocol.shaper import PeerLimit
from .base import Extension
from .control import CONTROL_MARKER, L2_CONTROL_HEADER

__all__ = ["RateLimitExtension"]


class RateLimitExtension(Extension):
    name = "ratelimit"

    def __init__(self, dev) -> None:
        self.dev = dev
        self.active = 0                # peers with a limit: receive_datagrams skips inbound() while 0

    # ---- configuration (the UAPI) --------------------------------------------------------------------------

    def set_limit(self, peer, bits_per_second: int, burst: int | None, now: float, out: list) -> None:
        """Limit `peer` to `bits_per_second` each way (0: no limit) with a bucket of `burst` bytes (None: the
        default for the rate)."""
        old = peer.limit
        if not bits_per_second:
            if old is not None:
                peer.limit = None
                self.active -= 1
                self._flush(peer, old, now, out)
            return
        new = PeerLimit(bits_per_second, burst, now)
        if old is not None:            # what waits keeps its place
            for a, b in ((old.tx, new.tx), (old.rx, new.rx)):
                b.queue, b.queued, b.dropped, b.delayed = a.queue, a.queued, a.dropped, a.delayed
                b.tokens = min(a.tokens, b.burst)
        else:
            self.active += 1
        peer.limit = new
        when = new.next_release()
        if when is not None:
            self.dev.schedule(peer, when)

    def peer_removed(self, peer) -> None:
        if peer.limit is not None:
            peer.limit = None              # its queues go with it
            self.active -= 1

    # ---- the data path -------------------------------------------------------------------------------------

    def _admit(self, peer, bucket, packets: list, now: float, reason: str) -> list:
        """What `bucket` lets go now; its drops counted under `reason`, the timer woken when a queue starts."""
        had = bucket.queued
        n = bucket.dropped
        ok = bucket.admit(packets, now)
        if bucket.dropped != n:
            self.dev.drops[reason] += bucket.dropped - n
        if bucket.queued and not had:
            self.dev.schedule(peer, bucket.next_release())
        return ok

    def outbound(self, peer, packets: list, now: float) -> list:
        """The packets of a peer's batch to seal now; the rest queued (or dropped) by the peer's limit."""
        return self._admit(peer, peer.limit.tx, packets, now, "rate_limit_sent")

    def inbound(self, opened: list, now: float) -> list:
        """`opened` (peer, plaintext) pairs with the limited peers' over-the-limit plaintexts taken out (queued or
        dropped), in order. wgpy control messages are not limited (a probe held back would look like a smaller
        path MTU)."""
        out = []
        append = out.append
        run_peer = None
        run: list = []
        l2 = self.dev.l2
        for peer, pt in opened:
            if peer.limit is None or (pt[:14] == L2_CONTROL_HEADER if l2 else pt[0] == CONTROL_MARKER):
                if run:
                    self._admit_rx(run_peer, run, now, append)
                    run = []
                    run_peer = None
                append((peer, pt))
                continue
            if peer is not run_peer and run:
                self._admit_rx(run_peer, run, now, append)
                run = []
            run_peer = peer
            run.append(pt)
        if run:
            self._admit_rx(run_peer, run, now, append)
        return out

    def _admit_rx(self, peer, run: list, now: float, append) -> None:
        for pt in self._admit(peer, peer.limit.rx, run, now, "rate_limit_received"):
            append((peer, pt))

    # ---- the timer (ext/base.py) ---------------------------------------------------------------------------

    def deadline(self, peer) -> float | None:
        lim = peer.limit
        return lim.next_release() if lim is not None else None

    def timer(self, peer, now: float, out: list) -> None:
        lim = peer.limit
        if lim is None:
            return
        self._send(peer, lim.tx.release(now), lim.rx.release(now), now, out)

    def _flush(self, peer, lim: PeerLimit, now: float, out: list) -> None:
        tx, rx = list(lim.tx.queue), list(lim.rx.queue)
        lim.tx.clear()
        lim.rx.clear()
        self._send(peer, tx, rx, now, out)

    def _send(self, peer, tx: list, rx: list, now: float, out: list) -> None:
        dev = self.dev
        if tx and not peer.removed:
            dev._send_to_peer(peer, tx, now, out)
        if rx and not peer.removed:
            tun: list = []
            dev.forwarding.inbound([(peer, pt) for pt in rx], now, out, tun)
            if tun:
                dev.events.append(TunPackets(tun))
