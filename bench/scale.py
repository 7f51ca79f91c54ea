"""Scale figures: `wgpy up` with many peers, memory per peer, and handshakes per second.

    sudo .venv/bin/python bench/scale.py up [--peers 10000] [--ips-per-peer 10]
    sudo .venv/bin/python bench/scale.py handshakes [--peers 400] [--sources 32] [--duration 8]
    .venv/bin/python bench/scale.py core-handshakes [--rounds 2000]

up:          writes a wg-quick config with N peers (each with a public key, a /32 per allowed IP), times
             `wgpy up` in a fresh namespace until the interface is ready, reads the daemon's RSS, times
             `wgpy show IFACE dump` and `wg show IFACE dump` (UAPI get) and `wgpy down`.  Memory per peer is
             (RSS with N peers - RSS of the same daemon with 0 peers) / N.
handshakes:  a daemon (`wgpy up`, N peers configured) in one namespace; in another, a driver process plays N
             WireGuard peers with wgpy's own protocol core, from --sources source addresses, each peer starting
             a new handshake as soon as its last one completed (and answering cookie replies, as a real peer
             must once the daemon is under load).  Reports completed handshakes per second (responses the
             driver accepted) and the daemon's CPU seconds per handshake.  The driver shares the 2 cores.
core-handshakes: the protocol core alone, in-process: initiation consumed + response created (the responder's
             work) and the initiator's work, per second of one core.
Everything it creates is removed at the end (namespaces `wgpys-<pid>-<n>`, interfaces `wgs<hex>`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wgpy.crypto import clamp, encode_key as b64, public_from_private
from wgpy.protocol.device import Device
from wgpy_testkit.netns import create_netns, destroy_netns, new_netns_name
from wgpy_testkit.procs import cpu_seconds, rss_kib

NS_PREFIX = f"wgpys-{os.getpid()}-"


def sh(*argv, ns: str | None = None, timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, *map(str, argv)] if ns else list(map(str, argv))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, **kw)


def keypair() -> tuple[bytes, bytes]:
    priv = clamp(os.urandom(32))
    pub = public_from_private(priv)
    return priv, pub



class Env:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="wgpy-scale-"))
        self.namespaces: list[str] = []
        self.ifaces: list[tuple[str, str]] = []
        self.wgpy = Path(sys.executable).parent / "wgpy"

    def netns(self) -> str:
        name = new_netns_name(NS_PREFIX)
        self.namespaces.append(name)
        create_netns(name)
        return name

    def up(self, ns: str, conf: Path) -> tuple[float, int]:
        iface = conf.stem
        self.ifaces.append((ns, iface))
        t0 = time.monotonic()
        res = sh(self.wgpy, "up", conf, ns=ns, timeout=600, check=False)
        took = time.monotonic() - t0
        if res.returncode:
            raise SystemExit(f"wgpy up failed: {res.stdout}{res.stderr}")
        return took, int(Path(f"/run/wgpy/{iface}.pid").read_text())

    def close(self) -> None:
        for ns, iface in reversed(self.ifaces):
            sh(self.wgpy, "down", iface, ns=ns, check=False, timeout=60)
        for ns in reversed(self.namespaces):
            destroy_netns(ns)
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)


def write_config(path: Path, private: bytes, port: int, peers: list[tuple[bytes, list[str]]],
                 address: str = "10.255.255.1/32") -> None:
    lines = ["[Interface]", f"PrivateKey = {b64(private)}", f"ListenPort = {port}", f"Address = {address}", ""]
    for pub, ips in peers:
        lines += ["[Peer]", f"PublicKey = {b64(pub)}", f"AllowedIPs = {', '.join(ips)}", ""]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))


def allowed_ips(i: int, per_peer: int) -> list[str]:
    base = int(ipaddress.IPv4Address("10.0.0.0")) + i * per_peer
    return [f"{ipaddress.IPv4Address(base + j)}/32" for j in range(per_peer)]


# ---- up ---------------------------------------------------------------------------------------------------------

def bench_up(args: argparse.Namespace) -> dict:
    env = Env()
    try:
        t0 = time.monotonic()
        peers = [(keypair()[1], allowed_ips(i, args.ips_per_peer)) for i in range(args.peers)]
        gen = time.monotonic() - t0
        priv = keypair()[0]
        ns = env.netns()
        empty = env.tmp / f"wgs{secrets.token_hex(3)}.conf"
        write_config(empty, priv, 51000, [])
        _, pid0 = env.up(ns, empty)
        time.sleep(0.5)
        rss0 = rss_kib(pid0)
        conf = env.tmp / f"wgs{secrets.token_hex(3)}.conf"
        write_config(conf, priv, 51001, peers)
        size = conf.stat().st_size
        took, pid = env.up(ns, conf)
        time.sleep(0.5)
        rss = rss_kib(pid)
        iface = conf.stem
        t1 = time.monotonic()
        dump = sh(env.wgpy, "show", iface, "dump", ns=ns, timeout=300).stdout
        show = time.monotonic() - t1
        t1 = time.monotonic()
        wg = sh("wg", "show", iface, "dump", ns=ns, timeout=300).stdout
        wg_show = time.monotonic() - t1
        n_peers = len(dump.splitlines()) - 1
        n_ips = sum(len(line.split("\t")[3].split(",")) for line in wg.splitlines()[1:])
        t1 = time.monotonic()
        sh(env.wgpy, "down", iface, ns=ns, timeout=300)
        env.ifaces.remove((ns, iface))
        down = time.monotonic() - t1
        return {"peers": args.peers, "allowed_ips": args.peers * args.ips_per_peer, "config_bytes": size,
                "peers_in_dump": n_peers, "allowed_ips_in_wg_dump": n_ips,
                "up_s": round(took, 2), "down_s": round(down, 2), "wgpy_show_dump_s": round(show, 2),
                "wg_show_dump_s": round(wg_show, 2), "rss_empty_mib": round(rss0 / 1024, 1),
                "rss_mib": round(rss / 1024, 1),
                "bytes_per_peer": round((rss - rss0) * 1024 / args.peers),
                "keygen_s": round(gen, 2)}
    finally:
        env.close()


# ---- handshakes ----------------------------------------------------------------------------------------------

DRIVER = r'''
import os, socket, sys, time, json, select
from wgpy.protocol.device import Device
from wgpy.io.udp import parse_endpoint
cfg = json.loads(sys.stdin.read())
server_pub = bytes.fromhex(cfg["server_pub"])
target = (cfg["server_ip"], cfg["port"])
socks = []
for ip in cfg["sources"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0)); s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    socks.append(s)
devs = []
for i, priv in enumerate(cfg["privs"]):
    d = Device(bytes.fromhex(priv), rand=os.urandom, wall=time.time)
    p = d.add_peer(server_pub)
    p.endpoint = target
    devs.append((d, p, socks[i % len(socks)]))
by_sock = {}
for d, p, s in devs:
    by_sock.setdefault(s.fileno(), []).append((d, p))
sock_of = {s.fileno(): s for s in socks}
ep = select.epoll()
for s in socks:
    ep.register(s.fileno(), select.EPOLLIN)
done = 0
last_kp = {}
start = time.monotonic()
end = start + cfg["duration"]
def kick(d, p, s, now):
    out = []
    p.last_sent_handshake = float("-inf")
    d.initiate_handshake(p, now, out, retry=False)
    for data, _ in out:
        try: s.sendto(data, target)
        except BlockingIOError: pass
now = time.monotonic()
for d, p, s in devs:
    kick(d, p, s, now)
last_sent = {id(p): now for _, p, _ in devs}
while True:
    now = time.monotonic()
    if now >= end: break
    for fd, _ in ep.poll(0.05):
        s = sock_of[fd]
        while True:
            try: data, src = s.recvfrom(2048)
            except BlockingIOError: break
            # find the device this reply is for: receiver index in bytes 4..8 (response) or 4..8 (cookie)
            idx = int.from_bytes(data[4:8], "little") if data[0] == 3 else int.from_bytes(data[8:12], "little")
            for d, p in by_sock[fd]:
                if idx in d.handshakes_by_index:
                    break
            else:
                continue
            out_net, out_tun = [], []
            before = p.current
            d.receive_datagrams([(data, src)], now, out_net, out_tun)
            if data[0] == 2 and p.current is not before:
                done += 1
                d.send_keepalive(p, now, out_net)      # confirms the session on the daemon's side
                for ka, _ in out_net:
                    try: s.sendto(ka, target)
                    except BlockingIOError: pass
                kick(d, p, s, now + 0.021)   # the next initiation, past the responder's 50/s flood guard
                last_sent[id(p)] = now
            elif data[0] == 3:
                # cookie: resend the initiation with mac2, as wireguard does on its next retry
                kick(d, p, s, now + 0.021)
                last_sent[id(p)] = now
    # a peer that heard nothing for a while retries (lost packets, ratelimited)
    for d, p, s in devs:
        if now - last_sent[id(p)] > 0.5:
            kick(d, p, s, now + 0.021)
            last_sent[id(p)] = now
print(json.dumps({"completed": done, "seconds": time.monotonic() - start}))
'''


def bench_handshakes(args: argparse.Namespace) -> dict:
    env = Env()
    try:
        server_priv, server_pub = keypair()
        clients = [keypair() for _ in range(args.peers)]
        ns_s, ns_c = env.netns(), env.netns()
        tag = secrets.token_hex(3)
        sh("ip", "link", "add", f"hs{tag}a", "netns", ns_s, "type", "veth", "peer", "name", f"hs{tag}b",
           "netns", ns_c)
        sh("ip", "addr", "add", "192.168.200.1/16", "dev", f"hs{tag}a", ns=ns_s)
        sh("ip", "link", "set", f"hs{tag}a", "up", ns=ns_s)
        sources = [f"192.168.{201 + i // 250}.{1 + i % 250}" for i in range(args.sources)]
        for ip in sources:
            sh("ip", "addr", "add", f"{ip}/16", "dev", f"hs{tag}b", ns=ns_c)
        sh("ip", "link", "set", f"hs{tag}b", "up", ns=ns_c)
        conf = env.tmp / f"wgs{tag}.conf"
        write_config(conf, server_priv, 51820, [(pub, allowed_ips(i, 1)) for i, (_, pub) in enumerate(clients)])
        _, pid = env.up(ns_s, conf)
        cfg = {"server_pub": server_pub.hex(), "server_ip": "192.168.200.1", "port": 51820,
               "sources": sources, "privs": [priv.hex() for priv, _ in clients], "duration": args.duration}
        driver = env.tmp / "driver.py"
        driver.write_text(DRIVER)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        res = sh(sys.executable, driver, ns=ns_c, timeout=args.duration + 60,
                 input=json.dumps(cfg))
        c1, t1 = cpu_seconds(pid), time.monotonic()
        out = json.loads(res.stdout.strip().splitlines()[-1])
        hs = out["completed"]
        dump = sh(env.wgpy, "show", conf.stem, "dump", ns=ns_s).stdout
        return {"peers": args.peers, "sources": args.sources, "seconds": round(out["seconds"], 1),
                "handshakes_completed": hs, "handshakes_per_s": round(hs / out["seconds"]),
                "daemon_cpu_pct": round(100 * (c1 - c0) / (t1 - t0)),
                "daemon_cpu_us_per_handshake": round((c1 - c0) * 1e6 / hs) if hs else None,
                "peers_with_handshake": sum(1 for line in dump.splitlines()[1:] if line.split("\t")[4] != "0")}
    finally:
        env.close()


def bench_core(args: argparse.Namespace) -> dict:
    now = time.monotonic()
    server = Device(keypair()[0], rand=os.urandom, wall=time.time)
    clients = []
    for _ in range(64):
        c = Device(keypair()[0], rand=os.urandom, wall=time.time)
        p = c.add_peer(server.public_key)
        p.endpoint = ("192.0.2.1", 51820)
        server.add_peer(c.public_key).endpoint = ("192.0.2.2", 1)
        clients.append((c, p))
    server.under_load_threshold = 1 << 30
    init_s = resp_s = fin_s = 0.0
    for r in range(args.rounds):
        c, p = clients[r % len(clients)]
        now += 0.05
        out: list = []
        t = time.perf_counter()
        p.last_sent_handshake = float("-inf")
        c.initiate_handshake(p, now, out, retry=False)
        t2 = time.perf_counter()
        resp: list = []
        server.receive_datagrams(out, now, resp, [])
        t3 = time.perf_counter()
        c.receive_datagrams(resp, now, [], [])
        t4 = time.perf_counter()
        assert p.current is not None
        init_s += t2 - t
        resp_s += t3 - t2
        fin_s += t4 - t3
    n = args.rounds
    return {"rounds": n, "initiator_create_us": round(init_s / n * 1e6), "responder_us": round(resp_s / n * 1e6),
            "initiator_consume_us": round(fin_s / n * 1e6),
            "responder_handshakes_per_core_s": round(n / resp_s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("up")
    a.add_argument("--peers", type=int, default=10000)
    a.add_argument("--ips-per-peer", type=int, default=10)
    h = sub.add_parser("handshakes")
    h.add_argument("--peers", type=int, default=400)
    h.add_argument("--sources", type=int, default=32)
    h.add_argument("--duration", type=float, default=8)
    c = sub.add_parser("core-handshakes")
    c.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    fn = {"up": bench_up, "handshakes": bench_handshakes, "core-handshakes": bench_core}[args.cmd]
    print(json.dumps(fn(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
