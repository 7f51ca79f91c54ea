"""TUN offloads: TCP super-packets in (TSO), coalesced TCP super-packets out (GRO-like), through virtio_net_hdr.

With IFF_VNET_HDR every read from and write to the TUN starts with a 10-byte `struct virtio_net_hdr`
(include/uapi/linux/virtio_net.h, little-endian on every Linux host that matters here):

    u8 flags         VIRTIO_NET_HDR_F_NEEDS_CSUM: the L4 checksum field holds only the pseudo-header sum, the
                     sum over [csum_start, end) must still be folded in and stored at csum_start + csum_offset
    u8 gso_type      GSO_NONE, GSO_TCPV4, GSO_TCPV6 (| GSO_ECN)
    u16 hdr_len      length of the IP + TCP headers
    u16 gso_size     payload bytes per segment (the MSS)
    u16 csum_start   offset of the L4 header
    u16 csum_offset  offset of the checksum field inside the L4 header

Outbound (TUN -> peers): after TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) the kernel hands us TCP
segments of up to 64 KiB.  `split` cuts them into MTU-sized IP packets, each with its own IP header (length, id,
checksum) and TCP header (sequence number, flags, checksum), because WireGuard encrypts one IP packet per message.
The payload sums of all segments of a super-packet are computed in one vectorised numpy call (0.24 us per segment
against 2.6 us for a per-segment int.from_bytes); header fields are then added in incrementally.

Inbound (peers -> TUN): `coalesce` merges consecutive in-order TCP segments of one flow (same addresses, ports,
ACK, options, IP TTL/TOS/DF; every segment but the last of full size; no SYN/FIN/RST/URG/ECE/CWR) into one
super-packet written with GSO_TCPV4/6 and NEEDS_CSUM, as the kernel's GRO would: the local TCP stack gets one
large segment instead of dozens, and we make one write() instead of dozens.  Everything else is written as it
came, with an all-zero header.

Ones' complement sums use the identity sum16(data) == int(data) mod 0xFFFF (2**16 == 1 mod 0xFFFF): the result is
never 0 for non-zero data, so a computed checksum is never 0, which UDP requires and TCP tolerates.

Two implementations: `split_py` and `coalesce_py` here are the reference and the fallback; the native module
wgpy._offload (src/native/offload.c) does the same in C, byte for byte (tests/unit/test_native_offload.py compares
them, bench/fuzz_offload.py and scripts/fuzz-native.sh fuzz it under AddressSanitizer), with the GIL released for
the copies and checksums. `split` and `coalesce` are bound once, at import, to the native functions when
wgpy.native.load("_offload") finds them (not with WGPY_NATIVE=0), to the Python ones otherwise. The native
functions return `bytes` for every packet; the Python ones return bytearray for a packet they patched whole (a
completed NEEDS_CSUM packet, an uncut super-packet) and bytes otherwise: consumers take any bytes-like object.
"""

from __future__ import annotations

import struct

from .. import native
from ..routing.ip import checksum

try:
    import numpy as _np
except ImportError:     # pragma: no cover - numpy is a dependency; the scalar path stays correct without it
    _np = None

# include/uapi/linux/if_tun.h
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
# include/uapi/linux/virtio_net.h
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_ECN = 0x80
VNET_HDR_LEN = 10
VNET_HDR = struct.Struct("<BBHHHH")
VNET_NONE = bytes(VNET_HDR_LEN)

_PROTO_TCP = 6
_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_PSH, _TCP_ACK, _TCP_URG, _TCP_ECE, _TCP_CWR = 1, 2, 4, 8, 16, 32, 64, 128
_COALESCE_OK_FLAGS = _TCP_ACK | _TCP_PSH
_MAX_GSO_BYTES = 65535
_NUMPY_MIN_SEGMENTS = 4

_H = struct.Struct(">H")
_HH = struct.Struct(">HH")
_I = struct.Struct(">I")
_from_bytes = int.from_bytes


