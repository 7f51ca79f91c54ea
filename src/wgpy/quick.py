"""`wgpy up` / `wgpy down`: what wg-quick does, done by the daemon itself.

up (foreground):  load config -> checks (privilege, name free) -> resolve endpoints -> PreUp -> create TUN,
                  UDP and UAPI sockets -> configure the core through a UAPI set (the same path `wg` uses)
                  -> addresses, MTU, routes (netlink) -> Masquerade (nft, forwarding) -> DNS -> PostUp
                  -> [User =: drop to that user, keeping CAP_NET_ADMIN] -> ready -> event loop
Mode = tap:       a TAP device instead (the core switches Ethernet frames); its MTU is the tunnel MTU minus the
                  Ethernet header, addresses are optional (it may be enslaved to a bridge instead, e.g. in
                  PostUp), IPv6 addresses go through duplicate address detection as on any Ethernet link, and
                  there are no routes (peers have no AllowedIPs in L2).
teardown:         PreDown -> DNS restored -> Masquerade table deleted, forwarding restored -> rules removed,
                  sysctls restored -> TUN closed (its addresses and routes go with it) -> sockets closed -> PostDown
A failure anywhere in `up` runs the teardown of exactly the steps already done, so nothing is left behind.
In the background, `wgpy up` starts the same foreground process detached and waits for its readiness report.

Without CAP_NET_ADMIN, `up` attaches to a persistent TUN that root created for this user beforehand and checks
that root also configured what the file asks for (addresses, MTU, up, routes); it changes nothing outside its
own process and says which commands are missing otherwise (privileges.py, README "Without root").
"""

from __future__ import annotations

import logging
import os
import pwd
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

from . import config as cfgmod
from .constants import DEFAULT_MTU, ETHERNET_HEADER_LEN
from .daemon import Interface, install_signal_handlers
from .host import netlink, nft, privileges
from .host.harden import is_dumpable, no_core_dumps
from .host.privileges import RUN_DIR, has_net_admin
from .io.udp import make_endpoint, format_endpoint
from .uapi import protocol as uapi
from .uapi.server import socket_path as uapi_socket_path

log = logging.getLogger("wgpy")
RESOLV_CONF = "/etc/resolv.conf"

__all__ = ["UpError", "has_net_admin", "preflight", "Session", "up_foreground", "up_background", "down"]


class UpError(Exception):
    pass


def preflight(cfg: cfgmod.InterfaceConfig) -> list[str]:
    """Checks that need no changes to the system. Returns warnings; raises UpError/ConfigError."""
    warnings = []
    w = cfgmod.check_permissions(cfg.path)
    if w:
        warnings.append(w)
    if not has_net_admin():
        _check_attach(cfg)
        return warnings
    if netlink.link_exists(cfg.name):
        raise UpError(f"interface {cfg.name} already exists (in use); choose another name or remove it first")
    if cfg.masquerade and nft.nft_path() is None:
        raise cfgmod.ConfigError(cfg.path, None, "Masquerade",
                                 "needs the `nft` command (Debian package nftables), which is not installed")
    if cfg.user is not None:
        if os.geteuid() != 0:
            raise cfgmod.ConfigError(cfg.path, None, "User", "dropping to another user needs `wgpy up` as root")
        if cfg.dns_servers or cfg.dns_search:
            raise cfgmod.ConfigError(cfg.path, None, "User", "cannot be combined with DNS: the daemon could not "
                                     "restore the resolver configuration at `down` once it is no longer root")
        try:
            privileges.lookup_user(cfg.user)
        except privileges.PrivilegeError as e:
            raise cfgmod.ConfigError(cfg.path, None, "User", str(e)) from None
    return warnings


def _full_tunnel(cfg: cfgmod.InterfaceConfig) -> bool:
    return cfg.table in (None, "auto", "main") and any(n.prefixlen == 0 for p in cfg.peers for n in p.allowed_ips)


