"""The UAPI unix socket: /var/run/wireguard/<iface>.sock, as wireguard-go creates it.

A daemon without root that cannot write /var/run/wireguard (README: without root) puts it in its user's own
runtime directory instead (privileges.user_runtime_dir()); clients look in both places.

The socket is created under a 0077 umask (mode 0600, root only); a stale socket left by a crashed daemon is
replaced, a live one means the interface is in use. Connections from a user other than our own (SO_PEERCRED) are
refused. Requests are served inside the daemon's event loop without ever blocking it: every connection is
non-blocking with its own buffers, at most MAX_CONNECTIONS at once (a new one evicts the oldest), each given
REQUEST_TIMEOUT to complete its request and MAX_REQUEST bytes (MAX_BUFFERED for all of them); the clients (`wg`, `wgpy`) send one request and
wait for the reply. Finding the end of a request is linear in its size (the search resumes where it stopped).

A request is handled by `handler`, which returns the reply text or a generator (uapi/protocol.py request_steps)
that yields between the slices of a large set and returns the reply. Such a job runs in slices of SLICE seconds
of work, one per pass of the loop (work()), the data path running in between; while it runs, complete requests
of other connections wait their turn (so a `get` never sees a set half applied), and every connection is still
read, so none stalls the loop.
"""

from __future__ import annotations

import collections
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
MAX_REQUEST = 64 << 20     # bytes of one request: ~300,000 peers of `wg setconf` (applied in slices)
MAX_BUFFERED = 64 << 20    # bytes read and not yet handled, all connections together
MAX_CONNECTIONS = 32       # connections served at once; a new one evicts the oldest
LINGER = 0.05              # after a reply, how long a connection may stay for another request
SLICE = 0.004              # seconds of a large set's work per pass of the loop
NEVER = float("inf")


