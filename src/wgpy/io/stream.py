"""TCP and TLS transports: WireGuard messages over a stream, for networks that block or throttle UDP.

The messages are exactly those of the UDP transport (same handshake, keys, counters and replay protection);
only the framing changes. Each message is one frame:

    +--------+--------+----------------------------------+
    | length (16 bit, big-endian) | WireGuard message (length bytes) |
    +--------+--------+----------------------------------+

A frame shorter than STREAM_MIN_FRAME (a keepalive, 32 bytes) or longer than STREAM_MAX_FRAME, a message type
other than 1-4 with three zero bytes, or a handshake message of the wrong size closes that connection (counted);
nothing else is affected. TLS (1.3 only, the standard library's ssl module) wraps the same stream.

Endpoints. The core keeps endpoints opaque (UDP endpoints are address tuples); a stream endpoint is a
StreamEndpoint, hashable by identity:
    outbound  one per configured target (tcp://ip:port or tls://ip:port with its TLS settings), interned, so
              the same configuration always gives the same object; it owns at most one connection at a time and
              reconnects with backoff and jitter. Messages received on it come from the target itself, so a
              peer whose endpoint is the target keeps it across reconnections.
    inbound   one per accepted connection. The listening side does not know which peer a connection belongs to
              until a message from it authenticates (the core then sets that peer's endpoint to it: the ordinary
              roaming rule, so a peer moves between UDP and TCP like between two UDP addresses). Until then the
              connection is "unauthenticated": at most STREAM_MAX_UNAUTHENTICATED at once, for at most
              STREAM_UNAUTHENTICATED_TIMEOUT seconds and STREAM_UNAUTHENTICATED_FRAMES frames. A peer has one
              inbound connection: a newer authenticated one replaces the older.
Sending: at most STREAM_SEND_BUFFER bytes wait in user space per connection (and TCP_NOTSENT_LOWAT bounds the
kernel's unsent queue); beyond that messages are dropped and counted, never queued without limit: a tunnel
over TCP must let the inner TCP see loss rather than a growing delay. TCP_NODELAY: each batch is written at once.

Everything is non-blocking and driven by the daemon's epoll loop: `event()` for readiness, `send()` from the
daemon's flush, `service()` after each wakeup (hands received messages to the core, authenticates inbound
connections, greets peers over fresh outbound connections), `tick()`/`next_deadline()` for timeouts and
reconnections. No threads.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import logging
import os
import select
import socket
import ssl
import time
from collections import Counter

from ..config import parse_pin  # noqa: F401  (the one TLSPin / wgpy_tls_pin parser; uapi/transport.py uses it)
from ..protocol.transport import receiver_index
from ..streams.endpoint import (  # noqa: F401  (re-exported: the record, URLs and states live in streams/)
    CLOSED, CONNECTING, HANDSHAKE, SCHEMES, UP, StreamEndpoint, format_url, parse_url,
)
from ..streams.framing import FRAME_LENGTH as _H, FrameError, encode_frame, parse_frames  # noqa: F401
from ..constants import (
    STREAM_BACKOFF_MAX, STREAM_BACKOFF_MIN, STREAM_CONNECT_TIMEOUT, STREAM_KEEPCNT, STREAM_KEEPIDLE,
    STREAM_KEEPINTVL, STREAM_MAX_FRAME, STREAM_MAX_UNAUTHENTICATED, STREAM_NOTSENT_LOWAT,
    STREAM_SEND_BUFFER, STREAM_UNAUTHENTICATED_FRAMES, STREAM_UNAUTHENTICATED_TIMEOUT, STREAM_USER_TIMEOUT,
)

log = logging.getLogger("wgpy")

SO_MARK = getattr(socket, "SO_MARK", 36)
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
READ_SIZE = 256 * 1024
READ_BUDGET = 1024 * 1024           # bytes read from one connection per wakeup (fairness between connections)
TLS_WRITE_CHUNK = 64 * 1024
RETRY_WHILE_USED = 120.0            # an outbound target reconnects while it was used within this many seconds
LOG_INTERVAL = 10.0                 # inbound failures (scanners...) are logged at most this often per reason

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Conn:
    __slots__ = ("sock", "fd", "ep", "tls", "inbound", "state", "rbuf", "wbuf", "deadline", "authenticated",
                 "peer", "frames", "events", "opened")

    def __init__(self, sock: socket.socket, ep: StreamEndpoint, inbound: bool, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.ep = ep
        self.tls = ep.scheme == "tls"
        self.inbound = inbound
        self.state = CONNECTING
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.deadline: float | None = None
        self.authenticated = not inbound
        self.peer = None
        self.frames = 0
        self.events = 0
        self.opened = now


def _tune(sock: socket.socket, fwmark: int) -> None:
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


def client_context(ca_file: str | None, pin: bytes | None) -> ssl.SSLContext:
    """TLS 1.3 client context: verify against `ca_file` (or the system's CAs), or, with a pin, accept exactly
    the certificate with that SHA-256 fingerprint (checked after the handshake). Raises OSError/ssl.SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if pin is not None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs()
    return ctx


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


# Failures are remembered per endpoint in words (StreamEndpoint.last_error, shown by `wgpy show` through the UAPI
# key wgpy_last_error) and logged with the same words: the socket errors a user meets most by a short name, the
# rest by the C library's text; TLS failures start with "TLS: ".
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset", errno.EPIPE: "connection reset",
    errno.ECONNABORTED: "connection aborted", errno.ETIMEDOUT: "connection timed out",
    errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable",
}
PIN_MISMATCH = "TLS: certificate does not match the pinned fingerprint"


