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
        """Route, then encrypt or stage, a batch of IP packets read from the TUN device.

        Consecutive packets to one destination (the segments of a TSO super-packet, a burst of one flow) are
        routed once: the lookup depends only on the IP version and the destination bytes, and a destination
        slice of full length also proves the packet long enough for the lookup to read it (a shorter one,
        equal only to a slice as short, has no route either way)."""
        dev = self.dev
        lookup = dev.allowed_ips.lookup_dst
        groups: dict[Peer, list[bytes]] = {}      # a plain dict: cheaper to make than a defaultdict for a
        last_v = -1                                # batch of one or two, as a ping or an ACK is
        last_dst = None
        g = None                                   # the group of the last destination (None: no route)
        no_route = 0
        for pkt in packets:
            if not pkt:
                no_route += 1
                continue
            v = pkt[0] >> 4
            dst = pkt[16:20] if v == 4 else pkt[24:40]
            if v == last_v and dst == last_dst:
                if g is None:
                    no_route += 1
                else:
                    g.append(pkt)
                continue
            last_v = v
            last_dst = dst
            peer = lookup(pkt)
            if peer is None:
                g = None
                no_route += 1
                continue
            g = groups.get(peer)
            if g is None:
                g = groups[peer] = [pkt]
            else:
                g.append(pkt)
        if no_route:
            dev.drops["no_route"] += no_route
        for peer, pkts in groups.items():
            if peer.limit is not None:            # a RateLimit (ext/ratelimit.py): what it lets go now
                pkts = dev.rate_limit.outbound(peer, pkts, now)
                if not pkts:
                    continue
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
        if dev.rate_limit.active:                 # some peer has a RateLimit (ext/ratelimit.py)
            opened = dev.rate_limit.inbound(opened, now)
        self.inbound(opened, now, out_net, out_tun)

    def inbound(self, opened: list[tuple[Peer, bytes]], now: float, out_net: list, out_tun: list) -> None:
        """The forwarding step of receive: (peer, plaintext) pairs that passed the transport checks -> out_tun."""
        dev = self.dev
        src_lookup = dev.allowed_ips.lookup_src
        drops = dev.drops
        append = out_tun.append
        # the source check of a packet that has the version, addresses and peer of the last one allowed is that
        # one's (a run of one flow): the slices of full length (v4: source and destination, 12:20; v6: 8:40)
        # also prove the packet long enough for the lookup; only a check that passed is remembered
        ok_peer = None
        ok_v = -1
        ok_addrs = None
        for peer, pt in opened:
            v = pt[0] >> 4                        # opened plaintexts are never empty
            addrs = pt[12:20] if v == 4 else pt[8:40]
            if peer is not ok_peer or v != ok_v or addrs != ok_addrs:
                if src_lookup(pt) is not peer:
                    if pt[0] == CONTROL_MARKER:   # wgpy's control channel (ext/control.py), not IP
                        dev.path_mtu.receive_control(peer, pt, len(pt), now, out_net)
                        continue
                    drops["dishonest_peer"] += 1
                    continue
                ok_peer = peer
                ok_v = v
                ok_addrs = addrs
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
