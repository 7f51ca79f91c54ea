"""The core harness: sans-IO Device cores wired to each other by hand, and the helpers around it.

Nothing here touches the network, a real clock or the OS random generator: randomness comes from seeded
`random.Random` instances and time from a `Clock` the tests advance by hand.  `Net` is any number of named
cores with any peering (an L2 hub and its spokes, a mesh), each path of its wire blockable on its own and with
extra endpoints (a stream connection's stand-in beside UDP); `Pair` is the common case, A and B peering with
each other.  The unit tests, the fuzzer (wgpy_testkit.fuzz) and bench/micro.py build their cores here (the
last two may hand a Pair os.urandom and real monotonic times; the harness does not care).
"""

from __future__ import annotations

import ipaddress
import random
import struct

from wgpy import crypto
from wgpy.protocol.device import Device
from wgpy.protocol.events import TunPackets

WALL0 = 1_700_000_000.0

A_IP4, B_IP4 = "10.0.0.1", "10.0.0.2"
A_IP6, B_IP6 = "fd00::1", "fd00::2"


class Clock:
    """A fake wall clock that follows the simulated monotonic time (`now`) at a fixed offset."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def wall(self) -> float:
        return WALL0 + self.now


def seeded_rand(seed: int):
    """A `rand(n) -> bytes` callable backed by a seeded PRNG."""
    return random.Random(seed).randbytes


def make_key(rng: random.Random) -> tuple[bytes, bytes]:
    priv = rng.randbytes(32)
    return priv, crypto.public_from_private(priv)


# ---------------------------------------------------------------------------------------------------------------
# IP packets
# ---------------------------------------------------------------------------------------------------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, payload: bytes = b"", proto: int = 17, ident: int = 0x1234) -> bytes:
    """A real IPv4 packet (20-byte header with a valid checksum)."""
    total = 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0, 64, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return hdr + payload


def udp4(src: str, dst: str, data: bytes, sport: int = 1234, dport: int = 5678) -> bytes:
    """IPv4 + UDP (checksum 0, allowed for UDP over IPv4)."""
    return ipv4(src, dst, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, proto=17)


def ipv6(src: str, dst: str, payload: bytes = b"", next_header: int = 17) -> bytes:
    """A real IPv6 packet (40-byte fixed header)."""
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64,
                      ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)
    return hdr + payload


def padded(n: int) -> int:
    return n + (-n & 15)


def transport_size(inner_len: int) -> int:
    """Wire size of a transport message carrying an inner packet of `inner_len` bytes (no MTU clipping)."""
    return 16 + padded(inner_len) + 16


def mtype(dgram: bytes) -> int:
    return dgram[0] if len(dgram) >= 4 and dgram[1:4] == b"\x00\x00\x00" else 0


# ---------------------------------------------------------------------------------------------------------------
# Devices wired by hand
# ---------------------------------------------------------------------------------------------------------------

class Stream:
    """An opaque endpoint, as io/stream.py hands the core for a stream connection: equal only to itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Stream({self.name})"


