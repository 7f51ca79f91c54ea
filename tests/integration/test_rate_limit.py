"""RateLimit (issue 19): iperf3 through a wgpy hub whose peer B is limited to 20 Mbit/s measures 20 +/- 10 % both
ways, while peer C on the same interface, unlimited, keeps its rate; the limit is changed live over the UAPI.

Three namespaces on a bridge (three_ns_switch), all wgpy: the hub (node 0, the limit in its config file) and two
spokes. The limit counts the tunnel's IP packets; iperf3 reports TCP payload (1368 of every 1420 bytes with the
1420 MTU), so 20 Mbit/s of packets is 19.3 Mbit/s of payload: the test allows 18..22.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from wgpy.uapi.server import request
from wgpy_testkit.netlab import WGPY_KIND, assert_ping, run, start_mesh, wait_for

pytestmark = pytest.mark.netns

SECONDS = 6          # per iperf3 run, the first second (slow start, the bucket's burst) left out


def _iperf_start(lab, ns_server: str, ns_client: str, server_ip: str, port: int, reverse: bool = False):
    server = lab.popen(ns_server, "iperf3", "-s", "-1", "-p", port, name=f"iperf3-s-{port}")
    wait_for(lambda: f":{port} " in run(ns_server, "ss", "-ltn", timeout=5).stdout, 10, what="iperf3 server")
    argv = ["iperf3", "-c", server_ip, "-p", port, "-t", SECONDS, "-O", 1, "-J", "--connect-timeout", 5000]
    if reverse:
        argv.append("-R")
    client = lab.popen(ns_client, *argv, name=f"iperf3-c-{port}")
    return server, client


def _iperf_result(server, client) -> float:
    """Mbit/s of payload received, over the measured seconds."""
    client.wait(SECONDS + 60)
    server.stop()
    try:
        return json.loads(client.stdout())["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError) as e:
        raise AssertionError(f"iperf3 failed: {e}\n{client.stdout()[-2000:]}\n{client.stderr()[-2000:]}") from None


def _iperf(lab, ns_server, ns_client, server_ip, port, reverse=False) -> float:
    return _iperf_result(*_iperf_start(lab, ns_server, ns_client, server_ip, port, reverse))


def test_rate_limit_both_ways_beside_an_unlimited_peer(lab, three_ns_switch):
    def tweak(i, j, spec):
        return dataclasses.replace(spec, extra_lines=("RateLimit = 20mbit",)) if (i, j) == (0, 1) else spec

    hub, b, c = start_mesh(lab, three_ns_switch, [WGPY_KIND] * 3, peer_tweak=tweak)
    for node in (b, c):
        assert_ping(node.ns, hub.ip4)
    show = lab.wgpy(hub.ns, "show", hub.iface, check=True).stdout
    assert "rate limit: 20 Mbit/s each way, burst 64.00 KiB (default)" in show, show

    alone = _iperf(lab, hub.ns, c.ns, hub.ip4, 5311)                 # the unlimited peer, nothing else going on
    # the limited peer uploads (the hub's receive side) while the unlimited one uploads too
    limited = _iperf_start(lab, hub.ns, b.ns, hub.ip4, 5312)
    beside = _iperf_start(lab, hub.ns, c.ns, hub.ip4, 5313)
    up, c_beside = _iperf_result(*limited), _iperf_result(*beside)
    down = _iperf(lab, b.ns, hub.ns, b.ip4, 5314)                   # the hub sends to the limited peer
    print(f"limited peer: up {up:.1f}, down {down:.1f} Mbit/s; unlimited: alone {alone:.0f}, beside {c_beside:.0f}")
    assert 18.0 <= up <= 22.0, up
    assert 18.0 <= down <= 22.0, down
    assert c_beside > 10 * 20 and c_beside >= 0.6 * alone, (alone, c_beside)

    dump = json.loads(lab.wgpy(hub.ns, "show", hub.iface, "--json", check=True).stdout)
    limits = {p["public_key"]: p["rate_limit"] for p in dump["peers"]}
    assert limits[c.keys.public] is None
    assert limits[b.keys.public]["bits_per_second"] == 20_000_000
    assert limits[b.keys.public]["dropped_sent"] + limits[b.keys.public]["dropped_received"] > 0   # TCP pushed

    # live over the UAPI: 5 Mbit/s, then off
    key = __import__("base64").b64decode(b.keys.public).hex()
    assert request(hub.iface, f"set=1\npublic_key={key}\nwgpy_rate_limit=5000000\n").strip() == "errno=0"
    slow = _iperf(lab, b.ns, hub.ns, b.ip4, 5315)
    assert 4.5 <= slow <= 5.5, slow
    assert request(hub.iface, f"set=1\npublic_key={key}\nwgpy_rate_limit=0\n").strip() == "errno=0"
    free = _iperf(lab, b.ns, hub.ns, b.ip4, 5316)
    print(f"limited peer at 5 Mbit/s: {slow:.2f}; limit removed: {free:.0f} Mbit/s")
    assert free > 10 * 20, free
    assert "rate limit" not in lab.wgpy(hub.ns, "show", hub.iface, check=True).stdout
