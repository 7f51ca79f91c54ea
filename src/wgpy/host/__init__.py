"""Host configuration: what `wgpy up` changes on the machine around the tunnel, as opposed to moving packets.

    netlink.py     addresses, link MTU and up, routes (pipelined adds), policy rules and their sysctls
    nft.py         `Masquerade =`: one nftables table per interface, forwarding sysctls, exact undo
    dns.py         `DNS =`: resolvconf, or /etc/resolv.conf written and put back exactly
    privileges.py  capability checks, runtime directories, dropping to `User =` keeping CAP_NET_ADMIN
    harden.py      no core dumps, not dumpable (the daemon holds keys)

Every change a module here makes has an exact undo; quick/ records and runs them. The data-path I/O (TUN, UDP,
offloads, path MTU, streams) lives in io/.
"""
