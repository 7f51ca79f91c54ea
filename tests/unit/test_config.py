import ipaddress
import os
import pickle

import pytest

from wgpy import crypto
from wgpy.config import (
    ConfigError, InterfaceConfig, PeerConfig, check_permissions, find_config, interface_name_from_path, load,
    parse, to_uapi,
)

N = ipaddress.ip_network
I = ipaddress.ip_interface


def keypair():
    raw = os.urandom(32)
    _, pub = crypto.dh_generate(raw)
    return raw, pub


def b64(raw):
    return crypto.encode_key(raw)


PRIV, _ = keypair()
_, PUB1 = keypair()
_, PUB2 = keypair()
_, PUB3 = keypair()
PSK = os.urandom(32)

MINIMAL = f"[Interface]\nPrivateKey = {b64(PRIV)}\n"


def peer_text(pub=None, extra=""):
    return f"[Peer]\nPublicKey = {b64(pub or PUB1)}\n{extra}"


def parse_err(text, path="/etc/wireguard/wg0.conf"):
    with pytest.raises(ConfigError) as info:
        parse(text, path)
    return info.value


def assert_err(e, path, line, key, msg_part):
    assert (e.path, e.line, e.key) == (path, line, key)
    assert msg_part in e.message
    s = str(e)
    assert path in s and msg_part in s
    if line is not None:
        assert f"{path}:{line}:" in s
    if key is not None:
        assert f": {key}: " in s


# ------------------------------------------------------------------------------------------ full config

def full_text():
    return f"""\
# wg0 - office VPN
[Interface]
PrivateKey = {b64(PRIV)}   # keep secret
ListenPort = 51820
FwMark = 0x1234
Address = 10.0.0.1/24
Address = fd00::1/64, 10.0.1.1
DNS = 10.0.0.53, fd00::53, corp.example
DNS = lan
MTU = 1420
Table = 1234
PreUp = echo pre-up, with a comma
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PostUp = ip rule add table 1234
PreDown = echo pre-down
PostDown = iptables -D FORWARD -i %i -j ACCEPT
SaveConfig = false

[Peer]
# gateway
PublicKey = {b64(PUB1)}
PresharedKey = {b64(PSK)}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = 198.51.100.7:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {b64(PUB2)}
AllowedIPs = 10.0.0.2/32, fd00::2/128
AllowedIPs = 192.168.5.77/24
Endpoint = [2001:db8::7]:51821

[Peer]
PublicKey = {b64(PUB3)}
AllowedIPs = 10.0.0.3, fd00::3
Endpoint = vpn.example.com:4500
PersistentKeepalive = off
"""


def full_expected(path="/etc/wireguard/wg0.conf"):
    return InterfaceConfig(
        name="wg0",
        path=path,
        private_key=PRIV,
        listen_port=51820,
        fwmark=0x1234,
        addresses=[I("10.0.0.1/24"), I("fd00::1/64"), I("10.0.1.1/32")],
        dns_servers=["10.0.0.53", "fd00::53"],
        dns_search=["corp.example", "lan"],
        mtu=1420,
        table="1234",
        pre_up=["echo pre-up, with a comma"],
        post_up=["iptables -A FORWARD -i %i -j ACCEPT", "ip rule add table 1234"],
        pre_down=["echo pre-down"],
        post_down=["iptables -D FORWARD -i %i -j ACCEPT"],
        save_config=False,
        mode="tun",
        peers=[
            PeerConfig(public_key=PUB1, preshared_key=PSK, endpoint=("198.51.100.7", 51820),
                       allowed_ips=[N("0.0.0.0/0"), N("::/0")], persistent_keepalive=25, line=19),
            PeerConfig(public_key=PUB2, endpoint=("2001:db8::7", 51821),
                       allowed_ips=[N("10.0.0.2/32"), N("fd00::2/128"), N("192.168.5.0/24")], line=27),
            PeerConfig(public_key=PUB3, endpoint=("vpn.example.com", 4500),
                       allowed_ips=[N("10.0.0.3/32"), N("fd00::3/128")], persistent_keepalive=0, line=33),
        ],
    )


def test_full_config():
    assert parse(full_text(), "/etc/wireguard/wg0.conf") == full_expected()


