"""streams/connection.py: the stream connection state machine with a fake clock (plain floats) and a seeded random
source, no sockets: states, deadlines, the unauthenticated budget, reconnection backoff with jitter, error words."""

from __future__ import annotations

import random

import pytest

from wgpy.constants import (
    STREAM_BACKOFF_MAX, STREAM_BACKOFF_MIN, STREAM_CONNECT_TIMEOUT, STREAM_FIRST_MESSAGE_TIMEOUT,
    STREAM_MAX_UNAUTHENTICATED, STREAM_UNAUTHENTICATED_FRAMES, STREAM_UNAUTHENTICATED_PER_SOURCE,
    STREAM_UNAUTHENTICATED_TIMEOUT,
)
from wgpy.streams.connection import (
    CONNECT, CONNECT_TIMEOUT, IDLE, RETRY_WHILE_USED, TLS_TIMEOUT, WAIT, Budget, Close, Connection, backoff, failed,
    retry_due, source_key,
)
from wgpy.streams.endpoint import CLOSED, CONNECTING, HANDSHAKE, UP, StreamEndpoint


def seeded(seed: int = 1):
    return random.Random(seed).randbytes


def const(value: int):
    """A random source that always yields the 16-bit little-endian `value` (0: shortest wait, 65535: longest)."""
    return lambda n: value.to_bytes(2, "little")[:n]


def target(scheme: str = "tcp") -> StreamEndpoint:
    return StreamEndpoint(scheme, "192.0.2.1", 443, True)


def inbound(scheme: str = "tcp", host: str = "192.0.2.9") -> StreamEndpoint:
    return StreamEndpoint(scheme, host, 40000, False)


# ---- backoff ---------------------------------------------------------------------------------------------------

def test_backoff_doubles_from_the_minimum_up_to_the_maximum():
    longest = [backoff(n, const(65535)) for n in range(1, 12)]
    caps = [min(STREAM_BACKOFF_MIN * 2 ** (n - 1), STREAM_BACKOFF_MAX) for n in range(1, 12)]
    assert caps[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0] and caps[-1] == STREAM_BACKOFF_MAX
    for got, cap in zip(longest, caps):
        assert cap * (1 - 1 / 65536) <= got < cap
    assert [backoff(n, const(0)) for n in range(1, 12)] == [c / 2 for c in caps]


def test_jitter_stays_between_half_and_all_of_the_step():
    rand = seeded(7)
    for n in range(1, 15):
        cap = min(STREAM_BACKOFF_MIN * 2 ** (n - 1), STREAM_BACKOFF_MAX)
        waits = [backoff(n, rand) for _ in range(300)]
        assert all(cap / 2 <= w < cap for w in waits)
        assert max(waits) - min(waits) > cap / 4          # really spread, not one value


def test_the_same_seed_gives_the_same_sequence():
    def run(seed: int) -> list[float]:
        ep, rand, now, out = target(), seeded(seed), 100.0, []
        for _ in range(8):
            out.append(failed(ep, "connection refused", now, rand).at - now)
            now += 1.0
        return out
    assert run(3) == run(3) != run(4)


def test_failures_back_off_from_now_and_remember_why():
    ep, rand = target(), seeded(2)
    r1 = failed(ep, "connection refused", 10.0, rand)
    assert (r1.failures, r1.reason, r1.was_up) == (1, "connection refused", False)
    assert 10.0 + STREAM_BACKOFF_MIN / 2 <= r1.at < 10.0 + STREAM_BACKOFF_MIN and ep.retry_at == r1.at
    assert ep.last_error == "connection refused" and ep.state == "backoff"
    r2 = failed(ep, "connect timed out", 20.0, rand)
    assert r2.failures == 2 and 20.5 <= r2.at < 21.0 and ep.last_error == "connect timed out"
    ep.failures = 0                                       # what a frame from the far end does
    assert 30.25 <= failed(ep, "connection reset", 30.0, rand).at < 30.5


def test_retry_timer_waits_reconnects_while_used_and_goes_idle():
    ep = target()
    failed(ep, "connection refused", 0.0, const(65535))    # retry_at just under 0.5
    ep.last_used = 0.0
    assert retry_due(ep, 0.2) == WAIT
    assert retry_due(ep, 0.5) == CONNECT
    assert retry_due(ep, RETRY_WHILE_USED - 0.01) == CONNECT
    assert retry_due(ep, RETRY_WHILE_USED) == IDLE


