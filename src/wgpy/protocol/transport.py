"""The transport data message (whitepaper 5.4.6), sealed and opened: the one place its layout lives.

    msg = type (4, little-endian, = 4) || receiver (4) || counter (8, little-endian) || AEAD(key, counter, P, "")

The AEAD nonce is 32 zero bits followed by the 64-bit little-endian counter (whitepaper 5.4.6, RFC 8439 96-bit
nonce). `seal_batch` pads each plaintext with zeros to a multiple of 16 bytes without going past the MTU
(whitepaper 5.4.6 "padded ... to a multiple of 16"); `seal` does not pad (control messages, packets sent
unpadded under an explicit MTU). Opening is split in two: `parse_header` (no crypto, for the receive loop's
first checks) and `open_body`. Counters are handed out by the caller's keypair (`Keypair.send_counter`), which
`seal_batch` and `seal` advance: a counter is never used twice with one key.

Two implementations of the batch loops, chosen once at import: the native one (wgpy._crypto, src/native/crypto.c:
`seal_batch` is its function, Device.open_transport calls its `open_run`), used when the extension is built and
WGPY_NATIVE is not 0, and the pure-Python reference here (`seal_batch_py`, Device.open_transport_py), which the
native code must match result for result (tests/unit/test_native_crypto.py). `NATIVE` is the module or None;
keypair.py takes its Aead and Replay types from it, as the native loops need those.

Rules of this file: pure (no I/O, no clock); nothing here decides what a message means or whom it is for; the
device's data path (device.py) and the wgpy extensions (pmtu.py) and the stream transports use these functions
and never spell out the layout themselves.
"""

from __future__ import annotations

import struct

from .. import native
from ..constants import MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_HEADER_SIZE, MESSAGE_TRANSPORT_MIN_SIZE

__all__ = ["NATIVE", "TRANSPORT_WORD", "header_prefix", "is_transport", "parse_header", "receiver_index", "open_body",
           "seal", "seal_batch", "seal_batch_py"]

NATIVE = native.load("_crypto")               # the native data path (wgpy._crypto), or None: the pure-Python one

TRANSPORT_WORD = b"\x04\x00\x00\x00"          # type 4 and three reserved zero bytes, as the first 4 bytes
_IQ = struct.Struct("<IQ")                    # receiver, counter (after the type word)
_I = struct.Struct("<I")
_Q = struct.Struct("<Q")
_ZERO4 = b"\x00" * 4
_ZEROS16 = b"\x00" * 16

_PREFIX = struct.Struct("<II")                # type word, receiver

parse_header = _IQ.unpack_from
"""parse_header(msg, 4) -> (receiver index, counter); the caller has checked is_transport(msg)."""


def header_prefix(remote_index: int) -> bytes:
    """The first 8 bytes of every transport message sent to `remote_index` (kept on the keypair)."""
    return _PREFIX.pack(MESSAGE_TRANSPORT, remote_index)


def is_transport(msg: bytes) -> bool:
    """A transport message by its type word and minimum length (a keepalive: header + tag)."""
    return msg[:4] == TRANSPORT_WORD and len(msg) >= MESSAGE_TRANSPORT_MIN_SIZE


def receiver_index(msg: bytes) -> int:
    """The receiver index of any message that carries one at offset 4 (transport, response, cookie reply)."""
    return _I.unpack_from(msg, 4)[0]


def open_body(aead, msg: bytes) -> bytes:
    """Decrypt the body of a transport message (raises crypto.InvalidTag). The nonce is the message's own
    counter field, used as it is on the wire."""
    return aead.decrypt(_ZERO4 + msg[8:MESSAGE_TRANSPORT_HEADER_SIZE], msg[MESSAGE_TRANSPORT_HEADER_SIZE:], None)


def seal(kp, pt: bytes) -> bytes:
    """One transport message under `kp`'s next counter, unpadded."""
    ctr = kp.send_counter
    kp.send_counter = ctr + 1
    cb = _Q.pack(ctr)
    return kp.header_prefix + cb + kp.send.encrypt(_ZERO4 + cb, pt, None)


def seal_batch_py(kp, pkts: list[bytes], mtu: int, ep: object, out: list) -> tuple[int, list[bytes] | None]:
    """Seal `pkts` under consecutive counters of `kp`, padded to 16 bytes within `mtu`, appending
    (message, ep) to `out`. Packets longer than `mtu` are not sent: they come back, in order, for the caller to
    handle once the counters are stored. Returns (wire bytes sent, too big or None). The reference of
    wgpy._crypto.seal_batch, which is `seal_batch` when the extension is built."""
    encrypt = kp.send.encrypt
    prefix = kp.header_prefix
    pack = _Q.pack
    ctr = kp.send_counter
    nbytes = 0
    append = out.append
    big = None
    for pkt in pkts:
        n = len(pkt)
        if n > mtu:
            if big is None:
                big = [pkt]
            else:
                big.append(pkt)
            continue
        pad = -n & 15
        if pad:
            if n + pad > mtu:
                pad = mtu - n if n < mtu else 0
            if pad:
                pkt = pkt + _ZEROS16[:pad]
        cb = pack(ctr)
        ct = encrypt(_ZERO4 + cb, pkt, None)
        append((prefix + cb + ct, ep))
        ctr += 1
        nbytes += len(ct) + 16
    kp.send_counter = ctr
    return nbytes, big


seal_batch = NATIVE.seal_batch if NATIVE is not None else seal_batch_py
