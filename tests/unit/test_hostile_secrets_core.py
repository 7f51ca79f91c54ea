"""Key material never leaks through reprs, exception tracebacks or UAPI error logs; the daemon's process hardening
(no core dumps) works. The namespace side (daemon log, `wgpy show`, a crash, file and socket modes) is in
tests/integration/test_hostile_secrets.py."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
import traceback

import pytest

from wgpy import config as cfgmod
from wgpy.protocol import noise
from wgpy.uapi import protocol as uapi

from wgpy_testkit.core_pair import Pair

PSK = bytes(range(100, 132))


def encodings(key: bytes) -> list[str]:
    """Every way a key could show up in text."""
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key)[2:-1], str(list(key))[1:-1]]


def assert_no_key(text: str, *keys: bytes) -> None:
    for key in keys:
        for enc in encodings(key):
            assert enc not in text, f"key material ({enc[:12]}...) in: {text[:300]}"


@pytest.fixture
def pair():
    p = Pair(psk_a=PSK, psk_b=PSK)
    p.handshake(0.0)
    return p


def key_holders(p: Pair):
    kp = p.pa.current
    return [p.a, p.pa, p.pa.handshake, p.a.identity, kp, kp.send, kp.recv, p.a.cookie_checker, p.pa.cookie,
            noise.SessionKeys(b"k" * 32, b"l" * 32, True, 1, 2)]


def test_reprs_of_every_key_holder_are_clean(pair):
    for obj in key_holders(pair):
        assert_no_key(repr(obj), pair.priv_a, pair.priv_b, PSK, b"k" * 32, b"l" * 32)
        assert_no_key(str(obj), pair.priv_a, pair.priv_b, PSK)


def test_config_and_uapi_plans_do_not_show_keys(tmp_path):
    priv = bytes(range(32))
    text = textwrap.dedent(f"""\
        [Interface]
        PrivateKey = {base64.b64encode(priv).decode()}
        [Peer]
        PublicKey = {base64.b64encode(bytes(range(1, 33))).decode()}
        PresharedKey = {base64.b64encode(PSK).decode()}
        AllowedIPs = 10.0.0.2/32
        """)
    path = tmp_path / "wg0.conf"
    path.write_text(text)
    os.chmod(path, 0o600)
    cfg = cfgmod.load(str(path))
    assert_no_key(repr(cfg), priv, PSK)
    plan = uapi.parse_set(["private_key=" + priv.hex(), "public_key=" + "11" * 32, "preshared_key=" + PSK.hex()],
                          lambda s: s)
    assert_no_key(repr(plan), priv, PSK)


def test_a_crash_traceback_shows_no_key_material(pair):
    """What an uncaught exception prints (default traceback, with the exception's message and the reprs it
    formats) holds no key, even when the exception is about an object holding keys."""
    def boom(handshake, identity, keypair):
        raise RuntimeError(f"bad state in {handshake!r} / {identity!r} / {keypair!r}")

    try:
        boom(pair.pa.handshake, pair.a.identity, pair.pa.current)
    except RuntimeError:
        text = traceback.format_exc()
    assert "bad state" in text
    assert_no_key(text, pair.priv_a, pair.priv_b, PSK)


def test_uapi_errors_log_no_key_material():
    """A malformed set whose bad line holds key material (a value typed where a key name goes, or a bad value)
    is refused and logged without that material; the reply is just errno."""
    from wgpy.protocol.device import Device
    priv = bytes(range(32))

    class Host:
        device = Device(None, rand=os.urandom, wall=lambda: 0.0)
        listen_port = 0
        fwmark = 0
        def set_listen_port(self, port): pass
        def set_fwmark(self, mark): pass
        parse_endpoint = staticmethod(lambda s: s)
        format_endpoint = staticmethod(str)
        def now(self): return 0.0
        def flush(self, out): pass

    logged: list[str] = []
    bad_requests = [
        f"set=1\n{priv.hex()}=1",                       # key material where the name goes
        f"set=1\nprivate_key {priv.hex()}=x",
        f"set=1\nprivate_key={priv.hex()}\npublic_key={'11' * 32}\n{PSK.hex()}",
        f"set=1\nprivate_key={priv.hex()[:-1]}",        # a bad value
        f"set=1\npublic_key={'11' * 32}\npreshared_key={PSK.hex()}zz",
        f"set=1\npublic_key={'11' * 32}\npresharedkey={PSK.hex()}",
    ]
    for req in bad_requests:
        reply = uapi.handle_request(req, Host(), logged.append)
        assert reply.startswith("errno=-") and reply.endswith("\n\n")
    assert len(logged) == len(bad_requests)
    for line in logged:
        assert_no_key(line, priv, PSK)
        assert_no_key(line, priv[:31], PSK[:31])
        assert priv.hex()[:16] not in line and PSK.hex()[:16] not in line
    assert any("presharedkey" in line for line in logged)   # a real key name is still named


def test_no_core_dumps_in_a_fresh_process():
    """harden.no_core_dumps(): RLIMIT_CORE 0 and PR_GET_DUMPABLE 0 afterwards, read back in the process."""
    code = textwrap.dedent("""
        import resource
        from wgpy.host import harden
        assert harden.is_dumpable()
        harden.no_core_dumps()
        print(resource.getrlimit(resource.RLIMIT_CORE), harden.is_dumpable())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(0, 0) False"
