"""Cryptographic primitives of the WireGuard whitepaper, section 5.4 ("Protocol Messages" / "Notation").

    HASH(input)           BLAKE2s, 32 bytes
    MAC(key, input)       keyed BLAKE2s, 16 bytes
    HMAC(key, input)      HMAC-BLAKE2s, 32 bytes
    KDFn(key, input)      HKDF with HMAC-BLAKE2s, n outputs of 32 bytes
    AEAD(key, ctr, p, a)  ChaCha20-Poly1305, nonce = 32 zero bits || 64-bit little-endian counter
    XAEAD(key, n, p, a)   XChaCha20-Poly1305 (cookie replies only)
    DH / DH_GENERATE      X25519

Rules of this file: pure functions over bytes; randomness comes in as an argument; nothing here logs.
`cryptography` provides ChaCha20-Poly1305 and X25519; `hashlib` provides BLAKE2s. XChaCha20-Poly1305 is not in
`cryptography`, so it is built from HChaCha20 (derived from one raw ChaCha20 block) and ChaCha20-Poly1305,
as draft-irtf-cfrg-xchacha specifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac as _hmac
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.exceptions import InvalidTag

__all__ = [
    "InvalidTag", "hash_", "mac", "hmac", "kdf1", "kdf2", "kdf3", "aead_encrypt", "aead_decrypt",
    "xaead_encrypt", "xaead_decrypt", "hchacha20", "dh", "dh_generate", "public_from_private",
    "KeyError_", "decode_key", "encode_key", "ChaCha20Poly1305", "counter_nonce",
]

_blake2s = hashlib.blake2s
_ZERO4 = b"\x00" * 4
_Q = struct.Struct("<Q")


def hash_(data: bytes) -> bytes:
    return _blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    return _blake2s(data, key=key, digest_size=16).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    return _hmac.new(key, data, _blake2s).digest()


def kdf1(key: bytes, data: bytes) -> bytes:
    t0 = hmac(key, data)
    return hmac(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    t2 = hmac(t0, t1 + b"\x02")
    return t1, t2


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    t2 = hmac(t0, t1 + b"\x02")
    t3 = hmac(t0, t2 + b"\x03")
    return t1, t2, t3


def counter_nonce(counter: int) -> bytes:
    return _ZERO4 + _Q.pack(counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(counter_nonce(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    """Raises InvalidTag when authentication fails."""
    return ChaCha20Poly1305(key).decrypt(counter_nonce(counter), ciphertext, ad)


_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_ZERO_BLOCK = b"\x00" * 64


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, nonce) from draft-irtf-cfrg-xchacha section 2.2.

    One ChaCha20 block with state words 12..15 set to the nonce gives keystream = rounds(state) + state.
    HChaCha20 is words 0..3 and 12..15 of rounds(state), so the known input words are subtracted back out.
    """
    block = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(_ZERO_BLOCK)
    out = struct.unpack("<16I", block)
    n = struct.unpack("<4I", nonce16)
    words = [(out[i] - _SIGMA[i]) & 0xFFFFFFFF for i in range(4)]
    words += [(out[12 + i] - n[i]) & 0xFFFFFFFF for i in range(4)]
    return struct.pack("<8I", *words)


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(_ZERO4 + nonce24[16:], plaintext, ad)


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).decrypt(_ZERO4 + nonce24[16:], ciphertext, ad)


def dh_generate(random32: bytes) -> tuple[X25519PrivateKey, bytes]:
    """An X25519 key pair from 32 random bytes (clamping is done by X25519 itself)."""
    priv = X25519PrivateKey.from_private_bytes(random32)
    return priv, priv.public_key().public_bytes_raw()


def private_key(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def dh(priv: X25519PrivateKey, pub: bytes) -> bytes:
    """X25519; raises ValueError for a low-order public key (all-zero shared secret)."""
    return priv.exchange(X25519PublicKey.from_public_bytes(pub))


def public_from_private(raw: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()


def clamp(raw: bytes) -> bytes:
    """Curve25519 clamping, as `wg genkey` applies it to the key it prints."""
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


class KeyError_(ValueError):
    """A key that is not 32 bytes of base64 (or hex, on the UAPI)."""


def decode_key(text: str, what: str = "key") -> bytes:
    """Decode a base64 WireGuard key (44 characters, ending in '='). Raises KeyError_ naming `what`."""
    s = text.strip()
    if len(s) != 44 or s[-1] != "=":
        raise KeyError_(f"{what}: not a valid base64 key (expected 44 characters ending in '=')")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_(f"{what}: not a valid base64 key") from None
    if len(raw) != 32 or base64.b64encode(raw).decode("ascii") != s:
        raise KeyError_(f"{what}: not a valid base64 key (non-canonical encoding)")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
