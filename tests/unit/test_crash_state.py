"""Crash recovery and signals during `up`, without a network (issue 21 items 4 and 5): the resolv.conf backup is
never overwritten and is put back after a crash, the state file records sysctls before they change and recovery
writes only the paths wgpy itself sets, and a SIGTERM during up is acted on at safe points only."""

from __future__ import annotations

import json
import os
import signal

import pytest

from wgpy.host import dns, privileges
from wgpy.quick import recovery
from wgpy.quick.interrupt import Interrupted, UpSignals
from wgpy.quick.undo import UndoStack


@pytest.fixture
def resolv(monkeypatch, tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_bytes(b"nameserver 192.0.2.1\n# theirs\n")
    monkeypatch.setattr(dns, "RESOLV_CONF", str(path))
    monkeypatch.setattr(dns.shutil, "which", lambda name: None)
    monkeypatch.setattr(privileges, "runtime_dir", lambda d, create=False: str(tmp_path))
    monkeypatch.setattr(privileges, "search_dirs", lambda d: [str(tmp_path)])
    return path


def test_a_second_up_never_overwrites_the_backup(resolv, tmp_path):
    """Before: the second apply saved wgpy's own file as the backup, and the original was lost."""
    dns.apply("wgx0", "/tmp/wgx0.conf", ["10.0.0.53"], [], UndoStack().push)     # then the daemon "dies"
    with pytest.raises(dns.DnsError, match="already holds a saved"):
        dns.apply("wgx0", "/tmp/wgx0.conf", ["10.0.0.54"], [], UndoStack().push)
    assert (tmp_path / "wgx0.resolv.conf").read_bytes() == b"nameserver 192.0.2.1\n# theirs\n"


def test_recovery_puts_the_backup_back(resolv, tmp_path):
    dns.apply("wgx0", "/tmp/wgx0.conf", ["10.0.0.53"], [], UndoStack().push)
    assert b"10.0.0.53" in resolv.read_bytes()
    done, problems = dns.recover("wgx0", "file")
    assert problems == [] and done
    assert resolv.read_bytes() == b"nameserver 192.0.2.1\n# theirs\n"
    assert not (tmp_path / "wgx0.resolv.conf").exists()


def test_recovery_leaves_a_resolv_conf_changed_since_and_keeps_the_backup(resolv, tmp_path):
    dns.apply("wgx0", "/tmp/wgx0.conf", ["10.0.0.53"], [], UndoStack().push)
    resolv.write_bytes(b"nameserver 198.51.100.7\n")
    done, problems = dns.recover("wgx0", "file")
    assert resolv.read_bytes() == b"nameserver 198.51.100.7\n"
    assert problems and "kept in" in problems[0]
    assert (tmp_path / "wgx0.resolv.conf").read_bytes() == b"nameserver 192.0.2.1\n# theirs\n"


def test_the_state_file_records_a_sysctl_before_it_changes(resolv, tmp_path, monkeypatch):
    knob = tmp_path / "ip_forward"
    knob.write_text("0\n")
    state = recovery.StateFile.begin("wgx0", "/tmp/wgx0.conf", "root")
    state.record_sysctl(str(knob), "1")
    state.record_sysctl(str(knob), "1")            # once
    data = json.loads((tmp_path / "wgx0.state").read_text())
    assert data["sysctls"] == [[str(knob), "0", "1"]] and data["pid"] == os.getpid()
    assert recovery.find_state("wgx0").data == data
    # only the sysctls wgpy itself sets are ever written back, with numeric values
    knob.write_text("1\n")
    monkeypatch.setattr(recovery, "SYSCTLS", (str(knob),))
    monkeypatch.setattr(recovery, "FORWARDING", (str(knob),))
    done, problems = recovery._restore_sysctls([[str(knob), "0", "1"], ["/proc/sys/kernel/core_pattern", "x", "1"]],
                                               skip_forwarding=False)
    assert knob.read_text() == "0" and len(problems) == 1 and "does not write" in problems[0]


def test_a_state_file_of_another_interface_or_garbage_is_not_acted_on(resolv, tmp_path):
    (tmp_path / "wgx1.state").write_text(json.dumps({"interface": "wgx9", "sysctls": []}))
    found = recovery.find_state("wgx1")
    assert found.data is None and "not the state file of wgx1" in found.problem
    (tmp_path / "wgx2.state").write_text("{not json")
    assert recovery.find_state("wgx2").data is None
    assert recovery.recover("wgx2", recovery.find_state("wgx2"))[1]


# ---- signals during up ---------------------------------------------------------------------------------------------

def test_a_signal_outside_a_hook_waits_for_the_next_safe_point():
    sigs = UpSignals()
    sigs._handler(signal.SIGTERM, None)                  # e.g. in the middle of adding routes: no raise
    assert sigs.pending == signal.SIGTERM
    with pytest.raises(Interrupted, match="interrupted by SIGTERM during up"):
        sigs.check()


def test_a_signal_during_a_hook_raises_at_once_and_only_once():
    sigs = UpSignals()
    with pytest.raises(Interrupted):
        with sigs.interruptible():
            sigs._handler(signal.SIGTERM, None)
            raise AssertionError("not reached")
    sigs._handler(signal.SIGINT, None)                   # a second signal while the undo runs: no raise
    sigs.tearing_down()
    sigs.check()                                         # nothing raised during teardown


def test_once_running_a_signal_stops_the_loop():
    class Iface:
        _wake_w = -1
        stopped = False

        def stop(self):
            self.stopped = True
    sigs, iface = UpSignals(), Iface()
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        iface._wake_w = w
        sigs.running(iface)
        sigs._handler(signal.SIGTERM, None)
        assert iface.stopped
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)
