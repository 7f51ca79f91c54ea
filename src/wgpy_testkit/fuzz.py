"""Fuzzer for the message parsers and the whole datagram path of the core (Device.receive_datagrams): the targets,
the mutator and the invariants.  bench/fuzz.py is its command line; tests/unit/test_fuzz.py runs a sample.

    .venv/bin/python bench/fuzz.py [--inputs 1000000] [--seed 1] [--targets parse,responder,initiator,under-load]
    .venv/bin/python bench/fuzz.py --engine atheris [--inputs N] --targets responder   # coverage-guided, optional

Two in-memory Devices (the two-core harness core_pair.Pair), A (initiator) and B (responder), complete a real
handshake on a fake clock, exchange data both ways and a cookie reply (B under load); every datagram they put on
the wire is captured. The corpus is those captured messages, each already consumed by its receiver, so a byte-exact copy is a replay. Each input is
either random bytes or a captured message mutated by one to four of: bit flips, byte overwrites with edge values,
truncation, extension, splicing two messages, a changed type byte, or resizing to another message's size. A
quarter of the mutated handshake messages also get a *correct* mac1 recomputed for the target's public key (the
public key is public: any scanner can do this), and mutated transport and cookie messages keep a live receiver
index, so inputs get past the cheap checks into the Noise, AEAD and cookie code.

Targets:
    parse       messages.message_type + unpack/pack: message_type is 0 or the type of an exact-size message, and
                every message it accepts unpacks and packs back to the same bytes
    responder   B.receive_datagrams, B not under load
    initiator   A.receive_datagrams (A has a handshake in flight, so mutated responses reach consume_response)
    under-load  B.receive_datagrams with B under load (every message with a valid mac1 needs a mac2)
For the receive targets, after every input:
    * no exception escaped;
    * the core state an unauthenticated packet must not touch is unchanged: peers, their endpoints, handshake
      state, keypair slots, send counters and replay windows, timers, staged packets, cookies, byte counters, the
      index tables (only drop counters, the under-load accounting, the rate-limiter table and the cookie secret
      may change: they exist to absorb such traffic);
    * nothing was sent, except (under-load only) a 64-byte cookie reply to a message whose mac1 is valid, as an
      oracle independent of the device computes it.
The figures (inputs, inputs/s, what the core did with them) print as one JSON line per target.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import sys
import time
from collections import Counter

from wgpy import crypto
from wgpy.constants import (
    LABEL_MAC1, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, REKEY_TIMEOUT,
    UNDER_LOAD_HANDSHAKES_PER_SECOND,
)
from wgpy.protocol import messages, transport
from wgpy.protocol.device import Device
from wgpy.protocol.messages import INITIATION_MAC1_OFFSET, RESPONSE_MAC1_OFFSET

from .core_pair import Pair

EP_A = ("192.0.2.1", 51820)
EP_B = ("192.0.2.2", 51820)
IP_A, IP_B = "10.0.0.1", "10.0.0.2"
TARGETS = ("parse", "responder", "initiator", "under-load")


def ipv4_udp(src: str, dst: str, data: bytes) -> bytes:
    total = 28 + len(data)
    return (struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, ipaddress.IPv4Address(src).packed,
                        ipaddress.IPv4Address(dst).packed)
            + struct.pack("!HHHH", 1234, 5678, 8 + len(data), 0) + data)


class World:
    """A and B (a core_pair.Pair) after a handshake, data both ways and a cookie reply; `corpus` holds every
    datagram sent."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        keys = (rng.randbytes(32), rng.randbytes(32))
        self.pair = p = Pair(keys=keys, rand_a=random.Random(seed + 1).randbytes,
                             rand_b=random.Random(seed + 2).randbytes, endpoints=(EP_A, EP_B), inner_v6=False)
        self.clock, self.a, self.b, self.pa, self.pb = p.clock, p.a, p.b, p.pa, p.pb
        # handshake triggered by data, then data both ways
        p.send("A", [ipv4_udp(IP_A, IP_B, b"hello" * i) for i in range(1, 4)], self.clock.now)
        p.send("B", [ipv4_udp(IP_B, IP_A, b"world" * i) for i in range(1, 4)], self.clock.now)
        p.send("A", [ipv4_udp(IP_A, IP_B, bytes(200))], self.clock.now)
        assert self.pa.current is not None and self.pb.current is not None, "handshake failed"
        # B under load: A's next initiation gets a cookie reply, which A consumes; A's handshake stays in flight
        self.at(REKEY_TIMEOUT + 1)
        self.b.under_load_threshold = 0
        out: list = []
        self.a.initiate_handshake(self.pa, self.clock.now, out, retry=False)
        cookied = out[0][0]
        p.deliver("A", out, self.clock.now)
        assert self.pa.cookie.cookie, "no cookie reply"
        # ... and B, no longer under load, consumes that initiation (so a copy of it is a replay), A the response
        self.b.under_load_threshold = UNDER_LOAD_HANDSHAKES_PER_SECOND
        self.b.handshakes._under_load_until = float("-inf")
        p.deliver("A", [(cookied, EP_B)], self.clock.now)
        self.corpus: list[bytes] = [d for *_, d in p.log]
        del self.corpus[-2]   # (the same initiation is in the corpus once)
        self.tun: list[bytes] = p.tun["A"] + p.tun["B"]
        # A starts one more handshake whose initiation is lost: mutated responses can reach consume_response
        self.at(2 * REKEY_TIMEOUT + 2)
        lost: list = []
        self.a.initiate_handshake(self.pa, self.clock.now, lost, retry=False)
        assert lost and self.a.handshakes_by_index
        kinds = Counter(messages.message_type(d) for d in self.corpus)
        assert all(kinds[t] for t in (1, 2, 3, 4)), kinds
        self.at(self.clock.now + 1)
        self.mac1_key = {id(self.a): crypto.hash_(LABEL_MAC1 + self.a.public_key),
                         id(self.b): crypto.hash_(LABEL_MAC1 + self.b.public_key)}

    def at(self, t: float) -> None:
        self.clock.now = t


