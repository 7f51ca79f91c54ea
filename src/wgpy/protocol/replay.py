"""Sliding-window anti-replay filter for transport counters (whitepaper 5.4.6, RFC 6479 idea).

Rules of this file: `check_and_update(counter)` is called only AFTER the message authenticated, so an attacker
cannot move the window. A counter is accepted once; counters older than the window are rejected; counters at or
beyond REJECT_AFTER_MESSAGES are rejected.

The window is a Python int used as a bitmap: bit i set means (top - i) was seen. For in-order traffic the
update is one shift and one or, which is cheap for a window of a few thousand bits.
"""

from __future__ import annotations

from ..constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW


class ReplayWindow:
    __slots__ = ("top", "bitmap", "size", "_mask")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self._mask = (1 << size) - 1
        self.top = -1          # greatest counter accepted so far
        self.bitmap = 0

    def check_and_update(self, counter: int) -> bool:
        top = self.top
        if counter > top:
            if counter >= REJECT_AFTER_MESSAGES:
                return False
            shift = counter - top
            if shift >= self.size:
                self.bitmap = 1
            else:
                self.bitmap = ((self.bitmap << shift) | 1) & self._mask
            self.top = counter
            return True
        diff = top - counter
        if diff >= self.size:
            return False
        bit = 1 << diff
        if self.bitmap & bit:
            return False
        self.bitmap |= bit
        return True
