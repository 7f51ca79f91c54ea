"""UDP sockets for one interface: an IPv4 and an IPv6 socket bound to the same port (IPV6_V6ONLY), as
wireguard-go's StdNetBind. Endpoints are the address tuples of recvfrom/sendto: (ip, port) for IPv4 and
(ip, port, flowinfo, scope_id) for IPv6, so the socket for an endpoint is chosen by the tuple's length."""

from __future__ import annotations

import errno
import ipaddress
import socket

SO_MARK = getattr(socket, "SO_MARK", 36)
SOCKET_BUFFER = 4 << 20


class UdpBind:
    def __init__(self) -> None:
        self.s4: socket.socket | None = None
        self.s6: socket.socket | None = None
        self.port = 0
        self.fwmark = 0

    def open(self, port: int, fwmark: int = 0) -> None:
        """Bind both families to `port` (0: a random free port shared by both). Raises OSError."""
        for _attempt in range(10):
            s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s4.bind(("0.0.0.0", port))
            except OSError:
                s4.close()
                raise
            actual = s4.getsockname()[1]
            s6 = None
            if socket.has_ipv6:
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s6.bind(("::", actual))
                except OSError as e:
                    s6.close()
                    s6 = None
                    if e.errno == errno.EADDRINUSE:
                        if port == 0:
                            s4.close()
                            continue       # the v6 port was taken: pick another random port
                        s4.close()
                        raise
                    # no IPv6 in this namespace: IPv4 only
            break
        else:
            raise OSError(errno.EADDRINUSE, "no free UDP port for both IPv4 and IPv6")
        self.close()
        self.s4, self.s6, self.port = s4, s6, actual
        for s in self.sockets():
            s.setblocking(False)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    pass
        self.fwmark = 0
        if fwmark:   # new sockets carry no mark; SO_MARK needs CAP_NET_ADMIN, even to set 0
            self.set_fwmark(fwmark)

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark
        for s in self.sockets():
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.s4, self.s6) if s is not None]

    def close(self) -> None:
        for s in self.sockets():
            s.close()
        self.s4 = self.s6 = None


def make_endpoint(host: str, port: int) -> tuple:
    """A numeric address and port -> the endpoint tuple used with our sockets. Raises ValueError."""
    addr = ipaddress.ip_address(host.strip("[]"))
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    if addr.version == 6:
        if addr.ipv4_mapped:
            return (str(addr.ipv4_mapped), port)
        return (str(addr), port, 0, 0)
    return (str(addr), port)


def parse_endpoint(text: str) -> tuple:
    """'1.2.3.4:51820' or '[fd00::1]:51820' -> endpoint tuple. Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("endpoint must be host:port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("bad IPv6 endpoint")
        host = host[1:-1]
    return make_endpoint(host, int(port))


def format_endpoint(ep: tuple) -> str:
    if len(ep) == 4:
        return f"[{ep[0]}]:{ep[1]}"
    return f"{ep[0]}:{ep[1]}"
