"""Wire formats (whitepaper 5.4): exact sizes, field offsets, pack/unpack and (type, length) validation."""

from __future__ import annotations

import random
import struct

import pytest

from wgpy.constants import (
    MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE, MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_HEADER_SIZE,
    MESSAGE_TRANSPORT_MIN_SIZE,
)
from wgpy.protocol import messages as m
from wgpy.protocol import transport
from wgpy.protocol.messages import CookieReply, Initiation, Response, message_type

VALID = {MESSAGE_INITIATION: MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE: MESSAGE_RESPONSE_SIZE,
         MESSAGE_COOKIE_REPLY: MESSAGE_COOKIE_REPLY_SIZE}


def _rand_init(rng):
    return Initiation(rng.getrandbits(32), rng.randbytes(32), rng.randbytes(48), rng.randbytes(28),
                      rng.randbytes(16), rng.randbytes(16))


def _rand_resp(rng):
    return Response(rng.getrandbits(32), rng.getrandbits(32), rng.randbytes(32), rng.randbytes(16),
                    rng.randbytes(16), rng.randbytes(16))


def _rand_cookie(rng):
    return CookieReply(rng.getrandbits(32), rng.randbytes(24), rng.randbytes(32))


def test_exact_sizes():
    rng = random.Random(1)
    assert (MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, MESSAGE_COOKIE_REPLY_SIZE) == (148, 92, 64)
    assert MESSAGE_TRANSPORT_HEADER_SIZE == 16 and MESSAGE_TRANSPORT_MIN_SIZE == 32
    assert len(_rand_init(rng).pack()) == 148
    assert len(_rand_resp(rng).pack()) == 92
    assert len(_rand_cookie(rng).pack()) == 64
    assert len(transport.header_prefix(1) + bytes(8)) == 16
    assert transport.is_transport(transport.header_prefix(1) + bytes(8 + 16))   # a keepalive: header + tag


def test_field_layout_initiation():
    i = Initiation(0x04030201, b"E" * 32, b"S" * 48, b"T" * 28, b"1" * 16, b"2" * 16)
    b = i.pack()
    assert b[:4] == b"\x01\x00\x00\x00"
    assert b[4:8] == b"\x01\x02\x03\x04"                 # sender index, little-endian
    assert b[8:40] == b"E" * 32
    assert b[40:88] == b"S" * 48
    assert b[88:116] == b"T" * 28
    assert m.INITIATION_MAC1_OFFSET == 116 and b[116:132] == b"1" * 16
    assert m.INITIATION_MAC2_OFFSET == 132 and b[132:148] == b"2" * 16


def test_field_layout_response():
    r = Response(0x11223344, 0x55667788, b"E" * 32, b"N" * 16, b"1" * 16, b"2" * 16)
    b = r.pack()
    assert b[:4] == b"\x02\x00\x00\x00"
    assert struct.unpack("<II", b[4:12]) == (0x11223344, 0x55667788)
    assert b[12:44] == b"E" * 32 and b[44:60] == b"N" * 16
    assert m.RESPONSE_MAC1_OFFSET == 60 and b[60:76] == b"1" * 16
    assert m.RESPONSE_MAC2_OFFSET == 76 and b[76:92] == b"2" * 16


def test_field_layout_cookie_reply():
    c = CookieReply(0xDEADBEEF, b"n" * 24, b"c" * 32)
    b = c.pack()
    assert b[:4] == b"\x03\x00\x00\x00"
    assert b[4:8] == struct.pack("<I", 0xDEADBEEF)
    assert b[8:32] == b"n" * 24 and b[32:64] == b"c" * 32


def test_transport_header_layout():
    b = transport.header_prefix(0xAABBCCDD) + (0x0102030405060708).to_bytes(8, "little")
    assert MESSAGE_TRANSPORT == 4 and transport.parse_header(b, 4) == (0xAABBCCDD, 0x0102030405060708)
    assert b == b"\x04\x00\x00\x00" + b"\xdd\xcc\xbb\xaa" + bytes([8, 7, 6, 5, 4, 3, 2, 1])


def test_default_macs_are_zero():
    i = Initiation(1, bytes(32), bytes(48), bytes(28))
    assert i.pack()[116:] == bytes(32)
    r = Response(1, 2, bytes(32), bytes(16))
    assert r.pack()[60:] == bytes(32)


@pytest.mark.parametrize("seed", range(10))
def test_pack_unpack_roundtrip(seed):
    rng = random.Random(seed)
    for cls, make in ((Initiation, _rand_init), (Response, _rand_resp), (CookieReply, _rand_cookie)):
        msg = make(rng)
        wire = msg.pack()
        back = cls.unpack(wire)
        assert back == msg
        assert back.pack() == wire
        assert message_type(wire) == wire[0]


def test_unpack_requires_exact_size():
    rng = random.Random(2)
    for cls, make in ((Initiation, _rand_init), (Response, _rand_resp), (CookieReply, _rand_cookie)):
        wire = make(rng).pack()
        for bad in (wire[:-1], wire + b"\x00"):
            with pytest.raises(struct.error):
                cls.unpack(bad)


def _expected(t: int, n: int) -> int:
    if t == MESSAGE_TRANSPORT:
        return t if n >= MESSAGE_TRANSPORT_MIN_SIZE else 0
    if t in VALID:
        return t if n == VALID[t] else 0
    return 0


def test_message_type_every_type_and_length():
    """Every (type byte, length) pair for lengths 4..300: only the four valid pairs give a non-zero type."""
    for t in range(256):
        word = bytes([t, 0, 0, 0])
        for n in range(4, 301):
            data = word + bytes(n - 4)
            assert message_type(data) == _expected(t, n), (t, n)


def test_message_type_valid_pairs():
    assert message_type(b"\x01\x00\x00\x00" + bytes(144)) == 1
    assert message_type(b"\x02\x00\x00\x00" + bytes(88)) == 2
    assert message_type(b"\x03\x00\x00\x00" + bytes(60)) == 3
    for n in (32, 33, 48, 1452, 65535):
        assert message_type(b"\x04\x00\x00\x00" + bytes(n - 4)) == 4


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_message_type_short_buffers(n):
    for t in range(6):
        assert message_type(bytes([t, 0, 0, 0])[:n]) == 0


@pytest.mark.parametrize("t,n", [(1, 148), (2, 92), (3, 64), (4, 32), (4, 100)])
def test_message_type_reserved_bytes_must_be_zero(t, n):
    for pos in (1, 2, 3):
        for val in (1, 0x80, 0xFF):
            data = bytearray(bytes([t, 0, 0, 0]) + bytes(n - 4))
            data[pos] = val
            assert message_type(bytes(data)) == 0, (t, n, pos, val)


def test_message_type_near_miss_lengths():
    for t, size in VALID.items():
        for n in (size - 16, size - 1, size + 1, size + 16):
            assert message_type(bytes([t, 0, 0, 0]) + bytes(n - 4)) == 0
    for n in range(4, 32):
        assert message_type(b"\x04\x00\x00\x00" + bytes(n - 4)) == 0


def test_message_type_accepts_bytearray_and_memoryview():
    wire = Initiation(1, bytes(32), bytes(48), bytes(28)).pack()
    assert message_type(bytearray(wire)) == 1
    assert message_type(memoryview(wire)) == 1
