"""#8 path MTU: the config key, the UAPI get keys and `wgpy show`'s parsing of them, and random authenticated
control messages (a hostile or buggy wgpy peer) never crash the core nor make it send more than it received."""

from __future__ import annotations

import random

import pytest

from wgpy import crypto
from wgpy.config import ConfigError, parse, to_uapi
from wgpy.protocol.device import Device
from wgpy.uapi.protocol import handle_get

from test_pmtu_core import EP_B, Path, pmtu_pair, settle

KEY = crypto.encode_key(crypto.clamp(bytes(range(32))))


def test_mtu_probe_interval_key():
    assert parse(f"[Interface]\nPrivateKey = {KEY}\n").mtu_probe_interval is None
    assert parse(f"[Interface]\nPrivateKey = {KEY}\nMTUProbeInterval = 30\n").mtu_probe_interval == 30.0
    assert parse(f"[Interface]\nPrivateKey = {KEY}\nmtuprobeinterval = off\n").mtu_probe_interval == 0.0
    cfg = parse(f"[Interface]\nPrivateKey = {KEY}\nMTU = auto\nMTUProbeInterval = 5\n")
    assert cfg.mtu is None and "wgpy_" not in to_uapi(cfg)          # a config key, not sent to `wg setconf`
    for bad in ("-1", "1.5", "86401", "soon"):
        with pytest.raises(ConfigError) as e:
            parse(f"[Interface]\nPrivateKey = {KEY}\nMTUProbeInterval = {bad}\n")
        assert "MTUProbeInterval" in str(e.value) and ":3:" in str(e.value)


class Host:
    def __init__(self, dev: Device) -> None:
        self.device = dev
        self.listen_port = 51820
        self.fwmark = 0
        self.mtu_min = 1280

    @staticmethod
    def format_endpoint(ep):
        return f"{ep[0]}:{ep[1]}"

    def now(self):
        return 0.0


def test_uapi_get_reports_path_mtu_and_show_parses_it():
    from wgpy.show import parse_get as _parse_get
    p = pmtu_pair(Path(1280))
    p.handshake(0.0)
    settle(p, 20.0)
    text = handle_get(Host(p.a))
    assert f"wgpy_mtu={p.a.mtu} auto\n" in text
    assert "wgpy_path_mtu=1280 probe\n" in text and "wgpy_peer_wgpy=1\n" in text
    dev, peers = _parse_get(text)
    assert dev["wgpy_mtu"] == "1440 auto" and peers[0]["wgpy_path_mtu"] == "1280 probe"
    # fixed MTU, nothing learned: no extension keys at all (byte for byte what wireguard-go says)
    q = pmtu_pair(Path(1500), auto=False)
    q.b.control_enabled = False
    assert "wgpy_" not in handle_get(Host(q.b))


def test_show_marks_a_path_mtu_still_being_probed():
    from wgpy.show import parse_get as _parse_get, path_mtu_column as _path_mtu
    p = pmtu_pair(Path(1280))
    p.handshake(0.0)
    settle(p, 0.3)                          # HELLOs exchanged, the first probe round is out, none answered yet
    assert p.pa.pmtu.searching
    text = handle_get(Host(p.a))
    assert "wgpy_path_mtu=1500 link probing\n" in text
    _dev, peers = _parse_get(text)
    assert _path_mtu(peers[0]) == "1500\tlink (probing)"
    settle(p, 20.0)                         # the search is over: no mark
    text = handle_get(Host(p.a))
    assert "wgpy_path_mtu=1280 probe\n" in text
    _dev, peers = _parse_get(text)
    assert _path_mtu(peers[0]) == "1280\tprobe"


def test_random_control_messages_from_a_peer():
    rng = random.Random(8)
    p = pmtu_pair(Path(1500))
    p.handshake(0.0)
    settle(p, 5.0)
    sent_by_a = sent_by_b = 0
    for i in range(3000):
        n = rng.choice([1, 2, 8, 10, 11, 12, 13, 40, 600])
        msg = bytes([0x57, rng.choice([1, 2, 3, rng.randrange(256)])]) + rng.randbytes(n)
        out: list = []
        p.a.path_mtu._send_control(p.pa, msg, 6.0 + i * 1e-3, out)
        sent_by_a += sum(len(d) for d, _ in out)
        mark = len(p.log)
        p.deliver("A", out, 6.0 + i * 1e-3)
        sent_by_b += sum(len(e[3]) for e in p.log[mark:] if e[1] == "B")
    assert sent_by_b <= sent_by_a
    assert p.pb.current is not None and p.b.peers
    assert p.pa.pmtu.mtu >= p.pa.pmtu.floor