def test_a_drop_counts_as_use():
    ep = target()
    r = failed(ep, "connection reset", 500.0, seeded(1), was_up=True)
    assert r.was_up and ep.last_used == 500.0 and retry_due(ep, r.at) == CONNECT


# ---- outbound connections ----------------------------------------------------------------------------------------

def test_tcp_connection_goes_up_and_clears_the_error():
    ep = target()
    failed(ep, "connection refused", 0.0, seeded(1))
    c = Connection(ep, 5.0)
    assert (c.state, c.inbound, c.authenticated, c.deadline) == (CONNECTING, False, True, 5.0 + STREAM_CONNECT_TIMEOUT)
    assert ep.last_error == "connection refused"          # until it is up
    assert c.connected() == UP
    assert c.state == UP and c.deadline is None and ep.last_error is None
    assert c.on_timer(5.0 + STREAM_CONNECT_TIMEOUT) is None


def test_tls_connection_passes_through_the_handshake():
    ep = target("tls")
    ep.last_error = "TLS: certificate verify failed: self-signed certificate"
    c = Connection(ep, 0.0)
    assert c.connected() == HANDSHAKE and c.state == HANDSHAKE and c.deadline == STREAM_CONNECT_TIMEOUT
    assert ep.last_error is not None
    c.tls_done()
    assert c.state == UP and c.deadline is None and ep.last_error is None


@pytest.mark.parametrize("tls,reason", [(False, CONNECT_TIMEOUT), (True, TLS_TIMEOUT)])
def test_connect_timeout(tls, reason):
    ep = target("tls" if tls else "tcp")
    c = Connection(ep, 100.0)
    ep.conn = c
    if tls:
        c.connected()
    assert c.on_timer(100.0 + STREAM_CONNECT_TIMEOUT - 0.001) is None
    decision = c.on_timer(100.0 + STREAM_CONNECT_TIMEOUT)
    assert decision == Close(reason) and reason in ("connect timed out", "TLS: handshake timed out")
    retry = c.close(decision.reason, 110.0, seeded(5))
    assert c.state == CLOSED and ep.conn is None and ep.last_error == reason
    assert retry.failures == 1 and not retry.was_up and 110.25 <= retry.at < 110.5
    assert c.on_timer(1e9) is None                        # a closed connection's timer does nothing


def test_closing_an_up_connection_is_a_drop_and_a_quiet_close_no_retry():
    ep = target()
    c = Connection(ep, 0.0)
    c.connected()
    retry = c.close("connection reset", 50.0, seeded(1))
    assert retry.was_up and ep.last_used == 50.0 and ep.last_error == "connection reset"
    c2 = Connection(ep, 60.0)
    c2.connected()
    assert ep.last_error is None
    assert c2.close(None, 61.0, seeded(1)) is None and ep.failures == 1     # configuration change: no retry
    c3 = Connection(ep, 70.0)
    assert c3.close("connection refused", 71.0, seeded(1), reconnect=False) is None and ep.failures == 1


# ---- inbound connections and the unauthenticated budget ----------------------------------------------------------

def test_unauthenticated_connections_count_against_the_budget():
    budget = Budget()
    conns = [Connection(inbound(host=f"192.0.2.{i}"), 0.0, budget) for i in range(STREAM_MAX_UNAUTHENTICATED)]
    assert budget.count == STREAM_MAX_UNAUTHENTICATED
    assert budget.make_room(source_key("198.51.100.1")) == [conns[0]]    # full: the oldest of all goes
    conns[0].authenticate("peer")
    assert budget.count == STREAM_MAX_UNAUTHENTICATED - 1 and budget.make_room(source_key("198.51.100.1")) == []
    conns[0].close(None, 1.0, seeded(1))                 # authenticated: no second release
    assert budget.count == STREAM_MAX_UNAUTHENTICATED - 1
    conns[1].close("bad frame (stream_short_frame)", 1.0, seeded(1))
    assert budget.count == STREAM_MAX_UNAUTHENTICATED - 2
    assert conns[1].ep.last_error == "bad frame (stream_short_frame)"


