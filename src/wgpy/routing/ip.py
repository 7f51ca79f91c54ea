"""The Internet checksum (RFC 1071), shared by the TUN offloads and the ICMP errors of the path MTU code. (The
data path reads versions, addresses and lengths inline, per batch: see device.py and routing/allowedips.py.)"""

_from_bytes = int.from_bytes


def checksum(data, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of `data` plus a prior 16-bit-word sum, ready to store (never 0). Used by
    the TUN offloads (io/offload.py, per segment) and by the ICMP errors and fragments of ext/pmtu.py."""
    s = _from_bytes(data, "big") << 8 if len(data) & 1 else _from_bytes(data, "big")
    return 0xFFFF - (s + initial) % 0xFFFF
