#!/usr/bin/env python3
"""Send one forged ICMP "fragmentation needed" (IPv4 type 3 code 4) or ICMPv6 "packet too big" (type 2) to a
host, about a UDP datagram it supposedly sent, for the hostile path MTU tests (tests/integration/test_hostile_icmp.py).

    icmp_spoof.py --src FORGED --dst TARGET --quote-src TARGET --quote-dst PEER --sport P --dport D --mtu M
                  [--size N] [--payload random-wg|none] [--count K] [--gap S]

The packet is built byte by byte and sent through a raw socket (IPPROTO_RAW: our own IP header, so the source
is whatever --src says). Its quote is the start of the datagram it claims to be about: an IPv4 (or IPv6) header
from --quote-src to --quote-dst of --size bytes (DF set), a UDP header from --sport to --dport, and then either
nothing (RFC 792's minimum quote: IP header + 8 bytes) or, with --payload random-wg, 16 bytes that look like a
WireGuard transport header with a random receiver index and counter (what a router that quotes more would carry,
as an off-path attacker can forge it). The family follows the addresses. Prints one JSON line {"sent": K}.
Only the --dst host receives anything; K is bounded by --count.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import time


def checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_header(src: bytes, dst: bytes, proto: int, total: int, df: bool) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, os.getpid() & 0xFFFF, 0x4000 if df else 0, 64, proto, 0,
                      src, dst)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]


def build(args) -> tuple[bytes, int]:
    src, dst = ipaddress.ip_address(args.src), ipaddress.ip_address(args.dst)
    qsrc, qdst = ipaddress.ip_address(args.quote_src), ipaddress.ip_address(args.quote_dst)
    payload = b""
    if args.payload == "random-wg":
        payload = b"\x04\x00\x00\x00" + os.urandom(4) + struct.pack("<Q", int.from_bytes(os.urandom(3), "little"))
    v6 = src.version == 6
    ip_len = 40 if v6 else 20
    udp = struct.pack("!HHHH", args.sport, args.dport, args.size - ip_len, 0) + payload
    if not v6:
        quoted = ipv4_header(qsrc.packed, qdst.packed, 17, args.size, True) + udp
        body = struct.pack("!BBHHH", 3, 4, 0, 0, args.mtu) + quoted
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        return ipv4_header(src.packed, dst.packed, 1, 20 + len(body), False) + body, socket.AF_INET
    quoted = struct.pack("!IHBB16s16s", 6 << 28, args.size - 40, 17, 64, qsrc.packed, qdst.packed) + udp
    body = struct.pack("!BBHI", 2, 0, 0, args.mtu) + quoted
    pseudo = src.packed + dst.packed + struct.pack("!II", len(body), 58)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 255, src.packed, dst.packed)
    return hdr + body, socket.AF_INET6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="forged source address (a router, or anything)")
    ap.add_argument("--dst", required=True, help="the host the ICMP goes to")
    ap.add_argument("--quote-src", required=True, help="source of the quoted datagram (the target itself)")
    ap.add_argument("--quote-dst", required=True, help="destination of the quoted datagram (the target's peer)")
    ap.add_argument("--sport", type=int, required=True)
    ap.add_argument("--dport", type=int, required=True, help="0: 'every peer at that address' in old wgpy")
    ap.add_argument("--mtu", type=int, required=True)
    ap.add_argument("--size", type=int, default=1468, help="claimed size of the quoted datagram (IP bytes)")
    ap.add_argument("--payload", choices=("none", "random-wg"), default="none")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--gap", type=float, default=0.1)
    args = ap.parse_args()
    pkt, family = build(args)
    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    for i in range(max(1, min(args.count, 10_000))):
        if i:
            time.sleep(args.gap)
        sock.sendto(pkt, (args.dst, 0))
        sent += 1
    print(json.dumps({"sent": sent, "bytes": len(pkt)}))


if __name__ == "__main__":
    main()
