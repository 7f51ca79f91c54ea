"""Crash recovery: what `wgpy up` changes on the host is recorded before it is changed, in RUN_DIR/IFACE.state,
so that a daemon that died without tearing down (SIGKILL, the OOM killer) leaves nothing behind for good.

The state file (JSON, owner root or the daemon's user, written to a temporary file and renamed over the old one)
holds the daemon's pid, network namespace and config, and, each written before the change it describes:

    sysctls     [[path, previous value, value set], ...]   src_valid_mark, ip_forward, IPv6 forwarding
    rules       the table (= fwmark) of a full tunnel's policy rules
    main_rules  the main-table rules before those were added (to tell the tunnel's own from the host's)
    nft         the Masquerade table (nft.table_name); with `rules`, the full tunnel's (host/fulltunnel.py) go too
    dns         "resolvconf" or "file" (the previous /etc/resolv.conf is in RUN_DIR/IFACE.resolv.conf)

A clean teardown removes the file last. `wgpy down IFACE` with no daemon left, and `wgpy up IFACE` before it
starts, run recover(): DNS back (resolvconf -d, or the backup put back if resolv.conf still holds what wgpy
wrote), the nft table deleted, the sysctls back to their previous values (each only while it still has the value
wgpy set; forwarding only when no other wgpy table masquerades here), every policy rule for the table or its
fwmark deleted, and main's `suppress_prefixlength 0` rule (and any other plain main-table rule up added) when no
other full tunnel is left (wg-quick's down removes every rule of its table the same way), the full tunnel's
nftables tables (host/fulltunnel.py); then the stale socket, pid and state files. The TUN and its addresses and
routes went with the daemon: the kernel removes a TUN when its last file descriptor closes.
PreDown and PostDown are not run: the interface they were written for is gone.

Only a state file in a trusted directory (privileges.search_dirs), owned by this user, is ever acted on, and
only its known sysctl paths, with numeric values, are written.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from dataclasses import dataclass

from ..host import dns, fulltunnel, nft, privileges
from ..host.privileges import RUN_DIR

VERSION = 1
SRC_VALID_MARK = "/proc/sys/net/ipv4/conf/all/src_valid_mark"
FORWARDING = (nft.IPV4_FORWARD, nft.IPV6_FORWARD)
SYSCTLS = (SRC_VALID_MARK, *FORWARDING)          # the only paths a state file may name
MAX_STATE = 64 << 10
RT_TABLE_MAIN = 254
FIB_RULE_INVERT = 0x2
NO_SUPPRESS = 0xFFFFFFFF


def netns_id() -> str | None:
    """This process's network namespace, as /proc/PID/ns/net names it (net:[INODE])."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def state_file_path(name: str, create: bool = False) -> str:
    return os.path.join(privileges.runtime_dir(RUN_DIR, create=create), f"{name}.state")


class StateFile:
    """The daemon's record of what it is about to change (written before each change)."""

    def __init__(self, path: str, data: dict) -> None:
        self.path = path
        self.data = data

    @classmethod
    def begin(cls, name: str, config_path: str, mode: str) -> "StateFile":
        """Before anything of `up` happens. Raises OSError (e.g. PrivilegeError for an untrusted directory)."""
        state = cls(state_file_path(name, create=True), {
            "version": VERSION, "interface": name, "pid": os.getpid(), "netns": netns_id(),
            "config": os.path.abspath(config_path), "mode": mode, "sysctls": []})
        state._write()
        return state

    def record_sysctl(self, path: str, value: str) -> None:
        """Before `path` is set to `value`: its current value, unless it already is `value`."""
        try:
            with open(path) as f:
                old = f.read().strip()
        except OSError:
            return
        if old != value and not any(p == path for p, _, _ in self.data["sysctls"]):
            self.data["sysctls"].append([path, old, value])
            self._write()

    def record(self, key: str, value) -> None:
        self.data[key] = value
        self._write()

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except (FileNotFoundError, PermissionError):
            pass     # a daemon that dropped root cannot: `wgpy down` removes it

    def _write(self) -> None:
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@dataclass
class Found:
    path: str
    data: dict | None        # None: unreadable or not a state file of ours (reason in `problem`)
    problem: str | None = None

    @property
    def pid(self) -> int | None:
        pid = (self.data or {}).get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None


