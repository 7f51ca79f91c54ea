"""The namespace lab: a `Lab` owns every resource one test (or one benchmark system) creates -- namespaces,
processes, interfaces, UAPI sockets -- and `Lab.close()` removes all of it, whatever happened.

tests/integration/conftest.py wraps it in pytest fixtures; the topologies (`Topology`) and the mesh of WireGuard
nodes most traffic tests use (`start_mesh`) live here too.  A wgpy config file is `<iface>.conf`, because wgpy
takes the interface name from the file stem.

Self-check mode: with WGPY_IT_STANDIN=wireguard-go in the environment every node of kind "wgpy" is run by
wireguard-go instead.  That lets the traffic tests be validated against a known-good implementation before the
daemon exists; checks that only make sense for wgpy itself call `Lab.require_real_wgpy()` and skip.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .capture import Capture
from .netns import add_address, create_netns, default_route, destroy_netns, link_exists, new_netns_name, ns_pids
from .procs import CommandError, Proc, describe_command, ns_exec, run, wait_for
from .wgconf import (UAPI_DIR, WGPY, WGPY_RUN_DIR, Keypair, PeerSpec, format_endpoint, gen_keypair, render_config,
                     unique_iface, wg_dump, write_config)

ROOT = Path(__file__).resolve().parents[2]
XFER = ROOT / "tests" / "tools" / "xfer.py"
PING_ARGS = ("ping", "-c", "3", "-i", "0.2", "-W", "2")
STANDIN = os.environ.get("WGPY_IT_STANDIN", "").strip()

WGPY_KIND = "wgpy"
WGGO_KIND = "wireguard-go"              # Debian's wireguard-go (0.0.20220316), on PATH
WGGO_UPSTREAM_KIND = "wireguard-go-upstream"   # upstream 0.0.20250522 (GSO/GRO, TUN offloads), beside the project
WGGO_KINDS = (WGGO_KIND, WGGO_UPSTREAM_KIND)
# read-only in ../shared/anchors (its README); WGPY_IT_UPSTREAM_GO points elsewhere
UPSTREAM_WGGO = Path(os.environ.get("WGPY_IT_UPSTREAM_GO")
                     or ROOT.parent / "shared" / "anchors" / "wireguard-go-0.0.20250522")


def upstream_wggo_problem() -> str | None:
    """Why upstream wireguard-go cannot run here, or None."""
    if not (UPSTREAM_WGGO.is_file() and os.access(UPSTREAM_WGGO, os.X_OK)):
        return (f"upstream wireguard-go is missing or not executable at {UPSTREAM_WGGO} (it ships read-only in "
                f"../shared/anchors/; WGPY_IT_UPSTREAM_GO=PATH points elsewhere)")
    return None


def wggo_binary(kind: str) -> str:
    """The executable of a wireguard-go kind; skips the test (pytest) when upstream's is missing."""
    if kind == WGGO_UPSTREAM_KIND:
        problem = upstream_wggo_problem()
        if problem is not None:
            import pytest
            pytest.skip(problem)
        return str(UPSTREAM_WGGO)
    return "wireguard-go"


def ping(ns: str, addr: str, *, timeout: float = 15.0) -> subprocess.CompletedProcess:
    family = "-6" if ":" in addr else "-4"
    return run(ns, *PING_ARGS[:1], family, *PING_ARGS[1:], addr, timeout=timeout, check=False)


def assert_ping(ns: str, addr: str, attempts: int = 3) -> None:
    """At least one echo reply within a bounded number of `ping -c 3 -i 0.2 -W 2` runs (~2.4 s each: three cover
    one lost handshake initiation, retried after REKEY_TIMEOUT 5 s + jitter, as when the peer's daemon was still
    starting)."""
    res = None
    for _ in range(attempts):
        res = ping(ns, addr)
        if res.returncode == 0:
            return
    assert res is not None
    raise AssertionError(f"ping {addr} from {ns} failed:\n{res.stdout}\n{res.stderr}")




# --------------------------------------------------------------------------------------------------------------
# Higher level objects
# --------------------------------------------------------------------------------------------------------------

