"""The L2 MAC table (routing/mactable.py) against a naive reference model, plus its bounds under a flood."""

from __future__ import annotations

import random

import pytest

from wgpy.constants import MAC_AGING_TIME, MAC_TABLE_SIZE
from wgpy.routing.mactable import LOCAL, MacTable, format_mac, parse_mac


def lookup(t: MacTable, mac: bytes, now: float):
    """The port `mac` was last seen on, or None if unknown or aged out: the rule the data path applies inline to
    MacTable.entries (device.py send_frames / switch_inbound)."""
    e = t.entries.get(mac)
    if e is None or now - e[1] >= t.aging:
        return None
    return e[0]


class NaiveTable:
    """The same rules written the slow, obvious way: a list in insertion order, linear scans."""

    def __init__(self, max_entries: int, aging: float) -> None:
        self.rows: list[list] = []          # [mac, port, last_seen, mark]
        self.max_entries, self.aging = max_entries, aging

    def _find(self, mac):
        for row in self.rows:
            if row[0] == mac:
                return row
        return None

    def learn(self, mac, port, now, claim=False):
        row = self._find(mac)
        if row is not None:
            if row[1] is not port and not claim and port is not LOCAL and now - row[2] < self.aging:
                return False                # in use elsewhere: sticky
            row[1], row[2] = port, now
            return True
        if len(self.rows) >= self.max_entries:
            while True:
                first = self.rows.pop(0)
                if first[2] > first[3] and now - first[2] < self.aging:
                    first[3] = first[2]
                    self.rows.append(first)
                    continue
                break
        self.rows.append([mac, port, now, now])
        return True

    def lookup(self, mac, now):
        row = self._find(mac)
        return row[1] if row is not None and now - row[2] < self.aging else None

    def snapshot(self, now):
        return sorted((r[0], r[1], now - r[2]) for r in self.rows if now - r[2] < self.aging)


def mac(i: int) -> bytes:
    return bytes([0x02, 0, 0, 0, i >> 8 & 0xFF, i & 0xFF])


@pytest.mark.parametrize("seed", range(20))
def test_matches_naive_reference(seed):
    rng = random.Random(seed)
    size = rng.choice([1, 2, 3, 8, 16])
    aging = rng.choice([5.0, 30.0, 300.0])
    ports = [LOCAL, object(), object(), object()]
    t, ref = MacTable(size, aging), NaiveTable(size, aging)
    now = 0.0
    for _ in range(3000):
        now += rng.choice([0.0, 0.0, 0.1, 1.0, 7.0])
        m = mac(rng.randrange(3 * size))
        if rng.random() < 0.6:
            port = rng.choice(ports)
            claim = rng.random() < 0.1
            assert t.learn(m, port, now, claim) is ref.learn(m, port, now, claim)
        else:
            assert lookup(t, m, now) is ref.lookup(m, now)
        assert len(t) == len(ref.rows) <= size
        assert list(t.entries) == [r[0] for r in ref.rows]
    snap = t.snapshot(now)
    assert [(m, id(p), a) for m, p, a in snap] == [(m, id(p), a) for m, p, a in ref.snapshot(now)]


def test_learn_lookup_move_and_count():
    t = MacTable()
    a, b = object(), object()
    assert t.learn(mac(1), a, 0.0)
    assert lookup(t, mac(1), 1.0) is a
    assert lookup(t, mac(2), 1.0) is None
    assert t.learn(mac(1), b, 2.0, claim=True)     # another peer that may claim it (AllowedMACs): moved at once
    assert lookup(t, mac(1), 2.0) is b and t.moved == 1
    assert t.learn(mac(1), LOCAL, 3.0)             # ... as to the local TAP
    assert lookup(t, mac(1), 3.0) is LOCAL and t.moved == 2
    assert t.learn(mac(1), LOCAL, 4.0)             # the same port again is a refresh, not a move
    assert t.moved == 2 and len(t) == 1 and t.refused == 0