def test_full_config_via_load(tmp_path):
    p = tmp_path / "wg0.conf"
    p.write_text(full_text())
    assert load(str(p)) == full_expected(str(p))


def test_minimal_defaults():
    cfg = parse(MINIMAL)
    assert cfg == InterfaceConfig(name="wg0", path="<string>", private_key=PRIV)
    assert cfg.listen_port is None and cfg.fwmark == 0 and cfg.mtu is None and cfg.table is None
    assert cfg.mode == "tun" and cfg.save_config is False and cfg.peers == []


def test_name_argument_and_path_stem():
    assert parse(MINIMAL, name="office").name == "office"
    assert parse(MINIMAL, "/etc/wireguard/wg-home.conf").name == "wg-home"
    e = parse_err(MINIMAL, "/etc/wireguard/much-too-long-name.conf")
    assert e.path == "/etc/wireguard/much-too-long-name.conf" and "invalid interface name" in e.message
    with pytest.raises(ConfigError):
        parse(MINIMAL, name="bad name")


# ------------------------------------------------------------------------------------- syntax details

def test_case_insensitive_sections_and_keys():
    text = f"""\
[INTERFACE]
privatekey = {b64(PRIV)}
LISTENPORT = 1
mtu = AUTO
mode = TAP
saveconfig = TRUE
table = OFF
fwmark = OFF
[peer]
PUBLICKEY = {b64(PUB1)}
allowedmacs = 02:AA:bb:00:00:01
ENDPOINT = host:1
persistentkeepalive = OFF
"""
    cfg = parse(text)
    assert cfg.listen_port == 1 and cfg.mtu is None and cfg.mode == "tap" and cfg.save_config is True
    assert cfg.table == "off" and cfg.fwmark == 0
    assert cfg.peers == [PeerConfig(PUB1, endpoint=("host", 1), allowed_macs=[bytes.fromhex("02aabb000001")],
                                    line=9)]


def test_comments_whitespace_and_blank_lines():
    text = (f"  # leading comment\n\n[Interface] # trailing comment\n"
            f"PrivateKey={b64(PRIV)}#no space\n\t ListenPort\t=\t7 # seven\r\n"
            f"# PostUp = never\n   \nPostUp = echo a # comment stripped\n[Peer]#x\nPublicKey ={b64(PUB1)}\n")
    cfg = parse(text)
    assert cfg.private_key == PRIV and cfg.listen_port == 7
    assert cfg.post_up == ["echo a"]
    assert cfg.peers[0].public_key == PUB1 and cfg.peers[0].line == 9


def test_lists_accumulate_across_lines():
    text = MINIMAL + ("Address = 10.0.0.1/24,10.0.0.2/24\nAddress=fd00::1/64 , fd00::2\n"
                      "Address = 10.9.9.9/8 10.8.8.8/8\nDNS = 1.1.1.1 example.com,8.8.8.8,\n"
                      + peer_text(extra="AllowedIPs = 10.1.0.0/16,\nAllowedIPs = , 10.2.0.0/16 ,fd01::/16\n"
                                        "AllowedIPs =\n"))
    cfg = parse(text)
    assert cfg.addresses == [I("10.0.0.1/24"), I("10.0.0.2/24"), I("fd00::1/64"), I("fd00::2/128"),
                             I("10.9.9.9/8"), I("10.8.8.8/8")]
    assert cfg.dns_servers == ["1.1.1.1", "8.8.8.8"] and cfg.dns_search == ["example.com"]
    assert cfg.peers[0].allowed_ips == [N("10.1.0.0/16"), N("10.2.0.0/16"), N("fd01::/16")]


def test_hooks_keep_order_and_commas():
    text = MINIMAL + "PostUp = a, b\nPreUp = x\nPostUp = c\nPostDown = d;e\nPreDown = f\nPostUp =\n"
    cfg = parse(text)
    assert cfg.post_up == ["a, b", "c"] and cfg.pre_up == ["x"]
    assert cfg.post_down == ["d;e"] and cfg.pre_down == ["f"]


def test_allowed_ips_host_bits_normalised():
    cfg = parse(MINIMAL + peer_text(extra="AllowedIPs = 10.0.0.1/24, fd00::1234/64, 192.0.2.9, ::1\n"))
    assert cfg.peers[0].allowed_ips == [N("10.0.0.0/24"), N("fd00::/64"), N("192.0.2.9/32"), N("::1/128")]


