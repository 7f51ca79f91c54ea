"""The settings table (settings/table.py): every row round-trips INI -> UAPI set -> UAPI get -> `wgpy show`.

Two configurations (L3 and L2) give every INI setting that has a UAPI key a value other than its default; the
rendered set (to_uapi, then link_uapi as `wgpy up` sends it) is applied to a real core behind a fake host, the get
reply is parsed by `wgpy show`'s parser and printed by `wgpy show`. Each row then has one check below: the get
value and what show prints, or for keys a get never carries, the state the set produced. A row without a check
fails the coverage test, so a new setting cannot be added to the table without one.
"""

from __future__ import annotations

import os
import select
import socket
import time

import pytest

import wgpy.uapi.server
from wgpy import crypto, show as wgshow
from wgpy.config import link_uapi, parse, to_uapi
from wgpy.io import udp
from wgpy.io.stream import StreamManager
from wgpy.protocol.device import Device
from wgpy.settings.table import TABLE, rows
from wgpy.uapi.protocol import GET_KEYS, READERS, handle_get, handle_request

from test_transport_stream import make_cert

PRIV = crypto.clamp(bytes(range(1, 33)))
KEY = crypto.encode_key(PRIV)
PUB_A = crypto.public_from_private(crypto.clamp(bytes(range(2, 34))))
PUB_B = crypto.public_from_private(crypto.clamp(bytes(range(3, 35))))
PSK = bytes(range(100, 132))
PIN = bytes(range(32))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Host:
    def __init__(self, l2: bool) -> None:
        self.device = Device(None, rand=os.urandom, wall=time.time, l2=l2)
        self.device.control_enabled = True
        self.listen_port = 0
        self.fwmark = 0
        self.epoll = select.epoll()
        self.streams = StreamManager(self.epoll)
        self.flushed: list = []
        self.mtu_min = 1280
        self.metrics_listen = None

    def set_metrics_listen(self, addr) -> None:     # the daemon's: binds the HTTP listener (ops/http.py)
        self.metrics_listen = addr

    def set_stun_server(self, addr) -> None:        # as the daemon's, and the server answers at once: the answer
        from wgpy.protocol.stun import StunClient, binding_response    # goes through the core's demux
        self.stun_server, self.stun = addr, StunClient([addr], rand=os.urandom)
        self.device.stun_sink = self.stun.receive
        [(request, dest)] = self.stun.poll(self.now())
        self.device.receive_datagrams([(binding_response(request, ("203.0.113.7", 40001)), dest)], self.now(),
                                      [], [])

    def set_mtu_auto(self, enabled: bool, min_mtu: int | None) -> None:   # the daemon's: also socket options
        self.mtu_min = min_mtu if min_mtu is not None else self.mtu_min
        self.device.set_pmtu_auto(enabled)

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


def l3_text(tmp_path) -> tuple[str, dict]:
    cert, key, _ = make_cert(tmp_path)
    ports = {"tcp": free_port(), "tls": free_port()}
    return (f"[Interface]\nPrivateKey = {KEY}\nListenPort = 51999\nFwMark = 0x1234\nMTU = 1400\n"
            f"MTUProbeInterval = 45\nMetricsListen = 127.0.0.1:9586\nStunServer = 127.0.0.1:3478\nListenTCP = {ports['tcp']}\nListenTLS = {ports['tls']}\n"
            f"CertificateFile = {cert}\nKeyFile = {key}\n"
            f"Address = 10.0.0.1/24\nDNS = 10.0.0.53\nTable = off\nPreUp = true\nPostUp = true\nPreDown = true\n"
            f"PostDown = true\nSaveConfig = true\nMasquerade = eth0\nUser = nobody\n"
            f"[Peer]\nPublicKey = {crypto.encode_key(PUB_A)}\nPresharedKey = {crypto.encode_key(PSK)}\n"
            f"Endpoint = 192.0.2.1:51820\nPersistentKeepalive = 25\nAllowedIPs = 10.0.0.2/32\n"
            f"FallbackEndpoint = tls://192.0.2.1:8443\nFallbackAfter = 7.5\nFallbackProbeInterval = 20\n"
            f"TLSPin = {PIN.hex()}\nRateLimit = 20mbit\nRateLimitBurst = 256k\n"
            f"[Peer]\nPublicKey = {crypto.encode_key(PUB_B)}\nEndpoint = tls://192.0.2.3:443\n"
            f"TLSServerName = vpn.example.test\nTLSCAFile = {cert}\n"), {"ports": ports, "cert": str(cert),
                                                                       "key": str(key)}


