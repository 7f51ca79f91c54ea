"""Protocol timers (whitepaper section 6), driven through Device.tick / next_deadline with explicit times."""

from __future__ import annotations

import random

import pytest

from wgpy.constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
)
from wgpy.protocol.noise import State

from wgpy_testkit.core_pair import A_IP4, B_IP4, Pair, mtype, transport_size, udp4

EPS = 1e-9
JIT = REKEY_TIMEOUT_JITTER_MAX


def established(seed: int = 1) -> Pair:
    p = Pair(seed)
    p.handshake(0.0)
    assert p.pb.current is not None
    return p


def times(p: Pair, sender: str, type_: int, since: int = 0, size: int | None = None) -> list[float]:
    return [e[0] for e in p.sent(sender, since, type_) if size is None or len(e[3]) == size]


def data(src: str = A_IP4, dst: str = B_IP4, payload: bytes = b"data") -> bytes:
    return udp4(src, dst, payload)


# ---------------------------------------------------------------------------------------------------------------
# retransmission and giving up
# ---------------------------------------------------------------------------------------------------------------

def test_constants():
    assert MAX_TIMER_HANDSHAKES == 18 == int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)
    assert (REKEY_TIMEOUT, KEEPALIVE_TIMEOUT, REKEY_AFTER_TIME, REJECT_AFTER_TIME) == (5.0, 10.0, 120.0, 180.0)
    assert JIT == pytest.approx(1 / 3)


def test_retransmit_while_responder_silent_then_give_up():
    p = Pair(30)
    p.drop = lambda s, d: s == "A"            # B never hears anything
    p.send("A", [data()], 0.0)
    assert times(p, "A", 1) == [0.0]
    assert p.a.next_deadline() is not None and REKEY_TIMEOUT <= p.a.next_deadline() <= REKEY_TIMEOUT + JIT
    # just before the first retransmit nothing happens
    p.advance(REKEY_TIMEOUT - 0.001)
    assert times(p, "A", 1) == [0.0]
    p.advance(50.0)
    assert len(p.pa.staged) == 1               # still trying: the packet is kept
    p.advance(300.0)
    t = times(p, "A", 1)
    # the first initiation, then a retry every REKEY_TIMEOUT + jitter while handshake_attempts <= 18
    assert len(t) == 1 + MAX_TIMER_HANDSHAKES + 1
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert all(REKEY_TIMEOUT - EPS <= g <= REKEY_TIMEOUT + JIT + EPS for g in gaps), gaps
    assert len(set(round(g, 9) for g in gaps)) > 1          # the jitter is random, not constant
    # giving up happens at the next expiry, about REKEY_ATTEMPT_TIME (+ one or two REKEY_TIMEOUTs) after start
    assert REKEY_ATTEMPT_TIME <= t[-1] <= REKEY_ATTEMPT_TIME + 2 * REKEY_TIMEOUT + 20 * JIT
    assert len(p.pa.staged) == 0               # staged packets are purged when giving up
    assert p.pa.t_retransmit is None
    assert p.pa.handshake_attempts == MAX_TIMER_HANDSHAKES + 1
    # key material of the abandoned handshake is zeroed REJECT_AFTER_TIME * 3 after giving up
    assert p.pa.t_zero_keys is not None
    give_up = p.pa.t_zero_keys - 3 * REJECT_AFTER_TIME
    assert t[-1] + REKEY_TIMEOUT - EPS <= give_up <= t[-1] + REKEY_TIMEOUT + JIT + EPS
    assert p.a.handshakes_by_index
    p.advance(give_up + 3 * REJECT_AFTER_TIME)
    assert p.a.handshakes_by_index == {}
    assert p.pa.handshake.state is State.ZEROED
    assert len(times(p, "A", 1)) == len(t)     # and no further initiation by itself


def test_retransmit_stops_when_response_arrives():
    p = Pair(31)
    lost = {"n": 0}

    def drop(s, d):                             # lose the first two initiations
        if s == "A" and mtype(d) == 1 and lost["n"] < 2:
            lost["n"] += 1
            return True
        return False

    p.drop = drop
    pkt = data(payload=b"eventually")
    p.send("A", [pkt], 0.0)
    p.advance(30.0)
    t = times(p, "A", 1)
    assert len(t) == 3
    assert p.tun["B"] == [pkt]
    assert p.pa.t_retransmit is None and p.pa.handshake_attempts == 0


