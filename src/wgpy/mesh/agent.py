"""The node side of the mesh: `wgpy join`, the agent that keeps the interface's peers in step with the server's
view, `wgpy status` and `wgpy leave`.

    wgpy join URL --token T --name N [--ca FILE] [--interface wgpy0] [--port 51820] [--state-dir DIR]

makes the node's key pair here (the private key never leaves the machine: it is in the state file, 0600, and
the interface's config), registers the public key with the token, writes DIR/IFACE.conf (PrivateKey,
ListenPort, one Address per network with the network's prefix, so the whole network is routed to the interface)
and DIR/IFACE.json (the server, its public key, the node, the cached view), brings the interface up with
`wgpy up`, and starts the agent (`wgpy agent IFACE`, in the background; its pid in DIR/IFACE.pid, its log in
DIR/IFACE.log). A join that fails after the server registered the node deregisters it and leaves nothing.

The agent applies the cached view first (the data plane never waits for the server), then holds the server's
stream (a WebSocket, authenticated by the node's key: mesh/auth.py) and applies the whole view and each delta to
the interface through the UAPI: a new peer is added, a changed one updated in place (its session goes on), a
removed one removed. A gap in the deltas' versions or a lost stream means a resync: reconnect (backoff 0.5 s
doubling to 30 s, random jitter) and take the whole view again. Removed by the admin, it takes the interface
down and forgets the node.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

from .. import crypto
from .auth import proof

__all__ = ["join_main", "agent_main", "status_main", "leave_main", "peer_lines"]

log = logging.getLogger("wgpy.agent")

STATE_DIR = Path("/var/lib/wgpy/mesh")
DEFAULT_IFACE = "wgpy0"
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
KEEPALIVE = 25                 # seconds: the peers' persistent keepalive, which keeps the NATs' mappings open
MAX_HOST_CANDIDATES = 6
GATHER_FAST, GATHER_EVERY = 0.5, 10.0      # candidates looked at every 0.5 s for the first 15 s, then every 10 s
CONNECT_TIMEOUT = 10.0


class MeshError(Exception):
    """What the user must fix, in words."""


# ---- state files -----------------------------------------------------------------------------------------------

def _paths(state_dir: Path, iface: str) -> dict[str, Path]:
    return {k: state_dir / f"{iface}.{k}" for k in ("json", "conf", "pid", "log")}


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_state(state_dir: Path, iface: str) -> dict:
    path = _paths(state_dir, iface)["json"]
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshError(f"{iface} has not joined a network here (no {path}; `wgpy join` first)") from None
    except ValueError as e:
        raise MeshError(f"{path}: damaged ({e}); `wgpy leave --force {iface}` forgets it") from None


def save_state(state_dir: Path, iface: str, state: dict) -> None:
    _write_private(_paths(state_dir, iface)["json"], json.dumps(state, indent=1, sort_keys=True) + "\n")


# ---- talking to the server --------------------------------------------------------------------------------------

def _ssl(ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    return ctx


def _auth_headers(state: dict, purpose: str) -> dict[str, str]:
    when = int(time.time())
    nonce = os.urandom(16)
    priv = base64.b64decode(state["private_key"])
    server = base64.b64decode(state["server_public_key"])
    return {"X-Wgpy-Key": state["public_key"], "X-Wgpy-Time": str(when), "X-Wgpy-Nonce": nonce.hex(),
            "X-Wgpy-Proof": proof(priv, server, purpose, when, nonce)}


async def _post(url: str, path: str, body: dict, ca: str | None, headers: dict | None = None) -> dict:
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT * 2, connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.post(url.rstrip("/") + path, json=body, ssl=_ssl(ca), headers=headers or {}) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:
                data = {"error": (await r.text())[:200]}
            if r.status != 200:
                raise MeshError(f"the server refused: {data.get('error', r.status)}")
            return data


async def _get(url: str, path: str, ca: str | None, headers: dict) -> dict:
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT, connect=CONNECT_TIMEOUT / 2)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.get(url.rstrip("/") + path, ssl=_ssl(ca), headers=headers) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise MeshError(f"the server refused: {data.get('error', r.status)}")
            return data


def _server_error(e: Exception, url: str) -> MeshError:
    if isinstance(e, MeshError):
        return e
    if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
        return MeshError(f"{url}: the server's certificate is not trusted ({e}); give its CA with --ca FILE")
    return MeshError(f"{url}: cannot reach the server ({e.__class__.__name__}: {e})")


# ---- applying a view --------------------------------------------------------------------------------------------

def _split(cand: str) -> tuple[str, ipaddress._BaseAddress, str]:
    kind, addr = cand.split(" ", 1)
    return kind, ipaddress.ip_address(addr.rpartition(":")[0].strip("[]")), addr


def choose_endpoint(peer: dict, mine: "Candidates | None") -> tuple[str | None, str]:
    """Where to send to a peer, and how that was decided. Same LAN first: a host candidate of the peer inside
    one of this node's own networks; then its public mapping (STUN: "srflx"), through which both NATs are
    punched open by the two sides sending at once; then the address the server saw its stream come from."""
    cands = [_split(c) for c in peer.get("candidates", ()) if " " in c]
    if mine is not None:
        for kind, ip, addr in cands:
            if kind == "host" and any(ip in net for net in mine.networks):
                return addr, "lan"
    for kind, ip, addr in cands:
        if kind == "srflx":
            return addr, "stun"
    return peer.get("endpoint"), "server"


def peer_lines(peer: dict, old: dict | None, mine: "Candidates | None" = None,
               old_mine: "Candidates | None" = None) -> list[str]:
    """The UAPI set lines that make the interface's peer match a view entry (`old`: what was applied before;
    `mine`: this node's candidates now, `old_mine` when `old` was applied). A new endpoint is punched at once
    (wgpy_punch: a packet now, an initiation even within the 5 s that WireGuard leaves between two)."""
    key = base64.b64decode(peer["public_key"]).hex()
    lines = [f"public_key={key}"]
    ep, _ = choose_endpoint(peer, mine)
    was = choose_endpoint(old, old_mine)[0] if old is not None else None
    if ep and ep != was:
        lines += [f"endpoint={ep}", f"persistent_keepalive_interval={KEEPALIVE}", "wgpy_punch=true"]
    if old is None or old.get("allowed_ips") != peer["allowed_ips"]:
        lines.append("replace_allowed_ips=true")
        lines += [f"allowed_ip={a}" for a in peer["allowed_ips"]]
    return lines


class Applier:
    """The interface's peers as the view says (one UAPI set per change)."""

    def __init__(self, iface: str, request=None, forwarding=None) -> None:
        from ..uapi.server import request as uapi_request
        self.iface = iface
        self.request = request or uapi_request
        self.applied: dict[str, dict] = {}         # public key -> the entry applied
        self.forwarding = forwarding or enable_forwarding
        self.gateway = False
        self.mine: Candidates | None = None        # this node's candidates (the endpoint choice depends on them)
        self.punched: dict[str, float] = {}        # public key -> when its endpoint was last set (monotonic)
        self.nat = {"punches": 0, "punched_direct": 0, "relayed": 0}   # wgpy status --json "nat"
        self._waiting: dict[str, float] = {}       # punched peers not answered yet: key -> wall time of the punch

    def _gateway(self, peer: dict) -> None:
        """A device in the view: this node is its gateway and forwards between it and the mesh."""
        if peer.get("device") and not self.gateway:
            self.gateway = True
            self.forwarding()

    def _set(self, lines: list[str]) -> None:
        if not lines:
            return
        now, key = time.monotonic(), None
        for ln in lines:                           # which peers' endpoints this set punches
            if ln.startswith("public_key="):
                key = ln[11:]
            elif ln.startswith("endpoint=") and key is not None:
                k = crypto.encode_key(bytes.fromhex(key))
                self.punched[k] = now
                self.nat["punches"] += 1
                self._waiting[k] = time.time()
        reply = self.request(self.iface, "set=1\n" + "".join(ln + "\n" for ln in lines))
        if reply.strip() != "errno=0":
            raise MeshError(f"{self.iface}: the interface refused the peers ({reply.strip()})")

    def whole(self, peers: list[dict], present: set[str] | None = None) -> None:
        """Apply a whole view: peers not in it are removed (of those this agent applied, and `present`: the keys
        the interface has now)."""
        want = {p["public_key"]: p for p in peers}
        lines: list[str] = []
        for key in (set(self.applied) | (present or set())) - set(want):
            lines += [f"public_key={base64.b64decode(key).hex()}", "remove=true"]
            self.applied.pop(key, None)
        for key, p in want.items():
            old = self.applied.get(key)
            if old != p:
                lines += peer_lines(p, old, self.mine, self.mine)
                self.applied[key] = p
            self._gateway(p)
        self._set(lines)

    def upsert(self, peer: dict) -> None:
        self._gateway(peer)
        old = self.applied.get(peer["public_key"])
        self._set(peer_lines(peer, old, self.mine, self.mine))
        self.applied[peer["public_key"]] = peer

    def set_mine(self, mine: "Candidates") -> None:
        """This node's candidates changed: the peers whose endpoint choice changes with them are set again."""
        old_mine, self.mine = self.mine, mine
        lines: list[str] = []
        for p in self.applied.values():
            pl = peer_lines(p, p, mine, old_mine)
            if len(pl) > 1:
                lines += pl
        self._set(lines)

    def endpoints(self) -> dict[str, tuple[str | None, str]]:
        """public key -> (endpoint, how it was chosen), for `wgpy status`."""
        return {k: choose_endpoint(p, self.mine) for k, p in self.applied.items()}

    def remove(self, key: str) -> None:
        self._set([f"public_key={base64.b64decode(key).hex()}", "remove=true"])
        self.applied.pop(key, None)
        self.punched.pop(key, None)


