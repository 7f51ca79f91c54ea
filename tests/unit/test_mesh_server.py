"""mesh/server.py's API without namespaces: aiohttp's test server on loopback, a real SQLite database. Bad
requests (malformed, oversized, unauthenticated, replayed) are refused with a clear error and harm nobody; a
node's stream gets its view and the deltas; /metrics parses as Prometheus text."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from wgpy import crypto
from wgpy.mesh.auth import proof
from wgpy.mesh.server import MAX_BODY, make_app
from wgpy.mesh.store import Store, hash_password


def _store(tmp_path) -> Store:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    s = Store(f"sqlite:///{tmp_path}/server.db")
    s.create(X25519PrivateKey.generate().private_bytes_raw(), hash_password("correct horse"),
             ["100.80.0.0/16", "fd7a:6770::/48"])
    return s


def _headers(priv: bytes, server_pub_b64: str, purpose: str, when=None, nonce=None) -> dict:
    when = int(time.time()) if when is None else when
    nonce = nonce or os.urandom(16)
    return {"X-Wgpy-Key": crypto.encode_key(crypto.public_from_private(priv)), "X-Wgpy-Time": str(when),
            "X-Wgpy-Nonce": nonce.hex(),
            "X-Wgpy-Proof": proof(priv, base64.b64decode(server_pub_b64), purpose, when, nonce)}


def run(coro):
    return asyncio.run(coro)


async def _client(tmp_path):
    store = _store(tmp_path)
    client = TestClient(TestServer(make_app(store)))
    await client.start_server()
    return client, store


def test_join_errors_are_clear_and_create_nothing(tmp_path):
    async def go():
        client, store = await _client(tmp_path)
        try:
            tok = store.create_token([], 3600, False)
            priv = crypto.clamp(os.urandom(32))
            pub = crypto.encode_key(crypto.public_from_private(priv))
            cases = [
                (b"not json", 400, "not JSON"),
                (b"[1]", 400, "JSON object"),
                (json.dumps({"token": tok}).encode(), 400, "expected token, name, public_key"),
                (json.dumps({"token": tok, "name": "a", "public_key": "short", "listen_port": 1}).encode(), 400,
                 "public_key (base64)"),
                (json.dumps({"token": tok, "name": "a", "public_key": pub, "listen_port": 0}).encode(), 400,
                 "listen_port (1-65535)"),
                (json.dumps({"token": "wgpy_nope", "name": "a", "public_key": pub, "listen_port": 1}).encode(),
                 409, "unknown or revoked join token"),
            ]
            for body, status, words in cases:
                r = await client.post("/api/v1/join", data=body, headers={"Content-Type": "application/json"})
                assert r.status == status, (body, await r.text())
                assert words in (await r.json())["error"]
            big = b'{"token": "' + b"x" * (MAX_BODY + 10) + b'"}'
            r = await client.post("/api/v1/join", data=big)
            assert r.status == 413
            assert store.all_nodes() == [] and store.tokens()[0].uses == 0
            r = await client.post("/api/v1/join", json={"token": tok, "name": "a", "public_key": pub,
                                                        "listen_port": 51820})
            assert r.status == 200
            reply = await r.json()
            assert reply["node"]["addresses"] == ["100.80.0.1", "fd7a:6770::1"]
            assert reply["networks"] == ["100.80.0.0/16", "fd7a:6770::/48"]
        finally:
            await client.close()
    run(go())


def test_stream_view_deltas_auth_and_metrics(tmp_path):
    async def go():
        client, store = await _client(tmp_path)
        try:
            tok = store.create_token(["x"], 3600, True)
            keys = [crypto.clamp(os.urandom(32)) for _ in range(3)]
            spub = None
            for i, k in enumerate(keys[:2]):
                r = await client.post("/api/v1/join", json={"token": tok, "name": f"n{i}", "listen_port": 51820,
                                                            "public_key": crypto.encode_key(crypto.public_from_private(k))})
                spub = (await r.json())["server_public_key"]
            # no credentials, a wrong proof, a replay, an unknown key: refused before any upgrade
            r = await client.get("/api/v1/stream")
            assert r.status == 401
            h = _headers(keys[0], spub, "leave")                      # a proof for another purpose
            r = await client.get("/api/v1/stream", headers=h)
            assert r.status == 401 and "does not match" in (await r.json())["error"]
            r = await client.get("/api/v1/stream", headers=_headers(keys[2], spub, "stream"))
            assert r.status == 403
            h = _headers(keys[0], spub, "stream")
            ws = await client.ws_connect("/api/v1/stream", headers=h)
            view = await ws.receive_json(timeout=5)
            assert view["type"] == "view" and [p["name"] for p in view["peers"]] == ["n1"]
            r = await client.get("/api/v1/stream", headers=h)          # the same proof again
            assert r.status == 401 and "replayed" in (await r.json())["error"]
            r = await client.get("/api/v1/status", headers=_headers(keys[1], spub, "status"))
            st = {n["name"]: n for n in (await r.json())["nodes"]}
            assert st["n0"]["online"] and not st["n1"]["online"] and st["n1"]["self"]   # asked for, not pushed
            # a third node joins: n0's stream hears of it
            r = await client.post("/api/v1/join", json={"token": tok, "name": "n2", "listen_port": 51820,
                                                        "public_key": crypto.encode_key(crypto.public_from_private(keys[2]))})
            assert r.status == 200
            msg = await ws.receive_json(timeout=5)
            assert msg["type"] == "upsert" and msg["peer"]["name"] == "n2" and msg["version"] == view["version"] + 1
            # n2 leaves: n0 hears of it
            r = await client.post("/api/v1/leave", headers=_headers(keys[2], spub, "leave"), json={})
            assert r.status == 200
            msg = await ws.receive_json(timeout=5)
            while msg["type"] == "upsert":                              # (n2's online state may come first)
                msg = await ws.receive_json(timeout=5)
            assert msg["type"] == "remove" and msg["version"] > view["version"]
            text = await (await client.get("/metrics")).text()
            from prometheus_client.parser import text_string_to_metric_families
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            assert fams["wgpy_mesh_nodes"].samples[0].value == 2
            assert fams["wgpy_mesh_nodes_online"].samples[0].value == 1
            assert fams["wgpy_mesh_joins"].samples[0].value == 3
            assert fams["wgpy_mesh_view_update_latency_seconds"].samples[0].value >= 1
            assert "n0" not in text and crypto.encode_key(crypto.public_from_private(keys[0])) not in text
            await ws.close()
        finally:
            await client.close()
    run(go())