def _check_attach(cfg: cfgmod.InterfaceConfig) -> None:
    """Without CAP_NET_ADMIN: only a persistent TUN of ours, prepared by root, will do. Raises UpError naming
    the capability and, when the link exists, exactly the commands root still has to run."""
    name = cfg.name
    owner = _tun_owner(name)
    if owner is None:
        raise UpError(
            f"creating interface {name} needs CAP_NET_ADMIN: run as root, or have root create a persistent TUN "
            f"for this user first (ip tuntap add dev {name} mode {cfg.mode} user {_me()}; see README, Without root)")
    uid, gid = owner
    if uid != os.geteuid() and not (uid == -1 and gid in os.getgroups() + [os.getegid()]):
        raise UpError(f"interface {name} exists but is not a TUN device owned by this user (uid {os.geteuid()}); "
                      f"without CAP_NET_ADMIN wgpy can only attach to one created with `user {_me()}`")
    needs_root = []
    if cfg.user is not None:
        needs_root.append("User (dropping privileges needs `wgpy up` as root)")
    if cfg.fwmark:
        needs_root.append("FwMark (marking packets needs CAP_NET_ADMIN)")
    if _full_tunnel(cfg):
        needs_root.append("AllowedIPs with a /0 (the full-tunnel fwmark and policy rules need CAP_NET_ADMIN; "
                          "with Table = off route it yourself)")
    if cfg.masquerade:
        needs_root.append("Masquerade (nftables and forwarding need CAP_NET_ADMIN)")
    if cfg.dns_servers or cfg.dns_search:
        needs_root.append("DNS (changing the resolver configuration needs root)")
    if needs_root:
        raise UpError(f"without CAP_NET_ADMIN these settings cannot be applied: {'; '.join(needs_root)}")
    missing = _missing_setup(cfg)
    if missing:
        raise UpError(f"interface {name} is a TUN of this user, but without CAP_NET_ADMIN wgpy cannot configure "
                      f"it; have root run:\n  " + "\n  ".join(missing))


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _tun_owner(name: str) -> tuple[int, int] | None:
    """(owner uid, group gid) of TUN device `name` (-1 = none), or None if it is no TUN device."""
    base = f"/sys/class/net/{name}"
    try:
        with open(f"{base}/owner") as f:
            uid = int(f.read())
        with open(f"{base}/group") as f:
            gid = int(f.read())
    except (OSError, ValueError):
        return None
    return uid, gid


def _missing_setup(cfg: cfgmod.InterfaceConfig) -> list[str]:
    """The `ip` commands still needed for what cfg asks (addresses, MTU, up, routes); reading needs no privilege."""
    name = cfg.name
    nl = netlink.NetlinkSetup(name)
    try:
        main_table = cfg.table in (None, "auto", "main")   # routes in another table are root's business
        mtu = cfg.mtu - ETHERNET_HEADER_LEN if cfg.mtu and cfg.mode == "tap" else cfg.mtu   # L2: the TAP's MTU
        return nl.missing(cfg.addresses, mtu,
                          sorted({n for p in cfg.peers for n in p.allowed_ips}, key=lambda n: (n.version, n.prefixlen))
                          if main_table else [])
    finally:
        nl.close()


def resolve_endpoints(cfg: cfgmod.InterfaceConfig) -> dict[int, str]:
    resolved = {}
    for i, peer in enumerate(cfg.peers):
        if peer.endpoint is None:
            continue
        host, port = peer.endpoint
        try:
            ep = make_endpoint(host, port)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except socket.gaierror as e:
                raise cfgmod.ConfigError(cfg.path, peer.line, "Endpoint", f"cannot resolve {host!r}: {e.strerror}") from None
            infos.sort(key=lambda x: x[0] != socket.AF_INET)   # prefer IPv4, as wg does
            ep = make_endpoint(infos[0][4][0], port)
        resolved[i] = format_endpoint(ep)
    return resolved


