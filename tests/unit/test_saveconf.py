"""ops/saveconf.py: what `wgpy down` writes back with SaveConfig = true (as wg-quick's save_config)."""

from __future__ import annotations

import os
import stat

import pytest

from wgpy import config as cfgmod
from wgpy import crypto
from wgpy.ops import saveconf
from wgpy.show import parse_get

PRIV = crypto.clamp(bytes(range(32)))
PEER1 = crypto.public_from_private(crypto.clamp(b"\x11" * 32))
PEER2 = crypto.public_from_private(crypto.clamp(b"\x22" * 32))
PEER3 = crypto.public_from_private(crypto.clamp(b"\x33" * 32))
PSK = b"\x44" * 32
B64 = crypto.encode_key

FILE = f"""# my VPN -- comments are not kept, as wg-quick
[Interface]
PrivateKey = {B64(PRIV)}
Address = 10.0.0.1/24   # the server
DNS = 10.0.0.53, example.internal
MTU = 1400
Table = 1234
SaveConfig = true
PostUp = echo up # hook
PreDown = echo going
Masquerade = eth0
MetricsListen = 127.0.0.1:9586

[Peer]
# laptop
PublicKey = {B64(PEER1)}
Endpoint = vpn.example.test:51821
AllowedIPs = 10.0.0.2/32
FallbackEndpoint = tls://vpn.example.test:443
FallbackAfter = 20

[Peer]
PublicKey = {B64(PEER2)}
AllowedIPs = 10.0.0.3/32
Endpoint = 192.0.2.3:51820
"""


def _get(*peers: str, fwmark: int = 0) -> tuple[dict, list[dict]]:
    body = f"private_key={PRIV.hex()}\nlisten_port=51820\nfwmark={fwmark}\n" + "".join(peers) + "errno=0\n"
    return parse_get(body)


def _peer(key: bytes, *lines: str) -> str:
    return f"public_key={key.hex()}\npreshared_key={'00' * 32}\n" + "".join(ln + "\n" for ln in lines)


def test_running_state_replaces_the_file_as_wg_quick():
    cfg = cfgmod.parse(FILE, "/etc/wireguard/wg0.conf")
    dev, peers = _get(
        _peer(PEER1, "endpoint=198.51.100.1:51821", "wgpy_endpoint_name=vpn.example.test:51821",
              "allowed_ip=10.0.0.2/32", "persistent_keepalive_interval=0", "wgpy_fallback_endpoint=tls://1.2.3.4:443"),
        _peer(PEER2, "endpoint=203.0.113.9:40000", "allowed_ip=10.0.0.3/32"),        # roamed
        f"public_key={PEER3.hex()}\npreshared_key={PSK.hex()}\nallowed_ip=10.0.0.4/32\nallowed_ip=fd00::4/128\n"
        "persistent_keepalive_interval=25\n",                                         # added live
        fwmark=0xCA6C)
    text = saveconf.render(cfg, FILE, dev, peers, ["10.0.0.1/24", "10.0.0.9/24"], 1400)
    assert text == f"""[Interface]
Address = 10.0.0.1/24
Address = 10.0.0.9/24
DNS = 10.0.0.53, example.internal
MTU = 1400
Table = 1234
SaveConfig = true
PostUp = echo up
PreDown = echo going
Masquerade = eth0
MetricsListen = 127.0.0.1:9586
ListenPort = 51820
FwMark = 0xca6c
PrivateKey = {B64(PRIV)}

[Peer]
PublicKey = {B64(PEER1)}
AllowedIPs = 10.0.0.2/32
Endpoint = vpn.example.test:51821
FallbackEndpoint = tls://vpn.example.test:443
FallbackAfter = 20

[Peer]
PublicKey = {B64(PEER2)}
AllowedIPs = 10.0.0.3/32
Endpoint = 203.0.113.9:40000

[Peer]
PublicKey = {B64(PEER3)}
PresharedKey = {B64(PSK)}
AllowedIPs = 10.0.0.4/32, fd00::4/128
PersistentKeepalive = 25
"""
    again = cfgmod.parse(text, "/etc/wireguard/wg0.conf")        # and it reads back
    assert again.save_config and [p.public_key for p in again.peers] == [PEER1, PEER2, PEER3]
    assert again.peers[0].endpoint == ("vpn.example.test", 51821) and again.peers[2].preshared_key == PSK


