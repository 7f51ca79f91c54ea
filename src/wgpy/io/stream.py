"""TCP and TLS transports, the socket glue: WireGuard messages over a stream, for networks that block or throttle
UDP (docs/transports.md).

The messages are exactly those of the UDP transport (same handshake, keys, counters and replay protection); only
the framing changes (streams/framing.py: a 2-byte length before each message). The pure parts live in streams/:
framing, the endpoint records and URLs (streams/endpoint.py), and each connection's state machine
(streams/connection.py: connecting, TLS handshake, up, closed; deadlines, the unauthenticated budget, reconnection
backoff with jitter, the last error). TLS contexts and error words are io/tls.py, socket options io/tcp.py. This
file owns the sockets and feeds the state machine its events.

Sending: at most STREAM_SEND_BUFFER bytes wait in user space per connection (and TCP_NOTSENT_LOWAT bounds the
kernel's unsent queue); beyond that messages are dropped and counted, never queued without limit: a tunnel
over TCP must let the inner TCP see loss rather than a growing delay. TCP_NODELAY: each batch is written at once.

Everything is non-blocking and driven by the daemon's epoll loop: `event()` for readiness, `send()` from the
daemon's flush, `service()` after each wakeup (hands received messages to the core, authenticates inbound
connections, greets peers over fresh outbound connections), `tick()`/`next_deadline()` for timeouts and
reconnections. No threads.
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import socket
import ssl
import time
from collections import Counter

from ..config import parse_pin  # noqa: F401  (the one TLSPin / wgpy_tls_pin parser; uapi/transport.py uses it)
from ..constants import STREAM_MAX_FRAME, STREAM_SEND_BUFFER
from ..streams.connection import CONNECT, WAIT, Budget, Retry, failed, retry_due, source_key
# re-exported (tests and the UAPI import them from here): the endpoint record and URLs, framing, TLS words
from ..streams.endpoint import CLOSED, CONNECTING, HANDSHAKE, UP, StreamEndpoint, parse_url  # noqa: F401
from ..streams.framing import FRAME_LENGTH as _H, FrameError, encode_frame, parse_frames  # noqa: F401
from .stream_conn import Conn
from .tcp import accept_all, open_listeners, prepare_accepted, set_mark, start_connect
from .tls import PIN_MISMATCH, client_context, fingerprint, server_context

log = logging.getLogger("wgpy")

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
LOG_INTERVAL = 10.0                 # inbound failures (scanners...) are logged at most this often per reason


class StreamManager:
    """Every stream socket of one interface: listeners, inbound and outbound connections."""

    def __init__(self, epoll: select.epoll, rand=os.urandom, clock=time.monotonic) -> None:
        self.epoll = epoll
        self._rand = rand
        self._clock = clock
        self.conns: dict[int, Conn] = {}
        self.listeners: dict[int, tuple[socket.socket, str]] = {}
        self.listen_ports = {"tcp": 0, "tls": 0}
        self.targets: dict[tuple, StreamEndpoint] = {}
        self.by_peer: dict[object, Conn] = {}          # a peer's current authenticated inbound connection
        self.counters: Counter[str] = Counter()
        self.inbox: list = []
        self.unauth_inbox: list = []
        self.connected: list[StreamEndpoint] = []
        self.budget = Budget()                         # inbound connections not authenticated yet
        self.again: set[Conn] = set()
        self.heap: list = []
        self._seq = 0
        self.server_ctx: ssl.SSLContext | None = None
        self.cert_file: str | None = None
        self.key_file: str | None = None
        self.fwmark = 0
        self._logged: dict[str, float] = {}
        self.active = False        # streams in use: the daemon's loop and flush check this one attribute

    @property
    def unauthenticated(self) -> int:
        return self.budget.count

    def _update_active(self) -> None:
        # once true it stays true: a peer may keep a stream endpoint as its endpoint after every listener and
        # connection is gone, and its messages must still come here (to be dropped and counted), never reach
        # the UDP sender
        self.active = self.active or bool(self.listeners or self.conns or self.targets)

    # ---- configuration --------------------------------------------------------------------------------------

    @staticmethod
    def load_identity(cert_file: str, key_file: str) -> ssl.SSLContext:
        """A TLS server context from a certificate and key file (raises OSError, ssl.SSLError is one); the UAPI
        calls it before anything of a set is applied, so a bad file refuses the whole request."""
        return server_context(cert_file, key_file)

    def set_tls_identity(self, cert_file: str | None, key_file: str | None) -> None:
        """Load the server certificate and key (both None: none). Raises OSError/ssl.SSLError; then nothing
        changes."""
        if cert_file is None and key_file is None:
            self.server_ctx = None
        else:
            if not cert_file or not key_file:
                raise ValueError("TLS needs both a certificate file and a key file")
            self.server_ctx = server_context(cert_file, key_file)
        self.cert_file, self.key_file = cert_file, key_file

    def listen(self, scheme: str, port: int) -> None:
        """Listen for `scheme` on `port` (IPv4 and IPv6; 0 stops listening). Raises OSError (then the old
        listeners stay)."""
        if port == self.listen_ports[scheme] and (port == 0 or any(s == scheme for _, s in self.listeners.values())):
            return
        if scheme == "tls" and port and self.server_ctx is None:
            raise ValueError("ListenTLS needs CertificateFile and KeyFile")
        new = open_listeners(port, self.fwmark) if port else []
        for fd, (sock, s) in list(self.listeners.items()):
            if s == scheme:
                self._unregister(fd)
                sock.close()
                del self.listeners[fd]
        for s in new:
            self.listeners[s.fileno()] = (s, scheme)
            self.epoll.register(s.fileno(), EPOLLIN)
        self.listen_ports[scheme] = port
        self._update_active()

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark
        for sock, _ in self.listeners.values():
            set_mark(sock, mark)
        for conn in self.conns.values():
            try:
                set_mark(conn.sock, mark)
            except OSError:
                pass

    def target(self, scheme: str, host: str, port: int, server_name: str | None = None,
               ca_file: str | None = None, pin: bytes | None = None) -> StreamEndpoint:
        """The outbound endpoint for this configuration (the same object for the same configuration). For TLS
        the client context is made here, so a bad CA file is an error of the configuration request."""
        key = (scheme, host, port, server_name, ca_file, pin)
        ep = self.targets.get(key)
        if ep is None:
            ep = StreamEndpoint(scheme, host, port, True, server_name, ca_file, pin)
            if scheme == "tls":
                ep.context = client_context(ca_file, pin)
            self.targets[key] = ep
            self._update_active()
        return ep
    def forget_unused(self, in_use: set[int]) -> None:
        """Close and forget outbound targets whose id() is not in `in_use` (no peer refers to them)."""
        for key, ep in list(self.targets.items()):
            if id(ep) not in in_use:
                del self.targets[key]
                if ep.conn is not None:
                    self._close(ep.conn, None, self._clock())
                ep.retry_armed = False
        self._update_active()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn, None, self._clock(), reconnect=False)
        for fd, (sock, _) in list(self.listeners.items()):
            self._unregister(fd)
            sock.close()
        self.listeners.clear()
        self.targets.clear()
        self.listen_ports = {"tcp": 0, "tls": 0}

    # ---- epoll bookkeeping ----------------------------------------------------------------------------------

    def _unregister(self, fd: int) -> None:
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def _want(self, conn: Conn, events: int) -> None:
        if events != conn.events:
            if conn.events:
                self.epoll.modify(conn.fd, events)
            else:
                self.epoll.register(conn.fd, events)
            conn.events = events

    def _at(self, when: float, kind: str, obj: object) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, kind, obj))

    def next_deadline(self) -> float | None:
        if self.again:
            return 0.0
        return self.heap[0][0] if self.heap else None

    def _log(self, key: str, msg: str, *args) -> None:
        now = self._clock()
        if now - self._logged.get(key, -1e18) >= LOG_INTERVAL:
            self._logged[key] = now
            log.warning(msg, *args)

    # ---- connections ----------------------------------------------------------------------------------------

    def _accept(self, lsock: socket.socket, scheme: str, now: float) -> None:
        for sock, addr in accept_all(lsock):
            if sock is None:
                self.counters["stream_accept_errors"] += 1
                return
            # room for the newcomer: the oldest unauthenticated connection of its source (at its limit), else the
            # oldest of all (the budget full); a flood of half-open connections churns only its own slots
            for victim in self.budget.make_room(source_key(addr[0].split("%")[0].removeprefix("::ffff:"))):
                self.counters["stream_unauthenticated_evicted"] += 1
                self._close(victim, None, now)
            sock = prepare_accepted(sock, self.fwmark, scheme == "tls", self.server_ctx)
            if sock is None:
                self.counters["stream_accept_errors"] += 1
                continue
            self.counters["stream_accepted"] += 1
            ep = StreamEndpoint(scheme, addr[0].split("%")[0].removeprefix("::ffff:"), addr[1], False)
            conn = Conn(sock, ep, now, self.budget)
            ep.conn = conn
            self.conns[conn.fd] = conn
            self._at(conn.deadline, "deadline", conn)
            if conn.connected() == HANDSHAKE:
                self._want(conn, EPOLLIN)
                self._handshake(conn, now)
            else:
                self._up(conn, now)
        self._update_active()

    def _connect(self, ep: StreamEndpoint, now: float) -> Conn | None:
        ep.connects += 1
        sock, why = start_connect(ep.host, ep.port, self.fwmark)
        if sock is None:
            self._retry(failed(ep, why, now, self._rand), ep)
            return None
        conn = Conn(sock, ep, now)
        ep.conn = conn
        self.conns[conn.fd] = conn
        self._at(conn.deadline, "deadline", conn)
        self._want(conn, EPOLLOUT)
        self._update_active()
        return conn

    def _connected(self, conn: Conn, now: float) -> None:
        error = conn.connect_error() or (conn.start_tls() if conn.tls else None)
        if error is not None:
            self._close(conn, error, now)
        elif conn.connected() == HANDSHAKE:
            self._handshake(conn, now)
        else:
            self._up(conn, now)

    def _handshake(self, conn: Conn, now: float) -> None:
        wait, error = conn.handshake()
        if wait:
            self._want(conn, wait)
            return
        ep = conn.ep
        if error is None and not conn.inbound and ep.pin is not None:
            got = fingerprint(conn.sock)
            if got != ep.pin:
                self._log(f"pin {ep.label}", "stream %s: the server's certificate has the SHA-256 fingerprint %s",
                          ep.label, got.hex())
                error = PIN_MISMATCH
        if error is not None:
            self.counters["stream_tls_handshake_failed"] += 1
            self._close(conn, error, now)
            return
        conn.tls_done()
        self._up(conn, now)

    def _up(self, conn: Conn, now: float) -> None:
        """The connection went UP (its state machine has moved): count, log, start reading and writing."""
        if not conn.inbound:
            self.counters["stream_connected"] += 1
            self.connected.append(conn.ep)
            log.info("stream %s connected", conn.ep.label)
        self._want(conn, EPOLLIN | (EPOLLOUT if conn.wbuf else 0))
        if conn.tls:
            self.again.add(conn)    # records that came with the handshake may already wait inside the TLS object
        if conn.wbuf:
            self._flush(conn, now)

    def _retry(self, retry: Retry, ep: StreamEndpoint) -> None:
        """An outbound attempt failed or its connection dropped: log, count, arm the reconnection."""
        log.warning("stream %s: %s (%s %d; retrying)", ep.label, retry.reason,
                    "dropped, failure" if retry.was_up else "attempt", retry.failures)
        self.counters["stream_dropped" if retry.was_up else "stream_connect_failed"] += 1
        self._arm_retry(ep)

    def _arm_retry(self, ep: StreamEndpoint) -> None:
        if not ep.retry_armed:
            ep.retry_armed = True
            self._at(ep.retry_at, "retry", ep)

    def _close(self, conn: Conn, reason: str | None, now: float, reconnect: bool = True) -> None:
        if conn.state == CLOSED:
            return
        retry = conn.close(reason, now, self._rand, reconnect)
        self.conns.pop(conn.fd, None)
        self.again.discard(conn)
        self._unregister(conn.fd)
        try:
            conn.sock.close()
        except OSError:
            pass
        if conn.wbuf:
            self.counters["stream_unsent_bytes_dropped"] += len(conn.wbuf)
            conn.wbuf = bytearray()
        if conn.inbound:
            if conn.peer is not None and self.by_peer.get(conn.peer) is conn:
                del self.by_peer[conn.peer]
            if reason is not None and reason.startswith("TLS"):
                self._log("tls-in", "stream %s: %s", conn.ep.label, reason)
        elif retry is not None:
            self._retry(retry, conn.ep)
        self._update_active()
    # ---- events ---------------------------------------------------------------------------------------------

    def event(self, fd: int, ev: int, now: float) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            lst = self.listeners.get(fd)
            if lst is not None:
                self._accept(lst[0], lst[1], now)
            return
        state = conn.state
        if state == UP:
            if ev & (EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                self._read(conn, now)
            if ev & EPOLLOUT and conn.state == UP:
                self._flush(conn, now)
        elif state == CONNECTING:
            self._connected(conn, now)
        elif state == HANDSHAKE:
            self._handshake(conn, now)

    def _read(self, conn: Conn, now: float) -> None:
        frames: list = []
        eof, bad, more = conn.read(frames)
        if more:
            self.again.add(conn)                  # decrypted bytes may wait inside the TLS object
        else:
            self.again.discard(conn)
        if frames:
            if conn.authenticated:
                self.inbox += frames
                if not conn.inbound and conn.ep.failures:
                    conn.ep.failures = 0          # the far end speaks our protocol: back off from scratch
            else:
                self.unauth_inbox.append((conn, frames))
        if bad is not None:
            self.counters[bad] += 1
            self.counters["stream_closed_bad_frame"] += 1
            self._close(conn, f"bad frame ({bad})", now)
        elif eof is not None:
            self._close(conn, eof, now)

    def _flush(self, conn: Conn, now: float) -> None:
        error = conn.write()
        if error is not None:
            self._close(conn, error, now)
            return
        self._want(conn, EPOLLIN | EPOLLOUT if conn.wbuf else EPOLLIN)

    # ---- the data path --------------------------------------------------------------------------------------

    def send(self, out: list) -> list:
        """Queue the items of `out` whose endpoint is a stream; return the others (UDP) in order."""
        udp = []
        touched = []
        drops = self.counters
        now = None
        for item in out:
            ep = item[1]
            if isinstance(ep, tuple):
                udp.append(item)
                continue
            conn = ep.conn
            if conn is None:
                if not ep.outbound:
                    drops["stream_send_closed"] += 1
                    continue
                now = now or self._clock()
                ep.last_used = now
                if now < ep.retry_at:
                    drops["stream_send_not_connected"] += 1
                    self._arm_retry(ep)
                    continue
                conn = self._connect(ep, now)
                if conn is None:
                    drops["stream_send_not_connected"] += 1
                    continue
            elif not conn.inbound:
                now = now or self._clock()
                ep.last_used = now
            msg = item[0]
            wbuf = conn.wbuf
            if len(wbuf) + 2 + len(msg) > STREAM_SEND_BUFFER:
                drops["stream_send_buffer_full"] += 1
                continue
            if len(msg) > STREAM_MAX_FRAME:
                drops["stream_send_oversized"] += 1
                continue
            if not wbuf:
                touched.append(conn)
            wbuf += _H.pack(len(msg))
            wbuf += msg
        for conn in touched:
            if conn.state == UP:
                self._flush(conn, now or self._clock())
        return udp

    # ---- what the event loop takes after each wakeup (the loop alone calls the core) -------------------------

    def take_received(self, now: float) -> tuple[list, list]:
        """The messages received since the last call: (those of authenticated and outbound connections, for the
        core as one batch; [(connection, frames)] of each unauthenticated inbound connection). The core sees at
        most STREAM_UNAUTHENTICATED_FRAMES frames of a connection before it proves who it is, and no more is
        read (stream_conn.Conn.read_unauthenticated): the rest of a burst (a client that reconnected sends its
        queue at once) waits in the kernel until owner_found()."""
        if self.again:
            for conn in list(self.again):
                if conn.state == UP:
                    self._read(conn, now)
        batch = self.inbox
        self.inbox = []
        pending = []
        if self.unauth_inbox:
            items = self.unauth_inbox
            self.unauth_inbox = []
            for conn, frames in items:
                if conn.authenticated:          # by an earlier read of this same wakeup
                    batch.extend(frames)
                else:
                    pending.append((conn, frames))      # counted against its budget when read
        return batch, pending

    def owner_found(self, conn: Conn, peer, now: float) -> list:
        """After the core took an unauthenticated connection's frames: `peer` is the peer whose endpoint is now
        this connection (the core sets it only for an authenticated message), or None. With an owner, what the
        connection sent beyond its frame budget is read on the next pass (it waits in the kernel, in the TLS
        object or unparsed in the read buffer, so it is read without a readiness event); without one it is
        closed once its frame budget is spent. Returns the frames for the core now (none: the next pass reads
        them as any authenticated connection's)."""
        if peer is not None:
            if conn.state != CLOSED:
                self._authenticate(conn, peer, now)
                self.again.add(conn)
            return []
        if conn.out_of_frames and conn.state != CLOSED:
            self.counters["stream_unauthenticated_frames"] += 1
            self._close(conn, None, now)
        return []

    def take_connected(self) -> list:
        """Outbound endpoints whose connection came up since the last call (the loop greets their peers with a
        keepalive, which tells the listener who the connection is)."""
        eps, self.connected = self.connected, []
        return eps

    def tick_due(self, now: float) -> None:
        if self.heap and self.heap[0][0] <= now:
            self.tick(now)

    def _authenticate(self, conn: Conn, peer, now: float) -> None:
        conn.authenticate(peer)
        self.counters["stream_authenticated"] += 1
        old = self.by_peer.get(peer)
        self.by_peer[peer] = conn
        if old is not None and old is not conn:
            self.counters["stream_replaced"] += 1
            self._close(old, None, now)

    def tick(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, _, kind, obj = heapq.heappop(heap)
            if kind == "deadline":
                decision = obj.on_timer(now)
                if decision is not None:
                    if decision.counter:
                        self.counters[decision.counter] += 1
                    self._close(obj, decision.reason, now)
                elif obj.deadline is not None and obj.state != CLOSED:
                    self._at(obj.deadline, "deadline", obj)    # moved later (a first frame arrived)
            else:
                ep = obj
                ep.retry_armed = False
                if ep.conn is not None or ep not in self.targets.values():
                    continue
                due = retry_due(ep, now)
                if due == WAIT:
                    self._arm_retry(ep)
                elif due == CONNECT:
                    self.counters["stream_reconnects"] += 1
                    self._connect(ep, now)

    # ---- introspection --------------------------------------------------------------------------------------

    def stats(self) -> list[str]:
        lines = [f"{k}={v}" for k, v in sorted(self.counters.items())]
        lines += [f"stream_connections={len(self.conns)}", f"stream_unauthenticated={self.unauthenticated}"]
        return lines
