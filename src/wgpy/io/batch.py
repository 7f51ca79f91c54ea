"""Many UDP datagrams per system call: UDP GSO on send (UDP_SEGMENT) and UDP GRO on receive (UDP_GRO).

Linux constants Python 3.11 does not define are given by number here, in one place (include/uapi/linux/udp.h).

Send: consecutive datagrams for one endpoint that have the same size (the last of a run may be shorter) go out
as one sendmsg() of their concatenation with a UDP_SEGMENT control message; the kernel (or the NIC) cuts it back
into datagrams. At most GSO_MAX_SEGMENTS per call and 64 KiB in all. If the kernel refuses (EIO/EINVAL/
ENOPROTOOPT, e.g. no GSO for the route's device), the sender falls back to one sendto() per datagram for good.
A run of datagrams larger than the path MTU is refused with EMSGSIZE (the kernel fragments a lone datagram but
does not segment into fragments): that run alone is then sent one datagram at a time, GSO stays on.

Receive: with UDP_GRO enabled the kernel may hand us several same-sized datagrams from one source in one read;
a UDP_GRO control message then carries the segment size and the buffer is sliced back into datagrams.

Source address stickiness (as kernel WireGuard): the sockets are wildcard-bound with IP_PKTINFO /
IPV6_RECVPKTINFO on, so each read also says which local address the datagram was sent to. The source then comes
back as a `Sticky`: the peer's address tuple itself (a tuple subclass that compares and hashes as the plain
tuple, so formatting, `wg show`, ICMP matching and GSO runs see the peer's address), carrying in `.cmsg` the
control message that sends from that local address. The core stores it as the peer's endpoint like any
source, and BatchSender adds the control message to the sendmsg() of a run to a Sticky: answers leave from the
address the peer wrote to. One Sticky per read (a GRO read comes from one source to one local address), one
cached control message per local address: no work per datagram. A configured endpoint is a plain tuple (the
kernel's choice of source). If the kernel refuses the source (EADDRNOTAVAIL/EINVAL/ENETUNREACH: the address
left the host), the run is sent again without it and the Sticky forgets it (`.cmsg = None`, seen by the core,
which holds the same object), so traffic falls over to the kernel's choice until the next read re-learns one.
"""

from __future__ import annotations

import errno
import socket
import struct

from ..native import load

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
RECV_BUFFER = 65535

_H = struct.Struct("=H")
_I = struct.Struct("=i")
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
SOL_IP, SOL_IPV6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6
_CMSG_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)    # UDP_GRO, then in_pktinfo (12) / in6_pktinfo (20)
_NO_SOURCE = (errno.EADDRNOTAVAIL, errno.EINVAL, errno.ENETUNREACH)
_ZERO4 = bytes(4)
_MAX_LOCAL = 256                # cached control messages (one per local address the host has had)


class Sticky(tuple):
    """A received datagram's source: the peer's address tuple, equal (and hashing) as the plain tuple, with
    `cmsg`, the IP_PKTINFO/IPV6_PKTINFO control message (level, type, data) that sends from the local address
    the datagram arrived at, or None once the kernel refused that source."""

    cmsg = None

    def __repr__(self) -> str:
        return f"Sticky({tuple.__repr__(self)}, cmsg={self.cmsg!r})"

    @property
    def local(self) -> str | None:
        """The local address answers are sent from (None: the kernel's choice)."""
        c = self.cmsg
        if c is None:
            return None
        if c[0] == SOL_IPV6:
            return socket.inet_ntop(socket.AF_INET6, c[2][:16])
        return socket.inet_ntop(socket.AF_INET, c[2][4:8])


