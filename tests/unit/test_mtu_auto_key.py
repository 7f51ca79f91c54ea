"""The automatic MTU mode as a UAPI key (wgpy_mtu_auto=, its floor wgpy_mtu_min=): parsed from the settings table,
applied by the host (daemon.Interface: the sockets' PMTU discovery mode, io/pmtu.py), reported by a get; `wg
setconf` is never sent it (to_uapi leaves it out) and `wg show` skips it."""

from __future__ import annotations

import socket

import pytest

from wgpy import crypto
from wgpy.config import link_uapi, parse, to_uapi
from wgpy.daemon import Interface
from wgpy.io import pmtu as pmtu_io
from wgpy.io.memory import MemoryTun
from wgpy.io.udp import UdpBind
from wgpy.uapi.plan import EINVAL, UNSET, UapiError, parse_set

KEY = crypto.encode_key(crypto.clamp(bytes(range(32))))


def _endpoint(text):
    raise ValueError


def test_the_keys_parse():
    plan = parse_set(["wgpy_mtu=1420", "wgpy_mtu_auto=true", "wgpy_mtu_min=1280"], _endpoint)
    assert (plan.mtu, plan.mtu_auto, plan.mtu_min) == (1420, True, 1280)
    assert parse_set(["wgpy_mtu_auto=false"], _endpoint).mtu_auto is False
    assert parse_set(["wgpy_mtu_auto=true"], _endpoint, l2=True).mtu_min is UNSET      # L2 devices take it too
    for bad in ("wgpy_mtu_auto=yes", "wgpy_mtu_auto=", "wgpy_mtu_min=575", "wgpy_mtu_min=65536", "wgpy_mtu_min=x"):
        with pytest.raises(UapiError) as e:
            parse_set([bad], _endpoint)
        assert e.value.code == EINVAL


def test_wgpy_up_renders_them_wg_setconf_never_sees_them():
    cfg = parse(f"[Interface]\nPrivateKey = {KEY}\n")
    assert "wgpy_mtu" not in to_uapi(cfg)
    assert link_uapi(probe_interval=30, mtu_auto=True, mtu_min=576) == \
        "wgpy_mtu_probe_interval=30\nwgpy_mtu_auto=true\nwgpy_mtu_min=576\n"
    assert link_uapi(mtu=1420) == "wgpy_mtu=1420\n"


def _discover_mode(sock: socket.socket) -> int:
    v6 = sock.family == socket.AF_INET6
    return sock.getsockopt(pmtu_io.SOL_IPV6 if v6 else pmtu_io.SOL_IP,
                           pmtu_io.IPV6_MTU_DISCOVER if v6 else pmtu_io.IP_MTU_DISCOVER)


@pytest.fixture(params=["tun", "tap"])
def iface(request):
    """The daemon's Interface with an in-memory TUN/TAP and real UDP sockets (no netlink, no UAPI socket)."""
    i = Interface("wgmtu0", request.param, tun=MemoryTun("wgmtu0", request.param), bind_factory=UdpBind,
                  uapi=False, host_link=False)
    i.open()
    try:
        yield i
    finally:
        i.close()


def _set(iface, body: str) -> None:
    assert iface.handle_uapi("set=1\n" + body) == "errno=0\n\n"


def _get(iface) -> str:
    reply = iface.handle_uapi("get=1\n")
    assert reply.endswith("errno=0\n\n")
    return reply


def test_the_host_applies_it_and_get_reports_it(iface):
    l2 = iface.mode == "tap"
    socks = iface.bind.sockets()
    assert socks and all(_discover_mode(s) == pmtu_io.IP_PMTUDISC_WANT for s in socks)   # fixed: kernel default
    assert "wgpy_mtu" not in _get(iface)
    _set(iface, f"private_key={'11' * 32}\nwgpy_mtu={1420 + 14 * l2}\n")
    _set(iface, "wgpy_mtu_probe_interval=30\nwgpy_mtu_auto=true\nwgpy_mtu_min=1280\n")
    assert iface.device.pmtu_auto and iface.pmtu.auto
    assert (iface.pmtu.min_mtu, iface.pmtu.interface_mtu) == (1280, 1420)       # the interface MTU it starts from
    assert all(_discover_mode(s) == pmtu_io.IP_PMTUDISC_PROBE for s in socks)
    get = _get(iface)
    assert f"wgpy_mtu={1420 + 14 * l2} auto\nwgpy_mtu_probe_interval=30\nwgpy_mtu_auto=true\nwgpy_mtu_min=1280\n" \
        in get
    # a new listen port: new sockets, same mode
    _set(iface, f"listen_port={_free_port()}\n")
    assert all(_discover_mode(s) == pmtu_io.IP_PMTUDISC_PROBE for s in iface.bind.sockets())
    # the floor alone, then off: the sockets back to the kernel's default, no extension keys in a get
    _set(iface, "wgpy_mtu_min=576\n")
    assert iface.pmtu.min_mtu == 576 and "wgpy_mtu_min=576\n" in _get(iface)
    _set(iface, "wgpy_mtu_auto=false\n")
    assert not iface.device.pmtu_auto and not iface.pmtu.auto
    assert all(_discover_mode(s) == pmtu_io.IP_PMTUDISC_WANT for s in iface.bind.sockets())
    assert "wgpy_mtu" not in _get(iface)


def test_a_bad_set_changes_nothing(iface):
    assert iface.handle_uapi("set=1\nwgpy_mtu_auto=true\nwgpy_mtu_min=100\n") == f"errno={EINVAL}\n\n"
    assert not iface.device.pmtu_auto and not iface.pmtu.auto


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
