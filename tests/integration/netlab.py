"""Network-namespace lab for the wgpy integration tests.

Everything here is plain Python; `conftest.py` wraps it in pytest fixtures.  A `Lab` owns every resource one test
creates (namespaces, processes, interfaces, UAPI sockets) and `Lab.close()` removes all of it, whatever happened.

Naming rules (the UAPI socket directory /var/run/wireguard is shared by all namespaces and all test runs):
  * namespaces are `wgpyt-<pid>-<n>`;
  * WireGuard interfaces are `wgt<6 hex>` (see `unique_iface`), veths `v<8 hex>a|b`;
  * a wgpy config file is `<iface>.conf`, because wgpy takes the interface name from the file stem.

Self-check mode: with WGPY_IT_STANDIN=wireguard-go in the environment every node of kind "wgpy" is run by
wireguard-go instead.  That lets the traffic tests be validated against a known-good implementation before the
daemon exists; checks that only make sense for wgpy itself call `Lab.require_real_wgpy()` and skip.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[2]
WGPY = Path(sys.executable).parent / "wgpy"
XFER = ROOT / "tests" / "tools" / "xfer.py"
UAPI_DIR = Path("/var/run/wireguard")
WGPY_RUN_DIR = Path("/run/wgpy")  # where the wgpy daemon keeps IFACE.log / IFACE.pid (diagnostics, cleanup)
NS_PREFIX = f"wgpyt-{os.getpid()}-"
NS_RE = re.compile(r"^wgpyt-(\d+)-(\d+|probe)$")
PING_ARGS = ("ping", "-c", "3", "-i", "0.2", "-W", "2")
STANDIN = os.environ.get("WGPY_IT_STANDIN", "").strip()

WGPY_KIND = "wgpy"
WGGO_KIND = "wireguard-go"

_ns_counter = 0


# --------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------

class CommandError(AssertionError):
    """A command exited non-zero (or timed out) where success was required."""


def ns_exec(ns: str | None, *cmd: Any) -> list[str]:
    argv = [str(c) for c in cmd]
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def _describe(argv: Sequence[str], rc: Any, out: str, err: str) -> str:
    return (f"command {shlex.join(argv)} -> {rc}\n"
            f"--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}")


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(ns: str | None, *cmd: Any, timeout: float = 30.0, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command (inside namespace `ns` unless it is None) with a hard timeout; return text output.

    Output goes through temporary files rather than pipes, so a command that leaves a daemon behind (which may
    keep inherited descriptors open) cannot make us wait for an EOF that never comes.
    """
    argv = ns_exec(ns, *cmd)
    full_env = {**os.environ, **env} if env else None
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=out_f, stderr=err_f, env=full_env, start_new_session=True)
        timed_out = False
        try:
            if input is not None:
                proc.stdin.write(input.encode())
                proc.stdin.close()
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.wait()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        out_f.seek(0)
        err_f.seek(0)
        out = out_f.read().decode(errors="replace")
        err = err_f.read().decode(errors="replace")
    if timed_out:
        raise CommandError(_describe(argv, f"timed out after {timeout}s", out, err))
    result = subprocess.CompletedProcess(argv, rc, out, err)
    if check and rc != 0:
        raise CommandError(_describe(argv, rc, out, err))
    return result


class WaitTimeout(AssertionError):
    pass


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1,
             what: str | None = None) -> Any:
    """Poll `predicate` until it returns something truthy (which is returned); fail after `timeout` seconds.

    Exceptions raised by the predicate count as "not yet"; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            last_value = predicate()
            if last_value:
                return last_value
            last_exc = None
        except (Exception, AssertionError) as exc:  # noqa: B014 - AssertionError is an Exception, kept explicit
            last_exc = exc
        if time.monotonic() >= deadline:
            desc = what or getattr(predicate, "__name__", "condition")
            detail = f"; last error: {last_exc!r}" if last_exc else f"; last value: {last_value!r}"
            raise WaitTimeout(f"timed out after {timeout}s waiting for {desc}{detail}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # state is the field after the parenthesised command name
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


# --------------------------------------------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------------------------------------------

def new_netns_name() -> str:
    global _ns_counter
    _ns_counter += 1
    return f"{NS_PREFIX}{_ns_counter}"


def create_netns(name: str) -> str:
    run(None, "ip", "netns", "add", name, timeout=10)
    try:
        run(name, "ip", "link", "set", "lo", "up", timeout=10)
    except BaseException:
        destroy_netns(name)
        raise
    return name


def ns_pids(ns: str) -> set[int]:
    res = run(None, "ip", "netns", "pids", ns, timeout=10, check=False)
    return {int(tok) for tok in res.stdout.split() if tok.isdigit()}


def list_netns() -> list[str]:
    res = run(None, "ip", "netns", "list", timeout=10, check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def kill_ns_processes(ns: str, grace: float = 2.0) -> None:
    """SIGTERM every process in `ns`, wait up to `grace` seconds, then SIGKILL the rest."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        pids = ns_pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)


