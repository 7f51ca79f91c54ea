"""Noise_IKpsk2 handshake as WireGuard uses it (whitepaper 5.4.2 - 5.4.5).

    IKpsk2:
      <- s
      ...
      -> e, es, s, ss, {t}
      <- e, ee, se, psk, {}

Rules of this file:
- Pure functions over a `Handshake` (one per peer) and a `StaticIdentity` (one per device). No I/O, no clock:
  the wall-clock timestamp for {t} and all randomness come in as arguments.
- A consume_* function changes the handshake only after every check has passed; on any failure it returns None
  and the state is exactly as before.
- Indices are chosen by the caller (the device's index table) and passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .. import crypto
from ..constants import CONSTRUCTION, HANDSHAKE_INITIATION_RATE, IDENTIFIER, LABEL_COOKIE, LABEL_MAC1
from . import tai64n
from .messages import Initiation, Response

INITIAL_CHAIN_KEY = crypto.hash_(CONSTRUCTION)
INITIAL_HASH = crypto.hash_(INITIAL_CHAIN_KEY + IDENTIFIER)
ZERO_KEY = b"\x00" * 32


class State(enum.Enum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


class StaticIdentity:
    """The device's static key pair and what is derived from it once."""

    __slots__ = ("private", "public", "_priv_raw", "mac1_key", "cookie_key", "initial_hash")

    def __init__(self, private_raw: bytes) -> None:
        self._priv_raw = bytes(private_raw)
        self.private = crypto.private_key(private_raw)
        self.public = self.private.public_key().public_bytes_raw()
        # keys for verifying mac1 of, and encrypting cookie replies to, messages sent to us
        self.mac1_key = crypto.hash_(LABEL_MAC1 + self.public)
        self.cookie_key = crypto.hash_(LABEL_COOKIE + self.public)
        self.initial_hash = crypto.hash_(INITIAL_HASH + self.public)

    @property
    def private_raw(self) -> bytes:
        return self._priv_raw

    def __repr__(self) -> str:
        return f"StaticIdentity(public={crypto.encode_key(self.public)}, private=<redacted>)"


@dataclass(slots=True, repr=False)
class Handshake:
    """Per-peer handshake state (the whitepaper's Hi/Ci, ephemerals, indices, and replay protection)."""
    remote_static: bytes
    precomputed_static_static: bytes | None   # DH(S_priv, S_pub_peer); None if the peer's key is low-order
    preshared_key: bytes = ZERO_KEY
    state: State = State.ZEROED
    hash: bytes = b""
    chaining_key: bytes = b""
    local_ephemeral: X25519PrivateKey | None = None
    remote_ephemeral: bytes = b""
    local_index: int = 0
    remote_index: int = 0
    latest_timestamp: bytes = b"\x00" * 12
    last_initiation_consumption: float = float("-inf")
    # mac1 key / cookie key for messages we send to this peer
    mac1_key: bytes = b""
    cookie_key: bytes = b""

    def __post_init__(self) -> None:
        self.mac1_key = crypto.hash_(LABEL_MAC1 + self.remote_static)
        self.cookie_key = crypto.hash_(LABEL_COOKIE + self.remote_static)

    def clear(self) -> None:
        self.state = State.ZEROED
        self.hash = b""
        self.chaining_key = b""
        self.local_ephemeral = None
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0

    def __repr__(self) -> str:
        return f"Handshake(state={self.state.name}, local_index={self.local_index:#x}, keys=<redacted>)"


def new_handshake(identity: StaticIdentity, remote_static: bytes, preshared_key: bytes | None) -> Handshake:
    try:
        ss = crypto.dh(identity.private, remote_static)
        if ss == ZERO_KEY:
            ss = None
    except ValueError:
        ss = None
    return Handshake(remote_static=remote_static, precomputed_static_static=ss,
                     preshared_key=preshared_key or ZERO_KEY)


def _mix_hash(h: bytes, data: bytes) -> bytes:
    return crypto.hash_(h + data)


def create_initiation(identity: StaticIdentity, hs: Handshake, local_index: int, wall: float,
                      random32: bytes) -> Initiation | None:
    """Build an initiation (without MACs). Returns None if the peer's static key is unusable."""
    if hs.precomputed_static_static is None:
        return None
    ck = INITIAL_CHAIN_KEY
    h = _mix_hash(INITIAL_HASH, hs.remote_static)
    # e
    eph_priv, eph_pub = crypto.dh_generate(random32)
    ck = crypto.kdf1(ck, eph_pub)
    h = _mix_hash(h, eph_pub)
    # es
    try:
        ck, key = crypto.kdf2(ck, crypto.dh(eph_priv, hs.remote_static))
    except ValueError:
        return None
    # s
    encrypted_static = crypto.aead_encrypt(key, 0, identity.public, h)
    h = _mix_hash(h, encrypted_static)
    # ss
    ck, key = crypto.kdf2(ck, hs.precomputed_static_static)
    # {t}
    encrypted_timestamp = crypto.aead_encrypt(key, 0, tai64n.stamp(wall), h)
    h = _mix_hash(h, encrypted_timestamp)

    hs.state = State.INITIATION_CREATED
    hs.hash, hs.chaining_key, hs.local_ephemeral = h, ck, eph_priv
    hs.local_index = local_index
    return Initiation(local_index, eph_pub, encrypted_static, encrypted_timestamp)


