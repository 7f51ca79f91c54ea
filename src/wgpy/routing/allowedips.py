"""Cryptokey routing table: longest-prefix match from IP address to peer.

Layout, per address family:

* ``_tables4`` / ``_tables6``: ``{prefix_len: {address_int >> (width - prefix_len): peer}}`` — one dict per prefix
  length present, keyed by the prefix bits only, so host bits never matter;
* ``_levels4`` / ``_levels6``: a tuple of ``(shift, dict)`` pairs for the lengths present, longest prefix first
  (``shift = width - prefix_len``).  It is rebuilt only when a prefix length appears or disappears, and is replaced
  as a whole, so a lookup running concurrently with a change always sees a consistent tuple.

A lookup converts the address to an int once and probes one dict per distinct prefix length present, returning at
the first hit, which is the longest matching prefix.  ``_by_peer`` maps each peer to its networks in insertion order (a dict used as an ordered set; `wg showconf` lists
allowed IPs in the order they were added, as wireguard-go does), which
makes ``entries`` and ``remove_by_peer`` proportional to that peer's prefixes.

Peers are arbitrary hashable objects compared by identity (``is``); ``None`` is not allowed as a peer since it means
"no match".
"""

from ipaddress import IPv4Network, IPv6Network, ip_network
from struct import Struct

__all__ = ["AllowedIPs"]

_NETWORK_TYPES = (IPv4Network, IPv6Network)

# Hot-path helpers bound once at module level (saves attribute look-ups per packet).  int.from_bytes defaults to
# big-endian since Python 3.11.  For packets, unpack_from reads the address in place: no slice copy, and it is
# markedly cheaper than slicing a memoryview.
_from_bytes = int.from_bytes
_unpack_u32 = Struct(">I").unpack_from
_unpack_2u64 = Struct(">QQ").unpack_from


def _normalise(network):
    """Return an IPv4Network/IPv6Network for ``network`` (host bits beyond the prefix are dropped)."""
    if isinstance(network, _NETWORK_TYPES):
        return network  # network objects always carry a masked network_address
    return ip_network(network, strict=False)


def _lookup_at(off4: int, off6: int, which: str, use: str):
    """A lookup of the address at byte `off4` (IPv4) / `off6` (IPv6) of a raw IP packet, written once for the
    destination and the source (per packet on the data path: the offsets are closure constants, not arguments)."""
    def lookup(self, packet):
        n = len(packet)
        if n < 20:
            return None
        v = packet[0] >> 4
        if v == 4:
            a = _unpack_u32(packet, off4)[0]
            levels = self._levels4
        elif v == 6 and n >= 40:
            hi, lo = _unpack_2u64(packet, off6)
            a = hi << 64 | lo
            levels = self._levels6
        else:
            return None
        for shift, table in levels:
            peer = table.get(a >> shift)
            if peer is not None:
                return peer
        return None
    lookup.__doc__ = f"Peer for the {which} address of a raw IP packet ({use}), or None."
    return lookup


class AllowedIPs:
    __slots__ = ("_tables4", "_tables6", "_levels4", "_levels6", "_by_peer")

    def __init__(self) -> None:
        self.clear()

    # ------------------------------------------------------------------ mutation

    def clear(self) -> None:
        self._tables4: dict[int, dict] = {}
        self._tables6: dict[int, dict] = {}
        self._levels4: tuple = ()
        self._levels6: tuple = ()
        self._by_peer: dict = {}

    def _rebuild(self, version: int) -> None:
        if version == 4:
            self._levels4 = tuple((32 - plen, t) for plen, t in sorted(self._tables4.items(), reverse=True))
        else:
            self._levels6 = tuple((128 - plen, t) for plen, t in sorted(self._tables6.items(), reverse=True))

    def _locate(self, net):
        """(tables, key) for a normalised network."""
        plen = net.prefixlen
        if net.version == 4:
            return self._tables4, int(net.network_address) >> (32 - plen)
        return self._tables6, int(net.network_address) >> (128 - plen)

    def insert(self, network, peer) -> None:
        """Route ``network`` to ``peer``; a previous owner of exactly this prefix loses it."""
        if peer is None:
            raise ValueError("peer must not be None")
        net = _normalise(network)
        plen = net.prefixlen
        tables, key = self._locate(net)
        tag = (net.version, plen, key)      # compact: an ip_network object costs ~450 bytes, this ~100
        table = tables.get(plen)
        if table is None:
            tables[plen] = {key: peer}
            self._rebuild(net.version)
        else:
            old = table.get(key)
            if old is peer:
                return
            table[key] = peer
            if old is not None:
                nets = self._by_peer[old]
                nets.pop(tag, None)
                if not nets:
                    del self._by_peer[old]
        nets = self._by_peer.get(peer)
        if nets is None:
            self._by_peer[peer] = {tag: None}
        else:
            nets[tag] = None

    def remove(self, network, peer) -> bool:
        """Remove ``network`` if (and only if) it is currently routed to ``peer``; return whether it was."""
        net = _normalise(network)
        plen = net.prefixlen
        tables, key = self._locate(net)
        table = tables.get(plen)
        if table is None or table.get(key) is not peer:
            return False
        del table[key]
        if not table:
            del tables[plen]
            self._rebuild(net.version)
        nets = self._by_peer[peer]
        nets.pop((net.version, plen, key), None)
        if not nets:
            del self._by_peer[peer]
        return True

    def remove_by_peer(self, peer) -> None:
        """Remove every prefix routed to ``peer``."""
        nets = self._by_peer.pop(peer, None)
        if not nets:
            return
        emptied = set()
        for version, plen, key in nets:
            tables = self._tables4 if version == 4 else self._tables6
            table = tables[plen]
            if table.get(key) is peer:
                del table[key]
                if not table:
                    del tables[plen]
                    emptied.add(version)
        for version in emptied:
            self._rebuild(version)

    # ------------------------------------------------------------------ queries

    def entries(self, peer) -> list:
        """The networks routed to ``peer``: IPv4 first, then by address, then by prefix length."""
        return [IPv4Network((key << (32 - plen), plen)) if version == 4 else IPv6Network((key << (128 - plen), plen))
                for version, plen, key in self._by_peer.get(peer, ())]

    def __len__(self) -> int:
        return sum(map(len, self._tables4.values())) + sum(map(len, self._tables6.values()))

    def lookup_v4(self, addr):
        """Peer for a 4-byte IPv4 address (length is not checked), or None."""
        a = _from_bytes(addr)
        for shift, table in self._levels4:
            peer = table.get(a >> shift)
            if peer is not None:
                return peer
        return None

    def lookup_v6(self, addr):
        """Peer for a 16-byte IPv6 address (length is not checked), or None."""
        a = _from_bytes(addr)
        for shift, table in self._levels6:
            peer = table.get(a >> shift)
            if peer is not None:
                return peer
        return None

    lookup_dst = _lookup_at(16, 24, "destination", "outgoing: which peer to send to")
    lookup_src = _lookup_at(12, 8, "source", "incoming: which peer may have sent it")

    def __repr__(self) -> str:
        return f"<AllowedIPs {len(self)} prefixes, {len(self._by_peer)} peers>"
