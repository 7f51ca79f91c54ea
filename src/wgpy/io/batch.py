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
"""

from __future__ import annotations

import errno
import socket
import struct

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
RECV_BUFFER = 65535

_H = struct.Struct("=H")
_I = struct.Struct("=i")
_CMSG_SPACE = socket.CMSG_SPACE(4)
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
            data, ep = out[i]
            size = len(data)
            j = i + 1
            if self.gso and i >= singly_until:
                total = size
                limit = min(n, i + GSO_MAX_SEGMENTS)
                while j < limit:
                    d2, e2 = out[j]
                    l2 = len(d2)
                    if e2 != ep or l2 > size or total + l2 > GSO_MAX_BYTES:
                        break
                    total += l2
                    j += 1
                    if l2 < size:
                        break   # a shorter datagram can only end a run
            sock = s6 if len(ep) == 4 else s4
            try:
                if j - i == 1:
                    sock.sendto(data, ep)
                else:
                    sock.sendmsg([b"".join([d for d, _ in out[i:j]])],
                                 [(SOL_UDP, UDP_SEGMENT, _H.pack(size))], 0, ep)
                self.calls += 1
            except OSError as e:
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


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


def receive_batch(sock: socket.socket, limit: int, out: list) -> None:
    """Append up to about `limit` (datagram, source) tuples read from a non-blocking socket with UDP_GRO."""
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
            if level == SOL_UDP and kind == UDP_GRO:
                seg = _I.unpack_from(payload)[0]
        n = len(data)
        if seg and seg < n:
            for off in range(0, n, seg):
                out.append((data[off:off + seg], src))
            count += (n + seg - 1) // seg
        else:
            out.append((data, src))
            count += 1