def find_state(name: str) -> Found | None:
    """The state file of interface `name` in a trusted directory, or None."""
    for d in privileges.search_dirs(RUN_DIR):
        path = os.path.join(d, f"{name}.state")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            return Found(path, None, f"cannot read {path}: {e.strerror or e}")
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()) or st.st_size > MAX_STATE:
                return Found(path, None, f"{path} is not a state file of this user's")
            if st.st_uid != os.geteuid():
                return Found(path, None, f"{path} belongs to root: cleaning up after that daemon needs root")
            raw = f.read(MAX_STATE)
        try:
            data = json.loads(raw)
        except ValueError:
            return Found(path, None, f"{path} is not valid JSON (remove it once nothing of that daemon is left)")
        if not isinstance(data, dict) or data.get("interface") != name:
            return Found(path, None, f"{path} is not the state file of {name} (remove it once nothing of that "
                                     f"daemon is left)")
        return Found(path, data)
    return None


def _netns_exists(ns: str) -> bool:
    """Whether network namespace `ns` (net:[INODE]) still exists: a process in it, or a name in /run/netns."""
    inode = ns[len("net:["):-1] if ns.startswith("net:[") and ns.endswith("]") else None
    if inode is None or not inode.isdigit():
        return False
    try:
        for entry in os.listdir("/run/netns"):
            try:
                if os.stat(os.path.join("/run/netns", entry)).st_ino == int(inode):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == ns:
                    return True
            except OSError:
                continue
    return False


_SELECTORS = ("FRA_SRC", "FRA_DST", "FRA_IIFNAME", "FRA_OIFNAME", "FRA_FWMARK", "FRA_UID_RANGE", "FRA_IP_PROTO",
              "FRA_SPORT_RANGE", "FRA_DPORT_RANGE", "FRA_L3MDEV", "FRA_TUN_ID")


def _rule_spec(family: int, r) -> tuple[dict, dict]:
    """(the keywords that delete exactly this rule, its attributes) for a dumped rule."""
    a = dict(r["attrs"])
    kw = dict(family=family, table=a.get("FRA_TABLE", r["table"]), priority=a.get("FRA_PRIORITY", 0),
              flags=r["flags"], action=r["action"])
    if "FRA_FWMARK" in a:
        kw.update(fwmark=a["FRA_FWMARK"], fwmask=a.get("FRA_FWMASK", 0xFFFFFFFF))
    if a.get("FRA_SUPPRESS_PREFIXLEN", NO_SUPPRESS) != NO_SUPPRESS:
        kw["suppress_prefixlen"] = a["FRA_SUPPRESS_PREFIXLEN"]
    return kw, a


def _main_key(kw: dict) -> list:
    return [int(kw["family"]), kw["priority"], kw.get("suppress_prefixlen", -1)]


def main_rules() -> list[list]:
    """The rules that look up the main table now, as [family, priority, suppress_prefixlength or -1]: recorded
    before a full tunnel's rules are added, so that recovery knows which main-table rule is the tunnel's."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    keys = []
    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                keys += [_main_key(kw) for kw, _ in (_rule_spec(family, r) for r in ipr.get_rules(family=family))
                         if kw["table"] == RT_TABLE_MAIN]
            except NetlinkError:
                continue
    return keys


def remove_rules(table: int, main_before: list | None = None) -> tuple[int, list[str]]:
    """Delete every policy rule (IPv4 and IPv6) that looks up `table` or matches fwmark `table`, then, unless
    another full tunnel (an inverted fwmark rule) remains, main's `suppress_prefixlength 0` rule and any other
    selector-less main-table rule that was not there before up (`main_before`, from main_rules()).
    Returns (rules deleted, problems)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    deleted, problems = 0, []
    before = [list(k) for k in main_before] if isinstance(main_before, list) else None

    def added_main(kw: dict, a: dict, r) -> bool:
        if kw["table"] != RT_TABLE_MAIN:
            return False
        if kw.get("suppress_prefixlen") == 0:
            return True
        plain = not any(k in a for k in _SELECTORS) and not r["src_len"] and not r["dst_len"] and not r["tos"]
        return before is not None and plain and _main_key(kw) not in before

    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                dumped = ipr.get_rules(family=family)
            except NetlinkError as e:
                if e.code != errno.EAFNOSUPPORT:
                    problems.append(f"cannot list policy rules: {errno.errorcode.get(e.code, e.code)}")
                continue
            rules = [(*_rule_spec(family, r), r) for r in dumped]
            ours = [kw for kw, a, _ in rules if kw["table"] == table or a.get("FRA_FWMARK") == table]
            others = [kw for kw, _, _ in rules if kw not in ours and kw["flags"] & FIB_RULE_INVERT and "fwmark" in kw]
            if not others:
                ours += [kw for kw, a, r in rules if added_main(kw, a, r)]
            for kw in ours:
                try:
                    ipr.rule("del", **kw)
                    deleted += 1
                except NetlinkError as e:
                    if e.code != errno.ENOENT:
                        problems.append(f"cannot delete policy rule {kw}: {errno.errorcode.get(e.code, e.code)}")
    return deleted, problems