def l2_text() -> str:
    return (f"[Interface]\nPrivateKey = {KEY}\nMode = tap\nRelay = on\nMTU = 1434\n"
            f"[Peer]\nPublicKey = {crypto.encode_key(PUB_A)}\nAllowedMACs = 02:00:00:00:00:01\n")


def round_trip(text: str, path: str, l2: bool, monkeypatch, capsys):
    cfg = parse(text, path)
    body, link = to_uapi(cfg), link_uapi(cfg.mtu, cfg.mtu_probe_interval)   # two sets, as `wgpy up` sends them
    auto = link_uapi(mtu_auto=True, mtu_min=576)    # (the files give a fixed MTU, so the get shows every key)
    host = Host(l2)
    assert handle_request("set=1\n" + body, host) == "errno=0\n\n"
    assert handle_request("set=1\n" + link, host) == "errno=0\n\n"
    assert handle_request("set=1\n" + auto, host) == "errno=0\n\n"
    body += link + auto
    reply = handle_get(host)
    dev, peers = wgshow.parse_get(reply)
    monkeypatch.setattr(wgpy.uapi.server, "request", lambda name, req: reply + "errno=0\n\n")
    monkeypatch.setenv("WG_HIDE_KEYS", "always")
    capsys.readouterr()
    assert wgshow.show_one("wgtest0", None) == 0
    show = capsys.readouterr().out
    return body, host, dev, {p["public_key"]: p for p in peers}, show


@pytest.fixture
def l3(tmp_path, monkeypatch, capsys):
    text, extra = l3_text(tmp_path)
    body, host, dev, peers, show = round_trip(text, str(tmp_path / "wgtest0.conf"), False, monkeypatch, capsys)
    yield dict(body=body, host=host, dev=dev, a=peers[PUB_A.hex()], b=peers[PUB_B.hex()], show=show, **extra)
    host.streams.close()


@pytest.fixture
def l2(tmp_path, monkeypatch, capsys):
    body, host, dev, peers, show = round_trip(l2_text(), str(tmp_path / "wgtest0.conf"), True, monkeypatch, capsys)
    yield dict(body=body, host=host, dev=dev, a=peers[PUB_A.hex()], show=show)
    host.streams.close()


def _peer_ep(r, pub):
    return r["host"].device.peers[pub].endpoint