def test_ownership_is_sticky_until_the_address_ages_out():
    """Issue 21 item 10: a frame from another peer with an address in use does not take it over; a peer may
    have it once the owner has been silent for the ageing time (a host that really moved: a migrated VM), at
    once if it may claim it (its AllowedMACs lists it) or if the new port is the local TAP."""
    t = MacTable()
    a, b = object(), object()
    t.learn(mac(1), a, 0.0)
    assert not t.learn(mac(1), b, 1.0)                         # forged source, owner active: refused
    assert lookup(t, mac(1), 1.0) is a and t.refused == 1 and t.moved == 0
    t.learn(mac(1), a, 100.0)                                  # the owner keeps using it
    assert not t.learn(mac(1), b, 100.0 + MAC_AGING_TIME - 0.5)
    assert lookup(t, mac(1), 100.0 + MAC_AGING_TIME - 0.5) is a and t.refused == 2
    # the owner went quiet for the ageing time: the address is free, the new peer gets it
    assert t.learn(mac(1), b, 100.0 + MAC_AGING_TIME)
    assert lookup(t, mac(1), 100.0 + MAC_AGING_TIME) is b and t.moved == 1
    # and now it is b's: a (the old owner) cannot take it back while b uses it
    assert not t.learn(mac(1), a, 100.0 + MAC_AGING_TIME + 1) and t.refused == 3
    # a peer is never refused by the local side, and the local side is never moved away by a peer
    t.learn(mac(2), LOCAL, 0.0)
    assert not t.learn(mac(2), a, 1.0) and lookup(t, mac(2), 1.0) is LOCAL
    assert t.learn(mac(3), a, 0.0) and t.learn(mac(3), LOCAL, 1.0) and lookup(t, mac(3), 1.0) is LOCAL


def test_aging_with_fake_clock():
    t = MacTable()
    p = object()
    t.learn(mac(1), p, 100.0)
    assert lookup(t, mac(1), 100.0 + MAC_AGING_TIME - 0.001) is p
    assert lookup(t, mac(1), 100.0 + MAC_AGING_TIME) is None          # forgotten: frames to it are flooded
    assert t.snapshot(100.0 + MAC_AGING_TIME) == []
    t.learn(mac(1), p, 200.0)                                         # seen again: refreshed
    assert lookup(t, mac(1), 200.0 + MAC_AGING_TIME - 1) is p
    assert t.snapshot(200.0 + MAC_AGING_TIME) == []                      # aged out: no longer listed
    assert MAC_AGING_TIME == 300.0                                    # the Linux bridge's default


def test_snapshot_lists_port_and_age_sorted():
    t = MacTable()
    p = object()
    t.learn(mac(9), p, 1.0)
    t.learn(mac(3), LOCAL, 4.0)
    assert t.snapshot(10.0) == [(mac(3), LOCAL, 6.0), (mac(9), p, 9.0)]


def test_remove_port():
    t = MacTable()
    a, b = object(), object()
    for i in range(10):
        t.learn(mac(i), a if i % 2 else b, 0.0)
    t.remove_port(a)
    assert len(t) == 5 and all(lookup(t, mac(i), 0.0) is b for i in range(0, 10, 2))


def test_flood_of_random_source_macs_is_bounded_and_spares_active_addresses():
    """A hostile flood of invented source addresses: memory stays at the bound, and an address that keeps
    talking (refreshed more often than the table turns over) is never pushed out."""
    rng = random.Random(7)
    t = MacTable()
    attacker, victim = object(), object()
    active = [mac(i) for i in range(16)]
    now = 0.0
    for m in active:
        t.learn(m, victim, now)
    for i in range(20 * MAC_TABLE_SIZE):
        if i % 1000 == 0:
            now += 0.01
            for m in active:
                t.learn(m, victim, now)          # the real hosts keep sending
        t.learn(bytes([0x02]) + rng.randbytes(5), attacker, now)
        assert len(t.entries) <= MAC_TABLE_SIZE
    assert len(t) == MAC_TABLE_SIZE
    assert all(lookup(t, m, now) is victim for m in active)
    assert t.evicted >= 19 * MAC_TABLE_SIZE


def test_quiet_entries_are_evicted_first_in_insertion_order():
    t = MacTable(max_entries=3, aging=300.0)
    t.learn(mac(1), LOCAL, 0.0)
    t.learn(mac(2), LOCAL, 0.0)
    t.learn(mac(3), LOCAL, 0.0)
    t.learn(mac(1), LOCAL, 1.0)                 # mac 1 talks again: second chance
    t.learn(mac(4), LOCAL, 2.0)                 # evicts mac 2 (the oldest that stayed quiet)
    assert set(t.entries) == {mac(1), mac(3), mac(4)}
    t.learn(mac(5), LOCAL, 3.0)                 # mac 3 next
    assert set(t.entries) == {mac(1), mac(4), mac(5)}


def test_mac_text_codecs():
    assert parse_mac("02:AA:bb:0c:dd:ee") == bytes.fromhex("02aabb0cddee")
    assert parse_mac("02-aa-bb-0c-dd-ee") == bytes.fromhex("02aabb0cddee")
    assert format_mac(bytes.fromhex("02aabb0cddee")) == "02:aa:bb:0c:dd:ee"
    for bad in ("", "02:aa:bb:cc:dd", "02:aa:bb:cc:dd:ee:ff", "2:aa:bb:cc:dd:ee", "02:aa:bb:cc:dd:eg", "02aabbccddee"):
        with pytest.raises(ValueError):
            parse_mac(bad)
