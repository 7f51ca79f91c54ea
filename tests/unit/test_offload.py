"""TUN offload helpers: splitting TSO super-packets and coalescing TCP runs, checked against a naive reference."""

from __future__ import annotations

import ipaddress
import os
import random
import struct

import pytest

from wgpy.io import offload
from wgpy.io.offload import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
                             VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR, VNET_HDR_LEN, coalesce, split)


# ---- naive reference ------------------------------------------------------------------------------------------

def ref_sum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo(pkt: bytes, l4len: int) -> bytes:
    if pkt[0] >> 4 == 4:
        return pkt[12:20] + struct.pack(">BBH", 0, 6, l4len)
    return pkt[8:40] + struct.pack(">IxxxB", l4len, 6)


def l4_offset(pkt: bytes) -> int:
    return (pkt[0] & 15) * 4 if pkt[0] >> 4 == 4 else 40


def tcp_ok(pkt: bytes) -> bool:
    l4 = l4_offset(pkt)
    return ref_sum(pseudo(pkt, len(pkt) - l4) + pkt[l4:]) == 0xFFFF


def ip4_ok(pkt: bytes) -> bool:
    return ref_sum(pkt[:20]) == 0xFFFF


def tcp_packet(v6: bool, payload: bytes, seq: int = 1000, flags: int = 0x18, options: bytes = b"",
               ident: int = 7, ack: int = 555, csum: str = "full", src_port: int = 40000) -> bytes:
    thl = 20 + len(options)
    tcp = struct.pack(">HHIIBBHHH", src_port, 5201, seq, ack, (thl // 4) << 4, flags, 512, 0, 0) + options
    if v6:
        ip = struct.pack(">IHBB", 0x60000000, thl + len(payload), 6, 64) + \
            ipaddress.ip_address("fd00::1").packed + ipaddress.ip_address("fd00::2").packed
    else:
        ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + thl + len(payload), ident, 0x4000, 64, 6, 0,
                                   bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
        struct.pack_into(">H", ip, 10, 0xFFFF - ref_sum(bytes(ip)))
        ip = bytes(ip)
    pkt = bytearray(ip + tcp + payload)
    l4 = len(ip)
    if csum == "full":
        struct.pack_into(">H", pkt, l4 + 16, 0xFFFF - ref_sum(pseudo(bytes(pkt), len(pkt) - l4) + bytes(pkt[l4:])))
    elif csum == "partial":       # what the kernel hands over with NEEDS_CSUM: the pseudo-header sum only
        struct.pack_into(">H", pkt, l4 + 16, ref_sum(pseudo(bytes(pkt), len(pkt) - l4)))
    return bytes(pkt)


def tso_read(v6: bool, payload: bytes, mss: int, **kw) -> bytes:
    pkt = tcp_packet(v6, payload, csum="partial", **kw)
    l4 = l4_offset(pkt)
    thl = (pkt[l4 + 12] >> 4) * 4
    gso = VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, l4 + thl, mss, l4, 16) + pkt


TS_OPTIONS = b"\x01\x01\x08\x0a" + struct.pack(">II", 123456, 654321)


# ---- split ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("mss,size", [(1368, 65000), (1368, 1368 * 3 + 1), (1380, 2760), (1368, 1369),
                                      (1367, 9000), (100, 350), (1368, 1368 * 7)])
@pytest.mark.parametrize("flags", [0x18, 0x19, 0x98, 0x10])
def test_split_matches_reference(v6: bool, mss: int, size: int, flags: int) -> None:
    payload = os.urandom(size)
    out: list = []
    n = split(tso_read(v6, payload, mss, flags=flags, options=TS_OPTIONS, seq=0xFFFFF000), out)
    nseg = (size + mss - 1) // mss
    assert n == nseg == len(out)
    got = b""
    for i, seg in enumerate(out):
        seg = bytes(seg)
        l4 = l4_offset(seg)
        assert tcp_ok(seg), f"bad TCP checksum in segment {i}"
        if not v6:
            assert ip4_ok(seg), f"bad IPv4 checksum in segment {i}"
            assert struct.unpack_from(">H", seg, 2)[0] == len(seg)
            assert struct.unpack_from(">H", seg, 4)[0] == 7 + i
        else:
            assert struct.unpack_from(">H", seg, 4)[0] == len(seg) - 40
        body = seg[l4 + 20 + len(TS_OPTIONS):]
        assert len(body) == (mss if i < nseg - 1 else size - mss * (nseg - 1))
        assert struct.unpack_from(">I", seg, l4 + 4)[0] == (0xFFFFF000 + i * mss) & 0xFFFFFFFF
        f = seg[l4 + 13]
        if i < nseg - 1:
            assert not f & 0x09, "FIN/PSH only on the last segment"
        else:
            assert f & 0x09 == flags & 0x09
        if i > 0:
            assert not f & 0x80, "CWR only on the first segment"
        else:
            assert f & 0x80 == flags & 0x80
        assert seg[l4 + 20:l4 + 20 + len(TS_OPTIONS)] == TS_OPTIONS
        got += body
    assert got == payload


