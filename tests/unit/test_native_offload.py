"""The native TUN offloads (src/native/offload.c, wgpy._offload) against the Python reference (io/offload.py).

Differential: split and coalesce of the C module must give the same return values and the same output bytes as
split_py and coalesce_py for well-formed super-packets and packet lists (IPv4/IPv6, every MSS, options, flags),
for malformed ones (truncated headers, odd offsets, unknown GSO types) and for random bytes. The C module returns
`bytes` everywhere; the reference sometimes bytearray, so outputs are compared as bytes. The module is imported
directly, so these tests run under WGPY_NATIVE=0 too; they skip when it is not built, except with CI=true.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import random
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from wgpy.io import offload
from wgpy.io.offload import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
                             VNET_HDR, coalesce_py, split_py)

try:
    _c = importlib.import_module("wgpy._offload")
    _why = ""
except ImportError as e:        # pragma: no cover - depends on the build
    _c = None
    _why = str(e)

needs_c = pytest.mark.skipif(_c is None, reason=f"wgpy._offload is not built ({_why}): "
                             "run `.venv/bin/python setup.py build_ext --inplace` (needs gcc and python3-dev)")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_native_module_built_in_ci() -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("only enforced with CI=true")
    assert _c is not None, f"CI builds the native data path, but wgpy._offload did not build: {_why}"


@pytest.mark.skipif(_c is None or os.environ.get("WGPY_NATIVE") == "0", reason="native path not selected")
def test_offload_binds_the_native_functions() -> None:
    assert offload.split is _c.split and offload.coalesce is _c.coalesce


# ---- building packets, and checking them without the code under test ------------------------------------------

def ref_sum(data: bytes) -> int:
    """RFC 1071 ones' complement sum, folded (0xFFFF for a correct packet with its checksum)."""
    data = bytes(data)
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo(pkt: bytes, l4: int) -> bytes:
    n = len(pkt) - l4
    if pkt[0] >> 4 == 4:
        return pkt[12:20] + struct.pack(">BBH", 0, 6, n & 0xFFFF)     # (an oversized test packet wraps)
    return pkt[8:40] + struct.pack(">IxxxB", n, 6)


def tcp_packet(v6: bool, payload: bytes, seq: int = 1000, flags: int = 0x18, options: bytes = b"", ident: int = 7,
               ack: int = 555, partial: bool = False, port: int = 40000, tos: int = 0, ttl: int = 64,
               ip_flags: int = 0x4000, window: int = 512) -> bytes:
    thl = 20 + len(options)
    tcp = struct.pack(">HHIIBBHHH", port, 5201, seq & 0xFFFFFFFF, ack, (thl // 4) << 4, flags, window, 0, 0)
    if v6:
        ip = struct.pack(">IHBB", 0x60000000 | tos << 20, (thl + len(payload)) & 0xFFFF, 6, ttl) + \
            ipaddress.ip_address("fd00::1").packed + ipaddress.ip_address("fd00::2").packed
    else:
        ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, tos, (20 + thl + len(payload)) & 0xFFFF, ident, ip_flags,
                                   ttl, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
        struct.pack_into(">H", ip, 10, 0xFFFF - ref_sum(bytes(ip)))
    pkt = bytearray(bytes(ip) + tcp + options + payload)
    l4 = len(ip)
    s = ref_sum(pseudo(bytes(pkt), l4))
    struct.pack_into(">H", pkt, l4 + 16, s if partial else 0xFFFF - ref_sum(pseudo(bytes(pkt), l4) + pkt[l4:]))
    return bytes(pkt)


def tso_read(v6: bool, payload: bytes, mss: int, **kw) -> bytes:
    pkt = tcp_packet(v6, payload, partial=True, **kw)
    l4 = 40 if v6 else 20
    hl = l4 + (pkt[l4 + 12] >> 4) * 4
    gso = VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, hl, mss, l4, 16) + pkt


def both_split(buf) -> tuple[int, list[bytes]]:
    a: list = []
    b: list = []
    ra = split_py(buf, a)
    rb = _c.split(buf, b)
    assert all(type(x) is bytes for x in b)
    assert rb == ra and [bytes(x) for x in a] == b, "native split differs from split_py"
    assert rb == len(b)
    return rb, b


def both_coalesce(packets) -> list[bytes]:
    a: list = []
    b: list = []
    assert coalesce_py(packets, a) is None and _c.coalesce(packets, b) is None
    assert all(type(x) is bytes for x in b)
    assert [bytes(x) for x in a] == b, "native coalesce differs from coalesce_py"
    return b


def check_segment(seg: bytes, v6: bool) -> None:
    l4 = 40 if v6 else 20
    assert ref_sum(pseudo(seg, l4) + seg[l4:]) == 0xFFFF, "TCP checksum"
    if v6:
        assert struct.unpack_from(">H", seg, 4)[0] == len(seg) - 40
    else:
        assert ref_sum(seg[:20]) == 0xFFFF, "IPv4 checksum"
        assert struct.unpack_from(">H", seg, 2)[0] == len(seg)


OPTIONS = st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(range(8)), b"\x02\x04\x05\xb4", bytes(40),
                           b"\x01" * 12])
