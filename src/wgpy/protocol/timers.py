"""Protocol timers (whitepaper section 6, with the event hooks of the kernel's timers.c).

Each peer holds five deadlines (see peer.py). The device keeps one heap of (deadline, seq, peer) entries; at most
one live entry per peer, at `peer.scheduled`. A deadline moved later is not re-pushed: when its old entry pops,
`_run_timers` finds nothing expired and re-arms the peer at its true next deadline. That keeps the per-packet
cost of timer bookkeeping to attribute stores, and tick() to O(expired peers * log n).

Hooks (call after ...):
    timers_handshake_initiated   an initiation was sent
    timers_handshake_complete    a handshake completed (response consumed, or first packet on `next`);
                                 also resets the peer's count of unanswered initiations
    timers_session_derived       a new keypair was derived
Data-path hooks are inlined in device.py: data sent arms t_new_handshake if unset; any authenticated packet
sent cancels t_send_keepalive; any authenticated packet received cancels t_new_handshake; data received arms
t_send_keepalive if unset; any authenticated packet traversal re-arms t_persistent.
"""

from __future__ import annotations

import heapq

from ..constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
)
from .peer import INF, Peer


class TimersMixin:
    """Timer bookkeeping for Device (needs self._heap, self._heap_seq, self._rand, self._jitter_pool,
    self._jitter_pos and the send methods)."""

    def _schedule(self, peer: Peer, when: float) -> None:
        if when < peer.scheduled:
            peer.scheduled = when
            self._heap_seq += 1
            heapq.heappush(self._heap, (when, self._heap_seq, peer))

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

    def _set_timer_new_handshake(self, peer: Peer, now: float) -> None:
        peer.t_new_handshake = t = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
        self._schedule(peer, t)

    def _set_timer_send_keepalive(self, peer: Peer, now: float) -> None:
        peer.t_send_keepalive = t = now + KEEPALIVE_TIMEOUT
        self._schedule(peer, t)

    def _set_timer_persistent(self, peer: Peer, now: float) -> None:
        peer.t_persistent = t = now + peer.persistent_keepalive
        if t < peer.scheduled:
            self._schedule(peer, t)

    def timers_handshake_initiated(self, peer: Peer, now: float) -> None:
        peer.t_retransmit = t = now + REKEY_TIMEOUT + self._jitter()
        self._schedule(peer, t)

    def timers_handshake_complete(self, peer: Peer) -> None:
        peer.t_retransmit = None
        peer.handshake_attempts = 0
        peer.unanswered_initiations = 0
        peer.sent_lastminute_handshake = False
        peer.last_handshake_wall = self._wall()

    def timers_session_derived(self, peer: Peer, now: float) -> None:
        peer.t_zero_keys = t = now + REJECT_AFTER_TIME * 3
        self._schedule(peer, t)

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float, out: list) -> None:
        """Configure the interval; as wireguard-go does, turning it on sends a keepalive at once."""
        was = peer.persistent_keepalive
        peer.persistent_keepalive = interval
        if not interval:
            peer.t_persistent = None
        elif not was and self.is_up and peer.endpoint is not None:
            self.send_keepalive(peer, now, out)
            self._set_timer_persistent(peer, now)

    # ------------------------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def tick(self, now: float, out: list) -> None:
        """Run every expired timer."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, peer = heapq.heappop(heap)
            if when != peer.scheduled or peer.removed:
                continue   # superseded by an earlier entry, or the peer is gone
            peer.scheduled = INF
            self._run_timers(peer, now, out)
            nd = peer.next_deadline()
            for ext in self._ext_timers:
                d = ext.deadline(peer)
                if d is not None and (nd is None or d < nd):
                    nd = d
            if nd is not None:
                self._schedule(peer, nd)

    def _run_timers(self, peer: Peer, now: float, out: list) -> None:
        if peer.t_retransmit is not None and peer.t_retransmit <= now:
            peer.t_retransmit = None
            self._expired_retransmit_handshake(peer, now, out)
        if peer.t_send_keepalive is not None and peer.t_send_keepalive <= now:
            peer.t_send_keepalive = None
            self.send_keepalive(peer, now, out)
            if peer.need_another_keepalive:
                peer.need_another_keepalive = False
                self._set_timer_send_keepalive(peer, now)
        if peer.t_new_handshake is not None and peer.t_new_handshake <= now:
            # data was sent and nothing came back: the session may be dead, start a new one
            peer.t_new_handshake = None
            self.initiate_handshake(peer, now, out, retry=False)
        if peer.t_zero_keys is not None and peer.t_zero_keys <= now:
            peer.t_zero_keys = None
            self._drop_handshake_index(peer)
            peer.handshake.clear()
            self._clear_keypairs(peer)
        if peer.t_persistent is not None and peer.t_persistent <= now:
            peer.t_persistent = None
            if peer.persistent_keepalive:
                self.send_keepalive(peer, now, out)
        for ext in self._ext_timers:                          # the extensions' own deadlines (ext/base.py)
            d = ext.deadline(peer)
            if d is not None and d <= now:
                ext.timer(peer, now, out)

    def _expired_retransmit_handshake(self, peer: Peer, now: float, out: list) -> None:
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            # give up: REKEY_ATTEMPT_TIME passed without an answer
            peer.t_send_keepalive = None
            self.clear_staged(peer)
            if peer.t_zero_keys is None:
                peer.t_zero_keys = t = now + REJECT_AFTER_TIME * 3
                self._schedule(peer, t)
        else:
            peer.handshake_attempts += 1
            self.initiate_handshake(peer, now, out, retry=True)
