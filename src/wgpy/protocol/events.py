"""Typed events out of the core, beside the datagrams and TUN packets its calls return (STYLE.md rule 3).

The core appends them to `Device.events`; the runtime loop reads the list after each pass and clears it. They
are rare (never one per data packet), so a list of small frozen objects costs nothing on the data path:
    TunPacket(packet)        a packet for the local stack, not from a peer: an ICMP "too big" the core answers as
                             a router would for a packet above its peer's path MTU
    TunPackets(packets)      packets from a rate-limited peer for the TUN/TAP, let out of its queue by a timer
                             (ext/ratelimit.py: one event per release, never per packet)
    Fragmentable(datagrams, path_mtu)  (message, endpoint) pairs larger than their peer's path MTU, to be sent
                             with outer fragmentation allowed, in fragments of at most `path_mtu` (0: unknown):
                             IPv6 packets above a peer's limit when that limit is below 1280 (at most one event
                             per peer and batch)
    PathMtuChanged()         some peer's path MTU estimate changed: in the automatic mode the interface MTU
                             follows (PATH_MTU_CHANGED, one instance, at most once in the list)
    FallbackSwitched(peer, text)  a peer moved to or back from its fallback stream endpoint; `text` says why
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TunPacket", "TunPackets", "Fragmentable", "PathMtuChanged", "PATH_MTU_CHANGED", "FallbackSwitched"]


@dataclass(frozen=True, slots=True)
class TunPacket:
    packet: bytes


@dataclass(frozen=True, slots=True)
class TunPackets:
    packets: list


@dataclass(frozen=True, slots=True)
class Fragmentable:
    datagrams: list
    path_mtu: int


@dataclass(frozen=True, slots=True)
class PathMtuChanged:
    pass


PATH_MTU_CHANGED = PathMtuChanged()


@dataclass(frozen=True, slots=True)
class FallbackSwitched:
    peer: object
    text: str
