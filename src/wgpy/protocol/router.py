"""The L3 forwarding strategy of the device (Mode = tun): cryptokey routing (whitepaper 2).

    send      each IP packet read from the TUN goes to the peer whose AllowedIPs hold its destination (none:
              dropped, "no_route"), grouped per peer so the per-peer work is done once per batch
    inbound   an opened plaintext must come from an address the peer that opened it is allowed to use
              ("dishonest_peer" otherwise, the kernel's check after decryption), and its header's length must
              fit; it is trimmed of its padding and written to the TUN. A plaintext whose first byte is wgpy's
              control marker is not IP: it goes to the control channel (ext/control.py, ext/pmtu.py).
"""

from __future__ import annotations

from typing import Iterable

from ..ext.control import CONTROL_MARKER
from .peer import Peer

__all__ = ["Router"]


class Router:
    def __init__(self, dev) -> None:
        self.dev = dev

    def send(self, packets: Iterable[bytes], now: float, out: list) -> None:
        """Route, then encrypt or stage, a batch of IP packets read from the TUN device."""
        dev = self.dev
        lookup = dev.allowed_ips.lookup_dst
        groups: dict[Peer, list[bytes]] = {}      # a plain dict: cheaper to make than a defaultdict for a
        for pkt in packets:                        # batch of one or two, as a ping or an ACK is
            peer = lookup(pkt)
            if peer is None:
                dev.drops["no_route"] += 1
                continue
            g = groups.get(peer)
            if g is None:
                groups[peer] = [pkt]
            else:
                g.append(pkt)
        for peer, pkts in groups.items():
            dev._send_to_peer(peer, pkts, now, out)

    def receive(self, datagrams: Iterable[tuple[bytes, object]], now: float, out_net: list, out_tun: list) -> None:
        """Device.receive_datagrams in L3: open the batch (Device.open_transport), then route what it opened: the
        inner source must be allowed for the peer whose key opened it (cryptokey routing: "dishonest peer"
        otherwise), the inner length must fit; wgpy control messages, which are no IP packets (ext/control.py),
        go to the control channel."""
        dev = self.dev
        opened = dev.open_transport(datagrams, now, out_net)
        if not opened:
            return
        src_lookup = dev.allowed_ips.lookup_src
        drops = dev.drops
        append = out_tun.append
        for peer, pt in opened:
            if src_lookup(pt) is not peer:
                if pt[0] == CONTROL_MARKER:       # wgpy's control channel (ext/control.py), not IP
                    dev.path_mtu.receive_control(peer, pt, len(pt), now, out_net)
                    continue
                drops["dishonest_peer"] += 1
                continue
            v = pt[0] >> 4
            if v == 4:
                length = (pt[2] << 8) | pt[3]
            elif v == 6:
                length = ((pt[4] << 8) | pt[5]) + 40
            else:
                drops["bad_inner_packet"] += 1
                continue
            n = len(pt)
            if length > n or length < 20:
                drops["bad_inner_packet"] += 1
                continue
            append(pt if length == n else pt[:length])
