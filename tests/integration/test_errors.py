"""`wgpy up` failure modes: clear messages, non-zero exit, and nothing left behind.

Each `wgpy up` runs in a fresh namespace even where none is strictly needed, so a daemon that wrongly succeeds
cannot touch the host's network.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import (UAPI_DIR, b64_of_length, gen_keypair, link_exists, ns_pids, run, unique_iface,
                                 wait_for, write_config)

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def _real_wgpy_only(lab):
    lab.require_real_wgpy("error handling of `wgpy up`")


@pytest.fixture(scope="module")
def keys():
    return gen_keypair(), gen_keypair()


def base_lines(keys) -> list[str]:
    own, peer = keys
    return [
        "[Interface]",
        f"PrivateKey = {own.private}",
        "ListenPort = 51820",
        "Address = 10.99.0.1/24",
        "",
        "[Peer]",
        f"PublicKey = {peer.public}",
        "AllowedIPs = 10.99.0.2/32",
        "Endpoint = 10.201.0.2:51820",
    ]


def assert_nothing_left(ns: str, iface: str, allowed_pids: frozenset[int] = frozenset()) -> None:
    wait_for(lambda: not link_exists(ns, iface), 3, what=f"no interface {iface} in {ns}")
    wait_for(lambda: not (UAPI_DIR / f"{iface}.sock").exists(), 3, what=f"no {UAPI_DIR}/{iface}.sock")
    wait_for(lambda: not (ns_pids(ns) - allowed_pids), 3, what=f"no daemon process left in {ns}")


def mentions_line(stderr: str, line: int) -> bool:
    return re.search(rf"(:{line}\b|\bline {line}\b)", stderr, re.IGNORECASE) is not None


# -- malformed configs ---------------------------------------------------------------------------------------------

def _unknown_section(lines):
    return lines + ["", "[Bogus]", "Foo = bar"], "[Bogus]", "Bogus"


def _unknown_key(lines):
    return lines[:3] + ["Colour = blue"] + lines[3:], "Colour = blue", "Colour"


def _misspelt_key(lines):
    return [("ListenPrt = 51820" if ln.startswith("ListenPort") else ln) for ln in lines], "ListenPrt = 51820", \
        "ListenPrt: unknown key (did you mean ListenPort?)"


def _bad_base64_private_key(lines):
    return [("PrivateKey = this-is-not*base64!" if ln.startswith("PrivateKey") else ln) for ln in lines], \
        "PrivateKey = this-is-not*base64!", "PrivateKey"


def _short_public_key(lines):
    bad = f"PublicKey = {b64_of_length(16)}"
    return [(bad if ln.startswith("PublicKey") else ln) for ln in lines], bad, "PublicKey"


def _bad_cidr_allowed_ips(lines):
    bad = "AllowedIPs = 10.99.0.300/32"
    return [(bad if ln.startswith("AllowedIPs") else ln) for ln in lines], bad, "AllowedIPs"


def _bad_cidr_address(lines):
    bad = "Address = 10.99.0.1/33"
    return [(bad if ln.startswith("Address") else ln) for ln in lines], bad, "Address"


def _missing_private_key(lines):
    return [ln for ln in lines if not ln.startswith("PrivateKey")], None, "PrivateKey"


MALFORMED = {
    "unknown-section": _unknown_section,
    "unknown-key": _unknown_key,
    "misspelt-key": _misspelt_key,
    "bad-base64-key": _bad_base64_private_key,
    "wrong-length-key": _short_public_key,
    "bad-cidr-allowedips": _bad_cidr_allowed_ips,
    "bad-cidr-address": _bad_cidr_address,
    "missing-privatekey": _missing_private_key,
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_config(lab, netns, keys, case):
    ns = netns()
    lines, bad_line, token = MALFORMED[case](base_lines(keys))
    iface = unique_iface()
    path = write_config(lab.tmp, iface, "\n".join(lines) + "\n")

    res = lab.try_wgpy_up(ns, path)
    assert res.returncode != 0, f"`wgpy up` accepted a config with {case}:\n{res.stdout}{res.stderr}"
    assert str(path) in res.stderr, f"stderr does not name the file {path}:\n{res.stderr}"
    assert token in res.stderr, f"stderr does not name {token!r}:\n{res.stderr}"
    if bad_line is not None:
        lineno = lines.index(bad_line) + 1
        assert mentions_line(res.stderr, lineno), f"stderr does not name line {lineno}:\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert_nothing_left(ns, iface)


def test_interface_name_too_long(lab, netns, keys):
    ns = netns()
    name = "wgt" + os.urandom(7).hex()[:13]  # 16 characters
    path = write_config(lab.tmp, name, "\n".join(base_lines(keys)) + "\n")
    res = lab.try_wgpy_up(ns, path)
    assert res.returncode != 0
    assert name in res.stderr, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert not (UAPI_DIR / f"{name}.sock").exists()
    assert not ns_pids(ns)


# -- privileges -----------------------------------------------------------------------------------------------------

def _nobody_can_run_python() -> bool:
    res = run(None, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", sys.executable, "-c",
              "import wgpy", timeout=30, check=False)
    return res.returncode == 0


@pytest.mark.parametrize("how", ["no-cap-net-admin", "as-nobody"])
def test_without_cap_net_admin(lab, netns, keys, how):
    ns = netns()
    iface = unique_iface()
    text = "\n".join(base_lines(keys)) + "\n"
    if how == "as-nobody":
        if not _nobody_can_run_python():
            pytest.skip("user nobody cannot run the venv's python here")
        # the config must be readable by nobody, so it cannot live under the 0700 pytest tmp dir
        cfg_dir = Path(tempfile.mkdtemp(prefix="wgpyt-nobody-"))
        lab.defer(f"rm -r {cfg_dir}", lambda: shutil.rmtree(cfg_dir, ignore_errors=True))
        os.chmod(cfg_dir, 0o755)
        path = write_config(cfg_dir, iface, text)
        os.chown(path, 65534, 65534)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    else:
        path = write_config(lab.tmp, iface, text)
        prefix = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"]
        caps = run(ns, *prefix, "grep", "^CapEff", "/proc/self/status").stdout.split()[1]
        assert not int(caps, 16) & (1 << 12), "setpriv did not drop CAP_NET_ADMIN"

    res = lab.try_wgpy_up(ns, path, prefix=prefix)
    assert res.returncode != 0, f"`wgpy up` succeeded without CAP_NET_ADMIN:\n{res.stderr}"
    assert "CAP_NET_ADMIN" in res.stderr.upper(), f"stderr does not mention CAP_NET_ADMIN:\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert_nothing_left(ns, iface)


# -- conflicts and failures half way ------------------------------------------------------------------------------

def _link_snapshot(ns: str, name: str) -> dict:
    info = netlab.link_json(ns, name)
    keep = ("ifindex", "ifname", "mtu", "address", "link_type", "master")
    snap = {k: info.get(k) for k in keep}
    snap["up"] = "UP" in info.get("flags", [])
    snap["kind"] = info.get("linkinfo", {}).get("info_kind")
    snap["addrs"] = sorted((a["local"], a["prefixlen"]) for a in info.get("addr_info", []))
    return snap


def test_interface_name_in_use(lab, netns, keys):
    ns = netns()
    iface = unique_iface()
    # a dummy link if the kernel has the module, else a bridge: any existing link will do
    kind = "dummy"
    if run(ns, "ip", "link", "add", iface, "type", "dummy", check=False).returncode != 0:
        kind = "bridge"
        run(ns, "ip", "link", "add", iface, "type", "bridge")
    run(ns, "ip", "address", "add", "192.0.2.1/24", "dev", iface)
    run(ns, "ip", "link", "set", iface, "mtu", "1300", "up")
    before = _link_snapshot(ns, iface)
    assert before["kind"] == kind and before["up"] and before["mtu"] == 1300

    path = write_config(lab.tmp, iface, "\n".join(base_lines(keys)) + "\n")
    res = lab.try_wgpy_up(ns, path)
    assert res.returncode != 0, "`wgpy up` took over an existing interface"
    assert re.search(r"in use|already exists", res.stderr, re.IGNORECASE), res.stderr
    assert iface in res.stderr, res.stderr
    assert _link_snapshot(ns, iface) == before, "the existing interface was modified"
    assert not (UAPI_DIR / f"{iface}.sock").exists()
    wait_for(lambda: not ns_pids(ns), 3, what="no daemon process left")


def test_postup_failure_rolls_back(lab, netns, keys):
    ns = netns()
    iface = unique_iface()
    lines = base_lines(keys)
    lines = lines[:4] + ["PostUp = false"] + lines[4:]
    path = write_config(lab.tmp, iface, "\n".join(lines) + "\n")
    res = lab.try_wgpy_up(ns, path)
    assert res.returncode != 0, "`wgpy up` succeeded although PostUp failed"
    assert "Traceback" not in res.stderr, res.stderr
    assert_nothing_left(ns, iface)
    routes = run(ns, "ip", "route").stdout
    assert "10.99.0." not in routes, routes


def test_listen_port_in_use_rolls_back(lab, netns, keys):
    ns = netns()
    iface = unique_iface()
    holder_code = (
        "import socket, sys, time\n"
        "s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s4.bind(('0.0.0.0', 51820))\n"
        "s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); s6.bind(('::', 51820))\n"
        "print('ready', flush=True); time.sleep(120)\n"
    )
    holder = lab.popen(ns, sys.executable, "-c", holder_code, name="port-holder")
    wait_for(lambda: "ready" in holder.stdout() or not holder.alive(), 10, what="port holder")
    assert holder.alive(), holder.describe()

    path = write_config(lab.tmp, iface, "\n".join(base_lines(keys)) + "\n")
    res = lab.try_wgpy_up(ns, path)
    assert res.returncode != 0, "`wgpy up` succeeded although its ListenPort is taken"
    assert re.search(r"51820|ListenPort", res.stderr), res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert_nothing_left(ns, iface, allowed_pids=frozenset({holder.pid}))
    assert holder.alive()


# -- permissions ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,who", [(0o644, "world"), (0o640, "group")])
def test_world_accessible_config_warns_but_works(lab, netns, keys, mode, who):
    ns = netns()
    iface = unique_iface()
    path = write_config(lab.tmp, iface, "\n".join(base_lines(keys)) + "\n", mode=mode)
    res = lab.try_wgpy_up(ns, path)
    assert res.returncode == 0, res.stderr
    assert re.search(rf"{who}[- ]?(accessible|readable)", res.stderr, re.IGNORECASE), res.stderr
    assert f"Warning: `{path}' is {who} accessible" in res.stderr, res.stderr
    assert link_exists(ns, iface)
    dump = netlab.wg_dump(ns, iface)
    assert dump["listen_port"] == 51820 and dump["public_key"] == keys[0].public

    down = lab.wgpy(ns, "down", iface, timeout=20)
    assert down.returncode == 0, down.stderr
    assert_nothing_left(ns, iface)


def test_private_config_gives_no_warning(lab, netns, keys):
    ns = netns()
    iface = unique_iface()
    path = write_config(lab.tmp, iface, "\n".join(base_lines(keys)) + "\n", mode=0o600)
    res = lab.try_wgpy_up(ns, path)
    assert res.returncode == 0, res.stderr
    assert not re.search(r"(world|group)[- ]?(accessible|readable)", res.stderr, re.IGNORECASE), res.stderr


# -- the files a config names, and names instead of files -------------------------------------------------------

def _openssl_cert(directory: Path, stem: str) -> tuple[Path, Path]:
    cert, key = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    run(None, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=vpn.wgpy.test", timeout=30)
    return cert, key


@pytest.mark.parametrize("case", ["missing-key", "missing-certificate", "not-a-key", "mismatch"])
def test_tls_file_errors_name_the_line_and_key(lab, netns, keys, case):
    """Before: `configuring the interface failed (errno=-22)`; now the line, the key and what is wrong, before
    anything is set up."""
    ns = netns()
    iface = unique_iface()
    cert, key = _openssl_cert(lab.tmp, "a")
    missing = lab.tmp / "nowhere" / "server.pem"
    junk = lab.tmp / "junk.key"
    junk.write_text("not a key\n")
    other_cert, other_key = _openssl_cert(lab.tmp, "b")
    cert, key, line, token, what = {
        "missing-key": (cert, missing, 6, "KeyFile", f"cannot read '{missing}': No such file or directory"),
        "missing-certificate": (missing, key, 5, "CertificateFile",
                                f"cannot read '{missing}': No such file or directory"),
        "not-a-key": (cert, junk, 6, "KeyFile", f"'{junk}' is not a PEM private key"),
        "mismatch": (cert, other_key, 6, "KeyFile", f"'{other_key}' does not match the certificate '{cert}'"),
    }[case]
    lines = base_lines(keys)
    lines = lines[:3] + ["ListenTLS = 8443", f"CertificateFile = {cert}", f"KeyFile = {key}"] + lines[3:]
    path = write_config(lab.tmp, iface, "\n".join(lines) + "\n")
    assert lines[line - 1].startswith(token)

    res = lab.try_wgpy_up(ns, path)
    assert res.returncode != 0, f"`wgpy up` accepted {case}:\n{res.stderr}"
    assert f"wgpy: {path}:{line}: {token}: {what}" in res.stderr, res.stderr
    assert "errno" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    for k in (key, other_key):
        if k.exists():
            secret = [ln for ln in k.read_text().splitlines() if "-----" not in ln]
            assert not any(ln in res.stderr for ln in secret), "stderr shows key material"
    assert_nothing_left(ns, iface)


def test_tls_ca_file_missing(lab, netns, keys):
    ns = netns()
    iface = unique_iface()
    missing = lab.tmp / "nowhere" / "ca.pem"
    lines = [("Endpoint = tls://10.201.0.2:8443" if ln.startswith("Endpoint") else ln) for ln in base_lines(keys)]
    lines.append(f"TLSCAFile = {missing}")
    path = write_config(lab.tmp, iface, "\n".join(lines) + "\n")
    res = lab.try_wgpy_up(ns, path)
    assert res.returncode != 0
    assert f"wgpy: {path}:{len(lines)}: TLSCAFile: cannot read '{missing}': No such file or directory" \
        in res.stderr, res.stderr
    assert_nothing_left(ns, iface)


def test_up_by_name_without_a_file_says_where_it_looked(lab, netns):
    ns = netns()
    iface = unique_iface()
    assert not any(Path(d, f"{iface}.conf").exists() for d in ("/etc/wireguard", "/etc/wgpy"))
    res = lab.try_wgpy_up(ns, iface)
    assert res.returncode != 0
    assert res.stderr == (f"wgpy: {iface}: no configuration file for interface {iface}: looked for "
                          f"/etc/wireguard/{iface}.conf, /etc/wgpy/{iface}.conf\n"), res.stderr
    assert_nothing_left(ns, iface)


def test_up_by_name_finds_etc_wgpy(lab, netns, keys):
    """`wgpy up NAME` as `wg-quick up NAME`: /etc/wireguard/NAME.conf, else /etc/wgpy/NAME.conf (this test writes
    the second, under a name of its own, and removes it)."""
    ns = netns()
    iface = unique_iface()
    etc = Path("/etc/wgpy")
    if not etc.exists():
        etc.mkdir(mode=0o700)
        lab.defer(f"rmdir {etc}", lambda: etc.rmdir() if etc.exists() and not any(etc.iterdir()) else None)
    path = etc / f"{iface}.conf"
    lab.defer(f"rm {path}", lambda: path.unlink(missing_ok=True))
    write_config(etc, iface, "\n".join(base_lines(keys)) + "\n")
    res = lab.try_wgpy_up(ns, iface)
    assert res.returncode == 0, res.stderr
    assert link_exists(ns, iface)
    assert netlab.wg_dump(ns, iface)["public_key"] == keys[0].public
    down = lab.wgpy(ns, "down", iface, timeout=20)
    assert down.returncode == 0, down.stderr
    assert_nothing_left(ns, iface)