MSS = st.one_of(st.sampled_from([1, 2, 3, 7, 536, 1199, 1368, 1369, 1380, 1440, 8960, 65535 - 100]),
                st.integers(1, 4000))


# ---- split ----------------------------------------------------------------------------------------------------

@needs_c
@SETTINGS
@given(v6=st.booleans(), size=st.integers(0, 66000), mss=MSS, options=OPTIONS, flags=st.integers(0, 255),
       seq=st.integers(0, 0xFFFFFFFF), ident=st.integers(0, 0xFFFF), ecn=st.booleans(), vflags=st.sampled_from([0, 1, 3]))
@example(v6=False, size=65000, mss=1368, options=b"", flags=0x18, seq=0xFFFFF000, ident=0xFFF0, ecn=False, vflags=1)
@example(v6=True, size=1368 * 3 + 1, mss=1368, options=b"", flags=0xC9, seq=1, ident=0, ecn=True, vflags=1)
def test_split_tso_matches_and_checksums_are_valid(v6, size, mss, options, flags, seq, ident, ecn, vflags) -> None:
    size = min(size, mss * 100)                    # at most 100 segments: the reference is slow
    payload = random.Random(size ^ mss).randbytes(size)
    buf = bytearray(tso_read(v6, payload, mss, options=options, flags=flags, seq=seq, ident=ident))
    buf[0] = vflags
    if ecn:
        buf[1] |= 0x80
    n, segs = both_split(bytes(buf))
    hl = (40 if v6 else 20) + 20 + len(options)
    if (hl - 40 if v6 else hl) + min(mss, size) > 0xFFFF:
        assert n == 0
        return
    assert n == max(1, -(-size // mss))
    for seg in segs:
        check_segment(seg, v6)
    assert b"".join(s[hl:] for s in segs) == payload


@needs_c
@SETTINGS
@given(v6=st.booleans(), size=st.integers(0, 3000), mss=st.integers(0, 2000), options=OPTIONS,
       gso=st.sampled_from([0, 1, 3, 4, 5, 0x80, 0x81, 0x84, 0xFF]), vflags=st.integers(0, 255),
       csum_start=st.one_of(st.integers(0, 80), st.integers(0, 0xFFFF)), csum_offset=st.integers(0, 40),
       cut=st.integers(0, 100), flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4))
def test_split_malformed_matches(v6, size, mss, options, gso, vflags, csum_start, csum_offset, cut, flips) -> None:
    pkt = bytearray(tcp_packet(v6, bytes(range(256)) * (size // 256) + bytes(size % 256), options=options,
                               partial=True))
    for at, val in flips:
        if at < len(pkt):
            pkt[at] = val
    buf = VNET_HDR.pack(vflags, gso, 0, mss, csum_start, csum_offset) + bytes(pkt[:max(0, len(pkt) - cut)])
    both_split(buf)


@needs_c
@SETTINGS
@given(st.binary(max_size=300))
def test_split_random_bytes_matches(buf: bytes) -> None:
    both_split(buf)
    both_split(bytearray(buf))
    both_split(memoryview(buf))


@needs_c
@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size", [0, 1, 2, 5, 1000, 1367])
def test_split_needs_csum_gso_none(v6: bool, size: int) -> None:
    pkt = tcp_packet(v6, os.urandom(size), partial=True)
    n, out = both_split(VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 40 if v6 else 20, 16) + pkt)
    assert n == 1
    check_segment(out[0], v6)


@needs_c
def test_split_udp_needs_csum_never_zero() -> None:
    for _ in range(2000):
        payload = os.urandom(6)
        ip = bytes([0x45, 0, 0, 34, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
        udp = bytearray(struct.pack(">HHHH", 1, 2, 14, 0) + payload)
        struct.pack_into(">H", udp, 6, ref_sum(ip[12:20] + struct.pack(">BBH", 0, 17, 14)))
        _, out = both_split(VNET_HDR.pack(1, 0, 0, 0, 20, 6) + ip + bytes(udp))
        assert struct.unpack_from(">H", out[0], 26)[0] != 0


@needs_c
def test_split_hand_made_drops() -> None:
    tso = tso_read(False, bytes(3000), 1000)
    v6 = tso_read(True, bytes(3000), 1000)
    cases = [
        b"", b"\x01", bytes(9),                                     # shorter than the virtio_net_hdr
        VNET_HDR.pack(1, 3, 28, 1000, 20, 6) + bytes(3000),         # UDP UFO: not enabled
        VNET_HDR.pack(1, 1, 40, 1000, 20, 16) + bytes(30),          # truncated
        VNET_HDR.pack(1, 1, 40, 0, 20, 16) + bytes(3000),           # gso_size 0
        tso[:10 + 39], tso[:6] + struct.pack("<H", 19) + tso[8:],   # TCP header cut / IPv4 l4 < 20
        v6[:6] + struct.pack("<H", 20) + v6[8:],                    # IPv6 l4 < 40
        VNET_HDR.pack(1, 0, 0, 0, 60, 0) + bytes(61),               # NEEDS_CSUM field past the end
        tso[:10 + 32] + b"\x40" + tso[10 + 33:],                    # data offset 16 < 20
        tso[:10 + 32] + b"\xf0" + tso[10 + 33:10 + 60],             # data offset past the end
    ]
    for buf in cases:
        assert both_split(buf)[0] == 0, buf[:12]
    # lengths that do not fit the 16-bit length fields: dropped, not cut into broken packets
    assert both_split(tso_read(False, bytes(70000), 65535 - 30))[0] == 0
    assert both_split(tso_read(False, bytes(65535), 65535))[0] == 0
    assert both_split(tso_read(True, bytes(65535 - 20 + 1), 65535))[0] == 0
    assert both_split(tso_read(True, bytes(65535 - 20), 65535))[0] == 1
    assert both_split(bytes(10))[1] == [b""]                            # a header and no packet


@needs_c
def test_split_odd_offsets_and_huge_reads() -> None:
    rng = random.Random(3)
    for _ in range(300):
        v6 = rng.random() < 0.5
        buf = bytearray(tso_read(v6, rng.randbytes(rng.randrange(0, 5000)), rng.randrange(1, 1500)))
        struct.pack_into("<H", buf, 6, rng.randrange(20, 80))           # csum_start anywhere, odd too
        both_split(bytes(buf))
    both_split(tso_read(False, bytes(200000), 1))                        # 200000 segments of one byte


def test_split_argument_errors() -> None:
    if _c is None:
        pytest.skip(_why)
    with pytest.raises(TypeError):
        _c.split("text", [])
    with pytest.raises(TypeError):
        _c.split(b"")
    with pytest.raises(AttributeError):
        _c.split(bytes(20), None)


# ---- coalesce -------------------------------------------------------------------------------------------------

FLOWS = [dict(port=p, v6=v6) for p in (1, 2) for v6 in (False, True)]


@st.composite
def packet_lists(draw) -> list:
    """Several interleaved flows, mostly in order and full-sized, with the things that must break a run."""
    nflows = draw(st.integers(1, 4))
    flows = [dict(FLOWS[i], seq=draw(st.integers(0, 0xFFFFFFFF))) for i in range(nflows)]
    mss = draw(st.sampled_from([1368, 1000, 7, 1]))
    out = []
    for _ in range(draw(st.integers(0, 60))):
        f = draw(st.sampled_from(flows))
        kind = draw(st.sampled_from(["full"] * 8 + ["short", "gap", "flags", "ttl", "tos", "opt", "win", "ack",
                                                      "frag", "udp", "tiny", "garbage", "empty", "nodata", "mv",
                                                      "big", "ihl", "label"]))
        size = mss if kind != "short" else draw(st.integers(1, mss))
        kw = dict(seq=f["seq"], flags=0x10, port=f["port"], options=b"\x01\x01\x08\x0a" + bytes(8))
        if kind == "gap":
            kw["seq"] += draw(st.integers(1, 5000))
        elif kind == "flags":
            kw["flags"] = draw(st.sampled_from([0x18, 0x11, 0x12, 0x14, 0x30, 0x50, 0x90, 0x00, 0x08]))
        elif kind == "ttl":
            kw["ttl"] = 63
        elif kind == "tos":
            kw["tos"] = 4
        elif kind == "opt":
            kw["options"] = b"\x01\x01\x08\x0a" + bytes(7) + b"\x01"
        elif kind == "win":
            kw["window"] = 100
        elif kind == "ack":
            kw["ack"] = 556
        elif kind == "frag" and not f["v6"]:
            kw["ip_flags"] = draw(st.sampled_from([0x2000, 0x0001, 0x6000]))
        elif kind == "big":
            size = draw(st.integers(20000, 40000))
        elif kind == "nodata":
            size = 0
        pkt = tcp_packet(f["v6"], bytes([len(out) & 0xFF]) * size, **kw)
        if kind == "udp":
            pkt = pkt[:9] + b"\x11" + pkt[10:] if not f["v6"] else pkt[:6] + b"\x11" + pkt[7:]
        elif kind == "tiny":
            pkt = pkt[:draw(st.integers(1, 59))]
        elif kind == "garbage":
            pkt = bytes([draw(st.integers(0, 255))]) + pkt[1:]
        elif kind == "empty":
            pkt = b""
        elif kind == "ihl" and not f["v6"]:
            pkt = b"\x46" + pkt[1:]
        elif kind == "label":                                  # IPv6 flow label / IPv4 DF: breaks a run
            pkt = pkt[:2] + b"\x12" + pkt[3:] if f["v6"] else pkt[:6] + b"\x00" + pkt[7:]
        elif kind == "mv":
            pkt = memoryview(bytearray(pkt))
        if kind in ("full", "short", "flags", "big", "ttl", "tos", "opt", "win", "ack", "mv", "label"):
            f["seq"] = (kw["seq"] + size) & 0xFFFFFFFF
        out.append(pkt)
    if draw(st.booleans()):
        i, j = draw(st.integers(0, max(0, len(out) - 1))), draw(st.integers(0, max(0, len(out) - 1)))
        if out:
            out[i], out[j] = out[j], out[i]                   # out of order
    return out


@needs_c
@SETTINGS
@given(packet_lists())
def test_coalesce_matches(packets: list) -> None:
    writes = both_coalesce(packets)
    for w in writes:                                           # a merged write finishes into a valid packet
        if w[1]:
            done = bytearray(w[10:])
            offload.complete_checksum(done, w[6] | w[7] << 8, w[8] | w[9] << 8)
            check_segment(bytes(done), w[1] == VIRTIO_NET_HDR_GSO_TCPV6)


@needs_c
@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=120),
                          st.binary(min_size=40, max_size=100).map(lambda b: b"\x45" + b[1:9] + b"\x06" + b[10:]),
                          st.binary(min_size=60, max_size=100).map(lambda b: b"\x60" + b[1:6] + b"\x06" + b[7:])),
                max_size=30))
