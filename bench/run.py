"""wgpy's one-command benchmark: wgpy<->wgpy next to upstream wireguard-go and Debian's wireguard-go, in one run.

    (as root) .venv/bin/python bench/run.py [--repeats 3] [--duration 10]
                                       [--impl wgpy,wireguard-go-upstream,wireguard-go-debian,veth,...]
                                       [--only SYSTEM] [--no-baseline] [--l2] [--transport tcp|tls|both]
                                       [--upstream-go PATH] [--json out.json]

Systems (tunnels are always between two ends of the same implementation):

  * wgpy                   wgpy over UDP (L3, TUN)
  * wireguard-go-upstream  upstream wireguard-go 0.0.20250522 (../shared/anchors/, or --upstream-go PATH): the
                           batched data path (TUN IFF_VNET_HDR with TSO/USO, UDP GSO/GRO), set up by the binary itself
  * wireguard-go-debian    Debian's wireguard-go package (0.0.20220316, `wireguard-go` on PATH): one packet per
                           system call; `wireguard-go` is accepted as its old name
  * veth                   the same namespace pair without a tunnel, as context (unless --no-baseline)
  * wgpy-l2, wgpy-tcp, wgpy-tls   with --l2 / --transport (wgpy only: wireguard-go has no TAP and no TCP/TLS transport)

The default run is veth, wgpy, wireguard-go-upstream, wireguard-go-debian; `--impl` picks a list of systems (the
veth baseline is added unless --no-baseline), `--only` exactly one. A wireguard-go binary that is missing is skipped
with the reason (printed, and under the table); asked for explicitly, it is an error.

For every repeat and every system, two fresh network namespaces joined by a veth (underlay 192.168.N.1-2/24, MTU
1500) get a tunnel (inner 10.N.0.1-2/24, MTU 1420) and then, through the tunnel:

  * ping RTT           ping -c 50 -i 0.01 (avg and median)
  * TCP, 1 stream      iperf3 -t DURATION            + CPU of both tunnel daemons during the run
  * TCP, 4 streams     iperf3 -t DURATION -P 4       + CPU of both tunnel daemons during the run
  * UDP, fixed rate    iperf3 -u -b 1G -l 1392       (achieved Mbit/s at the receiver, loss %, jitter)

"veth" is the same namespace pair without a tunnel (TCP single stream and ping over the underlay), as context.
"wgpy-l2" (with --l2, or --only wgpy-l2) is wgpy in L2 mode: Mode = tap on both ends, the inner addresses on the
TAP devices (MTU 1420 - 14 = 1406), so every packet crosses the tunnel as an Ethernet frame through the learning
switch; its UDP test uses the largest payload that fits the TAP's MTU (1378).
"wgpy-tcp" / "wgpy-tls" (with --transport, or --only) are wgpy with the TCP or TLS transport (docs/transports.md):
the second namespace listens (ListenTCP / ListenTLS, a self-signed P-256 certificate), the first has
Endpoint = tcp://... or tls://... (pinned fingerprint) and no UDP path at all; same tunnel MTU.
Systems alternate order from one repeat to the next (A B C, C B A, ...), so slow drift of the machine hits all of
them alike.

CPU is the sum of utime+stime deltas of the two tunnel daemons' process trees (/proc/PID/stat of the daemon, which
counts all its threads, Go's runtime threads included, plus its live descendants and the children it reaped) over
the iperf3 client's wall time, as % of one core, and as CPU microseconds per MSS-sized segment (received bytes /
1368). The average packet the kernel hands the sending end's tunnel device (> 1420 B: TSO super-packets, so TUN
offloads are on) and the average packet its daemon puts on the underlay veth (> 1500 B: UDP GSO trains) show
which offloads each implementation actually uses.

Everything the script makes (namespaces, daemons, interfaces, config files) is removed at the end, also on
Ctrl-C, SIGTERM or an error; every command runs with a timeout.  Namespaces are named `wgpyb-<pid>-<n>`, tunnel
interfaces `wgb<6 hex>`; leftovers of a benchmark run that died (its pid is gone) are removed at start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from wgpy_testkit.netns import (NETNS_DIR, cleanup_stale_namespaces, create_netns, destroy_netns, link_stats,
                                new_netns_name, ns_pids)
from wgpy_testkit.procs import CommandError, kill_group, ns_exec, run, wait_for
from wgpy_testkit.wgconf import UAPI_DIR, WGPY_RUN_DIR, gen_keypair, unique_iface, write_config

ROOT = Path(__file__).resolve().parents[1]
NS_PREFIX = f"wgpyb-{os.getpid()}-"
NS_RE = re.compile(r"^wgpyb-(\d+)-\d+$")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SEGMENT = 1368          # TCP payload per packet at tunnel MTU 1420: 1420 - 20 (IPv4) - 20 (TCP) - 12 (timestamps)
TUNNEL_MTU = 1420
UNDERLAY_MTU = 1500
IPERF_PORT = 5201

UPSTREAM = "wireguard-go-upstream"
DEBIAN = "wireguard-go-debian"
SYSTEMS = ("wgpy", UPSTREAM, DEBIAN, "veth", "wgpy-l2", "wgpy-tcp", "wgpy-tls")
ALIASES = {"wireguard-go": DEBIAN}          # the name Debian's build had when it was the only wireguard-go here
GO_SYSTEMS = (UPSTREAM, DEBIAN)
STREAM_SYSTEMS = {"wgpy-tcp": "tcp", "wgpy-tls": "tls"}      # issue 7: wgpy over a TCP or TLS transport
STREAM_PORT = 4430
L2_MTU = TUNNEL_MTU - 14   # the TAP's MTU in L2 mode: the tunnel MTU minus the Ethernet header
TUNNELS = ("wgpy", UPSTREAM, DEBIAN)
# upstream wireguard-go 0.0.20250522, shipped read-only beside the project (its README: ../shared/anchors/README.md)
UPSTREAM_GO = ROOT.parent / "shared" / "anchors" / "wireguard-go-0.0.20250522"
# the reference wgpy is compared with, in the order of the ratio columns
REFERENCES = ((UPSTREAM, "upstream"), (DEBIAN, "Debian"))


def find_wgpy() -> Path:
    for cand in (Path(sys.executable).parent / "wgpy", ROOT / ".venv" / "bin" / "wgpy"):
        if cand.exists():
            return cand
    raise SystemExit("bench: cannot find the wgpy command (run with .venv/bin/python)")


# ----------------------------------------------------------------------------------------------------------------
# Processes and the machine (commands, namespaces and configs are wgpy_testkit's, always bounded)
# ----------------------------------------------------------------------------------------------------------------

class BenchError(RuntimeError):
    """A system under test misbehaved (a daemon exited, a tool gave no result); commands that fail raise
    wgpy_testkit's CommandError, wait_for's deadlines WaitTimeout."""


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after "pid (comm)": index 0 is field 3 (state) of proc(5)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """The live descendants of `pid` (children, their children, ...), from the ppid field of every /proc/N/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                children.setdefault(int(proc_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):      # gone meanwhile
                pass
    out, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, ()))
    return out


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) CPU of a daemon's process tree, in clock ticks: the daemon's utime/stime (which count all its
    threads, Go's runtime threads or a native data path's workers alike), the cutime/cstime of children it reaped,
    and the same of every live descendant (a daemon that forks workers)."""
    fields = proc_stat(pid)                         # the daemon itself must exist: a vanished daemon is an error
    user, system = int(fields[11]) + int(fields[13]), int(fields[12]) + int(fields[14])    # utime+cutime, stime+cstime
    for child in descendants(pid):
        try:
            f = proc_stat(child)
        except OSError:
            continue
        user += int(f[11]) + int(f[13])
        system += int(f[12]) + int(f[14])
    return user, system


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)      # idle + iowait
    total = sum(vals[:8])                                   # guest time is already inside user
    return total - idle, total


def background_busy(seconds: float = 1.0) -> float:
    """% of the whole machine (all cores) busy over `seconds`, while this script is idle."""
    b0, t0 = machine_jiffies()
    time.sleep(seconds)
    b1, t1 = machine_jiffies()
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ----------------------------------------------------------------------------------------------------------------
# Lab: everything one system-under-test creates, and its teardown
# ----------------------------------------------------------------------------------------------------------------

_open_labs: list["Lab"] = []


def remove_stale_namespaces() -> None:
    """Namespaces of an earlier benchmark run whose process is gone (only `wgpyb-*`: nobody else uses it)."""
    for name in cleanup_stale_namespaces(only_ours=False, pattern=NS_RE):
        print(f"bench: removed stale namespace {name}", file=sys.stderr)


class Lab:
    def __init__(self, wgpy: Path) -> None:
        self.wgpy = wgpy
        self.tmp = Path(tempfile.mkdtemp(prefix="wgpy-bench-"))
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.wgpy_ifaces: list[tuple[str, str]] = []    # (ns, iface) to `wgpy down`
        self.ifaces: list[str] = []
        self.closed = False
        _open_labs.append(self)

    def netns(self) -> str:
        name = new_netns_name(NS_PREFIX)
        self.namespaces.append(name)            # registered first: a half-made namespace is still removed
        create_netns(name)
        return name

    def veth(self, ns_a: str, ns_b: str, cidr_a: str, cidr_b: str) -> tuple[str, str]:
        tag = secrets.token_hex(4)
        a, b = f"vb{tag}a", f"vb{tag}b"
        run(None, "ip", "link", "add", a, "mtu", UNDERLAY_MTU, "netns", ns_a, "type", "veth",
            "peer", "name", b, "mtu", UNDERLAY_MTU, "netns", ns_b, timeout=10)
        for ns, dev, cidr in ((ns_a, a, cidr_a), (ns_b, b, cidr_b)):
            run(ns, "ip", "addr", "add", cidr, "dev", dev, timeout=10)
            run(ns, "ip", "link", "set", dev, "up", timeout=10)
        return a, b

    def popen(self, ns: str, *argv: Any, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(self.tmp / f"{name}.out", "wb")
        err = open(self.tmp / f"{name}.err", "wb")
        try:
            proc = subprocess.Popen(ns_exec(ns, *argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env={**os.environ, **env} if env else None, start_new_session=True)
        finally:
            out.close()
            err.close()
        self.procs.append(proc)
        return proc

    def output(self, name: str) -> str:
        parts = []
        for ext in ("out", "err"):
            p = self.tmp / f"{name}.{ext}"
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for ns, iface in reversed(self.wgpy_ifaces):
            if (NETNS_DIR / ns).exists() and (WGPY_RUN_DIR / f"{iface}.pid").exists():
                run(ns, self.wgpy, "down", iface, timeout=20, check=False)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    kill_group(proc)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self.namespaces):
            destroy_netns(ns)
        for iface in self.ifaces:            # unique names of ours; left behind only by a killed daemon
            for p in (UAPI_DIR / f"{iface}.sock", WGPY_RUN_DIR / f"{iface}.pid", WGPY_RUN_DIR / f"{iface}.log"):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self in _open_labs:
            _open_labs.remove(self)


def close_all_labs() -> None:
    for lab in list(reversed(_open_labs)):
        try:
            lab.close()
        except Exception as exc:          # keep going: the other labs must go too
            print(f"bench: cleanup problem: {exc!r}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------------
# A pair of namespaces with (or without) a tunnel between them
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Pair:
    system: str
    lab: Lab
    ns: tuple[str, str]
    target: str                      # the address ns[0] sends to in ns[1] (inner, or underlay for veth)
    ifaces: tuple[str, str] = ("", "")
    daemon_pids: list[int] = field(default_factory=list)
    underlay: tuple[str, str] = ("", "")    # the veth ends in ns[0] and ns[1]


def wg_config(private: str, port: int, peer_public: str, endpoint: str | None, allowed: str,
              address: str | None = None, l2: bool = False, interface_extra: Sequence[str] = (),
              peer_extra: Sequence[str] = ()) -> str:
    lines = ["[Interface]", f"PrivateKey = {private}", f"ListenPort = {port}"]
    if address:                           # wg-quick keys: only in the wgpy config, not for `wg setconf`
        lines += [f"Address = {address}", f"MTU = {TUNNEL_MTU}"]
    if l2:                                # L2: a TAP; peers take no AllowedIPs (frames are switched by MAC)
        lines += ["Mode = tap"]
    lines += list(interface_extra)
    lines += ["", "[Peer]", f"PublicKey = {peer_public}"] + ([f"Endpoint = {endpoint}"] if endpoint else [])
    lines += list(peer_extra)
    if not l2:
        lines += [f"AllowedIPs = {allowed}"]
    return "\n".join(lines) + "\n"


def stream_cert(lab: Lab) -> tuple[Path, Path, str]:
    """A self-signed certificate for the TLS transport (docs/transports.md's recipe) and its SHA-256 pin."""
    cert, key = lab.tmp / "tls-cert.pem", lab.tmp / "tls-key.pem"
    if not cert.exists():
        run(None, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=bench.wgpy.test", timeout=30)
    fp = run(None, "openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256", timeout=10).stdout
    return cert, key, fp.strip().split("=", 1)[1]


def setup_pair(lab: Lab, system: str, net: int, go_binary: str | None = None) -> Pair:
    """Two namespaces, a veth, and `system`'s tunnel over it (for a wireguard-go system, `go_binary` is the
    executable); returns once a ping crosses the tunnel."""
    ns_a, ns_b = lab.netns(), lab.netns()
    under = (f"192.168.{net}.1", f"192.168.{net}.2")
    inner = (f"10.{net}.0.1", f"10.{net}.0.2")
    veths = lab.veth(ns_a, ns_b, f"{under[0]}/24", f"{under[1]}/24")
    if system == "veth":
        return Pair(system, lab, (ns_a, ns_b), under[1], underlay=veths)
    keys = (gen_keypair(), gen_keypair())
    ports = (51820, 51821)
    ifaces = (unique_iface("wgb"), unique_iface("wgb"))
    lab.ifaces.extend(ifaces)
    pair = Pair(system, lab, (ns_a, ns_b), inner[1], ifaces, underlay=veths)
    for i, (ns, iface) in enumerate(zip(pair.ns, ifaces)):
        j = 1 - i
        args = (keys[i].private, ports[i], keys[j].public, f"{under[j]}:{ports[j]}", f"{inner[j]}/32")
        extra: dict[str, Any] = {}
        if system in STREAM_SYSTEMS:      # node 0 connects to node 1's TCP/TLS port; no UDP endpoint at all
            scheme = STREAM_SYSTEMS[system]
            args = args[:3] + (None,) + args[4:]
            if i == 0:
                extra["peer_extra"] = [f"Endpoint = {scheme}://{under[1]}:{STREAM_PORT}"]
                if scheme == "tls":
                    extra["peer_extra"].append(f"TLSPin = {stream_cert(lab)[2]}")
            elif scheme == "tcp":
                extra["interface_extra"] = [f"ListenTCP = {STREAM_PORT}"]
            else:
                cert, key, _ = stream_cert(lab)
                extra["interface_extra"] = [f"ListenTLS = {STREAM_PORT}", f"CertificateFile = {cert}",
                                            f"KeyFile = {key}"]
        if system in ("wgpy", "wgpy-l2") or system in STREAM_SYSTEMS:
            conf = write_config(lab.tmp, iface, wg_config(*args, address=f"{inner[i]}/24",
                                                                      l2=system == "wgpy-l2", **extra))
            lab.wgpy_ifaces.append((ns, iface))          # before `up`: a half-done up is undone too
            res = run(ns, lab.wgpy, "up", conf, timeout=60, check=False)
            if res.returncode != 0:
                log = WGPY_RUN_DIR / f"{iface}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BenchError(f"wgpy up {conf} failed ({res.returncode}):\n{res.stdout}{res.stderr}{tail}")
            pidfile = WGPY_RUN_DIR / f"{iface}.pid"
            pid = int(wait_for(lambda: pidfile.read_text().strip(), 10, what=f"{pidfile}", interval=0.05))
        else:
            if system not in GO_SYSTEMS or not go_binary:
                raise BenchError(f"{system}: no wireguard-go binary given")
            # `ip netns exec` execs, and -f keeps wireguard-go in the foreground: proc.pid is the daemon itself
            proc = lab.popen(ns, go_binary, "-f", iface, name=f"{system}-{iface}", env={"LOG_LEVEL": "error"})
            sock = UAPI_DIR / f"{iface}.sock"
            wait_for(lambda: sock.exists() or proc.poll() is not None, 15, what=f"{sock}", interval=0.05)
            if proc.poll() is not None:
                raise BenchError(f"{system} ({go_binary}) {iface} exited: {lab.output(f'{system}-{iface}')}")
            conf = write_config(lab.tmp, f"{iface}-setconf", wg_config(*args))
            run(ns, "wg", "setconf", iface, conf, timeout=10)
            run(ns, "ip", "addr", "add", f"{inner[i]}/24", "dev", iface, timeout=10)
            run(ns, "ip", "link", "set", "dev", iface, "mtu", TUNNEL_MTU, "up", timeout=10)
            pid = proc.pid
            if pid not in ns_pids(ns) or comm(pid) != Path(go_binary).name[:15]:     # comm: 15 chars at most
                raise BenchError(f"{system}: pid {pid} ({comm(pid)!r}) is not a wireguard-go daemon in {ns}")
        pair.daemon_pids.append(pid)
    # first packet: handshake; wait until the tunnel carries traffic both ways
    wait_for(lambda: run(ns_a, "ping", "-c", "1", "-W", "1", inner[1], timeout=5, check=False).returncode == 0,
             20, what=f"{system} tunnel to answer ping", interval=0.2)
    return pair


# ----------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------

def measure_ping(pair: Pair, count: int) -> dict[str, Any]:
    ns = pair.ns[0]
    res = None
    for interval in ("0.01", "0.05"):        # 0.01 needs root (or a low net.ipv4.ping_group/interval limit)
        try:
            res = run(ns, "ping", "-n", "-c", count, "-i", interval, "-W", "2", "-w", int(count * 0.3) + 10,
                      pair.target, timeout=count * 0.3 + 20, check=False)
        except CommandError as exc:          # timed out
            return {"error": f"ping failed: {str(exc)[-1000:]}"}
        if "interval" not in res.stderr:
            break
    assert res is not None
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", res.stdout)]
    if not rtts:
        return {"error": f"ping failed: {res.stdout[-500:]}{res.stderr[-500:]}"}
    return {"ping_avg_ms": statistics.fmean(rtts), "ping_p50_ms": statistics.median(rtts),
            "ping_max_ms": max(rtts), "ping_loss_pct": 100.0 * (count - len(rtts)) / count}


def link_tx(ns: str, dev: str) -> tuple[int, int]:
    """(bytes, packets) a device sent; a GSO/TSO super-packet counts once, with all its bytes."""
    tx = link_stats(ns, dev)["tx"]
    return int(tx["bytes"]), int(tx["packets"])


def avg_packet(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    packets = after[1] - before[1]
    return (after[0] - before[0]) / packets if packets > 0 else None


def daemon_ticks(pids: Sequence[int]) -> list[tuple[int, int]]:
    return [cpu_ticks(p) for p in pids]


def iperf(pair: Pair, kind: str, duration: int, udp_rate: str, udp_len: int) -> dict[str, Any]:
    """One iperf3 run from ns[0] to ns[1]; returns the metrics of `kind` (tcp1, tcp4 or udp), prefixed."""
    lab = pair.lab
    ns_client, ns_server = pair.ns
    name = f"iperf3-server-{kind}-{secrets.token_hex(2)}"
    limit = duration + 40
    server = lab.popen(ns_server, "timeout", "-k", "5", limit, "iperf3", "-s", "-1", "-B", pair.target,
                       "-p", IPERF_PORT, name=name)
    wait_for(lambda: server.poll() is not None or
             f"{pair.target}:{IPERF_PORT}" in run(ns_server, "ss", "-Hltn", timeout=5).stdout,
             10, what="iperf3 server to listen", interval=0.05)
    if server.poll() is not None:
        raise BenchError(f"iperf3 server exited: {lab.output(name)}")
    argv = ["iperf3", "-c", pair.target, "-p", IPERF_PORT, "-t", duration, "-J"]
    if kind == "tcp4":
        argv += ["-P", "4"]
    elif kind == "udp":
        argv += ["-u", "-b", udp_rate, "-l", udp_len]
    tun, under = pair.ifaces[0], pair.underlay[0]
    tx0 = link_tx(ns_client, tun) if tun else (0, 0)
    u0 = link_tx(ns_client, under) if tun and under else (0, 0)
    c0, (b0, t0) = daemon_ticks(pair.daemon_pids), machine_jiffies()
    w0 = time.monotonic()
    try:
        res = run(ns_client, *argv, timeout=duration + 30, check=False)
    except CommandError as exc:              # timed out: no JSON, as iperf3 killed
        res = subprocess.CompletedProcess(argv, -1, "", str(exc)[-1000:])
    wall = time.monotonic() - w0
    c1, (b1, t1) = daemon_ticks(pair.daemon_pids), machine_jiffies()
    tx1 = link_tx(ns_client, tun) if tun else (0, 0)
    u1 = link_tx(ns_client, under) if tun and under else (0, 0)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_group(server)
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return {"error": f"{kind}: iperf3 gave no JSON (rc {res.returncode}): {res.stderr[-500:]}"}
    if data.get("error"):
        return {"error": f"{kind}: iperf3: {data['error']}"}
    end = data["end"]
    out: dict[str, Any] = {f"{kind}_machine_busy_pct": 100.0 * (b1 - b0) / max(1, t1 - t0)}
    if kind == "udp":
        recv = end["sum_received"]
        out.update({"udp_mbps": recv["bits_per_second"] / 1e6,
                    "udp_sent_mbps": end["sum_sent"]["bits_per_second"] / 1e6,
                    "udp_loss_pct": recv["lost_percent"], "udp_jitter_ms": recv["jitter_ms"]})
        received_bytes = recv["bytes"]
    else:
        recv = end["sum_received"]
        out.update({f"{kind}_mbps": recv["bits_per_second"] / 1e6,
                    f"{kind}_retransmits": end["sum_sent"].get("retransmits", 0)})
        received_bytes = recv["bytes"]
    if tun:
        # sanity check: what arrived went into the tunnel device (IP+TCP/UDP headers make tx a bit larger)
        out[f"{kind}_tun_tx_bytes"] = tx1[0] - tx0[0]
        if tx1[0] - tx0[0] < received_bytes:
            return {"error": f"{kind}: {tun} sent {tx1[0] - tx0[0]} bytes but iperf3 received {received_bytes}"}
        # which offloads are in use: > TUNNEL_MTU into the tunnel device = TSO super-packets (TUN offloads on);
        # > UNDERLAY_MTU onto the veth = UDP GSO trains (or TCP segmentation offload of a TCP/TLS transport)
        out[f"{kind}_tun_pkt_bytes"] = avg_packet(tx0, tx1)
        if under:
            out[f"{kind}_underlay_pkt_bytes"] = avg_packet(u0, u1)
    if pair.daemon_pids:
        cpu_s = [(sum(after) - sum(before)) / CLK_TCK for before, after in zip(c0, c1)]
        sys_s = sum(after[1] - before[1] for before, after in zip(c0, c1)) / CLK_TCK
        out[f"{kind}_sys_share_pct"] = 100.0 * sys_s / sum(cpu_s) if sum(cpu_s) else None
        out[f"{kind}_cpu_pct"] = 100.0 * sum(cpu_s) / wall
        out[f"{kind}_cpu_pct_each"] = [100.0 * c / wall for c in cpu_s]
        if kind == "udp":                # per datagram that arrived
            packets = recv["packets"] - recv["lost_packets"]
            out["udp_us_per_pkt"] = sum(cpu_s) * 1e6 / packets if packets > 0 else None
        else:
            segments = received_bytes / SEGMENT
            out[f"{kind}_us_per_seg"] = sum(cpu_s) * 1e6 / segments if segments else None
    return out


def measure(pair: Pair, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    errors: list[str] = []

    def add(part: dict[str, Any]) -> None:
        if "error" in part:
            errors.append(part.pop("error"))
            print(f"  ! {errors[-1]}", file=sys.stderr)
        result.update(part)

    add(measure_ping(pair, args.ping_count))
    kinds = ("tcp1",) if pair.system == "veth" else ("tcp1", "tcp4", "udp")
    for kind in kinds:
        udp_len = min(args.udp_len, L2_MTU - 28) if pair.system == "wgpy-l2" else args.udp_len
        add(iperf(pair, kind, args.duration, args.udp_rate, udp_len))
    if errors:
        result["errors"] = errors
    return result


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------

METRICS = [  # key, label, format
    ("tcp1_mbps", "TCP 1 stream, Mbit/s", "{:.0f}"),
    ("tcp1_cpu_pct", "  daemons' CPU, % of one core", "{:.0f}"),
    ("tcp1_us_per_seg", "  daemons' CPU, us per 1368 B segment (both ends)", "{:.2f}"),
    ("tcp1_retransmits", "  retransmits", "{:.0f}"),
    ("tcp1_tun_pkt_bytes", "  avg packet into the sender's tunnel device, B (> 1420: TSO)", "{:.0f}"),
    ("tcp1_underlay_pkt_bytes", "  avg packet onto the sender's veth, B (> 1500: GSO)", "{:.0f}"),
    ("tcp1_machine_busy_pct", "  whole machine busy (all cores), %", "{:.0f}"),
    ("tcp4_mbps", "TCP 4 streams, Mbit/s", "{:.0f}"),
    ("tcp4_cpu_pct", "  daemons' CPU, % of one core", "{:.0f}"),
    ("tcp4_us_per_seg", "  daemons' CPU, us per 1368 B segment (both ends)", "{:.2f}"),
    ("udp_mbps", "UDP at {rate} offered, {length} B payloads: received Mbit/s", "{:.0f}"),
    ("udp_loss_pct", "  loss %", "{:.1f}"),
    ("udp_jitter_ms", "  jitter, ms", "{:.3f}"),
    ("ping_avg_ms", "ping RTT avg, ms", "{:.3f}"),
    ("ping_p50_ms", "ping RTT p50, ms", "{:.3f}"),
    ("bg_busy_pct", "machine busy before the run, %", "{:.0f}"),
]
# context, not a comparison: no ratio column
NO_RATIO = {k for k, _, _ in METRICS if k.endswith(("busy_pct", "_pkt_bytes"))}
# the issue 15 targets, in the one-line summary per reference: key, label, "higher" is better or "lower"
HEADLINE = [("tcp1_mbps", "TCP 1 stream", "higher"), ("tcp4_mbps", "TCP 4 streams", "higher"),
            ("tcp1_us_per_seg", "CPU/segment (1 stream)", "lower"),
            ("tcp4_us_per_seg", "CPU/segment (4 streams)", "lower"),
            ("ping_p50_ms", "ping p50", "lower"), ("ping_avg_ms", "ping avg", "lower")]


def default_labels() -> dict[str, str]:
    return {"wgpy": "wgpy", UPSTREAM: "upstream wireguard-go", DEBIAN: "Debian wireguard-go",
            "wgpy-l2": "wgpy L2 (tap)", "wgpy-tcp": "wgpy over TCP", "wgpy-tls": "wgpy over TLS",
            "veth": "raw veth"}


def values(runs: Sequence[dict[str, Any]], system: str, key: str) -> list[float]:
    return [r[key] for r in runs if r["system"] == system and isinstance(r.get(key), (int, float))
            and not isinstance(r.get(key), bool)]


def median_of(runs: Sequence[dict[str, Any]], system: str, key: str) -> float | None:
    vals = values(runs, system, key)
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b of two medians, None where either is missing or b is 0 (e.g. no loss or no retransmits)."""
    return a / b if a is not None and b is not None and b != 0 else None


def ratio_pairs(systems: Sequence[str]) -> list[tuple[str, str, str]]:
    """(name, numerator, denominator) of the ratio columns this set of systems gets, in table order."""
    pairs = [(f"wgpy/{ref}", "wgpy", ref) for ref, _ in REFERENCES if "wgpy" in systems and ref in systems]
    if "wgpy-l2" in systems and "wgpy" in systems:
        pairs.append(("wgpy-l2/wgpy", "wgpy-l2", "wgpy"))
    return pairs


def summarize(runs: Sequence[dict[str, Any]], systems: Sequence[str]) -> dict[str, Any]:
    """Medians per system and metric, and the ratios of medians (for --json and the table)."""
    keys = [k for k, _, _ in METRICS] + ["ping_max_ms", "ping_loss_pct", "udp_sent_mbps", "udp_us_per_pkt",
                                         "tcp4_retransmits", "tcp4_tun_pkt_bytes", "tcp4_underlay_pkt_bytes",
                                         "udp_tun_pkt_bytes", "udp_underlay_pkt_bytes"]
    medians = {s: {k: m for k in keys if (m := median_of(runs, s, k)) is not None} for s in systems}
    ratios = {name: {k: r for k in keys if k not in NO_RATIO
                     if (r := ratio(medians[a].get(k), medians[b].get(k))) is not None}
              for name, a, b in ratio_pairs(systems)}
    return {"medians": medians, "ratios": ratios,
            "repeats": {s: len([r for r in runs if r["system"] == s]) for s in systems}}


def cell(vals: list[float], fmt: str) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"


def table(runs: Sequence[dict[str, Any]], systems: Sequence[str], udp_rate: str, udp_len: int,
          labels: dict[str, str] | None = None) -> str:
    """The markdown table: the tunnels, the ratio columns (wgpy / upstream, wgpy / Debian, L2 / L3), then wgpy's
    L2 and TCP/TLS columns and the raw veth, for the systems that ran."""
    labels = {**default_labels(), **(labels or {})}
    summary = summarize(runs, systems)
    pairs = ratio_pairs(systems)
    pair_head = {f"wgpy/{ref}": f"wgpy / {short}" for ref, short in REFERENCES} | {"wgpy-l2/wgpy": "L2 / L3"}
    tunnels = [s for s in TUNNELS if s in systems]
    after = [s for s in ("wgpy-l2", *STREAM_SYSTEMS, "veth") if s in systems]
    l3_pairs = [p for p in pairs if p[0] != "wgpy-l2/wgpy"]
    l2_pair = [p for p in pairs if p[0] == "wgpy-l2/wgpy"]
    head = ["metric (median (min–max))"] + [labels[s] for s in tunnels] + [pair_head[p[0]] for p in l3_pairs]
    cols: list[tuple[str, str]] = [("sys", s) for s in tunnels] + [("ratio", p[0]) for p in l3_pairs]
    for s in after:
        head.append(labels[s])
        cols.append(("sys", s))
        if s == "wgpy-l2" and l2_pair:
            head.append(pair_head["wgpy-l2/wgpy"])
            cols.append(("ratio", "wgpy-l2/wgpy"))
    rows = [head, ["---"] * len(head)]
    for key, label, fmt in METRICS:
        row = [label.format(rate=udp_rate, length=udp_len)]
        for kind, name in cols:
            if kind == "sys":
                row.append(cell(values(runs, name, key), fmt))
            else:
                r = summary["ratios"][name].get(key)
                row.append("-" if r is None else f"{r:.2f}")
        if any(c != "-" for c in row[1:]):
            rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def headline(summary: dict[str, Any], ref: str, label: str) -> str:
    """One line: wgpy against `ref` on the issue 15 targets (ratios of medians), and both UDP losses."""
    med, rat = summary["medians"], summary["ratios"].get(f"wgpy/{ref}", {})
    parts = [f"{name} {rat[key]:.2f}x" for key, name, _ in HEADLINE if key in rat]
    a, b = med.get("wgpy", {}).get("udp_loss_pct"), med.get(ref, {}).get("udp_loss_pct")
    if a is not None and b is not None:
        parts.append(f"UDP loss {a:.1f} % vs {b:.1f} %")
    return f"wgpy / {label}: " + (", ".join(parts) if parts else "no figures in common")


def notes(systems: Sequence[str], skipped: dict[str, str], udp_len: int) -> list[str]:
    """What the table leaves out, and why."""
    out = [f"{s} not measured: {why}" for s, why in skipped.items()]
    if any(s in systems for s in TUNNELS if s != "wgpy") and "wgpy" in systems:
        out.append("ratios are of medians, wgpy / reference: above 1 is wgpy ahead on throughput, "
                   "behind on CPU, retransmits, loss, jitter and RTT")
    if "wgpy-l2" in systems:
        out.append("L2 (Mode = tap) is wgpy only: wireguard-go has no TAP/L2 mode, so L2 is compared with wgpy's "
                   f"L3 (L2 / L3); its UDP test sends {min(udp_len, L2_MTU - 28)} B payloads (the TAP's MTU)")
    if any(s in systems for s in STREAM_SYSTEMS):
        out.append("the TCP/TLS transports are wgpy only: wireguard-go carries WireGuard over UDP only")
    return out


def tool_version(*argv: Any) -> str:
    """The first line a tool prints for its version, or "?"."""
    try:
        res = run(None, *argv, timeout=10, check=False)
        return (res.stdout or res.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


def go_version(line: str) -> str:
    """"wireguard-go v0.0.20250522" -> "0.0.20250522" (the line as given if it has no version)."""
    m = re.search(r"v?(\d+\.\d+\.\d+)", line)
    return m.group(1) if m else line


def machine_info(go_binaries: dict[str, str]) -> dict[str, str]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    info = {"nproc": str(os.cpu_count()), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "iperf3": tool_version("iperf3", "--version")}
    for system, path in go_binaries.items():
        info[system] = f"{tool_version(path, '--version')} ({path})"
    return info


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------

def wait_quiet(args: argparse.Namespace) -> float:
    """Busy % of the machine before a run; waits (bounded) while other jobs keep it busier than --max-busy."""
    deadline = time.monotonic() + args.wait_quiet
    while True:
        busy = background_busy(1.0)
        if busy <= args.max_busy or time.monotonic() >= deadline:
            return busy
        print(f"  machine {busy:.0f}% busy (load {loadavg()}); waiting for it to calm down", file=sys.stderr)
        time.sleep(4)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def system_name(text: str) -> str:
    """One system name of --only / --impl (old names accepted)."""
    name = ALIASES.get(text.strip(), text.strip())
    if name not in SYSTEMS:
        raise argparse.ArgumentTypeError(f"unknown system {text!r} (choose from {', '.join(SYSTEMS)})")
    return name


def system_list(text: str) -> list[str]:
    """--impl: a comma-separated list of systems, duplicates dropped."""
    names = [system_name(t) for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--impl needs at least one system")
    return list(dict.fromkeys(names))


def select_systems(only: str | None = None, impl: Sequence[str] | None = None, no_baseline: bool = False,
                   l2: bool = False, transport: str | None = None) -> list[str]:
    """The systems of a run, in the order of its first repeat: --only alone; else the veth baseline (unless
    --no-baseline) and --impl's list (default wgpy, upstream wireguard-go, Debian's); then --l2 and --transport."""
    if only:
        systems = [only]
    else:
        picked = [s for s in (impl or TUNNELS) if s != "veth"]
        baseline = not no_baseline or (impl is not None and "veth" in impl)     # named in --impl: wanted
        systems = (["veth"] if baseline else []) + picked
    if l2 and "wgpy-l2" not in systems:
        systems.append("wgpy-l2")
    for scheme in (("tcp", "tls") if transport == "both" else (transport,) if transport else ()):
        if f"wgpy-{scheme}" not in systems:
            systems.append(f"wgpy-{scheme}")
    return systems


def repeat_order(systems: Sequence[str], rep: int) -> list[str]:
    """Repeat 0 runs the systems in order, repeat 1 backwards, and so on: drift of the machine hits all alike."""
    return list(systems) if rep % 2 == 0 else list(reversed(systems))


def find_go_binaries(systems: Sequence[str], upstream: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({system: executable} of the wireguard-go systems asked for that exist, {system: why not} of the others)."""
    found, missing = {}, {}
    for system in systems:
        if system == UPSTREAM:
            if upstream.is_file() and os.access(upstream, os.X_OK):
                found[system] = str(upstream)
            else:
                missing[system] = (f"{upstream} is missing or not executable (upstream wireguard-go 0.0.20250522 "
                                   f"ships in ../shared/anchors/; --upstream-go PATH points elsewhere)")
        elif system == DEBIAN:
            path = shutil.which("wireguard-go")
            if path:
                found[system] = path
            else:
                missing[system] = "no wireguard-go on PATH (Debian's package; ./scripts/setup.sh installs it)"
    return found, missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs per system (default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per iperf3 run (default 10)")
    ap.add_argument("--impl", type=system_list, metavar="SYSTEM,...",
                    help="the systems to measure, comma-separated, in this order (default: veth, wgpy, "
                         f"{UPSTREAM}, {DEBIAN}; the veth baseline is added unless --no-baseline)")
    ap.add_argument("--only", type=system_name, metavar="SYSTEM",
                    help=f"measure just this system ({', '.join(SYSTEMS)})")
    ap.add_argument("--l2", action="store_true", help="also measure wgpy in L2 mode (system wgpy-l2)")
    ap.add_argument("--transport", choices=("tcp", "tls", "both"),
                    help="also measure wgpy over the TCP and/or TLS transport (systems wgpy-tcp, wgpy-tls)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the raw veth baseline")
    ap.add_argument("--upstream-go", type=Path, default=UPSTREAM_GO,
                    help=f"upstream wireguard-go's executable (default {UPSTREAM_GO})")
    ap.add_argument("--json", type=Path, help="write every run's numbers, the summary and the machine info here")
    ap.add_argument("--udp-rate", default="1G", help="iperf3 -b for the UDP test (default 1G)")
    ap.add_argument("--udp-len", type=int, default=TUNNEL_MTU - 28,
                    help="UDP payload bytes (default 1392: the largest that fits MTU 1420 unfragmented)")
    ap.add_argument("--ping-count", type=int, default=50)
    ap.add_argument("--max-busy", type=float, default=25.0,
                    help="wait before a run while the machine is busier than this %% (default 25)")
    ap.add_argument("--wait-quiet", type=float, default=90.0,
                    help="but at most this many seconds per run (default 90)")
    args = ap.parse_args()
    if args.repeats < 1 or args.duration < 1 or args.ping_count < 1:
        ap.error("--repeats, --duration and --ping-count must be at least 1")
    if args.only and args.impl:
        ap.error("--only and --impl exclude each other")
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces): sudo .venv/bin/python bench/run.py", file=sys.stderr)
        return 2
    for tool in ("ip", "iperf3", "ping", "wg", "ss", "timeout"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found (sudo ./scripts/setup.sh installs everything)", file=sys.stderr)
            return 2
    systems = select_systems(args.only, args.impl, args.no_baseline, args.l2, args.transport)
    go_binaries, skipped = find_go_binaries(systems, args.upstream_go.resolve())
    for system, why in skipped.items():
        if args.only or args.impl:            # asked for by name: an error, not a silent gap in the table
            print(f"bench: cannot measure {system}: {why}", file=sys.stderr)
            return 2
        print(f"bench: skipping {system}: {why}", file=sys.stderr)
    systems = [s for s in systems if s not in skipped]
    wgpy = find_wgpy()

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    info = machine_info(go_binaries)
    labels = default_labels()
    for system, short in REFERENCES:
        if system in go_binaries:
            labels[system] = f"{short} wireguard-go {go_version(info[system])}"
    runs: list[dict[str, Any]] = []
    print(f"bench: {info['nproc']} x {info['cpu']}, kernel {info['kernel']}, Python {info['python']}; "
          f"load {loadavg()}", file=sys.stderr)
    print(f"bench: systems {', '.join(systems)}; {args.repeats} repeats of {args.duration} s iperf3 runs",
          file=sys.stderr)
    for system, path in go_binaries.items():
        print(f"bench: {system} is {info[system]}", file=sys.stderr)
    interrupted = False
    net = 0
    try:
        remove_stale_namespaces()
        for rep in range(args.repeats):
            for system in repeat_order(systems, rep):
                net += 1
                busy = wait_quiet(args)
                print(f"[{rep + 1}/{args.repeats}] {system}: machine {busy:.0f}% busy before, load {loadavg()}",
                      file=sys.stderr)
                record: dict[str, Any] = {"system": system, "repeat": rep + 1, "bg_busy_pct": busy,
                                          "loadavg_before": loadavg()}
                lab = Lab(wgpy)
                try:
                    pair = setup_pair(lab, system, 100 + net % 150, go_binaries.get(system))
                    record.update(measure(pair, args))
                except Exception as exc:      # e.g. a daemon died: record it, go on with the next run
                    record.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
                    print(f"  ! {system} failed: {exc}", file=sys.stderr)
                finally:
                    lab.close()
                runs.append(record)
                brief = ", ".join(f"{k}={record[k]:.1f}" for k in ("tcp1_mbps", "tcp4_mbps", "udp_mbps",
                                                                    "tcp1_cpu_pct", "ping_p50_ms")
                                  if isinstance(record.get(k), (int, float)))
                print(f"  {brief}", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("\nbench: interrupted; cleaning up", file=sys.stderr)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)     # let the cleanup finish; every step in it is bounded
        close_all_labs()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if runs:
        print()
        print(f"{args.repeats} repeats x {args.duration} s, {info['nproc']} CPUs ({info['cpu']}), load at end "
              f"{loadavg()}")
        print(table(runs, systems, args.udp_rate, args.udp_len, labels))
        summary = summarize(runs, systems)
        print()
        for system, _ in REFERENCES:
            if system in systems and "wgpy" in systems:
                print(headline(summary, system, labels[system]))
        for note in notes(systems, skipped, args.udp_len):
            print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                         "systems": systems, "labels": {s: labels[s] for s in systems},
                                         "skipped": skipped, "summary": summarize(runs, systems),
                                         "notes": notes(systems, skipped, args.udp_len), "runs": runs},
                                        indent=2) + "\n")
    failed = any(r.get("errors") for r in runs)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
