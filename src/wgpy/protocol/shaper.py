"""Per-peer rate limits (RateLimit, RateLimitBurst): a token bucket with a bounded FIFO, one per direction.

Pure state fed packets and a clock. `admit(packets, now)` returns the packets that may go now (a prefix of the
batch, or all of it) and keeps the rest in its queue, in order, as far as the queue's byte bound allows; what
does not fit is dropped and counted (tail drop). While packets wait, later ones queue behind them, so nothing
is ever reordered. `release(now)` returns the queued packets whose tokens have come in; `next_release()` says
when to call it. Bytes are the tunnel's packets (inner IP packets or frames, as read from or written to the
TUN/TAP), not the encrypted datagrams.

A packet larger than the whole bucket goes when the bucket is full, driving the tokens below zero: the rate
holds and nothing can wait forever.
"""

from __future__ import annotations

from collections import deque

from ..constants import (
    RATE_LIMIT_BURST_MIN, RATE_LIMIT_BURST_TIME, RATE_LIMIT_MIN_WAIT, RATE_LIMIT_QUEUE_MAX, RATE_LIMIT_QUEUE_TIME,
)

__all__ = ["Bucket", "PeerLimit", "default_burst", "queue_bound"]


def default_burst(bits_per_second: int) -> int:
    """The bucket depth in bytes when RateLimitBurst is not given."""
    return max(RATE_LIMIT_BURST_MIN, int(bits_per_second / 8 * RATE_LIMIT_BURST_TIME))


def queue_bound(bits_per_second: int, burst: int) -> int:
    """The most bytes a direction's queue holds."""
    return min(RATE_LIMIT_QUEUE_MAX, max(burst, int(bits_per_second / 8 * RATE_LIMIT_QUEUE_TIME)))


class Bucket:
    """One direction of one peer: `rate` bytes a second, `burst` bytes deep, a queue of at most `limit` bytes."""

    __slots__ = ("rate", "burst", "limit", "tokens", "stamp", "queue", "queued", "dropped", "delayed")

    def __init__(self, rate: float, burst: int, limit: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.limit = limit
        self.tokens = float(burst)     # a new limit starts full
        self.stamp = now
        self.queue: deque[bytes] = deque()
        self.queued = 0                # bytes in the queue
        self.dropped = 0               # packets dropped: the queue was full
        self.delayed = 0               # packets that waited in the queue

    def _refill(self, now: float) -> float:
        t = self.tokens + (now - self.stamp) * self.rate
        if t > self.burst:
            t = self.burst
        self.stamp = now
        return t

    def admit(self, packets: list, now: float) -> list:
        """The packets of a batch that may go at once; the others are queued or dropped."""
        tokens = self._refill(now)
        if self.queue:                 # packets wait already: these go behind them
            self.tokens = tokens
            self._hold(packets, 0)
            return []
        burst = self.burst
        i = 0
        for p in packets:
            n = len(p)
            if n > tokens and tokens < burst:
                break
            tokens -= n
            i += 1
        self.tokens = tokens
        if i == len(packets):
            return packets
        self._hold(packets, i)
        return packets[:i]

    def _hold(self, packets: list, start: int) -> None:
        room = self.limit - self.queued
        q = self.queue
        end = len(packets)
        i = start
        while i < end:
            n = len(packets[i])
            if n > room:
                break
            q.append(packets[i])
            room -= n
            i += 1
        self.delayed += i - start
        self.dropped += end - i
        self.queued = self.limit - room

    def release(self, now: float) -> list:
        """The queued packets that may go now, in order."""
        tokens = self._refill(now)
        q = self.queue
        burst = self.burst
        out = []
        sent = 0
        while q:
            n = len(q[0])
            if n > tokens and tokens < burst:
                break
            tokens -= n
            sent += n
            out.append(q.popleft())
        self.tokens = tokens
        self.queued -= sent
        return out

    def next_release(self) -> float | None:
        """When the head of the queue will fit (no sooner than RATE_LIMIT_MIN_WAIT after the last look), or None
        with nothing queued."""
        q = self.queue
        if not q:
            return None
        need = min(len(q[0]), self.burst) - self.tokens
        wait = need / self.rate if need > 0 else 0.0
        return self.stamp + (wait if wait > RATE_LIMIT_MIN_WAIT else RATE_LIMIT_MIN_WAIT)

    def clear(self) -> None:
        self.queue.clear()
        self.queued = 0


class PeerLimit:
    """A peer's limit: the configured rate (bits a second) and burst (bytes, None: default_burst), and a bucket per
    direction: `tx` for what the TUN/TAP sends to the peer, `rx` for what the peer sends to the TUN/TAP. Received
    packets queue with the peer they came from, to be forwarded when let out."""

    __slots__ = ("bits", "burst_given", "tx", "rx")

    def __init__(self, bits_per_second: int, burst: int | None, now: float) -> None:
        self.bits = bits_per_second
        self.burst_given = burst
        depth = burst if burst is not None else default_burst(bits_per_second)
        limit = queue_bound(bits_per_second, depth)
        self.tx = Bucket(bits_per_second / 8, depth, limit, now)
        self.rx = Bucket(bits_per_second / 8, depth, limit, now)

    @property
    def burst(self) -> int:
        return self.tx.burst

    def next_release(self) -> float | None:
        a = self.tx.next_release()
        b = self.rx.next_release()
        if a is None:
            return b
        return a if b is None or a < b else b

    def dropped(self) -> tuple[int, int]:
        return self.tx.dropped, self.rx.dropped