def _pseudo_sum(pkt: bytes, v6: bool) -> int:
    """Sum of the source and destination addresses as 16-bit words (the address part of the pseudo-header)."""
    if v6:
        return _from_bytes(pkt[8:40], "big") % 0xFFFF
    return _from_bytes(pkt[12:20], "big") % 0xFFFF


def complete_checksum(pkt: bytearray, csum_start: int, csum_offset: int) -> None:
    """Finish a CHECKSUM_PARTIAL packet in place: its checksum field already holds the pseudo-header sum."""
    body = memoryview(pkt)[csum_start:]
    c = checksum(body)
    body.release()
    at = csum_start + csum_offset
    pkt[at] = c >> 8
    pkt[at + 1] = c & 0xFF


def _segment_sums(payload: memoryview, mss: int, nseg: int) -> list[int]:
    """Per-segment 16-bit-word sums (mod 0xFFFF not applied) of payload cut every `mss` bytes."""
    n = len(payload)
    full = n // mss
    if _np is not None and not mss & 1 and full >= _NUMPY_MIN_SEGMENTS:
        words = _np.frombuffer(payload, dtype=">u2", count=full * (mss >> 1)).reshape(full, mss >> 1)
        sums = words.sum(axis=1, dtype=_np.uint32).tolist()
        if full < nseg:
            tail = payload[full * mss:]
            sums.append(_from_bytes(tail, "big") << 8 if len(tail) & 1 else _from_bytes(tail, "big"))
        return sums
    sums = []
    for off in range(0, n, mss):
        seg = payload[off:off + mss]
        sums.append(_from_bytes(seg, "big") << 8 if len(seg) & 1 else _from_bytes(seg, "big"))
    return sums


def split_py(buf: bytes, out: list) -> int:
    """Append the IP packets carried by one TUN read (virtio_net_hdr + packet) to `out`; return how many.

    0 means the read was dropped (shorter than the header, unknown GSO type, or a malformed super-packet)."""
    if len(buf) < VNET_HDR_LEN:
        return 0
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(buf)
    gso_type &= ~VIRTIO_NET_HDR_GSO_ECN
    if gso_type == VIRTIO_NET_HDR_GSO_NONE:
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            pkt = bytearray(memoryview(buf)[VNET_HDR_LEN:])
            if csum_start + csum_offset + 2 > len(pkt):
                return 0
            complete_checksum(pkt, csum_start, csum_offset)
            out.append(pkt)
        else:
            out.append(buf[VNET_HDR_LEN:])
        return 1
    if gso_type not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6) or not gso_size:
        return 0
    return _split_tcp(buf, gso_type == VIRTIO_NET_HDR_GSO_TCPV6, gso_size, csum_start, out)


