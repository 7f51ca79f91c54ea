"""The web admin that `wgpy server run` serves under /admin/: server-rendered pages, no build step.

Pages: nodes (online state, last seen, remove), join tokens (create: shown once; revoke), devices (add: the
wg-quick config and its QR code, shown once, the private key stored nowhere; remove), policy (the JSON, checked
before it is stored). Templates are Jinja2 with autoescaping on: every name, tag and error a node or an admin
typed is escaped in the page, without a hand-written escape at each place.

Sign-in: the password set at `wgpy server init` (its scrypt hash in the database, store.check_password); a
session is a random cookie (HttpOnly, Secure, SameSite=Strict, Path=/admin/) whose SHA-256 the database keeps
with the session's CSRF token, so a sign-in and a sign-out hold at every instance. Every form that changes
something carries that CSRF token and is refused without it (403); an Origin header other than the server's own
is refused too. The sign-in form is guarded by a token of its own (a cookie and a field that must match). Failed
sign-ins from one address are limited (LOGIN_FAILURES in LOGIN_WINDOW seconds, then 429 until the window
passes): a guesser is slowed, a user at another address is not locked out. At most two password checks run at
once (scrypt takes 32 MiB and tens of milliseconds each).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections import deque
from pathlib import Path

import jinja2
from aiohttp import web

from .model import Policy, PolicyError, valid_tag
from .store import JoinError, StoreError, check_password

__all__ = ["add_routes", "LoginThrottle", "SESSION_COOKIE"]

SESSION_COOKIE = "wgpy_session"
LOGIN_COOKIE = "wgpy_login"
SESSION_LIFETIME = 12 * 3600.0
LOGIN_FAILURES = 5
LOGIN_WINDOW = 300.0
MAX_FORM = 16 * 1024            # the largest form (a policy); the API's bodies are as large

_TEMPLATES = Path(__file__).with_name("templates")
_CSS = (_TEMPLATES / "admin.css").read_text()
_HEADERS = {
    "Cache-Control": "no-store",              # pages hold tokens and device keys: never cached
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",         # (no-referrer would make the browser send "Origin: null")
    "X-Frame-Options": "DENY",
}


class LoginThrottle:
    """Failed sign-ins per client address: at most `limit` in `window` seconds, then refused until the oldest
    leaves the window. A success clears the address. Bounded: at most `max_addresses` remembered."""

    def __init__(self, limit: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW, max_addresses: int = 10000):
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self.failures: dict[str, deque] = {}

    def wait(self, addr: str, now: float) -> float:
        """Seconds until `addr` may try again (0: now)."""
        q = self.failures.get(addr)
        if not q:
            return 0.0
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self.failures[addr]
            return 0.0
        return q[0] + self.window - now if len(q) >= self.limit else 0.0

    def failed(self, addr: str, now: float) -> None:
        if addr not in self.failures and len(self.failures) >= self.max_addresses:
            oldest = min(self.failures, key=lambda a: self.failures[a][-1])
            del self.failures[oldest]
        self.failures.setdefault(addr, deque()).append(now)

    def succeeded(self, addr: str) -> None:
        self.failures.pop(addr, None)


def _ago(when: float | None, now: float) -> str:
    if not when:
        return "never"
    d = max(0, int(now - when))
    if d < 60:
        return f"{d} s ago"
    if d < 3600:
        return f"{d // 60} min ago"
    if d < 86400:
        return f"{d // 3600} h ago"
    return time.strftime("%Y-%m-%d", time.localtime(when))


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def add_routes(app: web.Application, cp) -> None:
    """The admin pages on `app`, working on the ControlPlane `cp` (its store, views and presence)."""
    store = cp.store
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["ago"] = lambda t: _ago(t, time.time())
    env.filters["when"] = _when
    throttle = LoginThrottle()
    checks = asyncio.Semaphore(2)

    def page(name: str, status: int = 200, **ctx) -> web.Response:
        text = env.get_template(name).render(**ctx)
        return web.Response(text=text, status=status, content_type="text/html", headers=_HEADERS)

    def client(request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return peer[0] if peer else "?"

    async def session(request: web.Request) -> str | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or len(cookie) > 128:
            return None
        try:
            return await cp.db(store.session, cookie, time.time())
        except StoreError:
            raise web.HTTPServiceUnavailable(text="the server's database is unreachable; try again") from None

    def same_origin(request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is None or origin == f"{request.scheme}://{request.host}"

    async def form(request: web.Request) -> dict:
        if request.content_length is not None and request.content_length > MAX_FORM:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=request.content_length)
        if not same_origin(request):
            raise web.HTTPForbidden(text="cross-origin form refused")
        return dict(await request.post())

    def signed_in(handler):
        """A page for a signed-in admin; a POST also needs the session's CSRF token."""
        async def wrapper(request: web.Request) -> web.StreamResponse:
            csrf = await session(request)
            if csrf is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther("/admin/login")
                raise web.HTTPForbidden(text="not signed in (sign in again at /admin/login)")
            data = None
            if request.method == "POST":
                data = await form(request)
                if not hmac.compare_digest(str(data.get("csrf", "")), csrf):
                    raise web.HTTPForbidden(text="missing or wrong CSRF token (reload the page and try again)")
            return await handler(request, csrf, data)
        return wrapper

    # ---- sign-in --------------------------------------------------------------------------------------------

    def login_page(error: str = "", status: int = 200) -> web.Response:
        token = secrets.token_urlsafe(24)
        resp = page("login.html", status=status, login=token, error=error)
        resp.set_cookie(LOGIN_COOKIE, token, path="/admin/", secure=True, httponly=True, samesite="Strict",
                        max_age=3600)
        return resp

    async def login_get(request: web.Request) -> web.Response:
        if await session(request) is not None:
            raise web.HTTPSeeOther("/admin/nodes")
        return login_page()

    async def login_post(request: web.Request) -> web.Response:
        data = await form(request)
        given, want = str(data.get("login", "")), request.cookies.get(LOGIN_COOKIE, "")
        if not want or not hmac.compare_digest(given, want):
            return login_page("The sign-in form expired; try again.", 403)
        addr, now = client(request), time.time()
        wait = throttle.wait(addr, now)
        if wait > 0:
            return login_page(f"Too many failed sign-ins from this address; try again in {int(wait) + 1} s.",
                              429)
        password = str(data.get("password", ""))[:1024]
        try:
            stored = await cp.db(store.admin_hash)
        except StoreError:
            return login_page("The server's database is unreachable; try again.", 503)
        async with checks:
            ok = await asyncio.to_thread(check_password, password, stored)
        if not ok:
            throttle.failed(addr, now)
            return login_page("Wrong password.", 401)
        throttle.succeeded(addr)
        cookie, _ = await cp.db(store.create_session, SESSION_LIFETIME, now)
        resp = web.HTTPSeeOther("/admin/nodes")
        resp.set_cookie(SESSION_COOKIE, cookie, path="/admin/", secure=True, httponly=True, samesite="Strict",
                        max_age=int(SESSION_LIFETIME))
        resp.del_cookie(LOGIN_COOKIE, path="/admin/")
        raise resp

    @signed_in
    async def logout(request: web.Request, csrf: str, data: dict) -> web.Response:
        await cp.db(store.end_session, request.cookies[SESSION_COOKIE])
        resp = web.HTTPSeeOther("/admin/login")
        resp.del_cookie(SESSION_COOKIE, path="/admin/")
        raise resp

    # ---- nodes ----------------------------------------------------------------------------------------------

    async def rows(devices: bool) -> list[dict]:
        pres = await cp.db(store.presence)
        now = time.time()
        nodes = await cp.db(store.all_nodes)
        names = {n.id: n.name for n in nodes}
        out = []
        for n in sorted(nodes, key=lambda n: n.name):
            if (n.gateway is not None) != devices:
                continue
            seen = pres.get(n.id, (False, 0.0))[1]
            out.append({"id": n.id, "name": n.name, "addresses": n.addresses, "tags": sorted(n.tags),
                        "endpoint": n.endpoint, "online": cp.online(n.id, pres, now),
                        "last_seen": seen or n.last_seen or None,
                        "gateway": names.get(n.gateway, "?") if n.gateway is not None else None})
        return out

    @signed_in
    async def nodes_page(request: web.Request, csrf: str, data) -> web.Response:
        return page("nodes.html", csrf=csrf, active="nodes", nodes=await rows(False),
                    message=request.query.get("m", ""))

    async def row_id(request: web.Request) -> int:
        try:
            return int(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound() from None

    @signed_in
    async def node_remove(request: web.Request, csrf: str, data: dict) -> web.Response:
        nid = await row_id(request)
        node = await cp.db(store.node, nid)
        if node is None:
            raise web.HTTPSeeOther("/admin/nodes")
        await cp.db(store.remove_node, nid)
        cp.kick()
        where = "devices" if node.gateway is not None else "nodes"
        raise web.HTTPSeeOther(f"/admin/{where}?m=removed+{node.name}")

    @signed_in
    async def node_tags(request: web.Request, csrf: str, data: dict) -> web.Response:
        nid = await row_id(request)
        tags = str(data.get("tags", "")).replace(",", " ").split()
        bad = [t for t in tags if not valid_tag(t) or t == "*"]
        node = await cp.db(store.node, nid)
        if node is None:
            raise web.HTTPSeeOther("/admin/nodes")
        if bad:
            return page("nodes.html", status=400, csrf=csrf, active="nodes", nodes=await rows(False),
                        message="", error=f"Invalid tag {bad[0]!r}: letters, digits, - and _.")
        await cp.db(store.set_tags, nid, tags)
        cp.kick()
        raise web.HTTPSeeOther(f"/admin/nodes?m=tags+of+{node.name}+set")

    # ---- tokens ---------------------------------------------------------------------------------------------

    async def token_rows() -> list[dict]:
        now = time.time()
        out = []
        for t in reversed(await cp.db(store.tokens)):
            out.append({"id": t.id, "state": t.state(now), "reusable": t.reusable, "uses": t.uses, "tags": t.tags,
                        "expires": t.expires})
        return out

    @signed_in
    async def tokens_page(request: web.Request, csrf: str, data) -> web.Response:
        return page("tokens.html", csrf=csrf, active="tokens", tokens=await token_rows(), new=None, error="",
                    servers=await cp.db(store.urls) or [f"{request.scheme}://{request.host}"])

    @signed_in
    async def token_create(request: web.Request, csrf: str, data: dict) -> web.Response:
        from .cli import duration
        tags = str(data.get("tags", "")).replace(",", " ").split()
        error = ""
        bad = [t for t in tags if not valid_tag(t) or t == "*"]
        if bad:
            error = f"Invalid tag {bad[0]!r}: letters, digits, - and _."
        try:
            lifetime = duration(str(data.get("expires", "1h")))
        except Exception:
            error = error or "Invalid lifetime: a number and s, m, h or d (e.g. 30m, 1h, 7d)."
        if error:
            return page("tokens.html", status=400, csrf=csrf, active="tokens", tokens=await token_rows(),
                        new=None, error=error, servers=await cp.db(store.urls) or [f"{request.scheme}://{request.host}"])
        token = await cp.db(store.create_token, tags, lifetime, data.get("reusable") == "on")
        return page("tokens.html", csrf=csrf, active="tokens", tokens=await token_rows(), new=token, error="",
                    servers=await cp.db(store.urls) or [f"{request.scheme}://{request.host}"])

    @signed_in
    async def token_revoke(request: web.Request, csrf: str, data: dict) -> web.Response:
        await cp.db(store.revoke_token, await row_id(request))
        raise web.HTTPSeeOther("/admin/tokens")

    # ---- devices --------------------------------------------------------------------------------------------

    async def devices_ctx(csrf: str) -> dict:
        return {"csrf": csrf, "active": "devices", "devices": await rows(True),
                "gateways": [n["name"] for n in await rows(False)]}

    @signed_in
    async def devices_page(request: web.Request, csrf: str, data) -> web.Response:
        return page("devices.html", **await devices_ctx(csrf), new=None, error="",
                    message=request.query.get("m", ""))

    @signed_in
    async def device_add(request: web.Request, csrf: str, data: dict) -> web.Response:
        from ..ops import qr
        name, gateway = str(data.get("name", "")).strip(), str(data.get("gateway", ""))
        tags = str(data.get("tags", "")).replace(",", " ").split()
        bad = [t for t in tags if not valid_tag(t) or t == "*"]
        try:
            if bad:
                raise JoinError(f"invalid tag {bad[0]!r}: letters, digits, - and _")
            dev, text = await cp.db(store.new_device, name, gateway, tags, time.time())
        except JoinError as e:
            return page("devices.html", status=400, **await devices_ctx(csrf), new=None, error=str(e),
                        message="")
        cp.kick()
        svg = qr.make(text).svg_inline(scale=5, border=4, dark="#000", light="#fff")
        new = {"name": dev.name, "config": text, "svg": svg, "gateway": gateway,
               "no_endpoint": "Endpoint =" not in text}
        return page("devices.html", **await devices_ctx(csrf), new=new, error="", message="")

    # ---- policy ---------------------------------------------------------------------------------------------

    @signed_in
    async def policy_page(request: web.Request, csrf: str, data) -> web.Response:
        text = json.dumps(json.loads((await cp.db(store.policy)).to_json()), indent=2)
        return page("policy.html", csrf=csrf, active="policy", text=text, error="",
                    message=request.query.get("m", ""))

    @signed_in
    async def policy_set(request: web.Request, csrf: str, data: dict) -> web.Response:
        text = str(data.get("policy", ""))
        try:
            policy = Policy.parse(text)
        except PolicyError as e:
            return page("policy.html", status=400, csrf=csrf, active="policy", text=text,
                        error=f"{e}; the policy is unchanged.", message="")
        await cp.db(store.set_policy, policy)
        cp.kick()
        raise web.HTTPSeeOther(f"/admin/policy?m=policy+set+({len(policy.rules)}+rules)")

    async def css(request: web.Request) -> web.Response:
        return web.Response(text=_CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600",
                                                                          "X-Content-Type-Options": "nosniff"})

    async def to_admin(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/admin/nodes")

    r = app.router
    r.add_get("/", to_admin)
    r.add_get("/admin", to_admin)
    r.add_get("/admin/", to_admin)
    r.add_get("/admin/admin.css", css)
    r.add_get("/admin/login", login_get)
    r.add_post("/admin/login", login_post)
    r.add_post("/admin/logout", logout)
    r.add_get("/admin/nodes", nodes_page)
    r.add_post("/admin/nodes/{id}/remove", node_remove)
    r.add_post("/admin/nodes/{id}/tags", node_tags)
    r.add_get("/admin/tokens", tokens_page)
    r.add_post("/admin/tokens", token_create)
    r.add_post("/admin/tokens/{id}/revoke", token_revoke)
    r.add_get("/admin/devices", devices_page)
    r.add_post("/admin/devices", device_add)
    r.add_get("/admin/policy", policy_page)
    r.add_post("/admin/policy", policy_set)