@dataclass
class WgNode:
    """One running WireGuard interface (wgpy or wireguard-go) in a namespace."""

    kind: str  # what the test asked for: "wgpy", "wireguard-go" (Debian's) or "wireguard-go-upstream"
    impl: str  # what actually runs (differs from kind only in WGPY_IT_STANDIN self-check mode)
    ns: str
    iface: str
    keys: Keypair
    listen_port: int
    addresses: list[str]
    peers: list[PeerSpec]
    config_path: Path | None = None

    @property
    def ips(self) -> list[str]:
        return [a.split("/")[0] for a in self.addresses]

    @property
    def ip4(self) -> str:
        return next(ip for ip in self.ips if ":" not in ip)

    @property
    def ip6(self) -> str:
        return next(ip for ip in self.ips if ":" in ip)

    def dump(self) -> dict[str, Any]:
        return wg_dump(self.ns, self.iface)

    def peer(self, other: "WgNode | str") -> dict[str, Any]:
        key = other.keys.public if isinstance(other, WgNode) else other
        return self.dump()["peers"][key]

    def handshake_with(self, other: "WgNode | str") -> int:
        return self.peer(other)["latest_handshake"]


@dataclass
class Topology:
    """Namespaces and their underlay (veth) addresses; node i lives in ns[i] and is reachable at ip[i]."""

    ns: list[str]
    veth: list[str]
    ip: list[str]
    switch: str | None = None
    peer_veth: list[str] = field(default_factory=list)  # the other end of each node's veth

    def endpoint(self, i: int, port: int) -> str:
        return format_endpoint(self.ip[i], port)