def destroy_netns(ns: str) -> None:
    """Kill everything inside `ns`, then delete it.  Never raises for an already-missing namespace."""
    if not Path("/var/run/netns", ns).exists():
        return
    try:
        kill_ns_processes(ns)
    finally:
        run(None, "ip", "netns", "del", ns, timeout=15, check=False)


def cleanup_stale_namespaces(only_ours: bool) -> list[str]:
    """Remove `wgpyt-<pid>-*` namespaces: ours (only_ours=True) or those whose pytest process is gone."""
    removed = []
    for name in list_netns():
        m = NS_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if (only_ours and pid == os.getpid()) or (not only_ours and pid != os.getpid() and not pid_alive(pid)):
            destroy_netns(name)
            removed.append(name)
    return removed


# --------------------------------------------------------------------------------------------------------------
# Keys and configs
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Keypair:
    private: str
    public: str


def gen_keypair() -> Keypair:
    private = run(None, "wg", "genkey", timeout=10).stdout.strip()
    public = run(None, "wg", "pubkey", input=private + "\n", timeout=10).stdout.strip()
    return Keypair(private, public)


def gen_psk() -> str:
    return run(None, "wg", "genpsk", timeout=10).stdout.strip()


def random_public_key() -> str:
    """A well-formed public key that belongs to nobody in the test."""
    return gen_keypair().public


def unique_iface(prefix: str = "wgt") -> str:
    while True:
        name = f"{prefix}{secrets.token_hex(3)}"
        assert len(name) <= 15, name
        if not (UAPI_DIR / f"{name}.sock").exists():
            return name


@dataclass(frozen=True)
class PeerSpec:
    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None = None
    preshared_key: str | None = None
    persistent_keepalive: int | None = None


def render_config(private_key: str, listen_port: int | None, peers: Iterable[PeerSpec], *,
                  addresses: Sequence[str] = (), mtu: int | None = None,
                  extra_interface_lines: Sequence[str] = ()) -> str:
    """A wg-quick style config.  Without addresses/mtu/extra lines it is also valid for `wg setconf`."""
    lines = ["[Interface]", f"PrivateKey = {private_key}"]
    if listen_port is not None:
        lines.append(f"ListenPort = {listen_port}")
    if addresses:
        lines.append(f"Address = {', '.join(addresses)}")
    if mtu is not None:
        lines.append(f"MTU = {mtu}")
    lines.extend(extra_interface_lines)
    for peer in peers:
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        if peer.preshared_key:
            lines.append(f"PresharedKey = {peer.preshared_key}")
        if peer.endpoint:
            lines.append(f"Endpoint = {peer.endpoint}")
        lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    """Write `<tmp_path>/<name>.conf` with exactly `mode` (umask does not apply); return the absolute path."""
    path = (Path(tmp_path) / f"{name}.conf").resolve()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


def format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --------------------------------------------------------------------------------------------------------------
# Inspecting WireGuard state
# --------------------------------------------------------------------------------------------------------------

def _opt_int(tok: str) -> int | None:
    return None if tok in ("off", "(none)", "") else int(tok, 0)   # wg prints the fwmark in hex (0xca6c)


