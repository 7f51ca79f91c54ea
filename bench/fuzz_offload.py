"""Fuzz target for the native TUN offloads (wgpy._offload, src/native/offload.c): split and coalesce must never
crash, and must give the same results as the Python reference (io/offload.py's split_py, coalesce_py; and
io/batch.py's gso_run_py, gro_split_py for the UDP batch helpers gso_run and gro_split).

    .venv/bin/python bench/fuzz_offload.py [--seconds 30] [--seed 1] [--module DIR]

scripts/fuzz-native.sh runs it under AddressSanitizer (--module: the directory of an ASan build of the module).
Inputs: random bytes, and mutations (bit flips, edge values in the virtio_net_hdr and the IP/TCP headers,
truncation, extension, splices) of well-formed TSO reads, NEEDS_CSUM packets and coalescible segment lists.
The native functions get each buffer as a ctypes array of exactly its size (with PYTHONMALLOC=malloc under ASan
one byte read past the end is a report; a bytes object would hide it behind its trailing NUL). Prints one JSON
line; exits 1 on the first difference.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import random
import struct
import sys
import time
from pathlib import Path

from wgpy.io.batch import gro_split_py, gso_run_py
from wgpy.io.offload import VNET_HDR, coalesce_py, split_py

EDGE = (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF)
EDGE16 = (0, 1, 19, 20, 39, 40, 59, 60, 1367, 1368, 0x7FFF, 0xFFFE, 0xFFFF)


def load(directory: str | None):
    if directory is None:
        import wgpy._offload as mod
        return mod
    path = next(Path(directory).glob("_offload*.so"))
    spec = importlib.util.spec_from_file_location("wgpy._offload", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def exact(data: bytes):
    """A buffer of exactly len(data) bytes in its own allocation (ctypes arrays over 16 bytes are malloc'ed)."""
    return (ctypes.c_char * len(data)).from_buffer_copy(data) if data else b""


def tcp(rng: random.Random, v6: bool, payload_len: int, seq: int) -> bytes:
    opts = rng.choice([b"", b"\x01\x01\x08\x0a" + bytes(8), b"\x02\x04\x05\xb4", bytes(40)])
    thl = 20 + len(opts)
    t = struct.pack(">HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, 9, (thl // 4) << 4,
                    rng.choice([0x10, 0x18, 0x19, 0x98, 0x50]), 512, rng.randrange(0x10000), 0) + opts
    if v6:
        ip = struct.pack(">IHBB", 0x60000000, (thl + payload_len) & 0xFFFF, 6, 64) + bytes(15) + b"\x01" + \
            bytes(15) + b"\x02"
    else:
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, (20 + thl + payload_len) & 0xFFFF, 7, 0x4000, 64, 6, 0,
                         b"\n\0\0\1", b"\n\0\0\2")
    return ip + t + rng.randbytes(payload_len)


def seed_read(rng: random.Random) -> bytes:
    v6 = rng.random() < 0.5
    pkt = tcp(rng, v6, rng.choice([0, 1, 100, 1368, 3000, 9000, rng.randrange(40000)]), rng.randrange(1 << 32))
    l4 = 40 if v6 else 20
    kind = rng.random()
    if kind < 0.6:
        gso = (4 if v6 else 1) | (0x80 if rng.random() < 0.2 else 0)
        return VNET_HDR.pack(1, gso, l4 + 20, rng.choice([1368, 1369, 536, 7, 1, 65535, rng.randrange(1, 3000)]),
                             l4, 16) + pkt
    if kind < 0.8:
        return VNET_HDR.pack(1, 0, 0, 0, l4, 16) + pkt
    return bytes(10) + pkt


