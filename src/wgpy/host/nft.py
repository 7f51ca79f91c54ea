"""`Masquerade = <uplink>`: forwarding and source NAT for an exit gateway, through nftables.

On up, for interface IFACE masquerading out of the uplinks U1, U2...:

    table inet wgpy_IFACE {                      # one table owned by this interface, nothing else
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            iifname "IFACE" oifname { "U1", "U2" } masquerade
        }
    }

is loaded in one nft transaction, and net.ipv4.ip_forward (plus net.ipv6.conf.all.forwarding when the interface
has IPv6 addresses) is set to 1, remembering the previous values. On down the table is deleted (which removes
exactly what was added, whatever other tables the host has) and the sysctls are put back -- unless another wgpy
interface still masquerades in this network namespace, or someone changed the value in between.

`iifname` in a postrouting chain matches the interface a forwarded packet came in on (the kernel passes the input
device to the IPv4 and IPv6 POSTROUTING hooks), so only traffic from the tunnel is translated, and only when it
leaves through an uplink. The `inet` family covers IPv4 and IPv6 with one rule.

The `nft` command is used (Debian package nftables) rather than hand-built netlink messages: its ruleset language
is the documented interface. A host whose forward chain drops by default must also accept the tunnel's traffic
there; a table of ours cannot override another table's drop verdict.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

TABLE_PREFIX = "wgpy_"
IPV4_FORWARD = "/proc/sys/net/ipv4/ip_forward"
IPV6_FORWARD = "/proc/sys/net/ipv6/conf/all/forwarding"
_SBIN = ("/usr/sbin", "/sbin")


class NftError(OSError):
    pass


def nft_path() -> str | None:
    found = shutil.which("nft")
    if found:
        return found
    for d in _SBIN:
        p = os.path.join(d, "nft")
        if os.access(p, os.X_OK):
            return p
    return None


def table_name(ifname: str) -> str:
    """An nft identifier for IFACE: letters, digits and _ kept, anything else as _xHH."""
    return TABLE_PREFIX + re.sub(r"[^A-Za-z0-9_]", lambda m: f"_x{ord(m.group()):02x}", ifname)


def ruleset(ifname: str, uplinks: list[str]) -> str:
    table = table_name(ifname)
    oifs = ", ".join(f'"{u}"' for u in uplinks)
    # "add table; delete table" first: a table left by a crashed daemon of the same name is replaced, atomically
    return (f"add table inet {table}\n"
            f"delete table inet {table}\n"
            f"table inet {table} {{\n"
            f"    chain postrouting {{\n"
            f"        type nat hook postrouting priority srcnat; policy accept;\n"
            f'        iifname "{ifname}" oifname {{ {oifs} }} masquerade\n'
            f"    }}\n"
            f"}}\n")


def _nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = nft_path()
    if exe is None:
        raise NftError("Masquerade needs the `nft` command (Debian package nftables), which is not installed")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=30)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class Masquerade:
    """What `Masquerade =` did on up, for an exact undo."""

    def __init__(self, ifname: str, uplinks: list[str], ipv6: bool) -> None:
        self.ifname = ifname
        self.uplinks = list(uplinks)
        self.ipv6 = ipv6
        self.table_added = False
        self.sysctls: list[tuple[str, str]] = []   # (path, previous value) of the values we changed

    def apply(self) -> None:
        """Install the table, then enable forwarding. Raises NftError; call undo() after a failure."""
        r = _nft(["-f", "-"], ruleset(self.ifname, self.uplinks))
        if r.returncode != 0:
            raise NftError(f"nft could not install the Masquerade rule: {r.stderr.strip() or r.returncode}")
        self.table_added = True
        paths = [IPV4_FORWARD] + ([IPV6_FORWARD] if self.ipv6 else [])
        for path in paths:
            try:
                old = _read(path)
                if old != "1":
                    _write(path, "1")
                    self.sysctls.append((path, old))
            except OSError as e:
                raise NftError(f"cannot enable forwarding ({path}): {e.strerror or e}") from None

    def undo(self) -> list[str]:
        """Delete our table and restore the sysctls; returns problems (never raises)."""
        problems = []
        if self.table_added:
            try:
                r = _nft(["delete", "table", "inet", table_name(self.ifname)])
                if r.returncode != 0 and "No such file" not in r.stderr:
                    problems.append(f"nft could not delete table {table_name(self.ifname)}: {r.stderr.strip()}")
            except (OSError, subprocess.SubprocessError) as e:
                problems.append(f"nft could not delete table {table_name(self.ifname)}: {e}")
            self.table_added = False
        if self.sysctls:
            if other_wgpy_tables():
                # another wgpy interface still forwards through this namespace: it needs forwarding on
                self.sysctls.clear()
            for path, old in reversed(self.sysctls):
                try:
                    if _read(path) == "1":     # leave it alone if someone changed it since up
                        _write(path, old)
                except OSError as e:
                    problems.append(f"cannot restore {path} to {old}: {e.strerror or e}")
            self.sysctls.clear()
        return problems


def delete_table(ifname: str) -> tuple[bool, str | None]:
    """Crash recovery: delete interface `ifname`'s table if it exists. Returns (deleted, problem)."""
    table = table_name(ifname)
    try:
        r = _nft(["delete", "table", "inet", table])
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"nft could not delete table {table}: {e}"
    if r.returncode == 0:
        return True, None
    if "No such file" in r.stderr:
        return False, None
    return False, f"nft could not delete table {table}: {r.stderr.strip()}"


def other_wgpy_tables() -> list[str]:
    try:
        r = _nft(["list", "tables"])
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split()[-1] for line in r.stdout.splitlines()
            if line.startswith("table ") and line.split()[-1].startswith(TABLE_PREFIX)]
