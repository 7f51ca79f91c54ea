"""Session: one configured interface, brought up step by step, each step pushing its undo (undo.py).

1. PreUp                                      undo: PostDown (it runs once PreUp did, even when up fails later)
2. TUN, UDP and UAPI sockets; a UAPI set      undo: close the interface (its addresses and routes go with it)
   from the config (the path `wg` uses)
3. root: addresses, MTU, up, routes           undo: policy rules and sysctls removed, netlink closed
   (netlink); the automatic MTU
   attach (no CAP_NET_ADMIN): adopt the MTU root gave the link; nothing on the host changes
4. root: Masquerade (nft, forwarding)         undo: our table deleted, forwarding restored
5. root: DNS (host/dns.py)                    undo: resolvconf -d, or the previous /etc/resolv.conf back
6. PostUp, then the pid file                  undo: pid file removed
7. up is complete                             "undo": PreDown, the first thing going down does

Before step 1, what an earlier daemon of this name left when it died without tearing down is undone
(recovery.py), then the state file is begun (its undo, removing it, is the last one); before steps 3, 4 and 5
change the host, the state file records what they will change (rules table, sysctls with their previous values,
the nft table, the DNS mode), so that `wgpy down` can undo it after a SIGKILL. A SIGTERM/SIGINT during up
(interrupt.py) is acted on between two steps, or at once during the hooks and the endpoint resolution: the
undo stack then runs and up fails.

teardown() pops and runs the undos newest first and reports what failed on stderr; it never raises for a failed
undo, and a second call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys

from .. import config as cfgmod
from ..constants import DEFAULT_MTU, ETHERNET_HEADER_LEN
from ..daemon import Interface
from ..host import dns, netlink, nft, privileges
from ..host.privileges import RUN_DIR, has_net_admin
from ..settings.values import is_ip
from ..uapi import protocol as uapi
from . import recovery
from .down import is_daemon_of as daemon_check
from .hooks import UpError, hook_errors, run_hook
from .interrupt import UpSignals
from . import routes
from .resolve import resolve_endpoints, resolve_stream_endpoints
from .undo import UndoStack


class Session:
    """One configured interface and the undo stack of what `up` did, for an exact teardown."""

    def __init__(self, cfg: cfgmod.InterfaceConfig, signals: UpSignals | None = None) -> None:
        self.cfg = cfg
        self.attach = not has_net_admin()    # preflight checked that root prepared the TUN for us
        self.iface: Interface | None = None
        self.undo = UndoStack()
        self.signals = signals               # SIGTERM/SIGINT during up (interrupt.py); None: not handled here
        self.state: recovery.StateFile | None = None
        self.notes: list[str] = []           # told to the user besides success or failure (lifecycle.py)

    def up(self) -> None:
        cfg = self.cfg
        self._recover_leftovers()
        with self._interruptible():
            resolved = resolve_endpoints(cfg)
            resolved_streams = resolve_stream_endpoints(cfg)
        try:
            self._begin_state()
            with self._interruptible():
                run_hook(cfg.pre_up, cfg.name, "PreUp")
            self.undo.push("PostDown", lambda: hook_errors(cfg.post_down, cfg.name, "PostDown"))
            self._checkpoint()
            self._open_interface(resolved, resolved_streams)
            self._checkpoint()
            if self.attach:
                self._adopt_link_mtu()
            else:
                self._record_routing()
                self._configure_netlink(resolved)
                self._enable_auto_mtu()
                self._checkpoint()
                self._record_masquerade()
                self._masquerade()
                self._checkpoint()
                self._record_dns()
                self._set_dns()
            with self._interruptible():
                run_hook(cfg.post_up, cfg.name, "PostUp")
            self._write_pidfile()
            self.undo.push("PreDown", lambda: hook_errors(cfg.pre_down, cfg.name, "PreDown"))
            self._checkpoint()
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        if self.signals is not None:
            self.signals.tearing_down()      # a second SIGTERM must not cut the undo short
        for problem in self.undo.unwind():
            print(f"wgpy: {problem}", file=sys.stderr)

    # ---- signals during up, and what a crash would leave (recovery.py) -----------------------------------------

    def _checkpoint(self) -> None:
        if self.signals is not None:
            self.signals.check()

    def _interruptible(self):
        return self.signals.interruptible() if self.signals is not None else contextlib.nullcontext()

    def _recover_leftovers(self) -> None:
        """An earlier daemon of this name died without tearing down: undo what it recorded first, so that its
        resolv.conf backup and the sysctl values from before it are never lost (nothing of this `up` has
        happened yet). Raises UpError if that cannot be done."""
        name = self.cfg.name
        found = recovery.find_state(name)
        if found is None and not os.path.exists(dns.backup_path(name)):
            return
        if found is not None and found.pid is not None and found.pid != os.getpid() and \
                daemon_check(found.pid, name, starting=True):
            raise UpError(f"another `wgpy up` of {name} is running (pid {found.pid})")
        done, problems = recovery.recover(name, found)
        self._note(f"wgpy: {name}: an earlier daemon{f' (pid {found.pid})' if found and found.pid else ''} did "
                   f"not tear down; cleaned up what it left" + "".join(f"\n  {d}" for d in done))
        if found is not None and os.path.lexists(found.path):
            raise UpError("; ".join(problems) or f"{found.path} is in the way")
        for problem in problems:
            self._note(f"wgpy: {problem}")

    def _note(self, text: str) -> None:
        print(text, file=sys.stderr)
        self.notes.append(text)

    def _begin_state(self) -> None:
        self.state = recovery.StateFile.begin(self.cfg.name, self.cfg.path, "attach" if self.attach else "root")
        self.undo.push("state file", self.state.remove)      # the last undo: the record of the others

    def _record_routing(self) -> None:
        """Before the routes: a full tunnel's rules table (= fwmark) and src_valid_mark, should it have one."""
        cfg = self.cfg
        if not routes.full_tunnel(cfg):         # Table = off, a number or a name: no rules
            return
        nets = [n for p in cfg.peers for n in p.allowed_ips if n.prefixlen == 0]
        if nets:
            self.state.record("main_rules", recovery.main_rules())
            self.state.record("rules", routes.choose_table(self.iface.fwmark))   # the one install() takes
            if any(n.version == 4 for n in nets):
                self.state.record_sysctl(recovery.SRC_VALID_MARK, "1")

    def _record_masquerade(self) -> None:
        cfg = self.cfg
        if cfg.masquerade:
            self.state.record("nft", nft.table_name(cfg.name))
            self.state.record_sysctl(nft.IPV4_FORWARD, "1")
            if any(a.version == 6 for a in cfg.addresses):
                self.state.record_sysctl(nft.IPV6_FORWARD, "1")

    def _record_dns(self) -> None:
        cfg = self.cfg
        if cfg.dns_servers or cfg.dns_search:
            self.state.record("dns", "resolvconf" if shutil.which("resolvconf") is not None else "file")

    def drop_privileges(self) -> None:
        """`User =`: hand the UAPI socket to the user, then become that user keeping CAP_NET_ADMIN only."""
        uid, gid, _ = privileges.lookup_user(self.cfg.user)
        os.chown(self.iface.uapi.path, uid, gid)      # so the user's own `wg`/`wgpy show` may use it too
        privileges.open_for_traversal(os.path.dirname(self.iface.uapi.path))   # and can reach it
        privileges.drop_to_user(self.cfg.user)

    # ---- the steps -----------------------------------------------------------------------------------------

    def _open_interface(self, resolved: dict[int, str], resolved_streams: dict[int, dict[str, str]]) -> None:
        cfg = self.cfg
        self.iface = Interface(cfg.name, cfg.mode)
        self.undo.push("interface", self._close_interface)     # close() copes with a half-done open()
        self.iface.open()
        reply = self.iface.handle_uapi("set=1\n" + cfgmod.to_uapi(cfg, resolved, resolved_streams))
        if reply != "errno=0\n\n":
            code = reply.strip().partition("=")[2]
            if code == str(uapi.EADDRINUSE) and (cfg.listen_tcp or cfg.listen_tls):
                ports = [f"UDP {cfg.listen_port}"] * bool(cfg.listen_port) + \
                    [f"TCP {p}" for p in (cfg.listen_tcp, cfg.listen_tls) if p]
                raise UpError(f"cannot listen on port {' or '.join(ports)}: address already in use")
            if code == str(uapi.EADDRINUSE):
                raise UpError(f"cannot listen on UDP port {cfg.listen_port}: address already in use")
            raise UpError(f"configuring the interface failed ({reply.strip()})")
        # host-name endpoints are looked up again while the interface runs (io/reresolve.py)
        names = [(p.public_key, p.endpoint[0], p.endpoint[1], resolved[i]) for i, p in enumerate(cfg.peers)
                 if p.endpoint is not None and i in resolved and not is_ip(p.endpoint[0])]
        if names:
            self.iface.track_endpoint_names(names)

    def _set_link(self, mtu: int | None = None, probe_interval: float | None = None, mtu_auto: bool | None = None,
                  mtu_min: int | None = None) -> None:
        """The core's MTU (the largest plaintext), the re-probe interval and the automatic MTU mode, through the
        UAPI like every setting."""
        reply = self.iface.handle_uapi("set=1\n" + cfgmod.link_uapi(mtu, probe_interval, mtu_auto, mtu_min))
        if reply != "errno=0\n\n":
            raise UpError(f"configuring the interface failed ({reply.strip()})")

    def _close_interface(self) -> None:
        iface, self.iface = self.iface, None
        iface.close()

    def _adopt_link_mtu(self) -> None:
        """Attach mode: the MTU is root's; the core takes the link's."""
        link_mtu = netlink.link_mtu(self.cfg.name)
        if link_mtu and self.cfg.mode == "tap":
            link_mtu += ETHERNET_HEADER_LEN      # L2: the plaintext is the frame, header included
        self._set_link(mtu=link_mtu or DEFAULT_MTU)

    def _configure_netlink(self, resolved: dict[int, str]) -> None:
        cfg = self.cfg
        nl = netlink.NetlinkSetup(cfg.name)

        def undo() -> None:
            try:
                nl.undo()
            finally:
                nl.close()
        self.undo.push("addresses, routes and rules", undo)
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
        self._set_link(mtu=mtu)
        for addr in cfg.addresses:
            nl.add_address(addr, nodad=not l2)
        if l2:
            # the plaintext is the whole frame: the TAP's MTU (which excludes the Ethernet header, as every
            # Ethernet device's does) is the tunnel MTU minus 14 (see docs/architecture.md, "L2 mode")
            nl.set_mtu_up(mtu - ETHERNET_HEADER_LEN)
            return
        nl.set_mtu_up(mtu)
        routes.install(cfg, self.iface, nl, self.undo.push)   # exactly wg-quick's (routes.py)

    def _enable_auto_mtu(self) -> None:
        """No MTU (or `MTU = auto`) in the file: the interface MTU follows the peers' path MTUs (io/pmtu.py).
        An explicit MTU is left alone (path MTUs are still learned from ICMP and reported). Not in attach mode:
        without CAP_NET_ADMIN the MTU is root's (it counts as explicit). One UAPI set: the daemon sets its
        sockets' PMTU discovery mode when it applies wgpy_mtu_auto, starting from the MTU the link got."""
        cfg = self.cfg
        auto = cfg.mtu is None
        if cfg.mtu_probe_interval is None and not auto:
            return
        # Linux removes every IPv6 address of a device whose MTU goes below 1280: not below that with IPv6
        min_mtu = 1280 if any(a.version == 6 for a in cfg.addresses) else 576
        self._set_link(probe_interval=cfg.mtu_probe_interval, mtu_auto=True if auto else None,
                       mtu_min=min_mtu if auto else None)

    def _masquerade(self) -> None:
        cfg = self.cfg
        if not cfg.masquerade:
            return
        masq = nft.Masquerade(cfg.name, cfg.masquerade, ipv6=any(a.version == 6 for a in cfg.addresses))
        self.undo.push("Masquerade", masq.undo)       # undo() copes with a table that was never loaded
        try:
            masq.apply()
        except nft.NftError as e:
            raise UpError(str(e)) from None

    def _set_dns(self) -> None:
        cfg = self.cfg
        try:
            dns.apply(cfg.name, cfg.path, cfg.dns_servers, cfg.dns_search, self.undo.push)
        except dns.DnsError as e:
            raise UpError(str(e)) from None

    def _write_pidfile(self) -> None:
        path = os.path.join(privileges.runtime_dir(RUN_DIR, create=True), f"{self.cfg.name}.pid")

        def undo() -> None:
            try:
                os.unlink(path)
            except (FileNotFoundError, PermissionError):
                pass   # after dropping root: `wgpy down` removes it
        self.undo.push("pid file", undo)
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
