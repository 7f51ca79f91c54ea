"""A value that could be a key is never echoed (issue 21, item 11): not in a config error (it names the file, the
line and the key, and shows the value only when it cannot be a key), not in a UAPI refusal the daemon logs
(whatever line the key is on, the first one included), not in a hook command echoed or reported. The namespace
side (the daemon's log and stderr): tests/integration/test_key_material_logs.py."""

from __future__ import annotations

import base64
import os

import pytest

from wgpy import config as cfgmod
from wgpy.protocol.device import Device
from wgpy.quick import hooks
from wgpy.quick.down import check_interface_name
from wgpy.settings import values
from wgpy.uapi import protocol as uapi

PRIV = bytes(range(32))
B64 = base64.b64encode(PRIV).decode()
HEX = PRIV.hex()
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PATH = "/etc/wireguard/wg0.conf"


def _texts(key: bytes = PRIV) -> list[str]:
    b64 = base64.b64encode(key).decode()
    return [b64, b64[:-1], b64[4:36], key.hex(), key.hex().upper(), key.hex()[8:48]]


def _assert_clean(text: str) -> None:
    for t in _texts():
        assert t not in text, f"key material ({t[:10]}...) in: {text}"


def _parse(interface: str = "", peer: str = "") -> cfgmod.InterfaceConfig:
    return cfgmod.parse(f"[Interface]\nPrivateKey = {B64}\n{interface}\n[Peer]\nPublicKey = {PEER}\n{peer}\n",
                        PATH)


INTERFACE_VALUES = [
    ("Address", B64), ("Address", f"10.0.0.1/24, {B64}"), ("Address", HEX), ("DNS", B64), ("DNS", f"1.1.1.1 {B64}"),
    ("MTU", B64), ("MTU", HEX), ("ListenPort", B64), ("FwMark", B64), ("Table", B64),
    ("SaveConfig", B64), ("Mode", B64), ("User", HEX), ("MTUProbeInterval", B64), ("Masquerade", B64),
    ("ListenTCP", B64),
]
PEER_VALUES = [
    ("Endpoint", B64), ("Endpoint", f"{B64}:51820"), ("Endpoint", f"[{B64}]:51820"), ("Endpoint", f"{HEX}:51820"),
    ("Endpoint", f"tcp://{B64}:443"), ("Endpoint", f"tls://{HEX}:443"), ("AllowedIPs", B64),
    ("AllowedIPs", f"10.0.0.0/8, {HEX}"), ("PersistentKeepalive", B64), ("FallbackEndpoint", B64),
    ("TLSServerName", HEX), ("FallbackAfter", B64),
]


@pytest.mark.parametrize("key, value", INTERFACE_VALUES)
def test_a_key_in_an_interface_value_is_not_echoed(key, value):
    with pytest.raises(cfgmod.ConfigError) as e:
        _parse(interface=f"{key} = {value}")
    assert (e.value.path, e.value.line, e.value.key) == (PATH, 3, key)
    assert str(e.value).startswith(f"{PATH}:3: {key}: ")
    _assert_clean(str(e.value))


@pytest.mark.parametrize("key, value", PEER_VALUES)
def test_a_key_in_a_peer_value_is_not_echoed(key, value):
    with pytest.raises(cfgmod.ConfigError) as e:
        _parse(peer=f"{key} = {value}")
    assert (e.value.line, e.value.key) == (6, key)
    _assert_clean(str(e.value))


@pytest.mark.parametrize("key, value, shown", [
    ("MTU", "abc", "'abc'"), ("Address", "10.0.0.300/24", "'10.0.0.300/24'"), ("DNS", "bad_dns!", "'bad_dns!'"),
])
def test_only_a_value_that_could_be_a_key_is_hidden(key, value, shown):
    with pytest.raises(cfgmod.ConfigError) as e:
        _parse(interface=f"{key} = {value}")
    assert shown in str(e.value)                       # a typo is shown, to be found
    with pytest.raises(cfgmod.ConfigError) as e:
        _parse(interface=f"{key} = {value}{HEX}")
    assert values.NOT_SHOWN in str(e.value)
    _assert_clean(str(e.value))


def test_a_private_key_pasted_as_two_peers_public_key_is_not_echoed():
    text = f"[Interface]\nPrivateKey = {PEER}\n[Peer]\nPublicKey = {B64}\n[Peer]\nPublicKey = {B64}\n"
    with pytest.raises(cfgmod.ConfigError) as e:
        cfgmod.parse(text, PATH)
    assert "duplicate peer" in str(e.value) and "line 3" in str(e.value) and e.value.line == 6
    _assert_clean(str(e.value))


def test_could_be_key():
    """A key, a key short of a few characters, or 40 characters of one (a Table holding 64 hex digits passes the
    parser, a table name may be anything: routes.table_of does not echo it either, tests/unit/
    test_full_tunnel_routes.py)."""
    for t in [B64, B64[:-1], B64[:40], HEX, HEX.upper(), HEX[:40], f"a {B64} b"]:
        assert values.could_be_key(t) and values.shown(t) == values.NOT_SHOWN
    for t in ("wg0", "10.0.0.1/24", "vpn.example.com", "2001:db8::1", "a" * 39, "/etc/wireguard/server.key"):
        assert not values.could_be_key(t) and values.shown(t) == repr(t)
    assert values.redact(f"x {B64} y {HEX}") == "x [not shown] y [not shown]"


class _Host:
    def __init__(self):
        self.device = Device(None, rand=os.urandom, wall=lambda: 0.0)
        self.listen_port = 0
        self.fwmark = 0

    def set_listen_port(self, port): pass
    def set_fwmark(self, mark): pass
    parse_endpoint = staticmethod(lambda s: s)
    format_endpoint = staticmethod(str)
    def now(self): return 0.0
    def flush(self, out): pass


@pytest.mark.parametrize("request_text", [
    f"private_key={HEX}\nlisten_port=51820",           # `wg set` text without its set=1 line
    f"private_key={HEX}",
    f"{HEX}",
    f"{B64}=1",
    f"set={HEX}",
    f"get={B64}",
])
def test_a_uapi_request_whose_first_line_holds_a_key_is_logged_without_it(request_text):
    logged: list[str] = []
    reply = uapi.handle_request(request_text, _Host(), logged.append)
    assert reply == f"errno={uapi.EINVAL}\n\n"
    assert len(logged) == 1 and "UAPI request refused: unknown operation" in logged[0]
    _assert_clean(logged[0])


def test_the_operation_name_is_still_named():
    logged: list[str] = []
    uapi.handle_request(f"private_key={HEX}", _Host(), logged.append)
    assert "'private_key'" in logged[0]


def test_a_key_in_a_hook_command_is_not_echoed(capfd):
    with pytest.raises(hooks.UpError) as e:
        hooks.run_hook([f"false {B64}"], "wg0", "PostUp")
    err = capfd.readouterr().err
    assert "[#] false [not shown]" in err
    _assert_clean(err + str(e.value))


def test_a_key_given_as_interface_name_is_not_echoed():
    why = check_interface_name(B64)
    assert why is not None and "invalid interface name" in why
    _assert_clean(why)