# ---------------------------------------------------------------------------------------------------------------
# state that unauthenticated input must not change
# ---------------------------------------------------------------------------------------------------------------

def _keypair_state(kp) -> tuple | None:
    if kp is None:
        return None
    return (id(kp), kp.send_counter, kp.created, kp.local_index, kp.remote_index, kp.replay.top,
            tuple(kp.replay.ring))


def snapshot(dev: Device) -> tuple:
    peers = []
    for key, p in dev.peers.items():
        hs = p.handshake
        c = p.cookie
        peers.append((
            key, p.endpoint, p.persistent_keepalive, p.rx_bytes, p.tx_bytes, p.last_handshake_wall,
            _keypair_state(p.previous), _keypair_state(p.current), _keypair_state(p.next),
            hs.state, hs.hash, hs.chaining_key, id(hs.local_ephemeral), hs.remote_ephemeral, hs.local_index,
            hs.remote_index, hs.latest_timestamp, hs.last_initiation_consumption, hs.preshared_key,
            p.t_retransmit, p.t_send_keepalive, p.t_new_handshake, p.t_zero_keys, p.t_persistent, p.scheduled,
            p.handshake_attempts, p.last_sent_handshake, p.sent_lastminute_handshake, p.need_another_keepalive,
            tuple(p.staged), p.removed,
            c.cookie, c.cookie_time, c.last_mac1, c.have_sent_mac1,
        ))
    return (
        tuple(peers),
        tuple(sorted((i, id(k)) for i, k in dev.keypairs_by_index.items())),
        tuple(sorted((i, id(p)) for i, p in dev.handshakes_by_index.items())),
        tuple(dev.timers.heap), dev.timers._seq, dev.staged_total, id(dev.identity), dev.is_up,
    )


# ---------------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------------

EDGE = (0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFE, 0xFF)
SIZES = (0, 1, 3, 4, 5, 15, 16, 31, 32, 33, 47, 48, 63, 64, 65, 91, 92, 93, 147, 148, 149, 1500)


