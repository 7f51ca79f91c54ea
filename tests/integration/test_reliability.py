"""Reliability of a wgpy <-> wgpy tunnel: faults on the path, restarts, link outages, a soak.

Faults: node A -- router -- node B (hostile_lab.routed). This kernel has no sch_netem (CONFIG_NET_SCH_NETEM is
not set: `tc qdisc add ... netem` says "Specified qdisc kind is unknown"), so the router impairs forwarded
packets with the closest real things: nftables in the kernel for loss (`numgen random mod 100 < P drop`) and
duplication (`dup to` the next hop), and tests/tools/impair.py, a queue on a TUN device that policy routing puts
in the forwarding path, for delay with jitter (and so reordering).

The CI sample uses small sizes and short times; scripts/reliability.sh sets the knobs of hostile_lab for the full
runs (20 MB transfers, a 30 s outage, a 10-minute soak). Figures: hostile_lab.record.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from wgpy_testkit import hostile_lab as hl
from wgpy_testkit.netlab import WGPY_KIND, assert_ping, run, start_mesh, wait_for

pytestmark = pytest.mark.netns

FAULTS = {
    "loss-5pct": {"nft": "numgen random mod 100 < 5 counter drop"},
    "loss-20pct": {"nft": "numgen random mod 100 < 20 counter drop"},
    "delay-50ms-jitter-20ms-reorder": {"impair": ("--delay", 0.05, "--jitter", 0.02)},
    "duplicate-10pct": {"dup": 10},
}


def impair(lab, r: str, ra: str, rb: str, topo, fault: dict) -> hl.netlab.Proc | None:
    """Apply `fault` to everything the router forwards, both directions."""
    rules = []
    if "nft" in fault:
        rules.append(fault["nft"])
    if "dup" in fault:
        for dst, dev in ((topo.ip[0], ra), (topo.ip[1], rb)):
            rules.append(f'ip daddr {dst} numgen random mod 100 < {fault["dup"]} counter dup to {dst} device "{dev}"')
    if rules:
        body = "\n".join(f"    {r}" for r in rules)
        run(r, "nft", "-f", "-", input=f"table ip impair {{\n  chain forward {{\n"
                                       f"    type filter hook forward priority 0; policy accept;\n{body}\n  }}\n}}\n")
    if "impair" not in fault:
        return None
    proc = lab.popen(r, sys.executable, hl.IMPAIR, "imp0", *fault["impair"], name="impair")
    wait_for(lambda: '"ready"' in proc.stdout() or not proc.alive(), 10, what="impair.py")
    assert proc.alive(), proc.describe()
    run(r, "ip", "link", "set", "imp0", "up")
    for conf in ("all", "default", "imp0", ra, rb):
        run(r, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0")
    run(r, "ip", "route", "add", "default", "dev", "imp0", "table", "100")
    for pref, dev in ((100, ra), (101, rb)):
        run(r, "ip", "rule", "add", "iif", dev, "lookup", "100", "pref", pref)
    return proc


@pytest.mark.parametrize("name", list(FAULTS))
def test_transfer_through_faulty_path(lab, name):
    nbytes = int(hl.knob("WGPY_FAULT_BYTES", 2_000_000))
    topo, r, (ra, rb) = hl.routed(lab)
    # wgpy sends with UDP GSO; cut its super-packets into datagrams before they reach the router, so loss and
    # duplication hit single WireGuard messages as on a real path (not runs of up to 64 of them)
    for ns, dev in zip(topo.ns, topo.veth):
        run(ns, "ip", "link", "set", "dev", dev, "gso_max_segs", "1")
    a, b = start_mesh(lab, topo, [WGPY_KIND, WGPY_KIND])
    assert_ping(a.ns, b.ip4)
    imp = impair(lab, r, ra, rb, topo, FAULTS[name])
    t0 = time.monotonic()
    server, client = lab.transfer(b.ns, a.ns, b.ip4, nbytes, timeout=300)
    seconds = time.monotonic() - t0
    assert server["bytes"] == client["bytes"] == nbytes
    assert server["sha256"] == client["sha256"]
    extra = {}
    if imp is not None:
        imp.signal(signal.SIGTERM)
        imp.wait(10)
        extra = json.loads(imp.stdout().strip().splitlines()[-1])
        assert extra["reordered"] > 0, extra          # the jitter really did reorder packets
    if "impair" not in FAULTS[name]:
        # how many packets the kernel dropped or duplicated (the rules' counters), and how many it forwarded
        listing = json.loads(run(r, "nft", "-j", "list", "table", "ip", "impair", timeout=10).stdout)
        hit = sum(e["counter"]["packets"] for item in listing["nftables"] if "rule" in item
                  for e in item["rule"]["expr"] if "counter" in e)
        fwd = sum(hl.netlab.link_stats(r, dev)["tx"]["packets"] for dev in (ra, rb))
        assert hit > 0.3 * fwd * (FAULTS[name].get("dup", 0) or int(FAULTS[name]["nft"].split("<")[1].split()[0])) / 100
        extra = {"impaired_packets": hit, "forwarded_packets": fwd}
    assert_ping(a.ns, b.ip4)
    hl.record(f"fault_{name}", bytes=nbytes, seconds=round(seconds, 2),
              throughput_mbit=round(nbytes * 8 / seconds / 1e6, 2), sha256_match=True, **extra)


# --------------------------------------------------------------------------------------------------------------
# restarts and outages
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture
def pair(lab):
    topo = hl.star(lab, 2)
    a, b = start_mesh(lab, topo, [WGPY_KIND, WGPY_KIND], knows_endpoint=lambda i, j: i == 0)
    lab.require_real_wgpy("restarting the daemon")
    assert_ping(a.ns, b.ip4)
    return topo, a, b


def test_peer_daemon_sigkill_and_restart(lab, pair):
    """B's daemon is killed with SIGKILL (no teardown at all) and started again from the same config. A keeps
    sending; A learns nothing from B's death, so traffic resumes when A's 'no reply to data' timer starts a new
    handshake: KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ up to 1/3 s jitter) = at most ~15.3 s after A's first
    unanswered packet."""
    topo, a, b = pair
    pid = hl.daemon_pid(b.iface)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not hl.netlab.pid_alive(pid), 10, what="B's daemon to die")
    lab.wgpy_up(b.ns, b.config_path)
    assert hl.daemon_pid(b.iface) != pid
    resumed = hl.first_ping_time(a.ns, b.ip4, timeout=40)
    assert resumed is not None, "traffic did not resume within 40 s"
    assert resumed <= 15.4 + 2.5, resumed                       # the protocol's bound + ping granularity
    hl.record("restart_sigkill", seconds_to_resume=round(resumed, 2), protocol_bound_seconds=15.33)


def test_underlay_link_down_then_up(lab, pair):
    """A's underlay link goes down for WGPY_LINK_DOWN_SECONDS (30 in scripts/reliability.sh) while A keeps
    trying to send, then comes back: traffic resumes by itself."""
    topo, a, b = pair
    down_s = hl.knob("WGPY_LINK_DOWN_SECONDS", 6)
    pinger = lab.popen(a.ns, "ping", "-i", "0.2", "-W", "1", b.ip4, name="ping-during-outage")
    time.sleep(1)
    run(a.ns, "ip", "link", "set", topo.veth[0], "down")
    time.sleep(down_s)
    run(a.ns, "ip", "link", "set", topo.veth[0], "up")
    t_up = time.monotonic()
    resumed = hl.first_ping_time(a.ns, b.ip4, timeout=40)
    pinger.stop()
    assert resumed is not None, "traffic did not resume within 40 s of the link coming back"
    assert resumed <= 15.4 + 2.5, resumed
    assert_ping(b.ns, a.ip4)
    hl.record("underlay_down", down_seconds=down_s, seconds_to_resume=round(resumed, 2),
              since_link_up=round(time.monotonic() - t_up, 2))


# --------------------------------------------------------------------------------------------------------------
# soak
# --------------------------------------------------------------------------------------------------------------

RSS_GROWTH_BOUND_KIB = 8 * 1024


def test_soak(lab, pair):
    """Continuous traffic (a 2 MB/s TCP stream plus pings) for WGPY_SOAK_SECONDS (600 in the script: REKEY_AFTER_TIME
    is 120 s, so ~5 rekeys happen on their own): RSS grows less than RSS_GROWTH_BOUND_KIB, the number of open file
    descriptors does not change, and the stream arrives intact (no lost session)."""
    topo, a, b = pair
    seconds = hl.knob("WGPY_SOAK_SECONDS", 30)
    rate = 2_000_000
    pids = {"a": hl.daemon_pid(a.iface), "b": hl.daemon_pid(b.iface)}
    xfer = lab.start_transfer(b.ns, a.ns, b.ip4, int(rate * seconds), timeout=seconds + 120, rate=rate)
    time.sleep(min(5.0, seconds / 6))        # warm-up: sessions, buffers, caches
    start = {k: (hl.rss_kib(p), hl.fd_count(p)) for k, p in pids.items()}
    handshakes = {a.handshake_with(b)}
    samples = []
    while not xfer.done():
        time.sleep(5)
        handshakes.add(a.handshake_with(b))
        samples.append({k: hl.rss_kib(p) for k, p in pids.items()})
        assert hl.tunnel_ok(a.ns, b.ip4), "ping failed during the soak"
    server, client = xfer.wait()
    end = {k: (hl.rss_kib(p), hl.fd_count(p)) for k, p in pids.items()}
    assert server["sha256"] == client["sha256"] and server["bytes"] == int(rate * seconds)
    rekeys = len(handshakes) - 1
    for k in pids:
        assert end[k][1] == start[k][1], f"{k}: fds {start[k][1]} -> {end[k][1]}"
        assert end[k][0] - start[k][0] < RSS_GROWTH_BOUND_KIB, f"{k}: RSS {start[k][0]} -> {end[k][0]} KiB"
    if seconds >= 600:
        assert rekeys >= 4, f"only {rekeys} rekeys in {seconds} s"
    hl.record("soak", seconds=seconds, bytes=int(rate * seconds), rekeys=rekeys,
              rss_kib_start={k: v[0] for k, v in start.items()}, rss_kib_end={k: v[0] for k, v in end.items()},
              rss_kib_max={k: max(s[k] for s in samples) for k in pids} if samples else None,
              fds_start={k: v[1] for k, v in start.items()}, fds_end={k: v[1] for k, v in end.items()})


# --------------------------------------------------------------------------------------------------------------
# the control socket's limits
# --------------------------------------------------------------------------------------------------------------

def test_uapi_connection_limits(lab, pair):
    """An idle client is cut off after REQUEST_TIMEOUT (2 s); a request over MAX_REQUEST (64 MiB) is refused by
    closing the connection; the daemon keeps serving and forwarding throughout."""
    import socket as so
    from wgpy.uapi.server import MAX_REQUEST, REQUEST_TIMEOUT, socket_path
    topo, a, b = pair
    path = socket_path(b.iface)

    idle = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    idle.connect(path)
    idle.settimeout(REQUEST_TIMEOUT + 5)
    t0 = time.monotonic()
    assert idle.recv(100) == b""                                  # closed by the daemon, no reply
    cut_after = time.monotonic() - t0
    assert REQUEST_TIMEOUT - 0.5 <= cut_after <= REQUEST_TIMEOUT + 2, cut_after
    idle.close()

    big = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    big.connect(path)
    big.settimeout(10)
    chunk = b"a" * (1 << 20)
    sent = 0
    try:
        while sent <= MAX_REQUEST + (4 << 20):
            big.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    big.close()
    # cut off at MAX_REQUEST or at REQUEST_TIMEOUT, whichever comes first (the daemon stops reading either way)
    assert sent <= MAX_REQUEST + (4 << 20)
    assert hl.stats(b.ns, b.iface)["peers"] == 1
    assert_ping(a.ns, b.ip4)
    hl.record("uapi_limits", idle_cut_seconds=round(cut_after, 2), oversize_refused_after_bytes=sent)
