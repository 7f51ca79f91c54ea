"""The two-core harness: two sans-IO Device cores wired to each other by hand, and the helpers around it.

Nothing here touches the network, a real clock or the OS random generator: randomness comes from seeded
`random.Random` instances and time from a `Clock` the tests advance by hand.  The unit tests, the fuzzer
(wgpy_testkit.fuzz) and bench/micro.py build their pairs of cores with `Pair` (the last two may hand it
os.urandom and real monotonic times; the harness does not care).
"""

from __future__ import annotations

import ipaddress
import random
import struct

from wgpy import crypto
from wgpy.protocol.device import Device

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
# Two devices wired by hand
# ---------------------------------------------------------------------------------------------------------------

class Pair:
    """Devices A and B, each with the other as its only peer.

    Endpoints are plain strings. `addr[name]` is the source address a device's datagrams appear to come from;
    `route[endpoint]` is the device a datagram sent to `endpoint` reaches (unknown endpoints are a black hole).
    `drop(sender_name, datagram) -> bool` simulates loss. Every datagram put on the wire is logged as
    (now, sender_name, endpoint, datagram), whether it is then dropped or not.
    """

    def __init__(self, seed: int = 1, *, psk_a: bytes | None = None, psk_b: bytes | None = None,
                 a_thinks_b_is: bytes | None = None, b_knows_a: bool = True, rand_a=None, rand_b=None,
                 l2: bool = False, endpoints: tuple[object, object] = ("A", "B"),
                 keys: tuple[bytes, bytes] | None = None, inner_v6: bool = True) -> None:
        """`l2`: both devices in L2 mode (frames, learning switch; no allowed IPs). `endpoints`: the addresses
        A and B send from and are reached at (strings, or real (ip, port) tuples). `keys`: both private keys
        instead of ones drawn from `seed`. `inner_v6`: also route fd00::1/fd00::2 (L3)."""
        self.clock = Clock()
        rng = random.Random(seed)
        if keys is None:
            self.priv_a, self.pub_a = make_key(rng)
            self.priv_b, self.pub_b = make_key(rng)
        else:
            (self.priv_a, self.priv_b), (self.pub_a, self.pub_b) = keys, map(crypto.public_from_private, keys)
        self.a = Device(self.priv_a, rand=rand_a or seeded_rand(seed * 1000 + 1), wall=self.clock.wall, l2=l2)
        self.b = Device(self.priv_b, rand=rand_b or seeded_rand(seed * 1000 + 2), wall=self.clock.wall, l2=l2)
        ep_a, ep_b = endpoints
        self.pa = self.a.add_peer(a_thinks_b_is or self.pub_b)       # A's view of B
        self.pb = self.b.add_peer(self.pub_a) if b_knows_a else None  # B's view of A
        if not l2:
            self.a.allowed_ips.insert(ipaddress.ip_network(B_IP4 + "/32"), self.pa)
            if inner_v6:
                self.a.allowed_ips.insert(ipaddress.ip_network(B_IP6 + "/128"), self.pa)
        self.pa.endpoint = ep_b
        if self.pb is not None:
            if not l2:
                self.b.allowed_ips.insert(ipaddress.ip_network(A_IP4 + "/32"), self.pb)
                if inner_v6:
                    self.b.allowed_ips.insert(ipaddress.ip_network(A_IP6 + "/128"), self.pb)
            self.pb.endpoint = ep_a
        if psk_a is not None:
            self.a.set_preshared_key(self.pa, psk_a)
        if psk_b is not None and self.pb is not None:
            self.b.set_preshared_key(self.pb, psk_b)
        self.addr = {"A": ep_a, "B": ep_b}
        self.route = {ep_a: "A", ep_b: "B"}
        self.drop = None
        self.log: list[tuple[float, str, object, bytes]] = []
        self.tun: dict[str, list[bytes]] = {"A": [], "B": []}

    def dev(self, name: str) -> Device:
        return self.a if name == "A" else self.b

    def at(self, now: float) -> None:
        """Move the fake clock forward to `now` (call before driving a device directly)."""
        if now > self.clock.now:
            self.clock.now = now

    def deliver(self, sender: str, out: list, now: float) -> None:
        """Put `out` (sent by `sender`) on the wire and keep shuttling the answers until the wire is quiet."""
        self.at(now)
        queue = [(sender, d, ep) for d, ep in out]
        out.clear()
        steps = 0
        while queue:
            steps += 1
            assert steps < 100_000, "datagram storm"
            s, d, ep = queue.pop(0)
            self.log.append((now, s, ep, d))
            if self.drop is not None and self.drop(s, d):
                continue
            target = self.route.get(ep)
            if target is None:
                continue
            net: list = []
            self.dev(target).receive_datagrams([(d, self.addr[s])], now, net, self.tun[target])
            queue.extend((target, d2, ep2) for d2, ep2 in net)

    def send(self, name: str, packets: list[bytes], now: float) -> None:
        self.at(now)
        out: list = []
        self.dev(name).send_packets(packets, now, out)
        self.deliver(name, out, now)

    def advance(self, until: float) -> None:
        """Run both devices' timers, in deadline order, up to and including `until`."""
        for _ in range(100_000):
            cands = []
            for name in ("A", "B"):
                d = self.dev(name).next_deadline()
                if d is not None and d <= until:
                    cands.append((d, name))
            if not cands:
                break
            d, name = min(cands)
            self.at(d)
            out: list = []
            self.dev(name).tick(d, out)
            self.deliver(name, out, d)
        else:  # pragma: no cover
            raise AssertionError("timer loop does not converge")
        self.at(until)

    def handshake(self, now: float = 0.0, payload: bytes = b"hello") -> bytes:
        """A sends one IPv4 packet to B, which triggers (and completes) a handshake. Returns the packet."""
        pkt = udp4(A_IP4, B_IP4, payload)
        self.send("A", [pkt], now)
        return pkt

    def sent(self, sender: str | None = None, since: int = 0, type_: int | None = None):
        """Logged datagrams (now, sender, endpoint, datagram), filtered."""
        return [e for e in self.log[since:] if (sender is None or e[1] == sender)
                and (type_ is None or mtype(e[3]) == type_)]
