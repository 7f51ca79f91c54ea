"""wg-quick's routing, the parts that need no namespace (issue 21, item 9): table names as ip reads them, the order
of the allowed IPs, which routes the main table already covers, the rule messages as `ip rule add` packs them.
The rules themselves are compared with wg-quick's in tests/integration/test_full_tunnel_rules.py."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from wgpy import config as cfgmod
from wgpy.host import fulltunnel, netlink, rt_tables
from wgpy.quick import routes

KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def _cfg(interface: str = "", allowed: str = "0.0.0.0/0") -> cfgmod.InterfaceConfig:
    return cfgmod.parse(f"[Interface]\nPrivateKey = {KEY}\n{interface}\n[Peer]\nPublicKey = {PEER}\n"
                        f"AllowedIPs = {allowed}\n", "/etc/wireguard/wg0.conf")


# ---- rt_tables ---------------------------------------------------------------------------------------------

def _dirs(tmp_path, main: str | None = None, conf: dict[str, str] | None = None, usr: str | None = None):
    etc, share = tmp_path / "etc", tmp_path / "share"
    for d in (etc, share):
        (d / "rt_tables.d").mkdir(parents=True)
    if main is not None:
        (etc / "rt_tables").write_text(main)
    if usr is not None:
        (share / "rt_tables").write_text(usr)
    for name, text in (conf or {}).items():
        (etc / "rt_tables.d" / name).write_text(text)
    return (str(etc), str(share))


def test_names_from_rt_tables_and_rt_tables_d(tmp_path):
    dirs = _dirs(tmp_path, "# reserved\n255\tlocal\n254\tmain\n\n  100 isp1  # the first uplink\n0x20 hex\n",
                 {"vpn.conf": "200\tvpn\n", "ignored.txt": "201 notread\n"})
    assert rt_tables.lookup("isp1", dirs) == 100
    assert rt_tables.lookup("hex", dirs) == 32
    assert rt_tables.lookup("vpn", dirs) == 200
    assert rt_tables.lookup("main", dirs) == 254 and rt_tables.lookup("default", dirs) == 253   # built in
    with pytest.raises(rt_tables.UnknownTable, match="rt_tables"):
        rt_tables.lookup("notread", dirs)


def test_the_distribution_file_only_without_one_in_etc(tmp_path):
    assert rt_tables.lookup("dist", _dirs(tmp_path, None, usr="150 dist\n")) == 150
    with pytest.raises(rt_tables.UnknownTable):
        rt_tables.lookup("dist", _dirs(tmp_path / "b", "1 other\n", usr="150 dist\n"))


def test_a_malformed_line_ends_its_file_and_is_named(tmp_path):
    dirs = _dirs(tmp_path, "100 before\nthis is not a table\n101 after\n")
    assert rt_tables.lookup("before", dirs) == 100
    with pytest.raises(rt_tables.UnknownTable, match=r"rt_tables:2 is not 'NUMBER NAME'"):
        rt_tables.lookup("after", dirs)


@pytest.mark.parametrize("text, number", [("1234", 1234), ("0x4d2", 1234), ("0X4D2", 1234), ("010", 8),
                                          ("0", 0), ("4294967295", 4294967295)])
def test_numbers_as_ip_reads_them(tmp_path, text, number):
    assert rt_tables.lookup(text, _dirs(tmp_path, "")) == number


@pytest.mark.parametrize("text", ["4294967296", "0x100000000", "08", "vpn"])
def test_not_a_table(tmp_path, text):
    with pytest.raises(rt_tables.UnknownTable):
        rt_tables.lookup(text, _dirs(tmp_path, ""))


def test_an_unknown_name_is_a_config_error_naming_file_line_and_key(monkeypatch, tmp_path):
    monkeypatch.setattr(rt_tables, "DIRS", _dirs(tmp_path, "100 isp1\n"))
    monkeypatch.setattr(rt_tables.lookup, "__defaults__", (rt_tables.DIRS,))
    cfg = _cfg("Table = nosuch")
    with pytest.raises(cfgmod.ConfigError) as e:
        routes.table_of(cfg)
    assert (e.value.path, e.value.line, e.value.key) == ("/etc/wireguard/wg0.conf", 3, "Table")
    assert "unknown routing table 'nosuch'" in str(e.value)
    assert routes.table_of(_cfg("Table = isp1")) == 100


def test_a_key_typed_as_table_name_is_not_echoed():
    hexkey = "ab" * 32
    with pytest.raises(cfgmod.ConfigError) as e:
        routes.table_of(_cfg(f"Table = {hexkey}"))
    assert hexkey not in str(e.value) and "not shown" in str(e.value)


@pytest.mark.parametrize("interface, allowed, expected", [
    ("", "0.0.0.0/0", "auto"), ("Table = auto", "::/0", "auto"), ("Table = off", "0.0.0.0/0", "off"),
    ("Table = 1234", "0.0.0.0/0", 1234), ("Table = main", "0.0.0.0/0", 254), ("Table = default", "::/0", 253),
])
def test_table_of_and_full_tunnel(interface, allowed, expected):
    cfg = _cfg(interface, allowed)
    assert routes.table_of(cfg) == expected
    assert routes.full_tunnel(cfg) == (expected == "auto")      # Table = main is no full tunnel (wg-quick)


# ---- order and coverage --------------------------------------------------------------------------------------

def test_wg_quicks_order():
    """`sort -nr -k 2 -t /` in the C locale: the prefix length, longest first, then the text, descending (the
    expected list is what `LC_ALL=C sort -nr -k 2 -t /` prints for these lines)."""
    cfg = _cfg(allowed="0.0.0.0/0, ::/0, 10.10.0.0/16, 10.9.0.5/32, fd10::/48, 10.2.0.0/16, 192.168.0.0/16")
    assert [str(n) for n in routes.ordered(cfg)] == [
        "fd10::/48", "10.9.0.5/32", "192.168.0.0/16", "10.2.0.0/16", "10.10.0.0/16", "::/0", "0.0.0.0/0"]


def test_a_route_on_the_link_covers_what_it_contains():
    on_link = [ipaddress.ip_network("10.9.0.0/24"), ipaddress.ip_network("fd09::/64")]
    covered = routes._covered
    assert covered(ipaddress.ip_network("10.9.0.5/32"), on_link)
    assert covered(ipaddress.ip_network("10.9.0.0/24"), on_link)
    assert not covered(ipaddress.ip_network("10.9.0.0/23"), on_link)
    assert not covered(ipaddress.ip_network("10.9.1.0/24"), on_link)
    assert covered(ipaddress.ip_network("fd09::1:2/128"), on_link)
    assert not covered(ipaddress.ip_network("fd10::/48"), on_link)


def test_the_table_is_the_fwmark_or_the_first_without_routes(monkeypatch):
    busy = {51820, 51821}
    monkeypatch.setattr(netlink, "table_has_routes", lambda t: t in busy)
    assert routes.choose_table(0) == 51822
    assert routes.choose_table(0x1234) == 0x1234


# ---- messages ------------------------------------------------------------------------------------------------

def _unpack_rule(body: bytes):
    hdr = struct.unpack_from("=BBBBBBBBI", body)
    return hdr, netlink._attrs(body, 12)


def test_rules_as_ip_rule_add_packs_them():
    """`ip rule add not fwmark 51820 table 51820`: no priority (the kernel picks it), the mark without a mask,
    a table over 255 as FRA_TABLE; `ip rule add table main suppress_prefixlength 0`: FRA_SUPPRESS_PREFIXLEN,
    which pyroute2's `suppress_prefixlength=` keyword silently left out."""
    hdr, attrs = _unpack_rule(netlink._rule_body(socket.AF_INET, 51820, None, 51820, True, None))
    assert hdr == (socket.AF_INET, 0, 0, 0, 0, 0, 0, netlink.FR_ACT_TO_TBL, netlink.FIB_RULE_INVERT)
    assert attrs == {netlink.FRA_FWMARK: struct.pack("=I", 51820), netlink.FRA_TABLE: struct.pack("=I", 51820)}
    hdr, attrs = _unpack_rule(netlink._rule_body(socket.AF_INET6, 254, None, None, False, 0))
    assert hdr == (socket.AF_INET6, 0, 0, 0, 254, 0, 0, netlink.FR_ACT_TO_TBL, 0)
    assert attrs == {netlink.FRA_SUPPRESS_PREFIXLEN: struct.pack("=I", 0)}
    _, attrs = _unpack_rule(netlink._rule_body(socket.AF_INET, 254, 32764, None, False, 0))
    assert attrs[netlink.FRA_PRIORITY] == struct.pack("=I", 32764)          # the delete names its rule


def test_the_full_tunnel_nft_table_is_wg_quicks():
    text = fulltunnel.ruleset("wg0", 6, 51820, ["fd09::2"])
    assert 'add rule ip6 wgpy-quick-wg0 preraw iifname != "wg0" ip6 daddr fd09::2 fib saddr type != local drop' \
        in text
    assert "add chain ip6 wgpy-quick-wg0 preraw { type filter hook prerouting priority -300; }" in text
    assert "postmangle meta l4proto udp mark 51820 ct mark set mark" in text
    assert "premangle meta l4proto udp meta mark set ct mark" in text
    assert fulltunnel.table_name("wg+0") == "wgpy-quick-wg_x2b0"     # apart from Masquerade's wgpy_ tables