# ---------------------------------------------------------------------------------------------------------------
# keepalives
# ---------------------------------------------------------------------------------------------------------------

def test_passive_keepalive_after_receiving_data():
    p = established(32)                         # B received A's packet at t=0 and has sent nothing since
    n = len(p.log)
    p.advance(KEEPALIVE_TIMEOUT - 0.001)
    assert p.sent("B", n) == []
    p.advance(KEEPALIVE_TIMEOUT)
    assert [(e[0], len(e[3])) for e in p.sent("B", n)] == [(KEEPALIVE_TIMEOUT, 32)]
    assert p.pa.t_new_handshake is None         # A heard back, so it will not start a new handshake


def test_no_passive_keepalive_when_data_was_sent_back():
    p = established(33)
    n = len(p.log)
    p.send("B", [data(B_IP4, A_IP4, b"answer")], 5.0)
    p.advance(14.9)
    assert [len(e[3]) for e in p.sent("B", n)] == [transport_size(len(data(B_IP4, A_IP4, b"answer")))]
    # A, which received B's data at 5, sends its own passive keepalive at 15
    p.advance(15.0)
    assert [(e[0], len(e[3])) for e in p.sent("A", n)] == [(15.0, 32)]


def test_another_keepalive_when_more_data_arrived_meanwhile():
    p = established(34)
    n = len(p.log)
    p.send("A", [data()], 3.0)                  # B receives more data while its keepalive timer is pending
    p.advance(20.0)
    assert times(p, "B", 4, n, size=32) == [10.0, 20.0]


def test_keepalive_not_sent_without_session_data():
    p = Pair(35)
    p.advance(1000.0)
    assert p.log == []
    assert p.a.next_deadline() is None and p.b.next_deadline() is None


# ---------------------------------------------------------------------------------------------------------------
# new handshake when the session seems dead
# ---------------------------------------------------------------------------------------------------------------

def test_new_handshake_when_data_sent_but_nothing_received():
    p = established(36)
    p.advance(10.5)                              # B's passive keepalive at 10 reached A
    assert p.pa.t_new_handshake is None
    p.drop = lambda s, d: s == "B"               # from now on B's datagrams are lost
    n = len(p.log)
    p.send("A", [data()], 12.0)
    p.advance(12.0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 0.001)
    assert times(p, "A", 1, n) == []
    p.advance(12.0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + JIT + EPS)
    t = times(p, "A", 1, n)
    assert len(t) == 1
    assert 12.0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT <= t[0] <= 12.0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + JIT


def test_no_new_handshake_when_the_peer_answers():
    p = established(37)
    p.advance(10.5)
    n = len(p.log)
    p.send("A", [data()], 12.0)                  # B answers with a passive keepalive at 22
    p.advance(40.0)
    assert times(p, "A", 1, n) == []


# ---------------------------------------------------------------------------------------------------------------
# rekeying
# ---------------------------------------------------------------------------------------------------------------

def test_rekey_after_time_on_send_by_initiator():
    p = established(38)
    old = p.pa.current
    held: list[bytes] = []
    p.drop = lambda s, d: s == "A" and mtype(d) == 4 and held.append(d) is None and False
    n = len(p.log)
    p.send("A", [data(payload=b"early")], REKEY_AFTER_TIME - 0.5)
    assert times(p, "A", 1, n) == []
    # the responder never rekeys because of its own sending
    p.send("B", [data(B_IP4, A_IP4, b"resp")], REKEY_AFTER_TIME + 1)
    assert times(p, "B", 1, n) == []
    n = len(p.log)
    pkt = data(payload=b"late")
    p.send("A", [pkt], REKEY_AFTER_TIME + 2)
    kinds = [mtype(e[3]) for e in p.sent("A", n)]
    assert kinds[:2] == [4, 1]                   # the packet still goes out with the old key, then an initiation
    assert p.pa.current is not old and p.pa.previous is old   # the handshake completed at once
    assert p.tun["B"][-1] == pkt
    # a packet sealed with the old keypair before the rotation is still accepted (previous keypair)
    kp = old
    ctr = kp.send_counter
    cb = ctr.to_bytes(8, "little")
    inflight = data(payload=b"in flight")
    wire = kp.header_prefix + cb + kp.send.encrypt(bytes(4) + cb, inflight, None)
    p.deliver("A", [(wire, "B")], REKEY_AFTER_TIME + 3)
    assert p.tun["B"][-1] == inflight


