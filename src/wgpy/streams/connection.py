"""The stream transports' connection state machine (wgpy extension, docs/transports.md), sans-IO.

One Connection per TCP connection, inbound (accepted) or outbound (to a configured target):

    CONNECTING --connected()--> HANDSHAKE --tls_done()--> UP --close()--> CLOSED
         |           (TLS only)     |                      ^
         +--------------------------+----------------------+   close(): an error, a timeout, a bad frame ...

`connected()` is the TCP connection being there (accepted, or our connect finished); TCP goes straight to UP.
A connection has one deadline: the connect timeout (outbound: TCP connect and TLS handshake together), or the
unauthenticated timeout (inbound, until a message from it authenticates). `on_timer(now)` says whether it ran out.

Inbound connections that have not authenticated yet count against a Budget (at most STREAM_MAX_UNAUTHENTICATED at
once and STREAM_UNAUTHENTICATED_PER_SOURCE per source; a newcomer evicts the oldest, of its own source first),
must bring a first frame within STREAM_FIRST_MESSAGE_TIMEOUT and authenticate within
STREAM_UNAUTHENTICATED_TIMEOUT seconds, with at most
STREAM_UNAUTHENTICATED_FRAMES frames (`take_frames`, `frames_left`: no byte beyond them is even read); the core
(Device.peers_at) then says which peer the frames handed to it proved a connection to be.

An outbound endpoint (streams/endpoint.py StreamEndpoint) keeps its reconnection state across its connections:
each failure (or drop after being up) backs off min(STREAM_BACKOFF_MIN * 2**(failures - 1), STREAM_BACKOFF_MAX),
randomised between half and all of it from the injected random source (`rand(n) -> n bytes`), and remembers the
failure in words (`last_error`, cleared when a connection comes up); `retry_due` says what its retry timer does.

Events in, decisions out: a `Close` (reason in words, counter) or a `Retry` (when, why, how often so far). The
socket glue (io/stream.py) does the rest: sockets, TLS, epoll, logging. Nothing here reads a clock or does I/O,
and nothing here runs per message of an authenticated connection.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, NamedTuple

from ..constants import (
    STREAM_BACKOFF_MAX, STREAM_BACKOFF_MIN, STREAM_CONNECT_TIMEOUT, STREAM_FIRST_MESSAGE_TIMEOUT,
    STREAM_MAX_UNAUTHENTICATED, STREAM_UNAUTHENTICATED_FRAMES, STREAM_UNAUTHENTICATED_PER_SOURCE,
    STREAM_UNAUTHENTICATED_TIMEOUT,
)
from .endpoint import CLOSED, CONNECTING, HANDSHAKE, UP, StreamEndpoint

__all__ = ["Budget", "Close", "Connection", "Retry", "RETRY_WHILE_USED", "CONNECT", "WAIT", "IDLE", "backoff",
           "failed", "retry_due", "TLS_TIMEOUT", "CONNECT_TIMEOUT"]

RETRY_WHILE_USED = 120.0            # an outbound target reconnects while it was used within this many seconds
CONNECT, WAIT, IDLE = "connect", "wait", "idle"       # what an outbound endpoint's retry timer does
TLS_TIMEOUT = "TLS: handshake timed out"
CONNECT_TIMEOUT = "connect timed out"

Rand = Callable[[int], bytes]


class Close(NamedTuple):
    """Close the connection. `reason` in words (None: a quiet close, no error recorded and no reconnection);
    `counter`: the counter the close adds to, if any."""
    reason: str | None
    counter: str | None = None


class Retry(NamedTuple):
    """An outbound endpoint failed: arm its reconnection at `at`."""
    at: float
    reason: str
    failures: int
    was_up: bool            # the connection had been up (a drop), not a failed attempt


class Budget:
    """The inbound connections that have not authenticated yet, oldest first: at most STREAM_MAX_UNAUTHENTICATED
    at once and STREAM_UNAUTHENTICATED_PER_SOURCE per source (source_key). make_room() names who must go for a
    newcomer: the oldest of the newcomer's own source when that source is at its limit, else the oldest of all
    when the budget is full; the newcomer is never refused."""

    __slots__ = ("waiting", "per_source")

    def __init__(self) -> None:
        self.waiting: dict[Connection, object] = {}      # insertion order = acceptance order
        self.per_source: dict[object, int] = {}

    @property
    def count(self) -> int:
        return len(self.waiting)

    def make_room(self, source: object) -> "list[Connection]":
        if self.per_source.get(source, 0) >= STREAM_UNAUTHENTICATED_PER_SOURCE:
            return [next(c for c, s in self.waiting.items() if s == source)]
        if len(self.waiting) >= STREAM_MAX_UNAUTHENTICATED:
            return [next(iter(self.waiting))]
        return []

    def add(self, conn: "Connection", source: object) -> None:
        self.waiting[conn] = source
        self.per_source[source] = self.per_source.get(source, 0) + 1

    def remove(self, conn: "Connection") -> None:
        if conn not in self.waiting:
            return
        source = self.waiting.pop(conn)
        n = self.per_source[source] - 1
        if n:
            self.per_source[source] = n
        else:
            del self.per_source[source]


def source_key(host: str) -> object:
    """Whose connection this is, for the per-source limit: an IPv4 address, or the /64 of an IPv6 address (an
    IPv6 host usually has a whole /64 to pick source addresses from)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    return addr.packed[:8] if addr.version == 6 else addr.packed