class Net:
    """Named devices on one fake clock; `links` says who peers with whom (both ways).

    The wire: `addr[name]` is the source address a device's datagrams appear to come from (the device's name
    unless `endpoints` says otherwise); `route[endpoint]` is the device a datagram sent to `endpoint` reaches;
    `seen_as[endpoint]`, where set, is the source the receiver sees instead of the sender's address (the two
    ends of a stream connection, see `link`). Unknown endpoints are a black hole, or fail the test if `strict`
    (so does a datagram a device sends to itself).
    Loss: datagrams sent to an endpoint in `blocked` are lost (each endpoint is one direction of one path), and
    so are those for which `drop(sender_name, datagram)` is true. Order: datagrams to an endpoint in `overtake`
    overtake the others that the same send or timer put on the wire. Every datagram put on the wire is logged
    as (now, sender_name, endpoint, datagram), whether it is then lost or not; `tun[name]` (also `tap`) holds
    what each device wrote to its TUN or TAP.
    """

    def __init__(self, names, links=(), *, seed: int = 1, l2: bool = False, keys=None, rands=None,
                 endpoints=None, strict: bool = False) -> None:
        """`names`: one name per device ("ABC" or a list). `keys`: the private keys instead of ones drawn from
        `seed`; `rands`: the devices' `rand(n)` callables instead of seeded ones; `endpoints`: the addresses
        they send from and are reached at; each a sequence in the order of `names`. `l2`: TAP devices."""
        self.clock = Clock()
        rng = random.Random(seed)
        self.dev: dict[str, Device] = {}
        self.priv: dict[str, bytes] = {}
        self.keys: dict[str, bytes] = {}               # public keys
        self.addr: dict[str, object] = {}
        self.route: dict[object, str] = {}
        for i, name in enumerate(names):
            if keys is None:
                self.priv[name], self.keys[name] = make_key(rng)
            else:
                self.priv[name], self.keys[name] = keys[i], crypto.public_from_private(keys[i])
            rand = rands[i] if rands is not None else seeded_rand(seed * 100 + i)
            self.dev[name] = Device(self.priv[name], rand=rand, wall=self.clock.wall, l2=l2)
            self.addr[name] = ep = name if endpoints is None else endpoints[i]
            self.route[ep] = name
        self.peer: dict[tuple[str, str], object] = {}     # (x, y) -> x's Peer object for y
        for x, y in links:
            self.add_peer(x, y)
            self.add_peer(y, x)
        self.seen_as: dict[object, object] = {}
        self.blocked: set = set()
        self.overtake: set = set()
        self.drop = None
        self.strict = strict
        self.log: list[tuple[float, str, object, bytes]] = []
        self.tun: dict[str, list[bytes]] = {name: [] for name in self.dev}
        self.tap = self.tun

    def add_peer(self, x: str, y: str, key: bytes | None = None):
        """Give device `x` a peer for `y` (with `key` instead of y's public key if given), reached at addr[y]."""
        p = self.dev[x].add_peer(key or self.keys[y])
        p.endpoint = self.addr[y]
        self.peer[(x, y)] = p
        return p

    def link(self, endpoint, to: str, seen_as=None) -> None:
        """Datagrams sent to `endpoint` reach device `to`, which sees them come from `seen_as` (if given).
        A stream connection from A to B is two of these: A's end T reaches B from B's end C, and C reaches A
        from T."""
        self.route[endpoint] = to
        if seen_as is not None:
            self.seen_as[endpoint] = seen_as

    def at(self, now: float) -> None:
        """Move the fake clock forward to `now` (call before driving a device directly)."""
        if now > self.clock.now:
            self.clock.now = now

    def deliver(self, sender: str, out: list, now: float) -> None:
        """Put `out` (sent by `sender`) on the wire and keep shuttling the answers until the wire is quiet."""
        self.at(now)
        if self.overtake:
            out.sort(key=lambda item: item[1] not in self.overtake)
        queue = [(sender, d, ep) for d, ep in out]
        out.clear()
        steps = 0
        while queue:
            steps += 1
            assert steps < 100_000, "datagram storm (a forwarding loop?)"
            s, d, ep = queue.pop(0)
            target = self.route.get(ep)
            if self.strict and target in (None, s):
                raise AssertionError(f"{s} sent to {ep!r}")
            self.log.append((now, s, ep, d))
            if ep in self.blocked or (self.drop is not None and self.drop(s, d)) or target is None:
                continue
            net: list = []
            src = self.seen_as.get(ep, self.addr[s])
            self.dev[target].receive_datagrams([(d, src)], now, net, self.tun[target])
            queue.extend((target, d2, ep2) for d2, ep2 in net)

    def send(self, name: str, packets: list[bytes], now: float | None = None) -> None:
        """Device `name` sends `packets` (from its TUN or TAP) at `now` (default: the clock's time)."""
        now = self.clock.now if now is None else now
        self.at(now)
        out: list = []
        self.dev[name].send_packets(packets, now, out)
        self.deliver(name, out, now)

    def advance(self, until: float) -> None:
        """Run every device's timers, in deadline order, up to and including `until`."""
        for _ in range(100_000):
            cands = []
            for name, dev in self.dev.items():
                d = dev.next_deadline()
                if d is not None and d <= until:
                    cands.append((d, name))
            if not cands:
                break
            d, name = min(cands)
            self.at(d)
            out: list = []
            dev = self.dev[name]
            dev.tick(d, out)
            if dev.events:                    # what a rate limit let out for the TUN, as the runtime writes it
                for ev in dev.events:
                    if type(ev) is TunPackets:
                        self.tun[name].extend(ev.packets)
                dev.events = [ev for ev in dev.events if type(ev) is not TunPackets]
            self.deliver(name, out, d)
        else:  # pragma: no cover
            raise AssertionError("timer loop does not converge")
        self.at(until)

    def connect(self, *pairs: tuple[str, str], now: float = 0.0) -> None:
        """Complete handshakes (x initiates to y, with a keepalive after), so that what follows sees only data."""
        for x, y in pairs:
            out: list = []
            self.dev[x].initiate_handshake(self.peer[(x, y)], now, out, retry=False)
            self.deliver(x, out, now)

    def sent(self, sender: str | None = None, since: int = 0, type_: int | None = None):
        """Logged datagrams (now, sender, endpoint, datagram), filtered."""
        return [e for e in self.log[since:] if (sender is None or e[1] == sender)
                and (type_ is None or mtype(e[3]) == type_)]

    def data_to(self, endpoint, since: int = 0) -> int:
        """How many transport messages carrying data (not keepalives) were sent to `endpoint`."""
        return sum(1 for _, _, ep, d in self.log[since:] if ep == endpoint and mtype(d) == 4 and len(d) > 32)


