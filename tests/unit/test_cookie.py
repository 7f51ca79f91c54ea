"""Cookies under load (whitepaper 5.3 / 5.4.7): mac1, mac2, cookie replies and the per-source rate limit."""

from __future__ import annotations

import ipaddress
import random

import pytest

from wgpy import crypto
from wgpy.constants import (
    COOKIE_REFRESH_TIME, COOKIE_REPLY_BURST, MESSAGE_COOKIE_REPLY_SIZE, RATELIMIT_BURST, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
    UNDER_LOAD_AFTER_TIME, UNDER_LOAD_HANDSHAKES_PER_SECOND,
)
from wgpy.protocol.cookie import CookieChecker, CookieGenerator
from wgpy.protocol.device import Device
from wgpy.protocol.messages import (
    INITIATION_MAC1_OFFSET, INITIATION_MAC2_OFFSET, CookieReply, Initiation,
)
from wgpy.protocol.noise import State

from wgpy_testkit.core_pair import A_IP4, B_IP4, Pair, make_key, mtype, seeded_rand, udp4

JIT = REKEY_TIMEOUT_JITTER_MAX


def loaded_pair(seed: int) -> Pair:
    p = Pair(seed)
    p.b.under_load_threshold = 0        # every handshake message counts as load
    return p


def first_initiation(p: Pair, now: float = 0.0) -> bytes:
    out: list = []
    p.at(now)
    p.a.send_packets([udp4(A_IP4, B_IP4, b"payload")], now, out)
    assert [(len(d), ep) for d, ep in out] == [(148, "B")]
    return out[0][0]


def cookie_reply_for(p: Pair, init: bytes, now: float = 0.0, src: str = "A") -> bytes:
    net, tun = [], []
    p.b.receive_datagrams([(init, src)], now, net, tun)
    assert [(len(d), ep) for d, ep in net] == [(MESSAGE_COOKIE_REPLY_SIZE, src)]
    return net[0][0]


# ---------------------------------------------------------------------------------------------------------------
# device level
# ---------------------------------------------------------------------------------------------------------------

def test_under_load_initiation_without_mac2_gets_one_cookie_reply():
    p = loaded_pair(80)
    pkt = udp4(A_IP4, B_IP4, b"behind a cookie")
    p.send("A", [pkt], 0.0)
    assert [(e[1], len(e[3]), mtype(e[3])) for e in p.log] == [("A", 148, 1), ("B", 64, 3)]
    init, reply = p.log[0][3], p.log[1][3]
    assert init[INITIATION_MAC2_OFFSET:] == bytes(16)              # no cookie yet: mac2 is zero
    assert reply[4:8] == init[4:8]                                 # addressed to the initiation's sender index
    # no handshake on B
    assert p.b.drops["cookie_sent"] == 1
    assert p.b.keypairs_by_index == {} and p.pb.handshake.state is State.ZEROED
    assert p.pb.handshake.latest_timestamp == bytes(12)            # the initiation was not even decrypted
    # A took the cookie and is still waiting
    assert p.a.drops["invalid_cookie_reply"] == 0
    assert p.pa.cookie.cookie != b""
    assert p.pa.current is None and list(p.pa.staged) == [pkt]


def test_initiator_retries_with_mac2_and_completes():
    p = loaded_pair(81)
    pkt = udp4(A_IP4, B_IP4, b"behind a cookie")
    p.send("A", [pkt], 0.0)
    n = len(p.log)
    p.advance(REKEY_TIMEOUT + JIT + 0.01)
    sent = [(e[1], len(e[3]), mtype(e[3])) for e in p.log[n:]]
    assert sent[:3] == [("A", 148, 1), ("B", 92, 2), ("A", 16 + 48 + 16, 4)]
    init2 = p.log[n][3]
    mac2 = init2[INITIATION_MAC2_OFFSET:]
    assert mac2 != bytes(16)
    assert mac2 == crypto.mac(p.pa.cookie.cookie, init2[:INITIATION_MAC2_OFFSET])
    assert p.tun["B"] == [pkt]
    assert p.b.drops["cookie_sent"] == 1                            # only the first one


