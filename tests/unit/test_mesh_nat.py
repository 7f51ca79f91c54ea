"""The pure parts of the mesh's NAT traversal (issue 18): the server's check of reported candidates, its STUN
responder's answers and per-source limit, the store's candidates (a change of the views only when they
change), and the agent's choice of endpoint (same LAN > STUN mapping > what the server saw) with the punch that
goes with a new one. The whole in namespaces behind nftables NATs: tests/integration/test_nat.py."""

from __future__ import annotations

import ipaddress
import json
import os
import time

from wgpy import crypto
from wgpy.mesh.agent import Candidates, choose_endpoint, peer_lines
from wgpy.mesh.server import ControlPlane, StunResponder, parse_candidates
from wgpy.mesh.store import Store, hash_password
from wgpy.protocol import stun


def _msg(c) -> str:
    return json.dumps({"type": "candidates", "candidates": c})


def test_parse_candidates_normalises_and_refuses():
    assert parse_candidates(_msg(["srflx 203.0.113.7:40001", "host [fd00::0001]:51820"])) == [
        "srflx 203.0.113.7:40001", "host [fd00::1]:51820"]
    assert len(parse_candidates(_msg([f"host 10.0.0.{i}:1" for i in range(50)]))) == 8          # bounded
    for bad in (["relay 1.2.3.4:5"], ["host 1.2.3.4:0"], ["host 1.2.3.4:70000"], ["host example.org:1"],
                ["host 0.0.0.0:1"], ["host 224.0.0.1:1"], ["host  1.2.3.4:1"], [7]):
        assert parse_candidates(_msg(bad)) is None, bad
    assert parse_candidates("not json") is None
    assert parse_candidates(json.dumps({"type": "view"})) is None


class _Transport:
    def __init__(self) -> None:
        self.sent: list = []

    def sendto(self, data, addr) -> None:
        self.sent.append((data, addr))


def test_stun_responder_answers_requests_only_and_limits_each_source(tmp_path):
    cp = ControlPlane.__new__(ControlPlane)
    cp.stats = {"stun_answered": 0, "stun_refused": 0}
    r = StunResponder(cp)
    r.connection_made(_Transport())
    req = stun.binding_request(os.urandom(12))
    r.datagram_received(req, ("198.51.100.9", 40000))
    [(reply, addr)] = r.transport.sent
    assert stun.parse_response(reply)[1] == ("198.51.100.9", 40000) and addr == ("198.51.100.9", 40000)
    r.datagram_received(b"\x01\x00\x00\x00" + bytes(144), ("198.51.100.9", 40000))    # a WireGuard initiation
    r.datagram_received(stun.binding_response(req, ("1.2.3.4", 5)), ("198.51.100.9", 1))  # a response
    assert len(r.transport.sent) == 1 and cp.stats["stun_refused"] == 2
    for _ in range(50):                                   # a flood from one (spoofed) source: BURST answers
        r.datagram_received(req, ("192.0.2.66", 1))
    flood = [a for _, a in r.transport.sent if a[0] == "192.0.2.66"]
    assert len(flood) <= StunResponder.BURST + 1
    r.datagram_received(req, ("198.51.100.10", 1))        # another source is answered
    assert r.transport.sent[-1][1] == ("198.51.100.10", 1)


