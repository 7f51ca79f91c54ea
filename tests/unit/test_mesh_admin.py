"""mesh/admin.py, the web admin, over aiohttp's test server with a real SQLite database (the pages in a real
browser: tests/integration/test_mesh_web.py). Sign-in with the password set at init; the session cookie's flags;
every state-changing form refused without its CSRF token or from another origin; tokens shown once; a device's
config with its QR code and no private key stored; a malformed policy refused with the reason and nothing
changed; what users typed comes back escaped; failed sign-ins limited per address."""

from __future__ import annotations

import asyncio
import os
import re
import time
from http.cookies import SimpleCookie

from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer

from wgpy import crypto
from wgpy.mesh.admin import LOGIN_FAILURES, LoginThrottle
from wgpy.mesh.server import make_app
from wgpy.mesh.store import Store, hash_password

PASSWORD = "correct horse battery"


def _store(tmp_path) -> Store:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    s = Store(f"sqlite:///{tmp_path}/server.db")
    s.create(X25519PrivateKey.generate().private_bytes_raw(), hash_password(PASSWORD),
             ["100.80.0.0/16", "fd7a:6770::/48"])
    return s


class Browser:
    """A client keeping cookies by hand: the session cookie is Secure, which aiohttp's jar would not send over
    the test server's plain HTTP."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}
        self.set_cookies: dict[str, str] = {}      # name -> the whole Set-Cookie header last seen

    def _keep(self, r) -> None:
        for header in r.headers.getall("Set-Cookie", []):
            c = SimpleCookie()
            c.load(header)
            for name, morsel in c.items():
                self.set_cookies[name] = header
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _headers(self, extra=None) -> dict:
        h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        return {**h, **(extra or {})}

    async def get(self, path: str):
        r = await self.client.get(path, headers=self._headers(), allow_redirects=False)
        self._keep(r)
        return r, await r.text()

    async def post(self, path: str, data: dict, headers=None):
        r = await self.client.post(path, data=data, headers=self._headers(headers), allow_redirects=False)
        self._keep(r)
        return r, await r.text()

    async def sign_in(self, password: str = PASSWORD):
        _, text = await self.get("/admin/login")
        login = re.search(r'name="login" value="([^"]+)"', text).group(1)
        return await self.post("/admin/login", {"login": login, "password": password})

    async def csrf(self, path: str = "/admin/nodes") -> str:
        r, text = await self.get(path)
        assert r.status == 200, (r.status, text)
        return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


def run(coro):
    return asyncio.run(coro)


async def _browser(tmp_path):
    store = _store(tmp_path)
    client = TestClient(TestServer(make_app(store)), cookie_jar=DummyCookieJar())
    await client.start_server()
    return Browser(client), store


def test_sign_in_session_cookie_and_sign_out(tmp_path):
    async def go():
        b, store = await _browser(tmp_path)
        try:
            r, _ = await b.get("/admin/nodes")
            assert r.status == 303 and r.headers["Location"] == "/admin/login"
            r, _ = await b.get("/")
            assert r.status == 303 and r.headers["Location"] == "/admin/nodes"
            r, text = await b.sign_in("wrong password")
            assert r.status == 401 and "Wrong password" in text and "wgpy_session" not in b.cookies
            r, text = await b.post("/admin/login", {"password": PASSWORD})      # no sign-in form token
            assert r.status == 403 and "wgpy_session" not in b.cookies
            r, _ = await b.sign_in()
            assert r.status == 303 and r.headers["Location"] == "/admin/nodes"
            flags = b.set_cookies["wgpy_session"].lower()
            for flag in ("httponly", "secure", "samesite=strict", "path=/admin/"):
                assert flag in flags, flags
            r, text = await b.get("/admin/nodes")
            assert r.status == 200 and "No node has joined yet" in text
            assert r.headers["Cache-Control"] == "no-store"
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
            cookie = b.cookies["wgpy_session"]
            # the database keeps the cookie's hash, never the cookie
            import sqlite3
            dump = "\n".join(sqlite3.connect(f"{tmp_path}/server.db").iterdump())
            assert cookie not in dump
            r, _ = await b.post("/admin/logout", {})                            # without the CSRF token
            assert r.status == 403
            r, _ = await b.post("/admin/logout", {"csrf": await b.csrf()})
            assert r.status == 303 and "wgpy_session" not in b.cookies
            b.cookies["wgpy_session"] = cookie                                  # the old cookie is dead
            r, _ = await b.get("/admin/nodes")
            assert r.status == 303 and r.headers["Location"] == "/admin/login"
        finally:
            await b.client.close()
    run(go())


def test_forms_need_csrf_and_same_origin_tokens_shown_once(tmp_path):
    async def go():
        b, store = await _browser(tmp_path)
        try:
            await b.sign_in()
            csrf = await b.csrf("/admin/tokens")
            r, text = await b.post("/admin/tokens", {"tags": "laptops", "expires": "1h"})
            assert r.status == 403 and "CSRF" in text and store.tokens() == []
            r, text = await b.post("/admin/tokens", {"csrf": "x" * 43, "tags": "laptops", "expires": "1h"})
            assert r.status == 403 and store.tokens() == []
            r, text = await b.post("/admin/tokens", {"csrf": csrf, "tags": "laptops", "expires": "1h"},
                                   headers={"Origin": "https://evil.example"})
            assert r.status == 403 and store.tokens() == []
            r, text = await b.post("/admin/tokens", {"csrf": csrf, "tags": "laptops", "expires": "2h",
                                                     "reusable": "on"})
            assert r.status == 200
            token = re.search(r'<pre id="new-token">([^<]+)</pre>', text).group(1)
            [info] = store.tokens()
            assert info.tags == ("laptops",) and info.reusable and abs(info.expires - time.time() - 7200) < 60
            r, text = await b.get("/admin/tokens")
            assert token not in text and 'data-token="1"' in text                   # shown once, listed
            node = store.join(token, "alice", crypto.encode_key(crypto.public_from_private(
                crypto.clamp(os.urandom(32)))), 51820, None, time.time())          # a real join token
            assert node.tags == frozenset({"laptops"})
            r, text = await b.post("/admin/tokens", {"csrf": csrf, "tags": "<b>bad", "expires": "1h"})
            assert r.status == 400 and "&lt;b&gt;bad" in text and "<b>bad" not in text
            r, text = await b.post("/admin/tokens", {"csrf": csrf, "tags": "", "expires": "forever"})
            assert r.status == 400 and "Invalid lifetime" in text and len(store.tokens()) == 1
            r, _ = await b.post(f"/admin/tokens/{info.id}/revoke", {"csrf": csrf})
            assert r.status == 303 and store.tokens()[0].revoked
        finally:
            await b.client.close()
    run(go())


def test_nodes_devices_and_policy(tmp_path):
    async def go():
        b, store = await _browser(tmp_path)
        try:
            tok = store.create_token(["servers"], 3600, True)
            gw_priv = crypto.clamp(os.urandom(32))
            gw = store.join(tok, "gw", crypto.encode_key(crypto.public_from_private(gw_priv)), 51820,
                            "10.0.0.1:51820", time.time())
            store.join(tok, "db", crypto.encode_key(crypto.public_from_private(crypto.clamp(os.urandom(32)))),
                       51820, None, time.time())
            await b.sign_in()
            r, text = await b.get("/admin/nodes")
            assert 'data-node="gw"' in text and 'data-node="db"' in text and "offline" in text
            csrf = await b.csrf()
            # a device: its config and QR code once; its private key stored nowhere
            r, text = await b.post("/admin/devices", {"csrf": csrf, "name": "phone", "gateway": "gw",
                                                      "tags": "phones"})
            assert r.status == 200, text
            config = re.search(r'<pre id="device-config">([^<]+)</pre>', text, re.S).group(1)
            assert '<div class="qr" id="qr"><svg' in text
            priv = re.search(r"PrivateKey = (\S+)", config).group(1)
            dev = store.node_by_name("phone")
            assert dev.gateway == gw.id and dev.tags == frozenset({"phones"})
            assert crypto.encode_key(crypto.public_from_private(crypto.decode_key(priv))) == dev.public_key
            assert f"PublicKey = {gw.public_key}" in config and "Endpoint = 10.0.0.1:51820" in config
            import sqlite3
            dump = "\n".join(sqlite3.connect(f"{tmp_path}/server.db").iterdump())
            assert priv not in dump and crypto.decode_key(priv).hex() not in dump
            r, text = await b.get("/admin/devices")
            assert 'data-device="phone"' in text and priv not in text
            r, text = await b.post("/admin/devices", {"csrf": csrf, "name": "phone", "gateway": "gw"})
            assert r.status == 400 and "taken" in text
            r, text = await b.post("/admin/devices", {"csrf": csrf, "name": "tab", "gateway": "nosuch"})
            assert r.status == 400 and "gateway" in text and store.node_by_name("tab") is None
            # tags, then removal
            r, _ = await b.post(f"/admin/nodes/{gw.id}/tags", {"csrf": csrf, "tags": "servers gateways"})
            assert r.status == 303 and store.node(gw.id).tags == frozenset({"servers", "gateways"})
            db = store.node_by_name("db")
            r, _ = await b.post(f"/admin/nodes/{db.id}/remove", {"csrf": csrf})
            assert r.status == 303 and store.node_by_name("db") is None
            r, text = await b.get(r.headers["Location"])
            assert "removed db" in text and 'data-node="db"' not in text
            # policy: malformed refused with the reason, nothing changed; the echo escaped
            before = store.policy().to_json()
            bad = '{"rules": [{"from": ["laptops"]}]} </textarea><script>alert(1)</script>'
            r, text = await b.post("/admin/policy", {"csrf": csrf, "policy": bad})
            assert r.status == 400 and "the policy is unchanged" in text
            assert "<script>" not in text and "&lt;/textarea&gt;&lt;script&gt;" in text
            assert store.policy().to_json() == before
            good = '{"rules": [{"from": ["laptops"], "to": ["servers"]}]}'
            r, _ = await b.post("/admin/policy", {"csrf": csrf, "policy": good})
            assert r.status == 303
            assert [(sorted(s), sorted(d)) for s, d in store.policy().rules] == [(["laptops"], ["servers"])]
            r, text = await b.get(r.headers["Location"])
            assert "laptops" in text and "policy set (1 rules)" in text
        finally:
            await b.client.close()
    run(go())


def test_failed_sign_ins_limited_per_address(tmp_path):
    t = LoginThrottle(limit=3, window=60)
    for i in range(3):
        assert t.wait("a", 100.0 + i) == 0
        t.failed("a", 100.0 + i)
    assert 56 < t.wait("a", 103.0) <= 60 and t.wait("b", 103.0) == 0    # another address is not locked out
    assert t.wait("a", 160.5) == 0                                        # the oldest left the window
    t.failed("a", 161.0)
    t.succeeded("a")
    assert t.wait("a", 161.0) == 0 and "a" not in t.failures
    small = LoginThrottle(limit=1, window=60, max_addresses=2)
    for i, addr in enumerate("xyz"):
        small.failed(addr, float(i))
    assert len(small.failures) == 2 and "x" not in small.failures          # bounded memory

    async def go():
        b, _ = await _browser(tmp_path)
        try:
            for _ in range(LOGIN_FAILURES):
                r, _ = await b.sign_in("nope nope")
                assert r.status == 401
            r, text = await b.sign_in()                                      # even the right one, for a while
            assert r.status == 429 and "Too many failed sign-ins" in text and "wgpy_session" not in b.cookies
        finally:
            await b.client.close()
    run(go())
