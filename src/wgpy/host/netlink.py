"""Interface addresses, link MTU, routes and policy rules through netlink, the way wg-quick sets them: links and
addresses through pyroute2, routes and rules packed here as `ip route add` / `ip rule add` send them (see
"Routes and rules as `ip` sends them" below).

Every change made is recorded in a NetlinkSetup so that a failure half way, or `down`, undoes exactly what was
done. Addresses and routes bound to the TUN device vanish with the device; policy rules do not, so they are
removed explicitly.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

DEFAULT_TABLE = 51820


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

    def add_default_route_policy(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, table: int) -> None:
        """wg-quick's full-tunnel setup for a /0 (its add_default, for one family): the default route in table
        `table`, then the rules `not fwmark TABLE table TABLE` and `table main suppress_prefixlength 0`, each
        without a priority, as `ip rule add` sends them: the kernel gives each one less than the first rule
        after rule 0 (32765, then 32764), so the main table is looked up first and wins for anything more
        specific than a default route (the LAN stays on the LAN); only packets without the tunnel's own mark
        then take the tunnel's default route. IPv4 also sets src_valid_mark, as wg-quick."""
        family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
        add_routes([net], self.index(), table)
        for rule in (dict(family=family, table=table, fwmark=table, invert=True),
                     dict(family=family, table=RT_TABLE_MAIN, suppress_prefixlen=0)):
            rule["priority"] = add_rule(**rule)
            self.rules.append(rule)
        if net.version == 4:
            self._sysctl("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1")

    def addresses(self, version: int) -> list[str]:
        """The addresses of the link of one IP version, in the kernel's order (as `ip -o addr show dev` lists
        them, link-local ones included)."""
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        out = []
        for a in self.ipr.get_addr(index=self.index(), family=family):
            out.append(a.get_attr("IFA_ADDRESS") if family == socket.AF_INET6 else
                       a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"))
        return [a for a in out if a]

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
                del_rule(**rule)
            except OSError:
                pass             # gone already (someone deleted it): nothing to undo
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
# Routes and rules as `ip` sends them
# ----------------------------------------------------------------------------------------------------------------
# pyroute2 takes ~400 us per route (message objects, a round trip each): 100,000 allowed IPs would take 40 s. And
# pyroute2 0.9 gives every rule a priority of 32000 unless told otherwise, and ignores an unknown keyword such as
# `suppress_prefixlength=` without a word: a rule added through it is not the rule `ip rule add` makes. The
# rtnetlink messages for "route add PREFIX dev IFACE [table T]" and "rule add [not] fwmark M table T" /
# "rule add table main suppress_prefixlength 0" are small and a stable kernel ABI (include/uapi/linux/netlink.h,
# rtnetlink.h, fib_rules.h), so they are packed here: routes in pipelined bursts with every acknowledgement read
# back (~10 us per route), rules one at a time with the kernel's echo of the rule it made (its priority).

RTM_NEWROUTE, RTM_GETROUTE, RTM_NEWRULE, RTM_DELRULE = 24, 26, 32, 33
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x8, 0x200, 0x400, 0x300
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
FRA_PRIORITY, FRA_FWMARK, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE = 6, 10, 14, 15
FR_ACT_TO_TBL, FIB_RULE_INVERT = 1, 0x2
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST = 254, 3, 0, 253, 1
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")          # struct rtmsg
_FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")   # struct fib_rule_hdr
_RTA_U32 = struct.Struct("=HHI")
_RTA_HDR = struct.Struct("=HH")
_ROUTE_BURST = 256


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, 0))
    return sock


def _messages(data: bytes):
    """(type, seq, payload) of each netlink message in one datagram."""
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < 16:
            return
        yield kind, seq, data[off + 16:off + length]
        off += (length + 3) & ~3


def _attrs(payload: bytes, start: int) -> dict[int, bytes]:
    out = {}
    off = start
    while off + 4 <= len(payload):
        length, kind = _RTA_HDR.unpack_from(payload, off)
        if length < 4:
            break
        out.setdefault(kind & 0x3FFF, payload[off + 4:off + length])
        off += (length + 3) & ~3
    return out


def _u32(kind: int, value: int) -> bytes:
    return _RTA_U32.pack(8, kind, value)


def _error_text(err: int) -> str:
    return f"{os.strerror(err)} ({errno.errorcode.get(err, err)})"


def _request(kind: int, flags: int, body: bytes) -> list[bytes]:
    """Send one request and wait for its acknowledgement; returns the payloads the kernel sent before it (an
    echo). Raises OSError with the kernel's error."""
    sock = _netlink_socket()
    try:
        sock.sendall(_NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, 1, 0) + body)
        got = []
        while True:
            for mkind, seq, payload in _messages(sock.recv(1 << 16)):
                if seq != 1:
                    continue
                if mkind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return got
                got.append(payload)
    finally:
        sock.close()


