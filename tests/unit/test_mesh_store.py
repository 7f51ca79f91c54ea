"""mesh/store.py on a real SQLite file and a real PostgreSQL (a private cluster, wgpy_testkit.postgres): joins with tokens (expiry, single use, revocation, names, keys), addresses
never shared, a refused join leaves no row, the change log, the admin password hash."""

from __future__ import annotations

import os
import time

import pytest

from wgpy import crypto
from wgpy.mesh.model import Policy
from wgpy.mesh.store import JoinError, Store, StoreError, check_password, hash_password, redact_url
from wgpy_testkit.postgres import PgCluster, pg_bin


def key() -> str:
    return crypto.encode_key(os.urandom(32))


@pytest.fixture(scope="module")
def pg():
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql)")
    if os.geteuid() != 0:
        pytest.skip("the private cluster runs as user nobody: needs root")
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/server.db")
    else:
        cluster = request.getfixturevalue("pg")
        s = Store(cluster.url.replace("postgresql+psycopg://", "postgresql://"))   # the plain spelling works too
        from wgpy.mesh.store import metadata
        metadata.drop_all(s.engine)                 # each test starts from an empty database
    s.create(os.urandom(32), hash_password("correct horse"), ["100.80.0.0/16", "fd7a:6770::/48"])
    yield s
    s.engine.dispose()


def test_join_allocates_addresses_and_logs_the_change(store):
    tok = store.create_token(["laptops"], 3600, reusable=True)
    now = time.time()
    a = store.join(tok, "alice", key(), 51820, "192.0.2.1:51820", now)
    b = store.join(tok, "bob", key(), 51820, None, now)
    assert a.addresses == ("100.80.0.1", "fd7a:6770::1") and b.addresses == ("100.80.0.2", "fd7a:6770::2")
    assert a.tags == frozenset({"laptops"}) and a.endpoint == "192.0.2.1:51820"
    assert [(nid, kind) for _, nid, kind, _ in store.changes_after(0)] == [(a.id, "node"), (b.id, "node")]
    store.remove_node(a.id)
    c = store.join(tok, "carol", key(), 51820, None, now)
    assert c.addresses == ("100.80.0.3", "fd7a:6770::3")      # the network's address + the node's id
    assert store.changes_after(2)[0][1:3] == (a.id, "removed")


def test_a_small_network_fills_the_gaps(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/small.db")
    s.create(os.urandom(32), hash_password("correct horse"), ["10.0.0.0/29"])     # hosts .1 to .6
    tok = s.create_token([], 3600, reusable=True)
    now = time.time()
    nodes = [s.join(tok, f"n{i}", key(), 51820, None, now) for i in range(6)]
    assert [n.addresses[0] for n in nodes] == [f"10.0.0.{i}" for i in range(1, 7)]
    with pytest.raises(JoinError) as info:
        s.join(tok, "n7", key(), 51820, None, now)
    assert "no free address" in str(info.value) and len(s.all_nodes()) == 6
    s.remove_node(nodes[1].id)
    assert s.join(tok, "n8", key(), 51820, None, now).addresses == ("10.0.0.2",)   # the lowest free, once gone


@pytest.mark.parametrize("case, words", [
    ("expired", "has expired"), ("used", "already used"), ("revoked", "unknown or revoked"),
    ("unknown", "unknown or revoked"), ("name", "is taken"), ("key", "already registered"),
    ("badname", "invalid node name"),
])
def test_refused_joins_create_nothing(store, case, words):
    single = store.create_token([], 3600, reusable=False)
    k = key()
    store.join(store.create_token([], 3600, False), "taken", k, 51820, None, time.time())
    before = (len(store.all_nodes()), store.last_change())
    tok, name, pub, now = single, "newnode", key(), time.time()
    if case == "expired":
        tok = store.create_token([], 60, False)
        now += 61
    elif case == "used":
        store.join(single, "first", key(), 51820, None, now)
        before = (len(store.all_nodes()), store.last_change())
    elif case == "revoked":
        store.revoke_token(store.tokens()[0].id)
    elif case == "unknown":
        tok = "wgpy_nosuchtoken"
    elif case == "name":
        name = "taken"
    elif case == "key":
        pub = k
    elif case == "badname":
        name = "no spaces please"
    with pytest.raises(JoinError) as info:
        store.join(tok, name, pub, 51820, None, now)
    assert words in str(info.value)
    assert (len(store.all_nodes()), store.last_change()) == before
    if case != "used":
        assert store.tokens()[0].uses == 0              # the single-use token was not spent by a refused join


def test_policy_round_trip_and_change(store):
    p = Policy.parse('{"rules": [{"from": ["a"], "to": ["b"]}]}')
    store.set_policy(p)
    assert store.policy() == p and store.changes_after(0)[-1][2] == "policy"


def test_errors_name_the_database(tmp_path):
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{tmp_path}/none/x.db").server_private()
    assert "x.db" in str(info.value)
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{tmp_path}/empty.db").server_private()
    assert "wgpy server init" in str(info.value)
    assert redact_url("postgresql+psycopg://wgpy:s3cret@db/wgpy") == "postgresql+psycopg://wgpy:***@db/wgpy"


def test_password_hash():
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct" not in h
    assert check_password("correct horse", h) and not check_password("wrong", h) and not check_password("x", "junk")
