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

from ..native import load

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
            if self.gso and i >= singly_until:
                run = gso_run(out, i, GSO_MAX_SEGMENTS, GSO_MAX_BYTES)
                if run is None:
                    run = gso_run_py(out, i, GSO_MAX_SEGMENTS, GSO_MAX_BYTES)
                j, size, data = run
            else:
                j, size, data = i + 1, 0, out[i][0]
            ep = out[i][1]
            sock = s6 if len(ep) == 4 else s4
            try:
                if j - i == 1:
                    sock.sendto(data, ep)
                else:
                    sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, _H.pack(size))], 0, ep)
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
        if seg and seg < len(data):
            count += gro_split(data, seg, src, out)
        else:
            out.append((data, src))
            count += 1