@pytest.mark.parametrize("value,expected", [("0", 0), ("1", 1), ("4294967295", 0xFFFFFFFF), ("0x10", 16),
                                            ("0XfF", 255), ("off", 0)])
def test_fwmark_values(value, expected):
    assert parse(MINIMAL + f"FwMark = {value}\n").fwmark == expected


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("Off", "off"), ("0", "0"), ("51820", "51820"),
                                            ("main", "main"), ("my_table.1", "my_table.1")])
def test_table_values(value, expected):
    assert parse(MINIMAL + f"Table = {value}\n").table == expected


@pytest.mark.parametrize("value,expected", [("576", 576), ("65535", 65535), ("1280", 1280), ("auto", None)])
def test_mtu_values(value, expected):
    assert parse(MINIMAL + f"MTU = {value}\n").mtu == expected


@pytest.mark.parametrize("value,expected", [
    ("1.2.3.4:51820", ("1.2.3.4", 51820)),
    ("[fd00::1]:51820", ("fd00::1", 51820)),
    ("[FD00:0::0001]:1", ("fd00::1", 1)),
    ("name.example:65535", ("name.example", 65535)),
    ("localhost:53", ("localhost", 53)),
    ("vpn-1.example.org.:1234", ("vpn-1.example.org.", 1234)),
])
def test_endpoint_values(value, expected):
    assert parse(MINIMAL + peer_text(extra=f"Endpoint = {value}\n")).peers[0].endpoint == expected


@pytest.mark.parametrize("value,expected", [("0", 0), ("off", 0), ("25", 25), ("65535", 65535)])
def test_keepalive_values(value, expected):
    text = MINIMAL + peer_text(extra=f"PersistentKeepalive = {value}\n")
    assert parse(text).peers[0].persistent_keepalive == expected


def test_listen_port_zero_and_interface_header_repeated():
    cfg = parse(MINIMAL + peer_text() + "[Interface]\nListenPort = 0\n")
    assert cfg.listen_port == 0 and len(cfg.peers) == 1


def test_key_value_containing_equals_signs():
    # base64 keys end in '='; only the first '=' separates key and value
    assert parse(f"[Interface]\nPrivateKey={b64(PRIV)}").private_key == PRIV


# -------------------------------------------------------------------------------------------- errors

P = "/etc/wireguard/wg0.conf"


def test_unknown_section():
    e = parse_err(MINIMAL + "[Foo]\n", P)
    assert_err(e, P, 3, None, "unknown section [Foo]")
    assert e.message == "unknown section [Foo]"
    assert str(e) == f"{P}:3: unknown section [Foo]"


def test_malformed_section_header():
    assert_err(parse_err(MINIMAL + "[Peer\n", P), P, 3, None, "malformed section header")
    assert_err(parse_err(MINIMAL + "[Peer] junk\n", P), P, 3, None, "malformed section header")


def test_unknown_key():
    e = parse_err(MINIMAL + "ListenPrt = 1\n", P)
    assert_err(e, P, 3, "ListenPrt", "unknown key")
    assert e.message == "unknown key (did you mean ListenPort?)"
    assert str(e) == f"{P}:3: ListenPrt: unknown key (did you mean ListenPort?)"
    e = parse_err(MINIMAL + "Colour = blue\n", P)          # nothing close: no suggestion
    assert e.message == "unknown key" and str(e) == f"{P}:3: Colour: unknown key"


@pytest.mark.parametrize("section,written,meant", [
    ("interface", "listenprt", "ListenPort"),       # case-insensitive, suggested as documented
    ("interface", "Adress", "Address"),
    ("interface", "PrivKey", "PrivateKey"),
    ("interface", "MTUProbeIntervall", "MTUProbeInterval"),
    ("interface", "CertFile", "CertificateFile"),
    ("interface", "ListenTSL", "ListenTLS"),
    ("peer", "AllowedIP", "AllowedIPs"),
    ("peer", "PubKey", "PublicKey"),
    ("peer", "PersistentKeepAlve", "PersistentKeepalive"),
    ("peer", "EndPont", "Endpoint"),
    ("peer", "TLSPinn", "TLSPin"),
    ("peer", "TLSCaFil", "TLSCAFile"),
])
def test_unknown_key_did_you_mean(section, written, meant):
    text = MINIMAL + (peer_text() if section == "peer" else "") + f"{written} = 1\n"
    line = 5 if section == "peer" else 3
    e = parse_err(text, P)
    assert_err(e, P, line, written, f"unknown key (did you mean {meant}?)")
    assert e.message == f"unknown key (did you mean {meant}?)"