class _Client:
    __slots__ = ("sock", "fd", "buf", "scan", "out", "deadline", "replied", "waiting", "busy", "eof")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.out = bytearray()
        self.scan = 0
        self.deadline = deadline
        self.replied = False
        self.waiting = False             # registered for EPOLLOUT: a reply waits for room
        self.busy = False                # its request runs as the job, or waits for the job to end
        self.eof = False                 # the client shut its side after its request: close after the reply


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
    def __init__(self, name: str, handler: Callable[[str], object]) -> None:
        self.path = os.path.join(privileges.runtime_dir(SOCKET_DIR, create=True), f"{name}.sock")
        self.handler = handler
        self.refused = 0
        self.evicted = 0
        self.conns: dict[int, _Client] = {}
        self.buffered = 0                                    # bytes in the connections' input buffers
        self.job: tuple[_Client, object] | None = None      # (client, generator) of the request in slices
        self.waiting: collections.deque[_Client] = collections.deque()   # complete requests behind the job
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
        for the empty line that ends a request resumes where the previous one stopped. While a job runs, a
        complete request waits (the connection is still read, up to MAX_REQUEST)."""
        while True:
            if not c.busy:
                end = c.buf.find(b"\n\n", c.scan)
                if end >= 0:
                    if self.job is not None:         # one request at a time: after the set in progress
                        c.busy = True
                        c.deadline = NEVER
                        self.waiting.append(c)
                        continue
                    with memoryview(c.buf) as whole, whole[:end] as view:
                        try:
                            text = str(view, "utf-8")
                        except UnicodeDecodeError:
                            text = None
                    del c.buf[:end + 2]
                    self.buffered -= end + 2
                    if not c.buf:
                        c.buf = bytearray()          # a large request's memory goes back at once
                    c.scan = 0
                    if not self._start(c, text):
                        return      # the reply waits for room (EPOLLOUT) or for the job's end
                    continue
                c.scan = max(len(c.buf) - 1, 0)
            try:
                chunk = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                if c.busy:                           # shut after its request: answer, then close
                    c.eof = True
                    self._epoll.unregister(c.fd)     # EOF stays readable: out of the loop until the reply
                else:
                    self._drop(c)
                return
            c.buf += chunk
            self.buffered += len(chunk)
            if len(c.buf) > MAX_REQUEST or self.buffered > MAX_BUFFERED:
                self._drop(c)
                return

    def _start(self, c: "_Client", text: str | None) -> bool:
        """Handle one request: its reply now, or (a large set) the job that will make it. True once the reply
        went out."""
        if text is None:
            return self._reply(c, "errno=-22\n\n")
        result = self.handler(text)
        if not isinstance(result, str):
            try:
                next(result)
            except StopIteration as done:
                result = done.value
            else:
                self.job = (c, result)
                c.busy = True
                c.deadline = NEVER
                return False
        return self._reply(c, result)

    def _reply(self, c: "_Client", reply: str) -> bool:
        c.out += reply.encode()
        c.replied = True
        return self._flush(c)

    def work(self) -> None:
        """Run the job for SLICE seconds (the loop calls this once per pass while `job` is set); at its end,
        send its reply and serve the requests that waited."""
        c, job = self.job
        end = time.monotonic() + SLICE
        try:
            while True:
                next(job)
                if time.monotonic() >= end:
                    return
        except StopIteration as done:
            reply = done.value
        except Exception:       # request_steps catches its own; never let one take the loop down
            reply = "errno=-5\n\n"
        self.job = None
        if self.conns.get(c.fd) is c:
            c.busy = False
            try:
                if self._reply(c, reply) and not c.eof:
                    self._read(c)
            except OSError:
                self._drop(c)
        while self.job is None and self.waiting:
            w = self.waiting.popleft()
            if self.conns.get(w.fd) is not w:
                continue                              # gone meanwhile
            w.busy = False
            w.deadline = time.monotonic() + REQUEST_TIMEOUT
            try:
                self._read(w)
            except OSError:
                self._drop(w)

    def _flush(self, c: "_Client") -> bool:
        """Send what is queued; True once all of it went out."""
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        del c.out[:n]
        if c.out:
            if not c.waiting:
                if c.eof:
                    self._epoll.register(c.fd, select.EPOLLOUT)
                else:
                    self._epoll.modify(c.fd, select.EPOLLOUT)
                c.waiting = True
            return False
        if c.eof:
            self._drop(c)                   # it shut its side: the reply was all it waited for
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
        if self.conns.get(c.fd) is not c:
            return
        self.conns.pop(c.fd, None)
        self.buffered -= len(c.buf)
        try:
            self._epoll.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()

    def _serve_blocking(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        buf = bytearray()
        while True:
            end = buf.find(b"\n\n", max(len(buf) - 65536 - 1, 0))     # only where the last chunk could end it
            if end >= 0:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(buf) > MAX_REQUEST:
                return
            conn.settimeout(remaining)
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
        try:
            reply = self.handler(bytes(buf[:end]).decode("utf-8"))
        except UnicodeDecodeError:
            reply = "errno=-22\n\n"
        while not isinstance(reply, str):              # a large set: all of it, here
            try:
                next(reply)
            except StopIteration as done:
                reply = done.value
        conn.settimeout(REQUEST_TIMEOUT)
        conn.sendall(reply.encode())

    def close(self) -> None:
        if self.job is not None:
            self.job[1].close()
            self.job = None
        for c in list(self.conns.values()):
            self._drop(c)
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except (FileNotFoundError, PermissionError):
                pass   # a daemon that dropped root cannot: `wgpy down` (or `wg`) removes the stale socket


REPLY_LIMIT = 256 << 20               # bytes of one reply a client takes (a `get` of ~1M peers)
REPLY_TIME = 60.0                     # seconds for a whole reply


def request(name: str, text: str, timeout: float = 5.0) -> str:
    """Client side: send one request (without the blank line) and return the response (with errno). Each step
    waits at most `timeout` seconds and the whole reply at most REPLY_TIME, of at most REPLY_LIMIT bytes: a
    daemon (or whatever holds the socket) that trickles or floods makes this raise TimeoutError / OSError
    (EMSGSIZE) instead of stalling or filling the caller."""
    path = find_socket(name)
    if path is None:                  # nothing in a trusted directory: an untrusted one is never tried
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    end = time.monotonic() + max(timeout, REPLY_TIME)
    try:
        s.connect(path)
        s.sendall(text.encode() + b"\n")
        buf = bytearray()
        # a reply ends with its errno line and an empty line: only the tail is looked at (linear)
        while not (buf.endswith(b"\n\n") and b"errno=" in buf[-32:]):
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(errno.ETIMEDOUT, f"no complete reply from {path} in time")
            s.settimeout(min(timeout, left))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise TimeoutError(errno.ETIMEDOUT, f"no complete reply from {path} in time") from None
            if not chunk:
                break
            buf += chunk
            if len(buf) > REPLY_LIMIT:
                raise OSError(errno.EMSGSIZE, f"reply from {path} larger than {REPLY_LIMIT >> 20} MiB")
        return buf.decode(errors="replace")     # a reply is the daemon's word: never a traceback here
    finally:
        s.close()
