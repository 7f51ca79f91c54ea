"""protocol/stun.py: the Binding codec (RFC 8489), the client's transactions with a fake clock, the server's
answer; hostile input (unmatched, wrong source, bad fingerprint, truncated, WireGuard messages) is refused and
counted. (Checked by hand against coturn 4.6.1 both ways; not a test: coturn is not installed by setup.sh.)"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, strategies as st

from wgpy.protocol import stun
from wgpy.protocol.messages import MESSAGE_INITIATION_SIZE

TID = bytes(range(12))


def test_request_layout_and_is_stun():
    req = stun.binding_request(TID)
    assert len(req) == 28
    mtype, length, cookie = struct.unpack_from("!HHI", req)
    assert (mtype, length, cookie) == (0x0001, 8, 0x2112A442) and req[8:20] == TID
    assert stun.is_stun(req)
    # a WireGuard message never looks like STUN: type 1-4, then three zero bytes
    for t in (1, 2, 3, 4):
        wg = bytes([t, 0, 0, 0]) + b"\x21\x12\xa4\x42" + bytes(MESSAGE_INITIATION_SIZE - 8)
        assert not stun.is_stun(wg)
    assert not stun.is_stun(req[:19])


@pytest.mark.parametrize("src", [("198.51.100.7", 40000), ("2001:db8::1:2", 51820), ("::ffff:192.0.2.9", 1)])
def test_server_answer_round_trip(src):
    resp = stun.binding_response(stun.binding_request(TID), src)
    tid, mapped = stun.parse_response(resp)
    want = src[0][7:] if src[0].startswith("::ffff:") else src[0]
    assert tid == TID and mapped == (want, src[1])
    # the address is XORed on the wire (RFC 8489 15.2): the plain bytes are not in the message
    import ipaddress
    assert ipaddress.ip_address(want).packed not in resp


def test_server_answers_only_binding_requests():
    req = stun.binding_request(TID)
    assert stun.binding_response(req[:2] + b"\x00\x0c" + req[4:], ("192.0.2.1", 1)) is None     # bad length
    bad_fp = req[:-1] + bytes([req[-1] ^ 1])
    assert stun.binding_response(bad_fp, ("192.0.2.1", 1)) is None
    resp = stun.binding_response(req, ("192.0.2.1", 1))
    assert stun.binding_response(resp, ("192.0.2.1", 1)) is None         # a response is not answered
    assert stun.binding_response(b"\x01\x00\x00\x00" + bytes(144), ("192.0.2.1", 1)) is None
    assert stun.binding_response(req + bytes(600), ("192.0.2.1", 1)) is None


def test_parse_rejects_corrupt_responses():
    resp = stun.binding_response(stun.binding_request(TID), ("192.0.2.1", 5000))
    with pytest.raises(stun.StunError, match="FINGERPRINT"):
        stun.parse_response(resp[:25] + bytes([resp[25] ^ 0xFF]) + resp[26:])
    with pytest.raises(stun.StunError):
        stun.parse_response(resp[:-4])
    no_addr = stun._message(stun.BINDING_SUCCESS, TID, b"")
    with pytest.raises(stun.StunError, match="no mapped address"):
        stun.parse_response(no_addr)
    # an old server's MAPPED-ADDRESS (not XORed) is understood
    value = struct.pack("!BBH", 0, 1, 4242) + bytes([203, 0, 113, 5])
    old = stun._message(stun.BINDING_SUCCESS, TID, struct.pack("!HH", 0x0001, 8) + value)
    assert stun.parse_response(old) == (TID, ("203.0.113.5", 4242))


@given(st.binary(max_size=120))
def test_parsers_never_raise_anything_else(data):
    try:
        stun.parse_response(data)
    except stun.StunError:
        pass
    stun.binding_response(data, ("192.0.2.1", 1))


def test_client_transactions_retries_and_hostile_answers():
    server = ("192.0.2.53", 3478)
    tids = iter(bytes([i]) * 12 for i in range(1, 100))
    c = stun.StunClient([server], interval=25.0, rand=lambda n: next(tids))
    out = c.poll(0.0)
    assert len(out) == 1 and out[0][1] == server and c.deadline() == 0.5
    tid = out[0][0][8:20]
    assert c.poll(0.2) == []                                        # not due yet
    again = c.poll(0.5)
    assert again[0][0][8:20] == tid                                 # a retransmission keeps the transaction
    # a response to no outstanding transaction, one from another address, a corrupt one: dropped, counted
    stranger = stun.binding_response(stun.binding_request(b"\xee" * 12), ("203.0.113.9", 1111))
    assert not c.receive(stranger, server, 0.6)
    good = stun.binding_response(stun.binding_request(tid), ("203.0.113.9", 40001))
    assert not c.receive(good, ("192.0.2.66", 3478), 0.6)
    assert not c.receive(good[:-2], server, 0.6)
    assert c.mapped is None
    assert c.stats["unmatched"] == 2 and c.stats["malformed"] == 1
    assert c.receive(good, server, 0.7)
    assert c.mapped == ("203.0.113.9", 40001) and c.changed
    assert not c.receive(good, server, 0.8)                         # a duplicate: the transaction is done
    assert c.deadline() == pytest.approx(25.7)
    c.changed = False
    # the refresh finds a new mapping (the NAT rebooted)
    out = c.poll(25.7)
    tid2 = out[0][0][8:20]
    assert tid2 != tid
    assert c.receive(stun.binding_response(stun.binding_request(tid2), ("203.0.113.9", 40777)), server, 25.8)
    assert c.mapped == ("203.0.113.9", 40777) and c.changed
    # unanswered: 1 + 3 retransmissions at 0.5, 1, 2 s, then a timeout and a fresh try an interval later
    c2 = stun.StunClient([server], rand=os.urandom, interval=25.0)
    sent, t = 0, 0.0
    while t < 10.0:
        sent += len(c2.poll(t))
        t += 0.25
    assert sent == 4 and c2.stats["timeouts"] == 1 and c2.deadline() > 30
