"""STUN Binding (RFC 8489), sans-IO: what a mesh node sends from its WireGuard socket to learn its public mapping
(the address and port a NAT gives that socket), and what `wgpy server run` answers.

Wire format (RFC 8489 section 5): a 20-byte header, type (2 bytes, the top two bits zero), length of the
attributes (2), the magic cookie 0x2112A442 (4), a 96-bit transaction id (12); then attributes, each type (2),
length (2), value padded to a multiple of 4. Binding request 0x0001, success response 0x0101, error 0x0111.
XOR-MAPPED-ADDRESS (0x0020): family, port XOR the cookie's top 16 bits, address XOR the cookie (IPv4) or the
cookie and transaction id (IPv6); MAPPED-ADDRESS (0x0001) is the same unXORed (old servers). FINGERPRINT
(0x8028): CRC-32 of the message before it XOR 0x5354554E, the header's length already counting it.

Sharing the socket with WireGuard: every WireGuard message starts with its type (1-4) and three zero bytes; a
STUN Binding message has a non-zero second byte and the cookie at bytes 4-8 (is_stun). The device only asks on
the path of non-transport messages, so the transport path pays nothing.

StunClient: a request to each server at start, retransmitted at 0.5, 1 and 2 s when unanswered, then again every
`interval` seconds (which also keeps the NAT's mapping open); a response counts only if it matches an outstanding
transaction, to the server it was sent to, from that server's address: anything else is dropped and counted.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass, field

__all__ = ["MAGIC_COOKIE", "is_stun", "binding_request", "parse_response", "binding_response", "StunClient",
           "StunError"]

MAGIC_COOKIE = 0x2112A442
_COOKIE = struct.pack("!I", MAGIC_COOKIE)
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
HEADER = 20
MAX_MESSAGE = 548              # what a response of ours could be; larger STUN messages are not ours
RETRIES = (0.5, 1.0, 2.0)      # seconds between a request's transmissions


class StunError(ValueError):
    pass


def is_stun(data: bytes) -> bool:
    """A STUN message (not a WireGuard one: those have three zero bytes after their type)."""
    return len(data) >= HEADER and data[4:8] == _COOKIE and data[0] < 0x40 and data[1] != 0


def _fingerprint(msg: bytes) -> bytes:
    return struct.pack("!HHI", ATTR_FINGERPRINT, 4, (zlib.crc32(msg) ^ FINGERPRINT_XOR) & 0xFFFFFFFF)


def _message(mtype: int, tid: bytes, attrs: bytes) -> bytes:
    head = struct.pack("!HHI", mtype, len(attrs) + 8, MAGIC_COOKIE) + tid      # + 8: the fingerprint
    body = head + attrs
    return body + _fingerprint(body)


def binding_request(tid: bytes) -> bytes:
    """A Binding request with transaction id `tid` (12 bytes) and a FINGERPRINT (28 bytes in all)."""
    if len(tid) != 12:
        raise ValueError("a STUN transaction id is 12 bytes")
    return _message(BINDING_REQUEST, tid, b"")


def _attributes(data: bytes):
    """(type, value) of each attribute; StunError when the lengths do not add up."""
    (length,) = struct.unpack_from("!H", data, 2)
    if length % 4 or HEADER + length != len(data):
        raise StunError("length field does not match the message")
    off = HEADER
    while off < len(data):
        if off + 4 > len(data):
            raise StunError("truncated attribute header")
        atype, alen = struct.unpack_from("!HH", data, off)
        end = off + 4 + alen
        if end > len(data):
            raise StunError("truncated attribute")
        yield atype, data[off + 4:end], off
        off = end + (-alen % 4)


def _address(value: bytes, xor: bool, tid: bytes) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError("short address attribute")
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    raw = value[4:]
    if xor:
        port ^= MAGIC_COOKIE >> 16
    if family == 1 and len(raw) == 4:
        key = _COOKIE
    elif family == 2 and len(raw) == 16:
        key = _COOKIE + tid
    else:
        raise StunError("bad address family or length")
    if xor:
        raw = bytes(a ^ b for a, b in zip(raw, key))
    return str(ipaddress.ip_address(raw)), port


def parse_response(data: bytes) -> tuple[bytes, tuple[str, int]]:
    """(transaction id, mapped (address, port)) of a Binding success response; StunError otherwise."""
    if not is_stun(data) or len(data) > MAX_MESSAGE:
        raise StunError("not a STUN message")
    mtype = struct.unpack_from("!H", data)[0]
    if mtype != BINDING_SUCCESS:
        raise StunError(f"not a Binding success response (type {mtype:#06x})")
    tid = data[8:20]
    attrs = list(_attributes(data))
    for atype, value, off in attrs:               # the integrity of the whole first, then its contents
        if atype == ATTR_FINGERPRINT and value != _fingerprint(data[:off])[4:]:
            raise StunError("FINGERPRINT does not match")
    xor = plain = None
    for atype, value, off in attrs:
        if atype == ATTR_XOR_MAPPED_ADDRESS and xor is None:
            xor = _address(value, True, tid)
        elif atype == ATTR_MAPPED_ADDRESS and plain is None:
            plain = _address(value, False, tid)
    mapped = xor or plain
    if mapped is None:
        raise StunError("no mapped address in the response")
    return tid, mapped


def binding_response(data: bytes, src: tuple) -> bytes | None:
    """The server's answer to a Binding request from `src` (host, port, ...): XOR-MAPPED-ADDRESS and FINGERPRINT.
    None for anything else (no reply at all: nothing to reflect, nothing to amplify)."""
    if not is_stun(data) or len(data) > MAX_MESSAGE or struct.unpack_from("!H", data)[0] != BINDING_REQUEST:
        return None
    try:
        for atype, value, off in _attributes(data):
            if atype == ATTR_FINGERPRINT and value != _fingerprint(data[:off])[4:]:
                return None
    except StunError:
        return None
    tid = data[8:20]
    host, port = src[0], src[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        family, key = 1, _COOKIE
    else:
        family, key = 2, _COOKIE + tid
    xaddr = bytes(a ^ b for a, b in zip(ip.packed, key))
    value = struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xaddr
    attrs = struct.pack("!HH", ATTR_XOR_MAPPED_ADDRESS, len(value)) + value
    return _message(BINDING_SUCCESS, tid, attrs)


@dataclass
class _Server:
    addr: tuple                    # the socket address requests go to
    tid: bytes | None = None       # the outstanding transaction
    tries: int = 0
    due: float = 0.0               # next transmission
    mapped: tuple[str, int] | None = None
    answered: float | None = None


@dataclass
class StunClient:
    """The public mapping of one socket, asked of `servers` (socket addresses). poll(now) gives the requests due;
    receive() takes what is_stun() said was STUN; `mapped` is the latest answer (of any server)."""

    servers: list
    rand: object                   # n -> n random bytes (os.urandom; the runtime's source)
    interval: float = 25.0
    stats: dict = field(default_factory=lambda: {"requests": 0, "responses": 0, "unmatched": 0, "malformed": 0,
                                                  "timeouts": 0})
    mapped: tuple[str, int] | None = None
    changed: bool = False          # `mapped` changed since the runtime last looked (it clears this)

    def __post_init__(self) -> None:
        self._servers = [_Server(tuple(a)) for a in self.servers]

    def deadline(self) -> float | None:
        return min((s.due for s in self._servers), default=None)

    def poll(self, now: float) -> list[tuple[bytes, tuple]]:
        out = []
        for s in self._servers:
            if s.due > now:
                continue
            if s.tid is not None and s.tries > len(RETRIES):      # gave up: try afresh at the next interval
                self.stats["timeouts"] += 1
                s.tid, s.tries, s.due = None, 0, now + self.interval
                continue
            if s.tid is None:
                s.tid, s.tries = self.rand(12), 0
            out.append((binding_request(s.tid), s.addr))
            self.stats["requests"] += 1
            s.due = now + (RETRIES[s.tries] if s.tries < len(RETRIES) else RETRIES[-1])
            s.tries += 1
        return out

    def receive(self, data: bytes, src: tuple, now: float) -> bool:
        """A STUN message from `src`: True when it answered an outstanding request (and `mapped` is set)."""
        try:
            tid, mapped = parse_response(data)
        except StunError:
            self.stats["malformed"] += 1
            return False
        for s in self._servers:
            if s.tid == tid and tuple(src[:2]) == tuple(s.addr[:2]):
                s.tid, s.tries, s.due = None, 0, now + self.interval
                s.mapped, s.answered = mapped, now
                self.stats["responses"] += 1
                if mapped != self.mapped:
                    self.mapped, self.changed = mapped, True
                return True
        self.stats["unmatched"] += 1      # no such transaction, or not from the server it went to
        return False
