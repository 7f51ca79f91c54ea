"""`wgpy up`'s undo stack without a network: every setup step pushes its undo, and a failure half way undoes
exactly the steps done, newest first (quick/undo.py, quick/session.py). The host is replaced by fakes that log
what is done to it; DNS through /etc/resolv.conf is checked on a file of the test's own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from wgpy import config as cfgmod
from wgpy.host import dns, netlink, nft, privileges
from wgpy.quick import hooks
from wgpy.quick import session as session_mod
from wgpy.quick.hooks import UpError
from wgpy.quick.undo import UndoStack

KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


# ---- UndoStack -------------------------------------------------------------------------------------------------

def test_unwind_runs_the_undos_newest_first_and_empties_the_stack():
    done = []
    stack = UndoStack()
    for step in ("a", "b", "c"):
        stack.push(step, lambda step=step: done.append(step))
    assert stack.names() == ["a", "b", "c"] and len(stack) == 3
    assert stack.unwind() == []
    assert done == ["c", "b", "a"]
    assert len(stack) == 0 and stack.unwind() == [] and done == ["c", "b", "a"]


def test_a_failing_undo_is_reported_and_the_older_ones_still_run():
    done = []
    stack = UndoStack()

    def boom():
        raise OSError("device busy")
    stack.push("first", lambda: done.append("first"))
    stack.push("second", boom)
    stack.push("third", lambda: ["third went wrong", "and so did this"])
    stack.push("fourth", lambda: done.append("fourth"))
    assert stack.unwind() == ["third went wrong", "and so did this", "undoing second: device busy"]
    assert done == ["fourth", "first"]


# ---- Session.up and teardown against a fake host -----------------------------------------------------------

def _cfg(extra: str = "") -> cfgmod.InterfaceConfig:
    return cfgmod.parse(f"[Interface]\nPrivateKey = {KEY}\nAddress = 10.0.0.1/24\nPreUp = true\nPostUp = true\n"
                        f"PreDown = true\nPostDown = true\n{extra}\n[Peer]\nPublicKey = {PUB}\n"
                        "AllowedIPs = 10.0.0.2/32\n", "/tmp/wgx0.conf")


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A fake host: returns the log of what was done to it; `fail` names the step that raises."""
    log: list[str] = []
    fail: set[str] = set()

    class Core:
        """The core as the session sees it: read only, every setting goes through the UAPI."""
        mtu = 0

        def __setattr__(self, name, value):
            raise AssertionError(f"the session wrote device.{name} instead of a UAPI set")

    class Iface:
        def __init__(self, name, mode):
            self.device = Core()
            self.fwmark = 0

        def open(self):
            log.append("open interface")
            if "open" in fail:
                raise OSError(19, "no TUN")

        def handle_uapi(self, text):
            body = text.split("\n")[1:-1]
            if body and body[0].startswith("wgpy_mtu"):           # the link settings, once the MTU is known
                log.append("UAPI " + " ".join(body))
                for line in body:
                    if line.startswith("wgpy_mtu="):
                        object.__setattr__(self.device, "mtu", int(line.partition("=")[2]))
            else:
                log.append("UAPI set")
            return "errno=0\n\n"

        def close(self):
            log.append("close interface")

    class Netlink:
        def __init__(self, name):
            log.append("netlink")

        def route_mtu(self, host):
            return None

        def default_route_mtu(self):
            return 1500

        def add_address(self, addr, nodad=True):
            log.append(f"address {addr}")
            if "address" in fail:
                raise OSError(17, "cannot add address")

        def set_mtu_up(self, mtu):
            log.append(f"mtu {mtu} up")

        def index(self):
            return 7

        def undo(self):
            log.append("undo rules and sysctls")

        def close(self):
            log.append("close netlink")

    class Masquerade:
        def __init__(self, name, uplinks, ipv6):
            pass

        def apply(self):
            log.append("masquerade")
            if "masquerade" in fail:
                raise nft.NftError("nft could not install the Masquerade rule: boom")

        def undo(self):
            log.append("undo masquerade")
            return []

    def run_hook(cmds, name, what):
        log.append(what)
        if what in fail:
            raise UpError(f"{what} command failed with exit code 1: false")

    def dns_apply(name, path, servers, search, push):
        if servers or search:
            log.append("DNS")
            push("DNS", lambda: log.append("restore DNS"))

    monkeypatch.setattr(session_mod, "Interface", Iface)
    monkeypatch.setattr(session_mod, "has_net_admin", lambda: True)
    monkeypatch.setattr(netlink, "NetlinkSetup", Netlink)
    monkeypatch.setattr(netlink, "add_routes", lambda nets, oif, table: log.append(f"routes {nets}"))
    monkeypatch.setattr(netlink, "routes_in_table", lambda family, table, oif=None: [])   # nothing on the link
    monkeypatch.setattr(nft, "Masquerade", Masquerade)
    monkeypatch.setattr(dns, "apply", dns_apply)
    monkeypatch.setattr(hooks, "run_hook", run_hook)
    monkeypatch.setattr(session_mod, "run_hook", run_hook)
    monkeypatch.setattr(privileges, "runtime_dir", lambda d, create=False: str(tmp_path))
    return SimpleNamespace(log=log, fail=fail, pidfile=tmp_path / "wgx0.pid")


