"""UDP sockets for one interface: an IPv4 and an IPv6 socket bound to the same port (IPV6_V6ONLY), as
wireguard-go's StdNetBind. Endpoints are the address tuples of recvfrom/sendto: (ip, port) for IPv4 and
(ip, port, flowinfo, scope_id) for IPv6, so the socket for an endpoint is chosen by the tuple's length. A received
source is such a tuple as a `batch.Sticky`, which also carries the local address it arrived at (IP_PKTINFO /
IPV6_RECVPKTINFO, set in `configure`): what is sent to it leaves from that address, as kernel WireGuard does.

Per family there are two receiving sockets in one SO_REUSEPORT group, and a classic BPF program steers each
datagram by its first byte: transport messages (type 4) to the first socket, everything else (handshake
messages, garbage) to the second. A handshake flood then fills only the second socket's queue: the kernel drops
the excess there, and the transport messages of existing sessions keep their own queue. (The port is first bound
without SO_REUSEPORT to check it is free, so a port in use is still refused with EADDRINUSE and no other
program can join the group without SO_REUSEPORT as the same user.) Where the kernel refuses any of it, one socket
per family is used, as before. Datagrams are sent through the first socket of each family.

The separate queue keeps handshake floods away from transport messages, not transport-type garbage: a flood of
type-4 messages with invented receiver indices lands in the transport queue with the sessions' real packets,
and at some hundred thousand a second it kept the queue full so that the kernel dropped the real packets with
it (a session fell to ~1 Mbit/s, however fast the core dropped the garbage). So once sessions exist, a second
classic BPF program on each transport socket (SO_ATTACH_FILTER, `receivers_filter`) lets a transport message
into the queue only if its receiver index is one of the device's keypairs (a binary search over at most
MAX_FILTERED_INDICES indices); the kernel drops the rest before they take any room, counted in the socket's
drops (`kernel_drops`). The core keeps the set current through IndexTable.on_keypair: each new keypair
rebuilds the program before the message that could first use the index is sent (a keypair that left the
table is dropped from the program at the next rebuild; its messages meanwhile reach the core, which drops them).
With more indices, or where the kernel refuses the program, there is no filter and the core drops garbage alone.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
import struct

from .batch import BatchSender, enable_gro, enable_pktinfo, receive_batch
from .pmtu import send_fragmentable

SO_MARK = getattr(socket, "SO_MARK", 36)
SO_REUSEPORT = getattr(socket, "SO_REUSEPORT", 15)
SO_ATTACH_REUSEPORT_CBPF = 51          # include/uapi/asm-generic/socket.h
SO_ATTACH_FILTER, SO_DETACH_FILTER, SO_MEMINFO = 26, 27, 55
SK_MEMINFO_DROPS, SK_MEMINFO_VARS = 8, 9                 # include/uapi/linux/sock_diag.h
SOCKET_BUFFER = 4 << 20
MAX_FILTERED_INDICES = 1024            # receiver indices the transport sockets' filter checks (3 per peer)

# cBPF run by the kernel on each datagram, with the packet data starting at the UDP payload; returns the index
# of the socket in the reuseport group: 0 for a transport message, 1 for anything else.
#   ldb [0]; jeq #4, 0, 1; ret #0; ret #1          (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k)
_STEER = struct.pack("=HBBI HBBI HBBI HBBI".replace(" ", ""),
                     0x30, 0, 0, 0, 0x15, 0, 1, 4, 0x06, 0, 0, 0, 0x06, 0, 0, 1)


def _attach_steering(sock: socket.socket) -> None:
    _attach(sock, SO_ATTACH_REUSEPORT_CBPF, _STEER)


def _attach(sock: socket.socket, option: int, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, option, fprog)     # the kernel copies the program


# the transport sockets' receiver filter (cBPF; a socket filter sees the datagram from its UDP header on)
_LDB, _LDW, _JEQ, _JGT, _JA, _RET = 0x30, 0x20, 0x15, 0x25, 0x05, 0x06
_INSN = struct.Struct("=HBBI")
_ACCEPT, _DROP = 0xFFFFFFFF, 0
_LEAF = 4                              # indices compared one after another at the bottom of the search


def receivers_filter(indices) -> bytes:
    """The receiver filter for these receiver indices: a datagram whose first payload byte is not 4 passes
    (no steering: one socket gets everything); a transport message passes if the 32-bit receiver index at
    payload offset 4 (little-endian on the wire) is one of `indices`, else it is dropped (one too short to
    hold an index too: the load fails). A binary search over the big-endian values a cBPF word load yields:
    each inner node `jgt pivot` falls through to a `ja` over its left half; leaves compare up to _LEAF values.
    Jumps are relative (jt/jf one byte, ja 32 bits), so no conditional jump is longer than one instruction."""
    values = sorted(int.from_bytes((i & 0xFFFFFFFF).to_bytes(4, "little"), "big") for i in set(indices))
    prog = [(_LDB, 0, 0, 8), (_JEQ, 1, 0, 4), (_RET, 0, 0, _ACCEPT), (_LDW, 0, 0, 12)]

    def search(vals: list[int]) -> list[tuple]:
        if len(vals) <= _LEAF:
            out: list[tuple] = []
            for v in vals:
                out += [(_JEQ, 0, 1, v), (_RET, 0, 0, _ACCEPT)]
            return out + [(_RET, 0, 0, _DROP)]
        mid = len(vals) // 2
        left, right = search(vals[:mid]), search(vals[mid:])
        return [(_JGT, 0, 1, vals[mid - 1]), (_JA, 0, 0, len(left)), *left, *right]

    prog += search(values)
    return b"".join(_INSN.pack(*i) for i in prog)


def _steered_pair(family: int, port: int) -> tuple[socket.socket, socket.socket]:
    """Two sockets on `port` in one reuseport group, transport messages steered to the first. Raises OSError."""
    host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    socks = []
    try:
        for _ in range(2):
            s = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(s)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
            s.bind((host, port))
        _attach_steering(socks[0])
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks[0], socks[1]


class UdpBind:
    def __init__(self) -> None:
        self.s4: socket.socket | None = None
        self.s6: socket.socket | None = None
        self.h4: socket.socket | None = None      # receives handshake messages (and garbage) when steering works
        self.h6: socket.socket | None = None
        self.port = 0
        self.fwmark = 0
        self.sender = BatchSender()
        self.filtered = False                     # the transport sockets drop unknown receiver indices

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
        h4 = h6 = None
        try:
            # the port is ours (bound above without SO_REUSEPORT); rebind it as two steered pairs
            fams = [(socket.AF_INET, s4)] + ([(socket.AF_INET6, s6)] if s6 is not None else [])
            for _, s in fams:
                s.close()
            pairs = []
            try:
                for fam, _ in fams:
                    pairs.append(_steered_pair(fam, actual))
            except OSError:
                for pair in pairs:
                    for s in pair:
                        s.close()
                raise
            s4, h4 = pairs[0]
            if len(pairs) > 1:
                s6, h6 = pairs[1]
        except OSError:
            s4, s6, h4, h6 = self._plain(actual, s6 is not None)
        self.s4, self.s6, self.h4, self.h6, self.port = s4, s6, h4, h6, actual
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

    @staticmethod
    def _plain(port: int, v6: bool) -> tuple:
        s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s4.bind(("0.0.0.0", port))
        s6 = None
        if v6:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.bind(("::", port))
        return s4, s6, None, None

    def filter_receivers(self, indices) -> bool:
        """Let transport messages into the transport sockets' queues only for these receiver indices (the
        device's keypairs: IndexTable.on_keypair). Over MAX_FILTERED_INDICES, or where the kernel refuses the
        program, no filter: the core drops what is unknown. -> whether the filter is on."""
        socks = [s for s in (self.s4, self.s6) if s is not None]
        attached = False
        if len(indices) <= MAX_FILTERED_INDICES:
            program = receivers_filter(indices)
            try:
                for s in socks:
                    _attach(s, SO_ATTACH_FILTER, program)
                    attached = True
                self.filtered = True
                return True
            except OSError:
                pass
        if self.filtered or attached:       # no socket may keep an older program that lacks a new index
            for s in socks:
                try:
                    s.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
                except OSError:
                    pass
        self.filtered = False
        return False

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped at our sockets: the receiver filter's garbage and full queues."""
        total = 0
        for s in self.sockets():
            try:
                info = s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
            except OSError:
                continue
            total += struct.unpack_from("=I", info, 4 * SK_MEMINFO_DROPS)[0]
        return total

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.s4, self.h4, self.s6, self.h6) if s is not None]

    # ---- what the event loop calls (io/memory.py's MemoryBind has the same three) -----------------------------

    def configure(self, pmtu_io) -> None:
        """Per socket: UDP GRO on, the local address of each read (IP_PKTINFO/IPV6_RECVPKTINFO: answers leave
        from the address the peer wrote to, io/batch.py), and the path MTU mode (IP_RECVERR, PMTU discovery) of
        `pmtu_io`."""
        socks = self.sockets()
        pmtu_io.configure(socks)
        for s in socks:
            enable_gro(s)
            enable_pktinfo(s)

    receive = staticmethod(receive_batch)
    """receive(sock, limit, out): append up to about `limit` (datagram, source) tuples read from `sock`."""

    def send(self, out: list) -> None:
        """Send (datagram, endpoint) pairs in as few sendmsg() calls as UDP GSO allows."""
        self.sender.send(out, self.s4, self.s6)

    def send_fragmentable(self, out: list, path_mtu: int) -> None:
        """Send (datagram, endpoint) pairs with outer fragmentation allowed (io/pmtu.py, the core's Fragmentable
        event), one sendto() each: rare, and never with GSO."""
        for v6, sock in ((False, self.s4), (True, self.s6)):
            part = [d for d in out if (len(d[1]) == 4) == v6]
            if part:
                if sock is None:
                    self.sender.errors += len(part)
                else:
                    self.sender.errors += send_fragmentable(sock, part, path_mtu)

    def close(self) -> None:
        for s in self.sockets():
            s.close()
        self.s4 = self.s6 = self.h4 = self.h6 = None


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