def resolve_stream_endpoints(cfg: cfgmod.InterfaceConfig) -> dict[int, dict[str, str]]:
    """--- #7 transports: numeric addresses for the host names of tcp:// and tls:// endpoints (the daemon never
    resolves names); a name stays the TLS server name (config.transport_uapi_peer)."""
    resolved: dict[int, dict[str, str]] = {}
    for i, peer in enumerate(cfg.peers):
        for which, ep, key in (("endpoint", peer.stream_endpoint, "Endpoint"),
                               ("fallback", peer.fallback_endpoint, "FallbackEndpoint")):
            if ep is None:
                continue
            _, host, port = ep
            try:
                make_endpoint(host, port)
                continue                      # already numeric
            except ValueError:
                pass
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise cfgmod.ConfigError(cfg.path, peer.line, key, f"cannot resolve {host!r}: {e.strerror}") from None
            infos.sort(key=lambda x: x[0] != socket.AF_INET)
            resolved.setdefault(i, {})[which] = infos[0][4][0]
    return resolved


def run_hook(cmds: list[str], name: str, what: str) -> None:
    for cmd in cmds:
        cmd = cmd.replace("%i", name)
        print(f"[#] {cmd}", file=sys.stderr)
        r = subprocess.run(["bash", "-c", cmd])
        if r.returncode != 0:
            raise UpError(f"{what} command failed with exit code {r.returncode}: {cmd}")


