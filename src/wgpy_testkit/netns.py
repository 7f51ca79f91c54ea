"""Network namespaces, links, routes, sysctls and nftables inside them.

Naming rules (the UAPI socket directory /var/run/wireguard is shared by all namespaces and all runs):
  * the namespace tests' namespaces are `wgpyt-<pid>-<n>` (NS_PREFIX / NS_RE), the benchmark's `wgpyb-<pid>-<n>`
    (it passes its own prefix and pattern), so a run only ever removes its own or those of a dead process;
  * WireGuard interfaces are `wgt<6 hex>` (wgconf.unique_iface), veths `v<8 hex>a|b`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Sequence

from .procs import pid_alive, run

NS_PREFIX = f"wgpyt-{os.getpid()}-"
NS_RE = re.compile(r"^wgpyt-(\d+)-(\d+|probe)$")
NETNS_DIR = Path("/var/run/netns")

_ns_counter = 0


# --------------------------------------------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------------------------------------------

def new_netns_name(prefix: str = NS_PREFIX) -> str:
    """`<prefix><n>`, n counting up in this process (the prefix holds our pid)."""
    global _ns_counter
    _ns_counter += 1
    return f"{prefix}{_ns_counter}"


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


def cleanup_stale_namespaces(only_ours: bool, pattern: re.Pattern[str] = NS_RE) -> list[str]:
    """Remove namespaces named by `pattern` (group 1 = the pid of their maker; default `wgpyt-<pid>-*`): ours
    (only_ours=True) or those whose process is gone."""
    removed = []
    for name in list_netns():
        m = pattern.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if (only_ours and pid == os.getpid()) or (not only_ours and pid != os.getpid() and not pid_alive(pid)):
            destroy_netns(name)
            removed.append(name)
    return removed




# --------------------------------------------------------------------------------------------------------------
# Links and addresses
# --------------------------------------------------------------------------------------------------------------

def add_address(ns: str, dev: str, cidr: str) -> None:
    """Add a CIDR address to `dev`; IPv6 ones get `nodad` so they are usable at once."""
    extra = ["nodad"] if ":" in cidr else []
    run(ns, "ip", "address", "add", cidr, "dev", dev, *extra, timeout=10)


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
        add_address(ns, name, cidr)
    run(ns, "ip", "link", "set", name, "up", timeout=10)
    return name


def default_route(ns: str, via: str) -> None:
    run(ns, "ip", "-6" if ":" in via else "-4", "route", "add", "default", "via", via, timeout=10)