def enable_pktinfo(sock: socket.socket) -> bool:
    """Have each read of `sock` say the local address it arrived at. -> whether the kernel agreed."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(SOL_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(SOL_IP, IP_PKTINFO, 1)
        return True
    except OSError:
        return False


_send_cmsg: dict = {}           # received pktinfo data -> the control message that sends from its local address


def _source_cmsg(level: int, payload: bytes):
    c = _send_cmsg.get(payload)
    if c is None:
        if level == SOL_IPV6:
            if len(payload) < 20:
                return None
            # in6_pktinfo {in6_addr ipi6_addr; int ipi6_ifindex}: the interface only for a link-local address
            addr = payload[:16]
            link_local = addr[0] == 0xFE and (addr[1] & 0xC0) == 0x80
            c = (SOL_IPV6, IPV6_PKTINFO, addr + (payload[16:20] if link_local else _ZERO4))
        else:
            if len(payload) < 12:
                return None
            # in_pktinfo {int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr}: send from ipi_addr, the
            # header's destination (what kernel WireGuard keeps), any interface
            c = (SOL_IP, IP_PKTINFO, _ZERO4 + payload[8:12] + _ZERO4)
        if len(_send_cmsg) >= _MAX_LOCAL:
            _send_cmsg.clear()
        _send_cmsg[payload] = c
    return c
_EAGAIN = (BlockingIOError, InterruptedError)


class BatchSender:
    """Sends (datagram, endpoint) lists through a v4 and a v6 socket, coalescing runs with UDP GSO."""

    __slots__ = ("gso", "errors", "calls")

    def __init__(self) -> None:
        self.gso = True
        self.errors = 0
        self.calls = 0

    def send(self, out: list, s4: socket.socket | None, s6: socket.socket | None) -> None:
        n = len(out)
        i = 0
        singly_until = 0                # datagrams before this index go out one by one (EMSGSIZE below)
        while i < n:
            if self.gso and i >= singly_until:
                run = gso_run(out, i, GSO_MAX_SEGMENTS, GSO_MAX_BYTES)
                if run is None:
                    run = gso_run_py(out, i, GSO_MAX_SEGMENTS, GSO_MAX_BYTES)
                j, size, data = run
            else:
                j, size, data = i + 1, 0, out[i][0]
            ep = out[i][1]
            sock = s6 if len(ep) == 4 else s4
            src = ep.cmsg if ep.__class__ is Sticky else None
            try:
                if j - i == 1:
                    if src is None:
                        sock.sendto(data, ep)
                    else:
                        sock.sendmsg([data], [src], 0, ep)
                elif src is None:
                    sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, _H.pack(size))], 0, ep)
                else:
                    sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, _H.pack(size)), src], 0, ep)
                self.calls += 1
            except OSError as e:
                if src is not None and e.errno in _NO_SOURCE:
                    ep.cmsg = None      # the local address is gone: the kernel's choice, re-learnt on receive
                    continue            # and this run again without it
                if j - i > 1 and e.errno == errno.EMSGSIZE:
                    singly_until = j
                    continue            # larger than the path MTU: resend this run one datagram at a time
                if j - i > 1 and e.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                    self.gso = False
                    continue            # resend this run one datagram at a time
                self.errors += j - i
            except AttributeError:      # no socket for this family
                self.errors += j - i
            i = j


def gso_run_py(out: list, i: int, max_segments: int, max_bytes: int) -> tuple[int, int, bytes]:
    """The run of datagrams at out[i] that one UDP GSO sendmsg can carry: the same endpoint, each no longer than
    the first (whose length is the segment size; a shorter one can only end the run), at most `max_segments`
    and `max_bytes` in all. Returns (index after the run, segment size, the run's datagrams joined; the datagram
    itself for a run of one). The reference of wgpy._offload.gso_run."""
    data, ep = out[i]
    size = total = len(data)
    j = i + 1
    limit = min(len(out), i + max_segments)
    while j < limit:
        d2, e2 = out[j]
        l2 = len(d2)
        if e2 != ep or l2 > size or total + l2 > max_bytes:
            break
        total += l2
        j += 1
        if l2 < size:
            break
    if j - i == 1:
        return j, size, data
    return j, size, b"".join([d for d, _ in out[i:j]])


def gro_split_py(data: bytes, seg: int, src: object, out: list) -> int:
    """(datagram, src) appended to `out` for each `seg`-byte piece of one UDP GRO read (the last may be shorter);
    returns how many. The reference of wgpy._offload.gro_split."""
    for off in range(0, len(data), seg):
        out.append((data[off:off + seg], src))
    return (len(data) + seg - 1) // seg


_native = load("_offload")
gso_run = _native.gso_run if _native is not None else gso_run_py
gro_split = _native.gro_split if _native is not None else gro_split_py


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


def receive_batch(sock: socket.socket, limit: int, out: list) -> None:
    """Append up to about `limit` (datagram, source) tuples read from a non-blocking socket with UDP_GRO; with
    IP_PKTINFO/IPV6_RECVPKTINFO on (enable_pktinfo), the source is a Sticky that carries the local address."""
    recvmsg = sock.recvmsg
    count = 0
    while count < limit:
        try:
            data, anc, _flags, src = recvmsg(RECV_BUFFER, _CMSG_SPACE)
        except _EAGAIN:
            return
        except OSError:
            return      # ICMP errors surface here (ECONNREFUSED...): nothing to do
        seg = 0
        for level, kind, payload in anc:
            if level == SOL_UDP:
                if kind == UDP_GRO:
                    seg = _I.unpack_from(payload)[0]
            elif (kind == IP_PKTINFO and level == SOL_IP) or (kind == IPV6_PKTINFO and level == SOL_IPV6):
                c = _send_cmsg.get(payload) or _source_cmsg(level, payload)
                if c is not None:
                    src = Sticky(src)
                    src.cmsg = c
        if seg and seg < len(data):
            count += gro_split(data, seg, src, out)
        else:
            out.append((data, src))
            count += 1
