#!/usr/bin/env python3
"""Hostile traffic against a WireGuard UDP port, for the namespace tests and scripts/reliability.sh.

    hostile.py scan HOST PORT --pubkey B64 [--count N]
        Stealth scan: random datagrams of many sizes, truncated and over-long messages of every type, handshake
        initiations with a valid mac1 for a WRONG public key, real Noise initiations with the right mac1 from a
        static key the target does not know, responses/cookie replies/transport messages with random indices.
        Listens on its socket while it sends and for --linger seconds after.

    hostile.py flood HOST PORT --pubkey B64 --sources ADDR[,ADDR...] [--seconds S] [--gso]
        Handshake flood: initiations with a valid mac1 for the target's public key (random bodies, so they fail
        only at the Noise step, after the Diffie-Hellman), round-robin from one socket per source address, as
        fast as one core can send them (--gso: 64 datagrams per system call with UDP_SEGMENT). Counts the cookie
        replies that come back.

    hostile.py flood HOST PORT --kind transport --sources ADDR[,ADDR...] [--rate PPS] [--size N] ...
        Transport-type garbage: type-4 messages of N bytes (default 96) with random receiver indices and
        counters, which the kernel steers into the transport queue beside the sessions' real packets; the
        target drops them as unknown_index. --rate paces the flood (packets per second; default: as fast as
        one core sends them). --pubkey is not needed.

    hostile.py replay HOST PORT --pcap FILE --sport N
        Resend, byte for byte, every UDP payload in FILE whose source port is N (captured WireGuard messages).

Each prints one JSON line: what was sent and what came back ({"sent": N, "replies": {type: count}, ...}).
Only the target given on the command line receives anything; every run is bounded by its count or --seconds.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import Counter

from wgpy import crypto
from wgpy.constants import LABEL_MAC1
from wgpy_testkit.capture import captured_messages

SOL_UDP, UDP_SEGMENT = 17, 103


def mac1_key(pub: bytes) -> bytes:
    return crypto.hash_(LABEL_MAC1 + pub)


def with_mac1(body: bytes, key: bytes) -> bytes:
    return body + crypto.mac(key, body) + bytes(16)


def garbage_initiation(rng: random.Random, pub: bytes) -> bytes:
    """148 bytes: type 1, random sender/ephemeral/ciphertexts, mac1 valid for `pub`, mac2 zero."""
    return with_mac1(b"\x01\x00\x00\x00" + rng.randbytes(112), mac1_key(pub))


def noise_initiation_from_stranger(target_pub: bytes, rng: random.Random) -> bytes:
    """A genuine initiation (right mac1, right encryption to the target) from a static key nobody configured."""
    from wgpy.protocol import noise
    from wgpy.protocol.cookie import CookieGenerator
    from wgpy.protocol.messages import INITIATION_MAC1_OFFSET
    ident = noise.StaticIdentity(rng.randbytes(32))
    hs = noise.new_handshake(ident, target_pub, None)
    msg = noise.create_initiation(ident, hs, rng.getrandbits(32), time.time(), rng.randbytes(32))
    return CookieGenerator(hs.mac1_key, hs.cookie_key).add_macs(msg.pack(), INITIATION_MAC1_OFFSET, 0.0)


def scan_inputs(pub: bytes, count: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    wrong = crypto.public_from_private(rng.randbytes(32))
    out: list[tuple[str, bytes]] = []
    sizes = [0, 1, 3, 4, 5, 16, 31, 32, 33, 63, 64, 65, 91, 92, 93, 147, 148, 149, 200, 1200, 1472]
    while len(out) < count:
        k = len(out) % 8
        if k == 0:
            out.append(("random", rng.randbytes(rng.choice(sizes))))
        elif k == 1:                                        # right type word, wrong size
            t = rng.randrange(1, 5)
            size = rng.choice([s for s in sizes if s >= 4 and s not in (148, 92, 64)] if t != 4 else [4, 16, 31])
            out.append(("truncated", bytes((t, 0, 0, 0)) + rng.randbytes(size - 4)))
        elif k == 2:
            out.append(("wrong_key_initiation", garbage_initiation(rng, wrong)))
        elif k == 3:
            out.append(("stranger_initiation", noise_initiation_from_stranger(pub, rng)))
        elif k == 4:                                        # a response to no handshake of the target's
            out.append(("response", with_mac1(b"\x02\x00\x00\x00" + rng.randbytes(56), mac1_key(pub))))
        elif k == 5:
            out.append(("cookie_reply", b"\x03\x00\x00\x00" + rng.randbytes(60)))
        elif k == 6:
            out.append(("transport", b"\x04\x00\x00\x00" + rng.randbytes(rng.choice([28, 60, 1200]))))
        else:                                               # right mac1, garbage inside
            out.append(("garbage_initiation_right_mac1", garbage_initiation(rng, pub)))
    return out


def drain(sock: socket.socket, replies: Counter, nbytes: list[int]) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return   # ICMP errors
        replies[str(data[0]) if data else "empty"] += 1
        nbytes[0] += len(data)


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def cmd_scan(args) -> dict:
    pub = base64.b64decode(args.pubkey)
    inputs = scan_inputs(pub, args.count, args.seed)
    sock = socket.socket(family_of(args.host), socket.SOCK_DGRAM)
    sock.setblocking(False)
    replies: Counter = Counter()
    nbytes = [0]
    kinds: Counter = Counter()
    for kind, data in inputs:
        try:
            sock.sendto(data, (args.host, args.port))
        except BlockingIOError:
            select.select([], [sock], [], 1.0)
            sock.sendto(data, (args.host, args.port))
        kinds[kind] += 1
        drain(sock, replies, nbytes)
        if args.pace:
            time.sleep(args.pace)
    end = time.monotonic() + args.linger
    while time.monotonic() < end:
        select.select([sock], [], [], max(0.0, end - time.monotonic()))
        drain(sock, replies, nbytes)
    return {"mode": "scan", "sent": len(inputs), "kinds": dict(kinds), "replies": dict(replies),
            "reply_bytes": nbytes[0]}


def garbage_transport(rng: random.Random, size: int) -> bytes:
    """`size` bytes: type 4, a random receiver index and counter, random ciphertext."""
    return b"\x04\x00\x00\x00" + rng.randbytes(max(size, 32) - 4)


def cmd_flood(args) -> dict:
    rng = random.Random(args.seed)
    if args.kind == "transport":
        msgs = [garbage_transport(rng, args.size) for _ in range(64)]
    else:
        if not args.pubkey:
            raise SystemExit("flood: --pubkey is needed for initiations")
        msgs = [garbage_initiation(rng, base64.b64decode(args.pubkey)) for _ in range(64)]
    socks = []
    for src in args.sources.split(","):
        s = socket.socket(family_of(src), socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        socks.append(s)
    dst = (args.host, args.port)
    replies: Counter = Counter()
    nbytes = [0]
    sent = 0
    blocked = 0
    gso_blob = b"".join(msgs)
    gso_cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(msgs[0])))]
    rate = args.rate
    t0 = time.monotonic()
    end = t0 + args.seconds
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    i = 0
    nsocks = len(socks)
    while True:
        s = socks[i % nsocks]
        i += 1
        try:
            if args.gso:
                s.sendmsg([gso_blob], gso_cmsg, 0, dst)
                sent += len(msgs)
            else:
                s.sendto(msgs[i & 63], dst)
                sent += 1
        except BlockingIOError:
            blocked += 1
        except OSError:
            blocked += 1
        if rate and i & 7 == 0:
            ahead = t0 + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        if i & 1023 == 0:
            for s2 in socks:
                drain(s2, replies, nbytes)
            if time.monotonic() >= end or stop:
                break
    seconds = time.monotonic() - t0
    linger = time.monotonic() + 0.5
    while time.monotonic() < linger:
        for s2 in socks:
            drain(s2, replies, nbytes)
        time.sleep(0.05)
    return {"mode": "flood", "sent": sent, "seconds": round(seconds, 2), "rate_pps": round(sent / seconds),
            "sources": nsocks, "blocked": blocked, "replies": dict(replies), "reply_bytes": nbytes[0],
            "gso": bool(args.gso), "kind": args.kind}


def cmd_replay(args) -> dict:
    packets = captured_messages(args.pcap, args.sport)
    sock = socket.socket(family_of(args.host), socket.SOCK_DGRAM)
    sock.setblocking(False)
    replies: Counter = Counter()
    nbytes = [0]
    kinds: Counter = Counter()
    for p in packets:
        sock.sendto(p, (args.host, args.port))
        kinds[str(p[0])] += 1
        drain(sock, replies, nbytes)
        time.sleep(0.0005)
    end = time.monotonic() + args.linger
    while time.monotonic() < end:
        select.select([sock], [], [], max(0.0, end - time.monotonic()))
        drain(sock, replies, nbytes)
    return {"mode": "replay", "sent": len(packets), "kinds": dict(kinds), "replies": dict(replies),
            "reply_bytes": nbytes[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("scan", "flood", "replay"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--linger", type=float, default=1.0)
        if name == "scan":
            p.add_argument("--pubkey", required=True)
        elif name == "flood":
            p.add_argument("--pubkey")
        if name == "scan":
            p.add_argument("--count", type=int, default=2000)
            p.add_argument("--pace", type=float, default=0.0)
        elif name == "flood":
            p.add_argument("--sources", required=True)
            p.add_argument("--seconds", type=float, default=10.0)
            p.add_argument("--gso", action="store_true")
            p.add_argument("--kind", choices=("initiation", "transport"), default="initiation")
            p.add_argument("--size", type=int, default=96)
            p.add_argument("--rate", type=float, default=0.0)
        else:
            p.add_argument("--pcap", required=True)
            p.add_argument("--sport", type=int, required=True)
    args = ap.parse_args(argv)
    res = {"scan": cmd_scan, "flood": cmd_flood, "replay": cmd_replay}[args.mode](args)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