def test_unknown_key_never_echoes_the_value():
    secret = b64(os.urandom(32))
    for text in (MINIMAL + f"PrivKey = {secret}\n", MINIMAL + peer_text() + f"PresharedKy = {secret}\n",
                 MINIMAL + f"Bogus = {secret}\n"):
        e = parse_err(text, P)
        assert "unknown key" in e.message and secret not in str(e) and secret[:12] not in repr(e.args)


def test_key_in_wrong_section_is_unknown():
    e = parse_err(MINIMAL + "PublicKey = x\n", P)
    assert_err(e, P, 3, "PublicKey", "unknown key")
    assert e.message == "unknown key in [Interface] (it belongs in the [Peer] section)"
    e = parse_err(MINIMAL + peer_text() + "ListenPort = 1\n", P)
    assert_err(e, P, 5, "ListenPort", "unknown key")
    assert e.message == "unknown key in [Peer] (it belongs in the [Interface] section)"


@pytest.mark.parametrize("written,meant", [("Peers", "Peer"), ("interfaces", "Interface"), ("Intreface", "Interface"),
                                           ("Foo", None)])
def test_unknown_section_did_you_mean(written, meant):
    e = parse_err(MINIMAL + f"[{written}]\n", P)
    hint = f" (did you mean [{meant}]?)" if meant else ""
    assert_err(e, P, 3, None, f"unknown section [{written}]{hint}")
    assert e.message == f"unknown section [{written}]{hint}"


def test_key_outside_section():
    e = parse_err(f"\nListenPort = 1\n{MINIMAL}", P)
    assert_err(e, P, 2, "ListenPort", "outside any section")


def test_line_without_equals():
    e = parse_err(MINIMAL + "ListenPort 51820\n", P)
    assert_err(e, P, 3, None, "expected 'Key = Value'")
    assert_err(parse_err(MINIMAL + " = 5\n", P), P, 3, None, "missing key")
    assert_err(parse_err(MINIMAL + "Listen Port = 5\n", P), P, 3, None, "malformed key")
    assert_err(parse_err(MINIMAL + "Listen:Port = 5\n", P), P, 3, None, "malformed key")


@pytest.mark.parametrize("key,value,msg", [
    ("ListenPort", "65536", "out of range"),
    ("ListenPort", "-1", "invalid port"),
    ("ListenPort", "http", "invalid port"),
    ("ListenPort", "", "invalid port"),
    ("ListenPort", "5_1", "invalid port"),
    ("ListenPort", "9" * 5000, "invalid port"),
    ("FwMark", "4294967296", "out of range"),
    ("FwMark", "0x", "invalid fwmark"),
    ("FwMark", "0x123456789", "invalid fwmark"),
    ("FwMark", "0xzz", "invalid fwmark"),
    ("FwMark", "mark", "invalid fwmark"),
    ("MTU", "575", "out of range"),
    ("MTU", "65536", "out of range"),
    ("MTU", "big", "invalid MTU"),
    ("Table", "my table", "invalid table"),
    ("Table", "4294967296", "out of range"),
    ("Table", "", "invalid table"),
    ("SaveConfig", "yes", "invalid boolean 'yes' (expected true or false)"),
    ("Mode", "tan", "invalid mode 'tan' (expected tun or tap)"),
    ("Address", "10.0.0.1/33", "invalid address"),
    ("Address", "10.0.0.256", "invalid address"),
    ("Address", "10.0.0.1/255.255.255.0", "invalid address"),
    ("Address", "fd00::1/129", "invalid address"),
    ("Address", "10.0.0.1/", "invalid address"),
    ("DNS", "1.2.3", "invalid DNS"),
    ("DNS", "bad/domain", "invalid DNS"),
])
def test_bad_interface_values(key, value, msg):
    e = parse_err(MINIMAL + "\n" + f"{key} = {value}\n", P)
    assert_err(e, P, 4, key, msg)


