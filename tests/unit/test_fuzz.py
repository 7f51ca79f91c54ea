"""Garbage in, nothing out: property tests (hypothesis) over message parsing and the whole datagram path of the
core, plus a CI-sized run of the fuzzer in wgpy_testkit.fuzz (bench/fuzz.py is its command line; the full run,
a million inputs per target, is in scripts/reliability.sh).

The invariants are wgpy_testkit.fuzz's: no exception escapes receive_datagrams; an unauthenticated datagram changes
none of the state listed in fuzz.snapshot (sessions, handshakes, index tables, timers, endpoints, counters other
than drop counters); nothing is sent, except a cookie reply while under load, and then only to a message whose
mac1 an independent oracle finds valid.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from wgpy import crypto
from wgpy.constants import (
    MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, MESSAGE_TRANSPORT_MIN_SIZE,
)
from wgpy.protocol import messages
from wgpy.protocol.messages import INITIATION_MAC1_OFFSET, RESPONSE_MAC1_OFFSET
from wgpy_testkit import fuzz


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_targets: dict[str, object] = {}


def target(name: str):
    """One device per target for the whole module: if no input may change its state, sharing it is the test."""
    if name not in _targets:
        _targets[name] = fuzz.ReceiveTarget(name, seed=7)
    return _targets[name]


# ---------------------------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------------------------

CORPUS = fuzz.World(7).corpus
SIZES = {1: MESSAGE_INITIATION_SIZE, 2: MESSAGE_RESPONSE_SIZE, 3: MESSAGE_COOKIE_REPLY_SIZE}


@st.composite
def mutated(draw, corpus=CORPUS):
    """A captured message with byte edits, truncation or extension (hypothesis shrinks towards few edits)."""
    b = bytearray(draw(st.sampled_from(corpus)))
    for pos, val in draw(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6)):
        if b:
            b[pos % len(b)] = val
    cut = draw(st.one_of(st.none(), st.integers(0, len(b))))
    if cut is not None:
        del b[cut:]
    b += draw(st.binary(max_size=40))
    return bytes(b)


@st.composite
def with_valid_mac1(draw, key_of: str):
    """A handshake message of exact size, arbitrary body, and a correct mac1 for the target's public key: what
    anyone who knows the public key can send. It gets past the mac1 check into the Noise code."""
    t = draw(st.sampled_from((1, 2)))
    off = INITIATION_MAC1_OFFSET if t == 1 else RESPONSE_MAC1_OFFSET
    body = bytes((t, 0, 0, 0)) + draw(st.binary(min_size=off - 4, max_size=off - 4))
    tgt = target(key_of)
    if t == 2 and draw(st.booleans()):
        live = tgt.live_indices()
        body = body[:8] + struct.pack("<I", draw(st.sampled_from(live))) + body[12:]
    return body + crypto.mac(tgt.mac1_key, body) + draw(st.binary(min_size=16, max_size=16))


@st.composite
def live_transport(draw, key_of: str):
    """A transport message for a live receiver index with arbitrary counter and ciphertext."""
    live = list(target(key_of).dev.keypairs_by_index) or [0]
    idx = draw(st.sampled_from(live))
    ctr = draw(st.integers(0, (1 << 64) - 1))
    return struct.pack("<IIQ", 4, idx, ctr) + draw(st.binary(min_size=16, max_size=200))


def datagrams(key_of: str):
    return st.one_of(st.binary(max_size=300), mutated(), with_valid_mac1(key_of), live_transport(key_of))


# ---------------------------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------------------------

@SETTINGS
@given(st.one_of(st.binary(max_size=300), mutated()))
def test_message_type_is_exact(data):
    t = messages.message_type(data)
    assert t in (0, 1, 2, 3, 4)
    if t == 4:
        assert len(data) >= MESSAGE_TRANSPORT_MIN_SIZE and data[:4] == b"\x04\0\0\0"
    elif t:
        assert len(data) == SIZES[t] and data[:4] == bytes((t, 0, 0, 0))
    elif len(data) >= 4 and data[1:4] == b"\0\0\0" and data[0] in SIZES:
        assert len(data) != SIZES[data[0]]     # a right word with a wrong length is refused
    fuzz.check_parse(data)


@SETTINGS
@given(st.sampled_from((1, 2, 3)), st.data())
def test_exact_size_messages_round_trip(t, data):
    body = data.draw(st.binary(min_size=SIZES[t] - 4, max_size=SIZES[t] - 4))
    raw = bytes((t, 0, 0, 0)) + body
    cls = {1: messages.Initiation, 2: messages.Response, 3: messages.CookieReply}[t]
    assert messages.message_type(raw) == t
    assert cls.unpack(raw).pack() == raw


@SETTINGS
@given(st.integers(0, 0xFFFFFFFF), st.binary(min_size=32, max_size=32), st.binary(min_size=48, max_size=48),
       st.binary(min_size=28, max_size=28), st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_initiation_pack_unpack(sender, eph, static, ts, m1, m2):
    msg = messages.Initiation(sender, eph, static, ts, m1, m2)
    raw = msg.pack()
    assert len(raw) == MESSAGE_INITIATION_SIZE and messages.message_type(raw) == 1
    assert messages.Initiation.unpack(raw) == msg


# ---------------------------------------------------------------------------------------------------------------
# the datagram path of the core
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["responder", "initiator", "under-load"])
def test_receive_datagrams_property(name):
    tgt = target(name)
    base_now = tgt.now

    @SETTINGS
    @given(st.lists(datagrams(name), min_size=1, max_size=8), st.floats(0, 1000, allow_nan=False),
           st.sampled_from([("198.51.100.7", 4000), ("192.0.2.1", 51820), ("2001:db8::1", 9, 0, 0)]))
    def prop(batch, dt, src):
        tgt.now = base_now + dt     # a fake clock: any time after the handshake
        for d in batch:
            tgt.feed(d, src)

    try:
        prop()
    finally:
        tgt.now = base_now


def test_a_batch_of_garbage_goes_through_in_one_call():
    """receive_datagrams takes batches; garbage mixed into a batch is dropped per datagram."""
    tgt = target("responder")
    mut = fuzz.Mutator(CORPUS, 3, tgt.mac1_key, tgt.live_indices())
    out, tun = [], []
    before = fuzz.snapshot(tgt.dev)
    tgt.dev.receive_datagrams([(mut.next(), fuzz.EP_A) for _ in range(500)], tgt.now, out, tun)
    assert out == [] and tun == []
    assert fuzz.snapshot(tgt.dev) == before


def test_the_harness_detects_a_state_change():
    """The invariant check is not vacuous: an authentic message (a fresh handshake) is caught as a change."""
    tgt = fuzz.ReceiveTarget("responder", 11)
    # an initiation from A that B has never seen (A's in-flight one was lost): authentic, B must answer
    w2 = tgt.world
    w2.at(w2.clock.now + 10)
    out: list = []
    w2.a.initiate_handshake(w2.pa, w2.clock.now, out, retry=False)
    tgt.now = w2.clock.now
    with pytest.raises(fuzz.Violation):
        tgt.feed(out[0][0])


# ---------------------------------------------------------------------------------------------------------------
# the fuzzer itself, CI-sized (scripts/reliability.sh runs 1,000,000 inputs per target)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", fuzz.TARGETS)
def test_fuzz_sample(name):
    res = fuzz.run(name, 30_000, seed=5)
    assert res["violations"] == 0
    if name != "parse":
        out = res["outcome"]
        assert sum(v for k, v in out.items() if k != "cookie_replies_seen") >= 30_000   # every input counted
        assert out.get("invalid_tag", 0) > 0 and out.get("invalid_mac1", 0) > 0
        if name == "under-load":
            assert out["cookie_replies_seen"] > 0
        if name == "initiator":
            assert out.get("invalid_response", 0) > 0       # mutated responses reached consume_response
        if name == "responder":
            assert out.get("invalid_initiation", 0) > 0     # ... and initiations consume_initiation
