"""The native and the pure-Python data path side by side in one process, for the differential tests of
wgpy._crypto (tests/unit/test_native_crypto.py) and its fuzz script (scripts/fuzz-native.sh).

    pure()                   inside this context the core seals and opens with the pure-Python loops and new
                             keypairs get cryptography's AEAD and replay.py's window, whatever the import chose
    scenario(seed, ...)      two cores (a core_pair.Pair) exchange random batches, mangled on the wire
                             (reordered, replayed, corrupted, truncated, forged with a wrong key, counters past
                             REJECT_AFTER_MESSAGES, garbage, roaming sources), with MTU changes and time jumps
                             (rekeys, keypair rotation); returns the record of everything observable
Run scenario(seed) once natively and once inside pure(): the two records must be equal.
"""

from __future__ import annotations

import contextlib
import random
import struct

from wgpy.crypto import ChaCha20Poly1305
from wgpy.protocol import device as _device
from wgpy.protocol import keypair as _keypair
from wgpy.protocol import transport as _transport
from wgpy.protocol.replay import ReplayWindow

from .core_pair import A_IP4, A_IP6, B_IP4, B_IP6, Pair, ipv6, udp4

__all__ = ["pure", "scenario", "mangle"]


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