def parse_wg_dump(text: str) -> dict[str, Any]:
    """Parse `wg show IFACE dump`.

    Returns {"private_key", "public_key", "listen_port", "fwmark", "peers": {public_key: peer}} where a peer is
    {"public_key", "preshared_key", "endpoint", "allowed_ips": [...], "latest_handshake", "rx", "tx",
     "persistent_keepalive"}; "(none)"/"off" become None.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty wg dump")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise ValueError(f"unexpected interface line in wg dump: {lines[0]!r}")
    result: dict[str, Any] = {
        "private_key": head[0], "public_key": head[1], "listen_port": _opt_int(head[2]),
        "fwmark": _opt_int(head[3]), "peers": {},
    }
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) != 8:
            raise ValueError(f"unexpected peer line in wg dump: {line!r}")
        result["peers"][f[0]] = {
            "public_key": f[0],
            "preshared_key": None if f[1] == "(none)" else f[1],
            "endpoint": None if f[2] == "(none)" else f[2],
            "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
            "latest_handshake": int(f[4]),
            "rx": int(f[5]),
            "tx": int(f[6]),
            "persistent_keepalive": _opt_int(f[7]),
        }
    return result


def wg_dump(ns: str | None, iface: str) -> dict[str, Any]:
    return parse_wg_dump(run(ns, "wg", "show", iface, "dump", timeout=10).stdout)


def latest_handshake(ns: str | None, iface: str, peer_public_key: str) -> int:
    return wg_dump(ns, iface)["peers"][peer_public_key]["latest_handshake"]


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}


def parse_size(text: str) -> float:
    number, unit = text.split()
    return float(number) * _UNITS[unit]


def parse_wg_show(text: str) -> dict[str, Any]:
    """Parse the human format of `wg show` / `wgpy show` (first interface only).

    Returns {"interface": name, "public key": ..., "listening port": ..., "peers": {key: {...}}}; a peer's
    "transfer" line is additionally split into integer "rx"/"tx" byte counts (approximate, from the units).
    """
    out: dict[str, Any] = {"peers": {}}
    current: dict[str, Any] = out
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()  # strip colours, if any
        if not line.strip() or ":" not in line:
            continue
        key, _, value = line.strip().partition(":")
        key, value = key.strip(), value.strip()
        if not raw.startswith(" ") and key == "interface":
            if "interface" in out:
                break
            out["interface"] = value
            current = out
        elif not raw.startswith(" ") and key == "peer":
            current = {"peer": value}
            out["peers"][value] = current
        else:
            current[key] = value
            if key == "transfer":
                m = re.match(r"(.+?) received, (.+?) sent", value)
                if m:
                    current["rx"] = int(parse_size(m.group(1)))
                    current["tx"] = int(parse_size(m.group(2)))
    return out


def ping(ns: str, addr: str, *, timeout: float = 15.0) -> subprocess.CompletedProcess:
    family = "-6" if ":" in addr else "-4"
    return run(ns, *PING_ARGS[:1], family, *PING_ARGS[1:], addr, timeout=timeout, check=False)


def assert_ping(ns: str, addr: str, attempts: int = 2) -> None:
    """At least one echo reply within a bounded number of `ping -c 3 -i 0.2 -W 2` runs."""
    res = None
    for _ in range(attempts):
        res = ping(ns, addr)
        if res.returncode == 0:
            return
    assert res is not None
    raise AssertionError(f"ping {addr} from {ns} failed:\n{res.stdout}\n{res.stderr}")


def link_exists(ns: str | None, name: str) -> bool:
    return run(ns, "ip", "link", "show", "dev", name, timeout=10, check=False).returncode == 0


def link_stats(ns: str | None, name: str) -> dict[str, dict[str, int]]:
    """{"rx": {...}, "tx": {...}} packet/byte counters of a link (`ip -s -j link`)."""
    info = json.loads(run(ns, "ip", "-s", "-j", "link", "show", "dev", name, timeout=10).stdout)[0]
    stats = info.get("stats64") or info["stats"]
    return {"rx": stats["rx"], "tx": stats["tx"]}


def link_json(ns: str | None, name: str) -> dict[str, Any]:
    return json.loads(run(ns, "ip", "-j", "-d", "addr", "show", "dev", name, timeout=10).stdout)[0]


# --------------------------------------------------------------------------------------------------------------
# pcap
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UdpPacket:
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes

    @property
    def wg_type(self) -> int | None:
        """WireGuard message type (1 initiation, 2 response, 3 cookie, 4 data) or None."""
        return self.payload[0] if self.payload else None


def parse_pcap(data: bytes) -> list[UdpPacket]:
    """Decode the UDP packets of a (possibly still growing) classic pcap file; ignores a truncated tail."""
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file (pcapng is not supported)")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    packets = []
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < incl:
            break
        pkt = _decode_frame(linktype, frame)
        if pkt is not None:
            packets.append(pkt)
    return packets


def _decode_frame(linktype: int, frame: bytes) -> UdpPacket | None:
    if linktype == 1:  # Ethernet
        ethertype, l3 = struct.unpack("!H", frame[12:14])[0], frame[14:]
        while ethertype in (0x8100, 0x88A8) and len(l3) >= 4:  # VLAN tags
            ethertype, l3 = struct.unpack("!H", l3[2:4])[0], l3[4:]
    elif linktype == 113:  # Linux cooked v1
        ethertype, l3 = struct.unpack("!H", frame[14:16])[0], frame[16:]
    elif linktype == 276:  # Linux cooked v2
        ethertype, l3 = struct.unpack("!H", frame[0:2])[0], frame[20:]
    elif linktype in (101, 12):  # raw IP
        ethertype = 0x0800 if frame and frame[0] >> 4 == 4 else 0x86DD
        l3 = frame
    else:
        return None
    if ethertype == 0x0800 and len(l3) >= 20:
        ihl = (l3[0] & 0x0F) * 4
        if l3[9] != 17:
            return None
        src, dst = str(ipaddress.IPv4Address(l3[12:16])), str(ipaddress.IPv4Address(l3[16:20]))
        udp = l3[ihl:]
    elif ethertype == 0x86DD and len(l3) >= 40:
        if l3[6] != 17:
            return None
        src, dst = str(ipaddress.IPv6Address(l3[8:24])), str(ipaddress.IPv6Address(l3[24:40]))
        udp = l3[40:]
    else:
        return None
    if len(udp) < 8:
        return None
    sport, dport, length = struct.unpack("!HHH", udp[:6])
    return UdpPacket(src, sport, dst, dport, udp[8:length])


# --------------------------------------------------------------------------------------------------------------
# Tracked processes
# --------------------------------------------------------------------------------------------------------------

class Proc:
    """A background process started by the lab; stdout/stderr go to files next to the test's tmp_path."""

    def __init__(self, name: str, argv: list[str], popen: subprocess.Popen, out: Path, err: Path) -> None:
        self.name, self.argv, self.popen, self.out_path, self.err_path = name, argv, popen, out, err

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandError(_describe(self.argv, f"still running after {timeout}s", self.stdout(),
                                         self.stderr())) from None

    def signal(self, sig: int) -> None:
        if self.alive():
            _kill_group(self.popen, sig)

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM the process group, SIGKILL after `grace` seconds; always reaps."""
        if self.alive():
            _kill_group(self.popen, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _kill_group(self.popen, signal.SIGKILL)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def describe(self) -> str:
        return _describe(self.argv, self.popen.poll(), self.stdout(), self.stderr())


# --------------------------------------------------------------------------------------------------------------
# Higher level objects
# --------------------------------------------------------------------------------------------------------------

@dataclass
class WgNode:
    """One running WireGuard interface (wgpy or wireguard-go) in a namespace."""

    kind: str  # what the test asked for: "wgpy" or "wireguard-go"
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


class Capture:
    """tcpdump writing a pcap file in a namespace; `packets()` can be read while it runs."""

    def __init__(self, proc: Proc, path: Path) -> None:
        self.proc, self.path = proc, path

    def packets(self) -> list[UdpPacket]:
        return parse_pcap(self.path.read_bytes()) if self.path.exists() else []

    def stop(self) -> list[UdpPacket]:
        self.proc.signal(signal.SIGINT)
        try:
            self.proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.stop()
        return self.packets()


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
        extra = ["nodad"] if ":" in cidr else []
        run(ns, "ip", "address", "add", cidr, "dev", dev, *extra, timeout=10)

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
        return run(ns, *prefix, WGPY, *args, timeout=timeout, check=check, input=input)

    def _register_wgpy_iface(self, ns: str, iface: str) -> None:
        if iface in self.ifaces:
            return
        self.ifaces[iface] = ns

        def down() -> None:
            if (UAPI_DIR / f"{iface}.sock").exists() or link_exists(ns, iface):
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
            raise CommandError(_describe(res.args, res.returncode, res.stdout, res.stderr))
        return Path(config_path).stem

    # -- wireguard-go --------------------------------------------------------------------------------------------

    def wireguard_go_up(self, ns: str, iface: str, private_key: str, listen_port: int | None,
                        peers: Iterable[PeerSpec], address: str | Sequence[str], *, mtu: int = 1420) -> str:
        """Run `wireguard-go -f IFACE` in `ns` and configure it like wg-quick would; returns `iface`."""
        peers = list(peers)
        addresses = [address] if isinstance(address, str) else list(address)
        sock = UAPI_DIR / f"{iface}.sock"
        proc = self.popen(ns, "wireguard-go", "-f", iface, env={"LOG_LEVEL": "error"},
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
        """Start a WireGuard interface of `kind` ("wgpy" or "wireguard-go")."""
        peers = list(peers)
        iface = iface or unique_iface()
        impl = WGGO_KIND if (kind == WGGO_KIND or (kind == WGPY_KIND and STANDIN == WGGO_KIND)) else kind
        node = WgNode(kind, impl, ns, iface, keys, listen_port, list(addresses), peers)
        if impl == WGPY_KIND:
            text = render_config(keys.private, listen_port, peers, addresses=addresses, mtu=mtu)
            node.config_path = write_config(self.tmp, iface, text)
            self.wgpy_up(ns, node.config_path)
        elif impl == WGGO_KIND:
            self.wireguard_go_up(ns, iface, keys.private, listen_port, peers, list(addresses), mtu=mtu)
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
            for leftover in (UAPI_DIR / f"{iface}.sock", WGPY_RUN_DIR / f"{iface}.pid", WGPY_RUN_DIR / f"{iface}.log"):
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


def b64_of_length(n: int) -> str:
    return base64.b64encode(b"\x01" * n).decode()



# --------------------------------------------------------------------------------------------------------------
# Routers, NAT and bridges (deployment tests)
# --------------------------------------------------------------------------------------------------------------

def sysctl(ns: str, key: str, value: str | int) -> None:
    """Set a sysctl inside `ns` (net.* keys are per namespace), e.g. sysctl(ns, "net.ipv4.ip_forward", 1)."""
    run(ns, "sysctl", "-q", "-w", f"{key}={value}", timeout=10)


def read_sysctl(ns: str, key: str) -> str:
    return run(ns, "sysctl", "-n", key, timeout=10).stdout.strip()


def nft_load(ns: str, ruleset: str) -> None:
    """Load an nftables ruleset (the text of `nft -f`) inside `ns`."""
    run(ns, "nft", "-f", "-", input=ruleset, timeout=15)


def nat_router(ns: str, wan: str, *, dnat_udp: Sequence[tuple[int, str]] = ()) -> None:
    """Make `ns` a NAT router: forwarding on, MASQUERADE out of `wan`, and UDP ports forwarded to inside hosts
    (`dnat_udp` = [(port, "192.168.2.2:51820")]), all in an nft table `natlab` of the router's own namespace."""
    sysctl(ns, "net.ipv4.ip_forward", 1)
    dnat = "".join(f"        iifname \"{wan}\" udp dport {port} dnat ip to {to}\n" for port, to in dnat_udp)
    nft_load(ns, "table ip natlab {\n"
                 "    chain prerouting {\n"
                 "        type nat hook prerouting priority dstnat; policy accept;\n"
                 f"{dnat}"
                 "    }\n"
                 "    chain postrouting {\n"
                 "        type nat hook postrouting priority srcnat; policy accept;\n"
                 f"        oifname \"{wan}\" masquerade\n"
                 "    }\n"
                 "}\n")


def add_bridge(ns: str, name: str = "br0", cidr: str | None = None) -> str:
    """A Linux bridge in `ns` (no STP, no forwarding delay), up, optionally with an address."""
    run(ns, "ip", "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0", timeout=10)
    if cidr:
        Lab.add_address(ns, name, cidr)
    run(ns, "ip", "link", "set", name, "up", timeout=10)
    return name


def default_route(ns: str, via: str) -> None:
    run(ns, "ip", "-6" if ":" in via else "-4", "route", "add", "default", "via", via, timeout=10)


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (Uid, Gid, CapEff, CapPrm, CapBnd, CapAmb, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def lan_host(lab: "Lab", bridge_ns: str, bridge: str, cidr: str, gateway: str) -> str:
    """A new namespace plugged into `bridge` (in `bridge_ns`) with address `cidr` and default route `gateway`."""
    ns = lab.netns()
    _, port = lab.veth(ns, bridge_ns, cidr, None)
    run(bridge_ns, "ip", "link", "set", port, "master", bridge, "up", timeout=10)
    default_route(ns, gateway)
    return ns