def test_split_without_numpy_is_identical(monkeypatch) -> None:
    payload = os.urandom(20000)
    a: list = []
    offload.split_py(tso_read(False, payload, 1368), a)
    monkeypatch.setattr(offload, "_np", None)
    b: list = []
    offload.split_py(tso_read(False, payload, 1368), b)
    assert a == b


@pytest.mark.parametrize("v6", [False, True])
def test_plain_read_passes_through(v6: bool) -> None:
    pkt = tcp_packet(v6, b"hello")
    out: list = []
    assert split(bytes(VNET_HDR_LEN) + pkt, out) == 1
    assert bytes(out[0]) == pkt


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size", [0, 1, 2, 5, 1000, 1367])
def test_needs_csum_single_packet_is_completed(v6: bool, size: int) -> None:
    pkt = tcp_packet(v6, os.urandom(size), csum="partial")
    l4 = l4_offset(pkt)
    out: list = []
    assert split(VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, l4, 16) + pkt, out) == 1
    assert tcp_ok(bytes(out[0]))


def test_udp_needs_csum_never_zero() -> None:
    # a UDP payload chosen so that the checksum computes to zero must be sent as 0xFFFF (RFC 768)
    for _ in range(2000):
        payload = os.urandom(6)
        ip = bytes([0x45, 0, 0, 34, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
        udp = bytearray(struct.pack(">HHHH", 1, 2, 14, 0) + payload)
        ps = ref_sum(ip[12:20] + struct.pack(">BBH", 0, 17, 14))
        struct.pack_into(">H", udp, 6, ps)
        out: list = []
        split(VNET_HDR.pack(1, 0, 0, 0, 20, 6) + ip + bytes(udp), out)
        c = struct.unpack_from(">H", out[0], 26)[0]
        assert c != 0
        assert ref_sum(ip[12:20] + struct.pack(">BBH", 0, 17, 14) + bytes(out[0][20:])) == 0xFFFF


def test_split_drops_unknown_gso_and_malformed() -> None:
    out: list = []
    assert split(VNET_HDR.pack(1, 3, 28, 1000, 20, 6) + bytes(3000), out) == 0       # UDP UFO: not enabled
    assert split(VNET_HDR.pack(1, 1, 40, 1000, 20, 16) + bytes(30), out) == 0        # truncated
    assert split(VNET_HDR.pack(1, 1, 40, 0, 20, 16) + bytes(3000), out) == 0         # gso_size 0
    assert split(b"", out) == 0 and split(bytes(9), out) == 0                         # no virtio_net_hdr
    v6 = tso_read(True, bytes(3000), 1000)
    assert split(v6[:6] + struct.pack("<H", 20) + v6[8:], out) == 0                   # IPv6 with l4 < 40
    v4 = tso_read(False, bytes(3000), 1000)
    assert split(v4[:4] + struct.pack("<H", 65535 - 30) + v4[6:] + bytes(67000), out) == 0   # past 16 bits
    assert out == []


# ---- coalesce -------------------------------------------------------------------------------------------------

def parse_write(buf: bytes) -> tuple[tuple, bytes]:
    return VNET_HDR.unpack_from(buf), buf[VNET_HDR_LEN:]


def segments(v6: bool, n: int, mss: int = 1368, seq: int = 1, last: int | None = None, **kw) -> list[bytes]:
    out = []
    for i in range(n):
        size = mss if i < n - 1 or last is None else last
        out.append(tcp_packet(v6, bytes([i & 0xFF]) * size, seq=seq + i * mss, flags=0x10, ident=i, **kw))
    return out


@pytest.mark.parametrize("v6", [False, True])
def test_coalesce_run_into_one_gso_write(v6: bool) -> None:
    segs = segments(v6, 10, last=500, options=TS_OPTIONS)
    out: list = []
    coalesce(segs, out)
    assert len(out) == 1
    (flags, gso, hdr_len, gso_size, cstart, coff), pkt = parse_write(out[0])
    l4 = 40 if v6 else 20
    assert flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert gso == (VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4)
    assert (hdr_len, gso_size, cstart, coff) == (l4 + 20 + len(TS_OPTIONS), 1368, l4, 16)
    hl = hdr_len
    assert pkt[hl:] == b"".join(s[hl:] for s in segs)
    if v6:
        assert struct.unpack_from(">H", pkt, 4)[0] == len(pkt) - 40
    else:
        assert struct.unpack_from(">H", pkt, 2)[0] == len(pkt) and ip4_ok(pkt)
    # the checksum field holds the pseudo-header sum, as CHECKSUM_PARTIAL requires
    assert struct.unpack_from(">H", pkt, l4 + 16)[0] == ref_sum(pseudo(pkt, len(pkt) - l4)) % 0xFFFF
    # and finishing it gives a valid TCP packet
    done = bytearray(pkt)
    offload.complete_checksum(done, cstart, coff)
    assert tcp_ok(bytes(done))


def test_split_then_coalesce_round_trip() -> None:
    payload = os.urandom(60000)
    segs: list = []
    split(tso_read(False, payload, 1368, options=TS_OPTIONS, flags=0x18), segs)
    out: list = []
    coalesce(segs, out)             # bytearrays, as split makes them
    assert len(out) == 1
    _, pkt = parse_write(out[0])
    assert pkt[52:] == payload
    assert pkt[33] & 0x08, "PSH of the last segment is kept"


def test_coalesce_keeps_what_must_stay_apart() -> None:
    a = segments(False, 3)
    gap = segments(False, 2, seq=1 + 10 * 1368)                     # a hole in the sequence space
    other = segments(False, 2, src_port=40001)                      # another flow, interleaved
    fin = tcp_packet(False, b"x" * 1368, seq=1 + 12 * 1368, flags=0x11)
    udp = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]) + bytes(8)
    pkts = [a[0], other[0], a[1], other[1], a[2], udp, gap[0], gap[1], fin]
    out: list = []
    coalesce(pkts, out)
    heads = [parse_write(b) for b in out]
    sizes = [(h[1], len(p)) for h, p in heads]
    # a (3 segs) | other (2) | udp | gap (2) | fin alone
    assert [h[1] for h, _ in heads] == [1, 1, 0, 1, 0]
    assert sizes[0][1] == 40 + 3 * 1368 and sizes[1][1] == 40 + 2 * 1368
    assert heads[2][1] == udp and heads[4][1] == fin


