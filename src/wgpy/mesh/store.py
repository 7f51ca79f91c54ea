"""The control plane's database: SQLAlchemy Core over SQLite (default) or PostgreSQL (several server instances).

SQLAlchemy because one set of table definitions and queries then runs on both, with PostgreSQL's and SQLite's
transactions, unique constraints and auto-increment keys; the server calls it from worker threads.

What is stored (nothing that opens a tunnel: public keys, never a node's private key):
    meta      the server's own X25519 key pair (its proof key, mesh/auth.py), the admin password's scrypt hash,
              the policy
    nodes     id, name (unique), public key (unique), tags, one address per network (unique), endpoint port,
              the endpoint last seen, created / last seen; a device (a plain WireGuard app) has its gateway
              node's id and no port; its private key was shown once and is not stored
    tokens    the SHA-256 of each join token (the token itself is shown once), its tags, expiry, single use or
              reusable, uses, revoked
    changes   an append-only log (id, node id, kind): every instance reads it to learn what another instance or
              an admin command changed, and applies it to its in-memory views (mesh/model.py)
    sessions  the web admin's sign-ins: the SHA-256 of each session cookie, its CSRF token and expiry (shared by
              every instance, so a sign-in and a sign-out hold at all of them)
Every join, removal and policy change is one transaction: a failed join leaves no row behind.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import (Boolean, Column, Float, ForeignKey, Integer, MetaData, String, Table, Text, create_engine,
                        delete, event, insert, select, update)
from sqlalchemy.exc import IntegrityError, OperationalError

from .model import Node, Policy, allocate

__all__ = ["Store", "StoreError", "JoinError", "TokenInfo"]

metadata = MetaData()
meta_t = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
nodes_t = Table(
    "nodes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("public_key", String(44), nullable=False, unique=True),
    Column("tags", Text, nullable=False, default=""),
    Column("ipv4", String(15), unique=True),
    Column("ipv6", String(39), unique=True),
    Column("listen_port", Integer, nullable=False),
    Column("endpoint", String(64)),
    Column("created", Float, nullable=False),
    Column("last_seen", Float, nullable=False, default=0.0),
    Column("gateway", Integer),                           # a device (a plain WireGuard client): its gateway node
    Column("connected", Boolean, nullable=False, default=False),   # its stream is held by some instance
    Column("candidates", Text, nullable=False, default=""),         # "kind ip:port" entries, one per line
)
tokens_t = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("tags", Text, nullable=False, default=""),
    Column("expires", Float, nullable=False),
    Column("reusable", Boolean, nullable=False, default=False),
    Column("uses", Integer, nullable=False, default=0),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created", Float, nullable=False),
)
changes_t = Table(
    "changes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", Integer),
    Column("kind", String(16), nullable=False),          # "node" (added or changed), "removed", "policy"
    Column("at", Float, nullable=False),
)
sessions_t = Table(
    "sessions", metadata,
    Column("digest", String(64), primary_key=True),
    Column("csrf", String(64), nullable=False),
    Column("expires", Float, nullable=False),
)
_ = ForeignKey   # (no foreign keys: a change outlives the node it names)

NAME_MAX = 63


class StoreError(Exception):
    """The database cannot be used (unreachable, wrong URL, not initialised); the message says which."""


class JoinError(Exception):
    """A join refused; the message says what to fix. Nothing was created."""


@dataclass(frozen=True)
class TokenInfo:
    id: int
    tags: tuple[str, ...]
    expires: float
    reusable: bool
    uses: int
    revoked: bool

    def state(self, now: float) -> str:
        """revoked, expired, used (single-use, once used) or valid: what the CLI and the web admin show."""
        return ("revoked" if self.revoked else "expired" if self.expires < now else
                "used" if self.uses and not self.reusable else "valid")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def valid_name(name: str) -> bool:
    return (0 < len(name) <= NAME_MAX and name.isascii() and name[0].isalnum()
            and all(c.isalnum() or c in "-_." for c in name))


class Store:
    def __init__(self, url: str) -> None:
        if url.startswith(("postgresql://", "postgres://")):     # the psycopg 3 driver, not SQLAlchemy's default
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        try:
            self.engine = create_engine(url, future=True, pool_pre_ping=True)
        except Exception as e:          # a malformed URL, a missing driver
            raise StoreError(f"cannot use database {redact_url(url)}: {e}") from None
        if self.engine.dialect.name == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _sqlite(conn, _rec):     # several processes (the server, admin commands): wait, do not fail
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=10000")
                cur.close()

    def _begin(self):
        try:
            return self.engine.begin()
        except OperationalError as e:
            raise StoreError(f"database {redact_url(self.url)} unreachable: {e.orig}") from None

    # ---- setup ----------------------------------------------------------------------------------------------

    def create(self, server_private: bytes, admin_hash: str, networks: list[str], urls: list[str] = ()) -> None:
        try:
            metadata.create_all(self.engine)
        except OperationalError as e:
            raise StoreError(f"database {redact_url(self.url)} unreachable: {e.orig}") from None
        with self._begin() as c:
            have = {r.key for r in c.execute(select(meta_t.c.key))}
            rows = {"server_private_key": server_private.hex(), "admin_password": admin_hash,
                    "networks": json.dumps(networks), "policy": Policy().to_json(), "urls": json.dumps(list(urls))}
            for k, v in rows.items():
                if k not in have:
                    c.execute(insert(meta_t).values(key=k, value=v))

    def upgrade(self) -> None:
        """Tables and columns added since the database was made (`wgpy server run` calls it; what exists is
        kept): the web admin's sessions, the nodes' candidates."""
        from sqlalchemy import inspect, text
        try:
            metadata.create_all(self.engine, checkfirst=True)
            if "candidates" not in {c["name"] for c in inspect(self.engine).get_columns("nodes")}:
                with self.engine.begin() as c:
                    c.execute(text("ALTER TABLE nodes ADD COLUMN candidates TEXT NOT NULL DEFAULT ''"))
        except OperationalError as e:
            raise StoreError(f"database {redact_url(self.url)} unreachable: {e.orig}") from None

    def meta(self, key: str) -> str:
        try:
            with self._begin() as c:
                row = c.execute(select(meta_t.c.value).where(meta_t.c.key == key)).first()
        except OperationalError as e:
            raise StoreError(f"database {redact_url(self.url)}: {e.orig} (was `wgpy server init` run?)") from None
        if row is None:
            raise StoreError(f"database {redact_url(self.url)} has no {key} (was `wgpy server init` run?)")
        return row.value

    def server_private(self) -> bytes:
        return bytes.fromhex(self.meta("server_private_key"))

    def networks(self) -> list[str]:
        return json.loads(self.meta("networks"))

    def urls(self) -> list[str]:
        """The public URLs of every server instance (`init --url`), given to the nodes for failover."""
        try:
            return json.loads(self.meta("urls"))
        except StoreError:
            return []

    def policy(self) -> Policy:
        return Policy.parse(self.meta("policy"))

    def set_policy(self, policy: Policy) -> None:
        with self._begin() as c:
            c.execute(update(meta_t).where(meta_t.c.key == "policy").values(value=policy.to_json()))
            c.execute(insert(changes_t).values(node_id=None, kind="policy", at=time.time()))

    def admin_hash(self) -> str:
        return self.meta("admin_password")

    # ---- web admin sessions -----------------------------------------------------------------------------------

    def create_session(self, lifetime: float, now: float) -> tuple[str, str]:
        """A new sign-in: (cookie value, CSRF token). Only the cookie's SHA-256 is stored; expired sessions go."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._begin() as c:
            c.execute(delete(sessions_t).where(sessions_t.c.expires < now))
            c.execute(insert(sessions_t).values(digest=_digest(cookie), csrf=csrf, expires=now + lifetime))
        return cookie, csrf

    def session(self, cookie: str, now: float) -> str | None:
        """The CSRF token of a live session, None when the cookie is unknown, signed out or expired."""
        with self._begin() as c:
            r = c.execute(select(sessions_t).where(sessions_t.c.digest == _digest(cookie))).first()
        return r.csrf if r is not None and r.expires >= now else None

    def end_session(self, cookie: str) -> None:
        with self._begin() as c:
            c.execute(delete(sessions_t).where(sessions_t.c.digest == _digest(cookie)))

    # ---- tokens ---------------------------------------------------------------------------------------------

    def create_token(self, tags: list[str], lifetime: float, reusable: bool) -> str:
        token = "wgpy_" + secrets.token_urlsafe(24)
        now = time.time()
        with self._begin() as c:
            c.execute(insert(tokens_t).values(digest=_digest(token), tags=" ".join(tags), expires=now + lifetime,
                                              reusable=reusable, uses=0, revoked=False, created=now))
        return token

    def tokens(self) -> list[TokenInfo]:
        with self._begin() as c:
            return [TokenInfo(r.id, tuple(r.tags.split()), r.expires, r.reusable, r.uses, r.revoked)
                    for r in c.execute(select(tokens_t).order_by(tokens_t.c.id))]

    def revoke_token(self, token_id: int) -> bool:
        with self._begin() as c:
            return c.execute(update(tokens_t).where(tokens_t.c.id == token_id).values(revoked=True)).rowcount > 0

    # ---- nodes ----------------------------------------------------------------------------------------------

    def join(self, token: str, name: str, public_key: str, listen_port: int, endpoint: str | None,
             now: float) -> Node:
        """Register a node with a join token, in one transaction: the token checked and used, the name and key
        unique, an address from every network. Raises JoinError (nothing created)."""
        if not valid_name(name):
            raise JoinError(f"invalid node name {name!r} (letters, digits, '-', '_', '.'; at most {NAME_MAX})")
        for attempt in range(5):
            try:
                with self._begin() as c:
                    tok = c.execute(select(tokens_t).where(tokens_t.c.digest == _digest(token))).first()
                    if tok is None or tok.revoked:
                        raise JoinError("unknown or revoked join token (create one with `wgpy server token create`)")
                    if tok.expires < now:
                        raise JoinError("the join token has expired (create a new one with "
                                        "`wgpy server token create`)")
                    if tok.uses and not tok.reusable:
                        raise JoinError("the join token was already used (it is single-use unless created with "
                                        "--reusable)")
                    if c.execute(select(nodes_t.c.id).where(nodes_t.c.name == name)).first():
                        raise JoinError(f"the name {name!r} is taken (choose another --name, or remove that node "
                                        "with `wgpy server nodes remove`)")
                    if c.execute(select(nodes_t.c.id).where(nodes_t.c.public_key == public_key)).first():
                        raise JoinError("this key is already registered (the node joined before: `wgpy leave` "
                                        "first)")
                    node = self._insert(c, now, name=name, public_key=public_key, tags=tok.tags,
                                        listen_port=listen_port, endpoint=endpoint)
                    c.execute(update(tokens_t).where(tokens_t.c.id == tok.id).values(uses=tok.uses + 1))
                    return node
            except IntegrityError:         # another instance took the name/key/address at the same moment
                if attempt == 4:
                    raise JoinError("the registration raced with another and failed; try again") from None
                continue
            except OperationalError as e:
                raise StoreError(f"database {redact_url(self.url)} unreachable: {e.orig}") from None
        raise AssertionError("unreachable")

    def add_device(self, name: str, public_key: str, gateway_id: int, tags: list[str], now: float) -> Node:
        """Register a device behind the node `gateway_id`, with an address from every network."""
        if not valid_name(name):
            raise JoinError(f"invalid device name {name!r} (letters, digits, '-', '_', '.'; at most {NAME_MAX})")
        try:
            with self._begin() as c:
                gw = c.execute(select(nodes_t).where(nodes_t.c.id == gateway_id)).first()
                if gw is None or gw.gateway is not None:
                    raise JoinError("the gateway must be a node of the network (not a device)")
                if c.execute(select(nodes_t.c.id).where(nodes_t.c.name == name)).first():
                    raise JoinError(f"the name {name!r} is taken")
                return self._insert(c, now, name=name, public_key=public_key, tags=" ".join(sorted(tags)),
                                    listen_port=0, endpoint=None, gateway=gateway_id)
        except IntegrityError:
            raise JoinError("the registration raced with another and failed; try again") from None

    def new_device(self, name: str, gateway_name: str, tags: list[str], now: float) -> tuple[Node, str]:
        """`devices add` (the CLI and the web admin): a key pair made here, the device registered behind the node
        `gateway_name`, and its wg-quick config returned, the only place its private key ever is."""
        from .. import crypto
        from .model import device_config
        gw = self.node_by_name(gateway_name)
        if gw is None or gw.gateway is not None:
            raise JoinError(f"no node {gateway_name!r} to be the gateway (`wgpy server nodes list`)")
        private = crypto.clamp(os.urandom(32))
        dev = self.add_device(name, crypto.encode_key(crypto.public_from_private(private)), gw.id, tags, now)
        return dev, device_config(crypto.encode_key(private), dev, gw, self.networks())

    def _insert(self, c, now: float, **values) -> Node:
        """A node or device row, one address from every network, and its entry in the change log (inside the
        caller's transaction)."""
        nets = json.loads(c.execute(select(meta_t.c.value).where(meta_t.c.key == "networks")).scalar_one())
        node_id = c.execute(insert(nodes_t).values(created=now, last_seen=0.0, **values)
                            .returning(nodes_t.c.id)).first().id
        c.execute(update(nodes_t).where(nodes_t.c.id == node_id).values(**_addresses(c, nets, node_id)))
        c.execute(insert(changes_t).values(node_id=node_id, kind="node", at=now))
        return self.node(node_id, c)

    def node(self, node_id: int, conn=None) -> Node | None:
        if conn is None:
            with self._begin() as c:
                return self.node(node_id, c)
        r = conn.execute(select(nodes_t).where(nodes_t.c.id == node_id)).first()
        return _node(r) if r is not None else None

    def node_by_key(self, public_key: str) -> Node | None:
        with self._begin() as c:
            r = c.execute(select(nodes_t).where(nodes_t.c.public_key == public_key)).first()
            return _node(r) if r is not None else None

    def node_by_name(self, name: str) -> Node | None:
        with self._begin() as c:
            r = c.execute(select(nodes_t).where(nodes_t.c.name == name)).first()
            return _node(r) if r is not None else None

    def all_nodes(self) -> list[Node]:
        with self._begin() as c:
            return [_node(r) for r in c.execute(select(nodes_t).order_by(nodes_t.c.id))]

    def remove_node(self, node_id: int) -> bool:
        """Remove a node (and the devices it is the gateway of) or a device."""
        with self._begin() as c:
            devices = [r.id for r in c.execute(select(nodes_t.c.id).where(nodes_t.c.gateway == node_id))]
            gone = c.execute(delete(nodes_t).where(nodes_t.c.id == node_id)).rowcount > 0
            if gone:
                for d in devices:
                    c.execute(delete(nodes_t).where(nodes_t.c.id == d))
                    c.execute(insert(changes_t).values(node_id=d, kind="removed", at=time.time()))
                c.execute(insert(changes_t).values(node_id=node_id, kind="removed", at=time.time()))
            return gone

    def set_tags(self, node_id: int, tags: list[str]) -> bool:
        with self._begin() as c:
            ok = c.execute(update(nodes_t).where(nodes_t.c.id == node_id).values(tags=" ".join(sorted(tags)))
                           ).rowcount > 0
            if ok:
                c.execute(insert(changes_t).values(node_id=node_id, kind="node", at=time.time()))
            return ok

    def seen(self, node_id: int, endpoint: str | None, when: float, connected: bool) -> None:
        """A node's stream connected or ended: its endpoint as the server sees it, the time, whether it is held.
        Only an endpoint change is a change of the views."""
        with self._begin() as c:
            old = c.execute(select(nodes_t.c.endpoint).where(nodes_t.c.id == node_id)).first()
            if old is None:
                return
            c.execute(update(nodes_t).where(nodes_t.c.id == node_id).values(
                endpoint=endpoint or old.endpoint, last_seen=when, connected=connected))
            if endpoint and old.endpoint != endpoint:
                c.execute(insert(changes_t).values(node_id=node_id, kind="node", at=when))

    def set_candidates(self, node_id: int, candidates: list[str], when: float) -> bool:
        """A node's candidates as it reported them; a change of the views only when they changed."""
        text = "\n".join(candidates)
        with self._begin() as c:
            old = c.execute(select(nodes_t.c.candidates).where(nodes_t.c.id == node_id)).first()
            if old is None or old.candidates == text:
                return False
            c.execute(update(nodes_t).where(nodes_t.c.id == node_id).values(candidates=text))
            c.execute(insert(changes_t).values(node_id=node_id, kind="node", at=when))
            return True

    def touch(self, node_ids: list[int], when: float) -> None:
        """The nodes whose streams an instance holds are still there (every PRESENCE_EVERY seconds)."""
        with self._begin() as c:
            for i in range(0, len(node_ids), 500):
                c.execute(update(nodes_t).where(nodes_t.c.id.in_(node_ids[i:i + 500])).values(
                    last_seen=when, connected=True))

    def presence(self) -> dict[int, tuple[bool, float]]:
        """Every node's (connected, last seen)."""
        with self._begin() as c:
            return {r.id: (r.connected, r.last_seen) for r in
                    c.execute(select(nodes_t.c.id, nodes_t.c.connected, nodes_t.c.last_seen))}

    def changes_after(self, last: int) -> list[tuple[int, int | None, str, float]]:
        with self._begin() as c:
            return [(r.id, r.node_id, r.kind, r.at) for r in
                    c.execute(select(changes_t).where(changes_t.c.id > last).order_by(changes_t.c.id))]

    def last_change(self) -> int:
        with self._begin() as c:
            r = c.execute(select(changes_t.c.id).order_by(changes_t.c.id.desc()).limit(1)).first()
            return r.id if r is not None else 0


