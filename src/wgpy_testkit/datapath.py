"""The native and the pure-Python data path side by side in one process, for the differential tests of
wgpy._crypto (tests/unit/test_native_crypto.py) and its fuzz script (scripts/fuzz-native.sh).

    pure()                   inside this context the core seals and opens with the pure-Python loops and new
                             keypairs get cryptography's AEAD and replay.py's window, whatever the import chose
    scenario(seed, ...)      two cores (a core_pair.Pair) exchange random batches, mangled on the wire
                             (reordered, replayed, corrupted, truncated, forged with a wrong key, counters past
                             REJECT_AFTER_MESSAGES, garbage, roaming sources), with MTU changes and time jumps
                             (rekeys, keypair rotation); returns the record of everything observable
    open_run_py(...)         what Device.open_transport_py does with one run: the reference of _crypto.open_run
    fuzz(seconds, seed)      hostile arguments of every kind through the native functions, compared with the
                             pure-Python ones where both accept them (scripts/fuzz-native.sh runs it under ASan)
Run scenario(seed) once natively and once inside pure(): the two records must be equal.
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import struct
import time

from wgpy.constants import REJECT_AFTER_MESSAGES
from wgpy.crypto import ChaCha20Poly1305, InvalidTag
from wgpy.protocol import device as _device
from wgpy.protocol import keypair as _keypair
from wgpy.protocol import transport as _transport
from wgpy.protocol.replay import ReplayWindow

from .core_pair import A_IP4, A_IP6, B_IP4, B_IP6, Pair, ipv6, udp4

__all__ = ["pure", "scenario", "mangle", "open_run_py", "fuzz"]


@contextlib.contextmanager
def pure():
    """The pure-Python data path for what is made and run inside (new keypairs; seal and open loops)."""
    dev = _device.Device
    saved = (_keypair.Aead, _keypair.Replay, _device.seal_batch, dev.open_transport)
    _keypair.Aead, _keypair.Replay = ChaCha20Poly1305, ReplayWindow
    _device.seal_batch = _transport.seal_batch_py
    dev.open_transport = dev.open_transport_py
    try:
        yield
    finally:
        _keypair.Aead, _keypair.Replay, _device.seal_batch, dev.open_transport = saved


def _packets(rng: random.Random, src4: str, dst4: str, src6: str, dst6: str, l2: bool) -> list:
    """A batch of 0..40 packets of 0..1500 bytes: mostly routable IPv4/IPv6 UDP, some garbage, some as
    bytearrays (L3 only: frames from the TAP are bytes); L2: Ethernet frames, unicast or broadcast."""
    pkts: list = []
    for _ in range(rng.choice((0, 1, 1, 2, 5, 17, 40))):
        n = rng.choice((0, 1, 15, 16, 17, 28, 40, 100, 1279, 1280, 1392, 1420, 1421, 1500, rng.randrange(1501)))
        r = rng.random()
        if l2:
            mac = rng.choice((b"\x02\x00\x00\x00\x00\x0b", b"\xff" * 6))
            pkt = mac + b"\x02\x00\x00\x00\x00\x0a" + b"\x08\x00" + rng.randbytes(max(n - 14, 0))
        elif r < 0.6 and n >= 28:
            pkt = udp4(src4, dst4, rng.randbytes(n - 28))
        elif r < 0.85 and n >= 48:
            pkt = ipv6(src6, dst6, rng.randbytes(n - 40))
        else:
            pkt = rng.randbytes(n)
        pkts.append(bytearray(pkt) if not l2 and rng.random() < 0.2 else pkt)   # TUN splits give bytearrays
    return pkts


def mangle(rng: random.Random, msgs: list[bytes], history: list[bytes]) -> list[bytes]:
    """What an attacker or a bad network makes of a batch of transport messages."""
    out = list(msgs)
    for _ in range(rng.choice((0, 0, 1, 3, 8))):
        if not out:
            break
        r = rng.random()
        i = rng.randrange(len(out))
        m = bytearray(out[i])
        if not m and 0.4 <= r < 0.65:                 # an empty datagram (inserted garbage): no bit, no cut
            continue
        if r < 0.15:                                   # swap two: out of order
            j = rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
        elif r < 0.3:                                  # a duplicate, later in the batch
            out.insert(rng.randrange(i, len(out) + 1), out[i])
        elif r < 0.4 and history:                      # a replay of an older message
            out.insert(rng.randrange(len(out) + 1), rng.choice(history))
        elif r < 0.55:                                 # a flipped bit anywhere
            k = rng.randrange(len(m))
            m[k] ^= 1 << rng.randrange(8)
            out[i] = bytes(m)
        elif r < 0.65:                                 # truncated (below 32 bytes too)
            out[i] = bytes(m[:rng.randrange(len(m))])
        elif r < 0.75 and len(m) >= 32:                # forged under another key, same header
            out[i] = bytes(m[:16]) + ChaCha20Poly1305(rng.randbytes(32)).encrypt(
                b"\0" * 4 + bytes(m[8:16]), rng.randbytes(len(m) - 32), None)
        elif r < 0.82 and len(m) >= 32:                # a counter at or past REJECT_AFTER_MESSAGES
            m[8:16] = struct.pack("<Q", rng.choice((2**64 - 2**13 - 1, 2**64 - 1)))
            out[i] = bytes(m)
        elif r < 0.9:                                  # garbage, some looking like a transport header
            g = rng.randbytes(rng.randrange(60))
            out.insert(i, (b"\x04\0\0\0" + g) if rng.random() < 0.5 else g)
        else:                                          # dropped
            del out[i]
    return out


def _state(p: Pair) -> list:
    """Everything the data path writes, per device and peer (keypairs by their indices, not identities)."""
    st = []
    for name, dev in p.dev.items():
        st.append((name, sorted(dev.drops.items()), dev.staged_total))
        for peer in dev.peers.values():
            kps = []
            for kp in (peer.previous, peer.current, peer.next):
                kps.append(None if kp is None else (kp.local_index, kp.remote_index, kp.send_counter,
                                                    kp.replay.top, tuple(kp.replay.ring)))
            st.append((peer.endpoint, peer.rx_bytes, peer.tx_bytes, len(peer.staged), kps))
    return st


def scenario(seed: int, steps: int = 40, *, l2: bool = False) -> list:
    """Drive a Pair through `steps` random batches; returns the record of what was sent, received, written to
    the TUN, dropped and stored. Deterministic for a seed, and the same for both data paths."""
    rng = random.Random(seed)
    p = Pair(seed=seed, l2=l2)
    p.handshake(0.0)
    now = 0.0
    history: list[bytes] = []
    record: list = [_state(p)]
    for _ in range(steps):
        r = rng.random()
        if r < 0.12:
            now += rng.choice((0.5, 5.0, 11.0, 60.0, 125.0, 185.0))
            p.advance(now)                             # keepalives, rekeys, expiry: keypairs rotate
        elif r < 0.2:
            p.dev[rng.choice("AB")].mtu = rng.choice((1420, 1280, 576, 100, 60))
        sender, receiver = rng.choice((("A", "B"), ("B", "A")))
        src4, dst4, src6, dst6 = (A_IP4, B_IP4, A_IP6, B_IP6) if sender == "A" else (B_IP4, A_IP4, B_IP6, A_IP6)
        pkts = _packets(rng, src4, dst4, src6, dst6, l2)
        out: list = []
        p.dev[sender].send_packets(pkts, now, out)
        sent = [bytes(d) for d, _ep in out]
        batch = mangle(rng, sent, history)
        src = p.addr[sender]
        dgrams = [(m, src if rng.random() < 0.9 else ("198.51.100.7", 4242)) for m in batch]
        if rng.random() < 0.3:
            dgrams = [(bytearray(m), s) for m, s in dgrams]
        net: list = []
        tun: list = []
        p.dev[receiver].receive_datagrams(dgrams, now, net, tun)
        record.append((sent, [bytes(d) for d, _ in net], [bytes(t) for t in tun], _state(p)))
        history.extend(sent)
        del history[:-200]
        p.deliver(receiver, net, now)                  # the answers (handshake responses, staged data) flow
        record.append([bytes(t) for t in p.tun["A"][-5:]] + [bytes(t) for t in p.tun["B"][-5:]])
    return record


def open_run_py(aead, window, dgrams: list, start: int, peer: object, run: int) -> tuple:
    """open_transport_py's checks on the run of one receiver index from `start` (at most `run` messages), in
    the shape of _crypto.open_run's result; appends (peer, plaintext) to the list returned last."""
    idx = dgrams[start][0][4:8]
    opened: list = []
    ok = nbytes = bad = replayed = expired = 0
    first = last = -1
    i = start
    while i < len(dgrams) and i - start < run:
        item = dgrams[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], (bytes, bytearray,
                                                                                              memoryview)):
            break
        data = item[0]
        if isinstance(data, memoryview) and not data.contiguous:
            break
        if data[:4] != b"\x04\0\0\0" or len(data) < 32 or data[4:8] != idx:
            break
        ctr = struct.unpack_from("<Q", data, 8)[0]
        i += 1
        if ctr >= REJECT_AFTER_MESSAGES:
            expired += 1
            continue
        try:
            pt = aead.decrypt(b"\0" * 4 + bytes(data[8:16]), bytes(data[16:]), None)
        except InvalidTag:
            bad += 1
            continue
        if not window.check_and_update(ctr):
            replayed += 1
            continue
        ok += 1
        nbytes += len(data)
        first = i - 1 if first < 0 else first
        last = i - 1
        if pt:
            opened.append((peer, pt))
    return (i, ok, len(opened), nbytes, first, last, bad, replayed, expired), opened


