"""Key material stays out of the daemon's log and `wgpy up`'s stderr (issue 21, item 11), through the real daemon:
a UAPI request whose first line is `private_key=<the interface's own key>` (as `wg set` text sent without its
`set=1` line), a PostUp command holding a key, and a key pasted into Address. The unit side:
tests/unit/test_key_material_echo.py."""

from __future__ import annotations

import base64
import socket

import pytest

from wgpy_testkit.netlab import (UAPI_DIR, WGPY_RUN_DIR, gen_keypair, link_exists, unique_iface, write_config)

pytestmark = pytest.mark.netns


def _secrets(b64: str) -> list[str]:
    raw = base64.b64decode(b64)
    return [b64, b64[:40], raw.hex(), raw.hex().upper(), raw.hex()[:40]]


def _uapi(iface: str, text: str) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(str(UAPI_DIR / f"{iface}.sock"))
        s.sendall(text.encode())
        return s.recv(100)
    finally:
        s.close()


def test_a_key_reaches_neither_the_daemon_log_nor_stderr(lab, netns):
    lab.require_real_wgpy("the wgpy daemon's log")
    ns = netns()
    keys, other = gen_keypair(), gen_keypair()
    iface = unique_iface()
    conf = write_config(lab.tmp, iface, f"[Interface]\nPrivateKey = {keys.private}\nAddress = 10.7.0.1/24\n"
                                        f"PostUp = true {other.private}\n\n"
                                        f"[Peer]\nPublicKey = {other.public}\nAllowedIPs = 10.7.0.2/32\n")
    res = lab.try_wgpy_up(ns, conf)
    assert res.returncode == 0, res.stderr
    raw = base64.b64decode(keys.private)
    for request in (f"private_key={raw.hex()}\nlisten_port=51999\n\n", f"private_key={keys.private}\n\n",
                    f"{raw.hex()}\n\n"):
        assert _uapi(iface, request).startswith(b"errno=-22")
    assert _uapi(iface, "get=1\n\n").startswith(b"private_key=")        # the daemon still serves
    log = (WGPY_RUN_DIR / f"{iface}.log").read_text()
    assert log.count("UAPI request refused: unknown operation") == 3, log  # each refusal logged ...
    assert "[#] true [not shown]" in log, log                              # ... and the hook echoed
    for text in (log, res.stdout, res.stderr):
        for secret in _secrets(keys.private) + _secrets(other.private):
            assert secret not in text, f"key material ({secret[:8]}...) in:\n{text}"

    # a key pasted into Address: the error names file, line and key, not the value
    bad_iface = unique_iface()
    bad = write_config(lab.tmp, bad_iface, f"[Interface]\nPrivateKey = {keys.private}\nAddress = {other.private}\n")
    res = lab.try_wgpy_up(ns, bad)
    assert res.returncode != 0 and f"{bad}:3: Address: invalid address" in res.stderr, res.stderr
    assert not link_exists(ns, bad_iface)
    for secret in _secrets(other.private):
        assert secret not in res.stderr + res.stdout
