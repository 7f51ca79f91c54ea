"""Helpers for the hostile-network and reliability namespace tests (test_hostile_*.py, test_reliability*.py).

Figures: every test that measures something calls `record(name, **figures)`; they are printed (visible with
`pytest -s`) and, when WGPY_RELIABILITY_REPORT names a file, appended to it as JSON lines. scripts/reliability.sh
runs the long versions (full soak, 30 s link outage, long flood) through the same tests with the knobs below and
collects that file; docs/reliability.md quotes it.

Knobs (environment; defaults are the CI sample):
    WGPY_SOAK_SECONDS        soak duration (30; the script: 600)
    WGPY_LINK_DOWN_SECONDS   underlay outage (6; the script: 30)
    WGPY_FLOOD_SECONDS       flood duration per phase (6; the script: 20)
    WGPY_FAULT_BYTES         bytes per impaired-path transfer (2,000,000; the script: 20,000,000)
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

from . import netlab
from .netlab import Lab, run, wait_for
from .procs import cpu_seconds, fd_count, rss_kib  # noqa: F401  (hl.rss_kib, ... in the tests)

TOOLS = netlab.ROOT / "tests" / "tools"
HOSTILE = TOOLS / "hostile.py"
IMPAIR = TOOLS / "impair.py"


def knob(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def record(name: str, **figures: Any) -> None:
    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(f"FIGURES {line}")
    path = os.environ.get("WGPY_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


# -- the daemon behind a wgpy interface ------------------------------------------------------------------------

def daemon_pid(iface: str) -> int:
    return int((netlab.WGPY_RUN_DIR / f"{iface}.pid").read_text().strip())


def stats(ns: str, iface: str) -> dict[str, int]:
    """`wgpy show IFACE stats`: drop counters (drop_<reason>) and table fill."""
    out = run(ns, netlab.WGPY, "show", iface, "stats", timeout=15).stdout
    return {k: int(v) for k, v in (line.split("\t") for line in out.splitlines() if "\t" in line)}


# -- tools run inside a namespace ------------------------------------------------------------------------------

def hostile(ns: str, *args: Any, timeout: float = 120.0) -> dict[str, Any]:
    res = run(ns, sys.executable, HOSTILE, *args, timeout=timeout)
    return json.loads(res.stdout.strip().splitlines()[-1])


def start_hostile(lab: Lab, ns: str, *args: Any, name: str = "hostile") -> netlab.Proc:
    return lab.popen(ns, sys.executable, HOSTILE, *args, name=name)


def proc_json(proc: netlab.Proc, timeout: float) -> dict[str, Any]:
    proc.wait(timeout)
    lines = [ln for ln in proc.stdout().splitlines() if ln.strip()]
    assert lines, proc.describe()
    return json.loads(lines[-1])


def iperf(lab: Lab, ns_server: str, ns_client: str, server_ip: str, seconds: float, port: int = 5301) -> float:
    """TCP throughput client -> server through whatever path is set up, in Mbit/s (iperf3, bounded)."""
    server = lab.popen(ns_server, "iperf3", "-s", "-1", "-p", port, name="iperf3-s")
    wait_for(lambda: run(ns_server, "ss", "-ltn", timeout=5).stdout.count(f":{port} ") > 0, 10,
             what="iperf3 server")
    res = run(ns_client, "iperf3", "-c", server_ip, "-p", port, "-t", seconds, "-J", "--connect-timeout", 5000,
              timeout=seconds + 60, check=False)
    server.stop()
    try:
        data = json.loads(res.stdout)
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError) as e:
        raise AssertionError(f"iperf3 failed: {e}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}") from None


def first_ping_time(ns: str, addr: str, timeout: float) -> float | None:
    """Seconds until `addr` answers a ping (one probe every 0.2 s), or None within `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if run(ns, "ping", "-c", "1", "-W", "1", addr, timeout=10, check=False).returncode == 0:
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def ping_series(ns: str, addr: str, count: int = 30, interval: float = 0.1, wait: float = 2.0,
                timeout: float = 120.0) -> tuple[float, list[float]]:
    """`count` pings `interval` s apart -> (the fraction lost, the round-trip times of the answered ones in ms,
    sorted): median and tail of the latency while something else runs."""
    res = run(ns, "ping", "-n", "-c", count, "-i", interval, "-W", wait, addr, timeout=timeout, check=False)
    rtts = sorted(float(m.group(1)) for m in re.finditer(r"time=([\d.]+) ms", res.stdout))
    return 1.0 - len(rtts) / count, rtts


def p50(values: list[float]) -> float | None:
    """The median of sorted `values` (None for none)."""
    return values[len(values) // 2] if values else None


def socket_drops(ns: str, port: int) -> int:
    """What the kernel dropped at the UDP sockets on `port` in `ns` (`ss -m`: d<N>, the sockets' sk_drops): the
    transport sockets' receiver filter (io/udp.py) and full queues."""
    out = run(ns, "ss", "-uamnH", f"sport = :{port}", timeout=10).stdout
    return sum(int(d) for d in re.findall(r"\bd(\d+)\)", out))


def add_addresses(ns: str, dev: str, cidrs: list[str]) -> None:
    batch = "".join(f"address add {c} dev {dev}\n" for c in cidrs)
    run(ns, "ip", "-batch", "-", input=batch, timeout=60)


def tunnel_ok(ns: str, addr: str) -> bool:
    return run(ns, "ping", "-c", "1", "-W", "1", addr, timeout=10, check=False).returncode == 0


def count_replies(packets: list[netlab.UdpPacket], src: str, sport: int) -> tuple[int, int]:
    """(packets, payload bytes) sent from src:sport."""
    sel = [p for p in packets if p.src == src and p.sport == sport]
    return len(sel), sum(len(p.payload) for p in sel)


_SIZE = re.compile(r"^\d+$")


def star(lab: Lab, n: int) -> netlab.Topology:
    """`n` namespaces on one Linux bridge in a switch namespace; node i at 10.201.0.<i+1>/24 (like the
    three_ns_switch fixture, any size)."""
    switch = lab.netns()
    run(switch, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
    run(switch, "ip", "link", "set", "br0", "up")
    nss, veths, peers, ips = [], [], [], []
    for i in range(n):
        ns = lab.netns()
        ip = f"10.201.0.{i + 1}"
        v_node, v_switch = lab.veth(ns, switch, f"{ip}/24", None)
        run(switch, "ip", "link", "set", v_switch, "master", "br0", "up")
        nss.append(ns)
        veths.append(v_node)
        peers.append(v_switch)
        ips.append(ip)
    return netlab.Topology(ns=nss, veth=veths, ip=ips, switch=switch, peer_veth=peers)


def routed(lab: Lab) -> tuple[netlab.Topology, str, tuple[str, str]]:
    """Node 0 -- router -- node 1, each side its own /24 (10.210.1.0/24 and 10.210.2.0/24).

    Returns (topology of the two end nodes, router namespace, (router's veth towards node 0, towards node 1)).
    """
    a, r, b = lab.netns(), lab.netns(), lab.netns()
    va, ra = lab.veth(a, r, "10.210.1.1/24", "10.210.1.254/24")
    vb, rb = lab.veth(b, r, "10.210.2.1/24", "10.210.2.254/24")
    run(a, "ip", "route", "add", "default", "via", "10.210.1.254")
    run(b, "ip", "route", "add", "default", "via", "10.210.2.254")
    run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    topo = netlab.Topology(ns=[a, b], veth=[va, vb], ip=["10.210.1.1", "10.210.2.1"], peer_veth=[ra, rb])
    return topo, r, (ra, rb)
