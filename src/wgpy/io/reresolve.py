"""Host-name endpoints, re-resolved while the interface runs (what WireGuard's reresolve-dns script does, built in).

`wgpy up` resolves a peer's `Endpoint = name:port` once (quick/resolve.py) and the core only ever sees the
address. The runtime keeps the name (EndpointNames, one per interface) and looks it up again, in a worker thread
so the event loop never waits for a resolver, when

    failing    the peer has had at least FAILING_INITIATIONS handshake initiations go unanswered since its last
               handshake (the core counts them: Peer.unanswered_initiations); at most every FAILING_RETRY s
    stale      its latest handshake is older than STALE_AFTER (135 s, the script's test) or there has been none;
               at most every STALE_RETRY s (the script's timer runs every 30 s)
    periodic   every PERIOD s whatever the handshakes say

and moves the peer to the new address (a UAPI set of its endpoint, the way every change reaches the core) when
the name no longer resolves to the address the peer has: a name with several addresses keeps the one in use
while it is still among them; otherwise IPv4 is preferred, as at `up`. A failed lookup changes nothing.

Only an endpoint that is still the one resolved from the name is ever replaced: once the peer has roamed (the
core took a new address from an authenticated packet) or someone set another endpoint (`wg set`, `wgpy
reload`), the name is left alone until the peer is back at an address the name gives (it is still looked up every
PERIOD, to know); while the peer is at the name's address, a get reports `wgpy_endpoint_name=host:port` (and
SaveConfig writes the name back).

The bound: with traffic to the peer (or PersistentKeepalive), the tunnel follows a name that moved in about
KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (the new handshake) + 2 * REKEY_TIMEOUT (two unanswered initiations) +
FAILING_RETRY + the resolver's time, 40 s on a working resolver; an idle peer within STALE_RETRY of its next
packet, and in any case within PERIOD.

Bounded: at most WORKERS lookups run at once (daemon threads, one per lookup), one per name at a time; a lookup
that has not answered after LOOKUP_TIMEOUT is given up (its thread finishes on its own, its answer ignored) and
tried again later, but no more than WORKERS threads are ever left waiting.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..constants import REKEY_AFTER_TIME, REKEY_TIMEOUT
from .udp import format_endpoint, make_endpoint

log = logging.getLogger("wgpy")

FAILING_INITIATIONS = 2
FAILING_RETRY = 10.0
STALE_AFTER = REKEY_AFTER_TIME + 3 * REKEY_TIMEOUT      # 135 s, as the reresolve-dns script
STALE_RETRY = 30.0
PERIOD = 300.0
LOOKUP_TIMEOUT = 30.0
WORKERS = 2


def lookup(host: str, port: int) -> list[str]:
    """Every UDP endpoint `host` resolves to, formatted as the UAPI writes them, IPv4 first (raises OSError)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    out: list[str] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            if info[0] == family:
                ep = format_endpoint(make_endpoint(info[4][0], port))
                if ep not in out:
                    out.append(ep)
    return out


class Lookup:
    """One lookup in a daemon thread of its own (a resolver that hangs never holds up the daemon's exit)."""

    def __init__(self, resolve: Callable[[str, int], list[str]], host: str, port: int) -> None:
        self.result: list[str] | None = None
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(resolve, host, port), name="wgpy-resolve",
                                       daemon=True)
        self.thread.start()

    def _run(self, resolve, host: str, port: int) -> None:
        try:
            self.result = resolve(host, port)
        except BaseException as e:       # reported by the loop, never raised in the thread
            self.error = e
        finally:
            self.finished.set()

    def done(self) -> bool:
        return self.finished.is_set()


