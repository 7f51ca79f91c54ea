"""The index table (whitepaper 5.4.2: "a randomly generated 32-bit sender index"): receiver index -> the
handshake under way or the session's keypair, and a peer's keypair slots as the kernel's noise.c rotates them.

    handshakes   index of our initiation or response in flight -> peer
    keypairs     index of a session -> Keypair (the data path looks up every transport message here)
Rules of this file: an index is unique over both tables and never 0; a keypair leaves the table when it leaves
its peer's slots (previous, current, next), so a message for a dropped session finds nothing.
"""

from __future__ import annotations

from typing import Callable

from . import noise
from .keypair import Keypair
from .peer import Peer

__all__ = ["IndexTable"]


class IndexTable:
    def __init__(self, rand: Callable[[int], bytes]) -> None:
        self._rand = rand
        self.keypairs: dict[int, Keypair] = {}
        self.handshakes: dict[int, Peer] = {}
        # called with `keypairs` after each new keypair, before anything could use its index: the I/O layer
        # keeps the kernel's filter of receiver indices current with it (io/udp.py filter_receivers)
        self.on_keypair: Callable[[dict[int, Keypair]], object] | None = None

    def new_index(self) -> int:
        while True:
            idx = int.from_bytes(self._rand(4), "little")
            if idx and idx not in self.keypairs and idx not in self.handshakes:
                return idx

    def drop_handshake(self, peer: Peer) -> None:
        idx = peer.handshake.local_index
        if idx and self.handshakes.get(idx) is peer:
            del self.handshakes[idx]

    def drop_keypair(self, kp: Keypair | None) -> None:
        if kp is not None and self.keypairs.get(kp.local_index) is kp:
            del self.keypairs[kp.local_index]

    def clear_keypairs(self, peer: Peer) -> None:
        for kp in (peer.previous, peer.current, peer.next):
            self.drop_keypair(kp)
        peer.previous = peer.current = peer.next = None

    def install_keypair(self, peer: Peer, keys: noise.SessionKeys, now: float) -> Keypair:
        """Add a new session's keypair with the rotation rules of the kernel's noise.c."""
        kp = Keypair(keys.send_key, keys.recv_key, keys.is_initiator, keys.local_index, keys.remote_index,
                     now, peer)
        self.handshakes.pop(keys.local_index, None)
        self.keypairs[keys.local_index] = kp
        if keys.is_initiator:
            # the initiator can use it at once; a pending `next` becomes `previous`
            if peer.next is not None:
                self.drop_keypair(peer.previous)
                self.drop_keypair(peer.current)
                peer.previous = peer.next
                peer.next = None
            else:
                self.drop_keypair(peer.previous)
                peer.previous = peer.current
            peer.current = kp
        else:
            # the responder waits for the initiator's first transport message before using it
            self.drop_keypair(peer.next)
            peer.next = kp
            self.drop_keypair(peer.previous)
            peer.previous = None
        if self.on_keypair is not None:
            self.on_keypair(self.keypairs)
        return kp
