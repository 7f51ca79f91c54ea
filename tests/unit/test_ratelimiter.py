"""Per-source token bucket (protocol/ratelimiter.py), with explicit fake time."""

from __future__ import annotations

import pytest

from wgpy.constants import RATELIMIT_BURST, RATELIMIT_MAX_ENTRIES, RATELIMIT_PACKETS_PER_SECOND
from wgpy.protocol.ratelimiter import RateLimiter


def burst_count(rl: RateLimiter, key, now: float, tries: int = 100) -> int:
    return sum(rl.allow(key, now) for _ in range(tries))


def test_defaults():
    rl = RateLimiter()
    assert (rl.rate, rl.burst, rl.max_entries) == (RATELIMIT_PACKETS_PER_SECOND, RATELIMIT_BURST,
                                                  RATELIMIT_MAX_ENTRIES)


def test_burst_then_refuse():
    rl = RateLimiter(rate=20, burst=5)
    assert [rl.allow("k", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2


def test_refill_one_token_per_interval():
    rl = RateLimiter(rate=20, burst=5)
    assert burst_count(rl, "k", 0.0) == 5
    assert not rl.allow("k", 0.049)                # less than one token accumulated
    assert rl.allow("k", 0.05 + 0.001)             # one token after 1/rate seconds
    assert not rl.allow("k", 0.051)
    assert rl.allow("k", 0.102)
    assert not rl.allow("k", 0.102)


def test_refill_is_capped_at_burst():
    rl = RateLimiter(rate=20, burst=5)
    assert burst_count(rl, "k", 0.0) == 5
    assert burst_count(rl, "k", 100.0) == 5        # a long idle time does not bank more than `burst`


def test_steady_rate():
    rl = RateLimiter(rate=20, burst=5)
    allowed = 0
    t = 0.0
    for _ in range(1000):                           # 1000 tries over 10 s
        allowed += rl.allow("k", t)
        t += 0.01
    # burst + rate * duration, give or take one
    assert abs(allowed - (5 + 20 * 10)) <= 1


def test_refused_attempts_do_not_drain_more():
    # refusals do not cost tokens: hammering does not delay the next token
    rl = RateLimiter(rate=10, burst=1)
    assert rl.allow("k", 0.0)
    for i in range(1, 10):
        assert not rl.allow("k", i * 0.01)
    assert rl.allow("k", 0.1 + 1e-9)


def test_keys_are_independent():
    rl = RateLimiter(rate=20, burst=5)
    assert burst_count(rl, "a", 0.0) == 5
    assert burst_count(rl, "b", 0.0) == 5
    assert burst_count(rl, ("10.0.0.1", 51820), 0.0) == 5
    assert burst_count(rl, ("10.0.0.1", 51821), 0.0) == 5


def test_table_bounded_at_max_entries():
    rl = RateLimiter(rate=20, burst=5, max_entries=4)
    for k in range(4):
        assert rl.allow(k, 0.0)
    assert len(rl.table) == 4
    # a fifth source is refused while every entry is fresh; the table does not grow
    assert not rl.allow("new", 0.5)
    assert len(rl.table) == 4
    # existing sources keep working
    assert rl.allow(0, 0.5)
    # once entries have been idle for more than a second they are swept and the newcomer gets in
    assert rl.allow("new", 1.6)
    assert "new" in rl.table and len(rl.table) <= 4


def test_sweep_keeps_recent_entries():
    rl = RateLimiter(rate=20, burst=5, max_entries=3)
    rl.allow("old", 0.0)
    rl.allow("recent", 1.5)
    rl.allow("other", 1.5)
    assert rl.allow("new", 2.0)                     # "old" idle 2 s: swept; the others stay
    assert set(rl.table) == {"recent", "other", "new"}


@pytest.mark.parametrize("n", [1, 100, 5000])
def test_flood_of_distinct_sources_is_bounded(n):
    rl = RateLimiter(max_entries=64)
    allowed = sum(rl.allow(("198.51.100.%d" % (i % 256), i), 0.0) for i in range(n))
    assert allowed == min(n, 64)
    assert len(rl.table) == min(n, 64)