class _Kp:
    __slots__ = ("send", "header_prefix", "send_counter")

    def __init__(self, aead, prefix: bytes, counter: int) -> None:
        self.send, self.header_prefix, self.send_counter = aead, prefix, counter


def _exact(data: bytes) -> memoryview:
    """`data` in an allocation of exactly its size (a ctypes array; bytes and bytearray keep spare bytes past
    the end, which would hide a read one byte too far from AddressSanitizer)."""
    return memoryview((ctypes.c_char * len(data)).from_buffer_copy(data)).cast("B")


def _hostile_buffer(rng: random.Random, data: bytes):
    r = rng.random()
    if r < 0.4:
        return data
    if r < 0.55:
        return bytearray(data)
    if r < 0.8 and data:
        return _exact(data)
    if r < 0.9:
        return memoryview(b"\xee" + data + b"\xee")[1:1 + len(data)]          # a slice of a larger buffer
    return rng.choice((None, "text", 7, memoryview(bytes(2 * len(data) + 2))[::2], [data]))


def fuzz(seconds: float, seed: int = 1) -> dict:
    """Random and hostile calls of Aead, Replay, seal_batch and open_run for `seconds`: no crash, no error
    past the ones documented, and the results of the pure-Python functions wherever the arguments are
    valid. Returns counts of what ran."""
    from wgpy.protocol.transport import NATIVE as C, seal_batch_py
    assert C is not None, "wgpy._crypto is not in use"
    rng = random.Random(seed)
    stats = dict(seal=0, open=0, aead=0, replay=0, refused=0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        key = rng.randbytes(32)
        ours, ref = C.Aead(key), ChaCha20Poly1305(key)
        # seal_batch
        sizes = [rng.choice((0, 1, 15, 16, 17, 1419, 1420, 1421, rng.randrange(70000))) for _ in range(rng.randrange(150))]
        raw = [rng.randbytes(n) for n in sizes]
        pkts = [_hostile_buffer(rng, p) if rng.random() < 0.3 else p for p in raw]
        mtu = rng.choice((-(2**70), -1, 0, 1, 15, 16, 1420, 65535, 2**70, rng.randrange(-100, 70000)))
        counter = rng.choice((0, rng.randrange(2**40), 2**64 - rng.randrange(1, 300)))
        prefix = struct.pack("<II", 4, rng.randrange(2**32))
        kn, kr = _Kp(ours, prefix, counter), _Kp(ref, prefix, counter)
        out_n: list = []
        out_r: list = []
        try:
            got = C.seal_batch(kn, pkts, mtu, "ep", out_n)
        except (TypeError, OverflowError, BufferError):
            stats["refused"] += 1
            assert kn.send_counter >= counter and len(out_n) <= kn.send_counter - counter
        else:
            if all(isinstance(p, (bytes, bytearray)) for p in pkts):     # what the pure loop takes
                assert got == seal_batch_py(kr, pkts, mtu, "ep", out_r) and out_n == out_r
                assert kn.send_counter == kr.send_counter
            else:                                                      # memoryviews: check each message
                small = [bytes(p) for p in pkts if len(p) <= mtu]
                assert len(out_n) == len(small) == kn.send_counter - counter
                for i, ((m, _), p) in enumerate(zip(out_n, small)):
                    assert m[:8] == prefix and struct.unpack_from("<Q", m, 8)[0] == counter + i
                    pt = ref.decrypt(b"\0" * 4 + m[8:16], m[16:], None)
                    assert pt[:len(p)] == p and not any(pt[len(p):]) and (len(pt) % 16 == 0 or len(pt) == mtu
                                                                          or len(pt) == len(p))
        stats["seal"] += 1
        # open_run on the sealed messages, mangled, with hostile items among them
        msgs = mangle(rng, [m for m, _ in out_n], [])
        dgrams: list = [(_hostile_buffer(rng, m) if rng.random() < 0.5 else m, i) for i, m in enumerate(msgs)]
        for _ in range(rng.choice((0, 0, 1, 3))):
            dgrams.insert(rng.randrange(len(dgrams) + 1), rng.choice((None, (b"x",), [b"\x04\0\0\0" * 8, 1],
                                                                        (rng.randbytes(40), 1, 2))))
        wn, wr = C.Replay(), ReplayWindow()
        for start in range(-1, len(dgrams) + 1):
            opened: list = []
            try:
                res = C.open_run(ours, wn, dgrams, start, "peer", opened)
            except (IndexError, ValueError, TypeError):
                stats["refused"] += 1
                continue
            want, want_opened = open_run_py(ref, wr, dgrams, start, "peer", C.RUN)
            assert res == want and opened == want_opened, (res, want)
            stats["open"] += 1
        assert wn.top == wr.top and list(wn.ring) == wr.ring
        # single-message AEAD calls with odd arguments
        for _ in range(20):
            nonce = rng.randbytes(rng.choice((12, 12, 12, 0, 11, 13)))
            data = rng.randbytes(rng.choice((0, 1, 15, 16, 17, 200, rng.randrange(5000))))
            ad = rng.choice((None, b"", rng.randbytes(rng.randrange(100))))
            for fn, rfn in ((ours.encrypt, ref.encrypt), (ours.decrypt, ref.decrypt)):
                arg = _hostile_buffer(rng, data) if rng.random() < 0.5 else data
                try:
                    a = fn(nonce, arg, ad)
                except Exception as e:           # noqa: BLE001 - compared with what cryptography raises
                    a = type(e)
                try:
                    b = rfn(nonce, arg, ad)
                except Exception as e:           # noqa: BLE001
                    b = type(e)
                assert a == b or {a, b} <= {TypeError, ValueError, BufferError}, (a, b)
                stats["aead"] += 1
        # the replay window
        top = 0
        for _ in range(200):
            c = max(0, rng.choice((top + rng.randrange(-9000, 9000), rng.randrange(2**64 + 5), top + 1)))
            assert wn.check_and_update(c) is wr.check_and_update(c)
            top = wr.top
            stats["replay"] += 1
    return stats
