"""TCP sockets for the stream transports (docs/transports.md): the options every connection gets, the listening
sockets (IPv4 and IPv6 on one port), and the non-blocking connect. All non-blocking; io/stream.py drives them."""

from __future__ import annotations

import errno
import socket

from ..constants import STREAM_KEEPCNT, STREAM_KEEPIDLE, STREAM_KEEPINTVL, STREAM_NOTSENT_LOWAT, STREAM_USER_TIMEOUT
from .tls import os_reason

__all__ = ["SO_MARK", "tune", "open_listeners", "start_connect", "set_mark", "accept_all", "prepare_accepted"]

SO_MARK = getattr(socket, "SO_MARK", 36)
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


def tune(sock: socket.socket, fwmark: int) -> None:
    """Non-blocking, TCP_NODELAY (each batch is written at once), keepalives, a bounded unsent queue
    (TCP_NOTSENT_LOWAT), TCP_USER_TIMEOUT, and the interface's fwmark."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, val in ((TCP_NOTSENT_LOWAT, STREAM_NOTSENT_LOWAT), (socket.TCP_KEEPIDLE, STREAM_KEEPIDLE),
                     (socket.TCP_KEEPINTVL, STREAM_KEEPINTVL), (socket.TCP_KEEPCNT, STREAM_KEEPCNT),
                     (TCP_USER_TIMEOUT, int(STREAM_USER_TIMEOUT * 1000))):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, opt, val)
        except OSError:
            pass
    if fwmark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)


def set_mark(sock: socket.socket, mark: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)


def open_listeners(port: int, fwmark: int) -> list[socket.socket]:
    """Listening sockets on `port`: IPv4, and IPv6 (V6ONLY) where the namespace has it. Raises OSError (then
    nothing stays open)."""
    new = []
    try:
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        new.append(s4)
        s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s4.bind(("0.0.0.0", port))
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            s6 = None
        if s6 is not None:
            new.append(s6)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s6.bind(("::", port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise
                new.remove(s6)          # no IPv6 in this namespace
                s6.close()
        for s in new:
            s.setblocking(False)
            if fwmark:
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
            s.listen(128)
    except BaseException:
        for s in new:
            s.close()
        raise
    return new


def start_connect(host: str, port: int, fwmark: int) -> tuple[socket.socket | None, str | None]:
    """A tuned socket connecting to (host, port) without blocking -> (socket, None), or (None, the failure in
    words) when the connect failed at once."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        tune(sock, fwmark)
        rc = sock.connect_ex((host, port))
    except OSError as e:
        sock.close()
        return None, os_reason(e.errno, e)
    if rc not in (0, errno.EINPROGRESS):
        sock.close()
        return None, os_reason(rc)
    return sock, None


def accept_all(lsock: socket.socket, limit: int = 64):
    """The connections waiting on a listening socket, at most `limit`: yields (socket, address); stops when none
    is left, or after yielding (None, None) once when accept() fails."""
    for _ in range(limit):
        try:
            conn = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            yield None, None
            return
        yield conn


def prepare_accepted(sock: socket.socket, fwmark: int, tls: bool, server_ctx) -> socket.socket | None:
    """An accepted socket tuned, and for TLS wrapped for a server handshake with `server_ctx` -> the socket to
    use, or None (closed) when that failed (a TLS listener without a context included)."""
    try:
        tune(sock, fwmark)
        if tls:
            sock = server_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError, AttributeError):
        sock.close()
        return None
    return sock
