"""Config keys and UAPI keys of the TCP/TLS transports and the fallback (config.py, uapi/transport.py)."""

from __future__ import annotations

import os
import select
import time

import pytest

from wgpy.config import ConfigError, parse, to_uapi
from wgpy.crypto import encode_key
from wgpy.io import udp
from wgpy.io.stream import StreamEndpoint, StreamManager
from wgpy.protocol.device import Device
from wgpy.uapi.protocol import handle_request

KEY = encode_key(b"\x01" * 32)
PEER = encode_key(b"\x02" * 32)
PIN = "AB:" * 31 + "AB"


def conf(iface: str = "", peer: str = "") -> str:
    return f"[Interface]\nPrivateKey = {KEY}\n{iface}\n[Peer]\nPublicKey = {PEER}\nAllowedIPs = 10.0.0.2/32\n{peer}\n"


def test_all_keys(tmp_path):
    text = conf("ListenPort = 51820\nListenTCP = 443\nListenTLS = 8443\nCertificateFile = cert.pem\n"
                "KeyFile = /etc/wgpy/key.pem",
                "Endpoint = vpn.example.net:51820\nFallbackEndpoint = tls://vpn.example.net:8443\n"
                "FallbackAfter = 7.5\nFallbackProbeInterval = 20\nTLSPin = " + PIN)
    path = tmp_path / "wg0.conf"
    cfg = parse(text, str(path))
    assert (cfg.listen_tcp, cfg.listen_tls) == (443, 8443)
    assert cfg.certificate_file == str(tmp_path / "cert.pem") and cfg.key_file == "/etc/wgpy/key.pem"
    p = cfg.peers[0]
    assert p.endpoint == ("vpn.example.net", 51820) and p.stream_endpoint is None
    assert p.fallback_endpoint == ("tls", "vpn.example.net", 8443)
    assert (p.fallback_after, p.fallback_probe_interval) == (7.5, 20.0)
    assert p.tls_pin == "ab" * 32
    body = to_uapi(cfg, {0: "192.0.2.1:51820"}, {0: {"fallback": "192.0.2.1"}})
    lines = body.splitlines()
    assert lines.index("wgpy_listen_tcp=443") < lines.index("public_key=" + "02" * 32)
    assert f"wgpy_tls_cert_file={tmp_path / 'cert.pem'}" in lines and "wgpy_listen_tls=8443" in lines
    assert "endpoint=192.0.2.1:51820" in lines
    assert "wgpy_fallback_endpoint=tls://192.0.2.1:8443" in lines
    assert "wgpy_tls_server_name=vpn.example.net" in lines     # the name stays the TLS name
    assert "wgpy_fallback_after=7.5" in lines and "wgpy_fallback_probe_interval=20" in lines
    assert f"wgpy_tls_pin={'ab' * 32}" in lines


def test_stream_endpoint_and_plain_configs_unchanged():
    cfg = parse(conf(peer="Endpoint = tcp://[2001:db8::1]:443"))
    p = cfg.peers[0]
    assert p.endpoint is None and p.stream_endpoint == ("tcp", "2001:db8::1", 443)
    body = to_uapi(cfg)
    assert "wgpy_endpoint=tcp://[2001:db8::1]:443\n" in body and "\nendpoint=" not in body
    plain = to_uapi(parse(conf(peer="Endpoint = 192.0.2.1:51820")))
    assert "wgpy_" not in plain                  # wg setconf keeps accepting what wgpy renders for plain configs


@pytest.mark.parametrize("iface,peer,key,msg", [
    ("ListenTLS = 443", "", "ListenTLS", "needs CertificateFile and KeyFile"),
    ("CertificateFile = a\nKeyFile = b", "", "CertificateFile", "only used with ListenTLS"),
    ("", "Endpoint = 1.2.3.4:1\nTLSPin = " + PIN, "TLSPin", "only used with a tls://"),
    ("", "Endpoint = tcp://1.2.3.4:1\nTLSCAFile = ca.pem", "TLSCAFile", "only used with a tls://"),
    ("", "Endpoint = 1.2.3.4:1\nFallbackAfter = 3", "FallbackAfter", "needs FallbackEndpoint"),
    ("", "Endpoint = tls://a.b:1\nTLSCAFile = x\nTLSPin = " + PIN, "TLSPin", "not both"),
    ("", "Endpoint = udp://1.2.3.4:1", "Endpoint", "expected tcp://host:port"),
    ("", "FallbackEndpoint = 1.2.3.4:1", "FallbackEndpoint", "expected tcp://host:port"),
    ("", "Endpoint = tcp://1.2.3.4:1\nFallbackEndpoint = tcp://1.2.3.4:2", "FallbackEndpoint",
     "already a stream"),
    ("", "FallbackEndpoint = tcp://1.2.3.4:2\nFallbackAfter = 0", "FallbackAfter", "out of range"),
    ("", "Endpoint = tls://a.b:1\nTLSPin = abc", "TLSPin", "SHA-256"),
    ("ListenTCP = 0", "", "ListenTCP", "out of range"),
])
def test_errors_name_the_line_and_key(iface, peer, key, msg):
    with pytest.raises(ConfigError) as e:
        parse(conf(iface, peer), "/x/wg0.conf")
    assert e.value.key == key and msg in e.value.message and e.value.line, str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# UAPI
# ---------------------------------------------------------------------------------------------------------------