def _os_reason(code: int | None, e: BaseException | None = None) -> str:
    words = _ERRNO_WORDS.get(code or 0)
    if words is None:
        words = os.strerror(code) if code else (getattr(e, "strerror", None) or str(e))
        words = words[:1].lower() + words[1:]
    return words


def _reason(e: BaseException) -> str:
    """A connection's exception in words: 'TLS: ...' for TLS errors, else the socket error ('connection reset')."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLEOFError):
        return "TLS: closed by the other side"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason.lower().replace('_', ' ') if e.reason else e}"
    if isinstance(e, OSError):
        return _os_reason(e.errno, e)
    return str(e)


def authenticated_peer(dev, ep: object, frames: list, out_net: list, start: int):
    """The peer that `frames` (received on `ep`) proved to be, if any: a transport message whose keypair's peer
    now has `ep` as its endpoint, or a handshake response we sent back to `ep` for such a peer. Only
    authenticated messages make the core set peer.endpoint = ep, and `ep` is unique to its connection."""
    kps = dev.keypairs_by_index
    for data, _ in frames:
        if data[0] == 4:
            kp = kps.get(receiver_index(data))
            if kp is not None and kp.peer.endpoint is ep:
                return kp.peer
    for data, dst in out_net[start:]:
        if dst is ep and data[0] == 2:
            kp = kps.get(receiver_index(data))
            if kp is not None and kp.peer.endpoint is ep:
                return kp.peer
    return None


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
        self.unauthenticated = 0
        self.again: set[Conn] = set()
        self.heap: list = []
        self._seq = 0
        self.server_ctx: ssl.SSLContext | None = None
        self.cert_file: str | None = None
        self.key_file: str | None = None
        self.fwmark = 0
        self._logged: dict[str, float] = {}
        self.active = False        # streams in use: the daemon's loop and flush check this one attribute

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
        new = []
        try:
            if port:
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
                    if self.fwmark:
                        s.setsockopt(socket.SOL_SOCKET, SO_MARK, self.fwmark)
                    s.listen(128)
        except BaseException:
            for s in new:
                s.close()
            raise
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
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        for conn in self.conns.values():
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
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
        for _ in range(64):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["stream_accept_errors"] += 1
                return
            if self.unauthenticated >= STREAM_MAX_UNAUTHENTICATED:
                self.counters["stream_unauthenticated_full"] += 1
                sock.close()
                continue
            try:
                _tune(sock, self.fwmark)
                if scheme == "tls":
                    sock = self.server_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError, AttributeError):
                self.counters["stream_accept_errors"] += 1
                sock.close()
                continue
            self.counters["stream_accepted"] += 1
            ep = StreamEndpoint(scheme, addr[0].split("%")[0].removeprefix("::ffff:"), addr[1], False)
            conn = Conn(sock, ep, True, now)
            ep.conn = conn
            self.conns[conn.fd] = conn
            self.unauthenticated += 1
            conn.deadline = now + STREAM_UNAUTHENTICATED_TIMEOUT
            self._at(conn.deadline, "deadline", conn)
            if scheme == "tls":
                conn.state = HANDSHAKE
                self._want(conn, EPOLLIN)
                self._handshake(conn, now)
            else:
                self._up(conn, now)
        self._update_active()

    def _connect(self, ep: StreamEndpoint, now: float) -> Conn | None:
        ep.connects += 1
        family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            _tune(sock, self.fwmark)
            rc = sock.connect_ex((ep.host, ep.port))
        except OSError as e:
            sock.close()
            self._failed(ep, _os_reason(e.errno, e), now)
            return None
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(ep, _os_reason(rc), now)
            return None
        conn = Conn(sock, ep, False, now)
        ep.conn = conn
        self.conns[conn.fd] = conn
        conn.deadline = now + STREAM_CONNECT_TIMEOUT
        self._at(conn.deadline, "deadline", conn)
        self._want(conn, EPOLLOUT)
        self._update_active()
        return conn

    def _connected(self, conn: Conn, now: float) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._close(conn, _os_reason(err), now)
            return
        if not conn.tls:
            self._up(conn, now)
            return
        ep = conn.ep
        name = ep.server_name or ep.host
        try:
            conn.sock = ep.context.wrap_socket(conn.sock, server_hostname=name, do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            reason = _reason(e)
            self._close(conn, reason if reason.startswith("TLS") else f"TLS: {reason}", now)
            return
        conn.state = HANDSHAKE
        self._handshake(conn, now)

    def _handshake(self, conn: Conn, now: float) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, EPOLLIN)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, EPOLLOUT)
            return
        except (ssl.SSLError, OSError, ValueError) as e:
            self.counters["stream_tls_handshake_failed"] += 1
            reason = _reason(e)
            self._close(conn, reason if reason.startswith("TLS") else f"TLS: {reason}", now)
            return
        ep = conn.ep
        if not conn.inbound and ep.pin is not None:
            der = conn.sock.getpeercert(binary_form=True) or b""
            if hashlib.sha256(der).digest() != ep.pin:
                self.counters["stream_tls_handshake_failed"] += 1
                self._log(f"pin {ep.label}", "stream %s: the server's certificate has the SHA-256 fingerprint %s",
                          ep.label, hashlib.sha256(der).hexdigest())
                self._close(conn, PIN_MISMATCH, now)
                return
        self._up(conn, now)

    def _up(self, conn: Conn, now: float) -> None:
        conn.state = UP
        if not conn.inbound:
            conn.deadline = None
            self.counters["stream_connected"] += 1
            self.connected.append(conn.ep)
            conn.ep.last_error = None
            log.info("stream %s connected", conn.ep.label)
        self._want(conn, EPOLLIN | (EPOLLOUT if conn.wbuf else 0))
        if conn.tls:
            self.again.add(conn)    # records that came with the handshake may already wait inside the TLS object
        if conn.wbuf:
            self._flush(conn, now)

    def _failed(self, ep: StreamEndpoint, reason: str, now: float, was_up: bool = False) -> None:
        """An outbound attempt failed or its connection dropped: log, back off, and arm a reconnection."""
        ep.failures += 1
        log.warning("stream %s: %s (%s %d; retrying)", ep.label, reason,
                    "dropped, failure" if was_up else "attempt", ep.failures)
        ep.last_error = reason
        self.counters["stream_connect_failed" if not was_up else "stream_dropped"] += 1
        d = min(STREAM_BACKOFF_MIN * 2 ** (ep.failures - 1), STREAM_BACKOFF_MAX)
        jitter = int.from_bytes(self._rand(2), "little") / 65536.0
        ep.retry_at = now + d / 2 + jitter * d / 2
        if was_up:
            ep.last_used = now               # it was in use: come back on our own, the listener cannot call us
        self._arm_retry(ep)

    def _arm_retry(self, ep: StreamEndpoint) -> None:
        if not ep.retry_armed:
            ep.retry_armed = True
            self._at(ep.retry_at, "retry", ep)

    def _close(self, conn: Conn, reason: str | None, now: float, reconnect: bool = True) -> None:
        if conn.state == CLOSED:
            return
        was_up = conn.state == UP
        conn.state = CLOSED
        self.conns.pop(conn.fd, None)
        self.again.discard(conn)
        self._unregister(conn.fd)
        try:
            conn.sock.close()
        except OSError:
            pass
        ep = conn.ep
        if ep.conn is conn:
            ep.conn = None
        if conn.wbuf:
            self.counters["stream_unsent_bytes_dropped"] += len(conn.wbuf)
            conn.wbuf = bytearray()
        if conn.inbound:
            if reason is not None:
                ep.last_error = reason           # the endpoint is this connection's alone: no clearing needed
            if not conn.authenticated:
                self.unauthenticated -= 1
            if conn.peer is not None and self.by_peer.get(conn.peer) is conn:
                del self.by_peer[conn.peer]
            if reason is not None and reason.startswith("TLS"):
                self._log("tls-in", "stream %s: %s", ep.label, reason)
        elif reason is not None and reconnect:
            self._failed(ep, reason, now, was_up)
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
        sock = conn.sock
        rbuf = conn.rbuf
        got = 0
        eof: str | None = None
        try:
            while got < READ_BUDGET:
                data = sock.recv(READ_SIZE)
                if not data:
                    eof = "closed by the other side"
                    break
                rbuf += data
                got += len(data)
            else:
                if conn.tls:
                    self.again.add(conn)          # decrypted bytes may wait inside the TLS object
        except _WOULD_BLOCK:
            self.again.discard(conn)
        except (ssl.SSLError, OSError) as e:
            eof = _reason(e)
        frames: list = []
        bad = None
        try:
            used = parse_frames(rbuf, conn.ep, frames)
            if used:
                del rbuf[:used]
        except FrameError as e:
            bad = e.reason
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
        wbuf = conn.wbuf
        sock = conn.sock
        try:
            while wbuf:
                if conn.tls:
                    # an SSL write that would block must be retried with the same bytes: the chunk starts at the
                    # same place and only grows, as OpenSSL allows
                    n = sock.send(wbuf[:TLS_WRITE_CHUNK])
                else:
                    n = sock.send(wbuf)
                del wbuf[:n]
        except _WOULD_BLOCK:
            pass
        except (ssl.SSLError, OSError) as e:
            self._close(conn, _reason(e), now)
            return
        self._want(conn, EPOLLIN | EPOLLOUT if wbuf else EPOLLIN)

    # ---- the data path --------------------------------------------------------------------------------------

    def send(self, out: list) -> list:
        """Queue the items of `out` whose endpoint is a stream; return the others (UDP) in order."""
        udp = []
        touched = []
        drops = self.counters
        now = None
        for item in out:
            ep = item[1]
            if type(ep) is tuple:
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

    def service(self, dev, now: float, out_net: list, out_tun: list) -> None:
        """After a wakeup: hand received messages to the core, authenticate inbound connections, greet peers over
        outbound connections that just came up, run expired timers."""
        if self.again:
            for conn in list(self.again):
                if conn.state == UP:
                    self._read(conn, now)
        if self.inbox:
            batch = self.inbox
            self.inbox = []
            dev.receive_datagrams(batch, now, out_net, out_tun)
        if self.unauth_inbox:
            items = self.unauth_inbox
            self.unauth_inbox = []
            for conn, frames in items:
                if conn.authenticated:          # by an earlier read of this same wakeup
                    dev.receive_datagrams(frames, now, out_net, out_tun)
                    continue
                # the core sees at most STREAM_UNAUTHENTICATED_FRAMES frames of a connection before it proves
                # who it is; the rest of a burst (a client that reconnected sends its queue at once) follows
                # only once it has
                room = max(STREAM_UNAUTHENTICATED_FRAMES - conn.frames, 0)
                head, tail = frames[:room], frames[room:]
                start = len(out_net)
                dev.receive_datagrams(head, now, out_net, out_tun)
                conn.frames += len(head)
                peer = authenticated_peer(dev, conn.ep, head, out_net, start)
                if peer is not None:
                    if conn.state != CLOSED:
                        self._authenticate(conn, peer, now)
                    if tail:
                        dev.receive_datagrams(tail, now, out_net, out_tun)
                elif conn.frames >= STREAM_UNAUTHENTICATED_FRAMES and conn.state != CLOSED:
                    self.counters["stream_unauthenticated_frames"] += 1
                    self._close(conn, None, now)
        if self.connected:
            eps = self.connected
            self.connected = []
            for ep in eps:
                for peer in list(dev.peers.values()):
                    if peer.endpoint is ep and peer.current is not None:
                        dev.send_keepalive(peer, now, out_net)   # tells the listener who this connection is
        if self.heap and self.heap[0][0] <= now:
            self.tick(now)

    def _authenticate(self, conn: Conn, peer, now: float) -> None:
        conn.authenticated = True
        conn.peer = peer
        conn.deadline = None
        self.unauthenticated -= 1
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
                conn = obj
                if conn.state == CLOSED or conn.deadline is None or conn.deadline > now:
                    continue
                if conn.inbound:
                    if not conn.authenticated:
                        self.counters["stream_unauthenticated_timeout"] += 1
                        self._close(conn, "TLS: handshake timed out" if conn.state == HANDSHAKE else None, now)
                else:
                    self._close(conn, "TLS: handshake timed out" if conn.state == HANDSHAKE else "connect timed out",
                                now)
            else:
                ep = obj
                ep.retry_armed = False
                if ep.conn is not None or ep not in self.targets.values():
                    continue
                if now < ep.retry_at:
                    self._arm_retry(ep)
                elif now - ep.last_used < RETRY_WHILE_USED:
                    self.counters["stream_reconnects"] += 1
                    self._connect(ep, now)

    # ---- introspection --------------------------------------------------------------------------------------

    def stats(self) -> list[str]:
        lines = [f"{k}={v}" for k, v in sorted(self.counters.items())]
        lines += [f"stream_connections={len(self.conns)}", f"stream_unauthenticated={self.unauthenticated}"]
        return lines
