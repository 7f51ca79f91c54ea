"""The nftables table of a full tunnel, as wg-quick installs it beside its policy rules (one per IP version).

For interface IFACE with fwmark MARK and, in that family, addresses A1, A2... (link-local ones included: all the
addresses the link has at that moment):

    table ip wgpy-quick-IFACE {                     # ip6 for IPv6, with `ip6 daddr`
        chain preraw {
            type filter hook prerouting priority raw; policy accept;
            iifname != "IFACE" ip daddr A1 fib saddr type != local drop
        }
        chain premangle {
            type filter hook prerouting priority mangle; policy accept;
            meta l4proto udp meta mark set ct mark
        }
        chain postmangle {
            type filter hook postrouting priority mangle; policy accept;
            meta l4proto udp meta mark MARK ct mark set meta mark
        }
    }

preraw drops packets for the tunnel's own addresses that arrive from anywhere but the tunnel (a host on the LAN
cannot reach services bound to the tunnel address, nor probe which connections exist); the two mangle chains
keep the fwmark on the replies of the encrypted UDP flow, so that with src_valid_mark the reverse-path filter
accepts them. wg-quick names the table `wg-quick-IFACE`; this is `wgpy-quick-` and the interface name with
anything nft would not take in a name written as _xHH (host/nft.py), which also keeps it apart from the
Masquerade table (`inet wgpy_IFACE`, whose undo counts the `wgpy_` tables of other interfaces).
"""

from __future__ import annotations

import subprocess

from . import nft

TABLE_PREFIX = "wgpy-quick-"
FAMILIES = {4: "ip", 6: "ip6"}


def table_name(ifname: str) -> str:
    return TABLE_PREFIX + nft.table_name(ifname)[len(nft.TABLE_PREFIX):]


def ruleset(ifname: str, version: int, mark: int, addresses: list[str]) -> str:
    family, table = FAMILIES[version], table_name(ifname)
    lines = [f"add table {family} {table}", f"delete table {family} {table}",   # a stale one is replaced
             f"add table {family} {table}",
             f"add chain {family} {table} preraw {{ type filter hook prerouting priority -300; }}",
             f"add chain {family} {table} premangle {{ type filter hook prerouting priority -150; }}",
             f"add chain {family} {table} postmangle {{ type filter hook postrouting priority -150; }}"]
    lines += [f'add rule {family} {table} preraw iifname != "{ifname}" {family} daddr {a} fib saddr type != '
              f'local drop' for a in addresses]
    lines += [f"add rule {family} {table} postmangle meta l4proto udp mark {mark} ct mark set mark",
              f"add rule {family} {table} premangle meta l4proto udp meta mark set ct mark"]
    return "\n".join(lines) + "\n"


class FullTunnelTable:
    """The table of one IP version, for an exact undo."""

    def __init__(self, ifname: str, version: int, mark: int, addresses: list[str]) -> None:
        self.ifname, self.version, self.mark, self.addresses = ifname, version, mark, list(addresses)
        self.added = False

    def apply(self) -> None:
        """Raises nft.NftError."""
        r = nft._nft(["-f", "-"], ruleset(self.ifname, self.version, self.mark, self.addresses))
        if r.returncode != 0:
            raise nft.NftError(f"nft could not install the full tunnel's table: {r.stderr.strip() or r.returncode}")
        self.added = True

    def undo(self) -> list[str]:
        if not self.added:
            return []
        self.added = False
        _, problem = _delete(FAMILIES[self.version], table_name(self.ifname))
        return [problem] if problem else []


def _delete(family: str, table: str) -> tuple[bool, str | None]:
    """(deleted, problem); a table that does not exist is neither."""
    try:
        r = nft._nft(["delete", "table", family, table])
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"nft could not delete table {family} {table}: {e}"
    if r.returncode == 0:
        return True, None
    if "No such file" in r.stderr:
        return False, None
    return False, f"nft could not delete table {family} {table}: {r.stderr.strip()}"


def delete_tables(ifname: str) -> tuple[list[str], list[str]]:
    """Crash recovery: delete both tables of `ifname` where they exist. Returns (tables deleted, problems);
    never raises."""
    if nft.nft_path() is None:
        return [], []
    deleted, problems = [], []
    for family in FAMILIES.values():
        gone, problem = _delete(family, table_name(ifname))
        if gone:
            deleted.append(f"{family} {table_name(ifname)}")
        if problem:
            problems.append(problem)
    return deleted, problems
