"""The learning switch's MAC table for L2 mode: Ethernet source address -> the port it was last seen on.

Ports are the local TAP device (the LOCAL sentinel) and peers (any other object, compared by identity). The
table is sans-IO: the caller passes `now` (monotonic seconds) to every call.

Layout: one OrderedDict ``entries`` of ``mac (6 bytes) -> [port, last_seen, mark]``. The data path reads it
directly, without a method call per frame:

    e = entries.get(mac)
    known = e is not None and now - e[1] < aging        # a destination lookup (e[0] is the port)
    if e is not None and e[0] is port: e[1] = now       # refreshing a source; otherwise call learn()

Bounds and order: at most ``max_entries`` addresses. A new address in a full table evicts with the second-chance
(CLOCK) rule, which approximates least-recently-used without moving anything on the per-frame refresh: entries
sit in insertion order; the eviction pops the oldest; if that entry was refreshed since it was (re)inserted
(``last_seen > mark``) and has not aged out, it gets a second chance (marked and moved to the end) and the next
oldest is examined. Each refresh earns at most one second chance, so the eviction is amortised O(1), and a flood
of new source addresses (each seen once) only ever evicts addresses that were not seen again since they were
placed: under a flood, the flood's own oldest entries.

Ageing: an entry not seen for ``aging`` seconds counts as unknown for lookups, is not listed, and is the first
to go when room is needed. A MAC seen on another port than the one recorded moves there at once ("MAC move").
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..constants import MAC_AGING_TIME, MAC_TABLE_SIZE

__all__ = ["LOCAL", "MacTable", "format_mac", "parse_mac"]


class _Local:
    """The local port: the TAP device (frames read from it; frames written to it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LOCAL"


LOCAL: Any = _Local()


class MacTable:
    __slots__ = ("entries", "max_entries", "aging", "evicted", "moved")

    def __init__(self, max_entries: int = MAC_TABLE_SIZE, aging: float = MAC_AGING_TIME) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.entries: OrderedDict[bytes, list] = OrderedDict()
        self.max_entries = max_entries
        self.aging = aging
        self.evicted = 0     # entries dropped to make room for a new address
        self.moved = 0       # addresses re-learned on another port

    def __len__(self) -> int:
        return len(self.entries)

    def learn(self, mac: bytes, port: object, now: float) -> None:
        """Record that `mac` was seen as a source on `port` at `now`."""
        entries = self.entries
        e = entries.get(mac)
        if e is not None:
            if e[0] is not port:
                e[0] = port
                self.moved += 1
            e[1] = now
            return
        if len(entries) >= self.max_entries:
            self._evict_one(now)
        entries[mac] = [port, now, now]

    def _evict_one(self, now: float) -> None:
        entries = self.entries
        aging = self.aging
        popitem = entries.popitem
        while True:
            mac, e = popitem(last=False)
            if e[1] > e[2] and now - e[1] < aging:
                e[2] = e[1]            # refreshed since placed: second chance, to the back of the line
                entries[mac] = e
                continue
            self.evicted += 1
            return

    def remove_port(self, port: object) -> None:
        """Forget every address learned on `port` (a removed peer)."""
        entries = self.entries
        for mac in [m for m, e in entries.items() if e[0] is port]:
            del entries[mac]

    def snapshot(self, now: float) -> list[tuple[bytes, object, float]]:
        """(mac, port, age in seconds) of every live entry, sorted by MAC."""
        aging = self.aging
        live = [(m, e[0], now - e[1]) for m, e in self.entries.items() if now - e[1] < aging]
        live.sort(key=lambda t: t[0])
        return live


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff' (or with '-') -> 6 bytes; raises ValueError for anything else."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise ValueError(f"invalid MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)