@pytest.mark.parametrize("key,value,msg", [
    ("AllowedIPs", "10.0.0.0/33", "invalid CIDR"),
    ("AllowedIPs", "10.0.0.0/8 10.1.0.0/16", "invalid CIDR"),
    ("AllowedIPs", "fd00::/64, nonsense", "invalid CIDR"),
    ("AllowedIPs", "10.0.0.0/-1", "invalid CIDR"),
    ("Endpoint", "1.2.3.4", "expected host:port"),
    ("Endpoint", ":51820", "expected host:port"),
    ("Endpoint", "1.2.3.4:0", "out of range"),
    ("Endpoint", "1.2.3.4:65536", "out of range"),
    ("Endpoint", "1.2.3.4:", "invalid port"),
    ("Endpoint", "1.2.3.4:port", "invalid port"),
    ("Endpoint", "1.2.3.999:1", "invalid IPv4"),
    ("Endpoint", "fd00::1:51820", "write IPv6 addresses as [address]:port"),
    ("Endpoint", "[fd00::1]51820", "expected [address]:port"),
    ("Endpoint", "[1.2.3.4]:1", "invalid IPv6"),
    ("Endpoint", "[zz::1]:1", "invalid IPv6"),
    ("Endpoint", "bad_-host!:1", "invalid host name"),
    ("Endpoint", "-bad.example:1", "invalid host name"),
    ("PersistentKeepalive", "65536", "out of range"),
    ("PersistentKeepalive", "on", "invalid persistent keepalive"),
    ("PresharedKey", "not-a-key", "invalid key"),
    ("PublicKey", "AAAA", "duplicate key"),  # the second PublicKey line of the same peer
])
def test_bad_peer_values(key, value, msg):
    e = parse_err(MINIMAL + peer_text() + f"{key} = {value}\n", P)
    assert_err(e, P, 5, key, msg)


@pytest.mark.parametrize("bad", ["", "abc", "A" * 44, "A" * 42 + "==", "!" * 43 + "=", crypto.encode_key(b"x" * 31),
                                 crypto.encode_key(b"x" * 33)])
def test_bad_private_key_value_not_leaked(bad):
    e = parse_err(f"[Interface]\nPrivateKey = {bad}\n", P)
    assert_err(e, P, 2, "PrivateKey", "invalid key")
    assert e.message == "invalid key"
    if bad:
        assert bad not in str(e) and bad not in repr(e)


def test_bad_public_key():
    e = parse_err(MINIMAL + "[Peer]\nPublicKey = " + "B" * 44 + "\n", P)
    assert_err(e, P, 4, "PublicKey", "invalid key")


def test_missing_private_key():
    e = parse_err("[Interface]\nListenPort = 1\n" + peer_text(), P)
    assert_err(e, P, None, "PrivateKey", "missing")
    assert str(e) == f"{P}: PrivateKey: missing"
    assert_err(parse_err("", P), P, None, "PrivateKey", "missing")


def test_peer_without_public_key():
    text = MINIMAL + peer_text() + "\n[Peer]\nAllowedIPs = 10.0.0.0/8\n" + peer_text(PUB2)
    assert_err(parse_err(text, P), P, 6, "PublicKey", "missing")
    # last section of the file
    assert_err(parse_err(MINIMAL + "[Peer]\nEndpoint = a:1\n", P), P, 3, "PublicKey", "missing")


def test_duplicate_peer_public_key():
    text = MINIMAL + peer_text(PUB1) + peer_text(PUB2) + "# again\n" + peer_text(PUB1)
    e = parse_err(text, P)
    assert_err(e, P, 9, "PublicKey", "duplicate peer")


@pytest.mark.parametrize("key,value", [("PrivateKey", b64(PRIV)), ("ListenPort", "1"), ("FwMark", "1"),
                                       ("MTU", "1420"), ("Table", "off"), ("SaveConfig", "true"), ("Mode", "tap")])
def test_single_valued_interface_key_twice(key, value):
    text = MINIMAL + f"{key} = {value}\n{key} = {value}\n"
    if key == "PrivateKey":
        assert_err(parse_err(text, P), P, 3, key, "duplicate key")
    else:
        assert_err(parse_err(text, P), P, 4, key, "duplicate key")
    # also when the [Interface] header is repeated after a peer
    text = MINIMAL + f"{key} = {value}\n" + peer_text() + f"[interface]\n{key.lower()} = {value}\n"
    line = 3 if key == "PrivateKey" else 7
    assert_err(parse_err(text, P), P, line, key if key == "PrivateKey" else key.lower(), "duplicate key")


