"""Sliding-window anti-replay filter for transport counters (whitepaper 5.4.6; the ring of bitmap blocks of
RFC 6479, as the kernel and wireguard-go use it).

Rules of this file: `check_and_update(counter)` is called only AFTER the message authenticated, so an attacker
cannot move the window. A counter is accepted once; counters older than the window are rejected; counters at or
beyond REJECT_AFTER_MESSAGES are rejected.

The window is a ring of RING_BLOCKS 64-bit blocks; one block is always being recycled, so the usable window is
(RING_BLOCKS - 1) * 64 = 8128 counters. For in-order traffic an update is a handful of integer operations: no
big-integer shifts.
"""

from __future__ import annotations

from ..constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW

BLOCK_BITS_LOG = 6
BLOCK_BITS = 1 << BLOCK_BITS_LOG
RING_BLOCKS = REPLAY_WINDOW // BLOCK_BITS + 1     # one block more than the window: the one being recycled
RING_MASK = RING_BLOCKS - 1
WINDOW = (RING_BLOCKS - 1) * BLOCK_BITS
assert WINDOW == REPLAY_WINDOW and RING_BLOCKS & RING_MASK == 0


class ReplayWindow:
    __slots__ = ("top", "ring")

    def __init__(self) -> None:
        self.top = 0        # greatest counter accepted so far (0 before any, with block 0 empty)
        self.ring = [0] * RING_BLOCKS

    def check_and_update(self, counter: int) -> bool:
        top = self.top
        ring = self.ring
        if counter > top:
            if counter >= REJECT_AFTER_MESSAGES:
                return False
            cur = top >> BLOCK_BITS_LOG
            new = counter >> BLOCK_BITS_LOG
            diff = new - cur
            if diff:
                if diff >= RING_BLOCKS:
                    for i in range(RING_BLOCKS):
                        ring[i] = 0
                else:
                    for i in range(cur + 1, new + 1):
                        ring[i & RING_MASK] = 0
            self.top = counter
        elif top - counter >= WINDOW:
            return False
        i = (counter >> BLOCK_BITS_LOG) & RING_MASK
        bit = 1 << (counter & (BLOCK_BITS - 1))
        word = ring[i]
        if word & bit:
            return False
        ring[i] = word | bit
        return True