def _restore_sysctls(entries: list, skip_forwarding: bool) -> tuple[list[str], list[str]]:
    done, problems = [], []
    for entry in reversed(entries):
        if not (isinstance(entry, list) and len(entry) == 3 and entry[0] in SYSCTLS
                and all(isinstance(v, str) and v.isdigit() for v in entry[1:])):
            problems.append(f"ignored a sysctl entry that wgpy does not write: {entry!r:.80}")
            continue
        path, old, value = entry
        if path in FORWARDING and skip_forwarding:
            done.append(f"{path} left at {value}: another wgpy interface still masquerades here")
            continue
        try:
            with open(path) as f:
                now = f.read().strip()
            if now != value:
                done.append(f"{path} left at {now}: changed since up")
                continue
            with open(path, "w") as f:
                f.write(old)
            done.append(f"{path} {value} -> {old}")
        except OSError as e:
            problems.append(f"cannot restore {path} to {old}: {e.strerror or e}")
    return done, problems


def remove_files(name: str) -> None:
    """The socket (only if nobody listens on it), pid and state files of a daemon that is gone."""
    from ..uapi.server import find_socket
    path = find_socket(name)
    if path is not None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            try:
                os.unlink(path)
            except OSError:
                pass
        except OSError:
            pass        # e.g. EACCES: not ours to judge or remove
        finally:
            s.close()
    for d in privileges.search_dirs(RUN_DIR):
        for leftover in (f"{name}.pid", f"{name}.state", f"{name}.state.tmp"):
            try:
                os.unlink(os.path.join(d, leftover))
            except OSError:
                pass


def recover(name: str, found: Found | None) -> tuple[list[str], list[str]]:
    """Undo what a dead daemon of `name` recorded in `found` (None: no state file; a resolv.conf backup may
    still be there, from a version that wrote no state). The caller has made sure that no daemon of `name`
    runs. Returns (what was done, problems); never raises."""
    data = found.data if found is not None else None
    if found is not None and data is None:
        return [], [found.problem or f"{found.path}: unusable"]
    data = data or {}
    done: list[str] = []
    problems: list[str] = []
    ns = data.get("netns")
    if ns and ns != netns_id():
        if _netns_exists(ns):
            return [], [f"the daemon of {name} ran in another network namespace ({ns}): run `wgpy down {name}` "
                        f"there (e.g. with `ip netns exec`)"]
        done.append(f"its network namespace {ns} is gone, and its rules, sysctls and tables with it")
        remove_files(name)
        return done, problems
    d, p = dns.recover(name, data.get("dns") if isinstance(data.get("dns"), str) else None)
    done += d
    problems += p
    if data.get("nft"):
        deleted, problem = nft.delete_table(name)
        if deleted:
            done.append(f"nft table {nft.table_name(name)} deleted")
        if problem:
            problems.append(problem)
    table = data.get("rules")
    skip_forwarding = bool(nft.other_wgpy_tables()) if data.get("nft") else False   # ours is deleted by now
    if isinstance(table, int) and 0 < table < 2 ** 32:
        try:
            deleted, p = remove_rules(table, data.get("main_rules"))
            problems += p
            if deleted:
                done.append(f"{deleted} policy rule{'s' if deleted != 1 else ''} of table {table} deleted")
        except OSError as e:
            problems.append(f"cannot remove the policy rules of table {table}: {e.strerror or e}")
        d, p = fulltunnel.delete_tables(name)        # the full tunnel's nftables tables, as wg-quick's
        done += [f"nft table {t} deleted" for t in d]
        problems += p
    sysctls = data.get("sysctls")
    if isinstance(sysctls, list):
        d, p = _restore_sysctls(sysctls, skip_forwarding)
        done += d
        problems += p
    remove_files(name)
    return done, problems
