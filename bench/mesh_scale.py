"""Scale of the mesh control plane (docs/mesh.md): simulated nodes that speak the real API, without tunnels.

    .venv/bin/python bench/mesh_scale.py [--nodes 100,1000,10000] [--db sqlite|postgresql] [--changes 5]
                                         [--groups G]

For each size N: a fresh `wgpy server run` on 127.0.0.1 (HTTPS, a self-signed certificate) over a fresh database
(SQLite file, or a private PostgreSQL cluster: wgpy_testkit.postgres, as root); N nodes join (50 at a time) and
each holds its view stream (a WebSocket, authenticated by its key, as the agent does); then `--changes` more
nodes join one by one and the time from each join request until every one of the N streams has received the
new peer is measured (the default policy: a join affects every node; with --groups G the nodes join with G
tags round-robin and a policy lets each tag reach itself only, so every view holds N/G peers and a join affects
N/G nodes, the shape of a large network split by policy). Prints joins per second, the server's
resident memory with N streams, and the change latency (median, max). Everything stays on this machine; every
loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from wgpy import crypto  # noqa: E402
from wgpy.mesh.auth import proof  # noqa: E402

PORT = 18443
CONCURRENCY = 50


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sim:
    def __init__(self, url: str, ctx: ssl.SSLContext, tokens: list[str]) -> None:
        self.url, self.ctx, self.tokens = url, ctx, tokens
        self.streams: list = []
        self.server_pub = b""
        self.waiters: dict[str, tuple[set, asyncio.Event]] = {}
        self.retries = 0

    async def join(self, session, i: int) -> tuple[bytes, str]:
        priv = crypto.clamp(os.urandom(32))
        pub = crypto.encode_key(crypto.public_from_private(priv))
        async with session.post(self.url + "/api/v1/join", ssl=self.ctx, json={
                "token": self.tokens[i % len(self.tokens)], "name": f"sim{i}", "public_key": pub,
                "listen_port": 51820}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"join {i}: {r.status} {body}")
            self.server_pub = base64.b64decode(body["server_public_key"])
        return priv, pub

    async def stream(self, session, priv: bytes, pub: str, ready: asyncio.Event, idx: int,
                     connecting: asyncio.Semaphore) -> None:
        for attempt in range(6):              # as the agent: a refused connection is retried after a while
            when = int(time.time())
            nonce = os.urandom(16)
            headers = {"X-Wgpy-Key": pub, "X-Wgpy-Time": str(when), "X-Wgpy-Nonce": nonce.hex(),
                       "X-Wgpy-Proof": proof(priv, self.server_pub, "stream", when, nonce)}
            try:
                async with connecting:
                    ws = await session.ws_connect(self.url + "/api/v1/stream", ssl=self.ctx, headers=headers,
                                                  heartbeat=None, max_msg_size=256 << 20)
                break
            except Exception as e:
                self.retries += 1
                if attempt == 5:
                    print(f"  stream {idx}: {e!r}", file=sys.stderr, flush=True)
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)
        self.streams.append(ws)
        first = True
        async for msg in ws:
            if first:                         # the whole view (2 MB at 10,000 allow-all): not parsed here,
                first = False                 # the simulator's parsing is no cost of the server's
                if '"view"' not in msg.data[:64]:
                    raise RuntimeError(f"stream {idx}: the first message is no view: {msg.data[:64]!r}")
                ready.set()
                continue
            m = json.loads(msg.data)
            if m.get("type") == "upsert":
                w = self.waiters.get(m["peer"]["public_key"])
                if w is not None:
                    w[0].discard(idx)
                    if not w[0]:
                        w[1].set()


async def run_size(n: int, url: str, ctx, tokens: list[str], changes: int, server_pid: int,
                   limit: float = 600.0) -> dict:
    import aiohttp
    sim = Sim(url, ctx, tokens)
    groups = len(tokens)
    conn = aiohttp.TCPConnector(limit=0, ssl=ctx)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=limit)) as session:
        sem = asyncio.Semaphore(CONCURRENCY)
        keys: list = [None] * n

        async def one(i):
            async with sem:
                keys[i] = await sim.join(session, i)
        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        join_s = time.monotonic() - t0
        print(f"  {n} joined in {join_s:.1f} s, server RSS {rss_mib(server_pid):.0f} MiB", file=sys.stderr,
              flush=True)
        readies = []
        tasks = []
        connecting = asyncio.Semaphore(CONCURRENCY)     # connections being set up at once (TLS, auth)
        t0 = time.monotonic()
        for i, (priv, pub) in enumerate(keys):
            ev = asyncio.Event()
            readies.append(ev)
            tasks.append(asyncio.create_task(sim.stream(session, priv, pub, ev, i, connecting)))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), limit)
        connect_s = time.monotonic() - t0
        print(f"  {n} streams in {connect_s:.1f} s", file=sys.stderr, flush=True)
        await asyncio.sleep(1.0)          # the online-state updates of the connections settle
        rss = rss_mib(server_pid)
        lat = []
        for c in range(changes):
            priv = crypto.clamp(os.urandom(32))
            pub = crypto.encode_key(crypto.public_from_private(priv))
            ev = asyncio.Event()
            sim.waiters[pub] = (set(range(0, n, groups)), ev)         # the nodes of group 0
            t0 = time.monotonic()
            async with session.post(url + "/api/v1/join", ssl=ctx, json={
                    "token": tokens[0], "name": f"extra{c}", "public_key": pub, "listen_port": 51820}) as r:
                assert r.status == 200, await r.text()
            await asyncio.wait_for(ev.wait(), 120)
            lat.append(time.monotonic() - t0)
            await asyncio.sleep(0.3)
        for ws in sim.streams:
            await ws.close()
        for t in tasks:
            t.cancel()
    return {"nodes": n, "groups": groups, "connect_retries": sim.retries, "affected": len(range(0, n, groups)), "joins_per_s": n / join_s, "streams_connected_s": connect_s, "server_rss_mib": rss,
            "change_latency_median_s": statistics.median(lat), "change_latency_max_s": max(lat)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="100,1000,10000")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--groups", type=int, default=1, help="tags that reach only themselves (default 1: all)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--limit", type=float, default=600.0, help="seconds all streams may take to come up")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    wgpy = [sys.executable, "-m", "wgpy"]
    for n in [int(x) for x in args.nodes.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="wgpy-meshbench-"))
        pg = None
        if args.db == "postgresql":
            from wgpy_testkit.postgres import PgCluster
            pg = PgCluster().start()
            db = pg.url
        else:
            db = f"sqlite:///{tmp}/server.db"
        cert, key = tmp / "c.pem", tmp / "k.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        (tmp / "pw").write_text("benchmark-password\n")
        conf = tmp / "server.toml"
        subprocess.run(wgpy + ["server", "--config", conf, "init", "--network", "100.64.0.0/10", "--network",
                               "fd7a:6770::/48", "--db", db, "--admin-password-file", tmp / "pw"], check=True,
                       capture_output=True)
        tokens = []
        for g in range(args.groups):
            tag = ["--tag", f"g{g}"] if args.groups > 1 else []
            tokens.append(subprocess.run(wgpy + ["server", "--config", conf, "token", "create", "--reusable", *tag],
                                         check=True, capture_output=True, text=True).stdout.strip())
        if args.groups > 1:
            (tmp / "policy.json").write_text(json.dumps({"rules": [{"from": [f"g{g}"], "to": [f"g{g}"]}
                                                                   for g in range(args.groups)]}))
            subprocess.run(wgpy + ["server", "--config", conf, "policy", "set", tmp / "policy.json"], check=True,
                           capture_output=True)
        server = subprocess.Popen(wgpy + ["server", "--config", conf, "run", "--listen", f"127.0.0.1:{PORT}",
                                          "--cert", cert, "--key", key], stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / "server.log", "wb"),
                                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            for _ in range(100):
                try:
                    import socket
                    socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            res = asyncio.run(run_size(n, f"https://127.0.0.1:{PORT}", ctx, tokens, args.changes, server.pid,
                                       args.limit))
            res["db"] = args.db
            results.append(res)
            print(f"{n:>6} nodes ({args.db}, views of {n // args.groups}): joins {res['joins_per_s']:.0f}/s, {n} streams up in "
                  f"{res['streams_connected_s']:.1f} s, server RSS {res['server_rss_mib']:.0f} MiB, a join at every "
                  f"affected node ({res['affected']}) in {res['change_latency_median_s'] * 1000:.0f} ms median "
                  f"({res['change_latency_max_s'] * 1000:.0f} ms max)", flush=True)
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
            if pg is not None:
                pg.stop()
            subprocess.run(["rm", "-rf", str(tmp)])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