class Pair(Net):
    """Devices A and B, each with the other as its only peer (`pa`: A's view of B, `pb`: B's view of A).

    Endpoints are "A" and "B" unless given. A routes B_IP4 (and B_IP6) to B, and B the A addresses to A.
    """

    def __init__(self, seed: int = 1, *, psk_a: bytes | None = None, psk_b: bytes | None = None,
                 a_thinks_b_is: bytes | None = None, b_knows_a: bool = True, rand_a=None, rand_b=None,
                 l2: bool = False, endpoints: tuple[object, object] = ("A", "B"),
                 keys: tuple[bytes, bytes] | None = None, inner_v6: bool = True, strict: bool = False) -> None:
        """`l2`: both devices in L2 mode (frames, learning switch; no allowed IPs). `endpoints`: the addresses
        A and B send from and are reached at (strings, or real (ip, port) tuples). `keys`: both private keys
        instead of ones drawn from `seed`. `inner_v6`: also route fd00::1/fd00::2 (L3)."""
        rands = (rand_a or seeded_rand(seed * 1000 + 1), rand_b or seeded_rand(seed * 1000 + 2))
        super().__init__("AB", seed=seed, l2=l2, keys=keys, rands=rands, endpoints=endpoints, strict=strict)
        self.a, self.b = self.dev["A"], self.dev["B"]
        (self.priv_a, self.priv_b), (self.pub_a, self.pub_b) = self.priv.values(), self.keys.values()
        self.pa = self.add_peer("A", "B", a_thinks_b_is)
        self.pb = self.add_peer("B", "A") if b_knows_a else None
        if not l2:
            self._route_inner(self.a, self.pa, B_IP4, B_IP6 if inner_v6 else None)
            if self.pb is not None:
                self._route_inner(self.b, self.pb, A_IP4, A_IP6 if inner_v6 else None)
        if psk_a is not None:
            self.a.set_preshared_key(self.pa, psk_a)
        if psk_b is not None and self.pb is not None:
            self.b.set_preshared_key(self.pb, psk_b)

    @staticmethod
    def _route_inner(dev: Device, peer, ip4: str, ip6: str | None) -> None:
        dev.allowed_ips.insert(ipaddress.ip_network(ip4 + "/32"), peer)
        if ip6 is not None:
            dev.allowed_ips.insert(ipaddress.ip_network(ip6 + "/128"), peer)

    def handshake(self, now: float = 0.0, payload: bytes = b"hello") -> bytes:
        """A sends one IPv4 packet to B, which triggers (and completes) a handshake. Returns the packet."""
        pkt = udp4(A_IP4, B_IP4, payload)
        self.send("A", [pkt], now)
        return pkt

    def send_udp(self, name: str, payload: bytes, now: float) -> None:
        """As a live device: run the timers due by `now`, then `name` sends one IPv4/UDP packet to the other."""
        self.advance(now)
        src, dst = (A_IP4, B_IP4) if name == "A" else (B_IP4, A_IP4)
        self.send(name, [udp4(src, dst, payload)], now)

    def traffic(self, start: float, end: float, step: float = 0.5, both: bool = True) -> tuple[int, int]:
        """A (and B, `step` / 2 later, if `both`) send one packet every `step` seconds from `start` until
        `end`; returns (delivered to B, delivered to A) in that time."""
        b0, a0 = len(self.tun["B"]), len(self.tun["A"])
        t, i = start, 0
        while t < end:
            self.send_udp("A", b"a%d" % i, t)
            if both:
                self.send_udp("B", b"b%d" % i, t + step / 2)
            t += step
            i += 1
        return len(self.tun["B"]) - b0, len(self.tun["A"]) - a0
