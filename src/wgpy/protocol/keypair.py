"""Transport keypairs (whitepaper 5.4.5 / 6.1): one per completed handshake, each with its own send counter and
anti-replay window. A peer keeps up to three: `previous`, `current` and `next` (see peer.py for rotation)."""

from __future__ import annotations

from ..crypto import ChaCha20Poly1305
from .replay import ReplayWindow
from .transport import NATIVE, header_prefix

# a keypair's AEAD (per direction) and replay window: wgpy._crypto's when the native data path runs (its batch
# functions take only these), else cryptography's ChaCha20Poly1305 and replay.py's window; same interface
Aead = NATIVE.Aead if NATIVE is not None else ChaCha20Poly1305
Replay = NATIVE.Replay if NATIVE is not None else ReplayWindow


class Keypair:
    __slots__ = ("send", "recv", "send_counter", "replay", "created", "is_initiator", "local_index",
                 "remote_index", "peer", "header_prefix")

    def __init__(self, send_key: bytes, recv_key: bytes, is_initiator: bool, local_index: int,
                 remote_index: int, created: float, peer: object) -> None:
        self.send = Aead(send_key)
        self.recv = Aead(recv_key)
        self.send_counter = 0
        self.replay = Replay()
        self.created = created
        self.is_initiator = is_initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.peer = peer
        # the first 8 bytes of every transport message sent with this keypair
        self.header_prefix = header_prefix(remote_index)

    def __repr__(self) -> str:
        return (f"Keypair(local_index={self.local_index:#x}, initiator={self.is_initiator}, "
                f"sent={self.send_counter}, keys=<redacted>)")