# row's UAPI key -> (fixture, check(result)); the check sees the get value (r["dev"], r["a"], r["b"]) and the show
# output (r["show"]), or for set-only keys the state the set left
CHECKS = {
    # ---- device
    "private_key": ("l3", lambda r: r["dev"]["private_key"] == PRIV.hex()
                    and f"public key: {crypto.encode_key(crypto.public_from_private(PRIV))}" in r["show"]
                    and "private key: (hidden)" in r["show"]),
    "listen_port": ("l3", lambda r: r["dev"]["listen_port"] == "51999" and "listening port: 51999" in r["show"]),
    "fwmark": ("l3", lambda r: r["dev"]["fwmark"] == "4660" and "fwmark: 0x1234" in r["show"]),
    "wgpy_tls_cert_file": ("l3", lambda r: r["host"].streams.cert_file == r["cert"]),
    "wgpy_tls_key_file": ("l3", lambda r: r["host"].streams.key_file == r["key"]),
    "wgpy_listen_tcp": ("l3", lambda r: r["dev"]["wgpy_listen_tcp"] == str(r["ports"]["tcp"])
                        and f"listening tcp port: {r['ports']['tcp']}" in r["show"]),
    "wgpy_listen_tls": ("l3", lambda r: r["dev"]["wgpy_listen_tls"] == str(r["ports"]["tls"])
                        and f"listening tls port: {r['ports']['tls']}" in r["show"]),
    "wgpy_mode": ("l2", lambda r: r["dev"]["wgpy_mode"] == "tap" and "mode: tap (Ethernet)" in r["show"]),
    "wgpy_relay": ("l2", lambda r: r["dev"]["wgpy_relay"] == "true" and ", relay on" in r["show"]),
    "wgpy_local_mac": ("l2", lambda r: "wgpy_local_mac" not in r["dev"] and "mac table: 0 addresses" in r["show"]),
    "wgpy_mtu": ("l3", lambda r: r["dev"]["wgpy_mtu"] == "1400 auto" and "mtu: 1400 (automatic" in r["show"]),
    "wgpy_mtu_probe_interval": ("l3", lambda r: r["dev"]["wgpy_mtu_probe_interval"] == "45"
                                and "re-probed every 45 s" in r["show"]),
    "wgpy_mtu_auto": ("l3", lambda r: r["dev"]["wgpy_mtu_auto"] == "true" and r["host"].device.pmtu_auto),
    "wgpy_mtu_min": ("l3", lambda r: r["dev"]["wgpy_mtu_min"] == "576" and r["host"].mtu_min == 576),
    "wgpy_metrics_listen": ("l3", lambda r: r["dev"]["wgpy_metrics_listen"] == "127.0.0.1:9586"
                            and r["host"].metrics_listen == ("127.0.0.1", 9586)
                            and "metrics: http://127.0.0.1:9586/metrics" in r["show"]),
    "wgpy_stun_server": ("l3", lambda r: r["dev"]["wgpy_stun_server"] == "127.0.0.1:3478"
                         and "public address: 203.0.113.7:40001 (STUN 127.0.0.1:3478)" in r["show"]),
    "wgpy_stun_mapped": ("l3", lambda r: r["dev"]["wgpy_stun_mapped"] == "203.0.113.7:40001"
                         and r["host"].stun.stats["responses"] == 1
                         and r["host"].device.drops["invalid_message"] == 0),
    "replace_peers": ("l3", lambda r: "replace_peers=true\n" in r["body"] and len(r["host"].device.peers) == 2),
    # ---- peer
    "public_key": ("l3", lambda r: f"peer: {crypto.encode_key(PUB_A)}" in r["show"]),
    "remove": ("l3", lambda r: "remove=" not in r["body"]),                       # UAPI only: test_uapi_protocol
    "update_only": ("l3", lambda r: "update_only=" not in r["body"]),             # UAPI only: test_uapi_protocol
    "preshared_key": ("l3", lambda r: r["a"]["preshared_key"] == PSK.hex() and r["b"]["preshared_key"] == "00" * 32
                      and "preshared key: (hidden)" in r["show"]),
    "protocol_version": ("l3", lambda r: r["a"]["protocol_version"] == "1"),
    "endpoint": ("l3", lambda r: r["a"]["endpoint"] == "192.0.2.1:51820" and "endpoint" not in r["b"]
                 and "endpoint: 192.0.2.1:51820" in r["show"]),
    "wgpy_endpoint_name": ("l3", lambda r: "wgpy_endpoint_name" not in r["a"]             # numeric endpoints
                           and "endpoint name" not in r["show"]),                     # (test_reresolve.py)
    "last_handshake_time_sec": ("l3", lambda r: r["a"]["last_handshake_time_sec"] == "0"
                                and "latest handshake" not in r["show"]),
    "last_handshake_time_nsec": ("l3", lambda r: r["a"]["last_handshake_time_nsec"] == "0"),
    "tx_bytes": ("l3", lambda r: r["a"]["tx_bytes"] == str(r["host"].device.peers[PUB_A].tx_bytes)),
    "rx_bytes": ("l3", lambda r: r["a"]["rx_bytes"] == "0"),
    "persistent_keepalive_interval": ("l3", lambda r: r["a"]["persistent_keepalive_interval"] == "25"
                                      and "persistent keepalive: every 25 seconds" in r["show"]),
    "replace_allowed_ips": ("l3", lambda r: r["body"].count("replace_allowed_ips=true\n") == 2),
    "allowed_ip": ("l3", lambda r: r["a"]["allowed_ips"] == ["10.0.0.2/32"] and r["b"]["allowed_ips"] == []
                   and "allowed ips: 10.0.0.2/32" in r["show"]),
    "wgpy_replace_allowed_macs": ("l2", lambda r: "wgpy_replace_allowed_macs=true\n" in r["body"]),
    "wgpy_allowed_mac": ("l2", lambda r: r["a"]["wgpy_allowed_mac"] == ["02:00:00:00:00:01"]
                         and "allowed macs: 02:00:00:00:00:01" in r["show"]),
    "wgpy_mac": ("l2", lambda r: "wgpy_mac" not in r["a"]),                       # nothing learned yet
    "wgpy_path_mtu": ("l3", lambda r: "wgpy_path_mtu" not in r["a"] and "path mtu" not in r["show"]),  # no handshake
    "wgpy_peer_wgpy": ("l3", lambda r: "wgpy_peer_wgpy" not in r["a"]),           # no HELLO yet
    "wgpy_endpoint": ("l3", lambda r: r["b"]["wgpy_endpoint"] == "tls://192.0.2.3:443"
                      and "endpoint: tls://192.0.2.3:443 (" in r["show"]),
    "wgpy_endpoint_state": ("l3", lambda r: r["b"]["wgpy_endpoint_state"] in r["show"]),
    "wgpy_fallback_endpoint": ("l3", lambda r: r["a"]["wgpy_fallback_endpoint"] == "tls://192.0.2.1:8443"
                               and "fallback tls://192.0.2.1:8443 on standby" in r["show"]),
    "wgpy_fallback": ("l3", lambda r: r["a"]["wgpy_fallback"] == "standby" and "on standby" in r["show"]),
    "wgpy_fallback_after": ("l3", lambda r: r["a"]["wgpy_fallback_after"] == "7.5"
                            and "used after 7.5 s" in r["show"]),
    "wgpy_fallback_probe_interval": ("l3", lambda r: r["a"]["wgpy_fallback_probe_interval"] == "20"
                                     and "probed every 20 s" in r["show"]),
    "wgpy_fallback_switches": ("l3", lambda r: r["a"]["wgpy_fallback_switches"] == "0" and "switches 0" in r["show"]),
    "wgpy_fallback_returns": ("l3", lambda r: r["a"]["wgpy_fallback_returns"] == "0" and "returns 0" in r["show"]),
    "wgpy_fallback_probes": ("l3", lambda r: r["a"]["wgpy_fallback_probes"] == "0" and "probes 0" in r["show"]),
    "wgpy_tls_server_name": ("l3", lambda r: _peer_ep(r, PUB_B).server_name == "vpn.example.test"),
    "wgpy_tls_ca_file": ("l3", lambda r: _peer_ep(r, PUB_B).ca_file == r["cert"]),
    "wgpy_tls_pin": ("l3", lambda r: r["host"].device.peers[PUB_A].fallback.target.pin == PIN),
    "wgpy_rate_limit": ("l3", lambda r: r["a"]["wgpy_rate_limit"] == "20000000" and "wgpy_rate_limit" not in r["b"]
                        and "rate limit: 20 Mbit/s each way, burst 256.00 KiB; dropped 0 sent, 0 received"
                        in r["show"]),
    "wgpy_rate_limit_burst": ("l3", lambda r: r["a"]["wgpy_rate_limit_burst"] == "262144"
                              and r["host"].device.peers[PUB_A].limit.tx.burst == 262144),
    "wgpy_rate_limit_dropped": ("l3", lambda r: r["a"]["wgpy_rate_limit_dropped"] == "0 0"),
    "wgpy_punch": ("l3", lambda r: "wgpy_punch" not in r["body"]),      # set only: test_uapi_protocol
    "wgpy_last_error": ("l3", lambda r: "wgpy_last_error" not in r["a"] and "last error" not in r["show"]),
}


