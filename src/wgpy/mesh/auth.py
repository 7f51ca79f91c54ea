"""How a node proves to the server that it is the node: with its WireGuard key, never a bearer secret.

The server has a static X25519 key pair of its own (its public half is given to each node at join). A node's
request carries its public key, the Unix time, a random nonce and

    proof = HMAC-SHA256(K, "wgpy-mesh-v1" | purpose | time | nonce),   K = BLAKE2s-256(X25519(node, server))

which the server recomputes from its private key and the node's public key (the same Diffie-Hellman value, as
WireGuard's static-static term). Only the holder of the node's private key (which never leaves the node) can
make it; a copy of the server's database holds public keys only. The server accepts a time within
MAX_SKEW seconds of its own and each nonce once in that window, so a proof seen on the wire cannot be
replayed; `purpose` ("stream", "leave", ...) keeps a proof for one call from serving another. A join token only
lets a key be registered once; from then on the key is the credential, so a stolen token cannot impersonate a
node that already joined.

Pure: the caller gives the time and the nonce.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..crypto import decode_key, encode_key

__all__ = ["MAX_SKEW", "node_key_of", "proof", "Verifier"]

MAX_SKEW = 120            # seconds between the node's clock and the server's
_LABEL = b"wgpy-mesh-v1"


def _key(private: bytes, public: bytes) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))
    return hashlib.blake2s(shared, digest_size=32, person=b"wgpymesh").digest()


def proof(private: bytes, peer_public: bytes, purpose: str, when: int, nonce: bytes) -> str:
    """The proof (hex) a node with `private` makes for the server `peer_public`, or the server checks it with its
    own private key and the node's public key."""
    msg = _LABEL + b"|" + purpose.encode() + b"|" + str(int(when)).encode() + b"|" + nonce
    return hmac.new(_key(private, peer_public), msg, hashlib.sha256).hexdigest()


def node_key_of(text: str) -> bytes:
    """A node's public key from a request (base64); ValueError if it is not one."""
    key = decode_key(text)
    return key


class Verifier:
    """The server side: checks proofs, remembers the nonces of the skew window (bounded: at most `max_nonces`;
    beyond, the oldest are forgotten early, which only shortens the replay window of very old proofs)."""

    def __init__(self, server_private: bytes, max_nonces: int = 100_000) -> None:
        self.private = server_private
        self.public_b64 = encode_key(X25519PrivateKey.from_private_bytes(server_private).public_key().public_bytes_raw())
        self.seen: dict[bytes, float] = {}
        self.max_nonces = max_nonces

    def check(self, node_public: bytes, purpose: str, when: int, nonce: bytes, given: str, now: float) -> str | None:
        """None when the proof is good (and the nonce is now used), else why not, in words."""
        if abs(now - when) > MAX_SKEW:
            return f"request time is {int(when - now)} s off the server's clock (at most {MAX_SKEW} s)"
        if not 16 <= len(nonce) <= 64:
            return "bad nonce"
        want = proof(self.private, node_public, purpose, when, nonce)
        if not hmac.compare_digest(want, given):
            return "the proof does not match the node's key"
        key = node_public + nonce
        if key in self.seen:
            return "replayed request"
        self._forget(now)
        self.seen[key] = now
        return None

    def _forget(self, now: float) -> None:
        if len(self.seen) < self.max_nonces:
            return
        horizon = now - 2 * MAX_SKEW
        self.seen = {k: t for k, t in self.seen.items() if t > horizon}
        while len(self.seen) >= self.max_nonces:
            self.seen.pop(next(iter(self.seen)))
