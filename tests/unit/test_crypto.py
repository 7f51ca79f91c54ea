"""Known-answer tests for wgpy.crypto (every vector names its source)."""

from __future__ import annotations

import base64
import hashlib
import hmac as std_hmac
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy import crypto
from wgpy.constants import CONSTRUCTION, IDENTIFIER

H = bytes.fromhex


# ---------------------------------------------------------------------------------------------------------------
# BLAKE2s: HASH and MAC
# ---------------------------------------------------------------------------------------------------------------

def test_blake2s_rfc7693_abc():
    # RFC 7693, Appendix B: BLAKE2s-256("abc")
    assert crypto.hash_(b"abc") == H("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")


def test_hash_is_32_bytes_of_unkeyed_blake2s():
    for n in (0, 1, 63, 64, 65, 1000):
        data = bytes(range(256)) * 4
        assert crypto.hash_(data[:n]) == hashlib.blake2s(data[:n]).digest()
        assert len(crypto.hash_(data[:n])) == 32


def test_noise_initial_chain_key_and_hash():
    # Ci = HASH(CONSTRUCTION), Hi = HASH(Ci || IDENTIFIER) (whitepaper 5.4.2); the same constants appear
    # precomputed in the kernel's noise.c / wireguard-go's noise-protocol.go (InitialChainKey / InitialHash).
    ck = crypto.hash_(CONSTRUCTION)
    assert ck == H("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
    assert crypto.hash_(ck + IDENTIFIER) == H("2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3")


def test_mac_is_keyed_blake2s_128():
    # Whitepaper 5.4 "Mac(key, input)": Keyed-Blake2s(key, input, 16), the keyed mode of RFC 7693.
    key = bytes(range(32))
    for data in (b"", b"abc", bytes(200)):
        m = crypto.mac(key, data)
        assert len(m) == 16
        assert m == hashlib.blake2s(data, key=key, digest_size=16).digest()
        # keyed 16-byte BLAKE2s is not a truncation of the unkeyed / 32-byte digest
        assert m != hashlib.blake2s(data, key=key).digest()[:16]


def test_mac_blake2s_keyed_known_answer():
    # BLAKE2 reference test vectors (blake2s-kat.txt, github.com/BLAKE2/BLAKE2/testvectors): key = 00..1f,
    # in = empty -> 48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49 (32-byte keyed digest).
    key = bytes(range(32))
    assert hashlib.blake2s(b"", key=key).hexdigest() == \
        "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"


# ---------------------------------------------------------------------------------------------------------------
# HMAC-BLAKE2s and the KDFs
# ---------------------------------------------------------------------------------------------------------------

def _hmac_from_scratch(key: bytes, msg: bytes) -> bytes:
    # RFC 2104 with B = 64 (BLAKE2s block size) and L = 32
    if len(key) > 64:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(64, b"\x00")
    ipad = bytes(k ^ 0x36 for k in key)
    opad = bytes(k ^ 0x5C for k in key)
    return hashlib.blake2s(opad + hashlib.blake2s(ipad + msg).digest()).digest()


@pytest.mark.parametrize("key,msg", [
    (b"", b""),
    (b"key", b"The quick brown fox jumps over the lazy dog"),
    (bytes(range(32)), bytes(range(100))),
    (bytes(range(64)), b"exactly one block of key"),
    (bytes(range(100)), b"key longer than one block is hashed first"),
])
def test_hmac_blake2s_independent(key, msg):
    # HMAC-BLAKE2s (whitepaper 5.4 "Hmac(key, input)"), checked against the stdlib hmac module and against an
    # RFC 2104 implementation written here from scratch.
    expected = std_hmac.new(key, msg, hashlib.blake2s).digest()
    assert _hmac_from_scratch(key, msg) == expected
    assert crypto.hmac(key, msg) == expected
    assert len(expected) == 32


def _kdf_ref(n: int, key: bytes, data: bytes) -> list[bytes]:
    # Whitepaper 5.4 "Kdf_n(key, input)": HKDF (RFC 5869) with HMAC-BLAKE2s, empty info:
    #   tau0 = Hmac(key, input); tau1 = Hmac(tau0, 0x1); tau_i = Hmac(tau0, tau_{i-1} || i)
    t0 = _hmac_from_scratch(key, data)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = _hmac_from_scratch(t0, prev + bytes([i]))
        out.append(prev)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_kdf_structure(seed):
    rng = random.Random(seed)
    key, data = rng.randbytes(32), rng.randbytes(rng.randrange(0, 100))
    r = _kdf_ref(3, key, data)
    assert crypto.kdf1(key, data) == r[0]
    assert crypto.kdf2(key, data) == (r[0], r[1])
    assert crypto.kdf3(key, data) == (r[0], r[1], r[2])
    # the KDFs are prefix-consistent and all outputs distinct
    assert len(set(r)) == 3


def test_kdf_matches_rfc5869_hkdf_expand():
    # Independent cross-check with cryptography's HKDF (RFC 5869) parametrised with BLAKE2s.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    key, data = bytes(range(32)), b"input keying material"
    okm = HKDF(algorithm=hashes.BLAKE2s(32), length=96, salt=key, info=b"").derive(data)
    assert crypto.kdf3(key, data) == (okm[:32], okm[32:64], okm[64:])


# ---------------------------------------------------------------------------------------------------------------
# ChaCha20-Poly1305
# ---------------------------------------------------------------------------------------------------------------

RFC8439_KEY = bytes(range(0x80, 0xA0))
RFC8439_NONCE = H("070000004041424344454647")
RFC8439_AAD = H("50515253c0c1c2c3c4c5c6c7")
RFC8439_PT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
              b"sunscreen would be it.")