class Session:
    """One configured interface and the record of what `up` did, for an exact teardown."""

    def __init__(self, cfg: cfgmod.InterfaceConfig) -> None:
        self.cfg = cfg
        self.attach = not has_net_admin()    # preflight checked that root prepared the TUN for us
        self.iface: Interface | None = None
        self.nl: netlink.NetlinkSetup | None = None
        self.masq: nft.Masquerade | None = None
        self.dns_set = False
        self.dns_written: tuple[bytes, bytes] | None = None   # (previous, ours) contents of /etc/resolv.conf
        self.pidfile: str | None = None
        self.done_pre_up = False

    def up(self) -> None:
        cfg = self.cfg
        resolved = resolve_endpoints(cfg)
        resolved_streams = resolve_stream_endpoints(cfg)     # --- #7 transports
        try:
            run_hook(cfg.pre_up, cfg.name, "PreUp")
            self.done_pre_up = True
            self.iface = Interface(cfg.name, cfg.mode)
            self.iface.open()
            reply = self.iface.handle_uapi("set=1\n" + cfgmod.to_uapi(cfg, resolved, resolved_streams))
            if reply != "errno=0\n\n":
                code = reply.strip().partition("=")[2]
                if code == str(uapi.EADDRINUSE) and (cfg.listen_tcp or cfg.listen_tls):   # --- #7 transports
                    ports = [f"UDP {cfg.listen_port}"] * bool(cfg.listen_port) + \
                        [f"TCP {p}" for p in (cfg.listen_tcp, cfg.listen_tls) if p]
                    raise UpError(f"cannot listen on port {' or '.join(ports)}: address already in use")
                if code == str(uapi.EADDRINUSE):
                    raise UpError(f"cannot listen on UDP port {cfg.listen_port}: address already in use")
                raise UpError(f"configuring the interface failed ({reply.strip()})")
            if self.attach:
                link_mtu = _link_mtu(cfg.name)
                if link_mtu and cfg.mode == "tap":
                    link_mtu += ETHERNET_HEADER_LEN      # L2: the plaintext is the frame, header included
                self.iface.device.mtu = link_mtu or DEFAULT_MTU
            else:
                self.nl = netlink.NetlinkSetup(cfg.name)
                self._configure_netlink(resolved)
                self._enable_auto_mtu()
                if cfg.masquerade:
                    self.masq = nft.Masquerade(cfg.name, cfg.masquerade,
                                               ipv6=any(a.version == 6 for a in cfg.addresses))
                    try:
                        self.masq.apply()
                    except nft.NftError as e:
                        raise UpError(str(e)) from None
                self._set_dns()
            run_hook(cfg.post_up, cfg.name, "PostUp")
            self._write_pidfile()
        except BaseException:
            self.teardown(run_down_hooks=False)
            raise

    def drop_privileges(self) -> None:
        """`User =`: hand the UAPI socket to the user, then become that user keeping CAP_NET_ADMIN only."""
        uid, gid, _ = privileges.lookup_user(self.cfg.user)
        os.chown(self.iface.uapi.path, uid, gid)      # so the user's own `wg`/`wgpy show` may use it too
        privileges.drop_to_user(self.cfg.user)

    def _configure_netlink(self, resolved: dict[int, str]) -> None:
        cfg, nl = self.cfg, self.nl
        l2 = cfg.mode == "tap"
        mtu = cfg.mtu
        if mtu is None:
            mtus = []
            for ep in resolved.values():
                host = ep.rpartition(":")[0].strip("[]")
                m = nl.route_mtu(host)
                if m:
                    mtus.append(m)
            base = max(mtus) if mtus else nl.default_route_mtu()
            # as wg-quick: route MTU - 80, at least 1280 (IPv6's minimum; in L2 that is the TAP's minimum)
            floor = 1280 + (ETHERNET_HEADER_LEN if l2 else 0)
            mtu = max(base - 80, floor) if base else DEFAULT_MTU
        self.iface.device.mtu = mtu
        for addr in cfg.addresses:
            nl.add_address(addr, nodad=not l2)
        if l2:
            # the plaintext is the whole frame: the TAP's MTU (which excludes the Ethernet header, as every
            # Ethernet device's does) is the tunnel MTU minus 14 (see docs/architecture.md, "L2 mode")
            nl.set_mtu_up(mtu - ETHERNET_HEADER_LEN)
            return
        nl.set_mtu_up(mtu)
        if cfg.table == "off":
            return
        table = None if cfg.table in (None, "auto", "main") else int(cfg.table) if cfg.table.isdigit() else None
        nets = sorted({n for p in cfg.peers for n in p.allowed_ips}, key=lambda n: (n.version, n.prefixlen),
                      reverse=True)
        plain = []
        for net in nets:
            if net.prefixlen == 0 and table is None:
                t = self.iface.fwmark or netlink.DEFAULT_TABLE
                if not self.iface.fwmark:
                    self.iface.set_fwmark(t)
                nl.add_default_route_policy(net, t)
            else:
                plain.append(net)
        netlink.add_routes(plain, nl.index(), table)

    def _enable_auto_mtu(self) -> None:
        """#8: no MTU (or `MTU = auto`) in the file: the interface MTU follows the peers' path MTUs (io/pmtu.py).
        An explicit MTU is left alone (path MTUs are still learned from ICMP and reported). Not in attach mode:
        without CAP_NET_ADMIN the MTU is root's (it counts as explicit)."""
        cfg = self.cfg
        iface = self.iface
        if cfg.mtu_probe_interval is not None:
            iface.device.pmtu_interval = cfg.mtu_probe_interval
        if cfg.mtu is not None:
            return
        l2 = cfg.mode == "tap"
        # Linux removes every IPv6 address of a device whose MTU goes below 1280: not below that with IPv6
        min_mtu = 1280 if any(a.version == 6 for a in cfg.addresses) else 576
        current = iface.device.mtu - (ETHERNET_HEADER_LEN if l2 else 0)
        iface.pmtu.enable_auto(iface.bind.sockets(), min_mtu, cfg.mtu_probe_interval, current)

    def _set_dns(self) -> None:
        """As wg-quick: `resolvconf -a tun.IFACE -m 0 -x` when resolvconf is installed. Without it, wgpy writes
        /etc/resolv.conf itself (the tunnel's servers only, like -x) if that is a plain file, and puts the exact
        previous contents back at down; a symlinked one (systemd-resolved and the like) is left alone."""
        cfg = self.cfg
        if not cfg.dns_servers and not cfg.dns_search:
            return
        text = "".join(f"nameserver {s}\n" for s in cfg.dns_servers)
        if cfg.dns_search:
            text += "search " + " ".join(cfg.dns_search) + "\n"
        if shutil.which("resolvconf") is not None:
            r = subprocess.run(["resolvconf", "-a", f"tun.{cfg.name}", "-m", "0", "-x"], input=text.encode())
            if r.returncode != 0:
                raise UpError("resolvconf failed to apply DNS")
            self.dns_set = True
            return
        if os.path.islink(RESOLV_CONF) or not os.path.isfile(RESOLV_CONF):
            print(f"wgpy: warning: DNS is set in {cfg.path} but resolvconf is not installed and {RESOLV_CONF} is "
                  f"not a plain file; DNS not applied", file=sys.stderr)
            return
        with open(RESOLV_CONF, "rb") as f:
            old = f.read()
        ours = (f"# written by wgpy for {cfg.name}; `wgpy down {cfg.name}` restores the previous file\n"
                + text).encode()
        backup = os.path.join(privileges.runtime_dir(RUN_DIR, create=True), f"{cfg.name}.resolv.conf")
        with open(backup, "wb") as f:     # for a manual restore should the daemon be killed with SIGKILL
            f.write(old)
        self.dns_written = (old, ours)
        with open(RESOLV_CONF, "wb") as f:   # in place: the file may be a bind mount (ip netns exec)
            f.write(ours)

    def _restore_dns(self) -> None:
        old, ours = self.dns_written
        self.dns_written = None
        try:
            with open(RESOLV_CONF, "rb") as f:
                now = f.read()
            if now == ours:
                with open(RESOLV_CONF, "wb") as f:
                    f.write(old)
            else:
                print(f"wgpy: {RESOLV_CONF} was changed since up; left as it is", file=sys.stderr)
            os.unlink(os.path.join(privileges.runtime_dir(RUN_DIR), f"{self.cfg.name}.resolv.conf"))
        except OSError as e:
            print(f"wgpy: cannot restore {RESOLV_CONF}: {e}", file=sys.stderr)

    def _write_pidfile(self) -> None:
        self.pidfile = os.path.join(privileges.runtime_dir(RUN_DIR, create=True), f"{self.cfg.name}.pid")
        with open(self.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")

    def teardown(self, run_down_hooks: bool = True) -> None:
        cfg = self.cfg
        errors = []
        if run_down_hooks:
            try:
                run_hook(cfg.pre_down, cfg.name, "PreDown")
            except UpError as e:
                errors.append(str(e))
        if self.dns_set:
            subprocess.run(["resolvconf", "-d", f"tun.{cfg.name}", "-f"])
            self.dns_set = False
        if self.dns_written is not None:
            self._restore_dns()
        if self.masq is not None:
            errors.extend(self.masq.undo())
            self.masq = None
        if self.nl is not None:
            self.nl.undo()
            self.nl.close()
            self.nl = None
        if self.iface is not None:
            self.iface.close()
            self.iface = None
        if self.pidfile:
            try:
                os.unlink(self.pidfile)
            except (FileNotFoundError, PermissionError):
                pass   # after dropping root: `wgpy down` removes it
            self.pidfile = None
        if run_down_hooks or self.done_pre_up:
            try:
                run_hook(cfg.post_down, cfg.name, "PostDown")
            except UpError as e:
                errors.append(str(e))
        for e in errors:
            print(f"wgpy: {e}", file=sys.stderr)


def up_foreground(path: str, ready_fd: int | None = None) -> int:
    """Run the interface in this process until SIGTERM/SIGINT or until the interface is deleted."""
    def report(msg: str) -> None:
        if ready_fd is not None:
            try:
                os.write(ready_fd, msg.encode())
            except OSError:
                pass

    no_core_dumps()   # before the private key is read
    log.info("core dumps off (RLIMIT_CORE %d, dumpable %d)", resource.getrlimit(resource.RLIMIT_CORE)[1],
             int(is_dumpable()))
    try:
        cfg = cfgmod.load(path)
        for w in preflight(cfg):
            if ready_fd is None:
                print(w, file=sys.stderr)
        session = Session(cfg)
        session.up()
    except (cfgmod.ConfigError, UpError, OSError) as e:
        msg = f"wgpy: {e}"
        print(msg, file=sys.stderr)
        report("ERROR " + msg + "\n")
        return 1
    if cfg.user is not None:
        try:
            session.drop_privileges()
        except OSError as e:
            session.teardown(run_down_hooks=True)
            msg = f"wgpy: cannot run as user {cfg.user}: {e}"
            print(msg, file=sys.stderr)
            report("ERROR " + msg + "\n")
            return 1
        log.info("running as user %s (uid %d) with CAP_NET_ADMIN only", cfg.user, os.getuid())
    install_signal_handlers(session.iface)
    log.info("interface %s is up, listening on UDP port %d", cfg.name, session.iface.listen_port)
    report("READY\n")
    if ready_fd is not None:
        os.close(ready_fd)
    try:
        session.iface.run()
    finally:
        session.teardown(run_down_hooks=True)
    return 0


def up_background(path: str) -> int:
    no_core_dumps()   # this process reads the private key too
    cfg = cfgmod.load(path)
    for w in preflight(cfg):
        print(w, file=sys.stderr)
    logpath = os.path.join(privileges.runtime_dir(RUN_DIR, create=True), f"{cfg.name}.log")
    r, w = os.pipe()
    # the log never holds key material, but it is the daemon's business only: owner-only, like the UAPI socket
    logfd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(logfd, 0o600)
    with os.fdopen(logfd, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wgpy", "up", "--foreground", "--ready-fd", str(w), path],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(w,), start_new_session=True)
    os.close(w)
    buf = b""
    deadline = time.monotonic() + 60
    with os.fdopen(r, "rb") as rf:
        while time.monotonic() < deadline:
            chunk = rf.read1(4096)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                break
    text = buf.decode(errors="replace").strip()
    if text == "READY":
        print(f"wgpy: interface {cfg.name} is up (pid {proc.pid}, log {logpath})", file=sys.stderr)
        return 0
    if text.startswith("ERROR "):
        print(text[6:], file=sys.stderr)
    else:
        print(f"wgpy: the daemon for {cfg.name} did not start; see {logpath}", file=sys.stderr)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    return 1


def _link_mtu(name: str) -> int | None:
    try:
        with open(f"/sys/class/net/{name}/mtu") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _daemon_pid(name: str) -> int | None:
    """The pid of the daemon serving interface `name`: the credentials of its listening UAPI socket
    (SO_PEERCRED), else its pid file; either only if that process still runs wgpy."""
    candidates = []
    path = uapi_socket_path(name)
    if os.path.exists(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(5)
            s.connect(path)
            candidates.append(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("3i")))[0])
        except OSError:
            pass
        finally:
            s.close()
    for d in privileges.search_dirs(RUN_DIR):
        try:
            with open(os.path.join(d, f"{name}.pid")) as f:
                candidates.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
    for pid in candidates:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if pid > 0 and _is_wgpy(f.read().replace(b"\0", b" ").decode(errors="replace")):
                    return pid
        except OSError:
            continue
    return None


def _running(pid: int) -> bool:
    """True while `pid` exists and has not exited (a zombie waiting for its parent has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X")


def _remove_leftovers(name: str) -> None:
    """A daemon that dropped root cannot unlink its socket and pid file in root's directories; once it has
    exited, whoever runs `down` removes them (a socket nobody listens on any more is stale)."""
    path = uapi_socket_path(name)
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
        try:
            os.unlink(os.path.join(d, f"{name}.pid"))
        except OSError:
            pass


def check_interface_name(name: str) -> str | None:
    """Why `name` cannot be an interface name, as the kernel judges it (dev_valid_name) and wg-quick's
    pattern, or None. Names reach paths (/run/wireguard/NAME.sock), so `..` and `/` never pass."""
    if name in (".", ".."):
        return f"invalid interface name {name!r}"
    if not cfgmod._NAME_RE.fullmatch(name):
        shown = name if name.isprintable() and len(name) <= 64 else repr(name[:64])
        return (f"invalid interface name {shown!r}: 1 to 15 characters of A-Z a-z 0-9 _ = + . - "
                f"({len(name)} given)" if len(name) > 15 else
                f"invalid interface name {shown!r}: only A-Z a-z 0-9 _ = + . - are allowed")
    return None


def _tun_holders(name: str) -> list[tuple[int, str]]:
    """(pid, command) of the processes in our network namespace that hold TUN/TAP `name` open: the kernel
    prints `iff: NAME` in the fdinfo of such a file descriptor."""
    try:
        own_ns = os.readlink("/proc/self/ns/net")
    except OSError:
        own_ns = None
    want = f"iff:\t{name}\n"
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if own_ns is not None and os.readlink(f"/proc/{pid}/ns/net") != own_ns:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") != "/dev/net/tun":
                        continue
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        if want in f.read():
                            with open(f"/proc/{pid}/cmdline", "rb") as c:
                                cmd = c.read().replace(b"\0", b" ").decode(errors="replace").strip()
                            holders.append((pid, cmd))
                            break
                except OSError:
                    continue
        except OSError:
            continue
    return holders


def _is_wgpy(cmd: str) -> bool:
    words = cmd.split()
    return any(os.path.basename(w) in ("wgpy", "wgpyd") for w in words[:2]) or \
        (len(words) >= 3 and words[1:3] == ["-m", "wgpy"])


def _stop(pid: int, name: str, timeout: float) -> int:
    """SIGTERM the daemon `pid` of `name` and wait for it (SIGKILL after `timeout`). Returns an exit status."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    except PermissionError:
        print(f"wgpy: not allowed to stop the daemon of {name} (pid {pid}): it runs as another user; run "
              f"`wgpy down {name}` as that user or as root", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        print(f"wgpy: daemon {pid} did not stop in {timeout:.0f}s; killed", file=sys.stderr)
    return 0


def down(name_or_path: str, timeout: float = 15.0) -> int:
    """Stop the daemon of an interface that wgpy (or wgpyd) runs and let it undo what it did; refuse anything
    else. Only TUN/TAP devices held by a wgpy process are ever touched: a bridge, a veth pair, `lo`, or a TUN of
    another program is left alone with a message saying what it is."""
    if name_or_path.endswith(".conf"):
        try:
            name = cfgmod.interface_name_from_path(name_or_path)
        except cfgmod.ConfigError as e:
            print(f"wgpy: {e}", file=sys.stderr)
            return 1
    else:
        name = name_or_path
        why = check_interface_name(name)
        if why is not None:
            print(f"wgpy: {why}", file=sys.stderr)
            return 1
    pid = _daemon_pid(name)
    if pid is not None:
        rc = _stop(pid, name, timeout)
        if rc == 0:
            _remove_leftovers(name)
        return rc
    if not netlink.link_exists(name):
        print(f"wgpy: {name} is not up (no daemon and no interface of that name)", file=sys.stderr)
        _remove_leftovers(name)
        return 1
    kind = netlink.link_kind(name) or "vanished"
    if kind not in ("tun", "tap"):
        print(f"wgpy: {name} is a {kind} interface, not one of wgpy's; not removing it", file=sys.stderr)
        return 1
    sock = uapi_socket_path(name)
    holders = _tun_holders(name)
    if not holders and not has_net_admin() and os.path.exists(sock):
        print(f"wgpy: cannot reach the daemon of {name}: {sock} is not accessible to this user; stopping it "
              f"needs root (or the daemon's own user)", file=sys.stderr)
        return 1
    ours = [(pid, cmd) for pid, cmd in holders if _is_wgpy(cmd)]
    if not ours:
        if holders:
            pid, cmd = holders[0]
            print(f"wgpy: {name} is a {kind.upper()} device of another program (pid {pid}: {cmd[:80]}); "
                  f"not removing it", file=sys.stderr)
        elif not has_net_admin():
            print(f"wgpy: {name} is a {kind.upper()} device, but this user cannot see which program runs it; "
                  f"run `wgpy down {name}` as root", file=sys.stderr)
        else:
            print(f"wgpy: {name} is a persistent {kind.upper()} device that no wgpy daemon runs; not removing it "
                  f"(`ip link del {name}` does)", file=sys.stderr)
        return 1
    rc = 0
    for pid, _cmd in ours:
        rc |= _stop(pid, name, timeout)
    if rc == 0:
        _remove_leftovers(name)
    return rc
