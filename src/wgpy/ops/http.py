"""The metrics endpoint's HTTP server: `GET /metrics`, served inside the daemon's epoll loop without blocking it.

Like the UAPI server (uapi/server.py), nothing here waits: the listening socket and every connection are
non-blocking and registered in the daemon's epoll; the loop calls event() for their readiness and
next_deadline()/tick() for the cut-offs. Bounds, so that a slow or hostile scraper costs the data path nothing:

* at most MAX_CONNECTIONS at once; a new one evicts the oldest (never refused: a real scraper gets through);
* REQUEST_TIMEOUT seconds to send the request head, at most MAX_HEAD bytes of it; REPLY_TIMEOUT to take the reply;
* one request per connection (`Connection: close`): nothing can be kept open past its reply;
* the body is rendered at most once per RENDER_INTERVAL: scrapes closer together get the same bytes, so a client
  asking in a tight loop costs no more than one render a second (a render of a few hundred peers takes ~1 ms).

Only GET and HEAD of /metrics (and / pointing to it); other paths 404, other methods 405. No authentication: bind
it to a loopback or management address (MetricsListen), or firewall it; it shows public keys and endpoints, never
a private or preshared key.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Callable

MAX_CONNECTIONS = 16
REQUEST_TIMEOUT = 3.0      # seconds to send the request head
REPLY_TIMEOUT = 10.0       # seconds to take the whole reply
MAX_HEAD = 8192            # bytes of a request head
RENDER_INTERVAL = 1.0      # seconds a rendered body is reused for
ACCEPT_BATCH = 64          # connections taken per readiness of the listening socket

_INDEX = b"<html><body><a href=\"/metrics\">/metrics</a> (wgpy)</body></html>\n"


class _Conn:
    __slots__ = ("sock", "fd", "buf", "out", "deadline", "started", "writing")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.out = memoryview(b"")
        self.started = now
        self.deadline = now + REQUEST_TIMEOUT
        self.writing = False


class MetricsServer:
    """`render()` -> (content type, body bytes) of a scrape; `epoll` the daemon's."""

    def __init__(self, epoll, render: Callable[[], tuple[str, bytes]], clock: Callable[[], float] = time.monotonic):
        self.epoll = epoll
        self.render = render
        self.clock = clock
        self.sock: socket.socket | None = None
        self.address: tuple[str, int] | None = None
        self.fds: dict[int, _Conn | None] = {}        # the listening socket's fd -> None, connections' -> _Conn
        self.conns: dict[int, _Conn] = {}             # the connections alone (the loop's "any deadline?")
        self.stats = {"scrapes": 0, "timeout": 0, "evicted": 0, "bad_request": 0}
        self._cache: tuple[float, str, bytes] | None = None

    # ---- the listening socket ---------------------------------------------------------------------------------

    def listen(self, address: tuple[str, int] | None) -> None:
        """Serve on (host, port), or stop serving with None. A failing bind (EADDRINUSE, EADDRNOTAVAIL) raises
        OSError and leaves the previous listener as it was."""
        new = None
        if address is not None:
            host, port = address
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            new = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            try:
                new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    new.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                new.bind((host, port))
                new.listen(16)
            except OSError:
                new.close()
                raise
        self._close_listener()
        if new is not None:
            self.sock = new
            self.address = (address[0], new.getsockname()[1])
            self.fds[new.fileno()] = None
            self.epoll.register(new.fileno(), select.EPOLLIN)

    def _close_listener(self) -> None:
        if self.sock is not None:
            fd = self.sock.fileno()
            self.fds.pop(fd, None)
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass
            self.sock.close()
            self.sock = None
            self.address = None

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._drop(c)
        self._close_listener()

    # ---- the loop's calls ---------------------------------------------------------------------------------------

    def event(self, fd: int, ev: int) -> None:
        c = self.fds.get(fd, False)
        if c is None:
            self._accept()
        elif c is not False:
            try:
                if c.writing:
                    self._write(c)
                else:
                    self._read(c)
            except OSError:
                self._drop(c)

    def next_deadline(self) -> float | None:
        return min(c.deadline for c in self.conns.values()) if self.conns else None

    def tick(self, now: float) -> None:
        for c in [c for c in self.conns.values() if c.deadline <= now]:
            self.stats["timeout"] += 1
            self._drop(c)

    # ---- connections ------------------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                self.stats["evicted"] += 1
                self._drop(min(self.conns.values(), key=lambda c: c.started))
            sock.setblocking(False)
            c = _Conn(sock, self.clock())
            self.fds[c.fd] = c
            self.conns[c.fd] = c
            self.epoll.register(c.fd, select.EPOLLIN | select.EPOLLRDHUP)

    def _read(self, c: _Conn) -> None:
        while True:
            try:
                chunk = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                self._drop(c)
                return
            c.buf += chunk
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                end = c.buf.find(b"\n\n")
            if end >= 0:
                self._answer(c, bytes(c.buf[:end]))
                return
            if len(c.buf) > MAX_HEAD:
                self.stats["bad_request"] += 1
                self._reply(c, 431, "Request Header Fields Too Large", "text/plain", b"request head too large\n")
                return

    def _answer(self, c: _Conn, head: bytes) -> None:
        line = head.split(b"\n", 1)[0].rstrip(b"\r")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.stats["bad_request"] += 1
            self._reply(c, 400, "Bad Request", "text/plain", b"bad request\n")
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._reply(c, 405, "Method Not Allowed", "text/plain", b"GET or HEAD only\n", head_only=False,
                        extra="Allow: GET, HEAD\r\n")
            return
        head_only = method == b"HEAD"
        if target == b"/metrics":
            self.stats["scrapes"] += 1
            ctype, body = self._body()
            self._reply(c, 200, "OK", ctype, body, head_only)
        elif target == b"/":
            self._reply(c, 200, "OK", "text/html; charset=utf-8", _INDEX, head_only)
        else:
            self._reply(c, 404, "Not Found", "text/plain", b"not found: try /metrics\n", head_only)

    def _body(self) -> tuple[str, bytes]:
        now = self.clock()
        if self._cache is not None and now - self._cache[0] < RENDER_INTERVAL:
            return self._cache[1], self._cache[2]
        ctype, body = self.render()
        self._cache = (now, ctype, body)
        return ctype, body

    def _reply(self, c: _Conn, code: int, reason: str, ctype: str, body: bytes, head_only: bool = False,
               extra: str = "") -> None:
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n{extra}\r\n").encode()
        c.out = memoryview(head + (b"" if head_only else body))
        c.deadline = self.clock() + REPLY_TIMEOUT
        c.writing = True
        self._write(c)

    def _write(self, c: _Conn) -> None:
        while c.out:
            try:
                n = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                self.epoll.modify(c.fd, select.EPOLLOUT)      # the rest when the socket has room
                return
            c.out = c.out[n:]
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._drop(c)

    def _drop(self, c: _Conn) -> None:
        self.fds.pop(c.fd, None)
        self.conns.pop(c.fd, None)
        try:
            self.epoll.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()
