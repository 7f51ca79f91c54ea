"""The UAPI unix socket: /var/run/wireguard/<iface>.sock, as wireguard-go creates it.

A daemon without root that cannot write /var/run/wireguard (README: without root) puts it in its user's own
runtime directory instead (privileges.user_runtime_dir()); clients look in both places.

The socket is created under a 0077 umask (mode 0600, root only); a stale socket left by a crashed daemon is
replaced, a live one means the interface is in use. Connections from a user other than our own (SO_PEERCRED) are
refused. Requests are served inside the daemon's event loop without ever blocking it: every connection is
non-blocking with its own buffers, at most MAX_CONNECTIONS at once (a new one evicts the oldest), each given
REQUEST_TIMEOUT to complete its request and MAX_REQUEST bytes; the clients (`wg`, `wgpy`) send one request and
wait for the reply.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Callable

from ..host import privileges

SOCKET_DIR = "/var/run/wireguard"
REQUEST_TIMEOUT = 2.0      # seconds a connection may take to send its request
MAX_REQUEST = 16 << 20     # bytes of one request
MAX_CONNECTIONS = 32       # connections served at once; a new one evicts the oldest
LINGER = 0.05              # after a reply, how long a connection may stay for another request


class _Client:
    __slots__ = ("sock", "fd", "buf", "scan", "out", "deadline", "replied", "waiting")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.out = bytearray()
        self.scan = 0
        self.deadline = deadline
        self.replied = False
        self.waiting = False             # registered for EPOLLOUT: a reply waits for room


def find_socket(name: str) -> str | None:
    """Interface `name`'s socket in a directory this process trusts (privileges.search_dirs: never /tmp for
    root), or None."""
    for d in privileges.search_dirs(SOCKET_DIR):
        path = os.path.join(d, f"{name}.sock")
        if os.path.exists(path):
            return path
    return None


def socket_path(name: str) -> str:
    """Where interface `name`'s socket is (the first in a trusted directory), else where a new one goes."""
    return find_socket(name) or os.path.join(privileges.runtime_dir(SOCKET_DIR), f"{name}.sock")


class UapiServer:
    def __init__(self, name: str, handler: Callable[[str], str]) -> None:
        self.path = os.path.join(privileges.runtime_dir(SOCKET_DIR, create=True), f"{name}.sock")
        self.handler = handler
        self.refused = 0
        self.evicted = 0
        self.conns: dict[int, _Client] = {}
        self._epoll = None
        old = os.umask(0o077)
        try:
            self.sock = self._listen()
        finally:
            os.umask(old)
        self.sock.setblocking(False)

    def _listen(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(self.path)
        except OSError:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                s.close()
                raise OSError(f"UAPI socket {self.path} is in use by another daemon") from None
            except (ConnectionRefusedError, FileNotFoundError):
                pass
            finally:
                probe.close()
            os.unlink(self.path)
            s.bind(self.path)
        s.listen(16)
        return s

    def fileno(self) -> int:
        return self.sock.fileno()

    # ---- non-blocking service inside the daemon's epoll loop -------------------------------------------------
    # Each connection has its own buffers and a deadline; the loop calls accept() when the listening socket is
    # readable, event() for a connection's readiness, next_deadline()/tick() for the idle cut-off. Nothing here
    # waits, so a slow or stuck client costs the data path nothing (it used to be served in a blocking read of
    # up to REQUEST_TIMEOUT inside the loop).

    def attach(self, epoll) -> None:
        """Serve connections through `epoll` (the daemon's). Without it, accept() serves them one at a time."""
        self._epoll = epoll

    def accept(self) -> None:
        """Take every pending connection (called when the listening socket is readable)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", cred)
            if uid not in (0, os.geteuid()):
                self.refused += 1
                conn.close()
                continue
            if self._epoll is None:
                with conn:
                    try:
                        self._serve_blocking(conn)
                    except Exception:   # one bad client never stops the daemon
                        pass
                continue
            if len(self.conns) >= MAX_CONNECTIONS:
                oldest = min(self.conns.values(), key=lambda c: c.deadline)
                self._drop(oldest)                   # the oldest idle one makes room, never the newcomer
                self.evicted += 1
            conn.setblocking(False)
            c = _Client(conn, time.monotonic() + REQUEST_TIMEOUT)
            self.conns[c.fd] = c
            self._epoll.register(c.fd, select.EPOLLIN)

    def owns(self, fd: int) -> bool:
        return fd in self.conns

    def event(self, fd: int, ev: int) -> None:
        c = self.conns.get(fd)
        if c is None:
            return
        try:
            if c.out:
                if ev & select.EPOLLOUT and self._flush(c):
                    self._read(c)
                elif ev & (select.EPOLLHUP | select.EPOLLERR):
                    self._drop(c)
                return
            self._read(c)
        except OSError:
            self._drop(c)

    def _read(self, c: "_Client") -> None:
        """Serve every complete request in the buffer, reading more while the socket has it. Linear: the search
        for the empty line that ends a request resumes where the previous one stopped."""
        while True:
            end = c.buf.find(b"\n\n", c.scan)
            if end >= 0:
                request = bytes(c.buf[:end])
                del c.buf[:end + 2]
                c.scan = 0
                try:
                    reply = self.handler(request.decode("utf-8")).encode()
                except UnicodeDecodeError:
                    reply = b"errno=-22\n\n"
                c.out += reply
                c.replied = True
                if not self._flush(c):
                    return                           # the rest when the socket takes more (EPOLLOUT)
                continue
            c.scan = max(len(c.buf) - 1, 0)
            try:
                chunk = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                self._drop(c)
                return
            c.buf += chunk
            if len(c.buf) > MAX_REQUEST:
                self._drop(c)
                return

    def _flush(self, c: "_Client") -> bool:
        """Send what is queued; True once all of it went out."""
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        del c.out[:n]
        if c.out:
            if not c.waiting:
                self._epoll.modify(c.fd, select.EPOLLOUT)
                c.waiting = True
            return False
        if c.waiting:
            self._epoll.modify(c.fd, select.EPOLLIN)
            c.waiting = False
        # wg sends one request per connection: after a reply it gets a moment for another, then is closed
        c.deadline = time.monotonic() + (REQUEST_TIMEOUT if c.buf else LINGER)
        return True

    def next_deadline(self) -> float | None:
        return min(c.deadline for c in self.conns.values()) if self.conns else None

    def tick(self, now: float) -> None:
        for c in [c for c in self.conns.values() if c.deadline <= now]:
            self._drop(c)

    def _drop(self, c: "_Client") -> None:
        self.conns.pop(c.fd, None)
        try:
            self._epoll.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()

    def _serve_blocking(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        buf = bytearray()
        while b"\n\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(buf) > MAX_REQUEST:
                return
            conn.settimeout(remaining)
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
        request, _, _ = bytes(buf).partition(b"\n\n")
        try:
            conn.sendall(self.handler(request.decode("utf-8")).encode())
        except UnicodeDecodeError:
            conn.sendall(b"errno=-22\n\n")

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._drop(c)
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except (FileNotFoundError, PermissionError):
                pass   # a daemon that dropped root cannot: `wgpy down` (or `wg`) removes the stale socket


def request(name: str, text: str, timeout: float = 5.0) -> str:
    """Client side: send one request (without the blank line) and return the response (with errno)."""
    path = find_socket(name)
    if path is None:                  # nothing in a trusted directory: an untrusted one is never tried
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(text.encode() + b"\n")
        buf = b""
        while b"errno=" not in buf or not buf.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace")     # a reply is the daemon's word: never a traceback here
    finally:
        s.close()