def test_rekey_on_receive_when_current_is_old():
    p = established(39)
    p.drop = lambda s, d: s == "A"               # watch A's reaction only
    limit = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    assert limit == 165.0
    for t in (100.0, limit - 0.001):
        p.send("B", [data(B_IP4, A_IP4, b"t")], t)
    assert times(p, "A", 1) == [0.0]
    p.send("B", [data(B_IP4, A_IP4, b"t")], limit)
    assert times(p, "A", 1) == [0.0, limit]
    # only once ("sent_lastminute_handshake")
    p.send("B", [data(B_IP4, A_IP4, b"t")], limit + REKEY_TIMEOUT + 1)
    assert times(p, "A", 1) == [0.0, limit]
    assert len(p.tun["A"]) == 4


def test_responder_does_not_rekey_on_receive():
    p = established(40)
    p.drop = lambda s, d: s == "B"
    for t in (165.0, 170.0):
        p.send("A", [data()], t)
    assert times(p, "B", 1) == []


def test_keypair_unusable_after_reject_after_time():
    p = established(41)
    p.drop = lambda s, d: True
    # a transport message sealed just before the limit is dropped by a receiver whose keypair has expired
    # (sent by the responder, which does not rekey on send, so nothing else goes out)
    out: list = []
    p.at(REJECT_AFTER_TIME - 0.1)
    p.b.send_packets([data(B_IP4, A_IP4, b"old")], REJECT_AFTER_TIME - 0.1, out)
    assert [mtype(d) for d, _ in out] == [4]
    net, tun = [], []
    p.a.receive_datagrams([(out[0][0], "B")], REJECT_AFTER_TIME, net, tun)
    assert tun == [] and net == [] and p.a.drops["expired_keypair"] == 1
    # the initiator no longer sends with it: the packet is staged and a handshake starts instead
    n = len(p.log)
    pkt = data(payload=b"new")
    p.send("A", [pkt], REJECT_AFTER_TIME)
    assert [mtype(e[3]) for e in p.sent("A", n)] == [1]
    assert list(p.pa.staged) == [pkt]
    # as does the responder
    n = len(p.log)
    p.send("B", [data(B_IP4, A_IP4)], REJECT_AFTER_TIME)
    assert [mtype(e[3]) for e in p.sent("B", n)] == [1]
    # once the handshake gets through, the staged packet is delivered
    p.drop = None
    p.advance(REJECT_AFTER_TIME + REKEY_TIMEOUT + JIT + 0.01)
    assert pkt in p.tun["B"]


def test_rekey_after_messages():
    p = established(42)
    kp = p.pa.current
    kp.send_counter = REKEY_AFTER_MESSAGES - 1
    n = len(p.log)
    p.send("A", [data(payload=b"a")], 10.0)       # counter REKEY_AFTER_MESSAGES - 1: no rekey yet
    assert [mtype(e[3]) for e in p.sent("A", n)] == [4]
    n = len(p.log)
    p.drop = lambda s, d: s == "A" and mtype(d) == 1
    p.send("A", [data(payload=b"b")], 10.0)       # counter REKEY_AFTER_MESSAGES: the counter passes the limit
    sent = p.sent("A", n)
    assert [mtype(e[3]) for e in sent] == [4, 1]
    assert int.from_bytes(sent[0][3][8:16], "little") == REKEY_AFTER_MESSAGES
    assert p.tun["B"][-2:] == [data(payload=b"a"), data(payload=b"b")]   # big counters are fine for B


def test_reject_after_messages_stages_and_rehandshakes():
    p = established(43)
    p.drop = lambda s, d: True
    p.pa.current.send_counter = REJECT_AFTER_MESSAGES
    n = len(p.log)
    pkt = data(payload=b"too many")
    p.send("A", [pkt], 1.0)
    assert [mtype(e[3]) for e in p.sent("A", n)] == []          # rate limit: the last initiation was at 0
    assert list(p.pa.staged) == [pkt]
    p.send("A", [pkt], REKEY_TIMEOUT + 0.5)
    assert [mtype(e[3]) for e in p.sent("A", n)] == [1]
    assert all(mtype(e[3]) != 4 for e in p.sent("A", n))


