"""How long a big UAPI request holds the data path (issue 21, item 8): a RuntimePair (tests/runtime: the real
event loops, in-memory TUN and network) with A's UAPI on a real socket; a client thread sends the request while
the main thread injects a packet into A's TUN per round and pumps both loops. Prints the request's time, the
longest gap between two packets delivered at B, and this process's RSS before, after and at its peak.

    sudo .venv/bin/python bench/uapi_stall.py peers 8     # an 8 MB set: public_key + allowed_ip per peer
    sudo .venv/bin/python bench/uapi_stall.py ips 8       # an 8 MB set: one peer, many allowed_ip lines
    sudo .venv/bin/python bench/uapi_stall.py get 80000   # a get of that many peers

Root: the socket goes to /run/wireguard. Figures: docs/reliability.md section 10.
"""

from __future__ import annotations

import random
import socket
import sys
import threading
import time

from wgpy.uapi import protocol as uapi
from wgpy_testkit.core_pair import udp4
from wgpy_testkit.runtime import A_IP4, B_IP4, RuntimePair


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def _ip(n: int) -> str:
    return f"172.{16 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"      # away from the pair's own 10.0.0.0/24


def _set_request(kind: str, megabytes: float, rng: random.Random) -> tuple[bytes, int]:
    size = int(megabytes * (1 << 20))
    lines, total, n = ["set=1"], 6, 0
    if kind == "ips":
        lines.append(f"public_key={rng.randbytes(32).hex()}")
    while total < size:
        new = [f"public_key={rng.randbytes(32).hex()}"] if kind == "peers" else []
        new.append(f"allowed_ip={_ip(n)}/32")
        lines += new
        total += sum(len(x) + 1 for x in new)
        n += 1
    return ("\n".join(lines) + "\n\n").encode(), n


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "peers"
    amount = float(sys.argv[2]) if len(sys.argv) > 2 else 8
    rng = random.Random(1)
    p = RuntimePair(uapi_socket=True)
    try:
        if kind == "get":
            lines = ["set=1"]
            for n in range(int(amount)):
                lines += [f"public_key={rng.randbytes(32).hex()}", f"allowed_ip={_ip(n)}/32"]
            uapi.handle_request("\n".join(lines), p.a.iface)
            request, what = b"get=1\n\n", f"get of {int(amount)} peers"
        else:
            request, n = _set_request(kind, amount, rng)
            what = f"{len(request) / 1e6:.1f} MB set ({n} {'peers' if kind == 'peers' else 'allowed IPs'})"
        p.a.tun.inject(udp4(A_IP4, B_IP4, b"warm up"))
        p.pump()
        p.b.tun.delivered()
        rss0 = _status("VmRSS")
        done: dict = {}

        def client() -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(p.a.iface.uapi.path)
            t = time.monotonic()
            s.sendall(request)
            reply = bytearray()
            while not reply.endswith(b"\n\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                reply += chunk
            done["reply"], done["seconds"] = bytes(reply[-12:]), time.monotonic() - t
            s.close()
        th = threading.Thread(target=client)
        th.start()
        t0 = last = time.monotonic()
        gap, sent, got = 0.0, 0, 0
        while "reply" not in done and time.monotonic() - t0 < 300:
            p.a.tun.inject(udp4(A_IP4, B_IP4, sent.to_bytes(4, "big") * 16))
            sent += 1
            p.pump(3)
            delivered = p.b.tun.delivered()
            now = time.monotonic()
            if delivered:
                got += len(delivered)
                gap, last = max(gap, now - last), now
        th.join()
        print(f"{what}: reply ...{done['reply']!r} in {done['seconds']:.2f} s; longest gap between packets "
              f"{gap * 1000:.0f} ms; {got}/{sent} packets; RSS {rss0:.0f} -> {_status('VmRSS'):.0f} MB "
              f"(peak {_status('VmHWM'):.0f})")
    finally:
        p.close()


if __name__ == "__main__":
    main()
