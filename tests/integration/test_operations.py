"""Operations (issue 19), with the real tools: Prometheus scraping a daemon while traffic flows, `wgpy show --json`
against `wg show dump`, the systemd unit's commands run as systemd runs them, `wgpy genconf` + `wgpy qr` for a
wireguard-go client.

Per-peer bandwidth limits (RateLimit) are not here: they are not implemented yet.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from wgpy_testkit.lab import assert_ping, ping
from wgpy_testkit.procs import run, wait_for
from wgpy_testkit.wgconf import (UAPI_DIR, WGPY, WGPY_RUN_DIR, PeerSpec, gen_keypair, gen_psk, parse_wg_dump,
                                 render_config, unique_iface, write_config)

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "wgpy@.service"


def http_get(ns: str, url: str, timeout: float = 10.0) -> str:
    """GET `url` from inside `ns` (a Python one-liner there: the namespace has its own loopback)."""
    code = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=%r).read()"
            ".decode())" % timeout)
    return run(ns, sys.executable, "-c", code, url, timeout=timeout + 5).stdout


def wgpy_json(ns: str, *args: str, env: dict | None = None) -> dict:
    cmd = ["env", *[f"{k}={v}" for k, v in (env or {}).items()], str(WGPY), "show", *args, "--json"]
    return json.loads(run(ns, *cmd, timeout=15).stdout)


# ---- Prometheus ---------------------------------------------------------------------------------------------------

def test_prometheus_scrapes_the_daemon_while_traffic_flows(lab, two_ns):
    """A real Prometheus (Debian's) scrapes MetricsListen every second; its HTTP API is asked for the per-peer
    byte counters while a transfer runs; idle and slowloris clients on the metrics port change nothing;
    promtool finds no problem in the exposition."""
    lab.require_real_wgpy("the metrics endpoint")
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        pytest.skip("prometheus/promtool not installed (Debian package prometheus; scripts/setup.sh installs it)")
    a_ns, b_ns = two_ns.ns
    ka, kb = gen_keypair(), gen_keypair()
    iface = unique_iface()
    mport, pport = 19586, 19090
    text = render_config(ka.private, 51820, [PeerSpec(kb.public, ("10.99.0.2/32",), two_ns.endpoint(1, 51821))],
                         addresses=["10.99.0.1/24"], extra_interface_lines=[f"MetricsListen = 127.0.0.1:{mport}"])
    lab.wgpy_up(a_ns, write_config(lab.tmp, iface, text))
    lab.wireguard_go_up(b_ns, unique_iface(), kb.private, 51821, [PeerSpec(ka.public, ("10.99.0.1/32",),
                                                                           two_ns.endpoint(0, 51820))], "10.99.0.2/24")
    assert_ping(a_ns, "10.99.0.2")
    assert wgpy_json(a_ns, iface)["metrics_listen"] == f"127.0.0.1:{mport}"

    prom_dir = lab.tmp / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        f"scrape_configs:\n  - job_name: wgpy\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n")
    prom = lab.popen(a_ns, "prometheus", f"--config.file={prom_dir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{pport}",
                     "--log.level=warn", name="prometheus")
    api = f"http://127.0.0.1:{pport}/api/v1"

    def query(q: str) -> list:
        if not prom.alive():
            raise AssertionError(f"prometheus exited\n{prom.describe()}")
        try:
            reply = json.loads(http_get(a_ns, f"{api}/query?query={urllib.parse.quote(q)}"))
        except Exception:
            return []
        return reply["data"]["result"] if reply.get("status") == "success" else []

    def sent_bytes() -> float | None:
        res = query(f'wireguard_sent_bytes_total{{interface="{iface}",public_key="{kb.public}"}}')
        return float(res[0]["value"][1]) if res else None

    wait_for(lambda: sent_bytes() is not None, 60, interval=0.5, what="Prometheus to scrape wgpy")
    series = query(f'wireguard_sent_bytes_total{{interface="{iface}"}}')
    assert series[0]["metric"]["allowed_ips"] == "10.99.0.2/32"          # the exporter's labels

    # traffic for ~8 s, with hostile clients on the metrics port meanwhile
    xfer = lab.start_transfer(b_ns, a_ns, "10.99.0.2", 24 << 20, timeout=60, rate=3 << 20)
    hostile = []
    hostile_code = (
        "import socket, sys, time\n"
        "conns = []\n"
        "for i in range(60):\n"
        "    try:\n"
        "        s = socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
        "    except OSError:\n"
        "        continue\n"
        "    s.sendall(b'GET /metr')\n"
        "    conns.append(s)\n"
        "end = time.monotonic() + 8\n"
        "while time.monotonic() < end:\n"
        "    for s in conns:\n"
        "        try:\n"
        "            s.send(b'i')\n"
        "        except OSError:\n"
        "            pass\n"
        "    time.sleep(0.5)\n" % mport)
    hostile.append(lab.popen(a_ns, sys.executable, "-c", hostile_code, name="slowloris"))
    samples = []
    t0 = time.monotonic()
    while not xfer.done() and time.monotonic() - t0 < 60:
        v = sent_bytes()
        if v is not None and (not samples or v != samples[-1]):
            samples.append(v)
        time.sleep(1.0)
    xfer.wait()
    assert len(samples) >= 3 and samples == sorted(samples), samples      # counters rising while it flows
    assert samples[-1] - samples[0] > 8 << 20, samples
    recv = query(f'wireguard_received_bytes_total{{interface="{iface}",public_key="{kb.public}"}}')
    assert recv and float(recv[0]["value"][1]) > 0
    # Prometheus kept scraping through the hostile clients, each scrape well under a second
    up = query(f'min_over_time(up{{job="wgpy"}}[20s])')
    assert up and up[0]["value"][1] == "1", up
    dur = query('max_over_time(scrape_duration_seconds{job="wgpy"}[20s])')
    assert dur and float(dur[0]["value"][1]) < 0.5, dur
    cut = query(f'wgpy_metrics_connections_cut_total{{interface="{iface}"}}')
    assert sum(float(r["value"][1]) for r in cut) > 0, cut            # the slowloris clients were cut off
    assert query(f'wgpy_handshakes_completed_total{{interface="{iface}"}}')
    for p in hostile:
        p.stop()
    # the counters Prometheus has are the daemon's (within what flowed since its last scrape)
    tx_now = next(p for p in wgpy_json(a_ns, iface)["peers"] if p["public_key"] == kb.public)["transfer_tx"]
    assert 0 < sent_bytes() <= tx_now

    exposition = http_get(a_ns, f"http://127.0.0.1:{mport}/metrics")
    assert ka.private not in exposition and kb.public in exposition
    res = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    for name in ("process_resident_memory_bytes", "process_open_fds", "wgpy_dropped_packets_total",
                 "wgpy_cookie_replies_sent_total", "wgpy_under_load", "wgpy_staged_packets",
                 "wgpy_peer_path_mtu_bytes", "wgpy_peer_info", "wireguard_latest_handshake_seconds"):
        assert f"\n{name}" in exposition, name


# ---- wgpy show --json vs wg show dump -------------------------------------------------------------------------

def test_show_json_round_trips_wg_show_dump(lab, two_ns):
    lab.require_real_wgpy("wgpy show --json")
    a_ns, b_ns = two_ns.ns
    ka, kb, kc = gen_keypair(), gen_keypair(), gen_keypair()
    psk = gen_psk()
    iface = unique_iface()
    peers = [PeerSpec(kb.public, ("10.99.0.2/32", "fd99::2/128"), two_ns.endpoint(1, 51821), preshared_key=psk,
                      persistent_keepalive=25),
             PeerSpec(kc.public, ("10.99.0.3/32",))]                  # no endpoint, never a handshake
    text = render_config(ka.private, 51820, peers, addresses=["10.99.0.1/24"],
                         extra_interface_lines=["FwMark = 0x1234"])
    lab.wgpy_up(a_ns, write_config(lab.tmp, iface, text))
    lab.wireguard_go_up(b_ns, unique_iface(), kb.private, 51821,
                        [PeerSpec(ka.public, ("10.99.0.1/32",), two_ns.endpoint(0, 51820), preshared_key=psk)],
                        "10.99.0.2/24")
    assert_ping(a_ns, "10.99.0.2")

    for attempt in range(5):                 # a keepalive may move the counters between the two reads
        wg = parse_wg_dump(run(a_ns, "wg", "show", iface, "dump", timeout=10).stdout)
        dump = wgpy_json(a_ns, iface, "dump")
        hidden = wgpy_json(a_ns, iface)
        if all(p["transfer_tx"] == wg["peers"][p["public_key"]]["tx"] for p in dump["peers"]):
            break
        time.sleep(0.3)
    assert dump["private_key"] == wg["private_key"] == ka.private
    assert dump["public_key"] == hidden["public_key"] == wg["public_key"] == ka.public
    assert dump["listen_port"] == wg["listen_port"] == 51820 and dump["fwmark"] == wg["fwmark"] == 0x1234
    assert hidden["private_key"] == "(hidden)"
    assert {p["public_key"] for p in dump["peers"]} == set(wg["peers"]) == {kb.public, kc.public}
    by_key = {p["public_key"]: p for p in hidden["peers"]}
    for p in dump["peers"]:
        w = wg["peers"][p["public_key"]]
        assert p["preshared_key"] == w["preshared_key"]
        assert by_key[p["public_key"]]["preshared_key"] == (None if w["preshared_key"] is None else "(hidden)")
        assert p["endpoint"] == w["endpoint"]
        assert sorted(p["allowed_ips"]) == sorted(w["allowed_ips"])
        assert p["latest_handshake"] == w["latest_handshake"]
        assert (p["transfer_rx"], p["transfer_tx"]) == (w["rx"], w["tx"])
        assert (p["persistent_keepalive"] or None) == w["persistent_keepalive"]
    assert wg["peers"][kb.public]["latest_handshake"] > 0 and wg["peers"][kb.public]["rx"] > 0
    # a field mode, and every interface at once
    transfer = wgpy_json(a_ns, iface, "transfer")
    assert {p["public_key"] for p in transfer["peers"]} == {kb.public, kc.public}
    assert set(transfer["peers"][0]) == {"public_key", "transfer_rx", "transfer_tx"}
    assert iface in [o["interface"] for o in wgpy_json(a_ns)]
    # keys shown only as asked, exactly as the text output: WG_HIDE_KEYS=never shows them in the listing too
    assert wgpy_json(a_ns, iface, env={"WG_HIDE_KEYS": "never"})["private_key"] == ka.private


# ---- systemd ----------------------------------------------------------------------------------------------------

def unit_text(bin_dir: Path) -> str:
    """The unit as scripts/install.sh installs it for commands in `bin_dir`."""
    return UNIT.read_text().replace("/usr/local/bin/", f"{bin_dir}/")


def unit_values(text: str, key: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{key}=(.*)$", text, re.M)]


def test_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (Debian package systemd; scripts/setup.sh installs it)")
    unit = tmp_path / "wgpy@wgt0.service"          # an instance of the template, as systemd loads it
    unit.write_text(unit_text(WGPY.parent))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stdout + res.stderr
    text = unit.read_text()
    assert unit_values(text, "Type") == ["notify"]
    caps = unit_values(text, "CapabilityBoundingSet")[0].split()
    assert "CAP_NET_ADMIN" in caps and "CAP_SYS_ADMIN" not in caps and "CAP_SYS_MODULE" not in caps
    for directive in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert unit_values(text, directive), directive


class NotifyListener:
    """The NOTIFY_SOCKET systemd gives a Type=notify service: a unix datagram socket the test reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if field in msg.split("\n"):
                    return msg
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no {field} on NOTIFY_SOCKET within {timeout}s (got {self.messages})")

    def close(self) -> None:
        self.sock.close()


def test_systemd_unit_start_reload_stop(lab, two_ns):
    """ExecStart, ExecReload and ExecStop of wgpy@.service run as systemd runs them: %i substituted, the
    capability bounding set applied (setpriv), NoNewPrivileges, UMask, a NOTIFY_SOCKET, JOURNAL_STREAM. READY=1
    comes once the tunnel is up; a reload adds and removes peers while the unchanged peer's session goes on (no
    new handshake, the counters keep counting, a ping passes right after); ExecStop removes everything."""
    lab.require_real_wgpy("the systemd unit")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to apply the unit's capability bounding set")
    a_ns, b_ns = two_ns.ns
    text = unit_text(WGPY.parent)
    iface = unique_iface()
    ka, kb, kc, kd = gen_keypair(), gen_keypair(), gen_keypair(), gen_keypair()
    b_peer = PeerSpec(kb.public, ("10.99.0.2/32",), two_ns.endpoint(1, 51821))
    conf_dir = Path("/etc/wireguard")
    conf_dir.mkdir(mode=0o700, exist_ok=True)
    conf = conf_dir / f"{iface}.conf"           # where the unit's `wgpy up --foreground %i` looks
    lab.defer(f"remove {conf}", lambda: conf.unlink(missing_ok=True))
    write_config(conf_dir, iface, render_config(ka.private, 51820, [b_peer, PeerSpec(kc.public, ("10.99.0.3/32",))],
                                                addresses=["10.99.0.1/24"]))
    lab.wireguard_go_up(b_ns, unique_iface(), kb.private, 51821,
                        [PeerSpec(ka.public, ("10.99.0.1/32",), two_ns.endpoint(0, 51820))], "10.99.0.2/24")

    caps = unit_values(text, "CapabilityBoundingSet")[0].split()
    bounding = ",".join(["-all"] + [f"+{c[4:].lower()}" for c in caps])
    prefix = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all"]
    if unit_values(text, "NoNewPrivileges") == ["yes"]:
        prefix.append("--no-new-privs")

    def command(key: str) -> list[str]:
        cmd = unit_values(text, key)[0].replace("%i", iface).split()
        return ["sh", "-c", f"umask {unit_values(text, 'UMask')[0]} && exec \"$@\"", "sh", *prefix, "--", *cmd]

    notify = NotifyListener(lab.tmp / "notify.sock")
    lab.defer("close the notify socket", notify.close)
    env = {"NOTIFY_SOCKET": str(notify.path), "JOURNAL_STREAM": "8:1234", "INVOCATION_ID": secrets.token_hex(16)}
    main = lab.popen(a_ns, *command("ExecStart"), env=env, name="unit-start")
    lab.defer(f"wgpy down {iface}", lambda: run(a_ns, WGPY, "down", iface, timeout=15, check=False))
    ready = notify.wait_for("READY=1", 60)
    assert f"STATUS=interface {iface} is up" in ready
    assert main.alive(), main.describe()
    assert (UAPI_DIR / f"{iface}.sock").exists()
    assert_ping(a_ns, "10.99.0.2")
    before = parse_wg_dump(run(a_ns, "wg", "show", iface, "dump", timeout=10).stdout)
    hs_before = before["peers"][kb.public]["latest_handshake"]
    initiations_before = wgpy_json(a_ns, iface, "stats")["stats"]
    assert hs_before > 0 and set(before["peers"]) == {kb.public, kc.public}
    # journald-friendly: no timestamps of our own under JOURNAL_STREAM
    assert not re.search(r"^\d{4}-\d\d-\d\d", main.stderr(), re.M), main.stderr()

    # the config changes: C goes, D comes, B stays as it was
    write_config(conf_dir, iface, render_config(ka.private, 51820, [b_peer, PeerSpec(kd.public, ("10.99.0.4/32",))],
                                                addresses=["10.99.0.1/24"]))
    time.sleep(1.1)                    # so that a new handshake would show as a later second
    res = run(a_ns, *command("ExecReload"), timeout=30, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 peer(s) added, 1 removed, 0 updated, 1 unchanged" in res.stderr
    res = ping(a_ns, "10.99.0.2")
    assert res.returncode == 0, res.stdout
    after = parse_wg_dump(run(a_ns, "wg", "show", iface, "dump", timeout=10).stdout)
    assert set(after["peers"]) == {kb.public, kd.public}
    assert after["peers"][kb.public]["latest_handshake"] == hs_before          # the session went on
    assert after["peers"][kb.public]["tx"] > before["peers"][kb.public]["tx"]    # counters not reset
    stats = wgpy_json(a_ns, iface, "stats")["stats"]
    assert stats.get("keypairs", 1) >= 1 and main.alive()
    assert initiations_before.get("peers") == 2 and stats.get("peers") == 2

    res = run(a_ns, *command("ExecStop"), timeout=30, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert main.wait(20) == 0, main.describe()
    notify.wait_for("STOPPING=1", 5)
    assert not (UAPI_DIR / f"{iface}.sock").exists() and not (WGPY_RUN_DIR / f"{iface}.pid").exists()
    assert run(a_ns, "ip", "link", "show", iface, timeout=10, check=False).returncode != 0


# ---- genconf and qr -------------------------------------------------------------------------------------------------

def test_genconf_client_pings_and_its_qr_decodes(lab, two_ns):
    """`wgpy genconf --peer-of IFACE` adds a peer to the running interface and prints its config; wireguard-go
    run with that config pings through the tunnel; `wgpy qr --png` of it decodes (zbarimg) to the same text; the
    private key is kept nowhere."""
    lab.require_real_wgpy("wgpy genconf")
    a_ns, b_ns = two_ns.ns
    ka = gen_keypair()
    iface = unique_iface()
    lab.wgpy_up(a_ns, write_config(lab.tmp, iface, render_config(ka.private, 51820, [],
                                                                 addresses=["10.77.0.1/24"])))
    res = run(a_ns, WGPY, "genconf", "--peer-of", iface, "--address", "10.77.0.7/32", "--endpoint",
              two_ns.ip[0], "--psk", timeout=20, check=False)
    assert res.returncode == 0, res.stderr
    client = res.stdout
    assert f"PublicKey = {ka.public}\n" in client and f"Endpoint = {two_ns.ip[0]}:51820\n" in client
    assert "AllowedIPs = 10.77.0.0/24\n" in client and "Address = 10.77.0.7/32\n" in client
    assert "PrivateKey" not in res.stderr and "added to" in res.stderr
    fields = dict(re.findall(r"^(\w+) = (.*)$", client, re.M))
    live = wgpy_json(a_ns, iface)["peers"]
    client_pub = run(None, "wg", "pubkey", input=fields["PrivateKey"] + "\n", timeout=10).stdout.strip()
    assert [(p["public_key"], p["allowed_ips"], p["preshared_key"]) for p in live] == \
        [(client_pub, ["10.77.0.7/32"], "(hidden)")]
    # the same address again is refused: it is routed to that peer now
    again = run(a_ns, WGPY, "genconf", "--peer-of", iface, "--address", "10.77.0.7", "--endpoint", "h",
                timeout=20, check=False)
    assert again.returncode == 1 and "already routed" in again.stderr

    lab.wireguard_go_up(b_ns, unique_iface(), fields["PrivateKey"], None,
                        [PeerSpec(fields["PublicKey"], ("10.77.0.0/24",), fields["Endpoint"],
                                  preshared_key=fields["PresharedKey"],
                                  persistent_keepalive=int(fields["PersistentKeepalive"]))], fields["Address"])
    assert_ping(b_ns, "10.77.0.1")

    png = lab.tmp / "phone.png"
    res = run(None, WGPY, "qr", "-", "--png", png, input=client, timeout=20, check=False)
    assert res.returncode == 0, res.stderr
    if shutil.which("zbarimg"):
        decoded = subprocess.run(["zbarimg", "--raw", "-q", "-Sbinary", str(png)], capture_output=True,
                                 timeout=30)
        assert decoded.returncode == 0 and decoded.stdout.rstrip(b"\n") == client.rstrip("\n").encode()
    term = run(None, WGPY, "qr", "-", input=client, timeout=20)
    assert len(term.stdout.splitlines()) > 20
    # shown once: not in the daemon's log, its run files, or the interface's config
    for path in [WGPY_RUN_DIR / f"{iface}.log", lab.tmp / f"{iface}.conf"]:
        if path.exists():
            assert fields["PrivateKey"] not in path.read_text(errors="replace"), path