def test_last_counter_below_reject_after_messages_is_usable():
    p = established(44)
    p.pa.current.send_counter = REJECT_AFTER_MESSAGES - 1
    n = len(p.log)
    pkt = data(payload=b"last one")
    p.send("A", [pkt], 1.0)
    sent = [e[3] for e in p.sent("A", n) if mtype(e[3]) == 4]
    assert len(sent) == 1
    assert int.from_bytes(sent[0][8:16], "little") == REJECT_AFTER_MESSAGES - 1
    assert p.tun["B"][-1] == pkt


# ---------------------------------------------------------------------------------------------------------------
# zeroing key material
# ---------------------------------------------------------------------------------------------------------------

def test_all_key_material_zeroed_after_three_reject_after_times():
    p = established(45)
    p.drop = lambda s, d: True                   # isolate both ends right after the handshake
    p.advance(3 * REJECT_AFTER_TIME - 0.01)
    assert p.pa.current is not None and p.pb.current is not None
    p.advance(3 * REJECT_AFTER_TIME)
    for dev, peer in ((p.a, p.pa), (p.b, p.pb)):
        assert peer.previous is None and peer.current is None and peer.next is None
        assert dev.keypairs_by_index == {} and dev.handshakes_by_index == {}
        hs = peer.handshake
        assert hs.state is State.ZEROED and hs.chaining_key == b"" and hs.hash == b""
        assert hs.local_ephemeral is None and hs.remote_ephemeral == b""
    # after zeroing, new traffic simply starts a fresh handshake
    p.drop = None
    pkt = data(payload=b"again")
    p.send("A", [pkt], 3 * REJECT_AFTER_TIME + 1)
    assert p.tun["B"][-1] == pkt


def test_zero_keys_timer_rearmed_by_each_new_session():
    p = established(46)
    first = p.pa.t_zero_keys
    assert first == 3 * REJECT_AFTER_TIME
    out: list = []
    p.at(100.0)
    p.a.initiate_handshake(p.pa, 100.0, out, retry=False)
    p.deliver("A", out, 100.0)
    assert p.pa.t_zero_keys == 100.0 + 3 * REJECT_AFTER_TIME


# ---------------------------------------------------------------------------------------------------------------
# persistent keepalive
# ---------------------------------------------------------------------------------------------------------------

def test_persistent_keepalive_every_n_seconds():
    p = established(47)
    p.advance(10.5)
    n = len(p.log)
    out: list = []
    p.at(11.0)
    p.a.set_persistent_keepalive(p.pa, 4, 11.0, out)
    assert [len(d) for d, _ in out] == [32]      # turning it on sends one at once
    p.deliver("A", out, 11.0)
    p.advance(24.9)
    assert times(p, "A", 4, n, size=32) == [11.0, 15.0, 19.0, 23.0]
    assert p.pa.t_persistent == 27.0


def test_persistent_keepalive_counts_from_last_traffic():
    p = established(48)
    p.advance(10.5)
    n = len(p.log)
    out: list = []
    p.at(11.0)
    p.a.set_persistent_keepalive(p.pa, 4, 11.0, out)
    p.deliver("A", out, 11.0)
    p.advance(17.0)
    p.send("B", [data(B_IP4, A_IP4, b"traffic")], 17.0)   # any authenticated traversal re-arms the timer
    p.advance(24.9)
    assert times(p, "A", 4, n, size=32) == [11.0, 15.0, 21.0]


def test_persistent_keepalive_off():
    p = established(49)
    p.advance(10.5)
    out: list = []
    p.at(11.0)
    p.a.set_persistent_keepalive(p.pa, 4, 11.0, out)
    p.deliver("A", out, 11.0)
    p.a.set_persistent_keepalive(p.pa, 0, 12.0, out)
    assert out == []
    n = len(p.log)
    p.advance(14.9)
    assert p.sent("A", n) == []
    assert p.pa.t_persistent is None


def test_persistent_keepalive_without_session_starts_handshake():
    p = Pair(50)
    out: list = []
    p.a.set_persistent_keepalive(p.pa, 25, 0.0, out)
    p.deliver("A", out, 0.0)
    assert [len(e[3]) for e in p.log] == [148, 92, 32]
    assert p.pb.current is not None


# ---------------------------------------------------------------------------------------------------------------
# initiation rate limit
# ---------------------------------------------------------------------------------------------------------------