def _addresses(c, nets: list[str], node_id: int) -> dict[str, str]:
    """One address per network for a new node: the network's address plus the node's id when that one is free
    (one indexed look-up: ids only grow, so it almost always is), else the lowest free one (a scan)."""
    values = {}
    for net in nets:
        col = nodes_t.c.ipv6 if ":" in net else nodes_t.c.ipv4
        try:
            cand = allocate(net, (), node_id)
            if c.execute(select(nodes_t.c.id).where(col == cand)).first() is not None:
                cand = allocate(net, [r[0] for r in c.execute(select(col).where(col.is_not(None)))], node_id)
        except ValueError as e:
            raise JoinError(str(e)) from None
        values[col.name] = cand
    return values


def _node(r) -> Node:
    addrs = tuple(a for a in (r.ipv4, r.ipv6) if a)
    return Node(r.id, r.name, r.public_key, addrs, frozenset(r.tags.split()), r.endpoint, False, r.last_seen,
                r.listen_port, r.gateway, tuple(r.candidates.split("\n")) if r.candidates else ())


def redact_url(url: str) -> str:
    """A database URL without its password."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


# ---- the admin password ---------------------------------------------------------------------------------------

def hash_password(password: str) -> str:
    """scrypt (hashlib), n=2^15, r=8, p=1, 16-byte salt: "scrypt$n$r$p$salt$hash"."""
    salt = os.urandom(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=1 << 15, r=8, p=1, maxmem=64 << 20, dklen=32)
    return f"scrypt${1 << 15}$8$1${salt.hex()}${h.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, want = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 << 20, dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), want)
