"""`wgpy show` (show.py): synthetic get replies of L3, L2, stream and path-MTU peers rendered through the field
table, compared with the expected text line for line; the field table covers every get key of the settings table.
"""

from __future__ import annotations

import pytest

import wgpy.uapi.server
from wgpy import crypto
from wgpy import show as wgshow
from wgpy.settings.table import rows

PRIV = "0001010101010101010101010101010101010101010101010101010101010141"   # clamp(b"\x01" * 32)
PRIV_B64 = "AAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAUE="
PUB_B64 = "pOCSkrZRwni5dyxWn1+puxPZBrRqtoyd+dwrRAn4ogk="
PEER2 = "zo060cy2M+x7cMF4FKXHbs0CloUFDTRHRboFhw5YfVk="
PEER3 = "Xf7dO2vUf2+ijuFdlp1bsOpTd01Ii9r53xxuASSz7yI="
PSK = "0004040404040404040404040404040404040404040404040404040404040444"
PSK_B64 = "AAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBEQ="
NOW = 1_700_000_000


def hexkey(b64: str) -> str:
    return crypto.decode_key(b64).hex()


def peer(b64: str, *lines: str, psk: str = "00" * 32, hs: int = 0, rx: int = 0, tx: int = 0, ka: int = 0) -> str:
    return (f"public_key={hexkey(b64)}\npreshared_key={psk}\nprotocol_version=1\n"
            + "".join(line + "\n" for line in lines if line.startswith("endpoint="))
            + f"last_handshake_time_sec={hs}\nlast_handshake_time_nsec=0\ntx_bytes={tx}\nrx_bytes={rx}\n"
              f"persistent_keepalive_interval={ka}\n"
            + "".join(line + "\n" for line in lines if not line.startswith("endpoint=")))


L3 = (f"private_key={PRIV}\nlisten_port=51820\nfwmark=4660\n"
      + peer(PEER2, "endpoint=192.0.2.2:51820", "allowed_ip=10.0.0.2/32", "allowed_ip=fd00::2/128", psk=PSK,
             hs=NOW - 3725, rx=1536, tx=3 << 20, ka=25)
      + peer(PEER3, hs=NOW - 1))
L3_LISTING = f"""\
interface: wgx0
  public key: {PUB_B64}
  private key: (hidden)
  listening port: 51820
  fwmark: 0x1234

peer: {PEER3}
  allowed ips: (none)
  latest handshake: 1 second ago

peer: {PEER2}
  preshared key: (hidden)
  endpoint: 192.0.2.2:51820
  allowed ips: 10.0.0.2/32, fd00::2/128
  latest handshake: 1 hour, 2 minutes, 5 seconds ago
  transfer: 1.50 KiB received, 3.00 MiB sent
  persistent keepalive: every 25 seconds
"""
L3_DUMP = f"""\
{PRIV_B64}\t{PUB_B64}\t51820\t0x1234
{PEER2}\t{PSK_B64}\t192.0.2.2:51820\t10.0.0.2/32,fd00::2/128\t{NOW - 3725}\t1536\t3145728\t25
{PEER3}\t(none)\t(none)\t(none)\t{NOW - 1}\t0\t0\toff
"""

L2 = (f"private_key={PRIV}\nlisten_port=51821\nwgpy_mode=tap\nwgpy_relay=true\n"
      "wgpy_local_mac=02:00:00:00:00:01 3\nwgpy_mtu=1434 auto\nwgpy_mtu_probe_interval=0\n"
      + peer(PEER2, "endpoint=192.0.2.2:51821", "wgpy_allowed_mac=02:00:00:00:00:02", "wgpy_mac=02:00:00:00:00:02 7",
             "wgpy_path_mtu=1500 link"))