def _dump(kind: int, body: bytes) -> list[bytes]:
    """The payloads of a dump request. The kernel filters by what `body` names when it checks dump requests
    strictly (Linux 4.20+); callers filter again for older ones. A table that does not exist is no entry."""
    sock = _netlink_socket()
    try:
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        except OSError:
            pass
        sock.sendall(_NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        out = []
        while True:
            for mkind, seq, payload in _messages(sock.recv(1 << 20)):
                if seq != 1:
                    continue
                if mkind in (NLMSG_DONE, NLMSG_ERROR):
                    err = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if err and err != errno.ENOENT:
                        raise OSError(err, os.strerror(err))
                    return out
                out.append(payload)
    finally:
        sock.close()


def routes_in_table(family: int, table: int, oif: int | None = None) -> list:
    """The networks of the routes in `table` (through interface index `oif`, if given): `ip route show table T
    [dev D]`."""
    body = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0) + _u32(RTA_TABLE, table)
    if oif is not None:
        body += _u32(RTA_OIF, oif)
    nets = []
    for payload in _dump(RTM_GETROUTE, body):
        fam, dst_len, _src_len, _tos, rtm_table = struct.unpack_from("=BBBBB", payload)
        attrs = _attrs(payload, _RTMSG.size)
        tab = struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else rtm_table
        if fam != family or tab != table:
            continue
        if oif is not None and (RTA_OIF not in attrs or struct.unpack("=I", attrs[RTA_OIF])[0] != oif):
            continue
        size = 16 if family == socket.AF_INET6 else 4
        dst = attrs.get(RTA_DST, bytes(size))
        nets.append(ipaddress.ip_network((dst, dst_len)))
    return nets


def table_has_routes(table: int) -> bool:
    """`ip -4 route show table T` or `ip -6 route show table T` would print something."""
    return bool(routes_in_table(socket.AF_INET, table) or routes_in_table(socket.AF_INET6, table))


def _rule_body(family: int, table: int, priority: int | None, fwmark: int | None, invert: bool,
               suppress_prefixlen: int | None) -> bytes:
    """struct fib_rule_hdr and attributes as `ip rule add` packs them: a table below 256 in the header, a
    larger one as FRA_TABLE; the fwmark without a mask (the kernel takes 0xffffffff); no priority unless
    given."""
    body = _FIB_RULE_HDR.pack(family, 0, 0, 0, table if table < 256 else 0, 0, 0, FR_ACT_TO_TBL,
                              FIB_RULE_INVERT if invert else 0)
    if priority is not None:
        body += _u32(FRA_PRIORITY, priority)
    if fwmark is not None:
        body += _u32(FRA_FWMARK, fwmark)
    if suppress_prefixlen is not None:
        body += _u32(FRA_SUPPRESS_PREFIXLEN, suppress_prefixlen)
    if table >= 256:
        body += _u32(FRA_TABLE, table)
    return body


def _rule_text(family: int, table: int, fwmark: int | None, invert: bool, suppress_prefixlen: int | None) -> str:
    words = ["ip", "-6" if family == socket.AF_INET6 else "-4", "rule"]
    if fwmark is not None:
        words += ["not"] * invert + ["fwmark", str(fwmark)]
    words += ["table", "main" if table == RT_TABLE_MAIN else str(table)]
    if suppress_prefixlen is not None:
        words += ["suppress_prefixlength", str(suppress_prefixlen)]
    return " ".join(words)


def add_rule(family: int, table: int, fwmark: int | None = None, invert: bool = False,
             suppress_prefixlen: int | None = None, priority: int | None = None) -> int | None:
    """`ip rule add [not fwmark M] table T [suppress_prefixlength N]`: without a priority the kernel picks it
    (one less than the first rule after rule 0). Returns the priority the rule got (None if the kernel did
    not echo it). Raises OSError."""
    body = _rule_body(family, table, priority, fwmark, invert, suppress_prefixlen)
    try:
        echoed = _request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, body)
    except OSError as e:
        text = _rule_text(family, table, fwmark, invert, suppress_prefixlen).replace(" rule ", " rule add ")
        raise OSError(e.errno, f"cannot add routing rule ({text}): {_error_text(e.errno)}") from None
    for payload in echoed:
        attrs = _attrs(payload, _FIB_RULE_HDR.size)
        if FRA_PRIORITY in attrs:
            return struct.unpack("=I", attrs[FRA_PRIORITY])[0]
        return 0
    return None


def del_rule(family: int, table: int, fwmark: int | None = None, invert: bool = False,
             suppress_prefixlen: int | None = None, priority: int | None = None) -> None:
    """Delete the rule add_rule() made (with its priority: another interface's identical rule stays)."""
    _request(RTM_DELRULE, 0, _rule_body(family, table, priority, fwmark, invert, suppress_prefixlen))


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
    """Add `nets` as routes via interface index `oif` (`ip route add NET dev IFACE [table T]` for each). As
    with ip, a route the table has already (same prefix and metric, whatever its device) is an error: the
    tunnel would not get that traffic. Returns how many were added; raises OSError naming the first route
    the kernel refused."""
    sock = _netlink_socket()
    try:
        added = 0
        for start in range(0, len(nets), _ROUTE_BURST):
            burst = nets[start:start + _ROUTE_BURST]
            sock.sendall(b"".join(route_add_message(n, oif, table, start + i + 1) for i, n in enumerate(burst)))
            pending = len(burst)
            while pending:
                for kind, seq, payload in _messages(sock.recv(1 << 16)):
                    if kind != NLMSG_ERROR:
                        continue
                    err = -struct.unpack_from("=i", payload)[0]
                    pending -= 1
                    if err == 0:
                        added += 1
                        continue
                    net = nets[seq - 1]
                    where = "" if table is None else f" to table {table}"
                    why = "a route to it exists already" if err == errno.EEXIST else os.strerror(err)
                    raise OSError(err, f"cannot add route {net}{where}: {why} "
                                       f"({errno.errorcode.get(err, err)})")
        return added
    finally:
        sock.close()
