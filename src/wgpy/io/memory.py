"""In-memory stand-ins for the TUN device and the UDP bind, for the runtime test layer (tests/runtime/).

They give the real event loop (daemon.Interface) real file descriptors to wait on, so the loop runs unchanged:
    MemoryTun      a SOCK_SEQPACKET socketpair: the loop's end reads and writes one packet per call, as on
                   /dev/net/tun; the test's end injects packets "from the kernel" and collects what the tunnel
                   delivered (`inject`, `delivered`)
    MemoryNetwork  a switch between MemoryBinds, by (host, port): `send` delivers at once, through an optional
                   filter (loss, reordering, rewriting the source as a NAT would); it records what passed
    MemoryBind     a bind on a MemoryNetwork with the interface of io/udp.UdpBind (open, close, port,
                   set_fwmark, sockets, configure, receive, send); a socketpair carries one wake-up byte per queued
                   datagram so epoll reports it, level-triggered, until the queue is drained
Endpoints are (host, port) tuples, as recvfrom gives them, so the core and the UAPI see what they see on UDP.
"""

from __future__ import annotations

import collections
import errno
import socket
from typing import Callable

__all__ = ["MemoryTun", "MemoryNetwork", "MemoryBind"]


class MemoryTun:
    """A TUN (or TAP) device in memory; see the module docstring."""

    vnet = False
    tso = False

    def __init__(self, name: str, mode: str = "tun") -> None:
        self.name = name
        self.mode = mode
        self._app, self._dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (self._app, self._dev):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.fd = self._dev.fileno()

    def attached(self) -> bool:
        return self.fd >= 0

    def close(self) -> None:
        if self.fd >= 0:
            self._dev.close()
            self._app.close()
            self.fd = -1

    # ---- the kernel's side, for tests ------------------------------------------------------------------------

    def inject(self, packet: bytes) -> None:
        """A packet the local stack routes into the tunnel."""
        self._app.send(packet)

    def delivered(self) -> list[bytes]:
        """Every packet the tunnel wrote to the device since the last call."""
        got = []
        while True:
            try:
                got.append(self._app.recv(65536))
            except (BlockingIOError, InterruptedError):
                return got


Filter = Callable[[tuple, tuple, bytes], "tuple[tuple, tuple, bytes] | None"]


class MemoryNetwork:
    """Datagrams between MemoryBinds; see the module docstring."""

    def __init__(self) -> None:
        self.binds: dict[tuple, MemoryBind] = {}
        self.filter: Filter | None = None        # (src, dst, data) -> same, changed, or None to drop
        self.passed = 0
        self.dropped = 0
        self._next_port = 40000

    def free_port(self, host: str) -> int:
        while (host, self._next_port) in self.binds:
            self._next_port += 1
        self._next_port += 1
        return self._next_port - 1

    def send(self, src: tuple, dst: tuple, data: bytes) -> None:
        if self.filter is not None:
            r = self.filter(src, dst, data)
            if r is None:
                self.dropped += 1
                return
            src, dst, data = r
        target = self.binds.get((dst[0], dst[1]))
        if target is None:
            self.dropped += 1
            return
        self.passed += 1
        target._queue(data, src)


class MemoryBind:
    """A UDP bind on a MemoryNetwork at address `host`; see the module docstring."""

    def __init__(self, net: MemoryNetwork, host: str) -> None:
        self.net = net
        self.host = host
        self.port = 0
        self.fwmark = 0
        self._rx: socket.socket | None = None
        self._wake: socket.socket | None = None
        self._inbox: collections.deque = collections.deque()

    def open(self, port: int, fwmark: int = 0) -> None:
        if port and (self.host, port) in self.net.binds and self.net.binds[(self.host, port)] is not self:
            raise OSError(errno.EADDRINUSE, "address already in use")
        self.close()
        self.port = port or self.net.free_port(self.host)
        self.net.binds[(self.host, self.port)] = self
        self._rx, self._wake = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._rx.setblocking(False)
        self._wake.setblocking(False)
        self.fwmark = fwmark

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    def sockets(self) -> list[socket.socket]:
        """What the loop waits on: one socket whose readability means datagrams are queued."""
        return [self._rx] if self._rx is not None else []

    def configure(self, pmtu_io) -> None:
        """Nothing to tune: no GRO, no ICMP error queue in memory."""

    def receive(self, sock: socket.socket, limit: int, out: list) -> None:
        inbox = self._inbox
        n = min(limit, len(inbox))
        if not n:
            return
        try:
            sock.recv(n)                         # one wake-up byte per datagram taken
        except (BlockingIOError, InterruptedError):
            pass
        for _ in range(n):
            out.append(inbox.popleft())

    def send(self, out: list) -> None:
        src = (self.host, self.port)
        for data, dst in out:
            self.net.send(src, dst, data)

    def send_fragmentable(self, out: list, path_mtu: int) -> None:
        """Memory has no MTU: as send()."""
        self.send(out)

    def close(self) -> None:
        if self._rx is not None:
            self._rx.close()
            self._wake.close()
            self._rx = self._wake = None
        if self.net.binds.get((self.host, self.port)) is self:
            del self.net.binds[(self.host, self.port)]
        self._inbox.clear()

    def _queue(self, data: bytes, src: tuple) -> None:
        if self._wake is None:
            return
        self._inbox.append((bytes(data), src))
        try:
            self._wake.send(b"\x00")
        except (BlockingIOError, InterruptedError):
            pass                                 # millions queued: the loop is far behind anyway