@pytest.mark.parametrize("key,value", [("PresharedKey", b64(PSK)), ("Endpoint", "a:1"), ("PersistentKeepalive", "1")])
def test_single_valued_peer_key_twice(key, value):
    text = MINIMAL + peer_text(extra=f"{key} = {value}\n{key.upper()} = {value}\n")
    assert_err(parse_err(text, P), P, 6, key.upper(), "duplicate key")


def test_same_key_in_different_peers_is_fine():
    text = MINIMAL + peer_text(PUB1, "Endpoint = a:1\n") + peer_text(PUB2, "Endpoint = b:2\n")
    assert [p.endpoint for p in parse(text).peers] == [("a", 1), ("b", 2)]


def test_private_key_never_in_any_error():
    secret = b64(PRIV)
    bad_texts = [
        f"[Interface]\nPrivateKey = {secret}\nPrivateKey = {secret}\n",
        f"PrivateKey = {secret}\n",
        f"[Interface]\nPrivateKey {secret}\n",
        f"[Interface]\nPrivateKey = {secret[:-2]}\n",
        f"[Interface]\nPrivateKey = {secret}\nFoo = {secret}\n",
        f"[Interface]\nPrivateKey = {secret}\n[Peer]\nPublicKey = {secret[1:]}\n",
        f"[Interface]\nPrivateKey = {secret}\n[Peer]\nPresharedKey = {secret}\n",
    ]
    for text in bad_texts:
        e = parse_err(text, P)
        for fragment in (secret, secret[:-2], secret[1:], PRIV.hex()):
            assert fragment not in str(e) and fragment not in repr(e.args)


def test_config_error_str_forms_and_attributes():
    assert str(ConfigError("f", 3, "K", "m")) == "f:3: K: m"
    assert str(ConfigError("f", None, "K", "m")) == "f: K: m"
    assert str(ConfigError("f", 3, None, "m")) == "f:3: m"
    assert str(ConfigError("f", None, None, "m")) == "f: m"
    e = ConfigError("f", 3, "K", "m")
    assert (e.path, e.line, e.key, e.message) == ("f", 3, "K", "m")
    assert isinstance(e, Exception)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.line, e2.key, e2.message) == ("f", 3, "K", "m") and str(e2) == str(e)


# ----------------------------------------------------------------------------------------------- load

def test_load_missing_file(tmp_path):
    path = str(tmp_path / "wg9.conf")
    with pytest.raises(ConfigError) as info:
        load(path)
    e = info.value
    assert (e.path, e.line, e.key) == (path, None, None)
    assert e.message.startswith("cannot read: ") and str(e).startswith(f"{path}: cannot read: ")