L2_LISTING = f"""\
interface: wgx0
  public key: {PUB_B64}
  private key: {PRIV_B64}
  listening port: 51821
  mode: tap (Ethernet), relay on
  mtu: 1420 (automatic: follows the path MTUs of the peers, not re-probed)

peer: {PEER2}
  endpoint: 192.0.2.2:51821
  allowed macs: 02:00:00:00:00:02
  path mtu: 1500 (link MTU, not yet lowered)

mac table: 2 addresses
  02:00:00:00:00:01  local                                               3 s
  02:00:00:00:00:02  peer {PEER2}   7 s
"""

STREAMS = (f"private_key={PRIV}\nlisten_port=51820\nwgpy_listen_tcp=8080\nwgpy_listen_tls=8443\n"
           + peer(PEER2, "wgpy_endpoint=tls://192.0.2.2:443", "wgpy_endpoint_state=backoff", "allowed_ip=10.0.0.2/32",
                  "wgpy_last_error=TLS: certificate does not match the pinned fingerprint")
           + peer(PEER3, "endpoint=192.0.2.3:51820", "allowed_ip=10.0.0.3/32",
                  "wgpy_fallback_endpoint=tcp://192.0.2.3:443", "wgpy_fallback=active", "wgpy_fallback_after=15",
                  "wgpy_fallback_probe_interval=30", "wgpy_fallback_switches=1", "wgpy_fallback_returns=0",
                  "wgpy_fallback_probes=4"))
STREAMS_LISTING = f"""\
interface: wgx0
  public key: {PUB_B64}
  private key: (hidden)
  listening port: 51820
  listening tcp port: 8080
  listening tls port: 8443

peer: {PEER2}
  endpoint: tls://192.0.2.2:443 (backoff)
  transport: tls
  last error: TLS: certificate does not match the pinned fingerprint
  allowed ips: 10.0.0.2/32

peer: {PEER3}
  endpoint: 192.0.2.3:51820
  transport: tcp (fallback active, UDP probed every 30 s; switches 1, returns 0, probes 4)
  allowed ips: 10.0.0.3/32
"""

PMTU = (f"private_key={PRIV}\nwgpy_mtu=1420 auto\nwgpy_mtu_probe_interval=45\n"
        + peer(PEER2, "endpoint=192.0.2.2:51820", "allowed_ip=10.0.0.2/32", "wgpy_path_mtu=1280 probe",
               "wgpy_peer_wgpy=1", hs=NOW - 10)
        + peer(PEER3, "endpoint=[2001:db8::3]:51820", "allowed_ip=10.0.0.3/32", "wgpy_path_mtu=1500 link probing",
               "wgpy_fallback_endpoint=tls://192.0.2.3:8443", "wgpy_fallback=standby", "wgpy_fallback_after=7.5",
               "wgpy_fallback_probe_interval=20", "wgpy_fallback_switches=0", "wgpy_fallback_returns=0",
               "wgpy_fallback_probes=0"))
PMTU_LISTING = f"""\
interface: wgx0
  public key: {PUB_B64}
  private key: (hidden)
  mtu: 1420 (automatic: follows the path MTUs of the peers, re-probed every 45 s)

peer: {PEER2}
  endpoint: 192.0.2.2:51820
  allowed ips: 10.0.0.2/32
  latest handshake: 10 seconds ago
  path mtu: 1280 (probed, peer is wgpy)

peer: {PEER3}
  endpoint: [2001:db8::3]:51820
  transport: udp (fallback tls://192.0.2.3:8443 on standby, used after 7.5 s without a handshake answer, UDP then \
probed every 20 s; switches 0, returns 0, probes 0)
  allowed ips: 10.0.0.3/32
  path mtu: 1500 (link MTU, not yet lowered, probing)
"""


@pytest.mark.parametrize("reply, hide, expected", [
    (L3, True, L3_LISTING), (L2, False, L2_LISTING), (STREAMS, True, STREAMS_LISTING), (PMTU, True, PMTU_LISTING),
], ids=["l3", "l2", "streams", "path-mtu"])
def test_listing(reply, hide, expected):
    dev, peers = wgshow.parse_get(reply)
    assert "\n".join(wgshow.listing("wgx0", dev, peers, NOW, hide)) + "\n" == expected


