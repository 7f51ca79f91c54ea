"""Interface addresses, link MTU, routes and policy rules through netlink (pyroute2), the way wg-quick sets them.

Every change made is recorded in a NetlinkSetup so that a failure half way, or `down`, undoes exactly what was
done. Addresses and routes bound to the TUN device vanish with the device; policy rules do not, so they are
removed explicitly.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

DEFAULT_TABLE = 51820
FR_ACT_TO_TBL = 1


class NetlinkSetup:
    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.ipr = IPRoute()
        self.rules: list[dict] = []
        self.sysctls: list[tuple[str, str]] = []
        self._index: int | None = None      # looked up once: a dump per route made 100k routes take minutes

    def close(self) -> None:
        self.ipr.close()

    def index(self) -> int:
        if self._index is None:
            found = self.ipr.link_lookup(ifname=self.ifname)
            if not found:
                raise OSError(errno.ENODEV, f"interface {self.ifname} not found")
            self._index = found[0]
        return self._index

    def set_mtu_up(self, mtu: int) -> None:
        self.ipr.link("set", index=self.index(), mtu=mtu, state="up")

    def add_address(self, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface, nodad: bool = True) -> None:
        kw = {}
        if iface.version == 6 and nodad:
            kw["flags"] = 0x02  # IFA_F_NODAD: a point-to-point tunnel has nobody to collide with
        try:
            self.ipr.addr("add", index=self.index(), address=str(iface.ip), prefixlen=iface.network.prefixlen,
                          **kw)
        except NetlinkError as e:
            raise OSError(e.code, f"cannot add address {iface}: {errno.errorcode.get(e.code, e.code)}") from None

    def add_route(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, table: int | None = None) -> None:
        kw = {"dst": str(net), "oif": self.index()}
        if table is not None:
            kw["table"] = table
        if net.version == 6:
            kw["family"] = socket.AF_INET6
        try:
            self.ipr.route("add", **kw)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise OSError(e.code, f"cannot add route {net}: {errno.errorcode.get(e.code, e.code)}") from None

    def add_default_route_policy(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, table: int) -> None:
        """wg-quick's full-tunnel setup for a /0: the default route in its own table, used by every packet
        that does not carry the tunnel's own fwmark, while the main table still wins for anything more
        specific than a default route (suppress_prefixlength 0)."""
        family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
        self.add_route(net, table=table)
        rule1 = dict(family=family, table=table, fwmark=table, fwmask=0xFFFFFFFF, flags=0x2,  # FIB_RULE_INVERT
                     action=FR_ACT_TO_TBL)
        rule2 = dict(family=family, table=254, suppress_prefixlength=0, action=FR_ACT_TO_TBL)
        for rule in (rule1, rule2):
            try:
                self.ipr.rule("add", **rule)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise OSError(e.code, f"cannot add routing rule: {errno.errorcode.get(e.code, e.code)}") \
                        from None
                continue
            self.rules.append(rule)
        if net.version == 4:
            self._sysctl("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1")

    def _sysctl(self, path: str, value: str) -> None:
        try:
            with open(path) as f:
                old = f.read().strip()
            if old != value:
                with open(path, "w") as f:
                    f.write(value)
                self.sysctls.append((path, old))
        except OSError:
            pass

    def undo(self) -> None:
        for rule in reversed(self.rules):
            try:
                self.ipr.rule("del", **rule)
            except NetlinkError:
                pass
        self.rules.clear()
        for path, old in reversed(self.sysctls):
            try:
                with open(path, "w") as f:
                    f.write(old)
            except OSError:
                pass
        self.sysctls.clear()

    def missing(self, addresses: list, mtu: int | None, nets: list) -> list[str]:
        """For a link prepared by someone else (no CAP_NET_ADMIN here): the `ip` commands that would still be
        needed for these addresses, MTU and routes to be in place and the link to be up. Reads only."""
        idx = self.index()
        link = self.ipr.get_links(idx)[0]
        cmds = []
        have = {(a.get_attr("IFA_ADDRESS") if a["family"] == socket.AF_INET6 else a.get_attr("IFA_LOCAL"),
                 a["prefixlen"]) for a in self.ipr.get_addr(index=idx)}
        for iface in addresses:
            if (str(iface.ip), iface.network.prefixlen) not in have:
                cmds.append(f"ip address add {iface} dev {self.ifname}")
        if mtu is not None and link.get_attr("IFLA_MTU") != mtu:
            cmds.append(f"ip link set {self.ifname} mtu {mtu}")
        if not link["flags"] & 1:   # IFF_UP
            cmds.append(f"ip link set {self.ifname} up")
        for net in nets:
            try:
                routes = self.ipr.route("get", dst=str(net.network_address),
                                        family=socket.AF_INET6 if net.version == 6 else socket.AF_INET)
                ok = bool(routes) and routes[0].get_attr("RTA_OIF") == idx
            except NetlinkError:
                ok = False
            if not ok:
                cmds.append(f"ip {'-6 ' if net.version == 6 else ''}route add {net} dev {self.ifname}")
        return cmds

    def route_mtu(self, host: str) -> int | None:
        """MTU of the device the kernel would use to reach `host`, or None."""
        try:
            routes = self.ipr.route("get", dst=host)
            oif = routes[0].get("RTA_OIF")
            link = self.ipr.get_links(oif)[0]
            return link.get("IFLA_MTU")
        except (NetlinkError, IndexError, OSError, TypeError):
            return None

    def default_route_mtu(self) -> int | None:
        try:
            for r in self.ipr.get_default_routes(family=socket.AF_INET):
                oif = r.get("RTA_OIF")
                if oif:
                    return self.ipr.get_links(oif)[0].get("IFLA_MTU")
        except (NetlinkError, IndexError, OSError):
            pass
        return None


def link_kind(name: str) -> str | None:
    """The kind of interface `name` as `ip -d link` names it ("tun", "tap", "bridge", "veth", "loopback", ...;
    "device" for one without a kind, e.g. a physical NIC), or None if there is no such interface."""
    with IPRoute() as ipr:
        try:
            links = ipr.get_links(ifname=name)
        except NetlinkError:
            return None
        if not links:
            return None
        link = links[0]
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if kind == "tun":
            data = info.get_attr("IFLA_INFO_DATA")
            tun_type = data.get_attr("IFLA_TUN_TYPE") if data is not None else None
            return "tap" if tun_type == 2 else "tun"
        if kind:
            return kind
        return "loopback" if link["flags"] & 0x8 else "device"     # IFF_LOOPBACK


def link_mtu(name: str) -> int | None:
    """The MTU of interface `name` (from sysfs, which needs no privilege), or None."""
    try:
        with open(f"/sys/class/net/{name}/mtu") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# Many routes at once
# ----------------------------------------------------------------------------------------------------------------
# pyroute2 takes ~400 us per route (message objects, a round trip each): 100,000 allowed IPs would take 40 s.
# The rtnetlink message for "route add PREFIX dev IFACE [table T]" is small and a stable kernel ABI
# (include/uapi/linux/netlink.h, rtnetlink.h), so it is packed here and sent in pipelined bursts, with every
# acknowledgement read back: ~10 us per route.

RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST = 254, 3, 0, 253, 1
_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA_U32 = struct.Struct("=HHI")
_RTA_HDR = struct.Struct("=HH")
_ROUTE_BURST = 256


def route_add_message(net: ipaddress.IPv4Network | ipaddress.IPv6Network, oif: int, table: int | None,
                      seq: int) -> bytes:
    """RTM_NEWROUTE as `ip route add NET dev OIF [table TABLE]` sends it (scope link for IPv4, as ip does)."""
    v6 = net.version == 6
    addr = net.network_address.packed
    tab = RT_TABLE_MAIN if table is None else table
    body = _RTMSG.pack(socket.AF_INET6 if v6 else socket.AF_INET, net.prefixlen, 0, 0, tab if tab < 256 else 0,
                       RTPROT_BOOT, RT_SCOPE_UNIVERSE if v6 else RT_SCOPE_LINK, RTN_UNICAST, 0)
    body += _RTA_HDR.pack(4 + len(addr), RTA_DST) + addr + _RTA_U32.pack(8, RTA_OIF, oif)
    if tab >= 256:
        body += _RTA_U32.pack(8, RTA_TABLE, tab)
    return _NLMSGHDR.pack(16 + len(body), RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                          seq, 0) + body


def add_routes(nets: list, oif: int, table: int | None) -> int:
    """Add `nets` as routes via interface index `oif`; an existing identical route is fine.  Returns how many
    were added; raises OSError naming the first route the kernel refused."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        added = 0
        for start in range(0, len(nets), _ROUTE_BURST):
            burst = nets[start:start + _ROUTE_BURST]
            sock.sendall(b"".join(route_add_message(n, oif, table, start + i + 1) for i, n in enumerate(burst)))
            pending = len(burst)
            while pending:
                data = sock.recv(1 << 16)
                off = 0
                while off + 16 <= len(data):
                    length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
                    if kind == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, off + 16)[0]
                        pending -= 1
                        if err == 0:
                            added += 1
                        elif err != errno.EEXIST:
                            net = nets[seq - 1]
                            raise OSError(err, f"cannot add route {net}: {errno.errorcode.get(err, err)}")
                    off += (length + 3) & ~3
                    if length < 16:
                        break
        return added
    finally:
        sock.close()