def test_coalesce_random_bytes_matches(packets: list) -> None:
    both_coalesce(packets)


@needs_c
def test_coalesce_hand_made() -> None:
    segs = [tcp_packet(False, bytes([i]) * 1368, seq=1 + 1368 * i, flags=0x10) for i in range(47)]
    out = both_coalesce(segs)
    assert len(out) == 1 and out[0][1] == VIRTIO_NET_HDR_GSO_TCPV4
    assert both_coalesce([]) == []
    assert both_coalesce([b""]) == [bytes(10)]
    # the 65535 limit: a run stops before its packet would pass it
    big = [tcp_packet(True, bytes(8000), seq=1 + 8000 * i, flags=0x10) for i in range(10)]
    out = both_coalesce(big)
    assert [len(w) - 10 for w in out] == [60 + 8000 * 8, 60 + 8000 * 2]
    exact = [tcp_packet(False, bytes(13099), seq=1 + 13099 * i, flags=0x10) for i in range(5)]   # 65535 exactly
    assert [len(w) - 10 for w in both_coalesce(exact)] == [65535]
    one_more = exact + [tcp_packet(False, b"z", seq=1 + 13099 * 5, flags=0x10)]
    assert [len(w) - 10 for w in both_coalesce(one_more)] == [65535, 41]
    # a non-coalescable segment of a flow ends its run: the next one starts a new run
    fin = tcp_packet(False, b"x" * 1368, seq=1 + 1368 * 47, flags=0x11)
    after = tcp_packet(False, b"y" * 1368, seq=1 + 1368 * 48, flags=0x10)
    assert len(both_coalesce(segs[:3] + [fin, after] + segs[3:5])) == 4
    # many distinct flows (the flow table grows past its first size)
    many = [tcp_packet(False, bytes(10), port=p, flags=0x10) for p in range(3000)]
    assert len(both_coalesce(many + many)) == 6000
    # a tuple of bytearrays and memoryviews
    assert len(both_coalesce(tuple(bytearray(s) for s in segs[:5]) + tuple(memoryview(s) for s in segs[5:9]))) == 1