def test_cookie_reply_with_wrong_receiver_or_tampered_is_dropped():
    p = loaded_pair(82)
    init = first_initiation(p)
    reply = cookie_reply_for(p, init)

    def feed(d: bytes) -> list:
        net, tun = [], []
        p.a.receive_datagrams([(d, "B")], 0.1, net, tun)
        assert tun == []
        return net

    bad = []
    r = bytearray(reply)
    r[4] ^= 1                                                      # wrong receiver index
    bad.append(bytes(r))
    for pos in (8, 20, 31, 32, 47, 48, 63):                         # nonce, encrypted cookie, tag
        r = bytearray(reply)
        r[pos] ^= 0x40
        bad.append(bytes(r))
    for d in bad:
        assert feed(d) == []
    assert p.a.drops["invalid_cookie_reply"] == len(bad)
    assert p.pa.cookie.cookie == b""
    assert feed(reply[:-1]) == [] and feed(reply + b"\x00") == []   # wrong length: not a cookie reply at all
    assert p.a.drops["invalid_message"] == 2
    # the genuine reply is still accepted afterwards, but only once
    assert feed(reply) == []
    assert p.pa.cookie.cookie != b""
    cookie = p.pa.cookie.cookie
    assert feed(reply) == []
    assert p.a.drops["invalid_cookie_reply"] == len(bad) + 1
    assert p.pa.cookie.cookie == cookie


def test_cookie_reply_for_unknown_index_is_dropped():
    p = loaded_pair(83)
    init = first_initiation(p)
    reply = cookie_reply_for(p, init)
    other = Pair(84)                                                # a device that never sent that initiation
    net, tun = [], []
    other.a.receive_datagrams([(reply, "B")], 0.0, net, tun)
    assert net == [] and other.a.drops["invalid_cookie_reply"] == 1


@pytest.mark.parametrize("pos", [0 + 8, 50, 100, INITIATION_MAC1_OFFSET, INITIATION_MAC1_OFFSET + 15])
def test_invalid_mac1_is_silently_dropped_even_under_load(pos):
    p = loaded_pair(85)
    init = bytearray(first_initiation(p))
    init[pos] ^= 0x01                                               # body or mac1 itself
    net, tun = [], []
    p.b.receive_datagrams([(bytes(init), "A")], 0.0, net, tun)
    assert net == [] and tun == []
    assert p.b.drops["invalid_mac1"] == 1 and p.b.drops["cookie_sent"] == 0


def test_mac1_for_another_responder_dropped_under_load():
    rng = random.Random(5)
    _, wrong = make_key(rng)
    p = Pair(86, a_thinks_b_is=wrong)
    p.b.under_load_threshold = 0
    init = first_initiation(p)
    net: list = []
    p.b.receive_datagrams([(init, "A")], 0.0, net, [])
    assert net == [] and p.b.drops["invalid_mac1"] == 1


def test_mac2_is_bound_to_the_source_address():
    p = loaded_pair(87)
    init = first_initiation(p)
    reply = cookie_reply_for(p, init, src="A")
    p.a.receive_datagrams([(reply, "B")], 0.0, [], [])
    out: list = []
    p.at(REKEY_TIMEOUT + JIT)
    p.a.tick(REKEY_TIMEOUT + JIT, out)
    init2 = out[0][0]
    assert init2[INITIATION_MAC2_OFFSET:] != bytes(16)
    # from a different source the mac2 does not verify: another cookie reply instead of a response
    net: list = []
    p.b.receive_datagrams([(init2, "A-elsewhere")], REKEY_TIMEOUT + JIT, net, [])
    assert [len(d) for d, _ in net] == [64]
    # from the right source it does
    net = []
    p.b.receive_datagrams([(init2, "A")], REKEY_TIMEOUT + JIT, net, [])
    assert [len(d) for d, _ in net] == [92]


def test_mac2_expires_with_the_cookie_secret():
    p = loaded_pair(88)
    init = first_initiation(p)
    reply = cookie_reply_for(p, init)
    p.a.receive_datagrams([(reply, "B")], 0.0, [], [])
    out: list = []
    p.at(REKEY_TIMEOUT + JIT)
    p.a.tick(REKEY_TIMEOUT + JIT, out)
    init2 = out[0][0]
    net: list = []
    p.b.receive_datagrams([(init2, "A")], COOKIE_REFRESH_TIME + 1, net, [])
    assert [len(d) for d, _ in net] == [64]                         # secret rotated: a fresh cookie is needed


