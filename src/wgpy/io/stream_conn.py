"""One stream connection's socket (docs/transports.md): finishing a non-blocking connect, TLS, reading frames and
writing the send buffer. The connection's state lives in the Conn's pure base (streams/connection.py); the
StreamManager (io/stream.py) decides what happens next from what these methods return."""

from __future__ import annotations

import select
import socket
import ssl

from ..streams.connection import Budget, Connection
from ..streams.endpoint import StreamEndpoint
from ..streams.framing import FrameError, bytes_wanted, parse_frames
from .tls import os_reason, reason, tls_reason

__all__ = ["Conn", "READ_SIZE", "READ_BUDGET", "TLS_WRITE_CHUNK"]

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
READ_SIZE = 256 * 1024
READ_BUDGET = 1024 * 1024           # bytes read from one connection per wakeup (fairness between connections)
TLS_WRITE_CHUNK = 64 * 1024

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Conn(Connection):
    """A Connection (its state machine: streams/connection.py) with its socket, buffers and epoll registration."""

    __slots__ = ("sock", "fd", "rbuf", "wbuf", "events")

    def __init__(self, sock: socket.socket, ep: StreamEndpoint, now: float, budget: Budget | None = None) -> None:
        super().__init__(ep, now, budget)
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.events = 0                 # what the fd is registered for in the epoll (0: not registered)

    def connect_error(self) -> str | None:
        """Our non-blocking connect finished: its failure in words, None when connected."""
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return os_reason(err) if err else None

    def start_tls(self) -> str | None:
        """Wrap the connected socket in TLS as a client -> the failure in words, or None."""
        ep = self.ep
        try:
            self.sock = ep.context.wrap_socket(self.sock, server_hostname=ep.server_name or ep.host,
                                               do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            return tls_reason(e)
        return None

    def handshake(self) -> tuple[int, str | None]:
        """One step of the TLS handshake -> (the epoll events it waits for, 0: done or failed; the failure in
        words, or None)."""
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return EPOLLIN, None
        except ssl.SSLWantWriteError:
            return EPOLLOUT, None
        except (ssl.SSLError, OSError, ValueError) as e:
            return 0, tls_reason(e)
        return 0, None

    def read(self, frames: list) -> tuple[str | None, str | None, bool]:
        """Read up to READ_BUDGET bytes and append the complete frames to `frames` as (message, endpoint) ->
        (why the connection ends, in words, or None; the bad frame's counter, or None; whether decrypted bytes
        may still wait inside the TLS object, so the connection must be read again without a readiness event).
        An unauthenticated connection reads only what its frame budget allows (read_unauthenticated)."""
        if not self.authenticated:
            return self.read_unauthenticated(frames)
        sock = self.sock
        rbuf = self.rbuf
        got = 0
        eof: str | None = None
        more = False
        try:
            while got < READ_BUDGET:
                data = sock.recv(READ_SIZE)
                if not data:
                    eof = "closed by the other side"
                    break
                rbuf += data
                got += len(data)
            else:
                more = self.tls
        except _WOULD_BLOCK:
            pass
        except (ssl.SSLError, OSError) as e:
            eof = reason(e)
        bad = None
        try:
            used = parse_frames(rbuf, self.ep, frames)
            if used:
                del rbuf[:used]
        except FrameError as e:
            bad = e.reason
        return eof, bad, more

    def read_unauthenticated(self, frames: list) -> tuple[str | None, str | None, bool]:
        """read() before the core has said who the connection is: only the bytes of the frames its budget still
        allows (Connection.frames_left; framing.bytes_wanted), each parsed frame counted (take_frames). The rest
        waits in the kernel until the connection authenticates (the stream manager reads it again then) or is
        closed with its budget spent: a flood of well-framed garbage costs a read and a parse of at most
        STREAM_UNAUTHENTICATED_FRAMES frames per connection, not of everything it sends."""
        sock = self.sock
        rbuf = self.rbuf
        left = self.frames_left
        eof: str | None = None
        try:
            while True:
                want = bytes_wanted(rbuf, left)
                if not want:
                    break
                data = sock.recv(want)
                if not data:
                    eof = "closed by the other side"
                    break
                rbuf += data
        except _WOULD_BLOCK:
            pass
        except (ssl.SSLError, OSError) as e:
            eof = reason(e)
        bad = None
        n0 = len(frames)
        try:
            used = parse_frames(rbuf, self.ep, frames, left)
            if used:
                del rbuf[:used]
        except FrameError as e:
            bad = e.reason
        self.take_frames(len(frames) - n0)
        return eof, bad, False

    def write(self) -> str | None:
        """Write as much of the send buffer as the socket takes -> the failure in words, or None."""
        wbuf = self.wbuf
        sock = self.sock
        try:
            while wbuf:
                if self.tls:
                    # an SSL write that would block must be retried with the same bytes: the chunk starts at the
                    # same place and only grows, as OpenSSL allows
                    n = sock.send(wbuf[:TLS_WRITE_CHUNK])
                else:
                    n = sock.send(wbuf)
                del wbuf[:n]
        except _WOULD_BLOCK:
            pass
        except (ssl.SSLError, OSError) as e:
            return reason(e)
        return None
