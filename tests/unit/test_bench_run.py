"""bench/run.py's pure parts: which systems a command line runs and in what order, the medians and ratios of the
summary (wgpy / upstream wireguard-go, wgpy / Debian's, L2 / L3), the table and its one-line summaries, and the
daemon CPU it counts (a process tree: threads, forked workers). The measurement itself needs root and namespaces
and is not run here."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("wgpy_bench_run", ROOT / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()
UP, DEB = bench.UPSTREAM, bench.DEBIAN


# ---- systems and order ------------------------------------------------------------------------------------------

def test_default_run_is_wgpy_upstream_and_debian_after_the_baseline():
    assert bench.select_systems() == ["veth", "wgpy", UP, DEB]
    assert bench.select_systems(no_baseline=True) == ["wgpy", UP, DEB]
    assert bench.select_systems(no_baseline=True, l2=True, transport="both") == \
        ["wgpy", UP, DEB, "wgpy-l2", "wgpy-tcp", "wgpy-tls"]


def test_only_and_impl_pick_systems_and_the_old_name_means_debians_build():
    assert bench.select_systems(only=bench.system_name("wireguard-go")) == [DEB]
    assert bench.select_systems(only="wgpy-l2", l2=True) == ["wgpy-l2"]
    impl = bench.system_list(f"wgpy, {UP},wgpy")
    assert impl == ["wgpy", UP]
    assert bench.select_systems(impl=impl) == ["veth", "wgpy", UP]
    assert bench.select_systems(impl=impl, no_baseline=True) == ["wgpy", UP]
    assert bench.select_systems(impl=bench.system_list("veth,wgpy"), no_baseline=True) == ["veth", "wgpy"]
    with pytest.raises(argparse.ArgumentTypeError):
        bench.system_list("wgpy,boringtun")
    with pytest.raises(argparse.ArgumentTypeError):
        bench.system_list(" , ")


def test_repeats_alternate_the_order():
    systems = ["veth", "wgpy", UP, DEB]
    assert [bench.repeat_order(systems, r) for r in range(3)] == [systems, systems[::-1], systems]


def test_a_missing_wireguard_go_is_skipped_with_the_reason(tmp_path):
    found, missing = bench.find_go_binaries(["wgpy", UP], tmp_path / "no-such-wireguard-go")
    assert found == {} and set(missing) == {UP}
    assert "no-such-wireguard-go" in missing[UP] and "--upstream-go" in missing[UP]
    exe = tmp_path / "wireguard-go-x"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    found, missing = bench.find_go_binaries(["wgpy", UP], exe)
    assert found == {UP: str(exe)} and missing == {}
    assert "wireguard-go" in bench.notes(["wgpy"], {UP: missing.get(UP, "gone")}, 1392)[0]


def test_version_from_the_binarys_banner():
    assert bench.go_version("wireguard-go v0.0.20250522 (/x/wireguard-go-0.0.20250522)") == "0.0.20250522"
    assert bench.go_version("wireguard-go v0.0.20220316") == "0.0.20220316"
    assert bench.go_version("?") == "?"


# ---- summary, ratios, table -------------------------------------------------------------------------------------

def _runs():
    def run(system, rep, **kv):
        return {"system": system, "repeat": rep, "bg_busy_pct": 0.0, **kv}
    return [
        run("wgpy", 1, tcp1_mbps=800.0, tcp1_us_per_seg=20.0, ping_p50_ms=0.9, ping_avg_ms=1.0,
            udp_loss_pct=2.0, tcp1_retransmits=0, tcp1_tun_pkt_bytes=60000.0),
        run("wgpy", 2, tcp1_mbps=1000.0, tcp1_us_per_seg=24.0, ping_p50_ms=0.7, ping_avg_ms=0.8,
            udp_loss_pct=4.0, tcp1_retransmits=0, tcp1_tun_pkt_bytes=62000.0),
        run(UP, 1, tcp1_mbps=2000.0, tcp1_us_per_seg=10.0, ping_p50_ms=0.5, ping_avg_ms=0.5,
            udp_loss_pct=0.0, tcp1_retransmits=0, tcp1_tun_pkt_bytes=64000.0),
        run(DEB, 1, tcp1_mbps=450.0, tcp1_us_per_seg=45.0, ping_p50_ms=0.6, ping_avg_ms=0.64,
            udp_loss_pct=9.0, tcp1_retransmits=300, tcp1_tun_pkt_bytes=1400.0),
        run(DEB, 2, errors=["BenchError: daemon died"]),             # a failed run adds no values
        run("wgpy-l2", 1, tcp1_mbps=720.0, ping_p50_ms=0.9),
    ]


def test_summary_medians_and_ratios():
    s = bench.summarize(_runs(), ["wgpy", UP, DEB, "wgpy-l2"])
    assert s["medians"]["wgpy"]["tcp1_mbps"] == 900.0
    assert s["medians"][DEB]["tcp1_mbps"] == 450.0 and s["repeats"][DEB] == 2
    up, deb = s["ratios"][f"wgpy/{UP}"], s["ratios"][f"wgpy/{DEB}"]
    assert up["tcp1_mbps"] == pytest.approx(0.45)
    assert up["tcp1_us_per_seg"] == pytest.approx(2.2)
    assert up["ping_p50_ms"] == pytest.approx(1.6) and up["ping_avg_ms"] == pytest.approx(1.8)
    assert "udp_loss_pct" not in up                       # upstream lost nothing: no ratio, not a division by 0
    assert deb["tcp1_mbps"] == pytest.approx(2.0) and deb["udp_loss_pct"] == pytest.approx(3 / 9)
    assert deb["tcp1_retransmits"] == 0.0
    assert "tcp1_tun_pkt_bytes" not in up and "bg_busy_pct" not in up      # context rows have no ratio
    assert s["ratios"]["wgpy-l2/wgpy"]["tcp1_mbps"] == pytest.approx(0.8)


def test_table_columns_in_order_with_both_ratio_columns():
    labels = {UP: "upstream wireguard-go 0.0.20250522", DEB: "Debian wireguard-go 0.0.20220316"}
    text = bench.table(_runs(), ["veth", "wgpy", UP, DEB, "wgpy-l2"], "1G", 1392, labels)
    lines = text.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == ["metric (median (min–max))", "wgpy", "upstream wireguard-go 0.0.20250522",
                    "Debian wireguard-go 0.0.20220316", "wgpy / upstream", "wgpy / Debian", "wgpy L2 (tap)",
                    "L2 / L3", "raw veth"]
    assert lines[1].count("---") == len(head)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip().strip("|").split("|")[1:]] for r in lines[2:]}
    assert rows["TCP 1 stream, Mbit/s"][:6] == ["900 (800–1000)", "2000", "450", "0.45", "2.00", "720"]
    assert rows["TCP 1 stream, Mbit/s"][6] == "0.80"
    assert rows["ping RTT p50, ms"][3:5] == ["1.60", "1.33"]
    assert rows["loss %"][:5] == ["3.0 (2.0–4.0)", "0.0", "9.0", "-", "0.33"]
    assert rows["avg packet into the sender's tunnel device, B (> 1420: TSO)"][3:5] == ["-", "-"]
    assert not any(label.startswith("TCP 4 streams") for label in rows)      # no values: no row


def test_table_without_a_reference_has_no_ratio_column():
    text = bench.table(_runs(), ["wgpy"], "1G", 1392)
    assert text.splitlines()[0] == "| metric (median (min–max)) | wgpy |"


def test_headline_and_notes():
    s = bench.summarize(_runs(), ["wgpy", UP, DEB])
    line = bench.headline(s, UP, "upstream wireguard-go 0.0.20250522")
    assert line.startswith("wgpy / upstream wireguard-go 0.0.20250522: TCP 1 stream 0.45x, ")
    assert "CPU/segment (1 stream) 2.20x" in line and "ping p50 1.60x" in line and "ping avg 1.80x" in line
    assert line.endswith("UDP loss 3.0 % vs 0.0 %")
    notes = bench.notes(["wgpy", UP, "wgpy-l2", "wgpy-tcp"], {}, 1392)
    assert any("no TAP" in n and "1378 B" in n for n in notes)
    assert any("TCP/TLS transports are wgpy only" in n for n in notes)


# ---- daemon CPU: the whole process tree -------------------------------------------------------------------------

def test_cpu_ticks_counts_a_daemons_children_and_threads():
    """A parent that only sleeps, with a child that burns CPU: the parent's tree CPU grows by the child's (a
    daemon with worker processes); /proc/PID/stat of the parent alone would show ~0."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(30)\n"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {burn!r}])\n"
                               "time.sleep(30)\n"], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            user, system = bench.cpu_ticks(parent.pid)
            if (user + system) / os.sysconf("SC_CLK_TCK") >= 0.5:
                break
            time.sleep(0.1)
        own = bench.proc_stat(parent.pid)
        assert (int(own[11]) + int(own[12])) / os.sysconf("SC_CLK_TCK") < 0.3      # the parent itself is idle
        assert (user + system) / os.sysconf("SC_CLK_TCK") >= 0.5
        assert len(bench.descendants(parent.pid)) == 1
    finally:
        os.killpg(parent.pid, 9)
        parent.wait(timeout=10)
