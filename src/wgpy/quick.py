"""`wgpy up` / `wgpy down`: what wg-quick does, done by the daemon itself.

up (foreground):  load config -> checks (privilege, name free) -> resolve endpoints -> PreUp -> create TUN,
                  UDP and UAPI sockets -> configure the core through a UAPI set (the same path `wg` uses)
                  -> addresses, MTU, routes (netlink) -> DNS -> PostUp -> ready -> event loop
Mode = tap:       a TAP device instead (the core switches Ethernet frames); its MTU is the tunnel MTU minus the
                  Ethernet header, addresses are optional (it may be enslaved to a bridge instead, e.g. in
                  PostUp), IPv6 addresses go through duplicate address detection as on any Ethernet link, and
                  there are no routes (peers have no AllowedIPs in L2).
teardown:         PreDown -> DNS removed -> rules removed -> TUN closed (its addresses and routes go with it)
                  -> sockets closed -> PostDown
A failure anywhere in `up` runs the teardown of exactly the steps already done, so nothing is left behind.
In the background, `wgpy up` starts the same foreground process detached and waits for its readiness report.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from . import config as cfgmod
from .constants import DEFAULT_MTU, ETHERNET_HEADER_LEN
from .daemon import Interface, install_signal_handlers
from .io import netlink
from .io.udp import make_endpoint, format_endpoint
from .uapi import protocol as uapi

log = logging.getLogger("wgpy")
RUN_DIR = "/run/wgpy"
CAP_NET_ADMIN = 12


class UpError(Exception):
    pass


def has_net_admin() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


def preflight(cfg: cfgmod.InterfaceConfig) -> list[str]:
    """Checks that need no changes to the system. Returns warnings; raises UpError/ConfigError."""
    warnings = []
    w = cfgmod.check_permissions(cfg.path)
    if w:
        warnings.append(w)
    if not has_net_admin():
        raise UpError(f"creating interface {cfg.name} needs CAP_NET_ADMIN: run as root or grant the capability "
                      f"(e.g. setcap cap_net_admin+ep)")
    if netlink.link_exists(cfg.name):
        raise UpError(f"interface {cfg.name} already exists (in use); choose another name or remove it first")
    return warnings


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
        self.iface: Interface | None = None
        self.nl: netlink.NetlinkSetup | None = None
        self.dns_set = False
        self.pidfile: str | None = None
        self.done_pre_up = False

    def up(self) -> None:
        cfg = self.cfg
        resolved = resolve_endpoints(cfg)
        try:
            run_hook(cfg.pre_up, cfg.name, "PreUp")
            self.done_pre_up = True
            self.iface = Interface(cfg.name, cfg.mode)
            self.iface.open()
            reply = self.iface.handle_uapi("set=1\n" + cfgmod.to_uapi(cfg, resolved))
            if reply != "errno=0\n\n":
                code = reply.strip().partition("=")[2]
                if code == str(uapi.EADDRINUSE):
                    raise UpError(f"cannot listen on UDP port {cfg.listen_port}: address already in use")
                raise UpError(f"configuring the interface failed ({reply.strip()})")
            self.nl = netlink.NetlinkSetup(cfg.name)
            self._configure_netlink(resolved)
            self._set_dns()
            run_hook(cfg.post_up, cfg.name, "PostUp")
            self._write_pidfile()
        except BaseException:
            self.teardown(run_down_hooks=False)
            raise

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

    def _set_dns(self) -> None:
        cfg = self.cfg
        if not cfg.dns_servers and not cfg.dns_search:
            return
        if shutil.which("resolvconf") is None:
            print(f"wgpy: warning: DNS is set in {cfg.path} but resolvconf is not installed; DNS not applied",
                  file=sys.stderr)
            return
        text = "".join(f"nameserver {s}\n" for s in cfg.dns_servers)
        if cfg.dns_search:
            text += "search " + " ".join(cfg.dns_search) + "\n"
        r = subprocess.run(["resolvconf", "-a", f"tun.{cfg.name}", "-m", "0", "-x"], input=text.encode())
        if r.returncode != 0:
            raise UpError("resolvconf failed to apply DNS")
        self.dns_set = True

    def _write_pidfile(self) -> None:
        os.makedirs(RUN_DIR, exist_ok=True)
        self.pidfile = os.path.join(RUN_DIR, f"{self.cfg.name}.pid")
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
            except FileNotFoundError:
                pass
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
    cfg = cfgmod.load(path)
    for w in preflight(cfg):
        print(w, file=sys.stderr)
    os.makedirs(RUN_DIR, exist_ok=True)
    logpath = os.path.join(RUN_DIR, f"{cfg.name}.log")
    r, w = os.pipe()
    with open(logpath, "ab") as logf:
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


def down(name_or_path: str, timeout: float = 15.0) -> int:
    name = cfgmod.interface_name_from_path(name_or_path) if name_or_path.endswith(".conf") else name_or_path
    pidfile = os.path.join(RUN_DIR, f"{name}.pid")
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
    if pid is not None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            print(f"wgpy: daemon {pid} did not stop in {timeout:.0f}s; killed", file=sys.stderr)
        return 0
    if netlink.link_exists(name):
        # a daemon without a pidfile (e.g. wgpyd under wg-quick): deleting the link stops it
        nl = netlink.NetlinkSetup(name)
        try:
            nl.ipr.link("del", index=nl.index())
        finally:
            nl.close()
        return 0
    print(f"wgpy: {name} is not a wgpy interface that is up", file=sys.stderr)
    return 1
