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
to go when room is needed.

Ownership is sticky ("MAC move"): an address seen on another port than the one recorded moves there only

    * once its entry has aged out (the old port has not used it for ``aging`` seconds), or
    * to LOCAL, the TAP: the local side is this switch's own, a host seen there is here now, or
    * when the caller says the new port may claim it (``claim``: the peer's AllowedMACs lists it).

Otherwise ``learn`` refuses (returns False, counted in ``refused``) and the frame is the caller's to drop: one
frame with a forged source can no longer take an address in use away from the peer that uses it. A host that
really moved to another peer (a VM migrated between spokes) is learned there once it has been silent at the
old one for ``aging`` seconds, at once where AllowedMACs names it.
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
    __slots__ = ("entries", "max_entries", "aging", "evicted", "moved", "refused")

    def __init__(self, max_entries: int = MAC_TABLE_SIZE, aging: float = MAC_AGING_TIME) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.entries: OrderedDict[bytes, list] = OrderedDict()
        self.max_entries = max_entries
        self.aging = aging
        self.evicted = 0     # entries dropped to make room for a new address
        self.moved = 0       # addresses re-learned on another port
        self.refused = 0     # moves refused: the address is in use on another port (sticky ownership)

    def __len__(self) -> int:
        return len(self.entries)

    def learn(self, mac: bytes, port: object, now: float, claim: bool = False) -> bool:
        """Record that `mac` was seen as a source on `port` at `now`. False (nothing changed): the address is in
        use on another port and may not move (sticky ownership, see the module docstring); `claim`: `port` may
        take it over at once (its AllowedMACs lists it)."""
        entries = self.entries
        e = entries.get(mac)
        if e is not None:
            if e[0] is not port:
                if not (claim or port is LOCAL or now - e[1] >= self.aging):
                    self.refused += 1
                    return False
                e[0] = port
                self.moved += 1
            e[1] = now
            return True
        if len(entries) >= self.max_entries:
            self._evict_one(now)
        entries[mac] = [port, now, now]
        return True

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
