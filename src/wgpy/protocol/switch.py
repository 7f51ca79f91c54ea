"""The L2 forwarding strategy of the device (Mode = tap): a learning switch whose ports are the local TAP (LOCAL)
and the peers; the plaintext of a data message is one Ethernet frame.

    send      learn source MAC -> LOCAL; destination known at a peer -> that peer; known to be local ->
              filtered; broadcast, multicast or unknown -> every peer (one encryption per peer)
    inbound   the source MAC must be unicast and, if the peer has a list of allowed MACs, on it; learn source ->
              peer; destination local, unknown or multi/broadcast -> the TAP; with `relay` on, destination known at
              another peer -> re-encrypted to it, and floods go to every other peer too. A frame from the all-zero
              MAC with wgpy's EtherType is a control frame (ext/control.py).
Allowed IPs play no part in L2. Frames are padded like packets (to 16 bytes, within the MTU); the receiver writes
them to the TAP with that padding (docs/architecture.md, "L2 mode").
"""

from __future__ import annotations

from typing import Iterable

from ..ext.control import L2_CONTROL_ETHERTYPE
from ..routing.mactable import LOCAL, MacTable
from .peer import Peer

__all__ = ["Switch"]

_ZERO_MAC = b"\x00" * 6
_ETH_HLEN = 14


class Switch:
    def __init__(self, dev) -> None:
        self.dev = dev
        self.macs = MacTable()
        self.relay = False                 # forward frames between peers (the hub of a star)


    def set_allowed_macs(self, peer: Peer, macs: Iterable[bytes] | None) -> None:
        """Restrict the source MACs accepted from `peer` (None or empty: any). Entries it taught the table
        that are no longer allowed are forgotten."""
        allowed = frozenset(macs) if macs else None
        peer.allowed_macs = allowed
        if allowed is not None and self.macs is not None:
            entries = self.macs.entries
            for mac in [m for m, e in entries.items() if e[0] is peer and m not in allowed]:
                del entries[mac]

    def send(self, frames: Iterable[bytes], now: float, out: list) -> None:
        """Switch a batch of Ethernet frames read from the TAP device to the peers, then encrypt or stage."""
        dev = self.dev
        macs = self.macs
        entries = macs.entries
        learn = macs.learn
        aging = macs.aging
        drops = dev.drops
        groups: dict[Peer, list[bytes]] = {}
        everyone: list[list[bytes]] | None = None
        for f in frames:
            if len(f) < _ETH_HLEN:
                drops["l2_short_frame"] += 1
                continue
            src = f[6:12]
            if f[6] & 1 or src == _ZERO_MAC:
                drops["l2_bad_src_mac"] += 1
                continue
            e = entries.get(src)
            if e is not None and e[0] is LOCAL:
                e[1] = now
            else:
                learn(src, LOCAL, now)
            if not f[0] & 1:
                e = entries.get(f[:6])
                if e is not None and now - e[1] < aging:
                    port = e[0]
                    if port is LOCAL:
                        drops["l2_filtered"] += 1      # both ends are on this side of the TAP
                        continue
                    g = groups.get(port)
                    if g is None:
                        groups[port] = [f]
                    else:
                        g.append(f)
                    continue
            # broadcast, multicast or unknown unicast: every peer gets a copy
            if everyone is None:
                everyone = []
                for peer in dev.peers.values():
                    g = groups.get(peer)
                    if g is None:
                        g = groups[peer] = []
                    everyone.append(g)
            for g in everyone:
                g.append(f)
        for peer, batch in groups.items():
            if batch:
                dev._send_to_peer(peer, batch, now, out)

    def inbound(self, opened: list[tuple[Peer, bytes]], now: float, out_net: list, out_tun: list) -> None:
        """L2 forwarding of opened frames: the source MAC must be unicast (and allowed, with AllowedMACs), it is
        learnt at the peer; local or unknown or multi/broadcast destinations go to the TAP; with relay on,
        frames for another peer (and floods) are re-encrypted to it. wgpy control frames go to the control
        channel."""
        dev = self.dev
        drops = dev.drops
        macs = self.macs
        entries = macs.entries
        learn = macs.learn
        aging = macs.aging
        relay = self.relay
        groups: dict[Peer, list[bytes]] | None = None
        for peer, pt in opened:
            if len(pt) < _ETH_HLEN:
                drops["l2_short_frame"] += 1
                continue
            smac = pt[6:12]
            if pt[6] & 1 or smac == _ZERO_MAC:
                if smac == _ZERO_MAC and pt[12:14] == L2_CONTROL_ETHERTYPE:   # a control frame (ext/control.py)
                    dev.path_mtu.receive_control(peer, pt[14:], len(pt), now, out_net)
                    continue
                drops["l2_bad_src_mac"] += 1
                continue
            allowed = peer.allowed_macs
            if allowed is not None and smac not in allowed:
                drops["l2_mac_not_allowed"] += 1
                continue
            e = entries.get(smac)
            if e is not None and e[0] is peer:
                e[1] = now
            else:
                learn(smac, peer, now)
            if not pt[0] & 1:
                e = entries.get(pt[:6])
                if e is not None and now - e[1] < aging:
                    port = e[0]
                    if port is LOCAL:
                        out_tun.append(pt)
                    elif port is peer or not relay:
                        drops["l2_filtered"] += 1      # not for this side: never sent back, relay off
                    else:
                        if groups is None:
                            groups = {}
                        g = groups.get(port)
                        if g is None:
                            groups[port] = [pt]
                        else:
                            g.append(pt)
                    continue
            # broadcast, multicast or unknown unicast: the TAP, and with relay every other peer
            out_tun.append(pt)
            if relay:
                if groups is None:
                    groups = {}
                for other in dev.peers.values():
                    if other is not peer:
                        g = groups.get(other)
                        if g is None:
                            groups[other] = [pt]
                        else:
                            g.append(pt)
        if groups:
            for port, batch in groups.items():
                if not port.removed:
                    dev._send_to_peer(port, batch, now, out_net)
