"""Packet capture in a namespace (tcpdump) and a decoder for the UDP packets of a classic pcap file."""

from __future__ import annotations

import ipaddress
import signal
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .procs import Proc


@dataclass(frozen=True)
class UdpPacket:
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes

    @property
    def wg_type(self) -> int | None:
        """WireGuard message type (1 initiation, 2 response, 3 cookie, 4 data) or None."""
        return self.payload[0] if self.payload else None


def parse_pcap(data: bytes) -> list[UdpPacket]:
    """Decode the UDP packets of a (possibly still growing) classic pcap file; ignores a truncated tail."""
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file (pcapng is not supported)")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    packets = []
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < incl:
            break
        pkt = _decode_frame(linktype, frame)
        if pkt is not None:
            packets.append(pkt)
    return packets


def _decode_frame(linktype: int, frame: bytes) -> UdpPacket | None:
    if linktype == 1:  # Ethernet
        ethertype, l3 = struct.unpack("!H", frame[12:14])[0], frame[14:]
        while ethertype in (0x8100, 0x88A8) and len(l3) >= 4:  # VLAN tags
            ethertype, l3 = struct.unpack("!H", l3[2:4])[0], l3[4:]
    elif linktype == 113:  # Linux cooked v1
        ethertype, l3 = struct.unpack("!H", frame[14:16])[0], frame[16:]
    elif linktype == 276:  # Linux cooked v2
        ethertype, l3 = struct.unpack("!H", frame[0:2])[0], frame[20:]
    elif linktype in (101, 12):  # raw IP
        ethertype = 0x0800 if frame and frame[0] >> 4 == 4 else 0x86DD
        l3 = frame
    else:
        return None
    if ethertype == 0x0800 and len(l3) >= 20:
        ihl = (l3[0] & 0x0F) * 4
        if l3[9] != 17:
            return None
        src, dst = str(ipaddress.IPv4Address(l3[12:16])), str(ipaddress.IPv4Address(l3[16:20]))
        udp = l3[ihl:]
    elif ethertype == 0x86DD and len(l3) >= 40:
        if l3[6] != 17:
            return None
        src, dst = str(ipaddress.IPv6Address(l3[8:24])), str(ipaddress.IPv6Address(l3[24:40]))
        udp = l3[40:]
    else:
        return None
    if len(udp) < 8:
        return None
    sport, dport, length = struct.unpack("!HHH", udp[:6])
    return UdpPacket(src, sport, dst, dport, udp[8:length])


class Capture:
    """tcpdump writing a pcap file in a namespace; `packets()` can be read while it runs."""

    def __init__(self, proc: Proc, path: Path) -> None:
        self.proc, self.path = proc, path

    def packets(self) -> list[UdpPacket]:
        return parse_pcap(self.path.read_bytes()) if self.path.exists() else []

    def stop(self) -> list[UdpPacket]:
        self.proc.signal(signal.SIGINT)
        try:
            self.proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.stop()
        return self.packets()


def split_gso(payload: bytes) -> list[bytes]:
    """A capture taken before segmentation shows a UDP GSO send as one packet holding several same-sized
    WireGuard transport messages of one session: cut it where the 8-byte header (type + receiver index)
    repeats."""
    if len(payload) < 64 or payload[:4] != b"\x04\x00\x00\x00":
        return [payload]
    seg = payload.find(payload[:8], 32)
    if seg <= 0:
        return [payload]
    return [payload[i:i + seg] for i in range(0, len(payload), seg)]


def captured_messages(pcap: str, sport: int) -> list[bytes]:
    """The WireGuard messages a capture file holds from UDP source port `sport`, GSO sends cut into datagrams."""
    return [m for p in parse_pcap(Path(pcap).read_bytes()) if p.sport == sport for m in split_gso(p.payload)]