def enable_forwarding() -> None:
    """IPv4 and IPv6 forwarding on (in this network namespace): a gateway routes its devices' packets."""
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        try:
            with open(path, "w") as f:
                f.write("1\n")
        except OSError as e:
            log.warning("cannot turn on forwarding (%s: %s): devices behind this node are not routed", path, e)
    log.info("a device is behind this node: forwarding on")


def _present_keys(iface: str) -> set[str]:
    from ..show import parse_get
    from ..uapi.server import request
    _, peers = parse_get(request(iface, "get=1\n"))
    return {crypto.encode_key(bytes.fromhex(p["public_key"])) for p in peers}


# ---- candidates: where this node may be reached ------------------------------------------------------------------

class Candidates:
    """This node's candidates: its public mapping (srflx, from the daemon's STUN client: the mapping of the
    WireGuard socket itself) and its own addresses with the listen port (host), and its own networks (a peer's
    host candidate inside one of them is on the same LAN)."""

    def __init__(self, srflx: str | None, hosts: list[str], networks: list) -> None:
        self.srflx, self.hosts, self.networks = srflx, hosts, networks

    def wire(self) -> list[str]:
        return ([f"srflx {self.srflx}"] if self.srflx else []) + [f"host {h}" for h in self.hosts]

    def __eq__(self, other) -> bool:
        return isinstance(other, Candidates) and self.wire() == other.wire()


