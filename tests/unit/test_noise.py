"""Noise_IKpsk2 handshake (whitepaper 5.4.2 - 5.4.5), driven directly on StaticIdentity / Handshake pairs."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac as std_hmac
import random
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy import crypto
from wgpy.constants import CONSTRUCTION, HANDSHAKE_INITIATION_RATE, IDENTIFIER
from wgpy.protocol import noise, tai64n
from wgpy.protocol.keypair import Keypair
from wgpy.protocol.messages import Initiation, Response
from wgpy.protocol.noise import State

WALL = 1_700_000_000.25


class Side:
    """One end: identity, the handshake for the other end, and a lookup as the device would provide it."""

    def __init__(self, priv: bytes) -> None:
        self.priv = priv
        self.id = noise.StaticIdentity(priv)
        self.peers: dict[bytes, SimpleNamespace] = {}

    def know(self, other: "Side", psk: bytes | None = None) -> noise.Handshake:
        hs = noise.new_handshake(self.id, other.id.public, psk)
        self.peers[other.id.public] = SimpleNamespace(handshake=hs)
        return hs

    def hs(self, other: "Side") -> noise.Handshake:
        return self.peers[other.id.public].handshake

    def lookup(self, pub: bytes):
        return self.peers.get(pub)


def make_sides(seed: int = 1, psk_i: bytes | None = None, psk_r: bytes | None = None):
    rng = random.Random(seed)
    i, r = Side(rng.randbytes(32)), Side(rng.randbytes(32))
    i.know(r, psk_i)
    r.know(i, psk_r)
    return rng, i, r


def snapshot(hs: noise.Handshake) -> dict:
    return {f.name: getattr(hs, f.name) for f in dataclasses.fields(hs)}


def wire_init(msg: Initiation) -> Initiation:
    return Initiation.unpack(msg.pack())


def full_handshake(rng, i: Side, r: Side, wall: float = WALL, now: float = 100.0):
    init = noise.create_initiation(i.id, i.hs(r), 0x11111111, wall, rng.randbytes(32))
    assert init is not None
    peer = noise.consume_initiation(r.id, wire_init(init), r.lookup, now)
    assert peer is r.peers[i.id.public]
    resp = noise.create_response(r.hs(i), 0x22222222, rng.randbytes(32))
    assert resp is not None
    assert noise.consume_response(i.id, i.hs(r), Response.unpack(resp.pack()))
    return init, resp, noise.begin_session(i.hs(r)), noise.begin_session(r.hs(i))


# ---------------------------------------------------------------------------------------------------------------
# success
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("psk", [None, bytes(range(32))])
def test_full_handshake_keys_match_crosswise(psk):
    rng, i, r = make_sides(2, psk, psk)
    init, resp, ki, kr = full_handshake(rng, i, r)
    assert ki is not None and kr is not None
    assert ki.send_key == kr.recv_key and ki.recv_key == kr.send_key
    assert ki.send_key != ki.recv_key
    assert ki.is_initiator and not kr.is_initiator
    assert (ki.local_index, ki.remote_index) == (0x11111111, 0x22222222)
    assert (kr.local_index, kr.remote_index) == (0x22222222, 0x11111111)
    assert init.sender == 0x11111111 and resp.sender == 0x22222222 and resp.receiver == 0x11111111
    # both handshakes are wiped by begin_session
    for hs in (i.hs(r), r.hs(i)):
        assert hs.state is State.ZEROED and hs.chaining_key == b"" and hs.hash == b""
        assert hs.local_ephemeral is None and hs.remote_ephemeral == b""
    # the keys carry traffic both ways
    a = ChaCha20Poly1305(ki.send_key).encrypt(crypto.counter_nonce(0), b"ping", None)
    assert ChaCha20Poly1305(kr.recv_key).decrypt(crypto.counter_nonce(0), a, None) == b"ping"
    b = ChaCha20Poly1305(kr.send_key).encrypt(crypto.counter_nonce(0), b"pong", None)
    assert ChaCha20Poly1305(ki.recv_key).decrypt(crypto.counter_nonce(0), b, None) == b"pong"


def test_psk_changes_the_session_keys():
    rng1, i1, r1 = make_sides(3)
    rng2, i2, r2 = make_sides(3, b"\x01" * 32, b"\x01" * 32)
    _, _, k1, _ = full_handshake(rng1, i1, r1)
    _, _, k2, _ = full_handshake(rng2, i2, r2)
    assert k1.send_key != k2.send_key


# A from-scratch derivation of the whole handshake (whitepaper 5.4.2 - 5.4.5), using only hashlib, hmac and
# `cryptography`, to check every byte the implementation puts on the wire and the derived transport keys.

def _H(x):
    return hashlib.blake2s(x).digest()


def _kdf(n, key, data):
    t0 = std_hmac.new(key, data, hashlib.blake2s).digest()
    out, prev = [], b""
    for j in range(1, n + 1):
        prev = std_hmac.new(t0, prev + bytes([j]), hashlib.blake2s).digest()
        out.append(prev)
    return out


def _dh(priv, pub):
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))


def _pub(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()


def _aead(key, ptxt, ad):
    return ChaCha20Poly1305(key).encrypt(bytes(12), ptxt, ad)


@pytest.mark.parametrize("psk", [bytes(32), bytes(range(32, 64))])
def test_handshake_bytes_match_reference_derivation(psk):
    rng = random.Random(11)
    si, sr = rng.randbytes(32), rng.randbytes(32)
    ei, er = rng.randbytes(32), rng.randbytes(32)
    i, r = Side(si), Side(sr)
    i.know(r, psk)
    r.know(i, psk)
    Si, Sr, Ei, Er = _pub(si), _pub(sr), _pub(ei), _pub(er)

    # initiator -> responder
    c = _H(CONSTRUCTION)
    h = _H(_H(c + IDENTIFIER) + Sr)
    c = _kdf(1, c, Ei)[0]
    h = _H(h + Ei)
    c, k = _kdf(2, c, _dh(ei, Sr))
    enc_static = _aead(k, Si, h)
    h = _H(h + enc_static)
    c, k = _kdf(2, c, _dh(si, Sr))
    enc_ts = _aead(k, tai64n.stamp(WALL), h)
    h = _H(h + enc_ts)
    # responder -> initiator
    c = _kdf(1, c, Er)[0]
    h = _H(h + Er)
    c = _kdf(1, c, _dh(er, Ei))[0]
    c = _kdf(1, c, _dh(er, Si))[0]
    c, tau, k = _kdf(3, c, psk)
    h = _H(h + tau)
    enc_nothing = _aead(k, b"", h)
    t_send_i, t_recv_i = _kdf(2, c, b"")

    init = noise.create_initiation(i.id, i.hs(r), 7, WALL, ei)
    assert init.unencrypted_ephemeral == Ei
    assert init.encrypted_static == enc_static
    assert init.encrypted_timestamp == enc_ts
    assert noise.consume_initiation(r.id, init, r.lookup, 1.0) is not None
    resp = noise.create_response(r.hs(i), 9, er)
    assert resp.unencrypted_ephemeral == Er
    assert resp.encrypted_nothing == enc_nothing
    assert noise.consume_response(i.id, i.hs(r), resp)
    ki, kr = noise.begin_session(i.hs(r)), noise.begin_session(r.hs(i))
    assert (ki.send_key, ki.recv_key) == (t_send_i, t_recv_i)
    assert (kr.send_key, kr.recv_key) == (t_recv_i, t_send_i)


def test_static_identity_derived_keys():
    priv = bytes(range(32))
    ident = noise.StaticIdentity(priv)
    pub = _pub(priv)
    assert ident.public == pub
    assert ident.mac1_key == _H(b"mac1----" + pub)
    assert ident.cookie_key == _H(b"cookie--" + pub)
    assert ident.initial_hash == _H(noise.INITIAL_HASH + pub)
    hs = noise.new_handshake(noise.StaticIdentity(bytes(range(1, 33))), pub, None)
    assert hs.mac1_key == ident.mac1_key and hs.cookie_key == ident.cookie_key
    assert hs.preshared_key == bytes(32)


# ---------------------------------------------------------------------------------------------------------------
# failures (each must leave the handshake exactly as it was)
# ---------------------------------------------------------------------------------------------------------------

def test_wrong_responder_key():
    rng, i, r = make_sides(4)
    x = Side(rng.randbytes(32))          # a third party that knows the initiator but is not who it addressed
    x.know(i)
    before = snapshot(x.hs(i))
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    assert noise.consume_initiation(x.id, wire_init(init), x.lookup, 10.0) is None
    assert snapshot(x.hs(i)) == before


def test_unknown_initiator():
    rng, i, r = make_sides(5)
    r.peers.clear()
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    assert noise.consume_initiation(r.id, wire_init(init), r.lookup, 10.0) is None


@pytest.mark.parametrize("field,offset", [("encrypted_static", 0), ("encrypted_static", 47),
                                          ("encrypted_timestamp", 0), ("encrypted_timestamp", 27),
                                          ("unencrypted_ephemeral", 5)])
def test_tampered_initiation(field, offset):
    rng, i, r = make_sides(6)
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    b = bytearray(getattr(init, field))
    b[offset] ^= 0x10
    setattr(init, field, bytes(b))
    before = snapshot(r.hs(i))
    assert noise.consume_initiation(r.id, init, r.lookup, 10.0) is None
    assert snapshot(r.hs(i)) == before


def test_mismatched_psk_response_fails():
    rng, i, r = make_sides(7, psk_i=b"\x01" * 32, psk_r=b"\x02" * 32)
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    # the PSK is only mixed in by the response, so the responder cannot tell
    assert noise.consume_initiation(r.id, wire_init(init), r.lookup, 10.0) is not None
    resp = noise.create_response(r.hs(i), 2, rng.randbytes(32))
    before = snapshot(i.hs(r))
    assert noise.consume_response(i.id, i.hs(r), resp) is False
    assert snapshot(i.hs(r)) == before
    assert i.hs(r).state is State.INITIATION_CREATED
    assert noise.begin_session(i.hs(r)) is None


def test_psk_on_one_side_only_fails():
    rng, i, r = make_sides(8, psk_i=None, psk_r=b"\x05" * 32)
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    assert noise.consume_initiation(r.id, init, r.lookup, 10.0)
    resp = noise.create_response(r.hs(i), 2, rng.randbytes(32))
    assert not noise.consume_response(i.id, i.hs(r), resp)


def test_response_to_another_initiation_fails():
    """A genuine response, but to a different initiation of the same initiator (e.g. a replayed response)."""
    rng, i, r = make_sides(9)
    noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))      # i's outstanding initiation
    i2 = Side(i.priv)                                                       # same identity, other handshake
    i2.know(r)
    init2 = noise.create_initiation(i2.id, i2.hs(r), 3, WALL + 1, rng.randbytes(32))
    assert noise.consume_initiation(r.id, init2, r.lookup, 10.0)
    resp2 = noise.create_response(r.hs(i), 4, rng.randbytes(32))
    before = snapshot(i.hs(r))
    assert not noise.consume_response(i.id, i.hs(r), resp2)
    assert snapshot(i.hs(r)) == before
    assert noise.consume_response(i2.id, i2.hs(r), resp2)                  # it was fine for its own initiation


def test_tampered_response_fails():
    rng, i, r = make_sides(10)
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    assert noise.consume_initiation(r.id, init, r.lookup, 10.0)
    resp = noise.create_response(r.hs(i), 2, rng.randbytes(32))
    before = snapshot(i.hs(r))
    for field in ("unencrypted_ephemeral", "encrypted_nothing"):
        bad = Response.unpack(resp.pack())
        v = bytearray(getattr(bad, field))
        v[3] ^= 1
        setattr(bad, field, bytes(v))
        assert not noise.consume_response(i.id, i.hs(r), bad)
        assert snapshot(i.hs(r)) == before
    assert noise.consume_response(i.id, i.hs(r), resp)   # the genuine one still works afterwards


def test_replayed_initiation_rejected_by_timestamp():
    rng, i, r = make_sides(12)
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    wire = init.pack()
    assert noise.consume_initiation(r.id, Initiation.unpack(wire), r.lookup, 10.0) is not None
    after_first = snapshot(r.hs(i))
    # long after the flood limit, the same bytes are still refused: the timestamp is not newer
    assert noise.consume_initiation(r.id, Initiation.unpack(wire), r.lookup, 1000.0) is None
    assert snapshot(r.hs(i)) == after_first
    # an older initiation (smaller timestamp) is refused as well
    i2 = Side(i.priv)
    i2.know(r)
    old = noise.create_initiation(i2.id, i2.hs(r), 2, WALL - 60, rng.randbytes(32))
    assert noise.consume_initiation(r.id, old, r.lookup, 2000.0) is None
    # a newer one is accepted
    new = noise.create_initiation(i2.id, i2.hs(r), 3, WALL + 60, rng.randbytes(32))
    assert noise.consume_initiation(r.id, new, r.lookup, 3000.0) is not None


def test_initiation_flood_rejected():
    rng, i, r = make_sides(13)
    first = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    second = noise.create_initiation(i.id, i.hs(r), 2, WALL + 0.5, rng.randbytes(32))
    assert noise.consume_initiation(r.id, first, r.lookup, 100.0) is not None
    before = snapshot(r.hs(i))
    too_soon = 100.0 + HANDSHAKE_INITIATION_RATE / 2
    assert noise.consume_initiation(r.id, second, r.lookup, too_soon) is None
    assert snapshot(r.hs(i)) == before          # in particular the timestamp was not recorded
    ok = 100.0 + HANDSHAKE_INITIATION_RATE * 1.5
    assert noise.consume_initiation(r.id, second, r.lookup, ok) is not None
    assert r.hs(i).remote_index == 2


def test_out_of_order_calls():
    rng, i, r = make_sides(14)
    hs_i, hs_r = i.hs(r), r.hs(i)
    assert noise.create_response(hs_r, 1, rng.randbytes(32)) is None      # nothing consumed yet
    assert noise.begin_session(hs_r) is None and noise.begin_session(hs_i) is None
    init = noise.create_initiation(i.id, hs_i, 1, WALL, rng.randbytes(32))
    assert noise.consume_initiation(r.id, init, r.lookup, 1.0)
    resp = noise.create_response(hs_r, 2, rng.randbytes(32))
    assert noise.begin_session(hs_i) is None                               # initiator: response not consumed
    # the responder's own handshake cannot consume a response
    assert not noise.consume_response(r.id, hs_r, resp)
    assert noise.consume_response(i.id, hs_i, resp)
    assert not noise.consume_response(i.id, hs_i, resp)                    # and only once


def test_low_order_peer_key_is_unusable():
    ident = noise.StaticIdentity(bytes(range(32)))
    hs = noise.new_handshake(ident, bytes(32), None)
    assert hs.precomputed_static_static is None
    before = snapshot(hs)
    assert noise.create_initiation(ident, hs, 1, WALL, bytes(range(32))) is None
    assert snapshot(hs) == before


def test_low_order_ephemeral_rejected():
    rng, i, r = make_sides(15)
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    init.unencrypted_ephemeral = bytes(32)
    before = snapshot(r.hs(i))
    assert noise.consume_initiation(r.id, init, r.lookup, 1.0) is None
    assert snapshot(r.hs(i)) == before


# ---------------------------------------------------------------------------------------------------------------
# TAI64N
# ---------------------------------------------------------------------------------------------------------------

def test_tai64n_layout_and_order():
    s = tai64n.stamp(0.0)
    assert len(s) == 12 and s == ((1 << 62) + 10).to_bytes(8, "big") + bytes(4)
    s = tai64n.stamp(1.5)
    assert int.from_bytes(s[:8], "big") == (1 << 62) + 11
    assert int.from_bytes(s[8:], "big") == 500_000_000 & ~((1 << 24) - 1)
    assert tai64n.is_after(tai64n.stamp(WALL + 0.02), tai64n.stamp(WALL))
    assert not tai64n.is_after(tai64n.stamp(WALL), tai64n.stamp(WALL))
    assert tai64n.is_after(tai64n.stamp(1_700_000_100.0), tai64n.stamp(1_700_000_099.999))   # second rollover
    assert not tai64n.is_after(tai64n.stamp(WALL + 0.001), tai64n.stamp(WALL))   # below the 2^24 ns grain


# ---------------------------------------------------------------------------------------------------------------
# nothing secret in a repr
# ---------------------------------------------------------------------------------------------------------------

def _forms(secret: bytes) -> list[str]:
    return [repr(secret), secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1][:24]]


def _assert_no_secret(text: str, secrets: list[bytes]) -> None:
    for s in secrets:
        if s == bytes(len(s)):
            continue
        for form in _forms(s):
            assert form not in text, f"secret leaked in {text!r}"


def _secrets_and_objects():
    psk = bytes(range(100, 132))
    rng, i, r = make_sides(16, psk, psk)
    init = noise.create_initiation(i.id, i.hs(r), 1, WALL, rng.randbytes(32))
    mid_hs = snapshot(i.hs(r))
    assert noise.consume_initiation(r.id, init, r.lookup, 1.0)
    resp = noise.create_response(r.hs(i), 2, rng.randbytes(32))
    r_mid = snapshot(r.hs(i))
    reprs = [repr(i.id), repr(r.id), repr(i.hs(r)), repr(r.hs(i))]
    secrets = [i.priv, r.priv, psk, mid_hs["chaining_key"], mid_hs["hash"], r_mid["chaining_key"],
               mid_hs["precomputed_static_static"]]
    assert noise.consume_response(i.id, i.hs(r), resp)
    ki, kr = noise.begin_session(i.hs(r)), noise.begin_session(r.hs(i))
    secrets += [ki.send_key, ki.recv_key]
    kp = Keypair(ki.send_key, ki.recv_key, True, 1, 2, 0.0, None)
    reprs += [repr(kp), str(kp)]
    return secrets, reprs, ki


def test_repr_never_contains_key_material():
    secrets, reprs, _ = _secrets_and_objects()
    for text in reprs:
        _assert_no_secret(text, secrets)
    assert "redacted" in reprs[0] and "redacted" in reprs[2]


def test_session_keys_repr_has_no_key_material():
    secrets, _, ki = _secrets_and_objects()
    _assert_no_secret(repr(ki), secrets)
