"""Running without root: capability checks, per-user runtime directories, and dropping to a user.

Two ways (README, "Without root"):

* attach: root creates a persistent TUN for a user beforehand (`ip tuntap add dev wg0 mode tun user alice`, plus
  its addresses, MTU, routes and `ip link set wg0 up`); alice's `wgpy up` attaches to it with no capability at all
  and the daemon runs entirely as alice. Its UAPI socket, pid and log files live in a directory of alice's own
  (runtime_dir()) unless the admin made /var/run/wireguard writable for her.
* drop: `wgpy up` started as root with `User = alice` sets everything up as root, then the daemon becomes alice
  keeping exactly one capability, CAP_NET_ADMIN, in its effective, permitted, inheritable, ambient and bounding
  sets. It is needed to undo at `down` what up did (policy routing rules, net.* sysctls, the Masquerade nft
  table: all CAP_NET_ADMIN operations, and the ambient set hands it to the `nft` command and to PreDown/PostDown
  hooks) and to set SO_MARK on the new sockets a `wg set ... listen-port` opens while a fwmark is in use.

Dropping uses prctl(PR_SET_KEEPCAPS), setresgid/setresuid and capset(2) through ctypes (libc), as capabilities(7)
describes; the result is read back from /proc/self/status and checked.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import stat

CAP_NET_ADMIN = 12
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(OSError):
    pass


def capabilities(which: str = "CapEff", pid: str = "self") -> int:
    """A capability set of a process from /proc/PID/status (CapEff, CapPrm, CapInh, CapBnd, CapAmb)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(which + ":"):
                return int(line.split()[1], 16)
    return 0


def has_net_admin() -> bool:
    try:
        return bool(capabilities("CapEff") >> CAP_NET_ADMIN & 1)
    except OSError:
        return os.geteuid() == 0


# ---- where an unprivileged daemon keeps its socket, pid and log files ---------------------------------------

def _own_dir(path: str) -> str:
    """Create `path` (mode 0700) if missing and make sure it is a real directory owned by us, not a trap."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise PrivilegeError(f"{path} is not a private directory owned by uid {os.geteuid()}")
    return path


def user_runtime_dir(create: bool = False) -> str:
    """$XDG_RUNTIME_DIR/wgpy when that is ours, else /tmp/wgpy-UID."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    uid = os.geteuid()
    path = f"/tmp/wgpy-{uid}"
    if base:
        try:
            st = os.stat(base)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
                path = os.path.join(base, "wgpy")
        except OSError:
            pass
    return _own_dir(path) if create else path


SYSTEM_DIR_MODE = 0o755   # /run/wireguard, /run/wgpy: others must reach a socket chown'd to them (User =)
RUN_DIR = "/run/wgpy"     # the daemon's IFACE.pid, IFACE.log and IFACE.resolv.conf (root's; see runtime_dir)


def make_dir(path: str, mode: int) -> None:
    """Create `path` and any missing parents with exactly `mode`, whatever the umask (the umask only ever takes
    bits away: under `umask 077` a plain makedirs(0o755) gives 0700, and a daemon that dropped to another user
    could then not reach its own socket). Directories that already exist are left as they are."""
    parent = os.path.dirname(path.rstrip("/"))
    if parent and not os.path.isdir(parent):
        make_dir(parent, SYSTEM_DIR_MODE)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    os.chmod(path, mode)


