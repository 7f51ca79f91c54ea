"""A large UAPI set is applied in slices (issue 21, item 8): the same result as in one go, still all or nothing
when a line is bad, in bounded pieces; a large get is written in slices too. The loop side (packets flow while
a multi-MB set is applied through the socket): tests/runtime/test_runtime_pair.py."""

from __future__ import annotations

import os
import random

import pytest

from wgpy.protocol.device import Device
from wgpy.uapi import protocol as uapi


class _Host:
    def __init__(self):
        self.device = Device(None, rand=random.Random(7).randbytes, wall=lambda: 0.0)
        self.listen_port = 0
        self.fwmark = 0
        self.flushed = []

    def set_listen_port(self, port):
        self.listen_port = port

    def set_fwmark(self, mark):
        self.fwmark = mark

    @staticmethod
    def parse_endpoint(text):
        host, _, port = text.rpartition(":")
        return (host, int(port))

    @staticmethod
    def format_endpoint(ep):
        return f"{ep[0]}:{ep[1]}"

    def now(self):
        return 100.0

    def flush(self, out):
        self.flushed += out


def _key(rng) -> str:
    return rng.randbytes(32).hex()


def _big_request(rng, peers: int = 1500, ips: int = 6000) -> tuple[str, dict]:
    """A set over LARGE bytes with every kind of peer section, the tricky flags after the lines they govern."""
    keep, gone, maybe, many = _key(rng), _key(rng), _key(rng), _key(rng)
    lines = ["set=1", f"private_key={_key(rng)}", "listen_port=51999", "fwmark=77", "replace_peers=true"]
    lines += [f"public_key={many}", f"preshared_key={_key(rng)}", "endpoint=192.0.2.9:51820"]
    lines += [f"allowed_ip=10.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(ips)]
    lines += ["allowed_ip=-10.0.5.0/24", "persistent_keepalive_interval=25", "replace_allowed_ips=true"]
    for i in range(peers):
        lines += [f"public_key={_key(rng)}", f"allowed_ip=172.{16 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32"]
    # flags after the lines: the first piece must already obey them (pass 1 read them)
    lines += [f"public_key={maybe}"] + [f"allowed_ip=192.168.{i // 250}.{i % 250}/32" for i in range(300)] + \
        ["update_only=true"]
    lines += [f"public_key={gone}"] + [f"allowed_ip=198.18.{i // 250}.{i % 250}/32" for i in range(300)] + \
        ["remove=true"]
    lines += [f"public_key={keep}", "allowed_ip=203.0.113.0/24"]
    text = "\n".join(lines)
    assert len(text) > uapi.LARGE
    return text, {"keep": keep, "gone": gone, "maybe": maybe, "many": many}


def _state(host) -> str:
    return uapi.handle_get(host)


def _applied_at_once(text: str, monkeypatch) -> _Host:
    host = _Host()
    with monkeypatch.context() as m:
        m.setattr(uapi, "LARGE", 1 << 40)          # the one-go path
        assert uapi.handle_request(text, host) == "errno=0\n\n"
    return host


def _steps(text: str, host) -> tuple[str, int]:
    steps = uapi.request_steps(text, host)
    n = 0
    while True:
        try:
            next(steps)
            n += 1
        except StopIteration as done:
            return done.value, n


def test_a_large_set_in_slices_ends_as_the_same_set_in_one_go(monkeypatch):
    text, keys = _big_request(random.Random(1))
    whole = _applied_at_once(text, monkeypatch)
    sliced = _Host()
    reply, yields = _steps(text, sliced)
    assert reply == "errno=0\n\n"
    assert yields > 100                                   # it was sliced
    assert _state(sliced) == _state(whole)
    dev = sliced.device
    assert sliced.listen_port == 51999 and sliced.fwmark == 77
    assert bytes.fromhex(keys["maybe"]) not in dev.peers        # update_only, after its 300 allowed IPs
    assert bytes.fromhex(keys["gone"]) not in dev.peers         # remove, after its 300 allowed IPs
    many = dev.peers[bytes.fromhex(keys["many"])]
    assert len(dev.allowed_ips.entries(many)) == 6000 - 1 and many.persistent_keepalive == 25
    assert bytes.fromhex(keys["keep"]) in dev.peers and len(dev.peers) == 1500 + 2


def test_replace_peers_and_replace_allowed_ips_apply_once(monkeypatch):
    """A large set that replaces the peers, and a long peer section that replaces its allowed IPs: the
    replacement happens before the first piece, never again between pieces."""
    rng = random.Random(2)
    host = _Host()
    old = _key(rng)
    assert uapi.handle_request(f"set=1\npublic_key={old}\nallowed_ip=10.99.0.0/16", host) == "errno=0\n\n"
    text, keys = _big_request(rng)
    assert _steps(text, host)[0] == "errno=0\n\n"
    assert bytes.fromhex(old) not in host.device.peers
    many = host.device.peers[bytes.fromhex(keys["many"])]
    assert "10.0.0.0/24" in [str(n) for n in host.device.allowed_ips.entries(many)]   # the first piece's


@pytest.mark.parametrize("bad", ["allowed_ip=10.0.0.0/33", "nonsense", "public_key=zz", "endpoint=nowhere"])
def test_a_bad_line_at_the_end_of_a_large_set_changes_nothing(bad):
    rng = random.Random(3)
    host = _Host()
    old = _key(rng)
    assert uapi.handle_request(f"set=1\nlisten_port=1234\npublic_key={old}\nallowed_ip=10.99.0.0/16", host) \
        == "errno=0\n\n"
    before = _state(host)
    text, _ = _big_request(rng)
    logged = []
    steps = uapi.request_steps(text + "\n" + bad, host, logged.append)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            reply = done.value
            break
    assert reply.startswith("errno=-") and logged
    assert _state(host) == before and host.listen_port == 1234


def test_a_port_in_use_refuses_a_large_set_before_anything_changes():
    rng = random.Random(4)
    host = _Host()

    def busy(port):
        raise OSError(98, "Address already in use")
    host.set_listen_port = busy
    text, _ = _big_request(rng)
    assert _steps(text, host)[0] == f"errno={uapi.EADDRINUSE}\n\n"
    assert not host.device.peers


def test_each_slice_parses_a_bounded_number_of_lines(monkeypatch):
    """The pieces a long peer section is applied in are at most STEP lines long (memory: one slice of parsed
    lines, not the request's)."""
    seen = []
    real = uapi._apply_peer

    def spy(op, *a, **kw):
        seen.append(len(op.allowed_ips))
        return real(op, *a, **kw)
    monkeypatch.setattr(uapi, "_apply_peer", spy)
    text, _ = _big_request(random.Random(5))
    _steps(text, _Host())
    assert max(seen) <= uapi.STEP and len(seen) > 6000 // uapi.STEP


def test_a_large_get_is_written_in_slices(monkeypatch):
    rng = random.Random(6)
    host = _Host()
    lines = ["set=1"] + [f"public_key={_key(rng)}" for _ in range(3 * uapi.GET_STEP + 5)]
    assert uapi.handle_request("\n".join(lines), host) == "errno=0\n\n"
    reply, yields = _steps("get=1", host)
    assert yields == 3 and reply.endswith("errno=0\n\n")
    assert reply == uapi.handle_get(host) + "errno=0\n\n"
    assert reply.count("public_key=") == 3 * uapi.GET_STEP + 5


def test_a_small_request_is_done_at_the_first_step():
    host = _Host()
    assert _steps(f"set=1\npublic_key={os.urandom(32).hex()}", host) == ("errno=0\n\n", 0)