def gather_candidates(iface: str, port: int) -> Candidates:
    """Read the STUN mapping from the interface (UAPI get: wgpy_stun_mapped) and this namespace's addresses
    (not the mesh interface's own, nor loopback, link-local or multicast)."""
    from ..show import parse_get
    from ..uapi.server import request
    dev, _ = parse_get(request(iface, "get=1\n"))
    hosts, nets = [], []
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for a in ipr.get_addr():
            if names.get(a["index"]) == iface:
                continue
            ip = ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))
            if ip.is_loopback or ip.is_link_local or ip.is_multicast:
                continue
            nets.append(ipaddress.ip_network(f"{ip}/{a['prefixlen']}", strict=False))
            hosts.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    return Candidates(dev.get("wgpy_stun_mapped"), hosts[:MAX_HOST_CANDIDATES], nets)


# ---- the agent --------------------------------------------------------------------------------------------------

class Agent:
    def __init__(self, state_dir: Path, iface: str) -> None:
        self.state_dir = state_dir
        self.iface = iface
        self.state = load_state(state_dir, iface)
        self.applier = Applier(iface)
        self.version = 0
        self.stop = False
        self.lock = asyncio.Lock()      # one change of the interface's peers at a time (views, candidates)
        from .relay import RelayClient
        self.relay = RelayClient(self._relay_ws)
        self.relayed: set[str] = set()  # peers given the relay as their fallback
        self._relay_server = 0

    def _save_view(self) -> None:
        self.state["view"] = {"version": self.version, "peers": list(self.applier.applied.values()),
                              "saved": time.time()}
        self.state["paths"] = {k: how for k, (_, how) in self.applier.endpoints().items()}
        self.state["nat"] = dict(self.applier.nat)
        if self.applier.mine is not None:
            self.state["candidates"] = self.applier.mine.wire()
        save_state(self.state_dir, self.iface, self.state)

    async def _stun_on(self) -> None:
        """The daemon asks the server's STUN port (its address looked up from the first server URL)."""
        port = self.state.get("stun_port")
        if not port:
            return
        import socket
        from urllib.parse import urlsplit
        host = urlsplit(self.state["servers"][0]).hostname
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as e:
            log.warning("STUN: cannot resolve %s: %s", host, e)
            return
        ip = infos[0][4][0]
        addr = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        await asyncio.to_thread(self.applier._set, [f"wgpy_stun_server={addr}"])
        log.info("STUN: asking %s for this node's public address", addr)

    async def _gather(self, ws) -> None:
        """Report this node's candidates on the stream whenever they change (at once on a new stream)."""
        sent = None
        start = time.monotonic()
        while True:
            try:
                mine = await asyncio.to_thread(gather_candidates, self.iface, self.state["listen_port"])
            except Exception as e:            # the interface went away: the stream's end will tell
                log.warning("candidates: %s", e)
                mine = None
            if mine is not None and mine != sent:
                await ws.send_json({"type": "candidates", "candidates": mine.wire()})
                log.info("candidates: %s", ", ".join(mine.wire()) or "none")
                sent = mine
                async with self.lock:
                    await asyncio.to_thread(self.applier.set_mine, mine)
                    await asyncio.to_thread(self._save_view)
            elif mine is not None:
                self.applier.mine = mine
            await asyncio.sleep(GATHER_FAST if time.monotonic() - start < 15 else GATHER_EVERY)

    def _relay_ws(self):
        """An async context manager: the relay WebSocket to a server (the next one after a failure)."""
        import contextlib
        import aiohttp

        @contextlib.asynccontextmanager
        async def connect():
            servers = self.state["servers"]
            url = servers[self._relay_server % len(servers)]
            timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
            try:
                async with aiohttp.ClientSession(timeout=timeout) as s:
                    async with s.ws_connect(url.rstrip("/") + "/api/v1/relay", ssl=_ssl(self.state.get("ca")),
                                            headers=_auth_headers(self.state, "relay"), heartbeat=20.0,
                                            max_msg_size=32 + 65535) as ws:
                        yield ws
            except Exception:
                self._relay_server += 1
                raise
        return connect()

    async def _watch(self) -> None:
        """Every 0.5 s: a peer with no direct path (no handshake soon after its punch, or none for a long time)
        gets the relay as its fallback; a peer that left loses its relay listener."""
        from ..show import parse_get
        from ..uapi.server import request
        from .relay import fallback_lines, needs_relay
        saved: dict = {}
        while True:
            await asyncio.sleep(0.5)
            if self.applier.nat != saved:          # the counters reach `wgpy status` through the state file
                saved = dict(self.applier.nat)
                async with self.lock:
                    await asyncio.to_thread(self._save_view)
            try:
                _, peers = await asyncio.to_thread(parse_get, await asyncio.to_thread(request, self.iface,
                                                                                      "get=1\n"))
            except OSError:
                continue
            hs = {crypto.encode_key(bytes.fromhex(p["public_key"])): int(p.get("last_handshake_time_sec", "0"))
                  for p in peers}
            on_stream = {crypto.encode_key(bytes.fromhex(p["public_key"])) for p in peers
                         if p.get("wgpy_fallback") == "active"}
            nat = self.applier.nat
            for key, since in list(self.applier._waiting.items()):        # a punch answered on the direct path
                if hs.get(key, 0) >= int(since) and key not in on_stream:
                    nat["punched_direct"] += 1
                    del self.applier._waiting[key]
                elif key not in self.applier.applied or key in on_stream:
                    del self.applier._waiting[key]
            for key in list(self.relayed):
                if key not in self.applier.applied:
                    self.relayed.discard(key)
                    self.relay.forget(key)
            now_m, now_w = time.monotonic(), time.time()
            for key, p in list(self.applier.applied.items()):
                if key in self.relayed or p.get("device") or key not in hs:
                    continue
                if needs_relay(hs[key], self.applier.punched.get(key), now_m, now_w):
                    port = await self.relay.listen(key)
                    async with self.lock:
                        if key in self.applier.applied:
                            await asyncio.to_thread(self.applier._set, [
                                f"public_key={base64.b64decode(key).hex()}", "update_only=true",
                                *fallback_lines(port)])
                            self.relayed.add(key)
                            nat["relayed"] += 1
                            log.info("%s: no direct path yet; the relay is its fallback", p["name"])

    async def run(self) -> int:
        try:
            await self._stun_on()
        except Exception as e:
            log.warning("STUN: %s", e)
        relay_task = asyncio.create_task(self.relay.run())
        watch_task = asyncio.create_task(self._watch())
        try:
            return await self._run()
        finally:
            relay_task.cancel()
            watch_task.cancel()
            self.relay.close()

    async def _run(self) -> int:
        cached = self.state.get("view")
        if cached:
            await asyncio.to_thread(self.applier.whole, cached["peers"], await asyncio.to_thread(_present_keys,
                                                                                                 self.iface))
            log.info("applied the cached view: %d peers", len(cached["peers"]))
        failures = 0
        servers = self.state["servers"]
        i = 0
        while not self.stop:
            url = servers[i % len(servers)]
            try:
                removed = await self._stream(url)
                if removed:
                    return self._removed()
                failures = 0
            except Exception as e:            # unreachable, refused, TLS: try again later (or the next server)
                log.warning("%s: %s", url, _server_error(e, url))
                failures += 1
                i += 1
            delay = min(BACKOFF_MIN * 2 ** min(failures, 10), BACKOFF_MAX)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
        return 0

    async def _stream(self, url: str) -> bool:
        import aiohttp
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async with s.ws_connect(url.rstrip("/") + "/api/v1/stream", ssl=_ssl(self.state.get("ca")),
                                    headers=_auth_headers(self.state, "stream"), heartbeat=20.0,
                                    max_msg_size=64 << 20) as ws:
                log.info("connected to %s", url)
                gather = asyncio.create_task(self._gather(ws))
                try:
                    return await self._messages(ws)
                finally:
                    gather.cancel()
        return False

    async def _messages(self, ws) -> bool:
        import aiohttp
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            m = json.loads(msg.data)
            kind = m.get("type")
            if kind == "removed":
                return True
            async with self.lock:
                if not await self._apply(m):
                    return False
        return ws.close_code == 4001

    async def _apply(self, m: dict) -> bool:
        """Apply a view message; False: a gap in the versions (resynchronise)."""
        kind = m.get("type")
        if kind == "view":
            present = await asyncio.to_thread(_present_keys, self.iface)
            await asyncio.to_thread(self.applier.whole, m["peers"], present)
            self.version = m["version"]
            log.info("view %d: %d peers", self.version, len(m["peers"]))
        elif kind in ("upsert", "remove"):
            if m["version"] != self.version + 1:
                log.info("view version %d after %d: resynchronising", m["version"], self.version)
                return False
            if kind == "upsert":
                await asyncio.to_thread(self.applier.upsert, m["peer"])
            else:
                await asyncio.to_thread(self.applier.remove, m["public_key"])
            self.version = m["version"]
        else:
            return True
        await asyncio.to_thread(self._save_view)
        return True

    def _removed(self) -> int:
        log.info("this node was removed from the network: taking %s down", self.iface)
        _down(self.iface)
        _forget(self.state_dir, self.iface, keep_log=True)
        return 0