def open_for_traversal(path: str) -> bool:
    """Let every user pass through root's directory `path` (mode 0755), as needed before a daemon drops to
    another user whose socket lies in it. wireguard-go creates /var/run/wireguard with 0755 under the caller's
    umask, so after `umask 077` it is 0700 and no other user could reach any socket in it. Only a directory
    owned by root and writable by nobody else is changed. Returns True if it is now traversable."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        return bool(st.st_mode & 0o001)
    if st.st_mode & 0o001:
        return True
    os.chmod(path, SYSTEM_DIR_MODE)
    return True


def untrusted_reason(path: str) -> str | None:
    """Why this process must not trust directory `path` for its daemons' sockets, pid and state files, or None.

    Trusted: a real directory (not a symlink) owned by root or, for a user other than root, by that user, that
    nobody else may write to; every directory above it owned by root or by us and, when others may write to it,
    sticky (as /tmp is: nobody else can rename or remove what we own in it). Root trusts root's directories only:
    a directory another user made, even in a path root would use, is never consulted (a planted socket or pid
    file in it must not reach root's `wgpy show` or `wgpy down`)."""
    uid = os.geteuid()
    owners = (0,) if uid == 0 else (0, uid)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return e.strerror or str(e)
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory" if not stat.S_ISLNK(st.st_mode) else "is a symbolic link"
    if st.st_uid not in owners:
        return f"is owned by uid {st.st_uid}"
    if st.st_mode & 0o022:
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    while True:
        try:
            pst = os.stat(parent)
        except OSError as e:
            return f"{parent}: {e.strerror or e}"
        if pst.st_uid not in owners:
            return f"lies in {parent}, owned by uid {pst.st_uid}"
        if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
            return f"lies in {parent}, writable by other users"
        if parent == "/":
            return None
        parent = os.path.dirname(parent)


def trusted(path: str) -> bool:
    return untrusted_reason(path) is None


def runtime_dir(system_dir: str, create: bool = False) -> str:
    """`system_dir` (e.g. /run/wgpy) for root or when it is a trusted directory writable for us, else
    user_runtime_dir(). Root uses `system_dir` only: with `create`, one that is not root's own (untrusted_reason)
    is refused with PrivilegeError rather than used."""
    if os.geteuid() == 0:
        if create:
            make_dir(system_dir, SYSTEM_DIR_MODE)
            why = untrusted_reason(system_dir)
            if why is not None:
                raise PrivilegeError(f"{system_dir} {why}: root keeps its sockets, pid and state files only in "
                                     f"a directory of its own")
        return system_dir
    if os.access(system_dir, os.W_OK | os.X_OK) and trusted(system_dir):
        if create:
            make_dir(system_dir, SYSTEM_DIR_MODE)
        return system_dir
    return user_runtime_dir(create)


def search_dirs(system_dir: str) -> list[str]:
    """Where to look for a running interface's files: the system directory, then (not for root) our own; only
    directories this process trusts (untrusted_reason), so never /tmp for root."""
    dirs = [system_dir]
    if os.geteuid() != 0:
        own = user_runtime_dir()
        if own not in dirs:
            dirs.append(own)
    return [d for d in dirs if trusted(d)]


# ---- dropping root ---------------------------------------------------------------------------------------------

def lookup_user(user: str) -> tuple[int, int, str | None]:
    """(uid, gid, name) for a user name or a numeric uid (a uid without passwd entry uses gid = uid)."""
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    except KeyError:
        if user.isdigit():
            return int(user), int(user), None
        raise PrivilegeError(f"unknown user {user!r}") from None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"{what}: {os.strerror(err)}")


def drop_to_user(user: str, keep: tuple[int, ...] = (CAP_NET_ADMIN,)) -> tuple[int, int]:
    """Become `user` (all of real, effective and saved uid/gid; the user's groups), keeping only the
    capabilities in `keep`. Must be called as root, before any other thread exists. Returns (uid, gid)."""
    if os.geteuid() != 0:
        raise PrivilegeError("User = ... needs `wgpy up` to be started as root")
    uid, gid, name = lookup_user(user)
    if uid == 0:
        return uid, gid
    libc = _libc()
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    # 1. the bounding set: no exec'd program (setuid or file capabilities) can ever get anything else back
    for cap in range(last_cap + 1):
        if cap not in keep:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap} from the bounding set")
    # 2. keep the permitted set across the uid change, then change every uid and gid
    _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    if name is not None:
        os.initgroups(name, gid)
    else:
        os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _check(libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    # 3. exactly `keep` in effective, permitted and inheritable; raised into the ambient set for child programs
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = data[0].inheritable = mask & 0xFFFFFFFF
    data[1].effective = data[1].permitted = data[1].inheritable = mask >> 32
    _check(libc.capset(ctypes.byref(header), data), "capset")
    for cap in keep:
        _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), "prctl(PR_CAP_AMBIENT_RAISE)")
    # 4. check what we got, from the kernel's point of view
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(f"could not change to uid {uid}, gid {gid}")
    if capabilities("CapEff") != mask or capabilities("CapPrm") != mask:
        raise PrivilegeError(f"capabilities after dropping to {user}: CapEff {capabilities('CapEff'):#x}, "
                             f"expected {mask:#x}")
    return uid, gid
