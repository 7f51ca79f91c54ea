"""Per-source token bucket for handshake messages while the device is under load.

Pure: the caller passes `now`. The table is bounded (RATELIMIT_MAX_ENTRIES); when full, entries idle for more
than a second are swept, and if it is still full the packet is refused (a flood of distinct sources cannot grow
memory without bound). A sweep walks the whole table, so it runs at most once per second: otherwise every packet
from yet another new source would cost a walk of the full table while the table is full of fresh entries.

Keys are what the caller chooses; the device uses the source IPv4 address, or the /64 prefix of an IPv6 source
(as the kernel does: one IPv6 host commonly owns a whole /64).
"""

from __future__ import annotations

from ..constants import RATELIMIT_BURST, RATELIMIT_MAX_ENTRIES, RATELIMIT_PACKETS_PER_SECOND


class RateLimiter:
    __slots__ = ("rate", "burst", "max_entries", "table", "last_sweep", "allow_when_full")

    def __init__(self, rate: float = RATELIMIT_PACKETS_PER_SECOND, burst: int = RATELIMIT_BURST,
                 max_entries: int = RATELIMIT_MAX_ENTRIES, allow_when_full: bool = False) -> None:
        self.rate = rate
        self.burst = burst
        self.max_entries = max_entries
        # what a new key gets while the table is full of fresh entries: refused (default), or allowed untracked
        self.allow_when_full = allow_when_full
        self.table: dict[object, list[float]] = {}   # key -> [tokens, last update]
        self.last_sweep = float("-inf")

    def allow(self, key: object, now: float) -> bool:
        e = self.table.get(key)
        if e is None:
            if len(self.table) >= self.max_entries:
                if now - self.last_sweep < 1.0:
                    return self.allow_when_full
                self.sweep(now)
                if len(self.table) >= self.max_entries:
                    return self.allow_when_full
            self.table[key] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, e[0] + (now - e[1]) * self.rate)
        e[1] = now
        if tokens < 1.0:
            e[0] = tokens
            return False
        e[0] = tokens - 1.0
        return True

    def sweep(self, now: float) -> None:
        self.last_sweep = now
        stale = [k for k, e in self.table.items() if now - e[1] > 1.0]
        for k in stale:
            del self.table[k]