def _wgpy(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wgpy", *args], capture_output=True, text=True, timeout=timeout)


def _down(iface: str) -> None:
    res = _wgpy("down", iface)
    if res.returncode != 0 and "not" not in res.stderr:
        log.warning("wgpy down %s: %s", iface, res.stderr.strip())


def _forget(state_dir: Path, iface: str, keep_log: bool = False) -> None:
    for k, p in _paths(state_dir, iface).items():
        if k == "log" and keep_log:
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _stop_agent(state_dir: Path, iface: str) -> None:
    pidfile = _paths(state_dir, iface)["pid"]
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if b"agent" not in cmdline or iface.encode() not in cmdline:
        return                                       # a reused pid: not ours
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def agent_main(iface: str, state_dir: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s wgpy agent: %(message)s")
    try:
        agent = Agent(state_dir, iface)
    except MeshError as e:
        log.error("%s", e)
        return 1
    loop = asyncio.new_event_loop()
    task = loop.create_task(agent.run())

    def _stop(*_a) -> None:
        agent.stop = True
        task.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, _stop)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 0
    finally:
        loop.close()


# ---- join / leave / status ---------------------------------------------------------------------------------------

def _iface_exists(iface: str) -> bool:
    return Path(f"/sys/class/net/{iface}").exists() or Path(f"/var/run/wireguard/{iface}.sock").exists()


def join_main(url: str, token: str, name: str, ca: str | None, iface: str, port: int, state_dir: Path) -> int:
    if not url.startswith("https://"):
        print("wgpy: the server URL must be https://HOST:PORT (the API is served over TLS only)", file=sys.stderr)
        return 1
    if ca and not os.path.isfile(ca):
        print(f"wgpy: --ca {ca}: no such file", file=sys.stderr)
        return 1
    paths = _paths(state_dir, iface)
    if paths["json"].exists():
        print(f"wgpy: {iface} has already joined a network ({paths['json']}); `wgpy leave --interface {iface}` "
              "first", file=sys.stderr)
        return 1
    if _iface_exists(iface):
        print(f"wgpy: interface {iface} already exists; choose another with --interface", file=sys.stderr)
        return 1
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = crypto.clamp(os.urandom(32))
    public = crypto.encode_key(crypto.public_from_private(private))
    try:
        reply = asyncio.run(_post(url, "/api/v1/join", {"token": token, "name": name, "public_key": public,
                                                         "listen_port": port}, ca))
    except Exception as e:
        print(f"wgpy: join failed: {_server_error(e, url)}", file=sys.stderr)
        return 1
    node = reply["node"]
    nets = reply["networks"]
    servers = [url] + [u for u in reply.get("servers", []) if u != url]      # every instance, for failover
    state = {"servers": servers, "ca": os.path.abspath(ca) if ca else None, "interface": iface,
             "server_public_key": reply["server_public_key"], "node": node, "public_key": public,
             "private_key": crypto.encode_key(private), "listen_port": port, "networks": nets, "view": None,
             "stun_port": int(reply.get("stun_port") or 0)}
    addresses = []
    for addr in node["addresses"]:
        net = next(n for n in nets if (":" in n) == (":" in addr))
        addresses.append(f"{addr}/{net.split('/')[1]}")
    conf = (f"[Interface]\nPrivateKey = {crypto.encode_key(private)}\nListenPort = {port}\n"
            f"Address = {', '.join(addresses)}\n")
    try:
        save_state(state_dir, iface, state)
        _write_private(paths["conf"], conf)
        up = _wgpy("up", str(paths["conf"]))
        if up.returncode != 0:
            raise MeshError(f"wgpy up: {up.stderr.strip() or up.stdout.strip()}")
        with open(paths["log"], "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "wgpy", "agent", iface, "--state-dir", str(state_dir)],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        paths["pid"].write_text(f"{proc.pid}\n")
    except Exception as e:
        print(f"wgpy: join failed: {e}; undoing it", file=sys.stderr)
        _undo_join(state, state_dir, iface)
        return 1
    # the first view within a few seconds: then the peers are there
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            view = load_state(state_dir, iface).get("view")
        except MeshError:
            view = None
        if view is not None or proc.poll() is not None:
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        print(f"wgpy: the agent exited ({paths['log']}); undoing the join", file=sys.stderr)
        _undo_join(state, state_dir, iface)
        return 1
    npeers = len(view["peers"]) if view else 0
    print(f"wgpy: joined as {node['name']} ({', '.join(node['addresses'])}) on {iface}; {npeers} peer(s)"
          + ("" if view else " so far (the agent is still connecting)"), file=sys.stderr)
    return 0


def _undo_join(state: dict, state_dir: Path, iface: str) -> None:
    _stop_agent(state_dir, iface)
    if _iface_exists(iface):
        _down(iface)
    try:
        asyncio.run(_post(state["servers"][0], "/api/v1/leave", {}, state.get("ca"), _auth_headers(state, "leave")))
    except Exception as e:
        print(f"wgpy: could not deregister the node ({_server_error(e, state['servers'][0])}); remove it with "
              f"`wgpy server nodes remove {state['node']['name']}`", file=sys.stderr)
    _forget(state_dir, iface)


def leave_main(iface: str, state_dir: Path, force: bool = False) -> int:
    try:
        state = load_state(state_dir, iface)
    except MeshError as e:
        if force:
            _stop_agent(state_dir, iface)
            if _iface_exists(iface):
                _down(iface)
            _forget(state_dir, iface)
            return 0
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    rc = 0
    try:
        asyncio.run(_post(state["servers"][0], "/api/v1/leave", {}, state.get("ca"), _auth_headers(state, "leave")))
    except Exception as e:
        err = _server_error(e, state["servers"][0])
        if not force:
            print(f"wgpy: leave: {err} (--force leaves locally anyway; then remove the node on the server)",
                  file=sys.stderr)
            return 1
        print(f"wgpy: leave: {err}; leaving locally (--force)", file=sys.stderr)
        rc = 0
    _stop_agent(state_dir, iface)
    if _iface_exists(iface):
        _down(iface)
    _forget(state_dir, iface)
    print(f"wgpy: {state['node']['name']} left the network; {iface} is down", file=sys.stderr)
    return rc


_PATH_WORDS = {"lan": "direct, same LAN", "stun": "direct, through the NATs (STUN)",
               "server": "direct, the address the server saw"}


def status_main(iface: str, state_dir: Path, as_json: bool) -> int:
    from ..show import parse_get
    from ..uapi.server import request
    try:
        state = load_state(state_dir, iface)
    except MeshError as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    handshakes: dict[str, int] = {}
    endpoints: dict[str, str] = {}
    relayed: set[str] = set()
    try:
        _, peers = parse_get(request(iface, "get=1\n"))
        for p in peers:
            k = crypto.encode_key(bytes.fromhex(p["public_key"]))
            handshakes[k] = int(p.get("last_handshake_time_sec", "0"))
            if p.get("endpoint"):
                endpoints[k] = p["endpoint"]
            if p.get("wgpy_fallback") == "active":
                relayed.add(k)
    except OSError:
        pass
    view = state.get("view") or {"peers": []}
    me = state["node"]
    # online / last seen: asked of the server (never pushed); without it the cached view, presence unknown
    presence: dict[str, dict] = {}
    server = None
    for url in state["servers"]:
        try:
            reply = asyncio.run(_get(url, "/api/v1/status", state.get("ca"), _auth_headers(state, "status")))
            presence = {n["public_key"]: n for n in reply["nodes"]}
            server = url
            break
        except Exception as e:
            log.debug("status from %s: %s", url, e)
    paths = state.get("paths") or {}
    rows = [{"name": me["name"], "addresses": me["addresses"], "self": True, "online": True, "last_seen": None,
             "endpoint": None, "latest_handshake": None, "candidates": state.get("candidates") or []}]
    for p in sorted(view["peers"], key=lambda p: p["name"]):
        pr = presence.get(p["public_key"], {})
        rows.append({"name": p["name"], "addresses": [a.split("/")[0] for a in p["allowed_ips"]][:2],
                     "self": False, "device": bool(p.get("device")),
                     "online": pr.get("online") if presence else None, "last_seen": pr.get("last_seen"),
                     "endpoint": endpoints.get(p["public_key"], p.get("endpoint")),
                     "path": None if p.get("device") else "relayed, through the server"
                     if p["public_key"] in relayed else _PATH_WORDS.get(paths.get(p["public_key"])),
                     "relayed": p["public_key"] in relayed,
                     "latest_handshake": handshakes.get(p["public_key"]) or None})
    if as_json:
        print(json.dumps({"interface": iface, "servers": state["servers"], "server_reached": server,
                          "nat": state.get("nat") or {}, "nodes": rows}, indent=1))
        return 0
    now = time.time()
    print(f"network of {', '.join(state['servers'])}, interface {iface}"
          + ("" if server else " (server unreachable: online state unknown, peers from the cached view)"))
    nat = state.get("nat") or {}
    if nat:
        print(f"  paths: {nat.get('punches', 0)} punch(es), {nat.get('punched_direct', 0)} answered directly, "
              f"{nat.get('relayed', 0)} peer(s) given the relay")
    for r in rows:
        words = ["this node"] if r["self"] else (["device"] if r.get("device") else []) + (
            [] if r["online"] is None else ["online"] if r["online"] else
            [f"offline, last seen {_ago(now, r['last_seen'])}"])
        state_txt = " ".join(words)
        hs = "" if r["self"] else (f", handshake {_ago(now, r['latest_handshake'])}" if r["latest_handshake"]
                                   else ", no handshake yet")
        ep = f", endpoint {r['endpoint']}" if r["endpoint"] else ""
        path = f" ({r['path']})" if r.get("path") else ""
        print(f"  {r['name']:<20} {', '.join(r['addresses']):<32} {state_txt}{ep}{path}{hs}")
    return 0


def _ago(now: float, when: float | None) -> str:
    if not when:
        return "never"
    s = max(0, int(now - when))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"