SETUP = ["PreUp", "open interface", "UAPI set", "netlink", "UAPI wgpy_mtu=1420", "address 10.0.0.1/24",
         "mtu 1420 up",
         "routes [IPv4Network('10.0.0.2/32')]", "UAPI wgpy_mtu_auto=true wgpy_mtu_min=576",
         "masquerade", "DNS", "PostUp"]


def test_up_then_teardown_undoes_every_step_in_reverse(host):
    s = session_mod.Session(_cfg("Masquerade = eth0\nDNS = 10.0.0.53"))
    s.up()
    assert host.log == SETUP
    assert host.pidfile.read_text().strip().isdigit()
    del host.log[:]
    s.teardown()
    assert host.log == ["PreDown", "restore DNS", "undo masquerade", "undo rules and sysctls", "close netlink",
                        "close interface", "PostDown"]
    assert not host.pidfile.exists() and s.iface is None
    del host.log[:]
    s.teardown()                      # twice: nothing left to undo
    assert host.log == []


def test_the_mtu_and_the_probe_interval_go_through_the_uapi(host):
    """`wgpy up` configures the core through the UAPI alone: the MTU once the link has it, then the interval and
    the automatic MTU mode (the daemon sets its sockets' options when it applies it)."""
    s = session_mod.Session(_cfg("MTUProbeInterval = 30"))
    s.up()
    assert host.log.index("UAPI wgpy_mtu=1420") < host.log.index("mtu 1420 up") \
        < host.log.index("UAPI wgpy_mtu_probe_interval=30 wgpy_mtu_auto=true wgpy_mtu_min=576")
    assert s.iface.device.mtu == 1420


@pytest.mark.parametrize("conf, sent", [
    ("Address = fd00::1/64", "UAPI wgpy_mtu_auto=true wgpy_mtu_min=1280"),     # IPv6: never below 1280
    ("MTU = 1400", None),                                                      # fixed: no automatic mode
    ("MTU = 1400\nMTUProbeInterval = off", "UAPI wgpy_mtu_probe_interval=0"),
])
def test_the_automatic_mtu_is_a_uapi_key(host, conf, sent):
    session_mod.Session(_cfg(conf)).up()
    link = [e for e in host.log if e.startswith("UAPI wgpy_mtu_") or "wgpy_mtu_auto" in e]
    assert link == ([sent] if sent else [])


def test_attach_mode_adopts_the_link_mtu_through_the_uapi(host, monkeypatch):
    monkeypatch.setattr(session_mod, "has_net_admin", lambda: False)
    monkeypatch.setattr(netlink, "link_mtu", lambda name: 1380)
    s = session_mod.Session(_cfg())
    s.up()
    assert host.log == ["PreUp", "open interface", "UAPI set", "UAPI wgpy_mtu=1380", "PostUp"]
    assert s.iface.device.mtu == 1380


@pytest.mark.parametrize("step, done_until, undone", [
    # (step that fails, the last setup step attempted, what teardown then runs)
    ("PreUp", "PreUp", []),
    ("open", "open interface", ["close interface", "PostDown"]),
    ("address", "address 10.0.0.1/24", ["undo rules and sysctls", "close netlink", "close interface", "PostDown"]),
    ("masquerade", "masquerade", ["undo masquerade", "undo rules and sysctls", "close netlink", "close interface",
                                  "PostDown"]),
    ("PostUp", "PostUp", ["restore DNS", "undo masquerade", "undo rules and sysctls", "close netlink",
                          "close interface", "PostDown"]),
])
def test_a_step_failing_half_way_undoes_exactly_the_steps_done(host, step, done_until, undone):
    host.fail.add(step)
    s = session_mod.Session(_cfg("Masquerade = eth0\nDNS = 10.0.0.53"))
    with pytest.raises((UpError, OSError)):
        s.up()
    attempted = SETUP[:SETUP.index(done_until) + 1]
    assert host.log == attempted + undone           # no PreDown: up never completed
    assert not host.pidfile.exists() and len(s.undo) == 0


def test_the_masquerade_error_is_reported_as_an_up_error(host):
    host.fail.add("masquerade")
    with pytest.raises(UpError, match="nft could not install the Masquerade rule: boom"):
        session_mod.Session(_cfg("Masquerade = eth0")).up()


