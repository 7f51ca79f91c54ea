"""wgpy's in-band control channel: wgpy-to-wgpy messages carried inside ordinary WireGuard transport messages.

A control message is the plaintext of a normal, encrypted and authenticated transport data message (same keys,
counter, replay window and timers as the data it travels with). What tells it apart from data is its first byte:

    L3 (Mode = tun): the plaintext starts with 0x57 ('W'). An IP packet starts with its version in the high
        nibble (4 or 6); 0x57 has 5 there, so no IP packet can be mistaken for a control message. A standard
        WireGuard peer (kernel, wireguard-go, the apps) drops such a plaintext as "neither IPv4 nor IPv6"
        after decrypting it, and nothing else happens: the channel is safe to try, but we still only send
        control messages other than HELLO to peers that said HELLO first (see below).
    L2 (Mode = tap): the plaintext is an Ethernet frame, which can start with any byte (a MAC address), so the
        first-byte rule cannot work there. A control message is the frame
            destination 00:00:00:00:00:00, source 00:00:00:00:00:00, EtherType 0x88B5, then the message
        The all-zero source MAC is never valid on Ethernet (every wgpy L2 receiver drops such frames already,
        `l2_bad_src_mac`), and 0x88B5 is IEEE 802's "local experimental" EtherType: a real frame never has
        that source, so no real frame is taken for a control message, and receiving one costs nothing on the
        switching path (the test sits on the bad-source branch).

The message (after the 14-byte frame header in L2), all integers big-endian:

    offset  size
    0       1     0x57 ('W'): wgpy control
    1       1     kind: 1 HELLO, 2 PROBE, 3 PROBE_REPLY (unknown kinds are ignored and counted)
    then per kind:
    HELLO        2  u8 version (1)   3  u8 flags (bit 0: REPLY_WANTED)   4  u32 extensions (bit 0: PMTU probes)
    PROBE        2  u16 zero        4  u32 probe id   8  u16 size probed (outer IP packet)   10 zeros ...
                 the plaintext is padded with zeros to exactly the size that makes the outer IP packet `size`
                 bytes long (size - outer IP header - 8 UDP - 32 WireGuard), and is not padded further
    PROBE_REPLY  2  u16 zero        4  u32 probe id   8  u16 size probed   10 u16 plaintext bytes received

HELLO ("I am wgpy and have these extensions") is sent to every peer once a handshake with it completes (both
sides send it, so both learn), at most HELLO_ATTEMPTS times to a peer that never answers (a standard WireGuard
peer drops it; three small messages in all). REPLY_WANTED asks a wgpy receiver that does not know us yet to
answer with its own HELLO. Only peers whose HELLO we received get probes.

Everything here is pure: building and parsing bytes.
"""

from __future__ import annotations

import struct

CONTROL_MARKER = 0x57                       # 'W': high nibble 5, neither IPv4 (4) nor IPv6 (6)
L2_CONTROL_ETHERTYPE = b"\x88\xb5"          # IEEE 802 local experimental EtherType 1
L2_CONTROL_HEADER = b"\x00" * 12 + L2_CONTROL_ETHERTYPE   # dst 0, src 0 (never a valid source), EtherType

HELLO = 1
PROBE = 2
PROBE_REPLY = 3

VERSION = 1
FLAG_REPLY_WANTED = 0x01
EXT_PMTU = 0x00000001                       # answers PROBE with PROBE_REPLY
EXTENSIONS = EXT_PMTU

HELLO_SIZE = 8
PROBE_HEADER_SIZE = 10
PROBE_REPLY_SIZE = 12

_HELLO = struct.Struct(">BBBBI")
_PROBE = struct.Struct(">BBHIH")
_REPLY = struct.Struct(">BBHIHH")


def hello(reply_wanted: bool) -> bytes:
    return _HELLO.pack(CONTROL_MARKER, HELLO, VERSION, FLAG_REPLY_WANTED if reply_wanted else 0, EXTENSIONS)


def probe(probe_id: int, size: int, plaintext_len: int) -> bytes:
    """A PROBE for outer packet size `size` whose plaintext is exactly `plaintext_len` bytes (>= header)."""
    head = _PROBE.pack(CONTROL_MARKER, PROBE, 0, probe_id & 0xFFFFFFFF, size)
    return head + bytes(max(plaintext_len - PROBE_HEADER_SIZE, 0))


def probe_reply(probe_id: int, size: int, received: int) -> bytes:
    return _REPLY.pack(CONTROL_MARKER, PROBE_REPLY, 0, probe_id, size, min(received, 0xFFFF))


def parse(msg: bytes) -> tuple | None:
    """(kind, fields...) of a control message, or None when it is too short for its kind.

    HELLO -> (HELLO, version, flags, extensions); PROBE -> (PROBE, id, size); PROBE_REPLY -> (PROBE_REPLY, id,
    size, received); any other kind -> (kind,)."""
    n = len(msg)
    if n < 2 or msg[0] != CONTROL_MARKER:
        return None
    kind = msg[1]
    if kind == HELLO:
        if n < HELLO_SIZE:
            return None
        _, _, version, flags, ext = _HELLO.unpack_from(msg)
        return HELLO, version, flags, ext
    if kind == PROBE:
        if n < PROBE_HEADER_SIZE:
            return None
        _, _, _, pid, size = _PROBE.unpack_from(msg)
        return PROBE, pid, size
    if kind == PROBE_REPLY:
        if n < PROBE_REPLY_SIZE:
            return None
        _, _, _, pid, size, received = _REPLY.unpack_from(msg)
        return PROBE_REPLY, pid, size, received
    return (kind,)