class Mutator:
    """Random and mutated datagrams (see the module docstring); deterministic for a given seed."""

    def __init__(self, corpus: list[bytes], seed: int, mac1_key: bytes | None = None,
                 live_indices: list[int] = ()) -> None:
        self.rng = random.Random(seed)
        self.corpus = corpus
        self.mac1_key = mac1_key
        self.live = list(live_indices)

    def random_bytes(self) -> bytes:
        r = self.rng
        n = r.choice(SIZES) if r.random() < 0.5 else r.randrange(0, 300)
        b = bytearray(r.randbytes(n))
        if n >= 4 and r.random() < 0.6:   # a plausible type word
            b[0:4] = bytes((r.randrange(0, 6), 0, 0, 0))
        return bytes(b)

    def mutate(self, data: bytes) -> bytes:
        r = self.rng
        b = bytearray(data)
        for _ in range(r.randrange(1, 5)):
            op = r.randrange(9)
            if op == 0 and b:                                   # flip 1-8 bits
                for _ in range(r.randrange(1, 9)):
                    i = r.randrange(len(b))
                    b[i] ^= 1 << r.randrange(8)
            elif op == 1 and b:                                 # edge values
                b[r.randrange(len(b))] = r.choice(EDGE)
            elif op == 2:                                       # truncate
                del b[r.randrange(len(b) + 1):]
            elif op == 3:                                       # extend
                b += r.randbytes(r.choice((1, 15, 16, 17, 64, r.randrange(1, 200))))
            elif op == 4:                                       # splice with another captured message
                other = r.choice(self.corpus)
                cut = r.randrange(min(len(b), len(other)) + 1)
                b = b[:cut] + bytearray(other[cut:])
            elif op == 5 and b:                                 # another type byte
                b[0] = r.randrange(0, 6)
            elif op == 6:                                       # resize to another message's exact size
                size = r.choice((MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, MESSAGE_COOKIE_REPLY_SIZE, 32))
                b = (b + bytearray(r.randbytes(max(0, size - len(b)))))[:size]
            elif op == 7 and len(b) >= 8 and self.live:         # a live receiver index (transport/cookie/response)
                off = 8 if b[0] == 2 else 4
                if len(b) >= off + 4:
                    b[off:off + 4] = struct.pack("<I", r.choice(self.live))
            elif op == 8 and len(b) > 4:                        # overwrite a random span
                i = r.randrange(len(b))
                j = min(len(b), i + r.randrange(1, 33))
                b[i:j] = r.randbytes(j - i)
        if self.mac1_key is not None and len(b) >= 4 and r.random() < 0.25:
            off = {1: INITIATION_MAC1_OFFSET, 2: RESPONSE_MAC1_OFFSET}.get(b[0])
            if off is not None and len(b) >= off + 16:
                b[off:off + 16] = crypto.mac(self.mac1_key, bytes(b[:off]))
        return bytes(b)

    def next(self) -> bytes:
        if self.rng.random() < 0.2:
            return self.random_bytes()
        return self.mutate(self.rng.choice(self.corpus))


def mac1_valid(data: bytes, mac1_key: bytes) -> bool:
    """Independent oracle: a handshake message of exact size whose mac1 is right for `mac1_key`."""
    if len(data) == MESSAGE_INITIATION_SIZE and data[:4] == b"\x01\x00\x00\x00":
        off = INITIATION_MAC1_OFFSET
    elif len(data) == MESSAGE_RESPONSE_SIZE and data[:4] == b"\x02\x00\x00\x00":
        off = RESPONSE_MAC1_OFFSET
    else:
        return False
    return crypto.mac(mac1_key, data[:off]) == data[off:off + 16]


# ---------------------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------------------

class Violation(AssertionError):
    pass


def check_parse(data: bytes) -> str:
    t = messages.message_type(data)
    if t == 0:
        return "rejected"
    cls = {1: messages.Initiation, 2: messages.Response, 3: messages.CookieReply}.get(t)
    n = len(data)
    if t == 4:
        if n < 32 or data[:4] != b"\x04\x00\x00\x00":
            raise Violation(f"transport accepted with length {n}")
        if not transport.is_transport(data):
            raise Violation("transport codec disagrees with message_type")
        transport.parse_header(data, 4)
        return "transport"
    expected = {1: MESSAGE_INITIATION_SIZE, 2: MESSAGE_RESPONSE_SIZE, 3: MESSAGE_COOKIE_REPLY_SIZE}[t]
    if n != expected or data[:4] != bytes((t, 0, 0, 0)):
        raise Violation(f"type {t} accepted with length {n} / word {data[:4].hex()}")
    if cls.unpack(data).pack() != data:
        raise Violation(f"type {t} does not round-trip")
    return f"type{t}"