class Transfer:
    """A running xfer.py server/client pair."""

    def __init__(self, server: Proc, client: Proc, timeout: float) -> None:
        self.server, self.client, self.timeout = server, client, timeout

    def done(self) -> bool:
        return not self.client.alive()

    @staticmethod
    def _result(proc: Proc) -> dict[str, Any]:
        lines = [line for line in proc.stdout().splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"no output from xfer\n{proc.describe()}")
        result = json.loads(lines[-1])
        if "error" in result or proc.popen.returncode != 0:
            raise AssertionError(f"xfer failed: {result}\n{proc.describe()}")
        return result

    def wait(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(server_result, client_result) once both finished; raises if either failed or ran out of time."""
        deadline = time.monotonic() + self.timeout + 10
        self.client.wait(max(1.0, deadline - time.monotonic()))
        self.server.wait(max(1.0, deadline - time.monotonic()))
        return self._result(self.server), self._result(self.client)


class Lab:
    """Owner of everything a test creates.  Call close() exactly once (the fixtures do)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = Path(tmp_path)
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []
        self.ifaces: dict[str, str | None] = {}  # WireGuard interface -> namespace
        self._cleanups: list[tuple[str, Callable[[], Any]]] = []
        self._seq = 0
        self.closed = False
        self.wgpy_env: dict[str, str] = {}   # extra environment of every wgpy command (and so its daemon)

    # -- bookkeeping -------------------------------------------------------------------------------------------

    @property
    def wgpy_is_real(self) -> bool:
        return STANDIN != WGGO_KIND

    def require_real_wgpy(self, what: str = "this check") -> None:
        import pytest
        if not self.wgpy_is_real:
            pytest.skip(f"{what} needs the real wgpy (WGPY_IT_STANDIN={STANDIN})")

    def defer(self, description: str, fn: Callable[[], Any]) -> None:
        """Register a cleanup action; they run last-in first-out before processes and namespaces go."""
        self._cleanups.append((description, fn))

    def _next(self, stem: str) -> str:
        self._seq += 1
        return f"{self._seq:02d}-{stem}"

    # -- namespaces and links ----------------------------------------------------------------------------------

    def netns(self) -> str:
        name = new_netns_name()
        self.namespaces.append(name)  # registered first, so a half-made namespace is still removed
        create_netns(name)
        return name

    def veth(self, ns_a: str, ns_b: str, addr_a: str | None = None, addr_b: str | None = None, *,
             up: bool = True) -> tuple[str, str]:
        """A veth pair with one end in each namespace (both ends are created directly there).

        Addresses are CIDR strings; IPv6 ones get `nodad` so they are usable at once.  Returns (name_a, name_b).
        """
        tag = secrets.token_hex(4)
        name_a, name_b = f"v{tag}a", f"v{tag}b"
        run(None, "ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b,
            "netns", ns_b, timeout=10)
        for ns, name, addr in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
            if addr:
                self.add_address(ns, name, addr)
            if up:
                run(ns, "ip", "link", "set", name, "up", timeout=10)
        return name_a, name_b

    @staticmethod
    def add_address(ns: str, dev: str, cidr: str) -> None:
        add_address(ns, dev, cidr)

    # -- processes ---------------------------------------------------------------------------------------------

    def popen(self, ns: str | None, *cmd: Any, env: dict[str, str] | None = None, name: str | None = None,
              stdin: Any = subprocess.DEVNULL) -> Proc:
        """Start a background process (in `ns`), tracked and stopped at teardown; output goes to files."""
        argv = ns_exec(ns, *cmd)
        stem = self._next(name or Path(str(cmd[0])).name)
        logdir = self.tmp / "logs"
        logdir.mkdir(exist_ok=True)
        out, err = logdir / f"{stem}.out", logdir / f"{stem}.err"
        with open(out, "wb") as out_f, open(err, "wb") as err_f:
            popen = subprocess.Popen(argv, stdin=stdin, stdout=out_f, stderr=err_f,
                                     env={**os.environ, **env} if env else None, start_new_session=True)
        proc = Proc(stem, argv, popen, out, err)
        self.procs.append(proc)
        return proc

    # -- wgpy ----------------------------------------------------------------------------------------------------

    def wgpy(self, ns: str | None, *args: Any, timeout: float = 30.0, check: bool = False,
             prefix: Sequence[str] = (), input: str | None = None) -> subprocess.CompletedProcess:
        """Run the wgpy CLI (optionally behind a prefix such as setpriv) inside `ns`."""
        return run(ns, *prefix, WGPY, *args, timeout=timeout, check=check, input=input, env=self.wgpy_env or None)

    def _register_wgpy_iface(self, ns: str, iface: str) -> None:
        if iface in self.ifaces:
            return
        self.ifaces[iface] = ns

        def down() -> None:
            if (UAPI_DIR / f"{iface}.sock").exists() or link_exists(ns, iface) or \
                    (WGPY_RUN_DIR / f"{iface}.state").exists():     # a daemon that died: down cleans up
                run(ns, WGPY, "down", iface, timeout=15, check=False)
        self.defer(f"wgpy down {iface}", down)

    def try_wgpy_up(self, ns: str, config_path: Path, *, prefix: Sequence[str] = (), timeout: float = 30.0,
                    extra_args: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """`wgpy up` that may fail; cleanup (`wgpy down` + killing the namespace) is registered either way."""
        self._register_wgpy_iface(ns, Path(config_path).stem)
        return self.wgpy(ns, "up", *extra_args, config_path, timeout=timeout, prefix=prefix)

    def wgpy_up(self, ns: str, config_path: Path, *, timeout: float = 30.0) -> str:
        """`wgpy up CONFIG` in `ns`; asserts success and returns the interface name (the file stem)."""
        res = self.try_wgpy_up(ns, config_path, timeout=timeout)
        if res.returncode != 0:
            raise CommandError(describe_command(res.args, res.returncode, res.stdout, res.stderr))
        return Path(config_path).stem

    # -- wireguard-go --------------------------------------------------------------------------------------------

    def wireguard_go_up(self, ns: str, iface: str, private_key: str, listen_port: int | None,
                        peers: Iterable[PeerSpec], address: str | Sequence[str], *, mtu: int = 1420,
                        binary: str = "wireguard-go") -> str:
        """Run `wireguard-go -f IFACE` in `ns` and configure it like wg-quick would; returns `iface`. `binary`:
        Debian's on PATH by default, or another build (wggo_binary(WGGO_UPSTREAM_KIND))."""
        peers = list(peers)
        addresses = [address] if isinstance(address, str) else list(address)
        sock = UAPI_DIR / f"{iface}.sock"
        proc = self.popen(ns, binary, "-f", iface, env={"LOG_LEVEL": "error"},
                          name=f"wireguard-go-{iface}")
        self.ifaces[iface] = ns
        wait_for(lambda: sock.exists() or not proc.alive(), 10, what=f"{sock} to appear")
        if not proc.alive():
            raise CommandError(f"wireguard-go exited early\n{proc.describe()}")
        conf = write_config(self.tmp, f"{iface}-setconf", render_config(private_key, listen_port, peers))
        run(ns, "wg", "setconf", iface, conf, timeout=10)
        for addr in addresses:
            self.add_address(ns, iface, addr)
        run(ns, "ip", "link", "set", "dev", iface, "mtu", str(mtu), "up", timeout=10)
        nets = [ipaddress.ip_interface(a).network for a in addresses]
        for peer in peers:
            for cidr in peer.allowed_ips:
                net = ipaddress.ip_network(cidr, strict=False)
                if any(net.version == n.version and net.subnet_of(n) for n in nets):
                    continue  # already covered by the address's connected route
                run(ns, "ip", "-6" if net.version == 6 else "-4", "route", "replace", str(net), "dev", iface,
                    timeout=10)
        return iface

    # -- generic node ----------------------------------------------------------------------------------------------

    def node(self, kind: str, ns: str, *, keys: Keypair, listen_port: int, addresses: Sequence[str],
             peers: Iterable[PeerSpec] = (), iface: str | None = None, mtu: int = 1420) -> WgNode:
        """Start a WireGuard interface of `kind` ("wgpy", "wireguard-go" or "wireguard-go-upstream")."""
        peers = list(peers)
        iface = iface or unique_iface()
        impl = WGGO_KIND if (kind == WGGO_KIND or (kind == WGPY_KIND and STANDIN == WGGO_KIND)) else kind
        node = WgNode(kind, impl, ns, iface, keys, listen_port, list(addresses), peers)
        if impl == WGPY_KIND:
            text = render_config(keys.private, listen_port, peers, addresses=addresses, mtu=mtu)
            node.config_path = write_config(self.tmp, iface, text)
            self.wgpy_up(ns, node.config_path)
        elif impl in WGGO_KINDS:
            self.wireguard_go_up(ns, iface, keys.private, listen_port, peers, list(addresses), mtu=mtu,
                                 binary=wggo_binary(impl))
        else:
            raise ValueError(f"unknown node kind {kind!r}")
        return node

    # -- traffic ---------------------------------------------------------------------------------------------------

    def start_transfer(self, ns_server: str, ns_client: str, server_ip: str, nbytes: int, timeout: float = 60.0,
                       *, port: int = 5201, rate: float | None = None) -> Transfer:
        """Start xfer.py serve in `ns_server` and xfer.py send in `ns_client`; returns at once."""
        server = self.popen(ns_server, sys.executable, XFER, "serve", port, "--timeout", timeout,
                            name="xfer-serve")
        wait_for(lambda: '"listening"' in server.stdout() or not server.alive(), 10, what="xfer server")
        if not server.alive() and '"listening"' not in server.stdout():
            raise CommandError(f"xfer server did not start\n{server.describe()}")
        client_args = ["--timeout", timeout] + (["--rate", rate] if rate else [])
        client = self.popen(ns_client, sys.executable, XFER, "send", server_ip, port, nbytes, *client_args,
                            name="xfer-send")
        return Transfer(server, client, timeout)

    def transfer(self, ns_server: str, ns_client: str, server_ip: str, nbytes: int,
                 timeout: float = 60.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send `nbytes` random bytes over TCP from `ns_client` to `server_ip` in `ns_server`.

        Returns (server_result, client_result); each has "sha256" and "bytes".
        """
        return self.start_transfer(ns_server, ns_client, server_ip, nbytes, timeout).wait()

    def capture(self, ns: str, iface: str, bpf: str, name: str = "capture") -> Capture:
        """Start tcpdump on `iface` in `ns` (pcap written unbuffered), returning once it is listening."""
        path = self.tmp / f"{self._next(name)}.pcap"
        proc = self.popen(ns, "tcpdump", "-i", iface, "-n", "-U", "-Z", "root", "-w", path, *shlex.split(bpf),
                          name=f"tcpdump-{iface}")
        wait_for(lambda: "listening on" in proc.stderr() or not proc.alive(), 10, what="tcpdump to listen")
        if not proc.alive():
            raise CommandError(f"tcpdump failed\n{proc.describe()}")
        return Capture(proc, path)

    # -- teardown --------------------------------------------------------------------------------------------------

    def diagnostics(self) -> str:
        """Human readable state of everything the lab made, for failure reports."""
        parts = []
        for ns in self.namespaces:
            if not Path("/var/run/netns", ns).exists():
                continue
            for cmd in (("ip", "-br", "addr"), ("ip", "route"), ("ip", "-6", "route")):
                res = run(ns, *cmd, timeout=5, check=False)
                parts.append(f"[{ns}] $ {' '.join(cmd)}\n{res.stdout}{res.stderr}")
            parts.append(f"[{ns}] pids: {sorted(ns_pids(ns))}")
        for iface, ns in self.ifaces.items():
            res = run(ns, "wg", "show", iface, timeout=5, check=False)
            parts.append(f"[{ns}] $ wg show {iface}\n{res.stdout}{res.stderr}")
        for proc in self.procs:
            parts.append(f"process {proc.name}: {proc.describe()}")
        for iface in self.ifaces:
            log = WGPY_RUN_DIR / f"{iface}.log"
            if log.exists():
                parts.append(f"wgpy log {log} (tail):\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def close(self) -> list[str]:
        """Tear everything down; returns a list of problems (never raises for ordinary cleanup errors)."""
        if self.closed:
            return []
        self.closed = True
        problems: list[str] = []
        for description, fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:  # keep going: the namespace kill below is the real safety net
                problems.append(f"{description}: {exc!r}")
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as exc:
                problems.append(f"stop {proc.name}: {exc!r}")
        for ns in reversed(self.namespaces):
            try:
                destroy_netns(ns)
            except Exception as exc:
                problems.append(f"destroy {ns}: {exc!r}")
        for iface in self.ifaces:  # names are unique to this test, and every process using them is gone
            for leftover in (UAPI_DIR / f"{iface}.sock", WGPY_RUN_DIR / f"{iface}.pid", WGPY_RUN_DIR / f"{iface}.log",
                             WGPY_RUN_DIR / f"{iface}.state", WGPY_RUN_DIR / f"{iface}.state.tmp",
                             WGPY_RUN_DIR / f"{iface}.resolv.conf"):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError as exc:
                    problems.append(f"unlink {leftover}: {exc!r}")
        return problems


# --------------------------------------------------------------------------------------------------------------
# Mesh setup used by most traffic tests
# --------------------------------------------------------------------------------------------------------------

BASE_PORT = 51820


def inner_addresses(i: int, inner_v6: bool) -> list[str]:
    addrs = [f"10.99.0.{i + 1}/24"]
    if inner_v6:
        addrs.append(f"fd99::{i + 1}/64")
    return addrs


def start_mesh(lab: Lab, topo: Topology, kinds: Sequence[str], *, inner_v6: bool = False,
               knows_endpoint: Callable[[int, int], bool] = lambda i, j: True,
               peer_tweak: Callable[[int, int, PeerSpec], PeerSpec] | None = None,
               keys: Sequence[Keypair] | None = None) -> list[WgNode]:
    """Start one WireGuard node per kind, node i in topo.ns[i], all peered with each other.

    Node i: tunnel addresses 10.99.0.<i+1>/24 (+ fd99::<i+1>/64 with inner_v6), listen port 51820+i.
    It knows peer j's endpoint iff knows_endpoint(i, j); peer_tweak(i, j, spec) may alter what i believes about j
    (wrong key, preshared key, ...).
    """
    keys = list(keys) if keys else [gen_keypair() for _ in kinds]
    nodes = []
    for i, kind in enumerate(kinds):
        peers = []
        for j in range(len(kinds)):
            if j == i:
                continue
            allowed = tuple(f"{a.split('/')[0]}/{32 if ':' not in a else 128}" for a in inner_addresses(j, inner_v6))
            spec = PeerSpec(keys[j].public, allowed,
                            endpoint=topo.endpoint(j, BASE_PORT + j) if knows_endpoint(i, j) else None)
            if peer_tweak:
                spec = peer_tweak(i, j, spec)
            peers.append(spec)
        nodes.append(lab.node(kind, topo.ns[i], keys=keys[i], listen_port=BASE_PORT + i,
                              addresses=inner_addresses(i, inner_v6), peers=peers))
    return nodes


def lan_host(lab: "Lab", bridge_ns: str, bridge: str, cidr: str, gateway: str) -> str:
    """A new namespace plugged into `bridge` (in `bridge_ns`) with address `cidr` and default route `gateway`."""
    ns = lab.netns()
    _, port = lab.veth(ns, bridge_ns, cidr, None)
    run(bridge_ns, "ip", "link", "set", port, "master", bridge, "up", timeout=10)
    default_route(ns, gateway)
    return ns