def test_initiation_rate_limited_to_one_per_rekey_timeout():
    p = Pair(51)
    p.drop = lambda s, d: True
    for t in (0.0, 0.5, 1.0, 2.5, REKEY_TIMEOUT - 0.01):
        p.send("A", [data(payload=b"%f" % t)], t)
    assert times(p, "A", 1) == [0.0]
    assert len(p.pa.staged) == 5
    p.send("A", [data()], REKEY_TIMEOUT)
    assert times(p, "A", 1) == [0.0, REKEY_TIMEOUT]
    # explicit calls are rate limited too
    out: list = []
    p.a.initiate_handshake(p.pa, REKEY_TIMEOUT + 1, out, retry=False)
    p.a.initiate_handshake(p.pa, REKEY_TIMEOUT + 2, out, retry=True)
    assert out == []


# ---------------------------------------------------------------------------------------------------------------
# next_deadline never lies late
# ---------------------------------------------------------------------------------------------------------------

def _check_deadlines(p: Pair) -> None:
    for dev in (p.a, p.b):
        for peer in dev.peers.values():
            nd = peer.next_deadline()
            if nd is not None:
                dn = dev.next_deadline()
                assert dn is not None and dn <= nd, (dn, nd)


@pytest.mark.parametrize("seed", range(4))
def test_next_deadline_is_never_later_than_a_peer_timer(seed):
    rng = random.Random(seed)
    p = Pair(60 + seed)
    loss = rng.choice([0.0, 0.3, 0.7])
    p.drop = lambda s, d: rng.random() < loss
    now = 0.0
    for _ in range(1500):
        now += rng.choice([0.0, 0.01, 0.5, 1.0, 3.0, 7.0, 20.0])
        r = rng.random()
        if r < 0.4:
            p.send("A", [data(payload=b"x")], now)
        elif r < 0.6:
            p.send("B", [data(B_IP4, A_IP4, b"y")], now)
        elif r < 0.65:
            out: list = []
            p.at(now)
            p.a.set_persistent_keepalive(p.pa, rng.choice([0, 3, 25]), now, out)
            p.deliver("A", out, now)
        else:
            p.advance(now)
        _check_deadlines(p)


# ---------------------------------------------------------------------------------------------------------------
# keepalives must not count as "data sent"
# ---------------------------------------------------------------------------------------------------------------

# Regression: only data (not keepalives) arms t_new_handshake, as in the kernel and wireguard-go; otherwise an
# idle session re-handshakes every ~15 s.

def test_keepalive_does_not_arm_new_handshake_timer():
    p = established(70)
    p.advance(10.5)
    assert p.pa.t_new_handshake is None
    out: list = []
    p.at(11.0)
    p.a.send_keepalive(p.pa, 11.0, out)
    assert [len(d) for d, _ in out] == [32]
    assert p.pa.t_new_handshake is None


def test_idle_session_does_not_rehandshake():
    # one packet A -> B, B's passive keepalive at 10 s, then silence: nobody should initiate before REJECT_AFTER_TIME
    p = established(71)
    p.advance(REKEY_AFTER_TIME)
    assert times(p, "A", 1) == [0.0]
    assert times(p, "B", 1) == []


def test_handshake_confirmation_keepalive_does_not_cause_rehandshake():
    p = Pair(72)
    out: list = []
    p.a.initiate_handshake(p.pa, 0.0, out, retry=False)
    p.deliver("A", out, 0.0)
    assert [len(e[3]) for e in p.log] == [148, 92, 32]
    p.advance(60.0)
    assert times(p, "A", 1) == [0.0]


def test_receive_side_rekey_looks_at_current_keypair():
    p = established(73)
    k1 = p.pa.current
    late = data(B_IP4, A_IP4, b"late")
    out: list = []
    p.at(150.0)
    p.b.send_packets([late], 150.0, out)          # sealed with k1, delayed in the network
    held = out[0][0]
    out = []
    p.at(160.0)
    p.a.initiate_handshake(p.pa, 160.0, out, retry=False)
    p.deliver("A", out, 160.0)                     # fresh session: current is new, k1 is previous
    assert p.pa.previous is k1 and p.pa.current is not k1
    net, tun = [], []
    p.at(166.0)
    p.a.receive_datagrams([(held, "B")], 166.0, net, tun)
    assert tun == [late]
    assert net == []                               # current is 6 s old: no reason to rekey
    assert not p.pa.sent_lastminute_handshake