class Host:
    def __init__(self) -> None:
        self.device = Device(os.urandom(32), rand=os.urandom, wall=time.time)
        self.listen_port = 51820
        self.fwmark = 0
        self.epoll = select.epoll()
        self.streams = StreamManager(self.epoll)
        self.flushed: list = []

    def set_listen_port(self, port: int) -> None:
        self.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    parse_endpoint = staticmethod(udp.parse_endpoint)
    format_endpoint = staticmethod(udp.format_endpoint)

    def now(self) -> float:
        return 100.0

    def flush(self, out: list) -> None:
        self.flushed.extend(out)


PUB = (b"\x02" * 32).hex()


def req(host, *lines) -> str:
    return handle_request("\n".join(lines), host)


def get_peer(host) -> dict[str, str]:
    out = req(host, "get=1")
    peer = {}
    for line in out.split(f"public_key={PUB}\n", 1)[1].splitlines():
        k, _, v = line.partition("=")
        if k:
            peer[k] = v
    return peer


def test_uapi_stream_endpoint_and_fallback(tmp_path):
    host = Host()
    try:
        assert req(host, "set=1", f"public_key={PUB}", "wgpy_endpoint=tcp://192.0.2.1:443") == "errno=0\n\n"
        peer = host.device.peers[b"\x02" * 32]
        ep = peer.endpoint
        assert isinstance(ep, StreamEndpoint) and ep.outbound and ep.url == "tcp://192.0.2.1:443"
        g = get_peer(host)
        assert g["wgpy_endpoint"] == "tcp://192.0.2.1:443" and "endpoint" not in g
        assert g["wgpy_endpoint_state"] == "idle"
        # the same endpoint again: the same object (its connection is kept)
        req(host, "set=1", f"public_key={PUB}", "wgpy_endpoint=tcp://192.0.2.1:443")
        assert peer.endpoint is ep
        # UDP endpoint plus fallback
        assert req(host, "set=1", f"public_key={PUB}", "endpoint=192.0.2.1:51820",
                   "wgpy_fallback_endpoint=tls://192.0.2.1:8443", f"wgpy_tls_pin={'ab' * 32}",
                   "wgpy_fallback_after=4", "wgpy_fallback_probe_interval=9") == "errno=0\n\n"
        assert peer.endpoint == ("192.0.2.1", 51820)
        fb = peer.fallback
        assert fb.target.url == "tls://192.0.2.1:8443" and fb.target.pin == b"\xab" * 32
        assert (fb.after, fb.probe_interval, fb.primary) == (4.0, 9.0, ("192.0.2.1", 51820))
        assert list(host.streams.targets.values()) == [fb.target]      # the unused tcp:// target is gone
        g = get_peer(host)
        assert g["endpoint"] == "192.0.2.1:51820" and g["wgpy_fallback"] == "standby"
        assert g["wgpy_fallback_endpoint"] == "tls://192.0.2.1:8443" and g["wgpy_fallback_after"] == "4"
        # removing the fallback
        req(host, "set=1", f"public_key={PUB}", "wgpy_fallback_endpoint=")
        assert peer.fallback is None and not host.streams.targets
    finally:
        host.streams.close()


def test_uapi_refusals_change_nothing(tmp_path):
    host = Host()
    try:
        req(host, "set=1", f"public_key={PUB}", "endpoint=192.0.2.1:51820")
        peer = host.device.peers[b"\x02" * 32]
        for bad in (["wgpy_endpoint=tcp://name.example:443"], ["wgpy_fallback_endpoint=udp://1.2.3.4:1"],
                    ["wgpy_fallback_endpoint=tls://192.0.2.1:1", f"wgpy_tls_ca_file={tmp_path}/missing.pem"],
                    ["wgpy_tls_pin=00"], ["wgpy_fallback_after=0"]):
            assert req(host, "set=1", "listen_port=4000", f"public_key={PUB}", *bad) == "errno=-22\n\n", bad
            assert host.listen_port == 51820 and peer.endpoint == ("192.0.2.1", 51820)
            assert peer.fallback is None and not host.streams.targets
        assert req(host, "set=1", "wgpy_listen_tls=8443") == "errno=-22\n\n"      # no certificate
        assert req(host, "set=1", f"wgpy_tls_cert_file={tmp_path}/c.pem", f"wgpy_tls_key_file={tmp_path}/k.pem",
                   "wgpy_listen_tls=8443") == "errno=-22\n\n"
        assert host.streams.listen_ports == {"tcp": 0, "tls": 0}
    finally:
        host.streams.close()


def test_uapi_listeners_in_get_and_stats():
    host = Host()
    try:
        s = __import__("socket").socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        assert req(host, "set=1", f"wgpy_listen_tcp={port}") == "errno=0\n\n"
        assert f"wgpy_listen_tcp={port}\n" in req(host, "get=1")
        stats = req(host, "wgpy_stats=1")
        assert "stream_connections=0\n" in stats and "stream_unauthenticated=0\n" in stats
        assert req(host, "set=1", "wgpy_listen_tcp=0") == "errno=0\n\n"
        assert "wgpy_listen_tcp" not in req(host, "get=1")
    finally:
        host.streams.close()


def test_uapi_without_streams_refuses_the_keys():
    from test_uapi_protocol import FakeHost
    host = FakeHost()
    assert req(host, "set=1", "wgpy_listen_tcp=443") == "errno=-22\n\n"
    assert req(host, "set=1", f"public_key={PUB}", "wgpy_endpoint=tcp://192.0.2.1:443") == "errno=-22\n\n"
    assert "wgpy_" not in req(host, "get=1")
