"""mesh/model.py: the views kept incrementally equal the views computed from scratch, and the deltas pushed to
each node rebuild exactly its view; policy parsing; address allocation; mesh/auth.py's proofs."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from wgpy import crypto
from wgpy.mesh.auth import MAX_SKEW, Verifier, proof
from wgpy.mesh.model import Mesh, Node, Policy, PolicyError, allocate

TAGS = ["laptops", "servers", "phones"]


def node(i: int, tags=(), endpoint=None) -> Node:
    return Node(i, f"n{i}", crypto.encode_key(bytes([i]) * 32), (f"100.80.0.{i}", f"fd7a::{i}"),
                frozenset(tags), endpoint)


def replay(deltas, replicas: dict[int, dict[str, dict]], versions: dict[int, int]) -> None:
    for to, msg in deltas:
        assert msg["version"] == versions.get(to, 0) + 1, "versions go up by one per delta"
        versions[to] = msg["version"]
        view = replicas.setdefault(to, {})
        if msg["type"] == "upsert":
            view[msg["peer"]["public_key"]] = msg["peer"]
        else:
            del view[msg["public_key"]]


ops = st.lists(st.one_of(
    st.tuples(st.just("upsert"), st.integers(1, 8), st.sets(st.sampled_from(TAGS), max_size=2),
              st.sampled_from([None, "192.0.2.1:51820", "192.0.2.2:51820"])),
    st.tuples(st.just("remove"), st.integers(1, 8)),
    st.tuples(st.just("policy"), st.sampled_from([
        Policy(), Policy(((frozenset({"laptops"}), frozenset({"servers"})),)),
        Policy(((frozenset({"*"}), frozenset({"servers"})), (frozenset({"phones"}), frozenset({"phones"})))),
    ])),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_incremental_views_match_the_full_computation_and_the_deltas(seq):
    m = Mesh()
    replicas: dict[int, dict] = {}
    versions: dict[int, int] = {}
    for op in seq:
        if op[0] == "upsert":
            _, i, tags, ep = op
            if i not in m.nodes:               # a new node's replica starts from the whole view it gets
                deltas = m.upsert(node(i, tags, ep))
                assert all(to != i for to, _ in deltas)
                view = m.view(i)
                replicas[i] = {e["public_key"]: e for e in view["peers"]}
                versions[i] = view["version"]
            else:
                deltas = m.upsert(node(i, tags, ep))
        elif op[0] == "remove":
            deltas = m.remove(op[1])
            replicas.pop(op[1], None)
            versions.pop(op[1], None)
        else:
            deltas = m.set_policy(op[1])
        replay(deltas, replicas, versions)
        full = m.full_views()
        assert {k: v for k, v in m.peers.items()} == full
        for i in m.nodes:
            assert json.loads(m.view_json(i)) == m.view(i)        # the cached JSON is never stale
            want = {m.nodes[p].public_key: m.entry(p) for p in full[i]}
            assert replicas.get(i, {}) == want
            assert m.view(i)["version"] == versions.get(i, 0)
        for to, _ in deltas:
            assert to in m.nodes                # nothing is pushed to a node that is gone


def test_a_change_costs_work_for_the_nodes_it_affects_only():
    m = Mesh(Policy(((frozenset({"a"}), frozenset({"a"})),)))
    for i in range(1, 101):
        m.upsert(node(i, ("a",) if i <= 3 else ("b",)))
    deltas = m.upsert(node(2, ("a",), endpoint="192.0.2.9:1"))   # node 2's endpoint: only 1 and 3 hear of it
    assert sorted(to for to, _ in deltas) == [1, 3]
    assert m.remove(50) == []                                    # nobody could reach node 50


def test_policy_parse_and_errors():
    p = Policy.parse('{"rules": [{"from": ["laptops"], "to": ["servers"]}]}')
    lap, srv, ph = node(1, ["laptops"]), node(2, ["servers"]), node(3, ["phones"])
    assert p.allows(lap, srv) and p.allows(srv, lap) and not p.allows(lap, ph)
    assert Policy.parse('{"rules": []}').allows(lap, ph)           # no rules: allow all
    assert Policy.parse(p.to_json()) == p
    for bad, words in (("[", "not JSON"), ('{"rule": []}', 'one key, "rules"'),
                       ('{"rules": [{"from": ["a"]}]}', "rule 1"),
                       ('{"rules": [{"from": ["a b"], "to": ["x"]}]}', "rule 1: \"from\"")):
        with pytest.raises(PolicyError) as info:
            Policy.parse(bad)
        assert words in str(info.value)


def test_allocate():
    assert allocate("100.80.0.0/16", []) == "100.80.0.1"
    assert allocate("100.80.0.0/16", ["100.80.0.1", "100.80.0.2"]) == "100.80.0.3"
    assert allocate("fd7a:6770::/48", [], 7) == "fd7a:6770::7"
    assert allocate("fd7a:6770::/48", ["fd7a:6770::7"], 7) == "fd7a:6770::1"
    with pytest.raises(ValueError):
        allocate("10.0.0.0/30", ["10.0.0.1", "10.0.0.2"])


def test_proof_binds_key_purpose_time_and_nonce():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    server = X25519PrivateKey.generate()
    node_priv = crypto.clamp(os.urandom(32))
    node_pub = crypto.public_from_private(node_priv)
    spub = server.public_key().public_bytes_raw()
    v = Verifier(server.private_bytes_raw())
    nonce = os.urandom(16)
    good = proof(node_priv, spub, "stream", 1000, nonce)
    assert v.check(node_pub, "stream", 1000, nonce, good, 1000.0) is None
    assert v.check(node_pub, "stream", 1000, nonce, good, 1001.0) == "replayed request"
    n2 = os.urandom(16)
    assert v.check(node_pub, "leave", 1000, n2, proof(node_priv, spub, "stream", 1000, n2), 1000.0) \
        == "the proof does not match the node's key"
    other = crypto.public_from_private(crypto.clamp(os.urandom(32)))
    n3 = os.urandom(16)
    assert v.check(other, "stream", 1000, n3, proof(node_priv, spub, "stream", 1000, n3), 1000.0) \
        == "the proof does not match the node's key"
    n4 = os.urandom(16)
    assert "off the server's clock" in v.check(node_pub, "stream", 1000, n4,
                                               proof(node_priv, spub, "stream", 1000, n4), 1000.0 + MAX_SKEW + 1)


def test_devices_hang_off_their_gateway():
    m = Mesh()
    for i in (1, 2, 3):
        m.upsert(node(i))
    replicas: dict[int, dict] = {i: {e["public_key"]: e for e in m.view(i)["peers"]} for i in (1, 2, 3)}
    versions = {i: m.view(i)["version"] for i in (1, 2, 3)}
    phone = Node(10, "phone", crypto.encode_key(b"\x0a" * 32), ("100.80.0.10", "fd7a::a"), gateway=1)
    deltas = m.upsert(phone)
    replay(deltas, replicas, versions)
    assert sorted(to for to, _ in deltas) == [1, 2, 3]             # the gateway, and its two peers
    assert replicas[1][phone.public_key]["device"] is True          # a peer of its gateway only
    assert phone.public_key not in replicas[2] and phone.public_key not in replicas[3]
    gw = replicas[2][node(1).public_key]
    assert gw["allowed_ips"] == ["100.80.0.1/32", "fd7a::1/128", "100.80.0.10/32", "fd7a::a/128"]
    assert {k: v for k, v in replicas[1].items()} == {e["public_key"]: e for e in m.view(1)["peers"]}
    assert all(json.loads(m.view_json(i)) == m.view(i) for i in (1, 2, 3))
    replay(m.remove(10), replicas, versions)                        # removed: routes and peer gone
    assert replicas[2][node(1).public_key]["allowed_ips"] == ["100.80.0.1/32", "fd7a::1/128"]
    assert phone.public_key not in replicas[1]
    replay(m.upsert(phone), replicas, versions)
    replay(m.remove(1), replicas, versions)                         # the gateway goes: its devices too
    assert 10 not in m.devices and m.upsert(phone) == []            # and a device without one reaches nobody