def test_every_row_with_a_uapi_key_has_a_check():
    assert sorted(CHECKS) == sorted(s.uapi for s in TABLE if s.uapi)


def test_every_get_row_has_a_reader_and_nothing_else_does():
    for section in ("interface", "peer"):
        assert sorted(READERS[section]) == sorted(GET_KEYS[section])
        assert GET_KEYS[section] == [s.uapi for s in rows(section, get=True)]


def test_ini_only_rows_never_reach_the_uapi(tmp_path):
    text, _ = l3_text(tmp_path)
    cfg = parse(text, str(tmp_path / "wgtest0.conf"))
    for s in TABLE:
        if s.ini and not s.uapi:         # given in the file (parsed), never rendered
            assert s.render is None and getattr(cfg, "dns_servers" if s.attr == "dns" else s.attr), s.ini
    keys = {line.partition("=")[0] for line in to_uapi(cfg).splitlines()}
    assert keys <= {s.uapi for s in TABLE if s.uapi and s.set}


@pytest.mark.parametrize("key", sorted(CHECKS))
def test_row_round_trips(key, request):
    fixture, check = CHECKS[key]
    r = request.getfixturevalue(fixture)
    row = next(s for s in TABLE if s.uapi == key)
    if row.ini and row.set and row.render not in (None, "custom", "always"):
        assert f"\n{key}=" in "\n" + r["body"], f"{row.ini} was not rendered as {key}"
    assert check(r), (key, r.get("show"))


def test_l2_mtu_is_the_frame(l2):
    """MTU keeps its meaning in L2 (the largest plaintext, the frame): show prints the TAP's MTU, 14 less."""
    assert l2["dev"]["wgpy_mtu"] == "1434 auto" and "mtu: 1420 (automatic" in l2["show"]
