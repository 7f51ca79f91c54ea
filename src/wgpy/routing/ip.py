"""Tiny helpers for reading raw IPv4 / IPv6 packet headers on the data path.

All functions accept ``bytes``, ``bytearray`` or a ``memoryview`` of unsigned bytes and never raise on short or
garbage input: a packet too short to hold the fixed header of its version (20 bytes for IPv4, 40 for IPv6), or with a
version nibble other than 4 or 6, gives ``None``.
"""

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40


_from_bytes = int.from_bytes


def checksum(data, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of `data` plus a prior 16-bit-word sum, ready to store (never 0). Used by
    the TUN offloads (io/offload.py, per segment) and by the ICMP errors and fragments of protocol/pmtu.py."""
    s = _from_bytes(data, "big") << 8 if len(data) & 1 else _from_bytes(data, "big")
    return 0xFFFF - (s + initial) % 0xFFFF


def ip_version(packet) -> int:
    """The version nibble of the first byte (4 or 6 for valid packets); 0 for an empty packet."""
    return packet[0] >> 4 if len(packet) else 0


def ip_src(packet) -> bytes | None:
    """Source address as raw bytes (4 or 16), or None."""
    n = len(packet)
    if n >= IPV4_HEADER_LEN:
        v = packet[0] >> 4
        if v == 4:
            return bytes(packet[12:16])
        if v == 6 and n >= IPV6_HEADER_LEN:
            return bytes(packet[8:24])
    return None


def ip_dst(packet) -> bytes | None:
    """Destination address as raw bytes (4 or 16), or None."""
    n = len(packet)
    if n >= IPV4_HEADER_LEN:
        v = packet[0] >> 4
        if v == 4:
            return bytes(packet[16:20])
        if v == 6 and n >= IPV6_HEADER_LEN:
            return bytes(packet[24:40])
    return None


def ip_total_length(packet) -> int | None:
    """Length of the whole IP packet according to its header, or None.

    IPv4: the Total Length field.  IPv6: the Payload Length field + 40 (extension headers are part of the payload).
    """
    n = len(packet)
    if n >= IPV4_HEADER_LEN:
        v = packet[0] >> 4
        if v == 4:
            return (packet[2] << 8) | packet[3]
        if v == 6 and n >= IPV6_HEADER_LEN:
            return ((packet[4] << 8) | packet[5]) + IPV6_HEADER_LEN
    return None