def _third_device(p: Pair, seed: int, name: str):
    rng = random.Random(seed)
    priv, pub = make_key(rng)
    c = Device(priv, rand=seeded_rand(seed), wall=p.clock.wall)
    pc = c.add_peer(p.pub_b)
    pc.endpoint = "B"
    c.allowed_ips.insert(ipaddress.ip_network(B_IP4 + "/32"), pc)
    p.b.add_peer(pub).endpoint = name
    return c, pc


def _initiation_with_cookie(p: Pair, dev: Device, peer, src: str) -> bytes:
    out: list = []
    dev.send_packets([udp4(A_IP4, B_IP4, b"x")], 0.0, out)
    net: list = []
    p.b.receive_datagrams([(out[0][0], src)], 0.0, net, [])
    assert [len(d) for d, _ in net] == [64]
    dev.receive_datagrams([(net[0][0], "B")], 0.0, [], [])
    assert peer.cookie.cookie != b""
    out = []
    t = dev.next_deadline()
    p.at(t)
    dev.tick(t, out)
    assert len(out) == 1 and out[0][0][INITIATION_MAC2_OFFSET:] != bytes(16)
    return out[0][0]


def test_rate_limit_per_source_under_load():
    p = loaded_pair(89)
    c, pc = _third_device(p, 90, "C")
    init_a = _initiation_with_cookie(p, p.a, p.pa, "A")
    init_c = _initiation_with_cookie(p, c, pc, "C")
    now = REKEY_TIMEOUT + JIT + 0.01
    p.at(now)
    net: list = []
    p.b.receive_datagrams([(init_a, "A")] * 10, now, net, [])
    # the first RATELIMIT_BURST pass the limiter (one is a real handshake, the rest are timestamp replays)
    assert [len(d) for d, _ in net] == [92]
    assert p.b.drops["ratelimited"] == 10 - RATELIMIT_BURST
    assert p.b.drops["invalid_initiation"] == RATELIMIT_BURST - 1
    # another source is not affected by A's flood
    net = []
    p.b.receive_datagrams([(init_c, "C")], now, net, [])
    assert [len(d) for d, _ in net] == [92]
    assert p.b.drops["ratelimited"] == 10 - RATELIMIT_BURST
    # A's bucket refills with time
    p.b.receive_datagrams([(init_a, "A")], now + 1.0, [], [])
    assert p.b.drops["ratelimited"] == 10 - RATELIMIT_BURST
    assert p.b.drops["invalid_initiation"] == RATELIMIT_BURST


def test_no_rate_limit_when_not_under_load():
    p = Pair(91)
    init = first_initiation(p)
    net: list = []
    p.b.receive_datagrams([(init, "A")] * 20, 0.0, net, [])
    assert [len(d) for d, _ in net] == [92]
    assert p.b.drops["ratelimited"] == 0 and p.b.drops["cookie_sent"] == 0
    assert p.b.drops["invalid_initiation"] == 19


def test_load_detection_threshold_and_decay():
    p = Pair(92)
    assert p.b.under_load_threshold == UNDER_LOAD_HANDSHAKES_PER_SECOND
    init = first_initiation(p)
    total = UNDER_LOAD_HANDSHAKES_PER_SECOND + 40
    net: list = []
    p.b.receive_datagrams([(init, "A")] * total, 0.0, net, [])
    # under load from the 257th message on; one source gets COOKIE_REPLY_BURST cookie replies at once
    assert p.b.drops["cookie_sent"] == COOKIE_REPLY_BURST
    assert p.b.drops["cookie_ratelimited"] == total - UNDER_LOAD_HANDSHAKES_PER_SECOND - COOKIE_REPLY_BURST
    assert sum(1 for d, _ in net if len(d) == 64) == COOKIE_REPLY_BURST
    # still under load shortly after
    net = []
    p.b.receive_datagrams([(init, "A")], UNDER_LOAD_AFTER_TIME / 2, net, [])
    assert [len(d) for d, _ in net] == [64]
    # and no longer once the load is gone for UNDER_LOAD_AFTER_TIME
    net = []
    p.b.receive_datagrams([(init, "A")], 1.0 + UNDER_LOAD_AFTER_TIME + 0.01, net, [])
    assert net == []                                                # processed: a timestamp replay, dropped
    assert p.b.drops["cookie_sent"] == COOKIE_REPLY_BURST + 1