def test_one_source_holds_at_most_its_share_and_churns_its_own_slots():
    budget = Budget()
    other = Connection(inbound(host="192.0.2.200"), 0.0, budget)
    mine = [Connection(inbound(host="192.0.2.9"), float(i), budget) for i in range(STREAM_UNAUTHENTICATED_PER_SOURCE)]
    assert budget.make_room(source_key("192.0.2.9")) == [mine[0]]      # its own oldest, not `other`
    assert budget.make_room(source_key("192.0.2.10")) == []             # another source: room
    # an IPv6 host picks addresses from its /64: one source
    v6 = [Connection(inbound(host=f"2001:db8::{i:x}"), 0.0, budget) for i in range(STREAM_UNAUTHENTICATED_PER_SOURCE)]
    assert budget.make_room(source_key("2001:db8::ffff")) == [v6[0]]
    assert budget.make_room(source_key("2001:db8:0:1::1")) == []        # the next /64 is someone else
    assert other in budget.waiting


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_unauthenticated_deadline(scheme):
    """A first frame within STREAM_FIRST_MESSAGE_TIMEOUT (TLS handshake included), authenticated within
    STREAM_UNAUTHENTICATED_TIMEOUT of the accept."""
    budget = Budget()
    c = Connection(inbound(scheme), 10.0, budget)
    assert c.inbound and not c.authenticated and c.deadline == 10.0 + STREAM_FIRST_MESSAGE_TIMEOUT
    assert c.connected() == (HANDSHAKE if scheme == "tls" else UP)
    assert c.on_timer(10.0 + STREAM_FIRST_MESSAGE_TIMEOUT - 0.5) is None
    d = c.on_timer(10.0 + STREAM_FIRST_MESSAGE_TIMEOUT)               # nothing came: cut off early
    assert d == Close(TLS_TIMEOUT if scheme == "tls" else None, "stream_unauthenticated_timeout")
    assert c.close(d.reason, 20.0, seeded(1)) is None and budget.count == 0    # inbound: never a retry
    # a connection that sent a first frame has until the unauthenticated timeout
    c = Connection(inbound(scheme), 10.0, budget)
    c.connected()
    c.tls_done() if scheme == "tls" else None
    assert c.take_frames(1) == 1 and c.deadline == 10.0 + STREAM_UNAUTHENTICATED_TIMEOUT
    assert c.on_timer(10.0 + STREAM_FIRST_MESSAGE_TIMEOUT) is None
    assert c.on_timer(10.0 + STREAM_UNAUTHENTICATED_TIMEOUT) == Close(None, "stream_unauthenticated_timeout")


def test_authenticated_inbound_connection_has_no_deadline():
    c = Connection(inbound(), 0.0, Budget())
    c.connected()
    c.authenticate("peer")
    assert c.peer == "peer" and c.deadline is None and c.on_timer(1e6) is None


def test_unauthenticated_frame_budget():
    c = Connection(inbound(), 0.0, Budget())
    c.connected()
    assert c.take_frames(5) == 5 and not c.out_of_frames
    assert c.take_frames(100) == STREAM_UNAUTHENTICATED_FRAMES - 5 and c.out_of_frames
    assert c.take_frames(3) == 0 and c.frames == STREAM_UNAUTHENTICATED_FRAMES


def test_the_state_machine_is_pure():
    """It is given time and randomness; a whole outbound life runs without any clock or I/O."""
    ep, rand, now = target("tls"), seeded(11), 0.0
    waits = []
    for _ in range(10):
        c = Connection(ep, now)
        ep.conn = c
        c.connected()
        d = c.on_timer(c.deadline)
        retry = c.close(d.reason, c.deadline, rand)
        waits.append(retry.at - c.deadline)
        now = retry.at
    assert ep.failures == 10 and ep.last_error == TLS_TIMEOUT and ep.conn is None
    assert all(min(STREAM_BACKOFF_MIN * 2 ** i, STREAM_BACKOFF_MAX) / 2 <= w < min(STREAM_BACKOFF_MIN * 2 ** i,
                                                                                 STREAM_BACKOFF_MAX)
               for i, w in enumerate(waits))