def test_load_not_utf8(tmp_path):
    p = tmp_path / "wg0.conf"
    p.write_bytes(b"[Interface]\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(p))


def test_load_errors_name_the_file(tmp_path):
    p = tmp_path / "wg1.conf"
    p.write_text(MINIMAL + "Bogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load(str(p))
    assert (info.value.path, info.value.line, info.value.key) == (str(p), 3, "Bogus")
    assert str(info.value).startswith(f"{p}:3: Bogus: ")


def test_load_name_from_file(tmp_path):
    p = tmp_path / "office.conf"
    p.write_text("\ufeff" + MINIMAL)  # a byte order mark is tolerated
    cfg = load(str(p))
    assert cfg.name == "office" and cfg.path == str(p)


# ----------------------------------------------------------------------------------------- permissions

def test_check_permissions(tmp_path):
    p = tmp_path / "wg0.conf"
    p.write_text(MINIMAL)
    os.chmod(p, 0o600)
    assert check_permissions(str(p)) is None
    os.chmod(p, 0o400)
    assert check_permissions(str(p)) is None
    os.chmod(p, 0o644)
    assert check_permissions(str(p)) == f"Warning: `{p}' is world accessible"
    os.chmod(p, 0o602)
    assert check_permissions(str(p)) == f"Warning: `{p}' is world accessible"
    assert check_permissions(str(tmp_path / "missing.conf")) is None


@pytest.mark.parametrize("mode", [0o640, 0o620, 0o660, 0o610, 0o440])
def test_check_permissions_group(tmp_path, mode):
    """Readable or writable by the group draws the warning too (README: group or others), in wg-quick's words."""
    p = tmp_path / "wg0.conf"
    p.write_text(MINIMAL)
    os.chmod(p, mode)
    assert check_permissions(str(p)) == f"Warning: `{p}' is group accessible"
    os.chmod(p, mode | 0o004)                      # others too: the world warning, as wg-quick's
    assert check_permissions(str(p)) == f"Warning: `{p}' is world accessible"


# ------------------------------------------------------------------------------------- finding NAME.conf

@pytest.fixture
def conf_dirs(tmp_path):
    dirs = (tmp_path / "etc-wireguard", tmp_path / "etc-wgpy")
    for d in dirs:
        d.mkdir()
    return tuple(str(d) for d in dirs)


def test_find_config_bare_name_looks_in_order(conf_dirs):
    first, second = conf_dirs
    with open(os.path.join(second, "wg0.conf"), "w") as f:
        f.write(MINIMAL)
    assert find_config("wg0", conf_dirs) == os.path.join(second, "wg0.conf")
    with open(os.path.join(first, "wg0.conf"), "w") as f:
        f.write(MINIMAL)
    assert find_config("wg0", conf_dirs) == os.path.join(first, "wg0.conf")   # /etc/wireguard wins, as wg-quick
    assert load(find_config("wg0", conf_dirs)).name == "wg0"


def test_find_config_missing_name_lists_where_it_looked(conf_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        find_config("office", conf_dirs)
    e = info.value
    tried = [os.path.join(d, "office.conf") for d in conf_dirs]
    assert (e.path, e.line, e.key) == ("office", None, None)
    assert str(e) == f"office: no configuration file for interface office: looked for {tried[0]}, {tried[1]}"
    (tmp_path / "office").write_text(MINIMAL)      # a file of that name here: say how to use it
    with pytest.raises(ConfigError, match=r"write \./office\)$"):
        find_config("office", conf_dirs)


def test_find_config_default_dirs_are_wg_quicks_then_wgpys():
    from wgpy import config
    assert config.CONFIG_DIRS == ("/etc/wireguard", "/etc/wgpy")


@pytest.mark.parametrize("arg", ["./wg0", "wg0.conf", "/x/wg0.conf", "rel/dir/wg0", "../wg0", "a" * 16])
def test_find_config_paths_are_taken_as_they_are(conf_dirs, arg):
    """A '/' or a .conf ending makes it a path (wgpy up wg0.conf keeps reading ./wg0.conf), and so does
    anything that cannot be an interface name; load() then reports what is wrong with it."""
    with open(os.path.join(conf_dirs[0], "wg0.conf"), "w") as f:
        f.write(MINIMAL)
    assert find_config(arg, conf_dirs) == arg


# -------------------------------------------------------------------------------------- interface names

@pytest.mark.parametrize("path,name", [
    ("/etc/wireguard/wg0.conf", "wg0"),
    ("wg0.conf", "wg0"),
    ("relative/dir/office-vpn.conf", "office-vpn"),
    ("/x/a.b_c=d+e.conf", "a.b_c=d+e"),
    ("/x/" + "a" * 15 + ".conf", "a" * 15),
    ("/x/wg1", "wg1"),
    ("/x/wg2.cfg", "wg2"),
])
def test_interface_name_from_path(path, name):
    assert interface_name_from_path(path) == name


@pytest.mark.parametrize("path", ["/x/" + "a" * 16 + ".conf", "/x/.conf", "/x/bad name.conf", "/x/wg/0.conf/",
                                  "/x/w:g.conf", "/x/..conf", "/x/wg\u00e9.conf", ""])
def test_interface_name_from_path_invalid(path):
    with pytest.raises(ConfigError) as info:
        interface_name_from_path(path)
    assert info.value.path == path and info.value.line is None and info.value.key is None
    assert "invalid interface name" in str(info.value)


# ------------------------------------------------------------------------------------------------ UAPI

def test_to_uapi_full():
    cfg = parse(full_text(), P)
    expected = (
        f"private_key={PRIV.hex()}\n"
        "listen_port=51820\n"
        "fwmark=4660\n"
        "replace_peers=true\n"
        f"public_key={PUB1.hex()}\n"
        f"preshared_key={PSK.hex()}\n"
        "endpoint=198.51.100.7:51820\n"
        "persistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=0.0.0.0/0\n"
        "allowed_ip=::/0\n"
        f"public_key={PUB2.hex()}\n"
        "endpoint=[2001:db8::7]:51821\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.2/32\n"
        "allowed_ip=fd00::2/128\n"
        "allowed_ip=192.168.5.0/24\n"
        f"public_key={PUB3.hex()}\n"
        "endpoint=203.0.113.9:4500\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.3/32\n"
        "allowed_ip=fd00::3/128\n"
    )
    assert to_uapi(cfg, {2: "203.0.113.9:4500"}) == expected
    # a bare resolved address takes the configured port
    assert to_uapi(cfg, {2: "203.0.113.9"}) == expected
    assert "endpoint=[2001:db8::9]:4500\n" in to_uapi(cfg, {2: "2001:db8::9"})
    assert "endpoint=[2001:db8::9]:99\n" in to_uapi(cfg, {2: "[2001:db8::9]:99"})
    # unresolved: the configured host as written
    assert "endpoint=vpn.example.com:4500\n" in to_uapi(cfg)
    assert to_uapi(cfg).endswith("allowed_ip=fd00::3/128\n")
    assert "set=1" not in to_uapi(cfg) and not to_uapi(cfg).endswith("\n\n")


def test_to_uapi_minimal():
    cfg = parse(MINIMAL + peer_text())
    assert to_uapi(cfg) == (f"private_key={PRIV.hex()}\nreplace_peers=true\n"
                            f"public_key={PUB1.hex()}\nreplace_allowed_ips=true\n")


def test_to_uapi_listen_port_zero_and_no_fwmark():
    cfg = parse(MINIMAL + "ListenPort = 0\nFwMark = off\n")
    assert to_uapi(cfg) == f"private_key={PRIV.hex()}\nlisten_port=0\nreplace_peers=true\n"


def test_to_uapi_keys_are_lowercase_hex():
    cfg = InterfaceConfig(name="wg0", path="x", private_key=b"\xab" * 32,
                          peers=[PeerConfig(public_key=b"\xcd" * 32, preshared_key=b"\xef" * 32)])
    out = to_uapi(cfg)
    assert "private_key=" + "ab" * 32 + "\n" in out
    assert "public_key=" + "cd" * 32 + "\n" in out and "preshared_key=" + "ef" * 32 + "\n" in out


def test_to_uapi_rejects_injection_in_resolved_endpoint():
    cfg = parse(MINIMAL + peer_text(extra="Endpoint = a:1\n"))
    with pytest.raises(ValueError):
        to_uapi(cfg, {0: "1.2.3.4:5\nprivate_key=00"})


# ---- wgpy extensions for deployments: Masquerade, User ------------------------------------------------------

def test_masquerade_and_user():
    cfg = parse(MINIMAL + "Masquerade = eth0\nMasquerade = ens3, wlan0\nUser = alice\n", P)
    assert cfg.masquerade == ["eth0", "ens3", "wlan0"]
    assert cfg.user == "alice"
    assert parse(MINIMAL + "User = 65534\n", P).user == "65534"
    cfg = parse(MINIMAL, P)
    assert cfg.masquerade == [] and cfg.user is None


@pytest.mark.parametrize("key,value,msg", [
    ("Masquerade", "", "expected one or more interface names"),
    ("Masquerade", "eth0, a-name-too-long-for-linux", "invalid interface name"),
    ("Masquerade", "eth/0", "invalid interface name"),
    ("User", "", "invalid user name"),
    ("User", "al ice", "invalid user name"),
    ("User", "-root", "invalid user name"),
    ("User", "a" * 40, "invalid user name"),
])
def test_bad_deployment_values(key, value, msg):
    e = parse_err(MINIMAL + "\n" + f"{key} = {value}\n", P)
    assert_err(e, P, 4, key, msg)


def test_user_given_twice():
    e = parse_err(MINIMAL + "User = a\nUser = b\n", P)
    assert_err(e, P, 4, "User", "duplicate key")