def test_cookie_reply_to_a_response_is_consumed():
    p = Pair(93)
    p.a.under_load_threshold = 0        # the initiator is the one under load
    pkt = udp4(A_IP4, B_IP4, b"x")
    p.send("A", [pkt], 0.0)
    assert [(e[1], len(e[3])) for e in p.log[:3]] == [("A", 148), ("B", 92), ("A", 64)]
    assert p.b.drops["invalid_cookie_reply"] == 0
    assert p.pb.cookie.cookie != b""
    p.advance(REKEY_TIMEOUT + JIT + 0.01)
    assert p.tun["B"] == [pkt]


# ---------------------------------------------------------------------------------------------------------------
# CookieChecker / CookieGenerator directly
# ---------------------------------------------------------------------------------------------------------------

def _pairing(seed: int):
    rng = random.Random(seed)
    _, pub = make_key(rng)
    mac1_key = crypto.hash_(b"mac1----" + pub)
    cookie_key = crypto.hash_(b"cookie--" + pub)
    return rng, CookieChecker(mac1_key, cookie_key), CookieGenerator(mac1_key, cookie_key)


def _msg(rng) -> bytes:
    return Initiation(rng.getrandbits(32), rng.randbytes(32), rng.randbytes(48), rng.randbytes(28)).pack()


def test_generator_and_checker_agree():
    rng, checker, gen = _pairing(1)
    msg = gen.add_macs(_msg(rng), INITIATION_MAC1_OFFSET, 0.0)
    assert msg[INITIATION_MAC1_OFFSET:INITIATION_MAC2_OFFSET] == crypto.mac(
        checker.mac1_key, msg[:INITIATION_MAC1_OFFSET])
    assert checker.check_mac1(msg, INITIATION_MAC1_OFFSET)
    assert not checker.check_mac2(msg, INITIATION_MAC2_OFFSET, b"src", 0.0)
    reply = checker.create_reply(msg, 7, INITIATION_MAC1_OFFSET, b"src", 0.0, lambda: rng.randbytes(32),
                                 rng.randbytes(24))
    parsed = CookieReply.unpack(reply)
    assert parsed.receiver == 7
    assert gen.consume_reply(parsed, 0.0)
    assert gen.cookie == crypto.mac(checker.secret, b"src")
    msg2 = gen.add_macs(_msg(rng), INITIATION_MAC1_OFFSET, 1.0)
    assert checker.check_mac2(msg2, INITIATION_MAC2_OFFSET, b"src", 1.0)
    assert not checker.check_mac2(msg2, INITIATION_MAC2_OFFSET, b"other", 1.0)


def test_generator_stops_using_a_stale_cookie():
    rng, checker, gen = _pairing(2)
    msg = gen.add_macs(_msg(rng), INITIATION_MAC1_OFFSET, 0.0)
    reply = checker.create_reply(msg, 1, INITIATION_MAC1_OFFSET, b"s", 0.0, lambda: rng.randbytes(32),
                                 rng.randbytes(24))
    assert gen.consume_reply(CookieReply.unpack(reply), 0.0)
    fresh = gen.add_macs(_msg(rng), INITIATION_MAC1_OFFSET, COOKIE_REFRESH_TIME - REKEY_TIMEOUT - 0.01)
    assert fresh[INITIATION_MAC2_OFFSET:] != bytes(16)
    stale = gen.add_macs(_msg(rng), INITIATION_MAC1_OFFSET, COOKIE_REFRESH_TIME - REKEY_TIMEOUT)
    assert stale[INITIATION_MAC2_OFFSET:] == bytes(16)


def test_generator_rejects_reply_bound_to_another_mac1():
    rng, checker, gen = _pairing(3)
    first = gen.add_macs(_msg(rng), INITIATION_MAC1_OFFSET, 0.0)
    gen.add_macs(_msg(rng), INITIATION_MAC1_OFFSET, 0.0)            # a newer message was sent since
    reply = checker.create_reply(first, 1, INITIATION_MAC1_OFFSET, b"s", 0.0, lambda: rng.randbytes(32),
                                 rng.randbytes(24))
    assert not gen.consume_reply(CookieReply.unpack(reply), 0.0)
    assert gen.cookie == b""


def test_generator_rejects_reply_before_sending_anything():
    rng, checker, gen = _pairing(4)
    msg = _msg(rng)
    reply = checker.create_reply(msg, 1, INITIATION_MAC1_OFFSET, b"s", 0.0, lambda: rng.randbytes(32),
                                 rng.randbytes(24))
    assert not gen.consume_reply(CookieReply.unpack(reply), 0.0)
