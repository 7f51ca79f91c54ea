"""Routes, policy rules and nftables of `wgpy up`, compared with wg-quick's, rule by rule (issue 21, item 9).

The same configuration is brought up once by the real `wg-quick up` (wireguard-tools, with Debian's wireguard-go
as the userspace implementation: this kernel has no WireGuard module) and once by `wgpy up`, in the same
namespace one after the other, and what each leaves on the host while it is up must be identical:

  * `ip -d -4 rule` and `ip -d -6 rule` (order, priorities, `not fwmark`, `suppress_prefixlength 0`, protocol);
  * every route of every table (`ip route show table all`, both families);
  * `nft list ruleset` (wg-quick's full-tunnel table: anti-spoofing of the tunnel's addresses, the fwmark's
    connmark), the table name aside;
  * net.ipv4.conf.all.src_valid_mark, the interface's fwmark;
  * where an on-link LAN address, an Internet address and the tunnel's own (marked) packets go.

New links in the namespace get no IPv6 link-local address (addr_gen_mode 1), so wireguard-go's TUN has none,
like a kernel WireGuard interface and wgpy's; the LAN's is compared as `fe80::LL`. The namespace has a LAN
(a veth, 192.168.50.2/24 and 2001:db8:50::2/64) with default routes through it; nothing leaves the namespace.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import shutil
import time
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (gen_keypair, link_exists, read_sysctl, run, unique_iface, wait_for,
                                 write_config)

pytestmark = pytest.mark.netns

QUICK_ENV = {"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go", "LC_ALL": "C", "WG_HIDE_KEYS": "always"}
LAN_ADDR = "192.168.50.7"          # an on-link LAN host (printer, NAS): must stay out of a full tunnel
FAR_ADDR = "198.51.100.9"          # somewhere on the Internet: into the full tunnel
RT_TABLES_D = Path("/etc/iproute2/rt_tables.d")

FULL = ["0.0.0.0/0", "::/0", "10.10.0.0/16", "10.9.0.5/32", "fd10::/48"]
SPLIT = ["10.10.0.0/16", "10.9.0.5/32", "fd10::/48"]


def _lan_namespace(lab) -> tuple[str, str]:
    """(namespace, its LAN interface): a veth to a LAN namespace holding the gateway .1 / ::1."""
    ns, lan_side = lab.netns(), lab.netns()
    dev, _ = lab.veth(ns, lan_side, "192.168.50.2/24", "192.168.50.1/24")
    lab.add_address(ns, dev, "2001:db8:50::2/64")
    lab.add_address(lan_side, _, "2001:db8:50::1/64")
    run(ns, "ip", "route", "add", "default", "via", "192.168.50.1")
    run(ns, "ip", "-6", "route", "add", "default", "via", "2001:db8:50::1")

    def settled() -> bool:        # the LAN's own link-local address, so the baseline does not change under us
        out = run(ns, "ip", "-6", "addr", "show", "dev", dev).stdout
        return "fe80::" in out and "tentative" not in out
    wait_for(settled, 10, what=f"{dev}'s link-local address")
    # new links get no IPv6 link-local address: wireguard-go's TUN then has none, like a kernel WireGuard
    # interface and wgpy's (daemon.py _no_link_local); otherwise wg-quick's IPv6 anti-spoofing rules and the
    # routes would hold one address more, an artefact of the userspace stand-in
    run(ns, "sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=1")
    return ns, dev


def _config(allowed: list[str], extra: list[str] = ()) -> str:
    return "\n".join(["[Interface]", f"PrivateKey = {gen_keypair().private}",
                      "Address = 10.9.0.2/24, fd09::2/64", *extra, "",
                      "[Peer]", f"PublicKey = {gen_keypair().public}", f"AllowedIPs = {', '.join(allowed)}",
                      "Endpoint = 192.168.50.1:51820", ""])


def _normalise(text: str, iface: str) -> str:
    text = re.sub(r"fe80::[0-9a-f:]+", "fe80::LL", text)
    text = text.replace(f"wg-quick-{iface}", "TABLE").replace(f"wgpy-quick-{iface}", "TABLE")
    return "\n".join(line.rstrip() for line in text.splitlines() if "cache" not in line)


def _state(ns: str, iface: str) -> dict[str, str]:
    st = {}
    for fam in ("-4", "-6"):
        st[f"ip {fam} rule"] = run(ns, "ip", "-d", fam, "rule", "show").stdout
        st[f"ip {fam} route table all"] = run(ns, "ip", fam, "route", "show", "table", "all").stdout
    st["nft"] = run(ns, "nft", "list", "ruleset").stdout
    st["src_valid_mark"] = read_sysctl(ns, "net.ipv4.conf.all.src_valid_mark")
    st["fwmark"] = run(ns, "wg", "show", iface, "fwmark").stdout
    fwmark = st["fwmark"].strip()
    for dst in (LAN_ADDR, FAR_ADDR, "2001:db8:50::7", "2001:db8:99::9", "10.10.1.1", "10.9.0.5"):
        st[f"route get {dst}"] = run(ns, "ip", "route", "get", dst, check=False).stdout
        if fwmark != "off":
            st[f"route get {dst} mark"] = run(ns, "ip", "route", "get", dst, "mark", fwmark, check=False).stdout
    return {k: _normalise(v, iface) for k, v in st.items()}


def _baseline(ns: str) -> dict[str, str]:
    return {f"ip {fam} rule": run(ns, "ip", fam, "rule").stdout for fam in ("-4", "-6")} | \
        {"nft": run(ns, "nft", "list", "ruleset").stdout,
         "routes": run(ns, "ip", "route", "show", "table", "all").stdout}


def _quick(lab, ns: str, conf: Path, verb: str, prefix: list[str]) -> subprocess.CompletedProcess:
    iface = conf.stem
    if verb == "up":
        lab.ifaces[iface] = ns
        lab.defer(f"ip link del {iface}", lambda: link_exists(ns, iface) and
                  run(ns, "ip", "link", "del", iface, check=False))
    return run(None, *prefix, "ip", "netns", "exec", ns, "wg-quick", verb, conf, env=QUICK_ENV, timeout=30,
               check=False)


def _gone(iface: str) -> bool:
    return not (netlab.UAPI_DIR / f"{iface}.sock").exists()


def _both(lab, ns: str, text: str, prefix: list[str] = ()) -> tuple[dict, dict, object, object]:
    """(wg-quick's state, wgpy's state, wg-quick's up result, wgpy's up result); a state is None when that up
    failed. The host is back to its baseline after each."""
    iface = unique_iface()
    conf = write_config(lab.tmp, iface, text)
    prefix = list(prefix)
    base = _baseline(ns)
    q_up = _quick(lab, ns, conf, "up", prefix)
    q_state = None
    if q_up.returncode == 0:
        q_state = _state(ns, iface)
        res = _quick(lab, ns, conf, "down", prefix)
        assert res.returncode == 0, res.stderr
    wait_for(lambda: _gone(iface) and not link_exists(ns, iface), 10, what="wg-quick's interface to go")
    assert _baseline(ns) == base, "wg-quick down did not restore the host"

    lab._register_wgpy_iface(ns, iface)
    w_up = run(None, *prefix, "ip", "netns", "exec", ns, netlab.WGPY, "up", conf, timeout=30, check=False)
    w_state = None
    if w_up.returncode == 0:
        w_state = _state(ns, iface)
        res = lab.wgpy(ns, "down", iface, timeout=30)
        assert res.returncode == 0, res.stderr
    wait_for(lambda: _gone(iface) and not link_exists(ns, iface), 10, what="wgpy's interface to go")
    after = _baseline(ns)
    assert after == base, "wgpy down (or a failed up) did not restore the host: " + "".join(
        difflib.unified_diff(base["routes"].splitlines(True), after["routes"].splitlines(True)))
    return q_state, w_state, q_up, w_up


def _assert_same(q_state: dict, w_state: dict, q_up, w_up) -> None:
    assert q_state is not None, f"wg-quick up failed: {q_up.stderr}"
    assert w_state is not None, f"wgpy up failed: {w_up.stderr}"
    for key in q_state:
        assert w_state[key] == q_state[key], f"{key} differs:\n--- wg-quick\n{q_state[key]}\n--- wgpy\n{w_state[key]}"


def _rt_tables_prefix(lab, names: dict[str, int]) -> list[str]:
    """A private mount namespace in which /etc/iproute2/rt_tables.d holds `names` (the host's stays as it is)."""
    d = lab.tmp / "rt_tables.d"
    d.mkdir()
    (d / "wgpyt.conf").write_text("".join(f"{n}\t{name}\n" for name, n in names.items()))
    if not RT_TABLES_D.is_dir():
        pytest.skip(f"{RT_TABLES_D} does not exist to mount over")
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /etc/iproute2/rt_tables.d && exec "$@"', str(d)]


@pytest.fixture
def lan(lab):
    lab.require_real_wgpy("wg-quick's routing rules")
    for tool in ("wg-quick", "nft", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    return _lan_namespace(lab)[0]


@pytest.mark.parametrize("extra", [[], ["Table = auto"], ["FwMark = 0x1234"]], ids=["default", "auto", "fwmark"])
def test_full_tunnel_is_wg_quicks(lab, lan, extra):
    q_state, w_state, q_up, w_up = _both(lab, lan, _config(FULL, extra))
    _assert_same(q_state, w_state, q_up, w_up)
    # what the rules mean: the LAN stays local, the rest goes into the tunnel, the tunnel's packets do not
    assert "dev v" in w_state[f"route get {LAN_ADDR}"], w_state[f"route get {LAN_ADDR}"]
    assert "dev v" in w_state["route get 2001:db8:50::7"], w_state["route get 2001:db8:50::7"]
    assert "dev wgt" in w_state[f"route get {FAR_ADDR}"], w_state[f"route get {FAR_ADDR}"]
    assert "via 192.168.50.1 dev v" in w_state[f"route get {FAR_ADDR} mark"]
    assert "suppress_prefixlength 0" in w_state["ip -4 rule"] and "suppress_prefixlength 0" in w_state["ip -6 rule"]
    assert "iifname != " in w_state["nft"] and w_state["src_valid_mark"] == "1"


def test_full_tunnel_skips_a_table_that_has_routes(lab, lan):
    """wg-quick takes the first table from 51820 up with no route in it (and that number as the fwmark)."""
    run(lan, "ip", "route", "add", "10.99.0.0/24", "via", "192.168.50.1", "table", "51820")
    q_state, w_state, q_up, w_up = _both(lab, lan, _config(FULL))
    _assert_same(q_state, w_state, q_up, w_up)
    assert w_state["fwmark"] == "0xca6d" and "lookup 51821" in w_state["ip -4 rule"]


def test_on_link_lan_stays_out_of_a_full_tunnel(lab, lan):
    """The printer on the LAN: `ip route get` gives the LAN interface, not the tunnel, while a full tunnel is up
    (the main table wins for anything more specific than a default route); the Internet goes into the tunnel."""
    iface = unique_iface()
    lab.wgpy_up(lan, write_config(lab.tmp, iface, _config(FULL)))
    for lan_host, far in ((LAN_ADDR, FAR_ADDR), ("2001:db8:50::7", "2001:db8:99::9")):
        assert "dev v" in run(lan, "ip", "route", "get", lan_host).stdout
        assert f"dev {iface}" in run(lan, "ip", "route", "get", far).stdout


@pytest.mark.parametrize("table, allowed", [
    ("off", FULL), ("1234", FULL), ("0x4d2", FULL), ("default", FULL), ("main", SPLIT), ("auto", SPLIT),
])
def test_table_settings_are_wg_quicks(lab, lan, table, allowed):
    q_state, w_state, q_up, w_up = _both(lab, lan, _config(allowed, [f"Table = {table}"]))
    _assert_same(q_state, w_state, q_up, w_up)
    ours = [line for line in w_state["ip -4 route table all"].splitlines() + w_state["ip -6 route table all"]
            .splitlines() if "dev wgt" in line and "proto kernel" not in line and "table local" not in line]
    if table == "off":
        assert ours == [], ours                              # no route at all
    elif table in ("1234", "0x4d2"):
        assert all("table 1234" in line for line in ours) and len(ours) == len(allowed), ours
    assert "suppress_prefixlength" not in w_state["ip -4 rule"] + w_state["ip -6 rule"]


def test_named_table_from_rt_tables_d(lab, lan):
    prefix = _rt_tables_prefix(lab, {"wgvpn": 200})
    q_state, w_state, q_up, w_up = _both(lab, lan, _config(FULL, ["Table = wgvpn"]), prefix)
    _assert_same(q_state, w_state, q_up, w_up)
    assert "default dev wgt" in w_state["ip -4 route table all"] and "table 200" in w_state["ip -4 route table all"]
    assert "suppress_prefixlength" not in w_state["ip -4 rule"]      # a named table is not a full tunnel


def test_unknown_table_name_is_an_error_naming_file_line_and_key(lab, lan):
    q_state, w_state, q_up, w_up = _both(lab, lan, _config(FULL, ["Table = nosuchtable"]))
    assert q_state is None and w_state is None           # both refuse, and leave nothing (checked in _both)
    assert q_up.returncode != 0 and w_up.returncode != 0
    assert re.search(r"\.conf:4: Table: unknown routing table 'nosuchtable'", w_up.stderr), w_up.stderr
    assert "rt_tables" in w_up.stderr
