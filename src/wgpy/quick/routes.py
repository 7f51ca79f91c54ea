"""The routes, policy rules and nftables of `wgpy up` for the peers' allowed IPs: exactly what wg-quick does.

`Table =` decides (wg-quick(8), and wg-quick's add_route as it behaves):

* `off`: no routes at all.
* a number, or a name `ip` knows (host/rt_tables.py: /etc/iproute2/rt_tables, rt_tables.d, `main`, `default`...):
  every allowed IP becomes `ip route add NET dev IFACE table T`, the /0s included; no rule, no fwmark. A name
  that is neither is an error naming the file, the line and the key.
* `auto` or not given: a network is routed in the main table unless a route through the interface there
  already covers it (`ip route show dev IFACE match NET`: the prefix route of an Address); a /0 makes a full
  tunnel instead: the interface's fwmark is its table (FwMark = if given, else the first table from 51820 up
  that has no route in either family), the default route goes into that table, then the rules
  `not fwmark T table T` and `table main suppress_prefixlength 0` (netlink.add_default_route_policy: the kernel
  numbers them 32765 and 32764, so the main table's specific routes -- the LAN -- win), src_valid_mark for
  IPv4, and the nftables table of host/fulltunnel.py (needs `nft`, checked before anything is changed).

The networks are handled in wg-quick's order (`sort -nr -k 2 -t /` in the C locale: longest prefix first, ties
by the text, descending), so the /0s come last, IPv6's first. A route the table already has is an error, as
`ip route add` makes it.
"""

from __future__ import annotations

import socket
from typing import Callable

from .. import config as cfgmod
from ..host import fulltunnel, netlink, nft, rt_tables
from ..settings.values import shown

__all__ = ["table_of", "ordered", "full_tunnel", "choose_table", "install", "check"]

def table_of(cfg: cfgmod.InterfaceConfig) -> int | str:
    """"off", "auto", or the number of the table `Table =` names. Raises ConfigError (file, line, key) for a
    name `ip` would not know either."""
    t = cfg.table
    if t is None or t == "auto":
        return "auto"
    if t == "off":
        return "off"
    try:
        return rt_tables.lookup(t)
    except rt_tables.UnknownTable as e:
        line, key = cfg.where.get("table", (None, "Table"))
        raise cfgmod.ConfigError(cfg.path, line, key, f"unknown routing table {shown(t)}: {e}") from None


def ordered(cfg: cfgmod.InterfaceConfig) -> list:
    """Every peer's allowed IPs once, in wg-quick's order."""
    nets = {n for p in cfg.peers for n in p.allowed_ips}
    return sorted(nets, key=lambda n: (n.prefixlen, str(n)), reverse=True)


def full_tunnel(cfg: cfgmod.InterfaceConfig) -> bool:
    """Whether `up` makes the policy rules of a full tunnel (a /0 routed with Table = auto)."""
    return cfg.mode != "tap" and cfg.table in (None, "auto") and \
        any(n.prefixlen == 0 for p in cfg.peers for n in p.allowed_ips)


def choose_table(fwmark: int) -> int:
    """A full tunnel's table: the fwmark if there is one, else the first from 51820 up without routes."""
    if fwmark:
        return fwmark
    table = netlink.DEFAULT_TABLE
    while netlink.table_has_routes(table):
        table += 1
    return table


def _covered(net, covering: list) -> bool:
    return any(net.version == c.version and net.prefixlen >= c.prefixlen and
               int(net.network_address) >> (net.max_prefixlen - c.prefixlen) ==
               int(c.network_address) >> (c.max_prefixlen - c.prefixlen) for c in covering)


def install(cfg: cfgmod.InterfaceConfig, iface, nl: netlink.NetlinkSetup,
            push: Callable[[str, Callable], None]) -> None:
    """Add the routes (and for a full tunnel the rules and nftables) for `cfg`'s peers on `iface`. The rules
    and sysctls are undone by nl.undo(); the nftables tables through `push` (an UndoStack's)."""
    table = table_of(cfg)
    if table == "off":
        return
    nets = ordered(cfg)
    if table != "auto":
        netlink.add_routes(nets, nl.index(), table)
        return
    defaults = [n for n in nets if n.prefixlen == 0]
    main = [n for n in nets if n.prefixlen != 0]
    if main:
        idx = nl.index()
        on_link = [n for fam in (socket.AF_INET, socket.AF_INET6)
                   for n in netlink.routes_in_table(fam, netlink.RT_TABLE_MAIN, idx)]
        netlink.add_routes([n for n in main if not _covered(n, on_link)], idx, None)
    if not defaults:
        return
    mark = choose_table(iface.fwmark)
    if iface.fwmark != mark:
        iface.set_fwmark(mark)          # `wg set IFACE fwmark T`: the tunnel's own packets skip its table
    for net in defaults:
        nl.add_default_route_policy(net, mark)
        fw = fulltunnel.FullTunnelTable(cfg.name, net.version, mark, nl.addresses(net.version))
        push(f"nftables table {fulltunnel.FAMILIES[net.version]} {fulltunnel.table_name(cfg.name)}", fw.undo)
        fw.apply()


def check(cfg: cfgmod.InterfaceConfig) -> None:
    """Before anything changes: the table is known, and a full tunnel has the `nft` it needs. Raises
    ConfigError."""
    if cfg.mode == "tap":
        return                  # frames are switched: no routes
    table_of(cfg)
    if full_tunnel(cfg) and nft.nft_path() is None:
        line = next((p.where.get("allowed_ips", (p.line, "AllowedIPs")) for p in cfg.peers
                     if any(n.prefixlen == 0 for n in p.allowed_ips)), (None, "AllowedIPs"))
        raise cfgmod.ConfigError(cfg.path, *line, "a /0 makes a full tunnel, whose nftables rules (as wg-quick's) "
                                 "need the `nft` command (Debian package nftables), which is not installed; "
                                 "or set Table = off and route it yourself")

