"""Unit checks of the deployment helpers that need no namespace: nft ruleset text, missing nft, preflight refusals."""

from __future__ import annotations

import pytest

from wgpy import config as cfgmod
from wgpy.quick import preflight as pre
from wgpy.quick.hooks import UpError
from wgpy.host import nft

KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def test_table_name_is_an_nft_identifier():
    assert nft.table_name("wg0") == "wgpy_wg0"
    assert nft.table_name("wg-a.b") == "wgpy_wg_x2da_x2eb"


def test_ruleset_replaces_a_stale_table_and_masquerades_only_tunnel_traffic():
    text = nft.ruleset("wg0", ["eth0", "eth1"])
    assert text.startswith("add table inet wgpy_wg0\ndelete table inet wgpy_wg0\n")
    assert 'iifname "wg0" oifname { "eth0", "eth1" } masquerade' in text
    assert "type nat hook postrouting priority srcnat" in text


def _cfg(extra: str) -> cfgmod.InterfaceConfig:
    return cfgmod.parse(f"[Interface]\nPrivateKey = {KEY}\n{extra}\n[Peer]\nPublicKey = {PUB}\n"
                        "AllowedIPs = 10.0.0.2/32\n", "/tmp/wgx0.conf")


def test_missing_nft_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pre, "has_net_admin", lambda: True)
    monkeypatch.setattr(pre.netlink, "link_exists", lambda name: False)
    monkeypatch.setattr(nft, "nft_path", lambda: None)
    with pytest.raises(cfgmod.ConfigError, match=r"Masquerade: needs the `nft` command \(Debian package nftables\)"):
        pre.preflight(_cfg("Masquerade = eth0"))
    with pytest.raises(nft.NftError, match="nftables"):
        nft.Masquerade("wgx0", ["eth0"], ipv6=False).apply()


def test_user_with_dns_is_refused(monkeypatch):
    monkeypatch.setattr(pre, "has_net_admin", lambda: True)
    monkeypatch.setattr(pre.netlink, "link_exists", lambda name: False)
    monkeypatch.setattr(pre.os, "geteuid", lambda: 0)
    with pytest.raises(cfgmod.ConfigError, match="User: cannot be combined with DNS"):
        pre.preflight(_cfg("User = nobody\nDNS = 10.0.0.1"))
    with pytest.raises(cfgmod.ConfigError, match="User: unknown user 'no-such-user-wgpy'"):
        pre.preflight(_cfg("User = no-such-user-wgpy"))


def test_without_cap_net_admin_names_the_capability_and_tuntap(monkeypatch):
    monkeypatch.setattr(pre, "has_net_admin", lambda: False)
    monkeypatch.setattr(pre, "_tun_owner", lambda name: None)
    with pytest.raises(UpError, match=r"needs CAP_NET_ADMIN.*ip tuntap add dev wgx0 mode tun user"):
        pre.preflight(_cfg(""))
