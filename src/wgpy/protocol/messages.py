"""Wire formats of the four WireGuard messages (whitepaper section 5.4).

Every message starts with a 4-byte little-endian word: the type in the low byte, three reserved zero bytes.
Parsing is exact: a handshake message must have exactly its size; a transport message at least its header
plus one Poly1305 tag. Anything else is not a WireGuard message and is dropped by the caller.

    initiation (148)  type=1 | sender(4) | unencrypted_ephemeral(32) | encrypted_static(32+16)
                      | encrypted_timestamp(12+16) | mac1(16) | mac2(16)
    response    (92)  type=2 | sender(4) | receiver(4) | unencrypted_ephemeral(32) | encrypted_nothing(16)
                      | mac1(16) | mac2(16)
    cookie reply (64) type=3 | receiver(4) | nonce(24) | encrypted_cookie(16+16)
    transport (16+n)  type=4 | receiver(4) | counter(8, little-endian) | encrypted_encapsulated_packet(n)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..constants import (
    MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE, MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_MIN_SIZE,
)

_HDR = struct.Struct("<I")
_INIT = struct.Struct("<II32s48s28s16s16s")
_RESP = struct.Struct("<III32s16s16s16s")
_COOKIE = struct.Struct("<II24s32s")

# offsets of mac1 / mac2: the MACs cover everything before them
INITIATION_MAC1_OFFSET = 116
INITIATION_MAC2_OFFSET = 132
RESPONSE_MAC1_OFFSET = 60
RESPONSE_MAC2_OFFSET = 76


@dataclass(slots=True)
class Initiation:
    sender: int
    unencrypted_ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = b"\x00" * 16
    mac2: bytes = b"\x00" * 16

    def pack(self) -> bytes:
        return _INIT.pack(MESSAGE_INITIATION, self.sender, self.unencrypted_ephemeral, self.encrypted_static,
                          self.encrypted_timestamp, self.mac1, self.mac2)

    @classmethod
    def unpack(cls, b: bytes) -> "Initiation":
        t, sender, eph, st, ts, m1, m2 = _INIT.unpack(b)
        return cls(sender, eph, st, ts, m1, m2)


@dataclass(slots=True)
class Response:
    sender: int
    receiver: int
    unencrypted_ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = b"\x00" * 16
    mac2: bytes = b"\x00" * 16

    def pack(self) -> bytes:
        return _RESP.pack(MESSAGE_RESPONSE, self.sender, self.receiver, self.unencrypted_ephemeral,
                          self.encrypted_nothing, self.mac1, self.mac2)

    @classmethod
    def unpack(cls, b: bytes) -> "Response":
        t, sender, receiver, eph, nothing, m1, m2 = _RESP.unpack(b)
        return cls(sender, receiver, eph, nothing, m1, m2)


@dataclass(slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def pack(self) -> bytes:
        return _COOKIE.pack(MESSAGE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie)

    @classmethod
    def unpack(cls, b: bytes) -> "CookieReply":
        t, receiver, nonce, enc = _COOKIE.unpack(b)
        return cls(receiver, nonce, enc)


def message_type(b: bytes) -> int:
    """The message type if `b` has a valid (type, length) pair, else 0."""
    n = len(b)
    if n < 4:
        return 0
    t = _HDR.unpack_from(b)[0]
    if t == MESSAGE_TRANSPORT:
        return t if n >= MESSAGE_TRANSPORT_MIN_SIZE else 0
    if t == MESSAGE_INITIATION:
        return t if n == MESSAGE_INITIATION_SIZE else 0
    if t == MESSAGE_RESPONSE:
        return t if n == MESSAGE_RESPONSE_SIZE else 0
    if t == MESSAGE_COOKIE_REPLY:
        return t if n == MESSAGE_COOKIE_REPLY_SIZE else 0
    return 0