def backoff(failures: int, rand: Rand) -> float:
    """The wait before the next attempt after `failures` (>= 1) failures in a row: between half and all of
    min(STREAM_BACKOFF_MIN * 2**(failures - 1), STREAM_BACKOFF_MAX)."""
    d = min(STREAM_BACKOFF_MIN * 2 ** (failures - 1), STREAM_BACKOFF_MAX)
    jitter = int.from_bytes(rand(2), "little") / 65536.0
    return d / 2 + jitter * d / 2


def failed(ep: StreamEndpoint, reason: str, now: float, rand: Rand, was_up: bool = False) -> Retry:
    """An outbound attempt on `ep` failed (or its connection dropped after being up): count it, remember why,
    back off."""
    ep.failures += 1
    ep.last_error = reason
    ep.retry_at = now + backoff(ep.failures, rand)
    if was_up:
        ep.last_used = now               # it was in use: come back on our own, the listener cannot call us
    return Retry(ep.retry_at, reason, ep.failures, was_up)


def retry_due(ep: StreamEndpoint, now: float) -> str:
    """An outbound endpoint's retry timer fired (it has no connection): WAIT (not yet: arm it again), CONNECT
    (reconnect: it was used within RETRY_WHILE_USED), or IDLE (unused: the next message connects)."""
    if now < ep.retry_at:
        return WAIT
    if now - ep.last_used < RETRY_WHILE_USED:
        return CONNECT
    return IDLE


class Connection:
    """One stream connection's state (see the module docstring). `budget`: the Budget an inbound connection
    counts against until it authenticates; None makes an outbound connection."""

    __slots__ = ("ep", "tls", "inbound", "state", "deadline", "authenticated", "peer", "frames", "opened",
                 "budget")

    def __init__(self, ep: StreamEndpoint, now: float, budget: Budget | None = None) -> None:
        self.ep = ep
        self.tls = ep.scheme == "tls"
        self.inbound = budget is not None
        self.state = CONNECTING
        self.authenticated = not self.inbound
        self.peer = None
        self.frames = 0                 # frames handed to the core before authenticating
        self.opened = now
        self.budget = budget
        if budget is not None:
            budget.add(self, source_key(ep.host))
            self.deadline: float | None = now + STREAM_FIRST_MESSAGE_TIMEOUT
        else:
            self.deadline = now + STREAM_CONNECT_TIMEOUT

    # ---- events ---------------------------------------------------------------------------------------------

    def connected(self) -> str:
        """The TCP connection is there. -> the new state: HANDSHAKE (TLS follows) or UP."""
        if self.tls:
            self.state = HANDSHAKE
            return HANDSHAKE
        self._up()
        return UP

    def tls_done(self) -> None:
        """The TLS handshake completed (and the certificate was accepted): UP."""
        self._up()

    def _up(self) -> None:
        self.state = UP
        if not self.inbound:
            self.deadline = None
            self.ep.last_error = None           # the last failure is history once a connection comes up

    def take_frames(self, n: int) -> int:
        """`n` frames arrived on an unauthenticated connection: how many of them the core may see now (at most
        STREAM_UNAUTHENTICATED_FRAMES in all before the connection authenticates)."""
        take = min(n, max(STREAM_UNAUTHENTICATED_FRAMES - self.frames, 0))
        if take and not self.frames and self.deadline is not None:
            self.deadline = self.opened + STREAM_UNAUTHENTICATED_TIMEOUT   # a first message: time to prove it
        self.frames += take
        return take

    @property
    def frames_left(self) -> int:
        """How many more frames of an unauthenticated connection the core may see (and the socket glue may read
        and parse: io/stream_conn.py reads no byte beyond them)."""
        return max(STREAM_UNAUTHENTICATED_FRAMES - self.frames, 0)

    @property
    def out_of_frames(self) -> bool:
        """The core has seen the most frames an unauthenticated connection may send: close it."""
        return self.frames >= STREAM_UNAUTHENTICATED_FRAMES

    def authenticate(self, peer: object) -> None:
        """A message from this inbound connection authenticated as `peer`: no more deadline or frame limit."""
        self.authenticated = True
        self.peer = peer
        self.deadline = None
        if self.budget is not None:
            self.budget.remove(self)
            self.budget = None

    def on_timer(self, now: float) -> Close | None:
        """The timer armed at `deadline` fired: a Close if the connection ran out of time, else None (the
        deadline moved or went away)."""
        if self.state == CLOSED or self.deadline is None or self.deadline > now:
            return None
        if self.inbound:
            if self.authenticated:
                return None
            return Close(TLS_TIMEOUT if self.state == HANDSHAKE else None, "stream_unauthenticated_timeout")
        return Close(TLS_TIMEOUT if self.state == HANDSHAKE else CONNECT_TIMEOUT)

    def close(self, reason: str | None, now: float, rand: Rand, reconnect: bool = True) -> Retry | None:
        """The connection is closed (for `reason`, None: quietly). -> a Retry for an outbound endpoint that should
        reconnect (a reason, and `reconnect`), else None. The caller checked the state is not CLOSED yet."""
        was_up = self.state == UP
        self.state = CLOSED
        ep = self.ep
        if ep.conn is self:
            ep.conn = None
        if self.inbound:
            if reason is not None:
                ep.last_error = reason           # the endpoint is this connection's alone: no clearing needed
            if self.budget is not None:
                self.budget.remove(self)
                self.budget = None
            return None
        if reason is not None and reconnect:
            return failed(ep, reason, now, rand, was_up)
        return None
