"""The operations commands without a daemon: `wgpy show --json` from get replies (ops/showjson.py), the plan of
`wgpy reload` (ops/reload.py), `wgpy qr` (ops/qr.py; the PNG decoded by zbarimg when zbar-tools is installed),
the client config of `wgpy genconf` and the sd_notify datagram (ops/sdnotify.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess

import pytest

from wgpy import crypto
from wgpy import show as wgshow
from wgpy.ops import genconf, qr, sdnotify, showjson
from wgpy.ops.reload import plan_reload
from wgpy.settings.table import rows

from test_show import L3, NOW, PEER2, PEER3, PRIV, PRIV_B64, PSK_B64, PUB_B64, hexkey, peer


def records(text: str):
    return wgshow.parse_get(text)


# ---- JSON ---------------------------------------------------------------------------------------------------------

def test_interface_object_hides_keys_as_the_listing_does():
    dev, peers = records(L3)
    obj = showjson.interface_object("wgx0", dev, peers, hide=True)
    assert obj["interface"] == "wgx0" and obj["public_key"] == PUB_B64 and obj["private_key"] == "(hidden)"
    assert obj["listen_port"] == 51820 and obj["fwmark"] == 4660 and obj["mode"] == "tun" and obj["mtu"] is None
    p2, p3 = obj["peers"]
    assert p2 == {"public_key": PEER2, "preshared_key": "(hidden)", "endpoint": "192.0.2.2:51820",
                  "endpoint_name": None,
                  "stream_endpoint": None, "transport": "udp", "fallback": None,
                  "allowed_ips": ["10.0.0.2/32", "fd00::2/128"], "allowed_macs": None, "macs": None,
                  "latest_handshake": NOW - 3725, "transfer_rx": 1536, "transfer_tx": 3 << 20,
                  "persistent_keepalive": 25, "path_mtu": None, "rate_limit": None, "last_error": None}
    assert p3["preshared_key"] is None and p3["endpoint"] is None and p3["allowed_ips"] == []
    shown = showjson.interface_object("wgx0", dev, peers, hide=False)
    assert shown["private_key"] == PRIV_B64 and shown["peers"][0]["preshared_key"] == PSK_B64
    assert PRIV not in json.dumps(obj) and PRIV_B64 not in json.dumps(obj) and PSK_B64 not in json.dumps(obj)


def test_every_interface_and_peer_key_is_always_there():
    empty = showjson.interface_object("wgx0", {}, [], hide=True)
    l3 = showjson.interface_object("wgx0", *records(L3), hide=True)
    assert set(empty) == set(l3)
    tap = (f"private_key={PRIV}\nwgpy_mode=tap\nwgpy_relay=true\nwgpy_local_mac=02:00:00:00:00:09 4\n"
           + peer(PEER2, "wgpy_allowed_mac=02:00:00:00:00:02", "wgpy_mac=02:00:00:00:00:02 7"))
    l2 = showjson.interface_object("wgx0", *records(tap), hide=True)
    assert set(l2["peers"][0]) == set(l3["peers"][0])
    assert l2["relay"] is True and l2["local_macs"] == [{"mac": "02:00:00:00:00:09", "age": 4}]
    assert l2["peers"][0]["allowed_macs"] == ["02:00:00:00:00:02"] and l2["peers"][0]["allowed_ips"] is None
    assert l2["peers"][0]["macs"] == [{"mac": "02:00:00:00:00:02", "age": 7}]


def test_wgpy_keys_in_json():
    text = (f"private_key={PRIV}\nlisten_port=51820\nwgpy_mtu=1420 auto\nwgpy_mtu_probe_interval=300\n"
            f"wgpy_metrics_listen=127.0.0.1:9586\nwgpy_listen_tcp=443\n"
            + peer(PEER2, "endpoint=192.0.2.2:51820", "wgpy_path_mtu=1400 probe probing", "wgpy_peer_wgpy=1",
                   "wgpy_fallback_endpoint=tls://192.0.2.2:443", "wgpy_fallback=active", "wgpy_fallback_after=15",
                   "wgpy_fallback_probe_interval=30", "wgpy_fallback_switches=1", "wgpy_fallback_returns=0",
                   "wgpy_fallback_probes=3", "wgpy_last_error=no answer to 2 handshake initiations")
            + peer(PEER3, "wgpy_endpoint=tcp://192.0.2.3:80", "wgpy_endpoint_state=connected"))
    obj = showjson.interface_object("wgx0", *records(text))
    assert obj["mtu"] == {"mtu": 1420, "automatic": True, "probe_interval": 300.0}
    assert obj["metrics_listen"] == "127.0.0.1:9586" and obj["listen_tcp"] == 443 and obj["listen_tls"] is None
    p2, p3 = obj["peers"]
    assert p2["path_mtu"] == {"mtu": 1400, "source": "probe", "probing": True, "peer_is_wgpy": True}
    assert p2["transport"] == "tls" and p2["fallback"]["state"] == "active" and p2["fallback"]["probes"] == 3
    assert p2["last_error"] == "no answer to 2 handshake initiations"
    assert p3["transport"] == "tcp" and p3["stream_endpoint"] == {"url": "tcp://192.0.2.3:80", "state": "connected"}


def test_field_modes_give_their_keys_and_show_keys_where_the_text_does():
    dev, peers = records(L3)
    assert showjson.field_object("public-key", "wgx0", dev, peers) == {"interface": "wgx0", "public_key": PUB_B64}
    assert showjson.field_object("private-key", "wgx0", dev, peers)["private_key"] == PRIV_B64
    psk = showjson.field_object("preshared-keys", "wgx0", dev, peers)["peers"]
    assert psk == [{"public_key": PEER2, "preshared_key": PSK_B64}, {"public_key": PEER3, "preshared_key": None}]
    tr = showjson.field_object("transfer", "wgx0", dev, peers)["peers"][0]
    assert tr == {"public_key": PEER2, "transfer_rx": 1536, "transfer_tx": 3 << 20}
    dump = showjson.field_object("dump", "wgx0", dev, peers)
    assert dump["private_key"] == PRIV_B64 and dump["peers"][0]["preshared_key"] == PSK_B64
    for name in wgshow.FIELD_NAMES:           # every field mode of the text output has one
        if name not in ("dump", "stats"):
            assert name in showjson.FIELD_KEYS, name


def test_every_get_key_reaches_the_json():
    """A get key is in the schema (read by interface_object/peer_object) or, like in `wgpy show`, not shown."""
    src = open(showjson.__file__).read()
    for section in ("interface", "peer"):
        for s in rows(section, get=True):
            if s.uapi in wgshow.NOT_SHOWN:
                continue
            key = "allowed_ips" if s.uapi == "allowed_ip" else s.uapi
            assert f'"{key}"' in src, s.uapi


def test_stats_object():
    obj = showjson.stats_object("wgx0", "drop_replay=3\nunder_load=0\nerrno=0\n")
    assert obj == {"interface": "wgx0", "stats": {"drop_replay": 3, "under_load": 0}}


# ---- reload ---------------------------------------------------------------------------------------------------------

def _body(*peers: str, extra: str = "") -> str:
    return f"private_key={PRIV}\nlisten_port=51820\n{extra}replace_peers=true\n" + "".join(peers)


def _peer_set(b64: str, *lines: str) -> str:
    return f"public_key={hexkey(b64)}\nreplace_allowed_ips=true\n" + "".join(ln + "\n" for ln in lines)


def test_reload_sends_only_what_changed():
    dev, peers = records(L3)
    unchanged2 = _peer_set(PEER2, f"preshared_key={crypto.decode_key(PSK_B64).hex()}", "endpoint=192.0.2.2:51820",
                           "persistent_keepalive_interval=25", "allowed_ip=10.0.0.2/32", "allowed_ip=fd00::2/128")
    new = crypto.encode_key(bytes(range(32)))
    text, counts = plan_reload(_body(unchanged2, _peer_set(new, "allowed_ip=10.0.0.9/32")), dev, peers)
    assert counts == {"added": 1, "removed": 1, "updated": 0, "unchanged": 1}
    assert "replace_peers" not in text and "private_key" not in text       # the same key: not sent
    assert f"public_key={hexkey(PEER2)}" not in text                        # unchanged: its session goes on
    assert f"public_key={hexkey(new)}\n" in text and "allowed_ip=10.0.0.9/32" in text
    assert f"public_key={hexkey(PEER3)}\nremove=true\n" in text


def test_reload_updates_a_changed_peer_in_place_and_turns_removed_listeners_off():
    dev, peers = records(L3.replace("fwmark=4660\n", "fwmark=4660\nwgpy_metrics_listen=127.0.0.1:9586\n"))
    changed = _peer_set(PEER2, f"preshared_key={crypto.decode_key(PSK_B64).hex()}", "endpoint=192.0.2.2:51820",
                        "persistent_keepalive_interval=25", "allowed_ip=10.0.0.2/32")      # one prefix less
    text, counts = plan_reload(_body(changed, _peer_set(PEER3)), dev, peers)
    assert counts == {"added": 0, "removed": 0, "updated": 1, "unchanged": 1}
    assert text.startswith("listen_port=51820\nwgpy_metrics_listen=\n")
    assert f"public_key={hexkey(PEER2)}\nreplace_allowed_ips=true\n" in text and "remove" not in text


# ---- QR -------------------------------------------------------------------------------------------------------------

CLIENT = genconf.client_config(bytes(range(1, 33)), ["10.0.0.7/32"], ["10.0.0.1"], bytes(range(2, 34)), None,
                               "vpn.example.test:51820", ["10.0.0.0/24"], 25)


def test_client_config_parses_as_a_config():
    from wgpy.config import parse
    cfg = parse(CLIENT, "<genconf>", name="phone")
    assert cfg.private_key == bytes(range(1, 33)) and [str(a) for a in cfg.addresses] == ["10.0.0.7/32"]
    assert cfg.peers[0].public_key == bytes(range(2, 34)) and cfg.peers[0].persistent_keepalive == 25
    assert cfg.peers[0].endpoint == ("vpn.example.test", 51820) and cfg.dns_servers == ["10.0.0.1"]


def test_qr_holds_the_config_text(tmp_path, capsys):
    conf = tmp_path / "phone.conf"
    conf.write_text(CLIENT)
    png = tmp_path / "phone.png"
    assert qr.qr_main(str(conf), str(png)) == 0
    assert stat.S_IMODE(png.stat().st_mode) == 0o600            # it holds the private key
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = qr.make(CLIENT)
    assert code.mode == "byte" and code.error in ("M", "L")
    if shutil.which("zbarimg"):
        res = subprocess.run(["zbarimg", "--raw", "-q", "-Sbinary", str(png)], capture_output=True, timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stdout.rstrip(b"\n") == CLIENT.rstrip("\n").encode()
    assert qr.qr_main(str(conf), None) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) > 20 and ("▀" in out or "█" in out)


def test_qr_refuses_what_is_not_a_config_or_too_large(tmp_path, capsys):
    bad = tmp_path / "x.conf"
    bad.write_text("hello\n")
    assert qr.qr_main(str(bad), None) == 1
    assert "not a WireGuard config" in capsys.readouterr().err
    big = tmp_path / "big.conf"
    big.write_text(CLIENT + "".join(f"# {'x' * 70}\n" for _ in range(60)))
    assert qr.qr_main(str(big), None) == 1
    assert "a QR code holds at most" in capsys.readouterr().err


# ---- sd_notify ---------------------------------------------------------------------------------------------------

def test_sd_notify_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify("READY=1", "STATUS=up\nnow")
        assert s.recv(4096) == b"READY=1\nSTATUS=up now\n"
        abstract = f"wgpy-test-{os.getpid()}"
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.bind("\0" + abstract)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + abstract)
        assert sdnotify.notify("STOPPING=1") and a.recv(100) == b"STOPPING=1\n"
        a.close()
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert not sdnotify.notify("READY=1")
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
        assert not sdnotify.notify("READY=1")                     # never raises
    finally:
        s.close()