def test_coalesce_stops_after_short_segment_and_on_option_change() -> None:
    segs = segments(False, 2, last=700) + segments(False, 1, seq=1 + 1368 + 700)
    out: list = []
    coalesce(segs, out)
    assert len(out) == 2
    ts2 = b"\x01\x01\x08\x0a" + struct.pack(">II", 123457, 654321)
    s = segments(False, 1, options=TS_OPTIONS) + segments(False, 1, seq=1 + 1368, options=ts2)
    out = []
    coalesce(s, out)
    assert len(out) == 2
    assert all(parse_write(b)[0] == (0, 0, 0, 0, 0, 0) for b in out)


def test_coalesce_random_streams_preserve_bytes() -> None:
    rng = random.Random(5)
    for _ in range(50):
        flows = {port: 1 for port in (1, 2, 3)}
        pkts = []
        for _ in range(rng.randrange(1, 40)):
            port = rng.choice(list(flows))
            size = rng.choice([1368, 1368, 1368, 200])
            pkts.append(tcp_packet(False, os.urandom(size), seq=flows[port], flags=rng.choice([0x10, 0x18]),
                                   src_port=port))
            flows[port] += size
        out: list = []
        coalesce(pkts, out)
        # per flow, the bytes delivered in order equal the bytes sent in order
        for port in flows:
            sent = b"".join(p[40:] for p in pkts if struct.unpack_from(">H", p, 20)[0] == port)
            got = b"".join(parse_write(b)[1][40:] for b in out
                           if struct.unpack_from(">H", parse_write(b)[1], 20)[0] == port)
            assert got == sent
