"""Protocol timers (whitepaper section 6), as the kernel's timers.c has them: five deadlines per peer (peer.py)
moved only by the hooks below, and the expiry actions.

    retransmit      resend an initiation REKEY_TIMEOUT + jitter after one went unanswered (up to
                    MAX_TIMER_HANDSHAKES times, then give up and erase keys later)
    send_keepalive  a keepalive KEEPALIVE_TIMEOUT after data was received without any sent back
    new_handshake   a new handshake when data was sent and nothing came back for KEEPALIVE + REKEY_TIMEOUT
    zero_keys       erase every key REJECT_AFTER_TIME * 3 after the last session was derived
    persistent      a keepalive `persistent_keepalive` seconds after the last authenticated packet either way

Hooks (call after ...; nothing outside this file writes a deadline):
    sent(peer, now, data)                      a batch was sent: authenticated_sent, and with `data` (not a
                                               keepalive) the new-handshake timer armed if unset
    authenticated_sent(peer, now)              any authenticated packet was sent (with traversal)
    traversal(peer, now)                       an authenticated packet went either way
    received(peer, now, data)                  authenticated packets were received (with traversal), `data` of
                                               them carried data: once per peer and batch
    handshake_initiated(peer, now)             an initiation was sent
    handshake_complete(peer)                   a handshake completed (response consumed, or first packet on
                                               `next`); also resets the count of unanswered initiations
    session_derived(peer, now)                 a new keypair was derived

One heap of (deadline, seq, peer) entries serves every peer and every extension deadline (ext/base.py); at most
one live entry per peer, at `peer.scheduled`. A deadline moved later is not re-pushed: when its old entry pops,
nothing has expired and the peer is re-armed at its true next deadline, so moving a deadline costs an
attribute store and tick() costs O(expired peers * log n).
"""

from __future__ import annotations

import heapq

from ..constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
)
from .peer import INF, Peer

__all__ = ["Timers"]

_REKEY_RECV_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT   # keep_key_fresh's age on receive


