"""Stream framing of WireGuard messages (wgpy extension, docs/transports.md): each message is one frame

    +--------+--------+----------------------------------+
    | length (16 bit, big-endian) | WireGuard message (length bytes) |
    +--------+--------+----------------------------------+

A frame shorter than STREAM_MIN_FRAME (a keepalive, 32 bytes) or longer than STREAM_MAX_FRAME, a message type
other than 1-4 with three zero bytes, or a handshake message of the wrong size is an error of that connection
only. Pure: bytes in, messages out.
"""

from __future__ import annotations

import struct

from ..constants import STREAM_MAX_FRAME, STREAM_MIN_FRAME

__all__ = ["FRAME_LENGTH", "FrameError", "encode_frame", "parse_frames", "bytes_wanted"]

FRAME_LENGTH = _H = struct.Struct(">H")     # the 2-byte big-endian length before each message
_HANDSHAKE_SIZES = (0, 148, 92, 64)


class FrameError(ValueError):
    """A frame that is not a WireGuard message; `reason` is the counter it goes to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_frame(msg: bytes) -> bytes:
    return _H.pack(len(msg)) + msg


def parse_frames(buf: bytearray, src: object, out: list, limit: int = 1 << 62) -> int:
    """Append (message, src) for every complete frame at the start of `buf`, at most `limit` of them; return the
    bytes they took. Raises FrameError at the first bad frame (the good ones before it are already in `out`). A
    bad length or message type is detected from the first 2 or 6 bytes of a frame, without waiting for its body
    (an HTTP request or a TLS hello sent to a TCP port is refused at once)."""
    n = len(buf)
    off = 0
    while n - off >= 2 and limit > 0:
        length = (buf[off] << 8) | buf[off + 1]
        if length < STREAM_MIN_FRAME:
            raise FrameError("stream_short_frame")
        if length > STREAM_MAX_FRAME:
            raise FrameError("stream_oversized_frame")
        if n - off < 6:
            break
        t = buf[off + 2]
        if buf[off + 3] or buf[off + 4] or buf[off + 5] or not 1 <= t <= 4:
            raise FrameError("stream_bad_message_type")
        if t != 4 and _HANDSHAKE_SIZES[t] != length:
            raise FrameError("stream_bad_message_size")
        end = off + 2 + length
        if end > n:
            break
        out.append((bytes(buf[off + 2:end]), src))
        off = end
        limit -= 1
    return off


def bytes_wanted(buf: bytearray, frames: int) -> int:
    """How many more bytes `buf` needs to hold `frames` whole frames, as far as its headers tell: the rest of
    an incomplete frame, or a header and the smallest body (STREAM_MIN_FRAME) where the next frame has not
    begun. 0 when it holds them, or when the next header is bad (parse_frames refuses it). Reading exactly this
    much never takes a byte beyond the `frames`-th frame: what an unauthenticated connection may send
    (streams/connection.py) is read and parsed, the rest waits in the kernel."""
    n = len(buf)
    off = 0
    while frames > 0:
        if n - off < 2:
            return off + 2 + STREAM_MIN_FRAME - n
        length = (buf[off] << 8) | buf[off + 1]
        if not STREAM_MIN_FRAME <= length <= STREAM_MAX_FRAME:
            return 0
        end = off + 2 + length
        if end > n:
            return end - n
        off = end
        frames -= 1
    return 0
