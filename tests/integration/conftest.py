"""Fixtures for the wgpy integration tests (network namespaces, TUN devices, wireguard-go as reference peer).

Every test gets a fresh `Lab` (wgpy_testkit.lab, the support package in src/wgpy_testkit) that owns its namespaces
and processes and removes them at teardown, even when the test fails or is interrupted.  Safety nets: stale
`wgpyt-<dead pid>-*` namespaces are removed when a session starts, ours are removed again at session end and at
interpreter exit, and SIGTERM is turned into KeyboardInterrupt so pytest's own teardown runs.

The whole directory is skipped when the machine cannot run it (not root, no /dev/net/tun, `ip netns` broken,
tools missing) -- except under CI=true, where the same condition is a test error so a broken runner is red.

Environment knobs:
    WGPY_IT_TEST_TIMEOUT      watchdog for one test's setup and call phases, seconds (default 300)
    WGPY_IT_STANDIN=wireguard-go   run wireguard-go wherever a test asks for wgpy (harness self-check)
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import Lab, Topology

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
REQUIRED_TOOLS = ("ip", "wg", "wireguard-go", "ping", "tcpdump", "setpriv")
TEST_TIMEOUT = float(os.environ.get("WGPY_IT_TEST_TIMEOUT", "300"))

_env_problem: str | None | bool = False  # False = not checked yet
_open_labs: set[Lab] = set()


def _check_environment() -> str | None:
    if not sys.platform.startswith("linux"):
        return "integration tests need Linux"
    if os.geteuid() != 0:
        return "integration tests need root (network namespaces, TUN devices); run them as root or in CI"
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return f"/dev/net/tun is not usable: {exc}"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (run scripts/setup.sh)"
    probe = f"{netlab.NS_PREFIX}probe"
    try:
        netlab.run(None, "ip", "netns", "add", probe, timeout=10)
        netlab.run(probe, "ip", "link", "set", "lo", "up", timeout=10)
    except Exception as exc:
        return f"`ip netns` does not work here: {exc}"
    finally:
        netlab.run(None, "ip", "netns", "del", probe, timeout=10, check=False)
    return None


def environment_problem() -> str | None:
    global _env_problem
    if _env_problem is False:
        _env_problem = _check_environment()
    return _env_problem  # type: ignore[return-value]


def _final_cleanup() -> None:
    for lab in list(_open_labs):
        lab.close()
        _open_labs.discard(lab)
    if os.geteuid() == 0 and shutil.which("ip"):
        netlab.cleanup_stale_namespaces(only_ours=True)


atexit.register(_final_cleanup)


@pytest.fixture(scope="session", autouse=True)
def _integration_session() -> Iterator[None]:
    """Session-wide safety nets (only active when the environment is usable)."""
    if environment_problem() is not None:
        yield
        return
    netlab.cleanup_stale_namespaces(only_ours=False)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_sigterm(signum, frame):  # let pytest unwind and run every teardown
            raise KeyboardInterrupt(f"signal {signum}")
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _final_cleanup()


@pytest.fixture(autouse=True)
def _integration_env() -> None:
    problem = environment_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but the integration environment is broken: {problem}", pytrace=False)
    pytest.skip(problem)


# -- watchdog: bounds a test's setup and call phases (teardown is bounded by the per-command timeouts) ---------

class _Watchdog:
    def __init__(self, seconds: float, phase: str, nodeid: str) -> None:
        self.seconds, self.phase, self.nodeid = seconds, phase, nodeid
        self.previous = None

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self.seconds <= 0:
            return

        def on_alarm(signum, frame):
            pytest.fail(f"watchdog: {self.phase} of {self.nodeid} exceeded {self.seconds:.0f}s "
                        "(WGPY_IT_TEST_TIMEOUT)", pytrace=True)
        self.previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _Watchdog(TEST_TIMEOUT, "setup", item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _Watchdog(TEST_TIMEOUT, "call", item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_wgpyt_rep_{report.when}", report)


# -- the lab and its helpers as fixtures -------------------------------------------------------------------------

@pytest.fixture
def lab(request, tmp_path) -> Iterator[Lab]:
    """Owner of everything this test creates; torn down (processes killed, namespaces deleted) afterwards."""
    the_lab = Lab(tmp_path)
    _open_labs.add(the_lab)
    try:
        yield the_lab
    finally:
        failed = any(getattr(getattr(request.node, f"_wgpyt_rep_{when}", None), "failed", False)
                     for when in ("setup", "call"))
        if failed:
            try:
                print("==== lab diagnostics ====\n" + the_lab.diagnostics())
            except Exception as exc:  # diagnostics must never mask the real failure
                print(f"(diagnostics failed: {exc!r})")
        problems = the_lab.close()
        _open_labs.discard(the_lab)
        if problems:
            print("==== lab cleanup problems ====\n" + "\n".join(problems))
        leftovers = [ns for ns in the_lab.namespaces if Path("/var/run/netns", ns).exists()]
        assert not leftovers, f"namespaces survived cleanup: {leftovers}"


@pytest.fixture
def netns(lab: Lab) -> Callable[[], str]:
    """Factory: `netns()` -> name of a new namespace `wgpyt-<pid>-<n>` with lo up, removed at teardown."""
    return lab.netns


@pytest.fixture
def veth(lab: Lab):
    """`veth(ns_a, ns_b, addr_a=None, addr_b=None)` -> (name_a, name_b): a veth pair between two namespaces."""
    return lab.veth


@pytest.fixture
def popen(lab: Lab):
    """`popen(ns, *cmd, env=None, name=None)` -> netlab.Proc, stopped (process group SIGTERM/SIGKILL) at teardown."""
    return lab.popen


@pytest.fixture
def wgpy_up(lab: Lab):
    """`wgpy_up(ns, config_path)` -> iface: runs `wgpy up`, asserts rc 0, registers `wgpy down` + kill."""
    return lab.wgpy_up


@pytest.fixture
def wireguard_go_up(lab: Lab):
    """`wireguard_go_up(ns, iface, private_key, listen_port, peers, address)` -> iface (reference peer)."""
    return lab.wireguard_go_up


@pytest.fixture
def transfer(lab: Lab):
    """`transfer(ns_server, ns_client, server_ip, nbytes, timeout)` -> (server_json, client_json)."""
    return lab.transfer


# -- topologies ---------------------------------------------------------------------------------------------------

@pytest.fixture
def two_ns(lab: Lab) -> Topology:
    """Two namespaces joined by one veth pair, IPv4 underlay.

        ┌──────────── ns[0] ────────────┐          ┌──────────── ns[1] ────────────┐
        │  lo                           │   veth   │                           lo  │
        │  veth[0]  10.201.0.1/24  ─────┼──────────┼─────  10.201.0.2/24  veth[1]  │
        └───────────────────────────────┘          └───────────────────────────────┘
    """
    a, b = lab.netns(), lab.netns()
    va, vb = lab.veth(a, b, "10.201.0.1/24", "10.201.0.2/24")
    return Topology(ns=[a, b], veth=[va, vb], ip=["10.201.0.1", "10.201.0.2"], peer_veth=[vb, va])


@pytest.fixture
def two_ns_v6(lab: Lab) -> Topology:
    """Two namespaces joined by one veth pair, IPv6-only underlay (addresses added with `nodad`).

        ┌──────────── ns[0] ────────────┐          ┌──────────── ns[1] ────────────┐
        │  lo                           │   veth   │                           lo  │
        │  veth[0]  fd00::1/64  ────────┼──────────┼────────  fd00::2/64  veth[1]  │
        └───────────────────────────────┘          └───────────────────────────────┘
    """
    a, b = lab.netns(), lab.netns()
    va, vb = lab.veth(a, b, "fd00::1/64", "fd00::2/64")
    return Topology(ns=[a, b], veth=[va, vb], ip=["fd00::1", "fd00::2"], peer_veth=[vb, va])


@pytest.fixture
def three_ns_switch(lab: Lab) -> Topology:
    """Three namespaces on a Linux bridge that lives in a fourth ("switch") namespace, IPv4 underlay.

        ┌─── ns[0] ───┐        ┌─── ns[1] ───┐        ┌─── ns[2] ───┐
        │ 10.201.0.1  │        │ 10.201.0.2  │        │ 10.201.0.3  │
        │  veth[0]    │        │  veth[1]    │        │  veth[2]    │
        └──────┬──────┘        └──────┬──────┘        └──────┬──────┘
               │                      │                      │
        ┌──────┴──────────────────────┴──────────────────────┴──────┐
        │  peer_veth[0]          peer_veth[1]          peer_veth[2]  │
        │  └───────────────────── br0 ─────────────────────────┘    │
        └─────────────────────────── switch ─────────────────────────┘
    """
    switch = lab.netns()
    netlab.run(switch, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
    netlab.run(switch, "ip", "link", "set", "br0", "up")
    nss, veths, peers, ips = [], [], [], []
    for i in range(3):
        ns = lab.netns()
        ip = f"10.201.0.{i + 1}"
        v_node, v_switch = lab.veth(ns, switch, f"{ip}/24", None)
        netlab.run(switch, "ip", "link", "set", v_switch, "master", "br0", "up")
        nss.append(ns)
        veths.append(v_node)
        peers.append(v_switch)
        ips.append(ip)
    return Topology(ns=nss, veth=veths, ip=ips, switch=switch, peer_veth=peers)