class Timers:
    """One device's timers (see the module docstring). `dev` carries out the expiry actions (sending a keepalive,
    starting a handshake, erasing keys); `rand(n) -> bytes` gives the jitter; `wall()` the handshake time."""

    def __init__(self, dev, rand, wall) -> None:
        self.dev = dev
        self._rand = rand
        self._wall = wall
        self.heap: list[tuple[float, int, Peer]] = []
        self._seq = 0
        self._jitter_pool = b""
        self._jitter_pos = 0
        self.extensions: list = []          # extensions with deadlines of their own (set by the device)

    def schedule(self, peer: Peer, when: float) -> None:
        """Make sure `peer`'s timers run at `when` (the extensions call it for their deadlines too)."""
        if when < peer.scheduled:
            peer.scheduled = when
            self._seq += 1
            heapq.heappush(self.heap, (when, self._seq, peer))

    def _jitter(self) -> float:
        # two bytes of a pool drawn from `rand` 512 bytes at a time: a getrandom() call per jitter cost ~18 us
        # on the ping path after the process had been idle (it runs for the first data packet of every exchange)
        i = self._jitter_pos
        pool = self._jitter_pool
        if i >= len(pool):
            pool = self._jitter_pool = self._rand(512)
            i = 0
        self._jitter_pos = i + 2
        return (pool[i] | pool[i + 1] << 8) / 65536.0 * REKEY_TIMEOUT_JITTER_MAX

    # ---- hooks --------------------------------------------------------------------------------------------------

    def sent(self, peer: Peer, now: float, data: bool) -> None:
        """A batch of transport messages was sent: any authenticated packet sent (and traversal), and data sent
        when one carried data (the data path's one call per peer and batch)."""
        if data and peer.t_new_handshake is None:
            peer.t_new_handshake = t = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            self.schedule(peer, t)
        peer.t_send_keepalive = None
        if peer.persistent_keepalive:
            self._persistent(peer, now)

    def authenticated_sent(self, peer: Peer, now: float) -> None:
        """Any authenticated packet sent, and its traversal: no passive keepalive is owed any more; the
        persistent keepalive counts from now."""
        peer.t_send_keepalive = None
        if peer.persistent_keepalive:
            self._persistent(peer, now)

    def traversal(self, peer: Peer, now: float) -> None:
        """An authenticated packet went either way (the persistent keepalive counts from now)."""
        if peer.persistent_keepalive:
            self._persistent(peer, now)

    def received(self, peer: Peer, now: float, data: int, out: list | None = None) -> None:
        """Authenticated packets received from `peer` (`data` of them with data), and their traversal; then (with
        `out`) the initiator's last-minute rekey of the kernel's keep_key_fresh on receive: a session within
        KEEPALIVE + REKEY_TIMEOUT of REJECT_AFTER_TIME starts a handshake once. The data path calls it once per
        peer and batch."""
        peer.t_new_handshake = None
        if peer.persistent_keepalive:
            self._persistent(peer, now)
        if data:
            if peer.t_send_keepalive is None:
                peer.t_send_keepalive = t = now + KEEPALIVE_TIMEOUT
                self.schedule(peer, t)
                if data > 1:
                    peer.need_another_keepalive = True   # the kernel's rule, for the second and later packets
            else:
                peer.need_another_keepalive = True
        if out is not None:
            cur = peer.current
            if (cur is not None and cur.is_initiator and not peer.sent_lastminute_handshake
                    and now - cur.created >= _REKEY_RECV_AGE):
                peer.sent_lastminute_handshake = True
                self.dev.initiate_handshake(peer, now, out, retry=False)

    def received_batch(self, seen: dict, now: float, out: list | None = None) -> None:
        """received() for every peer of a batch from several peers (`seen`: peer -> its data packets)."""
        for peer, data in seen.items():
            self.received(peer, now, data, out)

    def handshake_received(self, peer: Peer, now: float) -> None:
        """An authenticated handshake message received, and its traversal (no data)."""
        self.received(peer, now, 0)

    def handshake_initiated(self, peer: Peer, now: float) -> None:
        self.authenticated_sent(peer, now)
        peer.t_retransmit = t = now + REKEY_TIMEOUT + self._jitter()
        self.schedule(peer, t)

    def handshake_complete(self, peer: Peer) -> None:
        peer.t_retransmit = None
        peer.handshake_attempts = 0
        peer.unanswered_initiations = 0
        peer.sent_lastminute_handshake = False
        peer.last_handshake_wall = self._wall()

    def session_derived(self, peer: Peer, now: float) -> None:
        peer.t_zero_keys = t = now + REJECT_AFTER_TIME * 3
        self.schedule(peer, t)

    def _persistent(self, peer: Peer, now: float) -> None:
        peer.t_persistent = t = now + peer.persistent_keepalive
        if t < peer.scheduled:
            self.schedule(peer, t)

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float, out: list) -> None:
        """Configure the interval; as wireguard-go does, turning it on sends a keepalive at once."""
        was = peer.persistent_keepalive
        peer.persistent_keepalive = interval
        if not interval:
            peer.t_persistent = None
        elif not was and self.dev.is_up and peer.endpoint is not None:
            self.dev.send_keepalive(peer, now, out)
            self._persistent(peer, now)

    def keepalive_now(self, peer: Peer, now: float, out: list) -> None:
        """A keepalive at once, and the persistent keepalive counting from it (a peer's first endpoint arrived
        after the interval was set, e.g. from the fallback)."""
        self.dev.send_keepalive(peer, now, out)
        self._persistent(peer, now)

    # ---- expiry --------------------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def tick(self, now: float, out: list) -> None:
        """Run every expired timer."""
        heap = self.heap
        exts = self.extensions
        while heap and heap[0][0] <= now:
            when, _, peer = heapq.heappop(heap)
            if when != peer.scheduled or peer.removed:
                continue   # superseded by an earlier entry, or the peer is gone
            peer.scheduled = INF
            self._run(peer, now, out)
            nd = peer.next_deadline()
            for ext in exts:
                d = ext.deadline(peer)
                if d is not None and (nd is None or d < nd):
                    nd = d
            if nd is not None:
                self.schedule(peer, nd)

    def _run(self, peer: Peer, now: float, out: list) -> None:
        dev = self.dev
        if peer.t_retransmit is not None and peer.t_retransmit <= now:
            peer.t_retransmit = None
            self._expired_retransmit_handshake(peer, now, out)
        if peer.t_send_keepalive is not None and peer.t_send_keepalive <= now:
            peer.t_send_keepalive = None
            dev.send_keepalive(peer, now, out)
            if peer.need_another_keepalive:
                peer.need_another_keepalive = False
                peer.t_send_keepalive = t = now + KEEPALIVE_TIMEOUT
                self.schedule(peer, t)
        if peer.t_new_handshake is not None and peer.t_new_handshake <= now:
            # data was sent and nothing came back: the session may be dead, start a new one
            peer.t_new_handshake = None
            dev.initiate_handshake(peer, now, out, retry=False)
        if peer.t_zero_keys is not None and peer.t_zero_keys <= now:
            peer.t_zero_keys = None
            dev.erase_keys(peer)
        if peer.t_persistent is not None and peer.t_persistent <= now:
            peer.t_persistent = None
            if peer.persistent_keepalive:
                dev.send_keepalive(peer, now, out)
        for ext in self.extensions:                          # the extensions' own deadlines (ext/base.py)
            d = ext.deadline(peer)
            if d is not None and d <= now:
                ext.timer(peer, now, out)

    def _expired_retransmit_handshake(self, peer: Peer, now: float, out: list) -> None:
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            # give up: REKEY_ATTEMPT_TIME passed without an answer
            peer.t_send_keepalive = None
            self.dev.clear_staged(peer)
            if peer.t_zero_keys is None:
                peer.t_zero_keys = t = now + REJECT_AFTER_TIME * 3
                self.schedule(peer, t)
        else:
            peer.handshake_attempts += 1
            self.dev.initiate_handshake(peer, now, out, retry=True)
