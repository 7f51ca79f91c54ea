"""Path MTU, the I/O side (the core's is ext/pmtu.py): socket options, the UDP error queue, the local link MTU,
the interface MTU.

Socket options (every UDP socket of the interface, both families, the steered pairs included):
    IP_RECVERR / IPV6_RECVERR   ICMP errors about our datagrams are queued on the socket's error queue with the
                                MTU they carry, instead of being dropped (an unconnected UDP socket is told
                                nothing otherwise)
    IP_MTU_DISCOVER / IPV6_MTU_DISCOVER
        automatic MTU:  IP_PMTUDISC_PROBE: DF set on every datagram and the kernel's cached path MTU ignored.
                        wgpy keeps its own estimate per peer (ext/pmtu.py); with IP_PMTUDISC_DO the kernel
                        would refuse (EMSGSIZE) every datagram above the path MTU it cached from an ICMP for up to
                        10 minutes (net.ipv4.route.mtu_expires), so probes could not find out that the path grew
                        back. ICMP errors still reach the error queue and still teach the kernel (other sockets).
        explicit MTU:   left at the kernel default (IP_PMTUDISC_WANT): datagrams above the known path MTU are
                        fragmented by the kernel, as before; the errors are still read, to report the path MTU.

The error queue: the kernel reports pending errors with EPOLLERR, which epoll always delivers; the event loop
calls drain() then, which reads every queued error (MSG_ERRQUEUE), and hands the EMSGSIZE ones (ee_origin ICMP,
ICMP6 or LOCAL; ee_info = the MTU) to the core with the destination they were about (address and port of the
failed datagram, from the quoted UDP header; port 0 for LOCAL errors of an unconnected socket, meaning any peer at
that address), whether the error is LOCAL (our own send, true) or from an ICMP (anyone can forge one), and the
first bytes of the quoted UDP payload (the datagram's data the error carries: the WireGuard header of the
message, when the router quoted that much), which the core checks against what it sent. Other errors (port
unreachable, ...) are read and dropped: an unread queue keeps EPOLLERR raised. ICMP errors reach whichever
socket of a reuseport group the kernel picks for them (hash, the steering program sees no data), so all four
sockets are watched.

Outer fragmentation (send_fragmentable, the core's Fragmentable event): datagrams the core wants sent although
they are larger than the peer's path MTU (IPv6 packets above a limit below 1280) go out with the socket switched
to IP_PMTUDISC_DONT for the call (IPv4: DF clear, the kernel and the routers fragment; IPv6: the kernel fragments
to IPV6_MTU, set to the peer's path MTU), then back to IP_PMTUDISC_PROBE. The loop is single-threaded, so no
other datagram is sent in between.

The interface MTU (automatic mode): after the core changed an estimate (its PATH_MTU_CHANGED event), the upper
median of the usable MTUs over the peers with a UDP endpoint (the minimum in L2; Device.interface_usable_mtu,
docs/pmtu.md says why) becomes the interface MTU (L2: minus the Ethernet header and room for one 802.1Q tag, 18
bytes, so that full-size VLAN-tagged frames fit the path too), never below `min_mtu` (1280 when the interface
carries IPv6: Linux removes every IPv6 address from a device whose MTU goes below 1280; 576 otherwise), set
through netlink. The core's per-peer limits follow (Device.mtu).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct

from ..constants import ETHERNET_HEADER_LEN

log = logging.getLogger("wgpy")
VLAN_TAG_LEN = 4

SOL_IP = 0
SOL_IPV6 = 41
IP_MTU_DISCOVER = 10
IP_RECVERR = 11
IP_MTU = 14
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_WANT = 1
IP_PMTUDISC_PROBE = 3
IPV6_MTU_DISCOVER = 23
IPV6_MTU = 24
IPV6_RECVERR = 25
IPV6_PMTUDISC_DONT = 0
IPV6_PMTUDISC_WANT = 1
IPV6_PMTUDISC_PROBE = 3
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXT_ERR = struct.Struct("=IBBBBII")          # struct sock_extended_err (include/uapi/linux/errqueue.h)
_EAGAIN = (BlockingIOError, InterruptedError)
MAX_ERRORS_PER_DRAIN = 256
QUOTE_BYTES = 64               # of the failed datagram's payload: the 16-byte WireGuard header is what is checked


def configure_socket(sock: socket.socket, probe_mode: bool) -> None:
    """IP(V6)_RECVERR on; with `probe_mode` IP(V6)_PMTUDISC_PROBE, else the kernel default (WANT)."""
    v6 = sock.family == socket.AF_INET6
    level = SOL_IPV6 if v6 else SOL_IP
    try:
        sock.setsockopt(level, IPV6_RECVERR if v6 else IP_RECVERR, 1)
        sock.setsockopt(level, IPV6_MTU_DISCOVER if v6 else IP_MTU_DISCOVER,
                        (IPV6_PMTUDISC_PROBE if v6 else IP_PMTUDISC_PROBE) if probe_mode
                        else (IPV6_PMTUDISC_WANT if v6 else IP_PMTUDISC_WANT))
    except OSError as e:      # pragma: no cover - every Linux since 2.6 has both
        log.warning("path MTU socket options refused: %s", e.strerror)


def read_errors(sock: socket.socket, out: list) -> int:
    """Drain the socket's error queue; append (host, port, mtu, local, quote) for every EMSGSIZE: `local` for
    the kernel's own refusal (ee_origin LOCAL), `quote` the first bytes of the failed datagram's UDP payload as
    the error carries them (for an ICMP error: what the router quoted). Returns errors read."""
    n = 0
    recvmsg = sock.recvmsg
    while n < MAX_ERRORS_PER_DRAIN:
        try:
            data, anc, _flags, addr = recvmsg(QUOTE_BYTES, 512, MSG_ERRQUEUE)
        except _EAGAIN:
            break
        except OSError:
            break
        n += 1
        for level, kind, payload in anc:
            if not ((level == SOL_IP and kind == IP_RECVERR) or (level == SOL_IPV6 and kind == IPV6_RECVERR)):
                continue
            if len(payload) < _EXT_ERR.size:
                continue
            ee_errno, origin, _t, _c, _p, info, _d = _EXT_ERR.unpack_from(payload)
            if ee_errno == errno.EMSGSIZE and origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6,
                                                           SO_EE_ORIGIN_LOCAL) and info and addr:
                host = addr[0]
                if host.startswith("::ffff:"):
                    host = host[7:]
                out.append((host, addr[1], info, origin == SO_EE_ORIGIN_LOCAL, data))
    return n


def send_fragmentable(sock: socket.socket, datagrams: list, path_mtu: int) -> int:
    """Send (datagram, endpoint) pairs through `sock` with outer fragmentation allowed (module docstring), then
    put the socket back to IP_PMTUDISC_PROBE. Returns how many the kernel refused."""
    v6 = sock.family == socket.AF_INET6
    level = SOL_IPV6 if v6 else SOL_IP
    opt = IPV6_MTU_DISCOVER if v6 else IP_MTU_DISCOVER
    errors = 0
    try:
        sock.setsockopt(level, opt, IPV6_PMTUDISC_DONT if v6 else IP_PMTUDISC_DONT)
        if v6 and path_mtu >= 1280:
            sock.setsockopt(level, IPV6_MTU, path_mtu)
    except OSError:             # pragma: no cover - both exist since Linux 2.2
        return len(datagrams)
    try:
        for data, ep in datagrams:
            src = getattr(ep, "cmsg", None)         # a Sticky's local address (io/batch.py)
            try:
                if src is None:
                    sock.sendto(data, ep)
                else:
                    try:
                        sock.sendmsg([data], [src], 0, ep)
                    except OSError as e:
                        if e.errno not in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.ENETUNREACH):
                            raise
                        ep.cmsg = None
                        sock.sendto(data, ep)
            except OSError:
                errors += 1
    finally:
        if v6 and path_mtu >= 1280:
            sock.setsockopt(level, IPV6_MTU, 0)
        sock.setsockopt(level, opt, IPV6_PMTUDISC_PROBE if v6 else IP_PMTUDISC_PROBE)
    return errors


class PathMtuIO:
    """One interface's path MTU plumbing (see the module docstring)."""

    def __init__(self, ifname: str, device, l2: bool) -> None:
        self.ifname = ifname
        self.device = device
        self.l2 = l2
        self.auto = False
        self.min_mtu = 1280
        self.interface_mtu: int | None = None
        self.changes = 0
        self.errors_read = 0
        self._ipr = None
        self._links: dict[int, int] = {}

    # ---- netlink ---------------------------------------------------------------------------------------------

    def _iproute(self):
        if self._ipr is None:
            from pyroute2 import IPRoute
            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def link_mtu(self, endpoint: tuple) -> int | None:
        """MTU of the device the kernel routes `endpoint` through (not the cached path MTU), or None."""
        try:
            ipr = self._iproute()
            fam = socket.AF_INET6 if len(endpoint) == 4 else socket.AF_INET
            routes = ipr.route("get", dst=endpoint[0], family=fam)
            oif = routes[0].get_attr("RTA_OIF")
            return ipr.get_links(oif)[0].get_attr("IFLA_MTU")
        except Exception:   # noqa: BLE001 - any netlink trouble: unknown (the core assumes 1500)
            return None

    # ---- modes -------------------------------------------------------------------------------------------------

    def configure(self, sockets: list[socket.socket]) -> None:
        for s in sockets:
            configure_socket(s, self.auto)

    def set_auto(self, enabled: bool, min_mtu: int | None = None) -> None:
        """The UAPI's wgpy_mtu_auto= and wgpy_mtu_min= (Host.set_mtu_auto). On (`MTU = auto`, or no MTU): probe,
        limit per peer, and let the interface MTU follow the peers (L3: their upper median, L2: the smallest), starting from the core's MTU (the
        interface's, L2 with the Ethernet header), never below `min_mtu`. Off: the MTU stays what it is. The
        caller then has the bind configure its sockets (configure(): the PMTU discovery mode follows `auto`)."""
        if min_mtu is not None:
            self.min_mtu = min_mtu
        if enabled:
            self.interface_mtu = self.device.mtu - (ETHERNET_HEADER_LEN if self.l2 else 0)
        if enabled or self.auto:
            self.auto = enabled
            self.device.set_pmtu_auto(enabled)

    # ---- the event loop's calls ------------------------------------------------------------------------------

    def drain(self, sock: socket.socket, now: float) -> None:
        found: list = []
        self.errors_read += read_errors(sock, found)
        dev = self.device
        for host, port, mtu, local, quote in found:
            dev.path_mtu_learned(host, port, mtu, now, quote, local)

    def apply(self) -> None:
        """After the core's PATH_MTU_CHANGED event: the interface MTU follows the peers' usable MTUs (their
        upper median in L3, the smallest in L2; automatic mode)."""
        dev = self.device
        if not self.auto:
            return
        usable = dev.interface_usable_mtu()
        if usable is None:
            return
        hdr = ETHERNET_HEADER_LEN + VLAN_TAG_LEN if self.l2 else 0
        new = min(max(usable - hdr, self.min_mtu), 65535)
        if new == self.interface_mtu:
            return
        try:
            ipr = self._iproute()
            idx = ipr.link_lookup(ifname=self.ifname)
            if not idx:
                return
            ipr.link("set", index=idx[0], mtu=new)
        except Exception as e:  # noqa: BLE001 - keep running with the old MTU; the per-peer limits still hold
            log.warning("cannot set the MTU of %s to %d: %s", self.ifname, new, e)
            return
        log.info("%s: MTU %s -> %d (the peers' path MTUs allow %d)", self.ifname, self.interface_mtu, new, usable)
        self.interface_mtu = new
        self.changes += 1
        dev.mtu = new + (ETHERNET_HEADER_LEN if self.l2 else 0)   # the core's MTU: the largest plaintext