def consume_initiation(identity: StaticIdentity, msg: Initiation, lookup: "callable", now: float):
    """Process an initiation whose mac1 (and mac2, if required) already checked out.

    `lookup(public_key)` returns the peer object (with a `.handshake`) or None. Returns the peer on success, else
    None. Rejects replays (timestamp not newer) and floods (faster than HANDSHAKE_INITIATION_RATE per peer).
    """
    ck = INITIAL_CHAIN_KEY
    h = identity.initial_hash
    # e
    eph = msg.unencrypted_ephemeral
    ck = crypto.kdf1(ck, eph)
    h = _mix_hash(h, eph)
    # es
    try:
        ck, key = crypto.kdf2(ck, crypto.dh(identity.private, eph))
    except ValueError:
        return None
    # s
    try:
        remote_static = crypto.aead_decrypt(key, 0, msg.encrypted_static, h)
    except crypto.InvalidTag:
        return None
    h = _mix_hash(h, msg.encrypted_static)
    peer = lookup(remote_static)
    if peer is None:
        return None
    hs: Handshake = peer.handshake
    if hs.precomputed_static_static is None:
        return None
    # ss
    ck, key = crypto.kdf2(ck, hs.precomputed_static_static)
    # {t}
    try:
        timestamp = crypto.aead_decrypt(key, 0, msg.encrypted_timestamp, h)
    except crypto.InvalidTag:
        return None
    h = _mix_hash(h, msg.encrypted_timestamp)
    # protect against replay and flood
    if not tai64n.is_after(timestamp, hs.latest_timestamp):
        return None
    if now - hs.last_initiation_consumption < HANDSHAKE_INITIATION_RATE:
        return None

    hs.state = State.INITIATION_CONSUMED
    hs.hash, hs.chaining_key = h, ck
    hs.remote_ephemeral = eph
    hs.remote_index = msg.sender
    hs.latest_timestamp = timestamp
    hs.last_initiation_consumption = now
    return peer


def create_response(hs: Handshake, local_index: int, random32: bytes) -> Response | None:
    if hs.state is not State.INITIATION_CONSUMED:
        return None
    h, ck = hs.hash, hs.chaining_key
    # e
    eph_priv, eph_pub = crypto.dh_generate(random32)
    ck = crypto.kdf1(ck, eph_pub)
    h = _mix_hash(h, eph_pub)
    try:
        # ee
        ck = crypto.kdf1(ck, crypto.dh(eph_priv, hs.remote_ephemeral))
        # se
        ck = crypto.kdf1(ck, crypto.dh(eph_priv, hs.remote_static))
    except ValueError:
        return None
    # psk
    ck, tau, key = crypto.kdf3(ck, hs.preshared_key)
    h = _mix_hash(h, tau)
    # {}
    encrypted_nothing = crypto.aead_encrypt(key, 0, b"", h)
    h = _mix_hash(h, encrypted_nothing)

    hs.state = State.RESPONSE_CREATED
    hs.hash, hs.chaining_key, hs.local_ephemeral = h, ck, eph_priv
    hs.local_index = local_index
    return Response(local_index, hs.remote_index, eph_pub, encrypted_nothing)


def consume_response(identity: StaticIdentity, hs: Handshake, msg: Response) -> bool:
    """Process a response to our outstanding initiation (receiver index already matched by the caller)."""
    if hs.state is not State.INITIATION_CREATED or hs.local_ephemeral is None:
        return False
    h, ck = hs.hash, hs.chaining_key
    eph = msg.unencrypted_ephemeral
    # e
    ck = crypto.kdf1(ck, eph)
    h = _mix_hash(h, eph)
    try:
        # ee
        ck = crypto.kdf1(ck, crypto.dh(hs.local_ephemeral, eph))
        # se
        ck = crypto.kdf1(ck, crypto.dh(identity.private, eph))
    except ValueError:
        return False
    # psk
    ck, tau, key = crypto.kdf3(ck, hs.preshared_key)
    h = _mix_hash(h, tau)
    # {}
    try:
        crypto.aead_decrypt(key, 0, msg.encrypted_nothing, h)
    except crypto.InvalidTag:
        return False
    h = _mix_hash(h, msg.encrypted_nothing)

    hs.state = State.RESPONSE_CONSUMED
    hs.hash, hs.chaining_key = h, ck
    hs.remote_index = msg.sender
    return True


@dataclass(slots=True, repr=False)
class SessionKeys:
    send_key: bytes
    recv_key: bytes
    is_initiator: bool
    local_index: int
    remote_index: int

    def __repr__(self) -> str:
        return f"SessionKeys(initiator={self.is_initiator}, local_index={self.local_index:#x}, keys=<redacted>)"


def begin_session(hs: Handshake) -> SessionKeys | None:
    """Derive transport keys (whitepaper 5.4.5) and wipe the handshake's ephemeral state."""
    if hs.state is State.RESPONSE_CONSUMED:
        first, second = crypto.kdf2(hs.chaining_key, b"")
        keys = SessionKeys(first, second, True, hs.local_index, hs.remote_index)
    elif hs.state is State.RESPONSE_CREATED:
        first, second = crypto.kdf2(hs.chaining_key, b"")
        keys = SessionKeys(second, first, False, hs.local_index, hs.remote_index)
    else:
        return None
    hs.clear()
    return keys
