"""`wgpy server run`: the control plane's HTTPS API (aiohttp), the runtime around mesh/model.py and mesh/store.py.

aiohttp because one well-kept asyncio library gives the HTTPS server, WebSockets for the long-lived view stream
and the client the nodes use (mesh/agent.py).

API (JSON; every body at most MAX_BODY bytes):
    POST /api/v1/join     {"token", "name", "public_key", "listen_port"} -> {"node": {...}, "networks": [...],
                          "server_public_key": ...}; the token checked and used, addresses allocated
    GET  /api/v1/stream   WebSocket, authenticated by the node's key (mesh/auth.py; headers X-Wgpy-Key,
                          X-Wgpy-Time, X-Wgpy-Nonce, X-Wgpy-Proof): the whole view, then every delta
    POST /api/v1/leave    authenticated likewise: the node is removed everywhere
    GET  /api/v1/relay    WebSocket, authenticated likewise: the node's relay connection (relay_forward)
    GET  /api/v1/status   authenticated likewise: the node and its peers, online or not, last seen (asked for,
                          never pushed: presence is no part of the views)
    GET  /healthz         "ok"
    /admin/...            the web admin (mesh/admin.py): sign-in, nodes, join tokens, devices, policy
    GET  /metrics         Prometheus text format: nodes, online nodes, joins, changes, view updates pushed, streams
                          cut off, and the latency from a change's commit to its updates queued (a summary of
                          the last 1000); no node names or keys

Changes reach the views through the database's change log (Store.changes_after), polled every POLL seconds by
every instance, its own changes included: one path for joins here, joins at another instance on the same
PostgreSQL and admin commands (`wgpy server nodes remove`). The pushes to the nodes' streams never wait on a slow
node: each stream has a bounded queue; a node that falls behind is disconnected and resynchronises with the
whole view when it reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from typing import Any

from aiohttp import WSMsgType, web

from .auth import Verifier
from .model import Mesh, Node
from .store import JoinError, Store, StoreError

__all__ = ["make_app", "run_server"]

log = logging.getLogger("wgpy.server")

MAX_BODY = 16 * 1024          # a join or leave request
POLL = 0.25                   # seconds between reads of the change log
STREAM_QUEUE = 1024           # deltas waiting for one node's stream before it is cut off
HEARTBEAT = 20.0              # WebSocket pings
PRESENCE_EVERY = 30.0         # seconds between an instance's "still connected" writes
PRESENCE_TIMEOUT = 75.0       # a node not confirmed for this long is offline (its instance died)
LOOKBACK = 256                # change-log ids read again behind the highest seen (see apply_changes)
RELAY_QUEUE = 512             # relayed messages waiting for one node's relay connection; more are dropped
RELAY_RATE = 100e6 / 8        # bytes/s each node may send through the relay (token bucket) ...
RELAY_BURST = 1 << 20         # ... with this burst


class _Stream:
    """One connected node stream: a bounded queue of messages, and `cut` once it must close (fell behind, or the
    node was removed)."""

    __slots__ = ("queue", "cut")

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(STREAM_QUEUE)
        self.cut = False

    def put(self, msg: dict) -> bool:
        try:
            self.queue.put_nowait(msg)
            return True
        except asyncio.QueueFull:
            self.cut = True
            return False

    def close(self, msg: dict | None = None) -> None:
        self.cut = True
        if msg is not None:
            self.put(msg)
        else:
            self.put({"type": "resync"})


class ControlPlane:
    """One server instance: the in-memory views, the connected streams, the change-log reader."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mesh = Mesh(store.policy())
        self.verifier = Verifier(store.server_private())
        self.streams: dict[int, set[_Stream]] = {}
        self.last_change = 0
        self.applied: set[int] = set()            # change ids applied, within LOOKBACK of last_change
        self.stats = {"joins": 0, "deltas": 0, "streams_cut": 0, "changes": 0, "bad_messages": 0,
                      "stun_answered": 0, "stun_refused": 0, "relay_messages": 0, "relay_bytes": 0,
                      "relay_not_allowed": 0, "relay_no_peer": 0, "relay_queue_full": 0, "relay_over_rate": 0,
                      "relay_malformed": 0}
        self.relays: dict[int, "_Relay"] = {}      # node id -> its relay connection (the latest)
        self.stun_port = 0                        # the UDP port STUN is answered on (0: not answered here)
        self.latency: list[float] = []            # seconds from a change's commit to its deltas queued (recent)
        self.lock = asyncio.Lock()                # one reader of the change log at a time (see apply_changes)
        self._kicked: asyncio.Task | None = None
        self._again = False

    async def db(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def load(self) -> None:
        self.last_change = await self.db(self.store.last_change)
        self.applied = set(range(max(1, self.last_change - LOOKBACK), self.last_change + 1))
        for node in sorted(await self.db(self.store.all_nodes), key=lambda n: n.gateway is not None):
            self.mesh.upsert(node)                # nodes first, then the devices behind them

    def push(self, deltas: list[tuple[int, dict]]) -> None:
        for node_id, msg in deltas:
            for st in list(self.streams.get(node_id, ())):
                if st.put(msg):
                    self.stats["deltas"] += 1
                else:                                # fell behind: cut off, it resynchronises on reconnect
                    self.stats["streams_cut"] += 1

    async def apply_changes(self) -> None:
        """Apply what the change log has that is not applied yet. Serialised: a request handler that reads the
        log (a node that joined a moment ago) must find the node applied when this returns, not half-way in the
        poller's pass."""
        async with self.lock:
            await self._apply_changes()

    async def _apply_changes(self) -> None:
        # With several instances on PostgreSQL, ids are handed out in one order and committed in another: a
        # change with a lower id may become visible after a higher one was read. So the log is read from
        # LOOKBACK ids before the highest seen, skipping those applied (applying is idempotent anyway: a change
        # only says which node to read again).
        changes = await self.db(self.store.changes_after, max(0, self.last_change - LOOKBACK))
        for cid, node_id, kind, at in changes:
            if cid in self.applied:
                continue
            self.applied.add(cid)
            self.last_change = max(self.last_change, cid)
            self.stats["changes"] += 1
            if kind == "policy":
                self.push(self.mesh.set_policy(await self.db(self.store.policy)))
            elif kind == "removed":
                self.push(self.mesh.remove(node_id))
                for st in list(self.streams.get(node_id, ())):
                    st.close({"type": "removed"})
            else:
                node = await self.db(self.store.node, node_id)
                if node is None:
                    self.push(self.mesh.remove(node_id))
                else:
                    self.push(self.mesh.upsert(node))
            self.latency.append(max(0.0, time.time() - at))
        if len(self.latency) > 1000:
            del self.latency[:-1000]
        floor = self.last_change - LOOKBACK
        if len(self.applied) > 4 * LOOKBACK:
            self.applied = {c for c in self.applied if c > floor}

    async def poll(self) -> None:
        while True:
            try:
                await self.apply_changes()
            except StoreError as e:
                log.warning("%s; retrying", e)
            except Exception:                                   # never let the reader die
                log.exception("reading the change log")
            await asyncio.sleep(POLL)

    def kick(self) -> None:
        """Read the change log soon, without waiting for it here (a join answers at once; joins that come
        together share one pass)."""
        self._again = True
        if self._kicked is None or self._kicked.done():
            self._kicked = asyncio.create_task(self._kick())

    async def _kick(self) -> None:
        while self._again:                        # a join committed while a pass ran gets a pass of its own
            self._again = False
            try:
                await self.apply_changes()
            except StoreError as e:
                log.warning("%s", e)

    async def presence(self) -> None:
        """Every PRESENCE_EVERY seconds: the nodes this instance holds streams of are still there."""
        while True:
            await asyncio.sleep(PRESENCE_EVERY)
            try:
                await self.db(self.store.touch, sorted(self.streams), time.time())
            except StoreError as e:
                log.warning("%s", e)

    def online(self, node_id: int, presence: dict[int, tuple[bool, float]], now: float) -> bool:
        """A stream of the node held here, or by some instance that confirmed it within PRESENCE_TIMEOUT."""
        connected, seen = presence.get(node_id, (False, 0.0))
        return node_id in self.streams or bool(connected and now - seen < PRESENCE_TIMEOUT)

    async def status(self, node: Node) -> list[dict]:
        """What `wgpy status` shows a node: itself and its view's peers, each online or not (a stream held by
        some instance, seen within PRESENCE_TIMEOUT) and last seen."""
        pres = await self.db(self.store.presence)
        now = time.time()
        out = []
        for i in [node.id] + self.mesh.view_ids(node.id):
            n = self.mesh.nodes.get(i) or self.mesh.devices.get(i)
            connected, seen = pres.get(n.id, (False, 0.0))
            out.append({"name": n.name, "public_key": n.public_key, "addresses": list(n.addresses),
                        "endpoint": n.endpoint, "device": n.gateway is not None, "self": n.id == node.id,
                        "online": self.online(n.id, pres, now),
                        "last_seen": seen or None})
        return out


class _Relay:
    """One node's relay connection: a bounded queue of messages for it, and its send budget."""

    __slots__ = ("node_id", "key", "queue", "tokens", "last")

    def __init__(self, node_id: int, key: bytes) -> None:
        self.node_id, self.key = node_id, key
        self.queue: asyncio.Queue = asyncio.Queue(RELAY_QUEUE)
        self.tokens, self.last = float(RELAY_BURST), time.monotonic()

    def spend(self, n: int, now: float) -> bool:
        self.tokens = min(RELAY_BURST, self.tokens + (now - self.last) * RELAY_RATE)
        self.last = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


def relay_forward(cp: ControlPlane, src: _Relay, data: bytes, now: float) -> str | None:
    """Forward one relayed message from `src`'s node: DEST KEY (32 bytes) + a WireGuard message, delivered as
    SOURCE KEY + the message to the destination's relay connection. Only to a peer of the sender's view (what
    policy lets it reach); each node's sending limited (RELAY_RATE), each destination's queue bounded. Returns
    the counter of a drop, None when forwarded. The relay sees only WireGuard's ciphertext."""
    stats = cp.stats
    if not 32 + 32 <= len(data) <= 32 + 65535:
        stats["relay_malformed"] += 1
        return "relay_malformed"
    dest_id = cp.mesh.by_key.get(base64.b64encode(data[:32]).decode())
    if dest_id is None or dest_id not in cp.mesh.peers.get(src.node_id, ()):
        stats["relay_not_allowed"] += 1
        return "relay_not_allowed"
    dest = cp.relays.get(dest_id)
    if dest is None:
        stats["relay_no_peer"] += 1
        return "relay_no_peer"
    if not src.spend(len(data), now):
        stats["relay_over_rate"] += 1
        return "relay_over_rate"
    try:
        dest.queue.put_nowait(src.key + data[32:])
    except asyncio.QueueFull:
        stats["relay_queue_full"] += 1
        return "relay_queue_full"
    stats["relay_messages"] += 1
    stats["relay_bytes"] += len(data) - 32
    return None


CP_KEY = web.AppKey("cp", ControlPlane)
POLLER_KEY = web.AppKey("poller", asyncio.Task)
PRESENCE_KEY = web.AppKey("presence", asyncio.Task)
STUN_KEY = web.AppKey("stun", asyncio.DatagramTransport)


async def _json_body(request: web.Request) -> dict:
    if request.content_length is None or request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length or 0)
    try:
        body = json.loads(await request.content.read(MAX_BODY + 1))
    except ValueError:
        raise _error(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise _error(400, "expected a JSON object")
    return body


def _error(status: int, text: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
           409: web.HTTPConflict, 503: web.HTTPServiceUnavailable}[status]
    return cls(text=json.dumps({"error": text}), content_type="application/json")


def _peer_ip(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return peer[0] if peer else None


def _endpoint(ip: str | None, port: int) -> str | None:
    if not ip or not port:
        return None
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _auth(cp: ControlPlane, request: web.Request, purpose: str) -> Node:
    h = request.headers
    try:
        key_b64 = h["X-Wgpy-Key"]
        key = base64.b64decode(key_b64, validate=True)
        when = int(h["X-Wgpy-Time"])
        nonce = bytes.fromhex(h["X-Wgpy-Nonce"])
        given = h["X-Wgpy-Proof"]
        if len(key) != 32:
            raise ValueError
    except (KeyError, ValueError):
        raise _error(401, "missing or malformed node credentials") from None
    node = cp.mesh.find(key_b64)
    if node is None or node.gateway is not None:          # devices run no agent: they never authenticate
        raise _error(403, "this key is not a node of the network (removed, or never joined)")
    why = cp.verifier.check(key, purpose, when, nonce, given, time.time())
    if why is not None:
        raise _error(401, why)
    return node


def make_app(store: Store) -> web.Application:
    cp = ControlPlane(store)
    app = web.Application(client_max_size=MAX_BODY)
    app[CP_KEY] = cp

    async def on_startup(app: web.Application) -> None:
        await cp.load()
        app[POLLER_KEY] = asyncio.create_task(cp.poll())
        app[PRESENCE_KEY] = asyncio.create_task(cp.presence())

    async def on_cleanup(app: web.Application) -> None:
        app[POLLER_KEY].cancel()
        app[PRESENCE_KEY].cancel()

    async def join(request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            token, name, key = str(body["token"]), str(body["name"]), str(body["public_key"])
            port = int(body["listen_port"])
            if len(base64.b64decode(key, validate=True)) != 32 or not 1 <= port <= 65535:
                raise ValueError
        except (KeyError, ValueError, TypeError):
            raise _error(400, "expected token, name, public_key (base64) and listen_port (1-65535)") from None
        try:
            node = await cp.db(store.join, token, name, key, port, _endpoint(_peer_ip(request), port), time.time())
        except JoinError as e:
            raise _error(409, str(e)) from None
        except StoreError as e:
            log.warning("join: %s", e)
            raise _error(503, "the server's database is unreachable; try again") from None
        cp.stats["joins"] += 1
        log.info("node %s joined (%s)", node.name, ", ".join(node.addresses))
        cp.kick()                                 # this instance's nodes hear of it now, not at the next poll
        return web.json_response({"node": {"id": node.id, "name": node.name, "addresses": list(node.addresses),
                                           "tags": sorted(node.tags)},
                                  "networks": await cp.db(store.networks),
                                  "servers": await cp.db(store.urls),
                                  "stun_port": cp.stun_port,
                                  "server_public_key": cp.verifier.public_b64})

    async def leave(request: web.Request) -> web.Response:
        if cp.mesh.find(request.headers.get("X-Wgpy-Key", "")) is None:
            await cp.apply_changes()          # joined a moment ago (or at another instance)
        node = _auth(cp, request, "leave")
        await cp.db(store.remove_node, node.id)
        await cp.apply_changes()
        log.info("node %s left", node.name)
        return web.json_response({"left": node.name})

    async def stream(request: web.Request) -> web.StreamResponse:
        # the node may not be in this instance's views yet (it joined elsewhere a moment ago): read the log first
        if cp.mesh.find(request.headers.get("X-Wgpy-Key", "")) is None:
            await cp.apply_changes()
        node = _auth(cp, request, "stream")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_BODY)
        await ws.prepare(request)
        await cp.db(store.seen, node.id, _endpoint(_peer_ip(request), node.listen_port), time.time(), True)
        await cp.apply_changes()                  # the endpoint just seen, before the first view
        st = _Stream()
        view = cp.mesh.view_json(node.id)         # the view and the stream's registration in one step (no
        cp.streams.setdefault(node.id, set()).add(st)   # await between): every later delta is in the queue
        await ws.send_str(view)

        async def sender() -> None:
            while True:
                msg = await st.queue.get()
                if msg.get("type") == "removed":
                    await ws.send_json(msg)
                    await ws.close(code=4001, message=b"removed")
                    return
                if st.cut:
                    await ws.close(code=4000, message=b"resync")
                    return
                await ws.send_json(msg)

        task = asyncio.create_task(sender())
        try:
            async for msg in ws:                  # the node says only where it may be reached (and pings)
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                if msg.type == WSMsgType.TEXT:
                    cands = parse_candidates(msg.data)
                    if cands is None:
                        cp.stats["bad_messages"] += 1
                        continue
                    if await cp.db(store.set_candidates, node.id, cands, time.time()):
                        cp.kick()
        finally:
            task.cancel()
            cp.streams.get(node.id, set()).discard(st)
            if not cp.streams.get(node.id):
                cp.streams.pop(node.id, None)
                try:
                    await cp.db(store.seen, node.id, None, time.time(), False)
                except StoreError:
                    pass
        return ws

    async def relay(request: web.Request) -> web.StreamResponse:
        """GET /api/v1/relay: the node's relay connection (a WebSocket, authenticated as the stream is), binary
        messages both ways: DEST KEY + WireGuard message from the node, SOURCE KEY + message to it."""
        if cp.mesh.find(request.headers.get("X-Wgpy-Key", "")) is None:
            await cp.apply_changes()
        node = _auth(cp, request, "relay")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=32 + 65535)
        await ws.prepare(request)
        me = _Relay(node.id, base64.b64decode(node.public_key))
        old = cp.relays.get(node.id)
        cp.relays[node.id] = me
        if old is not None:                       # the node reconnected: the old connection is closed
            try:
                old.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass

        async def sender() -> None:
            while True:
                msg = await me.queue.get()
                if msg is None:                   # replaced by a newer connection of the node
                    await ws.close()
                    return
                await ws.send_bytes(msg)

        task = asyncio.create_task(sender())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    relay_forward(cp, me, msg.data, time.monotonic())
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                else:
                    cp.stats["relay_malformed"] += 1
        finally:
            task.cancel()
            if cp.relays.get(node.id) is me:
                del cp.relays[node.id]
        return ws

    async def status(request: web.Request) -> web.Response:
        node = _auth(cp, request, "status")
        return web.json_response({"nodes": await cp.status(node)})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    registry = _registry(cp)

    async def metrics(request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_post("/api/v1/join", join)
    app.router.add_post("/api/v1/leave", leave)
    app.router.add_get("/api/v1/stream", stream)
    app.router.add_get("/api/v1/relay", relay)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/metrics", metrics)
    from .admin import add_routes
    add_routes(app, cp)                       # the web admin, /admin/ (mesh/admin.py)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


MAX_CANDIDATES = 8


def parse_candidates(text: str) -> list[str] | None:
    """A node's {"type": "candidates", "candidates": ["srflx 203.0.113.7:40001", "host 192.168.1.5:51820"]}:
    at most MAX_CANDIDATES, each a kind and a numeric address:port, normalised; None when malformed."""
    import ipaddress
    try:
        m = json.loads(text)
        if not isinstance(m, dict) or m.get("type") != "candidates" or not isinstance(m.get("candidates"), list):
            return None
        out = []
        for c in m["candidates"][:MAX_CANDIDATES]:
            kind, addr = str(c).split(" ")
            host, _, port = addr.rpartition(":")
            ip = ipaddress.ip_address(host.strip("[]"))
            if kind not in ("host", "srflx") or not 0 < int(port) < 65536 or ip.is_unspecified or ip.is_multicast:
                return None
            out.append(f"{kind} {f'[{ip}]' if ip.version == 6 else ip}:{int(port)}")
        return out
    except (ValueError, TypeError):
        return None


class StunResponder(asyncio.DatagramProtocol):
    """`wgpy server run` answers STUN Binding requests (protocol/stun.py) on a UDP port of its own, so a node
    learns the public mapping of its WireGuard socket. Nothing else gets an answer; each source address is
    limited to RATE answers a second (a burst of BURST): a spoofed flood is not reflected at its victim."""

    RATE, BURST, TABLE = 5.0, 10.0, 10000

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.transport = None
        self.buckets: dict[str, tuple[float, float]] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        from ..protocol.stun import binding_response
        reply = binding_response(data, addr)
        if reply is None or not self._allow(addr[0], time.monotonic()):
            self.cp.stats["stun_refused"] += 1
            return
        self.cp.stats["stun_answered"] += 1
        self.transport.sendto(reply, addr)

    def _allow(self, ip: str, now: float) -> bool:
        tokens, last = self.buckets.get(ip, (self.BURST, now))
        tokens = min(self.BURST, tokens + (now - last) * self.RATE)
        if tokens < 1.0:
            self.buckets[ip] = (tokens, now)
            return False
        if len(self.buckets) >= self.TABLE and ip not in self.buckets:
            self.buckets.clear()                  # bounded: a flood of sources resets the table
        self.buckets[ip] = (tokens - 1.0, now)
        return True


def _registry(cp: ControlPlane):
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

    class Collector:
        def collect(self):
            yield GaugeMetricFamily("wgpy_mesh_nodes", "Nodes in the network", value=len(cp.mesh.nodes))
            yield GaugeMetricFamily("wgpy_mesh_nodes_online", "Nodes with a stream to this instance",
                                    value=len(cp.streams))
            for name, key, doc in (("joins", "joins", "Joins accepted by this instance"),
                                   ("stun_answered", "stun_answered", "STUN Binding requests answered"),
                                   ("stun_refused", "stun_refused", "STUN datagrams not answered (not a "
                                    "Binding request, or over a source's rate)"),
                                   ("bad_messages", "bad_messages", "Malformed messages on node streams"),
                                   ("relay_messages", "relay_messages", "WireGuard messages relayed"),
                                   ("relay_bytes", "relay_bytes", "Bytes of WireGuard messages relayed"),
                                   ("changes", "changes", "Change-log entries applied to the views"),
                                   ("view_updates", "deltas", "View updates queued to node streams"),
                                   ("streams_cut", "streams_cut", "Node streams cut off for falling behind")):
                yield CounterMetricFamily(f"wgpy_mesh_{name}", doc, value=cp.stats[key])
            drops = CounterMetricFamily("wgpy_mesh_relay_dropped", "Relayed messages dropped, by reason",
                                        labels=["reason"])
            for reason in ("not_allowed", "no_peer", "queue_full", "over_rate", "malformed"):
                drops.add_metric([reason], cp.stats[f"relay_{reason}"])
            yield drops
            yield GaugeMetricFamily("wgpy_mesh_relay_connections", "Nodes with a relay connection to this "
                                    "instance", value=len(cp.relays))
            lat = cp.latency
            yield SummaryMetricFamily("wgpy_mesh_view_update_latency_seconds", "From a change's commit to its "
                                      "view updates queued (the last 1000 changes)", count_value=len(lat),
                                      sum_value=sum(lat))
    reg = CollectorRegistry()
    reg.register(Collector())
    return reg


def run_server(store: Store, host: str, port: int, cert: str | None, key: str | None,
               stun_port: int = 3478) -> None:
    ctx = None
    if cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    store.upgrade()                           # tables added since `init` (the web admin's sessions)
    app = make_app(store)
    if stun_port:
        async def stun_start(app: web.Application) -> None:
            cp = app[CP_KEY]
            loop = asyncio.get_running_loop()
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: StunResponder(cp),
                                                                   local_addr=(host, stun_port))
            except OSError as e:
                raise SystemExit(f"wgpy: cannot answer STUN on UDP {host}:{stun_port}: {e.strerror} "
                                 "(--stun-port 0: not at all)") from None
            cp.stun_port = stun_port
            app[STUN_KEY] = transport

        async def stun_stop(app: web.Application) -> None:
            if STUN_KEY in app:
                app[STUN_KEY].close()
        app.on_startup.append(stun_start)
        app.on_cleanup.append(stun_stop)
    web.run_app(app, host=host, port=port, ssl_context=ctx, print=None, access_log=None,
                handle_signals=True)


def stats(app: web.Application) -> dict[str, Any]:
    cp: ControlPlane = app[CP_KEY]
    return {"nodes": len(cp.mesh.nodes), "online": len(cp.streams), **cp.stats}