def seed_list(rng: random.Random) -> list[bytes]:
    out = []
    seqs = [rng.randrange(1 << 32) for _ in range(3)]
    for _ in range(rng.randrange(1, 40)):
        f = rng.randrange(3)
        size = rng.choice([1368, 1368, 1368, 100, 0])
        out.append(tcp(random.Random(f), f == 2, size, seqs[f])[:-size or None] + rng.randbytes(size))
        seqs[f] += size
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(7)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(min(len(b), 80))] = rng.choice(EDGE)
        elif op == 2 and len(b) >= 10:                 # a virtio_net_hdr field
            struct.pack_into("<H", b, rng.choice((2, 4, 6, 8)), rng.choice(EDGE16 + (len(b) - 10, max(0, len(b) - 12))) & 0xFFFF)
        elif op == 3:
            del b[rng.randrange(len(b) + 1):]
        elif op == 4:
            b += rng.randbytes(rng.randrange(1, 64))
        elif op == 5 and b:
            i = rng.randrange(len(b))
            b[i:i + 4] = rng.randbytes(4)
        elif op == 6 and len(b) > 20:
            i, j = sorted(rng.sample(range(len(b)), 2))
            b[i:j] = b[j:j + (j - i)]
    return bytes(b)


def run(mod, seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    stats = {"target": "offload", "seed": seed, "split_inputs": 0, "split_kept": 0, "coalesce_inputs": 0,
             "coalesce_merged": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(50):
            r = rng.random()
            if r < 0.1:
                buf = rng.randbytes(rng.randrange(120))
            else:
                buf = seed_read(rng)
                if r < 0.9:
                    buf = mutate(rng, buf)
            a: list = []
            b: list = []
            ra = split_py(buf, a)
            rb = mod.split(exact(buf), b)
            if ra != rb or [bytes(x) for x in a] != b:
                raise SystemExit(f"split differs from split_py on {buf.hex()}")
            stats["split_inputs"] += 1
            stats["split_kept"] += ra > 0
            pkts = seed_list(rng) if rng.random() < 0.8 else [rng.randbytes(rng.randrange(80)) for _ in range(5)]
            for _ in range(rng.randrange(4)):
                i = rng.randrange(len(pkts))
                op = rng.randrange(3)
                if op == 0:
                    pkts[i] = mutate(rng, pkts[i])
                elif op == 1:
                    pkts.insert(rng.randrange(len(pkts) + 1), pkts[i])
                else:
                    j = rng.randrange(len(pkts))
                    pkts[i], pkts[j] = pkts[j], pkts[i]
            a, b = [], []
            coalesce_py(pkts, a)
            mod.coalesce([exact(p) for p in pkts], b)
            if [bytes(x) for x in a] != b:
                raise SystemExit(f"coalesce differs from coalesce_py on {[p.hex() for p in pkts]}")
            stats["coalesce_inputs"] += 1
            stats["coalesce_merged"] += sum(1 for w in b if w[1])
            # the UDP batch helpers of io/batch.py: GSO runs over random (datagram, endpoint) lists, GRO cuts
            eps = [("192.0.2.1", 1), ("192.0.2.2", 1), ("2001:db8::1", 1, 0, 0)]
            out = [(rng.randbytes(rng.choice((0, 1, 40, 1452, 1452, 3000))), rng.choice(eps))
                   for _ in range(rng.randrange(1, 90))]
            i = rng.randrange(len(out))
            segs, limit = rng.randrange(1, 80), rng.choice((1, 2000, 65000, 1 << 20))
            if mod.gso_run(out, i, segs, limit) != gso_run_py(out, i, segs, limit):
                raise SystemExit(f"gso_run differs from gso_run_py at {i} of {[(len(d), e) for d, e in out]}")
            data, seg = rng.randbytes(rng.randrange(4000)), rng.randrange(1, 1500)
            a, b = [], []
            if mod.gro_split(data, seg, eps[0], b) != gro_split_py(data, seg, eps[0], a) or a != b:
                raise SystemExit(f"gro_split differs from gro_split_py ({len(data)} bytes, segment {seg})")
            stats["udp_inputs"] = stats.get("udp_inputs", 0) + 1
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--module", help="directory holding the _offload extension to fuzz (default: wgpy's own)")
    args = ap.parse_args(argv)
    mod = load(args.module)
    t0 = time.monotonic()
    stats = run(mod, args.seconds, args.seed)
    stats["seconds"] = round(time.monotonic() - t0, 1)
    stats["module"] = mod.__file__
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
