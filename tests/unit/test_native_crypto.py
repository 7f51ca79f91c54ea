"""The native crypto of the data path (wgpy._crypto, src/native/crypto.c) against RFC 8439 and against the
pure-Python reference: cryptography's ChaCha20Poly1305, protocol/replay.py, transport.seal_batch_py and
Device.open_transport_py must give identical results, drop for drop.

Skipped when the extension is not built (or WGPY_NATIVE=0), except test_ci_builds_the_extension: under CI=true
the extension must have built, so a broken build cannot hide behind the skips.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import struct
import sys
import threading

import pytest
from hypothesis import given, settings, strategies as st

from wgpy import crypto
from wgpy.constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW
from wgpy.crypto import ChaCha20Poly1305, InvalidTag
from wgpy.protocol import device, keypair, transport
from wgpy.protocol.replay import ReplayWindow
from wgpy_testkit import datapath

C = transport.NATIVE
needs_native = pytest.mark.skipif(C is None, reason="wgpy._crypto not in use (not built, or WGPY_NATIVE=0): "
                                                    "build it with `python setup.py build_ext --inplace`")
H = bytes.fromhex
R = REJECT_AFTER_MESSAGES


def test_ci_builds_the_extension():
    """In CI the native data path must build: fail loudly instead of skipping everything below."""
    if os.environ.get("CI") != "true":
        pytest.skip("not in CI (CI=true makes a missing wgpy._crypto a failure)")
    mod = importlib.import_module("wgpy._crypto")         # raises if the build failed
    assert {"Aead", "Replay", "seal_batch", "open_run"} <= set(dir(mod))


def test_the_core_binds_one_path_at_import():
    if C is None:
        assert transport.seal_batch is transport.seal_batch_py
        assert device.Device.open_transport is device.Device.open_transport_py
        assert keypair.Aead is ChaCha20Poly1305 and keypair.Replay is ReplayWindow
    else:
        assert transport.seal_batch is C.seal_batch and device.seal_batch is C.seal_batch
        assert device.Device.open_transport is device.Device.open_transport_native
        assert keypair.Aead is C.Aead and keypair.Replay is C.Replay


# ---------------------------------------------------------------------------------------------------------------
# Known answers: RFC 8439 section 2.8.2 and appendix A.5
# ---------------------------------------------------------------------------------------------------------------

KAT_2_8_2 = dict(
    key=bytes(range(0x80, 0xA0)), nonce=H("070000004041424344454647"), ad=H("50515253c0c1c2c3c4c5c6c7"),
    pt=b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
       b"sunscreen would be it.",
    ct=H("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b"
         "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
         "3ff4def08e4b7a9de576d26586cec64b6116"),
    tag=H("1ae10b594f09e26a7e902ecbd0600691"))

KAT_A_5 = dict(
    key=H("1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0"), nonce=H("000000000102030405060708"),
    ad=H("f33388860000000000004e91"),
    pt=b"Internet-Drafts are draft documents valid for a maximum of six months and may be updated, replaced, or "
       b"obsoleted by other documents at any time. It is inappropriate to use Internet-Drafts as reference "
       b"material or to cite them other than as /\xe2\x80\x9cwork in progress./\xe2\x80\x9d",
    ct=H("64a0861575861af460f062c79be643bd5e805cfd345cf389f108670ac76c8cb24c6cfc18755d43eea09ee94e382d26b0"
         "bdb7b73c321b0100d4f03b7f355894cf332f830e710b97ce98c8a84abd0b948114ad176e008d33bd60f982b1ff37c855"
         "9797a06ef4f0ef61c186324e2b3506383606907b6a7c02b0f9f6157b53c867e4b9166c767b804d46a59b5216cde7a4e9"
         "9040c5a40433225ee282a1b0a06c523eaf4534d7f83fa1155b0047718cbc546a0d072b04b3564eea1b422273f548271a"
         "0bb2316053fa76991955ebd63159434ecebb4e466dae5a1073a6727627097a1049e617d91d361094fa68f0ff77987130"
         "305beaba2eda04df997b714d6c6f2c29a6ad5cb4022b02709b"),
    tag=H("eead9d67890cbb22392336fea1851f38"))


@needs_native
@pytest.mark.parametrize("v", [KAT_2_8_2, KAT_A_5], ids=["rfc8439-2.8.2", "rfc8439-A.5"])
def test_known_answers(v):
    aead = C.Aead(v["key"])
    assert aead.encrypt(v["nonce"], v["pt"], v["ad"]) == v["ct"] + v["tag"]
    assert aead.decrypt(v["nonce"], v["ct"] + v["tag"], v["ad"]) == v["pt"]
    assert ChaCha20Poly1305(v["key"]).decrypt(v["nonce"], v["ct"] + v["tag"], v["ad"]) == v["pt"]   # the vector
    for i in (0, len(v["ct"]) - 1, len(v["ct"]), len(v["ct"]) + 15):       # a bit flipped: ciphertext or tag
        bad = bytearray(v["ct"] + v["tag"])
        bad[i] ^= 0x80
        with pytest.raises(InvalidTag):
            aead.decrypt(v["nonce"], bytes(bad), v["ad"])
    with pytest.raises(InvalidTag):
        aead.decrypt(v["nonce"], v["ct"] + v["tag"], None)                 # associated data missing


@needs_native
def test_aead_argument_checks_match_cryptography():
    a = C.Aead(bytes(32))
    for bad_key in (b"", bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            C.Aead(bad_key)
    for bad_nonce in (b"", bytes(8), bytes(11), bytes(13)):
        with pytest.raises(ValueError):
            a.encrypt(bad_nonce, b"x", None)
        with pytest.raises(ValueError):
            a.decrypt(bad_nonce, bytes(16), None)
    for short in (b"", bytes(15)):
        with pytest.raises(InvalidTag):
            a.decrypt(bytes(12), short, None)
    with pytest.raises(TypeError):
        a.encrypt(bytes(12), "text", None)
    with pytest.raises(TypeError):
        a.encrypt(bytes(12), b"x")
    assert a.decrypt(bytes(12), a.encrypt(bytes(12), b"", None), None) == b""
    assert "Aead" in repr(a) and bytes(32).hex() not in repr(a)


@needs_native
@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=12, max_size=12),
       data=st.binary(max_size=2000), ad=st.one_of(st.none(), st.binary(max_size=64)),
       as_bytearray=st.booleans())
def test_aead_matches_cryptography(key, nonce, data, ad, as_bytearray):
    ours, ref = C.Aead(key), ChaCha20Poly1305(key)
    arg = bytearray(data) if as_bytearray else data
    ct = ours.encrypt(nonce, arg, ad)
    assert ct == ref.encrypt(nonce, data, ad)
    assert ours.decrypt(nonce, bytearray(ct) if as_bytearray else ct, ad) == data
    if ct:
        bad = bytearray(ct)
        bad[len(ct) // 2] ^= 1
        with pytest.raises(InvalidTag):
            ours.decrypt(nonce, bytes(bad), ad)


# ---------------------------------------------------------------------------------------------------------------
# Replay window
# ---------------------------------------------------------------------------------------------------------------

@needs_native
def test_replay_table_of_test_replay():
    from test_replay import CASES                        # tests/unit/test_replay.py's table, on the native window
    w = C.Replay()
    for i, (counter, expected) in enumerate(CASES, 1):
        assert w.check_and_update(counter) is expected, f"case {i}"


@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_replay_matches_replay_py(seed):
    rng = random.Random(seed)
    ours, ref = C.Replay(), ReplayWindow()
    for _ in range(20000):
        top = ref.top
        r = rng.random()
        if r < 0.3:
            c = top + rng.randrange(0, 4)
        elif r < 0.55:
            c = top - REPLAY_WINDOW + rng.choice((-65, -64, -1, 0, 1, 63, 64, 65))
        elif r < 0.75:
            c = top - rng.randrange(REPLAY_WINDOW + 2)
        elif r < 0.97:
            c = top + rng.choice((64, 65, 127 * 64, 128 * 64, 129 * 64, REPLAY_WINDOW, 10**6, rng.randrange(2**20)))
        else:
            c = rng.choice((R - 2, R - 1, R, R + 1, 2**63, 2**64 - 1, 2**64, 2**70))
        c = max(c, 0)
        assert ours.check_and_update(c) is ref.check_and_update(c), (seed, c)
        assert ours.top == ref.top
        if ref.top > R - 4 * REPLAY_WINDOW:                  # at the end of the counters: start again
            assert list(ours.ring) == ref.ring
            ours, ref = C.Replay(), ReplayWindow()
    assert list(ours.ring) == ref.ring


@needs_native
def test_replay_refuses_what_is_no_counter():
    w = C.Replay()
    with pytest.raises(OverflowError):
        w.check_and_update(-1)
    with pytest.raises(TypeError):
        w.check_and_update(1.0)
    assert w.check_and_update(2**200) is False and w.top == 0 and len(w.ring) == REPLAY_WINDOW // 64 + 1


# ---------------------------------------------------------------------------------------------------------------
# seal_batch against seal_batch_py
# ---------------------------------------------------------------------------------------------------------------

class Kp:
    """The three attributes seal_batch reads and writes."""

    def __init__(self, aead, counter: int) -> None:
        self.send = aead
        self.header_prefix = transport.header_prefix(0x1234ABCD)
        self.send_counter = counter


def seal_both(key: bytes, pkts: list, mtu: int, counter: int):
    ep = ("192.0.2.1", 51820)
    results = []
    for fn, aead in ((C.seal_batch, C.Aead(key)), (transport.seal_batch_py, ChaCha20Poly1305(key))):
        kp, out = Kp(aead, counter), [("earlier", None)]
        ret = fn(kp, pkts, mtu, ep, out)
        results.append((ret, out, kp.send_counter))
    return results


@needs_native
@settings(max_examples=150, deadline=None)
@given(key=st.binary(min_size=32, max_size=32),
       sizes=st.lists(st.one_of(st.integers(0, 1500), st.sampled_from([0, 15, 16, 17, 1279, 1280, 1281, 1420])),
                      max_size=80),
       mtu=st.one_of(st.integers(-20, 1600), st.sampled_from([0, 1, 16, 1280, 1420, 2**70, -2**70])),
       counter=st.one_of(st.integers(0, 2**20), st.integers(2**64 - 200, 2**64 - 82)),
       seed=st.integers(0, 2**32), kinds=st.sampled_from(["bytes", "bytearray", "mixed"]))
def test_seal_batch_matches_python(key, sizes, mtu, counter, seed, kinds):
    rng = random.Random(seed)
    pkts = [rng.randbytes(n) for n in sizes]
    if kinds != "bytes":
        pkts = [bytearray(p) if kinds == "bytearray" or rng.random() < 0.5 else p for p in pkts]
    (ret_n, out_n, ctr_n), (ret_p, out_p, ctr_p) = seal_both(key, pkts, mtu, counter)
    assert out_n == out_p and ret_n == ret_p and ctr_n == ctr_p
    big = ret_n[1]
    assert big is None or all(any(b is p for p in pkts) for b in big)      # the caller's own objects, in order


@needs_native
def test_seal_batch_messages_open_and_count():
    key = os.urandom(32)
    pkts = [b"", b"a" * 15, b"b" * 16, b"c" * 1419, b"d" * 1421]
    (nbytes, big), out, ctr = seal_both(key, pkts, 1420, 7)[0]
    assert big == [b"d" * 1421] and ctr == 7 + 4
    msgs = [m for m, _ in out[1:]]
    assert nbytes == sum(map(len, msgs))
    assert [len(m) for m in msgs] == [32, 32 + 16, 32 + 16, 32 + 1420]         # padded to 16 within the MTU
    for i, m in enumerate(msgs):
        assert m[:8] == transport.header_prefix(0x1234ABCD) and struct.unpack_from("<Q", m, 8)[0] == 7 + i
        pt = ChaCha20Poly1305(key).decrypt(b"\0" * 4 + m[8:16], m[16:], None)
        assert pt == pkts[i] + bytes(len(pt) - len(pkts[i]))


@needs_native
def test_seal_batch_refuses_bad_arguments_without_using_counters():
    kp = Kp(C.Aead(bytes(32)), 5)
    with pytest.raises(TypeError):
        C.seal_batch(kp, [b"x", "not bytes"], 1420, None, [])
    assert kp.send_counter == 5
    with pytest.raises(TypeError):
        C.seal_batch(Kp(ChaCha20Poly1305(bytes(32)), 0), [b"x"], 1420, None, [])   # not a native Aead
    with pytest.raises(TypeError):
        C.seal_batch(kp, [b"x"], 1420, None, ())                                   # out is not a list
    short = Kp(C.Aead(bytes(32)), 0)
    short.header_prefix = b"\x04\0\0\0"
    with pytest.raises(TypeError):
        C.seal_batch(short, [b"x"], 1420, None, [])
    end = Kp(C.Aead(bytes(32)), 2**64 - 2)
    out: list = []
    with pytest.raises(OverflowError):
        C.seal_batch(end, [b"x", b"y"], 1420, None, out)                   # 2**64 - 1 would be the next counter
    assert end.send_counter == 2**64 - 2 and out == []


@needs_native
def test_seal_batch_stores_the_counter_when_a_later_chunk_fails():
    """Counters used by an earlier chunk of a batch are kept even when a later packet raises."""
    kp = Kp(C.Aead(bytes(32)), 100)
    out: list = []
    pkts = [b"p"] * (C.RUN + 3) + [object()]
    with pytest.raises(TypeError):
        C.seal_batch(kp, pkts, 1420, None, out)
    assert kp.send_counter == 100 + C.RUN and len(out) == C.RUN


# ---------------------------------------------------------------------------------------------------------------
# open_run against the pure loop's per-message checks (datapath.open_run_py)
# ---------------------------------------------------------------------------------------------------------------
@needs_native
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 150), start_counter=st.sampled_from([0, 5000, R - 70]))
def test_open_run_matches_python(seed, n, start_counter):
    rng = random.Random(seed)
    key = rng.randbytes(32)
    kp = Kp(C.Aead(key), start_counter)
    out: list = []
    C.seal_batch(kp, [rng.randbytes(rng.choice((0, 1, 16, 100, 1420, rng.randrange(1500)))) for _ in range(n)],
                 1500, None, out)
    msgs = datapath.mangle(rng, [m for m, _ in out], [])
    if not msgs or msgs[0][:4] != b"\x04\0\0\0" or len(msgs[0]) < 32:
        msgs.insert(0, out[0][0])
    dgrams = [(bytearray(m) if rng.random() < 0.2 else m, ("src", i)) for i, m in enumerate(msgs)]
    peer = object()
    ours, ref = (C.Aead(key), C.Replay()), (ChaCha20Poly1305(key), ReplayWindow())
    for c in rng.sample(range(start_counter, start_counter + n + 5), min(n // 3, 10)):   # some history
        assert ours[1].check_and_update(c) is ref[1].check_and_update(c)
    start = 0
    while start < len(dgrams):
        if dgrams[start][0][:4] != b"\x04\0\0\0" or len(dgrams[start][0]) < 32:
            start += 1
            continue
        opened: list = []
        got = C.open_run(ours[0], ours[1], dgrams, start, peer, opened)
        want, want_opened = datapath.open_run_py(ref[0], ref[1], dgrams, start, peer, C.RUN)
        assert got == want and opened == want_opened
        assert ours[1].top == ref[1].top and list(ours[1].ring) == ref[1].ring
        start = got[0]


@needs_native
def test_open_run_checks_its_arguments():
    a, w = C.Aead(bytes(32)), C.Replay()
    kp = Kp(a, 0)
    out: list = []
    C.seal_batch(kp, [b"x"], 1420, None, out)
    good = [(out[0][0], "src")]
    for dgrams, start in ((good, 1), (good, -1), ([], 0)):
        with pytest.raises(IndexError):
            C.open_run(a, w, dgrams, start, None, [])
    for bad in ([(out[0][0][:31], "s")], [(b"\x01" + out[0][0][1:], "s")], [{out[0][0]: "s"}], [(out[0][0],)],
                [(None, "s")], [(out[0][0], "s", 3)]):
        with pytest.raises(ValueError):
            C.open_run(a, w, bad, 0, None, [])
    with pytest.raises(TypeError):
        C.open_run(ChaCha20Poly1305(bytes(32)), w, good, 0, None, [])
    with pytest.raises(TypeError):
        C.open_run(a, ReplayWindow(), good, 0, None, [])
    with pytest.raises(TypeError):
        C.open_run(a, w, tuple(good), 0, None, [])
    opened: list = []
    assert w.top == 0 and C.open_run(a, w, good, 0, "peer", opened) == (1, 1, 1, 48, 0, 0, 0, 0, 0)
    assert opened == [("peer", b"x" + bytes(15))]
    assert C.open_run(a, C.Replay(), [[out[0][0], "s"]], 0, "peer", []) == (1, 1, 1, 48, 0, 0, 0, 0, 0)


@needs_native
def test_a_duplicate_in_one_batch_is_a_replay_and_an_old_one_too():
    a = C.Aead(bytes(32))
    kp = Kp(a, 0)
    out: list = []
    C.seal_batch(kp, [b"one", b"two"], 1420, None, out)
    m0, m1 = out[0][0], out[1][0]
    w = C.Replay()
    opened: list = []
    assert C.open_run(a, w, [(m1, 1), (m0, 2), (m1, 3), (m0, 4)], 0, "p", opened)[:9] == (4, 2, 2, 96, 0, 1, 0, 2, 0)
    assert C.open_run(a, w, [(m0, 5)], 0, "p", [])[7] == 1


# ---------------------------------------------------------------------------------------------------------------
# Device level: the same random batches through both data paths
# ---------------------------------------------------------------------------------------------------------------

@needs_native
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("l2", [False, True], ids=["l3", "l2"])
def test_device_pairs_native_and_pure_agree(seed, l2):
    native = datapath.scenario(seed, l2=l2)
    with datapath.pure():
        assert device.Device.open_transport is device.Device.open_transport_py
        pure = datapath.scenario(seed, l2=l2)
    assert device.Device.open_transport is device.Device.open_transport_native
    assert len(native) == len(pure)
    for i, (x, y) in enumerate(zip(native, pure)):
        assert x == y, f"step {i}"


@needs_native
def test_the_scenario_exercises_every_drop():
    seen: set = set()
    for seed in range(8):
        for rec in datapath.scenario(seed):
            if isinstance(rec, tuple):
                for name_drops in rec[3]:
                    if len(name_drops) == 3 and isinstance(name_drops[1], list):
                        seen.update(k for k, _ in name_drops[1])
    assert {"invalid_tag", "replay", "expired_keypair", "unknown_index"} <= seen, seen


# ---------------------------------------------------------------------------------------------------------------
# Threads and lifetimes
# ---------------------------------------------------------------------------------------------------------------

@needs_native
def test_one_keypair_from_several_threads():
    """The batch functions run without the GIL; a context is still used by one thread at a time, and the
    counters of a batch are taken from the keypair before the GIL goes: no two threads get the same one."""
    key = os.urandom(32)
    a, ref = C.Aead(key), ChaCha20Poly1305(key)
    kp = Kp(a, 0)
    errors: list = []
    counters: list = []

    def work(t: int) -> None:
        try:
            for _ in range(150):
                out: list = []
                C.seal_batch(kp, [bytes([t]) * 1400] * 8, 1420, None, out)
                for m, _ in out:
                    counters.append(struct.unpack_from("<Q", m, 8)[0])
                    assert ref.decrypt(b"\0" * 4 + m[8:16], m[16:], None)[:1400] == bytes([t]) * 1400
                    assert a.decrypt(b"\0" * 4 + m[8:16], m[16:], None)[:1400] == bytes([t]) * 1400
        except Exception as e:          # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(counters) == list(range(4 * 150 * 8)) and kp.send_counter == 4 * 150 * 8


@needs_native
def test_seal_batch_stores_the_counters_before_encrypting():
    seen: list = []
    out: list = []

    class Watched(Kp):
        send_counter = property(lambda self: self._c, lambda self, v: seen.append((v, len(out))) or
                                setattr(self, "_c", v))

    kp = Watched(C.Aead(bytes(32)), 10)
    C.seal_batch(kp, [b"x"] * (C.RUN + 5) + [bytes(2000)], 1420, None, out)
    assert seen == [(10, 0), (10 + C.RUN, 0), (10 + C.RUN + 5, C.RUN)]     # each chunk's before its messages


@needs_native
def test_no_reference_leaks():
    a, key = C.Aead(bytes(32)), bytes(32)
    pkts = [bytes(100), bytearray(1500), bytes(2000)]
    kp = Kp(a, 0)

    def round_trip() -> None:
        out: list = []
        C.seal_batch(kp, pkts, 1420, "ep", out)
        dgrams = [(m, "src") for m, _ in out] + [(out[0][0], "src")]
        C.open_run(a, C.Replay(), dgrams, 0, "peer", [])
        with pytest.raises(InvalidTag):
            C.Aead(key).decrypt(bytes(12), bytes(16), None)

    for _ in range(200):
        round_trip()
    gc.collect()
    before = sys.getrefcount(pkts[0]), sys.getrefcount(pkts[1]), len(gc.get_objects())
    for _ in range(500):
        round_trip()
    gc.collect()
    after = sys.getrefcount(pkts[0]), sys.getrefcount(pkts[1]), len(gc.get_objects())
    assert after[:2] == before[:2] and after[2] - before[2] < 50


@needs_native
def test_fuzz_briefly():
    """scripts/fuzz-native.sh runs this for longer, under AddressSanitizer."""
    stats = datapath.fuzz(1.0, seed=3)
    assert stats["seal"] and stats["open"] and stats["refused"]


@needs_native
def test_a_pinned_bytearray_cannot_be_resized_meanwhile():
    ba = bytearray(64)
    kp = Kp(C.Aead(bytes(32)), 0)
    C.seal_batch(kp, [ba], 1420, None, [])
    ba.extend(b"x")                                      # the buffer was released: resizable again
    assert len(ba) == 65
    assert crypto.ChaCha20Poly1305 is ChaCha20Poly1305
