"""io/reresolve.py: when a host-name endpoint is looked up again, when the peer is moved, and when it is not."""

from __future__ import annotations

import threading
import time

from wgpy.io import reresolve as rr

KEY = b"\x01" * 32


class FakePeer:
    def __init__(self, endpoint=("192.0.2.1", 51820)) -> None:
        self.public_key = KEY
        self.endpoint = endpoint
        self.unanswered_initiations = 0
        self.last_handshake_wall = 0.0


class World:
    def __init__(self, answers=None, block: threading.Event | None = None) -> None:
        self.t = 1000.0
        self.wall_t = 1_700_000_000.0
        self.answers = answers if answers is not None else {"vpn.test": ["192.0.2.1:51820"]}
        self.lookups: list[str] = []
        self.sets: list[tuple[bytes, str]] = []
        self.block = block
        self.peer = FakePeer()
        self.peers = {KEY: self.peer}
        self.names = rr.EndpointNames(self.peers, self.set_endpoint, lambda: self.t, lambda: self.wall_t,
                                      resolve=self.resolve)
        self.names.add(KEY, "vpn.test", 51820, "192.0.2.1:51820")

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if self.block is not None:
            self.block.wait(10)
        ans = self.answers.get(host)
        if isinstance(ans, Exception):
            raise ans
        return list(ans)

    def set_endpoint(self, key: bytes, ep: str) -> bool:
        self.sets.append((key, ep))
        host, _, port = ep.rpartition(":")
        self.peer.endpoint = (host.strip("[]"), int(port)) if "[" not in host else (host.strip("[]"), int(port), 0, 0)
        return True

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall_t += seconds

    def settle(self) -> None:
        """Tick until the running lookups have answered and been applied."""
        for _ in range(200):
            self.names.tick(self.t)
            if all(n.pending is None for n in self.names.names.values()):
                return
            time.sleep(0.01)
        raise AssertionError("lookup did not finish")


def healthy(w: World) -> None:
    w.peer.last_handshake_wall = w.wall_t - 10


def test_nothing_due_while_handshakes_work():
    w = World()
    healthy(w)
    for _ in range(60):
        w.advance(1)
        healthy(w)
        w.names.tick(w.t)
    assert w.lookups == []
    assert w.names.in_force(w.peer) == "vpn.test:51820"


def test_failing_handshakes_move_the_peer():
    w = World()
    healthy(w)
    w.answers["vpn.test"] = ["198.51.100.7:51820"]
    w.peer.unanswered_initiations = rr.FAILING_INITIATIONS
    w.advance(rr.FAILING_RETRY)
    w.names.tick(w.t)
    w.settle()
    assert w.lookups == ["vpn.test"]
    assert w.sets == [(KEY, "198.51.100.7:51820")]
    assert w.names.in_force(w.peer) == "vpn.test:51820"      # the new address is the name's too
    w.names.tick(w.t + 1)
    assert len(w.lookups) == 1                                # not again before FAILING_RETRY


def test_stale_and_periodic():
    w = World()
    w.advance(rr.STALE_RETRY - 1)          # never a handshake: stale, but not before STALE_RETRY
    w.names.tick(w.t)
    assert w.lookups == []
    w.advance(1)
    w.names.tick(w.t)
    w.settle()
    assert w.lookups == ["vpn.test"] and w.sets == []        # same address: nothing set
    healthy(w)
    w.advance(rr.PERIOD - 1)
    healthy(w)
    w.names.tick(w.t)
    assert len(w.lookups) == 1
    w.advance(1)
    w.names.tick(w.t)
    w.settle()
    assert len(w.lookups) == 2


def test_roamed_endpoint_is_never_overridden():
    w = World()
    w.answers["vpn.test"] = ["198.51.100.7:51820"]
    w.peer.endpoint = ("203.0.113.9", 4000)                   # learned from an authenticated packet
    w.peer.unanswered_initiations = 5
    w.advance(rr.PERIOD - 1)
    w.names.tick(w.t)
    assert w.lookups == []                                    # failing, but not ours: only the periodic look
    w.advance(1)
    w.names.tick(w.t)
    w.settle()
    assert w.lookups == ["vpn.test"] and w.sets == []
    assert w.peer.endpoint == ("203.0.113.9", 4000) and w.names.in_force(w.peer) is None


def test_name_in_force_again_when_the_peer_roams_to_its_new_address():
    w = World()
    w.answers["vpn.test"] = ["198.51.100.7:51820"]
    w.peer.endpoint = ("198.51.100.7", 51820)                # roamed to where the name now points
    assert w.names.in_force(w.peer) is None
    w.advance(rr.PERIOD)
    w.names.tick(w.t)
    w.settle()
    assert w.sets == [] and w.names.in_force(w.peer) == "vpn.test:51820"


def test_roam_while_the_lookup_runs():
    block = threading.Event()
    w = World(block=block)
    w.answers["vpn.test"] = ["198.51.100.7:51820"]
    w.advance(rr.PERIOD)
    w.names.tick(w.t)
    assert w.names.names[KEY].pending is not None
    w.peer.endpoint = ("203.0.113.9", 4000)                   # roams before the answer comes
    block.set()
    w.settle()
    assert w.sets == [] and w.peer.endpoint == ("203.0.113.9", 4000)


def test_address_still_among_the_names_is_kept():
    w = World({"vpn.test": ["198.51.100.7:51820", "192.0.2.1:51820"]})
    w.advance(rr.PERIOD)
    w.names.tick(w.t)
    w.settle()
    assert w.lookups == ["vpn.test"] and w.sets == []


def test_failed_lookup_keeps_the_endpoint():
    w = World({"vpn.test": OSError(-2, "Name or service not known")})
    w.advance(rr.PERIOD)
    w.names.tick(w.t)
    w.settle()
    assert w.sets == [] and w.peer.endpoint == ("192.0.2.1", 51820)


def test_hung_resolver_does_not_block_and_is_bounded():
    block = threading.Event()
    w = World(block=block)
    w.advance(rr.PERIOD)
    started = time.monotonic()
    w.names.tick(w.t)
    assert time.monotonic() - started < 0.5                   # the loop never waits for the resolver
    for _ in range(5):                                        # given up after LOOKUP_TIMEOUT, tried again...
        w.advance(rr.LOOKUP_TIMEOUT + 1)
        w.names.tick(w.t)
        w.advance(rr.PERIOD)
        w.names.tick(w.t)
    assert len(w.lookups) <= rr.WORKERS                       # ...but never more than WORKERS threads waiting
    block.set()


def test_removed_peer_is_forgotten():
    w = World()
    del w.peers[KEY]
    w.advance(rr.PERIOD)
    w.names.tick(w.t)
    assert w.names.names == {} and w.lookups == []


def test_lookup_prefers_ipv4(monkeypatch):
    import socket
    infos = [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 51820, 0, 0)),
             (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.5", 51820)),
             (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.5", 51820))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: infos)
    assert rr.lookup("vpn.test", 51820) == ["192.0.2.5:51820", "[2001:db8::1]:51820"]