def _split_tcp(buf: bytes, v6: bool, mss: int, l4: int, out: list) -> int:
    pkt = memoryview(buf)[VNET_HDR_LEN:]
    n = len(pkt)
    if l4 + 20 > n:
        return 0
    thl = (pkt[l4 + 12] >> 4) << 2
    hl = l4 + thl
    if thl < 20 or hl > n or l4 < (40 if v6 else 20):
        return 0
    payload = pkt[hl:]
    plen = n - hl
    if plen <= mss:                       # nothing to cut: finish the checksum and pass it on
        if (n - 40 if v6 else n) > 0xFFFF:
            return 0
        one = bytearray(pkt)
        if v6:
            _H.pack_into(one, 4, n - 40)
        else:
            _H.pack_into(one, 2, n)
            one[10] = one[11] = 0
            _H.pack_into(one, 10, checksum(one[:l4]))
        # the TCP checksum field holds the pseudo-header sum for the super-packet's length: recompute
        one[l4 + 16] = one[l4 + 17] = 0
        _H.pack_into(one, l4 + 16, checksum(memoryview(one)[l4:],
                                            _pseudo_sum(buf[VNET_HDR_LEN:], v6) + _PROTO_TCP + n - l4))
        out.append(one)
        return 1
    if (hl - 40 + mss if v6 else hl + mss) > 0xFFFF:     # a segment's length field would overflow
        return 0
    nseg = (plen + mss - 1) // mss
    sums = _segment_sums(payload, mss, nseg)
    hdr = bytearray(pkt[:hl])
    # TCP header sum without seq (4..8), flags word (12..14) and checksum (16..18)
    hdr[l4 + 16] = hdr[l4 + 17] = 0
    seq0 = _I.unpack_from(hdr, l4 + 4)[0]
    tflags = hdr[l4 + 13]
    doff_byte = hdr[l4 + 12] << 8
    tcp_base = (_from_bytes(hdr[l4:l4 + 4], "big") + _from_bytes(hdr[l4 + 8:l4 + 12], "big")
                + _from_bytes(hdr[l4 + 14:hl], "big")) % 0xFFFF + _PROTO_TCP + thl
    tcp_base += _pseudo_sum(hdr, v6)
    if v6:
        ip_base = 0
        ip_id = 0
    else:
        # IPv4 header sum without total length (2..4), id (4..6) and checksum (10..12)
        ip_id = _H.unpack_from(hdr, 4)[0]
        hdr[10] = hdr[11] = 0
        ip_base = (_from_bytes(hdr[0:2], "big") + _from_bytes(hdr[6:l4], "big")) % 0xFFFF
    first_flags = tflags & ~(_TCP_FIN | _TCP_PSH)
    mid_flags = first_flags & ~_TCP_CWR
    last_flags = tflags & ~_TCP_CWR
    # one struct per header layout packs every field that changes from segment to segment
    layout = _layouts.get((v6, l4, hl))
    if layout is None:
        layout = _layouts[(v6, l4, hl)] = _header_struct(v6, l4, hl)
    pack = layout.pack
    c_ack = bytes(hdr[l4 + 8:l4 + 13])
    c_win = bytes(hdr[l4 + 14:l4 + 16])
    c_tail = bytes(hdr[l4 + 18:hl])
    join = b"".join
    append = out.append
    off = 0
    last = nseg - 1
    if v6:
        c0, c1 = bytes(hdr[0:4]), bytes(hdr[6:l4 + 4])
    else:
        c0, c1, c2 = bytes(hdr[0:2]), bytes(hdr[6:10]), bytes(hdr[12:l4 + 4])
    for i in range(nseg):
        seglen = mss if i < last else plen - off
        seq = (seq0 + off) & 0xFFFFFFFF
        f = (first_flags if i < last else tflags) if i == 0 else (mid_flags if i < last else last_flags)
        tc = 0xFFFF - (tcp_base + seglen + (seq >> 16) + (seq & 0xFFFF) + doff_byte + f + sums[i]) % 0xFFFF
        if v6:
            h = pack(c0, hl - 40 + seglen, c1, seq, c_ack, f, c_win, tc, c_tail)
        else:
            ident = (ip_id + i) & 0xFFFF
            tot = hl + seglen
            h = pack(c0, tot, ident, c1, 0xFFFF - (ip_base + tot + ident) % 0xFFFF, c2, seq, c_ack, f, c_win, tc,
                     c_tail)
        append(join((h, payload[off:off + seglen])))
        off += seglen
    return nseg


_layouts: dict = {}


def _header_struct(v6: bool, l4: int, hl: int) -> struct.Struct:
    """IP + TCP header with the per-segment fields separate: lengths, IPv4 id and checksum, seq, flags, TCP sum."""
    tcp = f"I5sB2sH{hl - l4 - 18}s"
    if v6:
        return struct.Struct(f">4sH{l4 + 4 - 6}s" + tcp)
    return struct.Struct(f">2sHH4sH{l4 + 4 - 12}s" + tcp)


