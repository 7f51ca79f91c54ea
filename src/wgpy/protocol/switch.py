"""The L2 forwarding strategy of the device (Mode = tap): a learning switch whose ports are the local TAP (LOCAL)
and the peers; the plaintext of a data message is one Ethernet frame.

    send      learn source MAC -> LOCAL; destination known at a peer -> that peer; known to be local ->
              filtered; broadcast, multicast or unknown -> every peer (one encryption per peer)
    inbound   the source MAC must be unicast and, if the peer has a list of allowed MACs, on it; learn source ->
              peer (unless the address is in use on another port: sticky ownership, routing/mactable.py);
              destination local, unknown or multi/broadcast -> the TAP; with `relay` on, destination known at
              another peer -> re-encrypted to it, and floods go to every other peer too, within the peer's storm
              control budget. A frame from the all-zero MAC with wgpy's EtherType is a control frame
              (ext/control.py).
Storm control (relay on): per peer and kind of flooded frame (broadcast, multicast, unknown unicast) a token
bucket of L2_FLOOD_PER_SECOND, burst L2_FLOOD_BURST, kept on the peer (Peer.flood); a flooded frame beyond it is
dropped at ingress (neither the TAP nor the other peers get it) and counted (l2_storm_broadcast, ...). Without
relay a peer's flood goes to the TAP alone, as much as its unicast does: nothing is replicated, nothing limited.
Allowed IPs play no part in L2. Frames are padded like packets (to 16 bytes, within the MTU); the receiver writes
them to the TAP with that padding (docs/architecture.md, "L2 mode").
"""

from __future__ import annotations

from collections import defaultdict
from itertools import repeat
from typing import Iterable

from ..constants import L2_FLOOD_BURST, L2_FLOOD_PER_SECOND
from ..ext.control import L2_CONTROL_ETHERTYPE
from ..routing.mactable import LOCAL, MacTable
from .peer import Peer

__all__ = ["Switch", "STORM_DROPS"]

_ZERO_MAC = b"\x00" * 6
_BCAST = b"\xff" * 6
_ETH_HLEN = 14
BROADCAST, MULTICAST, UNKNOWN_UNICAST = 0, 1, 2          # the kinds of flooded frame, Peer.flood's indices
STORM_DROPS = ("l2_storm_broadcast", "l2_storm_multicast", "l2_storm_unknown_unicast")


def flood_allowed(peer: Peer, kind: int, now: float, rate: float, burst: float) -> bool:
    """Storm control: take one token of `kind` from `peer`'s buckets (refilled at `rate` per second up to
    `burst`, all three at once: Peer.flood = [broadcast, multicast, unknown unicast, when last filled]).
    False: the bucket is empty, the frame must not be flooded."""
    b = peer.flood
    if b is None:
        b = peer.flood = [burst, burst, burst, now]
    elapsed = now - b[3]
    if elapsed > 0:
        add = elapsed * rate
        b[0] = min(burst, b[0] + add)
        b[1] = min(burst, b[1] + add)
        b[2] = min(burst, b[2] + add)
        b[3] = now
    if b[kind] >= 1.0:
        b[kind] -= 1.0
        return True
    return False