def test_keys_are_shown_with_wg_hide_keys_never():
    dev, peers = wgshow.parse_get(L3)
    text = "\n".join(wgshow.listing("wgx0", dev, peers, NOW, hide=False))
    assert f"  private key: {PRIV_B64}\n" in text and f"  preshared key: {PSK_B64}\n" in text


def test_dump():
    dev, peers = wgshow.parse_get(L3)
    assert "\n".join(wgshow.field_lines("dump", "wgx0", dev, peers)) + "\n" == L3_DUMP


@pytest.mark.parametrize("reply, field, expected", [
    (L3, "public-key", [PUB_B64]),
    (L3, "private-key", [PRIV_B64]),
    (L3, "listen-port", ["51820"]),
    (L3, "fwmark", ["0x1234"]),
    (PMTU, "listen-port", ["0"]),
    (PMTU, "fwmark", ["off"]),
    (L3, "peers", [PEER2, PEER3]),                           # get order, not sorted by handshake
    (L3, "preshared-keys", [f"{PEER2}\t{PSK_B64}", f"{PEER3}\t(none)"]),
    (L3, "endpoints", [f"{PEER2}\t192.0.2.2:51820", f"{PEER3}\t(none)"]),
    (L3, "allowed-ips", [f"{PEER2}\t10.0.0.2/32 fd00::2/128", f"{PEER3}\t(none)"]),
    (L3, "latest-handshakes", [f"{PEER2}\t{NOW - 3725}", f"{PEER3}\t{NOW - 1}"]),
    (L3, "transfer", [f"{PEER2}\t1536\t3145728", f"{PEER3}\t0\t0"]),
    (L3, "persistent-keepalive", [f"{PEER2}\t25", f"{PEER3}\toff"]),
    (L3, "allowed-macs", [f"{PEER2}\t(any)", f"{PEER3}\t(any)"]),
    (L3, "macs", []),
    (L2, "macs", ["02:00:00:00:00:01\tlocal\t3", f"02:00:00:00:00:02\t{PEER2}\t7"]),
    (L2, "allowed-macs", [f"{PEER2}\t02:00:00:00:00:02"]),
    (PMTU, "path-mtu", [f"{PEER2}\t1280\tprobe", f"{PEER3}\t1500\tlink (probing)"]),
    (L3, "path-mtu", [f"{PEER2}\t(none)\t-", f"{PEER3}\t(none)\t-"]),
])
def test_field_modes(reply, field, expected):
    dev, peers = wgshow.parse_get(reply)
    assert wgshow.field_lines(field, "wgx0", dev, peers) == expected


def test_show_one_prints_through_the_uapi(monkeypatch, capsys):
    monkeypatch.setattr(wgpy.uapi.server, "request", lambda name, req: STREAMS + "errno=0\n\n")
    monkeypatch.setenv("WG_HIDE_KEYS", "always")
    assert wgshow.show_one("wgx0", None) == 0
    assert capsys.readouterr().out == STREAMS_LISTING
    monkeypatch.setattr(wgpy.uapi.server, "request", lambda name, req: "errno=-22\n\n")
    assert wgshow.show_one("wgx0", "peers") == 1
    assert capsys.readouterr().err == "wgpy: interface wgx0: errno -22\n"


def test_every_get_key_is_read_by_a_field_or_deliberately_not_shown():
    read = {k for f in wgshow.FIELDS for k in f.keys}
    get = {s.uapi for section in ("interface", "peer") for s in rows(section, get=True)}
    assert read | wgshow.NOT_SHOWN >= get
    assert read <= get and not (read & wgshow.NOT_SHOWN)


def test_every_field_mode_is_in_the_usage_and_nothing_else_is():
    assert sorted(wgshow.FIELD_NAMES) == sorted([f.name for f in wgshow.FIELDS if f.name] + ["dump", "stats"])
