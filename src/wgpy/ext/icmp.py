"""What a router answers for a packet too big for the next hop, built as the kernel would (sans-IO): an ICMP
"fragmentation needed" (RFC 792/1191) or ICMPv6 "packet too big" (RFC 4443) for the sender, or, for an IPv4
packet without DF, its fragments (RFC 791). The path MTU extension (ext/pmtu.py) uses them for packets above a
peer's limit; the answers go into the TUN, to the local stack.
"""

from __future__ import annotations

import ipaddress
import struct

from ..routing.ip import checksum

__all__ = ["icmp_too_big", "fragment_ipv4"]

_ICMP_ERROR_TYPES_V4 = frozenset((3, 4, 5, 11, 12))   # never answer an ICMP error with one (RFC 1122)


def icmp_too_big(pkt: bytes, mtu: int) -> bytes | None:
    """An ICMP error telling the sender of `pkt` that the next link carries at most `mtu` bytes:
    IPv4 type 3 code 4 "fragmentation needed" with the next-hop MTU (RFC 1191), IPv6 type 2 "packet too big"
    (RFC 4443), quoting as much of `pkt` as the minimum MTU allows. Its source is `pkt`'s destination (the far
    end of the tunnel, routed through the interface, so reverse-path filters accept it; the interface's own
    address would be dropped as a martian) and its destination is `pkt`'s source. None when no error may be
    sent: for an ICMP error, a non-first IPv4 fragment, or a multicast/unspecified/loopback source."""
    v = pkt[0] >> 4 if pkt else 0
    if v == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 15) * 4
        if pkt[9] == 1 and len(pkt) > ihl and pkt[ihl] in _ICMP_ERROR_TYPES_V4:
            return None
        if ((pkt[6] & 0x1F) << 8) | pkt[7]:
            return None
        src, dst = pkt[12:16], pkt[16:20]
        a = ipaddress.IPv4Address(src)
        if a.is_multicast or a.is_unspecified or a.is_loopback or src == b"\xff\xff\xff\xff":
            return None
        quote = pkt[:548]
        body = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quote
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        total = 20 + len(body)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, total, 0, 0, 64, 1, 0, dst, src)
        hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
        return hdr + body
    if v == 6 and len(pkt) >= 40:
        if pkt[6] == 58 and len(pkt) > 40 and pkt[40] < 128:
            return None
        src, dst = pkt[8:24], pkt[24:40]
        a = ipaddress.IPv6Address(src)
        if a.is_multicast or a.is_unspecified or a.is_loopback:
            return None
        quote = pkt[:1280 - 48]
        body = struct.pack("!BBHI", 2, 0, 0, mtu) + quote
        pseudo = dst + src + struct.pack("!II", len(body), 58)
        body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
        hdr = struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 64, dst, src)
        return hdr + body
    return None


def fragment_ipv4(pkt: bytes, mtu: int) -> list[bytes]:
    """Cut an IPv4 packet without DF into fragments of at most `mtu` bytes (RFC 791); [] if it cannot be."""
    ihl = (pkt[0] & 15) * 4
    total = (pkt[2] << 8) | pkt[3]
    if ihl < 20 or total > len(pkt) or total <= ihl:
        return []
    step = (mtu - ihl) & ~7
    if step < 8:
        return []
    flags_off = (pkt[6] << 8) | pkt[7]
    base_off = flags_off & 0x1FFF
    more = flags_off & 0x2000
    payload = pkt[ihl:total]
    out = []
    for start in range(0, len(payload), step):
        chunk = payload[start:start + step]
        last = start + step >= len(payload)
        fo = (base_off + start // 8) | (more if last else 0x2000)
        hdr = bytearray(pkt[:ihl])
        struct.pack_into("!H", hdr, 2, ihl + len(chunk))
        struct.pack_into("!H", hdr, 6, fo)
        struct.pack_into("!H", hdr, 10, 0)
        struct.pack_into("!H", hdr, 10, checksum(hdr))
        out.append(bytes(hdr) + chunk)
    return out