def test_failing_down_hooks_are_reported_and_the_rest_still_runs(host, capsys):
    s = session_mod.Session(_cfg())
    s.up()
    host.fail.update({"PreDown", "PostDown"})
    del host.log[:]
    s.teardown()
    assert host.log == ["PreDown", "undo rules and sysctls", "close netlink", "close interface", "PostDown"]
    err = capsys.readouterr().err
    assert "wgpy: PreDown command failed with exit code 1: false" in err
    assert "wgpy: PostDown command failed with exit code 1: false" in err


# ---- DNS through /etc/resolv.conf ------------------------------------------------------------------------------

def test_resolv_conf_is_written_and_put_back_exactly(monkeypatch, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_bytes(b"nameserver 192.0.2.1\n# theirs\n")
    monkeypatch.setattr(dns, "RESOLV_CONF", str(resolv))
    monkeypatch.setattr(dns.shutil, "which", lambda name: None)
    monkeypatch.setattr(privileges, "runtime_dir", lambda d, create=False: str(tmp_path))
    stack = UndoStack()
    dns.apply("wgx0", "/tmp/wgx0.conf", ["10.0.0.53"], ["corp.example"], stack.push)
    text = resolv.read_text()
    assert "nameserver 10.0.0.53\nsearch corp.example\n" in text and "192.0.2.1" not in text
    assert (tmp_path / "wgx0.resolv.conf").read_bytes() == b"nameserver 192.0.2.1\n# theirs\n"
    assert stack.unwind() == []
    assert resolv.read_bytes() == b"nameserver 192.0.2.1\n# theirs\n"
    assert not (tmp_path / "wgx0.resolv.conf").exists()


def test_resolv_conf_changed_since_up_is_left_alone(monkeypatch, tmp_path, capsys):
    resolv = tmp_path / "resolv.conf"
    resolv.write_bytes(b"nameserver 192.0.2.1\n")
    monkeypatch.setattr(dns, "RESOLV_CONF", str(resolv))
    monkeypatch.setattr(dns.shutil, "which", lambda name: None)
    monkeypatch.setattr(privileges, "runtime_dir", lambda d, create=False: str(tmp_path))
    stack = UndoStack()
    dns.apply("wgx0", "/tmp/wgx0.conf", ["10.0.0.53"], [], stack.push)
    resolv.write_bytes(b"nameserver 198.51.100.7\n")      # someone else's change
    stack.unwind()
    assert resolv.read_bytes() == b"nameserver 198.51.100.7\n"
    assert "was changed since up; left as it is" in capsys.readouterr().err


def test_no_dns_pushes_nothing():
    stack = UndoStack()
    dns.apply("wgx0", "/tmp/wgx0.conf", [], [], stack.push)
    assert len(stack) == 0


# ---- a signal during up (quick/interrupt.py) ---------------------------------------------------------------------

def test_a_signal_during_postup_undoes_every_step(host, monkeypatch):
    """SIGTERM while PostUp runs: the hook is cut short, teardown runs every undo (no PreDown: up never
    completed), and up raises Interrupted (before: the daemon died with the host changes in place)."""
    import signal as _signal

    from wgpy.quick.interrupt import Interrupted, UpSignals
    sigs = UpSignals()

    def run_hook(cmds, name, what):
        host.log.append(what)
        if what == "PostUp":
            sigs._handler(_signal.SIGTERM, None)          # as if `wgpy down` sent it now
    monkeypatch.setattr(session_mod, "run_hook", run_hook)
    s = session_mod.Session(_cfg("Masquerade = eth0\nDNS = 10.0.0.53"), sigs)
    with pytest.raises(Interrupted):
        s.up()
    assert host.log == SETUP + ["restore DNS", "undo masquerade", "undo rules and sysctls", "close netlink",
                                "close interface", "PostDown"]
    assert not host.pidfile.exists() and len(s.undo) == 0 and sigs.phase == "teardown"


def test_a_signal_between_steps_is_acted_on_after_the_step(host, monkeypatch):
    """A signal while the routes go in (not interruptible): that step completes and pushes its undo, then up
    stops before the next step."""
    import signal as _signal

    from wgpy.quick.interrupt import Interrupted, UpSignals
    sigs = UpSignals()
    real = netlink.add_routes

    def add_routes(nets, oif, table):
        real(nets, oif, table)
        sigs._handler(_signal.SIGTERM, None)
    monkeypatch.setattr(netlink, "add_routes", add_routes)
    s = session_mod.Session(_cfg("Masquerade = eth0"), sigs)
    with pytest.raises(Interrupted):
        s.up()
    assert "masquerade" not in host.log and "PostUp" not in host.log
    assert host.log[-4:] == ["undo rules and sysctls", "close netlink", "close interface", "PostDown"]