@dataclass
class Name:
    host: str
    port: int
    resolved: str                 # the endpoint the name gave last, as format_endpoint writes it
    last: float                   # monotonic time of the last lookup (its start)
    pending: Lookup | None = None
    started: float = 0.0
    failures: int = 0

    @property
    def text(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class EndpointNames:
    """The host-name endpoints of one interface. `set_endpoint(public_key, endpoint_text)` applies a change
    (the daemon: a UAPI set); `peers` is the core's dict of peers; `clock`/`wall` as the interface's."""

    peers: dict
    set_endpoint: Callable[[bytes, str], bool]
    clock: Callable[[], float]
    wall: Callable[[], float]
    resolve: Callable[[str, int], list[str]] = lookup
    names: dict[bytes, Name] = field(default_factory=dict)
    abandoned: list = field(default_factory=list)     # lookups given up whose threads still run
    closed: bool = False

    def add(self, public_key: bytes, host: str, port: int, resolved: str) -> None:
        """Peer `public_key` was given `host:port`, which `up` resolved to `resolved` just now."""
        self.names[public_key] = Name(host, port, resolved, self.clock())

    def in_force(self, peer) -> str | None:
        """`host:port` while the peer's endpoint is the one its name gave, else None."""
        name = self.names.get(peer.public_key)
        if name is None or not isinstance(peer.endpoint, tuple) or format_endpoint(peer.endpoint) != name.resolved:
            return None
        return name.text

    def _due(self, name: Name, peer, now: float) -> bool:
        since = now - name.last
        if since >= PERIOD:
            return True
        if peer.unanswered_initiations >= FAILING_INITIATIONS and since >= FAILING_RETRY:
            return True
        hs = peer.last_handshake_wall
        return since >= STALE_RETRY and (hs == 0 or self.wall() - hs > STALE_AFTER)

    def tick(self, now: float) -> None:
        """Once a second from the event loop: apply the answers that came in, start the lookups that are due.
        Costs a few comparisons per name; never waits."""
        for key, name in list(self.names.items()):
            peer = self.peers.get(key)
            if peer is None:                      # the peer was removed
                self._forget(key)
                continue
            if name.pending is not None:
                if name.pending.done():
                    self._answer(key, name, peer)
                elif now - name.started > LOOKUP_TIMEOUT:
                    log.info("peer %s: looking up %s took over %.0f s; trying again later", _short(key),
                             name.host, LOOKUP_TIMEOUT)
                    self.abandoned.append(name.pending)   # its thread ends on its own; the answer is dropped
                    name.pending = None
                continue
            if self.in_force(peer) is None:
                # roamed or set by hand: not ours to change, but looked up every PERIOD all the same, so that
                # the name is in force again once the peer is at (one of) its address(es)
                due = now - name.last >= PERIOD
            else:
                due = self._due(name, peer, now)
            if due and not self.closed and self._running() < WORKERS:
                name.last = name.started = now
                name.pending = Lookup(self.resolve, name.host, name.port)

    def _running(self) -> int:
        self.abandoned = [lk for lk in self.abandoned if not lk.done()]
        return len(self.abandoned) + sum(1 for n in self.names.values() if n.pending is not None)

    def _answer(self, key: bytes, name: Name, peer) -> None:
        done, name.pending = name.pending, None
        if done.error is not None:
            e = done.error
            name.failures += 1
            if name.failures == 1:
                log.info("peer %s: cannot resolve %s (%s); keeping %s", _short(key), name.host,
                         getattr(e, "strerror", None) or e, name.resolved)
            return
        name.failures = 0
        endpoints = done.result
        if not endpoints or name.resolved in endpoints and self.in_force(peer) is not None:
            return                                # unchanged
        if self.in_force(peer) is None:           # the peer roamed (or was set): never moved from there
            current = format_endpoint(peer.endpoint) if isinstance(peer.endpoint, tuple) else None
            name.resolved = current if current in endpoints else endpoints[0]
            return
        new = endpoints[0]
        if self.set_endpoint(key, new):
            log.info("peer %s: %s now resolves to %s (was %s); endpoint moved", _short(key), name.host, new,
                     name.resolved)
            name.resolved = new

    def _forget(self, key: bytes) -> None:
        name = self.names.pop(key, None)
        if name is not None and name.pending is not None:
            self.abandoned.append(name.pending)

    def close(self) -> None:
        """No more lookups; those running are daemon threads and are not waited for."""
        self.closed = True


def _short(key: bytes) -> str:
    from ..crypto import encode_key
    return encode_key(key)[:8] + "..."