def test_store_candidates_change_the_views_only_when_they_change(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    s = Store(f"sqlite:///{tmp_path}/server.db")
    s.create(X25519PrivateKey.generate().private_bytes_raw(), hash_password("correct horse"), ["100.80.0.0/16"])
    tok = s.create_token([], 3600, True)
    node = s.join(tok, "a", crypto.encode_key(crypto.public_from_private(crypto.clamp(os.urandom(32)))), 51820,
                  None, time.time())
    before = s.last_change()
    assert s.set_candidates(node.id, ["srflx 203.0.113.7:40001"], time.time())
    assert s.last_change() == before + 1
    assert not s.set_candidates(node.id, ["srflx 203.0.113.7:40001"], time.time())      # the same again
    assert s.last_change() == before + 1
    assert s.node(node.id).candidates == ("srflx 203.0.113.7:40001",)
    s.upgrade()                                           # idempotent on a database that has the column
    from sqlalchemy import text                           # a database made before the column: added, kept
    with s.engine.begin() as c:
        c.execute(text("ALTER TABLE nodes DROP COLUMN candidates"))
    s.upgrade()
    assert s.node(node.id).candidates == () and s.set_candidates(node.id, ["host 10.0.0.1:1"], time.time())


def _peer(cands, endpoint="198.51.100.1:51820") -> dict:
    return {"name": "p", "public_key": crypto.encode_key(b"\x01" * 32), "allowed_ips": ["100.80.0.2/32"],
            "endpoint": endpoint, "candidates": cands}


def test_endpoint_choice_lan_then_stun_then_server():
    lan = Candidates("203.0.113.1:51820", ["192.168.1.11:51820"], [ipaddress.ip_network("192.168.1.0/24")])
    p = _peer(["srflx 203.0.113.1:40002", "host 192.168.1.12:51820", "host 10.9.9.9:51820"])
    assert choose_endpoint(p, lan) == ("192.168.1.12:51820", "lan")
    elsewhere = Candidates("203.0.113.2:51820", ["192.168.2.11:51820"], [ipaddress.ip_network("192.168.2.0/24")])
    assert choose_endpoint(p, elsewhere) == ("203.0.113.1:40002", "stun")
    assert choose_endpoint(_peer([]), elsewhere) == ("198.51.100.1:51820", "server")
    assert choose_endpoint(p, None) == ("203.0.113.1:40002", "stun")      # own candidates not known yet


def test_a_new_endpoint_is_punched_at_once_and_an_unchanged_one_is_left():
    mine = Candidates("203.0.113.2:51820", [], [])
    p = _peer(["srflx 203.0.113.1:40002"])
    lines = peer_lines(p, None, mine)
    i = lines.index("endpoint=203.0.113.1:40002")
    assert lines[i + 1:i + 3] == ["persistent_keepalive_interval=25", "wgpy_punch=true"]
    assert not any(ln.startswith(("endpoint=", "persistent")) for ln in peer_lines(p, p, mine, mine))
    moved = _peer(["srflx 203.0.113.1:40999"])
    assert "endpoint=203.0.113.1:40999" in peer_lines(moved, p, mine, mine)          # the NAT rebooted


def test_relay_forwards_only_to_allowed_peers_and_counts_the_rest(tmp_path):
    """The relay over aiohttp's test server: a message reaches the peer it names, with the sender's key in
    front; one for a peer the policy denies, for an unknown key, a short or a text message is dropped and
    counted; a sender over its rate is cut to its burst; /metrics has the counters."""
    import asyncio
    import base64
    from aiohttp.test_utils import TestClient, TestServer
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from wgpy.mesh import server as srv
    from wgpy.mesh.auth import proof
    from wgpy.mesh.model import Policy

    def headers(priv, spub, purpose):
        when, nonce = int(time.time()), os.urandom(16)
        return {"X-Wgpy-Key": crypto.encode_key(crypto.public_from_private(priv)), "X-Wgpy-Time": str(when),
                "X-Wgpy-Nonce": nonce.hex(), "X-Wgpy-Proof": proof(priv, base64.b64decode(spub), purpose, when,
                                                                   nonce)}

    async def go():
        store = Store(f"sqlite:///{tmp_path}/server.db")
        store.create(X25519PrivateKey.generate().private_bytes_raw(), hash_password("correct horse"),
                     ["100.80.0.0/16"])
        store.set_policy(Policy.parse('{"rules": [{"from": ["a"], "to": ["a"]}]}'))
        client = TestClient(TestServer(srv.make_app(store)))
        await client.start_server()
        try:
            keys, spub = [], None
            for name, tag in (("n0", "a"), ("n1", "a"), ("n2", "b")):
                tok = store.create_token([tag], 3600, False)
                k = crypto.clamp(os.urandom(32))
                r = await client.post("/api/v1/join", json={"token": tok, "name": name, "listen_port": 51820,
                                                            "public_key": crypto.encode_key(crypto.public_from_private(k))})
                spub = (await r.json())["server_public_key"]
                keys.append(k)
            pubs = [crypto.public_from_private(k) for k in keys]
            r = await client.get("/api/v1/relay")
            assert r.status == 401                                    # no credentials
            ws0 = await client.ws_connect("/api/v1/relay", headers=headers(keys[0], spub, "relay"))
            ws1 = await client.ws_connect("/api/v1/relay", headers=headers(keys[1], spub, "relay"))
            ws2 = await client.ws_connect("/api/v1/relay", headers=headers(keys[2], spub, "relay"))
            await asyncio.sleep(0.1)
            msg = b"\x04\x00\x00\x00" + os.urandom(60)                # (the relay never looks inside)
            await ws0.send_bytes(pubs[1] + msg)
            got = await ws1.receive_bytes(timeout=5)
            assert got == pubs[0] + msg
            await ws0.send_bytes(pubs[2] + msg)                       # denied by the policy
            await ws0.send_bytes(os.urandom(32) + msg)                # no such node
            await ws0.send_bytes(b"short")
            await ws0.send_str("text")
            await asyncio.sleep(0.2)
            cp = client.server.app[srv.CP_KEY]
            assert cp.stats["relay_not_allowed"] == 2 and cp.stats["relay_malformed"] == 2
            try:                                                      # n2 got nothing
                await ws2.receive_bytes(timeout=0.3)
                raise AssertionError("a denied message was relayed")
            except asyncio.TimeoutError:
                pass
            big = pubs[1] + bytes(60000)
            for _ in range(40):                                       # 2.4 MB at once: over the 1 MiB burst
                await ws0.send_bytes(big)
            await asyncio.sleep(0.5)
            assert cp.stats["relay_over_rate"] >= 20
            text = await (await client.get("/metrics")).text()
            assert 'wgpy_mesh_relay_dropped_total{reason="not_allowed"} 2.0' in text
            assert "wgpy_mesh_relay_connections 3.0" in text
            for w in (ws0, ws1, ws2):
                await w.close()
        finally:
            await client.close()
    asyncio.run(go())
