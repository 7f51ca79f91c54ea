"""Per-packet costs without I/O, in microseconds per packet: the core's encrypt and decrypt paths, and the TUN
offload helpers (cutting a 64 KiB TSO super-packet into MTU-sized packets with checksums, merging them back),
and the same two paths in L2 mode (Ethernet frames through the learning switch, destination MAC known).

    .venv/bin/python bench/micro.py [--size 1420] [--batch 64] [--rounds 200]
    .venv/bin/python bench/micro.py --cold [--idle 0.01]

--cold times single calls twice: back to back (warm), and each after the process slept `--idle` seconds, as a
daemon does between the packets of a ping. The difference is what one ping pays per daemon pass on top of the
warm figures; it is why ping RTT through wgpy trails wireguard-go's (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import struct
import time

from wgpy import native
from wgpy.io import offload
from wgpy.protocol.device import Device
from wgpy.routing.mactable import LOCAL
from wgpy_testkit.core_pair import Pair

EP_A, EP_B = ("192.0.2.1", 51820), ("192.0.2.2", 51820)


def ip4(src: str, dst: str, size: int) -> bytes:
    payload = b"\xab" * (size - 20)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0, ipaddress.ip_address(src).packed,
                       ipaddress.ip_address(dst).packed) + payload


def pair() -> tuple[Device, Device]:
    """A (10.0.0.1 at EP_A) and B (10.0.0.2 at EP_B) after a handshake, on the two-core harness."""
    p = Pair(keys=(os.urandom(32), os.urandom(32)), rand_a=os.urandom, rand_b=os.urandom, endpoints=(EP_A, EP_B),
             inner_v6=False)
    p.send("A", [ip4("10.0.0.1", "10.0.0.2", 100)], time.monotonic())   # initiation -> response -> staged data
    assert p.pa.current is not None and p.pb.current is not None
    return p.a, p.b


def time_both_ways(a: Device, b: Device, batch: list, rounds: int) -> tuple[float, float, int]:
    """Seconds spent in a.send_packets and in b.receive_datagrams over `rounds` batches, and the packet count."""
    src = EP_A
    enc_t = dec_t = 0.0
    n = 0
    for _ in range(rounds):
        now = time.monotonic()
        out: list = []
        t0 = time.perf_counter()
        a.send_packets(batch, now, out)
        t1 = time.perf_counter()
        got: list = []
        b.receive_datagrams([(d, src) for d, _e in out], now, [], got)
        t2 = time.perf_counter()
        assert len(got) == len(batch)
        enc_t += t1 - t0
        dec_t += t2 - t1
        n += len(batch)
    return enc_t, dec_t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1420)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--cold", action="store_true", help="single calls, warm and after --idle seconds asleep")
    ap.add_argument("--idle", type=float, default=0.01)
    args = ap.parse_args()
    if args.cold:
        cold_costs(args.idle, min(args.rounds, 300))
        return
    a, b = pair()
    batch = [ip4("10.0.0.1", "10.0.0.2", args.size)] * args.batch
    enc_t, dec_t, n = time_both_ways(a, b, batch, args.rounds)
    print(f"data path: {', '.join(f'{m} {why}' for m, why in native.status().items())}")
    print(f"packet size {args.size} B, batch {args.batch}, {n} packets")
    print(f"  encrypt path (route + pad + AEAD + header): {enc_t / n * 1e6:6.2f} us/packet")
    print(f"  decrypt path (index + AEAD + replay + source check): {dec_t / n * 1e6:6.2f} us/packet")
    print(f"  core-only ceiling, one direction on one core: {args.size * 8 / ((enc_t + dec_t) / n) / 1e6:,.0f} Mbit/s")
    offload_costs(args.rounds)
    l2_costs(args.size, args.batch, args.rounds)


def tso_read(payload: bytes, mss: int) -> bytes:
    """A TCP/IPv4 super-packet as the kernel hands it over with TSO (checksum field = pseudo-header sum)."""
    tcp_len = 32 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, 1, 0x4000, 64, 6, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2]))
    ps = (int.from_bytes(ip[12:20], "big") + 6 + tcp_len) % 0xFFFF
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 1, 8 << 4, 0x18, 512, ps, 0) + bytes(12)
    return offload.VNET_HDR.pack(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, offload.VIRTIO_NET_HDR_GSO_TCPV4, 52, mss,
                                 20, 16) + ip + tcp + payload


def offload_costs(rounds: int) -> None:
    mss = 1368
    buf = tso_read(os.urandom(mss * 47), mss)
    split_t = coal_t = 0.0
    n = 0
    for _ in range(rounds):
        segs: list = []
        t0 = time.perf_counter()
        offload.split(buf, segs)
        t1 = time.perf_counter()
        out: list = []
        offload.coalesce(segs, out)
        t2 = time.perf_counter()
        assert len(out) == 1
        split_t += t1 - t0
        coal_t += t2 - t1
        n += len(segs)
    print(f"TUN offloads, 47 x {mss} B segments per super-packet, {n} segments")
    print(f"  split (headers + vectorised checksums): {split_t / n * 1e6:6.2f} us/segment")
    print(f"  coalesce (flow match + one GSO buffer): {coal_t / n * 1e6:6.2f} us/segment")


def l2_costs(size: int, batch_size: int, rounds: int) -> None:
    """L2 mode: frames of `size` bytes (the tunnel MTU) from a host behind A to one behind B, both MACs learned."""
    p = Pair(keys=(os.urandom(32), os.urandom(32)), rand_a=os.urandom, rand_b=os.urandom, endpoints=(EP_A, EP_B),
             l2=True)
    a, b, pa = p.a, p.b, p.pa
    mac_a, mac_b = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
    now = time.monotonic()
    p.send("A", [b"\xff" * 6 + mac_a + b"\x08\x00" + bytes(46)], now)   # broadcast: handshake, learning
    b.macs.learn(mac_b, LOCAL, now)
    a.macs.learn(mac_b, pa, now)
    frame = mac_b + mac_a + b"\x08\x00" + b"\xab" * (size - 14)
    batch = [frame] * batch_size
    enc_t, dec_t, n = time_both_ways(a, b, batch, rounds)
    print(f"L2 mode, frame size {size} B, batch {batch_size}, {n} frames")
    print(f"  encrypt path (learn + switch + pad + AEAD + header): {enc_t / n * 1e6:6.2f} us/frame")
    print(f"  decrypt path (index + AEAD + replay + learn + switch): {dec_t / n * 1e6:6.2f} us/frame")


def cold_costs(idle: float, rounds: int) -> None:
    """Median cost of one call made right after the previous one, and of one made after `idle` s asleep."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    a, b = pair()
    pkt = ip4("10.0.0.1", "10.0.0.2", 84)               # a ping's size
    src = ("192.0.2.1", 51820)
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    clock = time.perf_counter_ns

    def noop() -> None:
        pass

    def core_send() -> None:
        out: list = []
        a.send_packets([pkt], time.monotonic(), out)
        cold_costs.last = out[0][0]                      # type: ignore[attr-defined]

    def core_receive() -> None:
        got: list = []
        b.receive_datagrams([(cold_costs.last, src)], time.monotonic(), [], got)   # type: ignore[attr-defined]
        b.peers[a.public_key].t_send_keepalive = None    # as if the reply had gone out: no keepalive timer left

    calls = [("a Python call that does nothing", noop),
             ("AEAD encrypt of 84 bytes (cryptography)", lambda: aead.encrypt(nonce, pkt, None)),
             ("os.urandom(2) (a getrandom() system call)", lambda: os.urandom(2)),
             ("core: send_packets, one 84-byte packet", core_send),
             ("core: receive_datagrams, that datagram", None)]
    print(f"one call, median of {rounds}: warm (back to back) and after {idle * 1e3:g} ms asleep, microseconds")
    for label, fn in calls:
        pair_fn = fn is None                           # receive is timed after a send made just before it
        res = []
        for sleep in (0.0, idle):
            v = []
            for _ in range(rounds):
                if pair_fn:
                    core_send()
                    if sleep:
                        time.sleep(sleep)
                    t0 = clock()
                    core_receive()
                else:
                    if sleep:
                        time.sleep(sleep)
                    t0 = clock()
                    fn()
                v.append(clock() - t0)
            v.sort()
            res.append(v[len(v) // 2] / 1e3)
        print(f"  {label:48s} warm {res[0]:7.1f}   after idle {res[1]:7.1f}")


if __name__ == "__main__":
    main()
