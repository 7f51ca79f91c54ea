"""protocol/transport.py, the one codec of the transport data message (whitepaper 5.4.6): layout, nonce,
padding within the MTU, consecutive counters, and opening what was sealed."""

from __future__ import annotations

import struct

import pytest

from wgpy import crypto
from wgpy.protocol import transport
from wgpy.protocol.keypair import Keypair

K1, K2 = bytes(range(32)), bytes(range(32, 64))


def pair() -> tuple[Keypair, Keypair]:
    a = Keypair(K1, K2, True, local_index=0x11, remote_index=0x22, created=0.0, peer=None)
    b = Keypair(K2, K1, False, local_index=0x22, remote_index=0x11, created=0.0, peer=None)
    return a, b


def test_layout_and_nonce_as_the_whitepaper_says():
    a, b = pair()
    a.send_counter = 7
    msg = transport.seal(a, b"hello")
    assert msg[:4] == b"\x04\x00\x00\x00" and transport.is_transport(msg)
    assert transport.receiver_index(msg) == 0x22
    assert transport.parse_header(msg, 4) == (0x22, 7)
    # the AEAD nonce: 32 zero bits, then the 64-bit little-endian counter; no associated data
    expect = crypto.ChaCha20Poly1305(K1).encrypt(b"\x00" * 4 + struct.pack("<Q", 7), b"hello", None)
    assert msg[16:] == expect
    assert transport.open_body(b.recv, msg) == b"hello"
    assert a.send_counter == 8


def test_seal_batch_pads_within_the_mtu_and_returns_the_too_big():
    a, b = pair()
    out: list = []
    pkts = [b"x" * 1, b"y" * 16, b"z" * 1419, b"w" * 1421, b"v" * 30]
    nbytes, big = transport.seal_batch(a, pkts, 1420, "EP", out)
    assert big == [b"w" * 1421]
    assert [ep for _, ep in out] == ["EP"] * 4
    counters = [transport.parse_header(m, 4)[1] for m, _ in out]
    assert counters == [0, 1, 2, 3] and a.send_counter == 4          # consecutive, never reused
    plain = [transport.open_body(b.recv, m) for m, _ in out]
    assert plain == [b"x" + b"\x00" * 15, b"y" * 16, b"z" * 1419 + b"\x00", b"v" * 30 + b"\x00" * 2]
    assert nbytes == sum(len(m) for m, _ in out)


def test_a_changed_byte_does_not_open():
    a, b = pair()
    msg = bytearray(transport.seal(a, b"data"))
    msg[9] ^= 1                                                        # the counter is the nonce
    with pytest.raises(crypto.InvalidTag):
        transport.open_body(b.recv, bytes(msg))
    assert not transport.is_transport(b"\x04\x00\x00\x00" + b"\x00" * 27)   # shorter than header + tag
