"""Config keys and UAPI keys of the TCP/TLS transports and the fallback (config.py, uapi/transport.py)."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization

from wgpy.config import ConfigError, load, parse, to_uapi
from wgpy.crypto import encode_key
from wgpy.io import udp
from wgpy.io.stream import StreamEndpoint, StreamManager
from wgpy.protocol.device import Device
from wgpy.io.stream import parse_pin
from wgpy.uapi.protocol import handle_request

from test_transport_stream import make_cert

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


# ---------------------------------------------------------------------------------------------------------------
# TLSPin: what openssl prints (issue 20); config and UAPI share io/stream.parse_pin = config.parse_pin
# ---------------------------------------------------------------------------------------------------------------

HEX = bytes(range(32)).hex()
COLONS = ":".join(HEX[i:i + 2] for i in range(0, 64, 2)).upper()


@pytest.mark.parametrize("written", [
    HEX, HEX.upper(), COLONS, COLONS.lower(), "sha256:" + COLONS, "SHA256:" + HEX,
    "sha256 Fingerprint=" + COLONS,            # openssl 3: `openssl x509 -noout -fingerprint -sha256 -in cert.pem`
    "SHA256 Fingerprint=" + COLONS,            # openssl 1.1
    "  sha256 Fingerprint=" + COLONS + "  ",
])
def test_pin_forms_config_and_uapi_agree(written):
    cfg = parse(conf(peer=f"Endpoint = tls://vpn.example.net:443\nTLSPin = {written}"))
    assert cfg.peers[0].tls_pin == HEX
    assert parse_pin(written) == bytes(range(32))
    host = Host()
    try:
        assert req(host, "set=1", f"public_key={PUB}", "wgpy_endpoint=tls://192.0.2.1:443",
                   f"wgpy_tls_pin={written}") == "errno=0\n\n"
        assert host.device.peers[b"\x02" * 32].endpoint.pin == bytes(range(32))
    finally:
        host.streams.close()


def test_pin_is_the_one_parser():
    import wgpy.config
    import wgpy.io.stream
    assert wgpy.io.stream.parse_pin is wgpy.config.parse_pin


@pytest.mark.parametrize("bad", [HEX[:-2], HEX + "00", "zz" + HEX[2:], "sha1 Fingerprint=" + COLONS[:59],
                                 "sha256 Fingerprint=", "Fingerprint=" + COLONS + "x"])
def test_bad_pin_says_how_to_write_it(bad):
    with pytest.raises(ConfigError) as info:
        parse(conf(peer=f"Endpoint = tls://vpn.example.net:443\nTLSPin = {bad}"), "/x/wg0.conf")
    e = info.value
    assert (e.line, e.key) == (8, "TLSPin")
    assert "openssl x509 -noout -fingerprint -sha256 -in cert.pem" in e.message and bad not in str(e)
    with pytest.raises(ValueError, match="openssl x509 -noout -fingerprint -sha256"):
        parse_pin(bad)
    host = Host()
    try:
        assert req(host, "set=1", f"public_key={PUB}", "wgpy_endpoint=tls://192.0.2.1:443",
                   f"wgpy_tls_pin={bad}") == "errno=-22\n\n"
    finally:
        host.streams.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_pin_as_openssl_prints_it(tmp_path):
    cert, _, digest = make_cert(tmp_path)
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
                         capture_output=True, text=True, check=True).stdout.strip()
    cfg = parse(conf(peer=f"Endpoint = tls://vpn.example.net:443\nTLSPin = {out}"))
    assert cfg.peers[0].tls_pin == digest.hex()


# ---------------------------------------------------------------------------------------------------------------
# TLS files: checked by load() before anything is set up (issue 20), never by parse()
# ---------------------------------------------------------------------------------------------------------------

def write_conf(tmp_path, iface: str = "", peer: str = ""):
    path = tmp_path / "wg0.conf"
    path.write_text(conf(iface, peer))
    return str(path)


def tls_conf(tmp_path, cert, key) -> str:
    return write_conf(tmp_path, f"ListenTLS = 8443\nCertificateFile = {cert}\nKeyFile = {key}")


def load_err(path: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value


CERT_LINE, KEY_LINE = 4, 5      # lines of CertificateFile and KeyFile in tls_conf()


def test_tls_files_good(tmp_path):
    cert, key, _ = make_cert(tmp_path)
    cfg = load(tls_conf(tmp_path, cert.name, key.name))          # relative to the config file's directory
    assert (cfg.certificate_file, cfg.key_file) == (str(cert), str(key))
    chain = tmp_path / "chain.pem"                                 # leaf, then another certificate
    other, _, _ = make_cert(tmp_path, "ca.example.test")
    chain.write_bytes(cert.read_bytes() + other.read_bytes())
    load(tls_conf(tmp_path, chain, key))
    both = tmp_path / "both.pem"                                    # key and certificate in one file
    both.write_bytes(key.read_bytes() + cert.read_bytes())
    load(tls_conf(tmp_path, both, both))


def test_parse_does_not_touch_the_files(tmp_path):
    cfg = parse(conf("ListenTLS = 8443\nCertificateFile = /nonexistent/c.pem\nKeyFile = /nonexistent/k.pem"),
                str(tmp_path / "wg0.conf"))
    assert cfg.key_file == "/nonexistent/k.pem"


@pytest.mark.parametrize("which", ["KeyFile", "CertificateFile"])
def test_tls_file_missing(tmp_path, which):
    cert, key, _ = make_cert(tmp_path)
    missing = tmp_path / "x" / "server.pem"
    path = tls_conf(tmp_path, missing if which == "CertificateFile" else cert, missing if which == "KeyFile" else key)
    e = load_err(path)
    line = KEY_LINE if which == "KeyFile" else CERT_LINE
    assert (e.path, e.line, e.key) == (path, line, which)
    assert str(e) == f"{path}:{line}: {which}: cannot read '{missing}': No such file or directory"


def test_tls_file_unreadable(tmp_path):
    cert, _, _ = make_cert(tmp_path)
    (tmp_path / "dir.key").mkdir()
    e = load_err(tls_conf(tmp_path, cert, "dir.key"))
    assert e.key == "KeyFile" and e.message == f"cannot read '{tmp_path / 'dir.key'}': Is a directory"


def test_tls_key_file_not_a_key(tmp_path):
    cert, key, _ = make_cert(tmp_path)
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    e = load_err(tls_conf(tmp_path, cert, junk))
    assert (e.line, e.key) == (KEY_LINE, "KeyFile")
    assert e.message == f"'{junk}' is not a PEM private key (no -----BEGIN PRIVATE KEY----- block)"
    e = load_err(tls_conf(tmp_path, key, cert))                    # swapped
    assert e.key == "KeyFile" and "it holds a certificate: are KeyFile and CertificateFile swapped?" in e.message


def test_tls_certificate_file_not_a_certificate(tmp_path):
    _, key, _ = make_cert(tmp_path)
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    e = load_err(tls_conf(tmp_path, junk, key))
    assert (e.line, e.key) == (CERT_LINE, "CertificateFile")
    assert e.message == f"'{junk}' is not a PEM certificate (no -----BEGIN CERTIFICATE----- block)"
    e = load_err(tls_conf(tmp_path, key, key))
    assert e.key == "CertificateFile" and "it holds a private key: are KeyFile" in e.message


def test_tls_key_and_certificate_do_not_match(tmp_path):
    cert, _, _ = make_cert(tmp_path)
    _, other_key, _ = make_cert(tmp_path, "other.example.test")
    e = load_err(tls_conf(tmp_path, cert, other_key))
    assert (e.line, e.key) == (KEY_LINE, "KeyFile")
    assert e.message == (f"'{other_key}' does not match the certificate '{cert}' (CertificateFile, line {CERT_LINE}): "
                         f"they are not one key pair")


def test_tls_damaged_files(tmp_path):
    cert, key, _ = make_cert(tmp_path)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    e = load_err(tls_conf(tmp_path, cert, bad_key))
    assert e.key == "KeyFile" and "the private key in it cannot be read" in e.message
    bad_cert = tmp_path / "bad.crt"
    bad_cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    e = load_err(tls_conf(tmp_path, bad_cert, key))
    assert e.key == "CertificateFile" and "the certificate in it cannot be read" in e.message


def test_tls_encrypted_key(tmp_path):
    cert, key, _ = make_cert(tmp_path)
    k = serialization.load_pem_private_key(key.read_bytes(), None)
    enc = tmp_path / "enc.key"
    enc.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"secret")))
    e = load_err(tls_conf(tmp_path, cert, enc))
    assert e.key == "KeyFile" and "encrypted with a passphrase" in e.message and "openssl pkey" in e.message


def test_tls_errors_never_show_the_key(tmp_path):
    cert, key, _ = make_cert(tmp_path)
    _, other_key, _ = make_cert(tmp_path, "other.example.test")
    body = [ln for ln in key.read_text().splitlines() + other_key.read_text().splitlines() if "-----" not in ln]
    for c, k in ((cert, other_key), (key, key), (key, cert), (cert, cert)):
        e = load_err(tls_conf(tmp_path, c, k))
        assert not any(ln in str(e) or ln in repr(e.args) for ln in body), str(e)


def test_tls_ca_file(tmp_path):
    cert, _, _ = make_cert(tmp_path)
    peer = "Endpoint = tls://vpn.example.net:443\nTLSCAFile = {}"
    assert load(write_conf(tmp_path, peer=peer.format(cert.name))).peers[0].tls_ca_file == str(cert)
    path = write_conf(tmp_path, peer=peer.format("missing-ca.pem"))
    e = load_err(path)
    assert (e.line, e.key) == (8, "TLSCAFile")
    assert str(e) == f"{path}:8: TLSCAFile: cannot read '{tmp_path / 'missing-ca.pem'}': No such file or directory"
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    e = load_err(write_conf(tmp_path, peer=peer.format(junk)))
    assert e.key == "TLSCAFile" and e.message.startswith(f"'{junk}' is not a file of PEM CA certificates")