class ReceiveTarget:
    """One device of a fresh World, fed one datagram at a time, with the invariants checked after each."""

    def __init__(self, name: str, seed: int) -> None:
        self.world = w = World(seed)
        self.dev = w.a if name == "initiator" else w.b
        self.under_load = name == "under-load"
        # under load always, or never (a fixed clock would otherwise count the fuzz itself as load)
        self.dev.under_load_threshold = 0 if self.under_load else 1 << 62
        self.mac1_key = w.mac1_key[id(self.dev)]
        self.now = w.clock.now
        self.src = EP_B if self.dev is w.a else EP_A
        self.before = snapshot(self.dev)
        self.cookie_replies = 0
        self.tun_before = len(w.tun)

    def live_indices(self) -> list[int]:
        return list(self.dev.keypairs_by_index) + list(self.dev.handshakes_by_index)

    def feed(self, data: bytes, src=None) -> None:
        out: list = []
        tun: list = []
        dev = self.dev
        try:
            dev.receive_datagrams([(data, src or self.src)], self.now, out, tun)
        except Exception as e:   # noqa: BLE001 - the point is to catch any
            raise Violation(f"{type(e).__name__}: {e} on input {data.hex()}") from e
        if tun:
            raise Violation(f"decrypted {len(tun)} packet(s) from input {data.hex()}")
        if out:
            if not self.under_load:
                raise Violation(f"replied {[d.hex() for d, _ in out]} to {data.hex()} while not under load")
            if len(out) != 1 or len(out[0][0]) != MESSAGE_COOKIE_REPLY_SIZE or out[0][0][:4] != b"\x03\0\0\0":
                raise Violation(f"under load, replied something other than one cookie reply to {data.hex()}")
            if not mac1_valid(data, self.mac1_key):
                raise Violation(f"cookie reply to a message without a valid mac1: {data.hex()}")
            self.cookie_replies += 1
        after = snapshot(dev)
        if after != self.before:
            diff = [i for i, (x, y) in enumerate(zip(self.before, after)) if x != y]
            raise Violation(f"state changed (fields {diff}) by input {data.hex()}")


def run(target: str, inputs: int, seed: int, progress: float = 0.0) -> dict:
    """Run `inputs` inputs against `target`; returns figures; raises Violation on the first broken invariant."""
    t0 = time.perf_counter()
    last = t0
    if target == "parse":
        world = World(seed)
        mut = Mutator(world.corpus, seed)
        kinds: Counter[str] = Counter()
        for i in range(inputs):
            kinds[check_parse(mut.next())] += 1
            if progress and time.perf_counter() - last > progress:
                last = time.perf_counter()
                print(f"  {target}: {i + 1} inputs", file=sys.stderr)
        outcome = dict(kinds)
    else:
        tgt = ReceiveTarget(target, seed)
        mut = Mutator(tgt.world.corpus, seed, tgt.mac1_key, tgt.live_indices())
        # claimed sources: the peer's own address, then 20,000 others (more than the cookie limiter's table)
        sources = [tgt.src] + [(f"198.18.{j >> 8 & 255}.{j & 255}", 1024 + j) for j in range(20_000)]
        for i in range(inputs):
            tgt.feed(mut.next(), sources[i % len(sources)])
            if progress and time.perf_counter() - last > progress:
                last = time.perf_counter()
                print(f"  {target}: {i + 1} inputs", file=sys.stderr)
        outcome = dict(tgt.dev.drops)
        outcome["cookie_replies_seen"] = tgt.cookie_replies
    dt = time.perf_counter() - t0
    return {"target": target, "inputs": inputs, "seed": seed, "seconds": round(dt, 2),
            "inputs_per_second": round(inputs / dt) if dt else None, "violations": 0, "outcome": outcome}


# ---------------------------------------------------------------------------------------------------------------
# optional: atheris (coverage-guided) driving the same targets and checks
# ---------------------------------------------------------------------------------------------------------------

def run_atheris(target: str, inputs: int, seed: int) -> None:
    import atheris  # optional: pip install atheris

    atheris.instrument_all()   # wgpy is already imported: instrument every loaded Python function for coverage
    tgt = None if target == "parse" else ReceiveTarget(target, seed)
    corpus = World(seed).corpus if tgt is None else tgt.world.corpus

    def one(data: bytes) -> None:
        # the first byte picks a captured message to overlay the rest on, so atheris starts from real messages
        if data and data[0] < 128 and len(data) > 1:
            base = corpus[data[0] % len(corpus)]
            data = data[1:] + base[len(data) - 1:]
        if tgt is None:
            check_parse(data)
        else:
            tgt.feed(data)

    atheris.Setup([sys.argv[0], f"-runs={inputs}", f"-seed={seed}", "-print_final_stats=1"], one)
    atheris.Fuzz()
