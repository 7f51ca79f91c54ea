"""TAI64N timestamps (whitepaper 5.4.2: the initiation carries one; the responder keeps the greatest seen per
peer and rejects any initiation whose timestamp is not greater, which defeats replay of captured initiations).

12 bytes: 8-byte big-endian seconds label (2^62 + 10 + UNIX seconds, TAI offset as wireguard-go uses it) and
4-byte big-endian nanoseconds. The nanoseconds are rounded down to a multiple of 2^24 (~16.8 ms) so the stamp
does not leak a fine-grained clock; that is still finer than the 50-per-second initiation rate limit.
"""

from __future__ import annotations

import struct

_TAI = struct.Struct(">QI")
_BASE = (1 << 62) + 10
_WHITEN = (1 << 24) - 1


def stamp(wall: float) -> bytes:
    secs = int(wall)
    nanos = int((wall - secs) * 1e9) & ~_WHITEN
    return _TAI.pack(_BASE + secs, nanos)


def is_after(a: bytes, b: bytes) -> bool:
    """True when stamp `a` is strictly later than `b` (big-endian bytes compare as numbers)."""
    return a > b
