"""Secrets of a running `wgpy up` daemon: keys never in its log or in `wgpy show` (unless asked, as wg does with
WG_HIDE_KEYS), the process cannot dump core or be read by a process without CAP_SYS_PTRACE, and its log file
and control socket are owner-only. Reprs and tracebacks: tests/unit/test_hostile_secrets_core.py."""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import time

import pytest

from wgpy_testkit import hostile_lab as hl
from wgpy_testkit.netlab import (WGPY_KIND, WGPY_RUN_DIR, UAPI_DIR, assert_ping, gen_psk, run, start_mesh, wait_for)

pytestmark = pytest.mark.netns


def key_texts(b64: str) -> list[str]:
    raw = base64.b64decode(b64)
    return [b64, raw.hex(), raw.hex().upper(), b64[:20]]


@pytest.fixture
def psk_pair(lab):
    topo = hl.star(lab, 2)
    lab.require_real_wgpy("the wgpy daemon's log and process")
    psk = gen_psk()
    import dataclasses
    a, b = start_mesh(lab, topo, [WGPY_KIND, WGPY_KIND], knows_endpoint=lambda i, j: i == 0,
                      peer_tweak=lambda i, j, spec: dataclasses.replace(spec, preshared_key=psk))
    assert_ping(a.ns, b.ip4)
    return topo, a, b, psk


def test_keys_stay_out_of_logs_and_show(lab, psk_pair):
    topo, a, b, psk = psk_pair
    secrets_ = key_texts(b.keys.private) + key_texts(psk) + key_texts(a.keys.private)
    # malformed UAPI requests that carry key material, over the real socket
    for req in (f"set=1\n{base64.b64decode(psk).hex()}=1\n\n",
                f"set=1\nprivate_key={base64.b64decode(b.keys.private).hex()}x\n\n",
                f"set=1\npublic_key={base64.b64decode(a.keys.public).hex()}\npreshared_key=zz"
                f"{base64.b64decode(psk).hex()}\n\n"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(UAPI_DIR / f"{b.iface}.sock"))
        s.sendall(req.encode())
        assert s.recv(100).startswith(b"errno=-")
        s.close()
    assert_ping(a.ns, b.ip4)

    log = (WGPY_RUN_DIR / f"{b.iface}.log").read_text()
    assert "UAPI request refused" in log                     # the refusals were logged ...
    shown = run(b.ns, hl.netlab.WGPY, "show", b.iface).stdout
    dump_hidden = {f: run(b.ns, hl.netlab.WGPY, "show", b.iface, f).stdout
                   for f in ("peers", "endpoints", "allowed-ips", "transfer", "latest-handshakes", "stats")}
    for text in [log, shown, *dump_hidden.values()]:
        for secret in secrets_:
            assert secret not in text, f"key material in output:\n{text}"   # ... without any key
    assert "private key: (hidden)" in shown and "preshared key: (hidden)" in shown

    # asked for explicitly (as with wg): WG_HIDE_KEYS=never, or the fields that exist to print keys
    never = run(b.ns, hl.netlab.WGPY, "show", b.iface, env={"WG_HIDE_KEYS": "never"}).stdout
    assert f"private key: {b.keys.private}" in never and f"preshared key: {psk}" in never
    assert run(b.ns, hl.netlab.WGPY, "show", b.iface, "private-key").stdout.strip() == b.keys.private
    assert psk in run(b.ns, hl.netlab.WGPY, "show", b.iface, "preshared-keys").stdout


def test_no_core_dump_and_unreadable_memory(lab, psk_pair, tmp_path):
    """The daemon sets RLIMIT_CORE 0 and makes itself non-dumpable (read back with prctl), and a crash (SIGSEGV)
    leaves no core file and no key in the log."""
    topo, a, b, psk = psk_pair
    pid = hl.daemon_pid(b.iface)
    limits = open(f"/proc/{pid}/limits").read()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core

    # the daemon read its state back with prctl(PR_GET_DUMPABLE) after setting it, and logged it
    log = (WGPY_RUN_DIR / f"{b.iface}.log").read_text()
    assert "core dumps off (RLIMIT_CORE 0, dumpable 0)" in log, log
    # (a kernel that enforces it also closes /proc/PID/environ and mem to a process without CAP_SYS_PTRACE;
    # the gVisor sandbox these tests run in does not, so that is not checked here)

    cwd = os.readlink(f"/proc/{pid}/cwd")
    before = set(os.listdir(cwd))
    os.kill(pid, signal.SIGSEGV)
    wait_for(lambda: not hl.netlab.pid_alive(pid), 10, what="the daemon to die")
    time.sleep(0.5)
    new = {f for f in set(os.listdir(cwd)) - before if f.startswith("core")}
    assert not new, f"core file(s) written: {new}"
    log = (WGPY_RUN_DIR / f"{b.iface}.log").read_text()
    for secret in key_texts(b.keys.private) + key_texts(psk):
        assert secret not in log


def test_log_and_socket_are_owner_only(lab, psk_pair):
    topo, a, b, psk = psk_pair
    log_mode = stat.S_IMODE(os.stat(WGPY_RUN_DIR / f"{b.iface}.log").st_mode)
    sock_mode = stat.S_IMODE(os.stat(UAPI_DIR / f"{b.iface}.sock").st_mode)
    assert log_mode & 0o077 == 0, oct(log_mode)
    assert sock_mode & 0o077 == 0, oct(sock_mode)
    cfg_mode = stat.S_IMODE(os.stat(b.config_path).st_mode)
    assert cfg_mode & 0o077 == 0      # the harness writes configs 0600; wgpy warns otherwise (test_errors.py)
