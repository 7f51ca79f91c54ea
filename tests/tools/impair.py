#!/usr/bin/env python3
"""A userspace stand-in for `tc qdisc ... netem delay D J`: delay with jitter (and so reordering) on a router.

    impair.py DEV --delay SECONDS --jitter SECONDS [--seed N] [--max-queue N]

Creates TUN device DEV; every IP packet the kernel routes into DEV is held for a delay drawn uniformly from
[delay - jitter, delay + jitter] and then written back into DEV, so the kernel forwards it on (policy routing in
the router namespace sends forwarded traffic into DEV; what comes back out of DEV is routed normally). Packets
sent less than 2 x jitter apart can swap places, as with netem's jitter. At most --max-queue packets are held
(further ones are dropped and counted, like a full qdisc). Prints {"ready": DEV} once the device exists; on
SIGTERM/SIGINT prints {"packets": N, "dropped": M, "reordered": R} and exits.

Why: this machine's kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set), so `tc qdisc add ... netem`
fails with "Specified qdisc kind is unknown". Loss and duplication are done in the kernel with nftables
(`numgen random` + `drop` / `dup to`); delay, jitter and reordering need a queue, which this is.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import sys
import time

from wgpy.io.tun import Tun


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dev")
    ap.add_argument("--delay", type=float, required=True)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=10000)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tun = Tun(args.dev)
    fd = tun.fd
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(json.dumps({"ready": tun.name}), flush=True)
    heap: list[tuple[float, int, bytes]] = []
    seq = 0
    packets = dropped = reordered = 0
    last_out = -1
    lo, hi = args.delay - args.jitter, args.delay + args.jitter
    while not stop:
        now = time.monotonic()
        timeout = max(0.0, heap[0][0] - now) if heap else 0.5
        try:
            r, _, _ = select.select([fd], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        if r:
            for _ in range(256):
                try:
                    pkt = os.read(fd, 65536)
                except (BlockingIOError, InterruptedError):
                    break
                if len(heap) >= args.max_queue:
                    dropped += 1
                    continue
                seq += 1
                heapq.heappush(heap, (now + rng.uniform(lo, hi), seq, pkt))
        while heap and heap[0][0] <= now:
            _, s, pkt = heapq.heappop(heap)
            if s < last_out:
                reordered += 1
            last_out = max(last_out, s)
            try:
                os.write(fd, pkt)
                packets += 1
            except OSError:
                dropped += 1
    print(json.dumps({"packets": packets, "dropped": dropped, "reordered": reordered}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