def coalesce_py(packets: list, out: list) -> None:
    """Append TUN write buffers (virtio_net_hdr + packet) for `packets` to `out`, merging TCP runs."""
    flows: dict = {}
    items: list = []
    unpack_seq = _I.unpack_from
    for pkt in packets:
        n = len(pkt)
        b0 = pkt[0] if n else 0
        if b0 == 0x45:
            if n < 40 or pkt[9] != _PROTO_TCP or pkt[6] & 0x3F or pkt[7]:
                items.append(pkt)            # not TCP, or a fragment
                continue
            l4 = 20
            key = bytes(pkt[12:24])
        elif b0 >> 4 == 6:
            if n < 60 or pkt[6] != _PROTO_TCP:
                items.append(pkt)
                continue
            l4 = 40
            key = bytes(pkt[8:44])
        else:
            items.append(pkt)
            continue
        hl = l4 + ((pkt[l4 + 12] >> 4) << 2)
        plen = n - hl
        tflags = pkt[l4 + 13]
        if plen <= 0 or hl < l4 + 20 or tflags & ~_COALESCE_OK_FLAGS:
            items.append(pkt)
            flows.pop(key, None)             # keep the flow's order: nothing may join a run across this one
            continue
        seq = unpack_seq(pkt, l4 + 4)[0]
        run = flows.get(key)
        if run is not None:
            # run: [first packet, payload pieces, next seq, mss, total payload, last len, hl, v6, psh]
            # equal along a run: IP TOS/flow label, DF, TTL/hop limit, and in TCP the ACK number, data offset,
            # window and options (everything but lengths, ids, seq, flags and checksums)
            first = run[0]
            if (seq == run[2] and plen <= run[3] and run[5] == run[3] and not run[8] and hl == run[6]
                    and run[4] + plen + hl <= _MAX_GSO_BYTES
                    and (pkt[1] == first[1] and pkt[6] == first[6] and pkt[8] == first[8] if l4 == 20
                         else pkt[1] == first[1] and pkt[2:4] == first[2:4] and pkt[7] == first[7])
                    and pkt[l4 + 8:l4 + 13] == first[l4 + 8:l4 + 13]
                    and pkt[l4 + 14:l4 + 16] == first[l4 + 14:l4 + 16]
                    and pkt[l4 + 18:hl] == first[l4 + 18:hl]):
                run[1].append(memoryview(pkt)[hl:])
                run[2] = (seq + plen) & 0xFFFFFFFF
                run[4] += plen
                run[5] = plen
                if tflags & _TCP_PSH:
                    run[8] = True
                continue
        run = [pkt, [memoryview(pkt)[hl:]], (seq + plen) & 0xFFFFFFFF, plen, plen, plen, hl, l4 == 40,
               bool(tflags & _TCP_PSH)]
        flows[key] = run
        items.append(run)
    append = out.append
    for it in items:
        if type(it) is not list:
            append(VNET_NONE + it)
        elif len(it[1]) == 1:
            append(VNET_NONE + it[0])
        else:
            append(_build_super(it))


def _build_super(run: list) -> bytes:
    first, pieces, mss, total, hl, v6, psh = run[0], run[1], run[3], run[4], run[6], run[7], run[8]
    l4 = 40 if v6 else 20
    hdr = bytearray(first[:hl])
    if psh:
        hdr[l4 + 13] |= _TCP_PSH         # the PSH of the run's last segment
    tcp_len = hl - l4 + total
    if v6:
        _H.pack_into(hdr, 4, tcp_len)
        gso = VIRTIO_NET_HDR_GSO_TCPV6
    else:
        _H.pack_into(hdr, 2, hl + total)
        hdr[10] = hdr[11] = 0
        _H.pack_into(hdr, 10, checksum(hdr[:20]))
        gso = VIRTIO_NET_HDR_GSO_TCPV4
    # CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum, the kernel trusts the rest
    ps = (_pseudo_sum(hdr, v6) + _PROTO_TCP + tcp_len) % 0xFFFF
    _H.pack_into(hdr, l4 + 16, ps)
    vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, hl, mss, l4, 16)
    return b"".join([vnet, hdr, *pieces])


# the native functions (src/native/offload.c) when built: identical output, bound once here
_native = native.load("_offload")
split = split_py if _native is None else _native.split
coalesce = coalesce_py if _native is None else _native.coalesce
