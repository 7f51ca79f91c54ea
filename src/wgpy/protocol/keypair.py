"""Transport keypairs (whitepaper 5.4.5 / 6.1): one per completed handshake, each with its own send counter and
anti-replay window. A peer keeps up to three: `previous`, `current` and `next` (see peer.py for rotation)."""

from __future__ import annotations

from ..crypto import ChaCha20Poly1305
from .replay import ReplayWindow
from .transport import header_prefix


class Keypair:
    __slots__ = ("send", "recv", "send_counter", "replay", "created", "is_initiator", "local_index",
                 "remote_index", "peer", "header_prefix")

    def __init__(self, send_key: bytes, recv_key: bytes, is_initiator: bool, local_index: int,
                 remote_index: int, created: float, peer: object) -> None:
        self.send = ChaCha20Poly1305(send_key)
        self.recv = ChaCha20Poly1305(recv_key)
        self.send_counter = 0
        self.replay = ReplayWindow()
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