def test_auto_mtu_tap_and_a_name_no_longer_in_force():
    text = f"[Interface]\nPrivateKey = {B64(PRIV)}\nMode = tap\nMTU = auto\nSaveConfig = true\n" \
           f"[Peer]\nPublicKey = {B64(PEER1)}\nEndpoint = vpn.example.test:51821\n"
    cfg = cfgmod.parse(text, "/x/wg1.conf")
    dev, peers = _get(_peer(PEER1, "endpoint=198.51.100.1:51821", "wgpy_allowed_mac=02:00:00:00:00:01"))
    out = saveconf.render(cfg, text, dev, peers, [], 1386)
    assert "MTU = auto\n" in out and "Mode = tap\n" in out and "AllowedMACs = 02:00:00:00:00:01\n" in out
    assert "Endpoint = 198.51.100.1:51821\n" in out        # roamed away from the name: the learned address
    assert "Address" not in out and "DNS" not in out and "Table" not in out


def test_tap_mtu_includes_the_header():
    text = f"[Interface]\nPrivateKey = {B64(PRIV)}\nMode = tap\nMTU = 1420\nSaveConfig = true\n"
    cfg = cfgmod.parse(text, "/x/wg1.conf")
    assert "MTU = 1420\n" in saveconf.render(cfg, text, *_get(), [], 1406)


def test_replace_keeps_mode_owner_and_symlink(tmp_path):
    real = tmp_path / "real.conf"
    real.write_text("old\n")
    os.chmod(real, 0o640)
    os.chown(real, os.getuid(), os.getgid())
    link = tmp_path / "wg0.conf"
    link.symlink_to(real)
    saveconf._replace(str(link), "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_replace_keeps_another_owner(tmp_path):
    path = tmp_path / "wg0.conf"
    path.write_text("old\n")
    os.chown(path, 1234, 5678)
    os.chmod(path, 0o600)
    saveconf._replace(str(path), "new\n")
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o600)


def test_saves_only_with_save_config(tmp_path):
    on = tmp_path / "a.conf"
    on.write_text(f"[Interface]\nPrivateKey = {B64(PRIV)}\nSaveConfig = true\n")
    off = tmp_path / "b.conf"
    off.write_text(f"[Interface]\nPrivateKey = {B64(PRIV)}\n")
    bad = tmp_path / "c.conf"
    bad.write_text("[Interface]\nNope = 1\n")
    assert saveconf.saves(str(on)) is not None
    assert saveconf.saves(str(off)) is None and saveconf.saves(str(bad)) is None
    assert saveconf.saves(str(tmp_path / "missing.conf")) is None and saveconf.saves(None) is None


def test_a_failed_save_keeps_the_interface_up(tmp_path, monkeypatch, capsys):
    import importlib
    downmod = importlib.import_module("wgpy.quick.down")     # (wgpy.quick.down is also the function)
    path = tmp_path / "wg0.conf"
    path.write_text(f"[Interface]\nPrivateKey = {B64(PRIV)}\nSaveConfig = true\n")
    reply = f"private_key={PRIV.hex()}\nlisten_port=51820\nerrno=0\n"
    monkeypatch.setattr("wgpy.uapi.server.request", lambda name, text: reply)
    monkeypatch.setattr(saveconf, "_live_addresses", lambda name, kept: [])

    def no_space(path, text):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(saveconf, "_replace", no_space)
    assert downmod._save_config("wg0", str(path)) is True          # down returns 1 before stopping anything
    err = capsys.readouterr().err
    assert "cannot write" in err and "No space left on device" in err and "stays up" in err
    monkeypatch.undo()
    monkeypatch.setattr("wgpy.uapi.server.request", lambda name, text: reply)
    monkeypatch.setattr(saveconf, "_live_addresses", lambda name, kept: [])
    assert downmod._save_config("wg0", str(path)) is False
    assert path.read_text() == f"[Interface]\nSaveConfig = true\nListenPort = 51820\nPrivateKey = {B64(PRIV)}\n"