def test_coalesce_argument_errors() -> None:
    if _c is None:
        pytest.skip(_why)
    with pytest.raises(TypeError):
        _c.coalesce([b"\x45" * 50, "text"], [])
    with pytest.raises(TypeError):
        _c.coalesce(5, [])
    with pytest.raises(AttributeError):
        _c.coalesce([b"x"], None)
    out: list = []
    _c.coalesce([b"x"], out)
    assert out == [bytes(10) + b"x"]


@needs_c
def test_split_then_coalesce_round_trip_native() -> None:
    payload = os.urandom(60000)
    segs: list = []
    assert _c.split(tso_read(True, payload, 1368, options=bytes(12), flags=0x18), segs) == 44
    out: list = []
    _c.coalesce(segs, out)
    assert len(out) == 1 and out[0][10 + 72:] == payload


@needs_c
def test_threads_and_references() -> None:
    """The byte work runs without the GIL: calls from several threads give the reference's output; no call keeps
    a reference to its inputs or leaks its outputs."""
    import sys
    import threading
    import tracemalloc

    buf = tso_read(False, os.urandom(60000), 1368, options=bytes(12))
    segs: list = []
    split_py(buf, segs)
    want_split = [bytes(s) for s in segs]
    want_coal: list = []
    coalesce_py(segs, want_coal)
    errors: list = []

    def work() -> None:
        for _ in range(200):
            a: list = []
            b: list = []
            _c.split(buf, a)
            _c.coalesce(a, b)
            if a != want_split or b != want_coal:
                errors.append("differs")

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    refs = sys.getrefcount(buf), [sys.getrefcount(s) for s in segs]
    tracemalloc.start()
    for _ in range(50):
        _c.split(buf, [])
        _c.coalesce(segs, [])
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(500):
        _c.split(buf, [])
        _c.coalesce(segs, [])
        _c.split(b"short", [])
        try:
            _c.coalesce(segs + [None], [])
        except TypeError:
            pass
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes not freed"
    assert (sys.getrefcount(buf), [sys.getrefcount(s) for s in segs]) == refs