RFC8439_CT = H(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116")
RFC8439_TAG = H("1ae10b594f09e26a7e902ecbd0600691")


def test_chacha20poly1305_rfc8439_2_8_2():
    # RFC 8439 section 2.8.2 "Example and Test Vector for AEAD_CHACHA20_POLY1305"
    aead = crypto.ChaCha20Poly1305(RFC8439_KEY)
    assert aead.encrypt(RFC8439_NONCE, RFC8439_PT, RFC8439_AAD) == RFC8439_CT + RFC8439_TAG
    assert aead.decrypt(RFC8439_NONCE, RFC8439_CT + RFC8439_TAG, RFC8439_AAD) == RFC8439_PT


def test_counter_nonce_layout():
    # Whitepaper 5.4 AEAD: nonce = 32 bits of zeros followed by the 64-bit little-endian counter
    assert crypto.counter_nonce(0) == bytes(12)
    assert crypto.counter_nonce(1) == bytes(4) + b"\x01" + bytes(7)
    assert crypto.counter_nonce(0x0807060504030201) == H("000000000102030405060708")
    assert crypto.counter_nonce(2**64 - 1) == bytes(4) + b"\xff" * 8


@pytest.mark.parametrize("counter", [0, 1, 255, 2**32, 2**60, 2**64 - 1])
def test_aead_encrypt_uses_counter_nonce(counter):
    key, pt, ad = bytes(range(32)), b"payload" * 5, b"associated"
    ct = crypto.aead_encrypt(key, counter, pt, ad)
    assert len(ct) == len(pt) + 16
    assert ct == ChaCha20Poly1305(key).encrypt(crypto.counter_nonce(counter), pt, ad)
    assert crypto.aead_decrypt(key, counter, ct, ad) == pt


def test_aead_rejects_tampering():
    key = bytes(range(32))
    ct = crypto.aead_encrypt(key, 7, b"secret", b"ad")
    with pytest.raises(crypto.InvalidTag):
        crypto.aead_decrypt(key, 8, ct, b"ad")             # wrong counter
    with pytest.raises(crypto.InvalidTag):
        crypto.aead_decrypt(key, 7, ct, b"AD")             # wrong associated data
    with pytest.raises(crypto.InvalidTag):
        crypto.aead_decrypt(bytes(32), 7, ct, b"ad")       # wrong key
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(crypto.InvalidTag):
            crypto.aead_decrypt(key, 7, bytes(bad), b"ad")


def test_aead_empty_plaintext_is_just_a_tag():
    # AEAD(k, 0, e, h) is 16 bytes: the "encrypted nothing" of the response and a keepalive's payload
    ct = crypto.aead_encrypt(bytes(32), 0, b"", b"h")
    assert len(ct) == 16
    assert crypto.aead_decrypt(bytes(32), 0, ct, b"h") == b""


# ---------------------------------------------------------------------------------------------------------------
# HChaCha20 / XChaCha20-Poly1305
# ---------------------------------------------------------------------------------------------------------------

def test_hchacha20_xchacha_draft_2_2_1():
    # draft-irtf-cfrg-xchacha-03 section 2.2.1 "Test Vector for the HChaCha20 Block Function"
    key = bytes(range(32))
    nonce = H("000000090000004a0000000031415927")
    assert crypto.hchacha20(key, nonce) == H("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")


def test_xaead_structure():
    # draft-irtf-cfrg-xchacha section 2.3: subkey = HChaCha20(key, nonce[:16]);
    # ChaCha20-Poly1305(subkey, 0x00000000 || nonce[16:24])
    key, nonce = bytes(range(32)), bytes(range(100, 124))
    pt, ad = b"cookie-cookie-16", b"mac1" * 4
    sub = crypto.hchacha20(key, nonce[:16])
    expected = ChaCha20Poly1305(sub).encrypt(bytes(4) + nonce[16:], pt, ad)
    assert crypto.xaead_encrypt(key, nonce, pt, ad) == expected


def test_xaead_roundtrip_and_tamper_detection():
    rng = random.Random(7)
    for _ in range(8):
        key, nonce = rng.randbytes(32), rng.randbytes(24)
        pt, ad = rng.randbytes(rng.randrange(0, 64)), rng.randbytes(16)
        ct = crypto.xaead_encrypt(key, nonce, pt, ad)
        assert len(ct) == len(pt) + 16
        assert crypto.xaead_decrypt(key, nonce, ct, ad) == pt
        # flipping any byte of the ciphertext, any byte of the nonce, the ad or the key is detected
        for i in range(len(ct)):
            bad = bytearray(ct)
            bad[i] ^= 0x80
            with pytest.raises(crypto.InvalidTag):
                crypto.xaead_decrypt(key, nonce, bytes(bad), ad)
        for i in (0, 15, 16, 23):   # both the HChaCha20 part and the ChaCha20 part of the nonce matter
            bad = bytearray(nonce)
            bad[i] ^= 1
            with pytest.raises(crypto.InvalidTag):
                crypto.xaead_decrypt(key, bytes(bad), ct, ad)
        with pytest.raises(crypto.InvalidTag):
            crypto.xaead_decrypt(key, nonce, ct, ad + b"x")
        with pytest.raises(crypto.InvalidTag):
            crypto.xaead_decrypt(bytes(a ^ 1 for a in key), nonce, ct, ad)


# ---------------------------------------------------------------------------------------------------------------
# X25519
# ---------------------------------------------------------------------------------------------------------------

ALICE_PRIV = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIV = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUB = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_rfc7748_6_1():
    # RFC 7748 section 6.1 (Curve25519 Diffie-Hellman example)
    assert crypto.public_from_private(ALICE_PRIV) == ALICE_PUB
    assert crypto.public_from_private(BOB_PRIV) == BOB_PUB
    assert crypto.dh(crypto.private_key(ALICE_PRIV), BOB_PUB) == SHARED
    assert crypto.dh(crypto.private_key(BOB_PRIV), ALICE_PUB) == SHARED


def test_dh_generate_from_random_bytes():
    priv, pub = crypto.dh_generate(ALICE_PRIV)
    assert isinstance(priv, X25519PrivateKey)
    assert pub == ALICE_PUB
    assert crypto.dh(priv, BOB_PUB) == SHARED


def test_clamp_does_not_change_the_public_key():
    # X25519 clamps internally (RFC 7748 section 5), so clamp() only normalises the printed key
    raw = bytes(range(200, 232))
    c = crypto.clamp(raw)
    assert c[0] & 7 == 0 and c[31] & 0x80 == 0 and c[31] & 0x40
    assert crypto.public_from_private(c) == crypto.public_from_private(raw)
    assert crypto.clamp(c) == c


def test_dh_low_order_point_raises():
    # The all-zero u-coordinate is a low-order point: the shared secret would be all zeros (RFC 7748 section 6.1
    # "check ... all-zero value"); crypto.dh documents ValueError for it.
    with pytest.raises(ValueError):
        crypto.dh(crypto.private_key(ALICE_PRIV), bytes(32))


# ---------------------------------------------------------------------------------------------------------------
# Key encoding
# ---------------------------------------------------------------------------------------------------------------

def test_key_base64_roundtrip():
    rng = random.Random(3)
    for _ in range(20):
        raw = rng.randbytes(32)
        text = crypto.encode_key(raw)
        assert len(text) == 44 and text.endswith("=")
        assert text == base64.b64encode(raw).decode()
        assert crypto.decode_key(text) == raw
        assert crypto.decode_key("  " + text + "\n") == raw   # surrounding whitespace is tolerated


def test_key_known_encoding():
    # RFC 7748 Alice's public key in the `wg pubkey` base64 form
    assert crypto.encode_key(ALICE_PUB) == "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
    assert crypto.decode_key("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=") == ALICE_PUB


@pytest.mark.parametrize("text", [
    "",
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",       # 43 characters, no '='
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmoA",      # 44 characters, no '='
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo==",     # 45 characters
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqqb!mo=",      # invalid character
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqqb mo=",      # inner space
    "A" * 42 + "==",                                      # valid base64 but 31 bytes
    "=" * 44,
    crypto.encode_key(bytes(33))[:44],
    "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=",      # URL-safe alphabet is not accepted
])
def test_key_decode_errors(text):
    with pytest.raises(crypto.KeyError_) as ei:
        crypto.decode_key(text, "PublicKey")
    assert "PublicKey" in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_key_decode_rejects_noncanonical_base64():
    # "AAAA...AB=" decodes to 32 zero bytes with leftover bits 01; wireguard-tools' encoding.c refuses it.
    with pytest.raises(crypto.KeyError_):
        crypto.decode_key("A" * 42 + "B=")
