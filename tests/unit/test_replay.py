"""Anti-replay window (whitepaper 5.4.6; structure of the table after the kernel's selftest/counter.c)."""

from __future__ import annotations

import random
from collections import namedtuple

import pytest

from wgpy.constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW
from wgpy.protocol.replay import ReplayWindow

W = REPLAY_WINDOW          # counters with top - counter < W are inside the window
R = REJECT_AFTER_MESSAGES

T = namedtuple("T", "counter expected")

# One ReplayWindow, fed these counters in order. Comments give the greatest accepted counter ("top") after the step.
CASES = [
    T(0, True),             # 1  counter 0 is a valid first counter                    top 0
    T(1, True),             # 2  in order                                              top 1
    T(1, False),            # 3  duplicate of top
    T(0, False),            # 4  duplicate below top
    T(9, True),             # 5  small jump forward                                    top 9
    T(8, True),             # 6  late but inside the window
    T(7, True),             # 7
    T(7, False),            # 8  duplicate of a late one
    T(2, True),             # 9  gap filled
    T(2, False),            # 10
    T(W, True),             # 11 jump to exactly W (window slides)                     top W
    T(0, False),            # 12 diff = W: just outside (and seen anyway)
    T(3, True),             # 13 diff = W - 3: inside, never seen
    T(1, False),            # 14 diff = W - 1: inside but seen
    T(4, True),             # 15
    T(W - 1, True),         # 16 just below top
    T(W - 1, False),        # 17
    T(W + 1, True),         # 18                                                       top W+1
    T(1, False),            # 19 diff = W: just outside
    T(5, True),             # 20 diff = W - 4: inside, unseen
    T(6, True),             # 21 diff = W - 5
    T(2 * W + 1, True),     # 22 big jump by exactly W: the whole old window is gone   top 2W+1
    T(W + 1, False),        # 23 diff = W: just outside
    T(W + 2, True),         # 24 diff = W - 1: just inside, unseen
    T(W + 2, False),        # 25
    T(2 * W, True),         # 26
    T(10 * W, True),        # 27 huge jump                                             top 10W
    T(9 * W, False),        # 28 diff = W
    T(9 * W + 1, True),     # 29 diff = W - 1
    T(10 * W - 1, True),    # 30
    T(10 * W, False),       # 31
    T(2**40, True),         # 32 jump far beyond the window                            top 2^40
    T(2**40 - W + 1, True), # 33 oldest counter inside the window
    T(2**40 - W, False),    # 34 first counter outside
    T(R, False),            # 35 REJECT_AFTER_MESSAGES itself is never accepted
    T(R + 1, False),        # 36 nor anything beyond it
    T(2**64 - 1, False),    # 37
    T(R - 1, True),         # 38 the last usable counter                               top R-1
    T(R - 1, False),        # 39
    T(R, False),            # 40
    T(R - 2, True),         # 41
    T(R - 2, False),        # 42
    T(R - W, True),         # 43 diff = W - 1 from top R-1: just inside, unseen
    T(R - W - 1, False),    # 44 diff = W: just outside
    T(0, False),            # 45 ancient
]


def test_table():
    w = ReplayWindow()
    for i, (counter, expected) in enumerate(CASES, 1):
        assert w.check_and_update(counter) is expected, f"case {i}: T({counter}, {expected})"


@pytest.mark.parametrize("start", [0, 1, 63, 64, 1000, 2**32])
def test_in_order_accepted_once(start):
    w = ReplayWindow()
    for c in range(start, start + 3 * W, 7):
        assert w.check_and_update(c)
        assert not w.check_and_update(c)


def test_first_counter_zero_then_late_zero():
    # a window that has seen nothing accepts 0 once, also after a later counter
    w = ReplayWindow()
    assert w.check_and_update(5)
    assert w.check_and_update(0)
    assert not w.check_and_update(0)


def test_reject_after_messages_on_fresh_window():
    assert not ReplayWindow().check_and_update(R)
    w = ReplayWindow()
    assert w.check_and_update(R - 1)
    assert not w.check_and_update(R)
    assert not w.check_and_update(R - 1)


@pytest.mark.parametrize("jump", [W - 1, W, W + 1, W + 63, W + 64, W + 65, 2 * W, 64, 63, 65, 8192, 8191, 8193])
def test_jump_keeps_exactly_the_window(jump):
    """After accepting every counter 0..top and jumping forward, exactly the unseen counters of the window are new."""
    w = ReplayWindow()
    top = 3 * W + 17
    for c in range(top + 1):
        assert w.check_and_update(c)
    new_top = top + jump
    assert w.check_and_update(new_top)
    for c in range(top - W, new_top + 1):
        inside = new_top - c < W
        unseen = c > top and c != new_top
        assert w.check_and_update(c) is (inside and unseen), c


class NaiveWindow:
    """Reference: a set of every counter accepted; accept iff new, below R, and within `size` of the top."""

    def __init__(self, size: int = W) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.top = -1

    def check_and_update(self, c: int) -> bool:
        if c >= R or c in self.seen or self.top - c >= self.size:
            return False
        self.seen.add(c)
        self.top = max(self.top, c)
        return True


@pytest.mark.parametrize("seed", range(1, 6))
def test_differential_against_naive_reference(seed):
    rng = random.Random(seed)
    size = W
    w, ref = ReplayWindow(), NaiveWindow(size)
    base = 0
    recent: list[int] = []
    for _ in range(6000):
        r = rng.random()
        if r < 0.4:
            c = base + rng.randrange(-2 * size - 3, 3)        # around / behind the window edge
        elif r < 0.7:
            c = base + rng.randrange(0, 4)                    # mostly in order
        elif r < 0.85:
            c = rng.choice(recent) if recent else 0           # replays of recently accepted counters
        elif r < 0.97:
            c = base + rng.randrange(0, 3 * size + 2)         # jumps
        else:
            c = rng.choice([R - 2, R - 1, R, R + 1, 2**64 - 1])
        c = max(c, 0)
        got, want = w.check_and_update(c), ref.check_and_update(c)
        assert got == want, (seed, c, ref.top)
        if want:
            recent.append(c)
            del recent[:-50]
        if want and c < R - 10 * size:
            base = max(base, c)


@pytest.mark.parametrize("seed", range(10, 14))
def test_differential_block_boundaries(seed):
    """Counters clustered on 64-counter block edges and on jumps of ~W, where a block ring could go wrong."""
    rng = random.Random(seed)
    w, ref = ReplayWindow(), NaiveWindow(W)
    top = 0
    for _ in range(4000):
        r = rng.random()
        if r < 0.35:
            c = top - W + rng.choice([-1, 0, 1, 2, 63, 64, 65])     # the trailing edge of the window
        elif r < 0.6:
            c = ((top >> 6) + rng.randrange(-2, 3)) * 64 + rng.choice([0, 1, 62, 63])
        elif r < 0.8:
            c = top + rng.choice([1, 63, 64, 65, W - 64, W - 1, W, W + 1, 127 * 64, 128 * 64, 129 * 64])
        else:
            c = top - rng.randrange(0, W + 2)
        c = max(c, 0)
        got, want = w.check_and_update(c), ref.check_and_update(c)
        assert got == want, (seed, c, ref.top)
        top = ref.top