class Switch:
    def __init__(self, dev) -> None:
        self.dev = dev
        self.macs = MacTable()
        self.relay = False                 # forward frames between peers (the hub of a star)
        self.flood_rate = L2_FLOOD_PER_SECOND      # storm control of a relay hub, per peer and kind
        self.flood_burst = L2_FLOOD_BURST


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
        """Switch a batch of Ethernet frames read from the TAP device (port LOCAL) to the peers."""
        self.forward(zip(repeat(LOCAL), frames), now, out, [])   # nothing goes back to the TAP it came from

    def receive(self, datagrams: Iterable[tuple[bytes, object]], now: float, out_net: list, out_tun: list) -> None:
        """Device.receive_datagrams in L2: open the batch (Device.open_transport), then switch what it opened."""
        dev = self.dev
        opened = dev.open_transport(datagrams, now, out_net)
        if opened:
            if dev.rate_limit.active:             # some peer has a RateLimit (ext/ratelimit.py)
                opened = dev.rate_limit.inbound(opened, now)
            self.forward(opened, now, out_net, out_tun)

    def inbound(self, opened: list[tuple[Peer, bytes]], now: float, out_net: list, out_tun: list) -> None:
        """Switch the frames opened from the peers (`opened`: (peer, frame) pairs) to the TAP and, with relay
        on, to other peers."""
        self.forward(opened, now, out_net, out_tun)

    def forward(self, items: Iterable[tuple[object, bytes]], now: float, out_net: list, out_tun: list) -> None:
        """The learning switch, for frames from any port: `items` are (ingress port, frame), the port LOCAL (the
        TAP) or a peer. Learn source -> ingress (a source in use on another port is not moved: the frame is
        dropped, "l2_mac_in_use"); a known destination gets the frame unless it is the ingress itself, or it is
        another peer and the frame came from a peer with relay off ("l2_filtered"); broadcast, multicast and
        unknown destinations are flooded to every port but the ingress (peers to peers only with relay on, within
        the ingress peer's storm control budget). Frames for peers are sealed per peer once the batch is
        switched."""
        dev = self.dev
        drops = dev.drops
        macs = self.macs
        entries = macs.entries
        learn = macs.learn
        aging = macs.aging
        relay = self.relay
        groups: defaultdict[Peer, list[bytes]] = defaultdict(list)
        for port_in, f in items:
            if len(f) < _ETH_HLEN:
                drops["l2_short_frame"] += 1
                continue
            from_tap = port_in is LOCAL
            smac = f[6:12]
            if f[6] & 1 or smac == _ZERO_MAC:
                if not from_tap and smac == _ZERO_MAC and f[12:14] == L2_CONTROL_ETHERTYPE:
                    dev.path_mtu.receive_control(port_in, f[14:], len(f), now, out_net)   # ext/control.py
                    continue
                drops["l2_bad_src_mac"] += 1
                continue
            allowed = None
            if not from_tap:
                allowed = port_in.allowed_macs
                if allowed is not None and smac not in allowed:
                    drops["l2_mac_not_allowed"] += 1
                    continue
            e = entries.get(smac)
            if e is not None and e[0] is port_in:
                e[1] = now
            elif not learn(smac, port_in, now, allowed is not None):
                drops["l2_mac_in_use"] += 1           # another port uses this address: not taken over
                continue
            if not f[0] & 1:
                e = entries.get(f[:6])
                if e is not None and now - e[1] < aging:
                    port = e[0]
                    if port is LOCAL:
                        if from_tap:
                            drops["l2_filtered"] += 1  # both ends are on this side of the TAP
                        else:
                            out_tun.append(f)
                    elif port is port_in or not (from_tap or relay):
                        drops["l2_filtered"] += 1      # never sent back where it came from; relay off
                    else:
                        groups[port].append(f)
                    continue
            # broadcast, multicast or unknown unicast
            if not from_tap:
                if relay:
                    kind = (BROADCAST if f[:6] == _BCAST else MULTICAST) if f[0] & 1 else UNKNOWN_UNICAST
                    if not flood_allowed(port_in, kind, now, self.flood_rate, self.flood_burst):
                        drops[STORM_DROPS[kind]] += 1
                        continue
                out_tun.append(f)
            if from_tap or relay:
                for other in dev.peers.values():
                    if other is not port_in:
                        groups[other].append(f)
        for port, batch in groups.items():
            if not port.removed:
                if port.limit is not None:        # a RateLimit (ext/ratelimit.py): what it lets go now
                    batch = dev.rate_limit.outbound(port, batch, now)
                    if not batch:
                        continue
                dev._send_to_peer(port, batch, now, out_net)
