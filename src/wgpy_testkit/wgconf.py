"""WireGuard keys, wg-quick config files, and reading an interface's state back (`wg show`, `wgpy show`)."""

from __future__ import annotations

import base64
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .procs import run

WGPY = Path(sys.executable).parent / "wgpy"
UAPI_DIR = Path("/var/run/wireguard")
WGPY_RUN_DIR = Path("/run/wgpy")  # where the wgpy daemon keeps IFACE.log / IFACE.pid (diagnostics, cleanup)


# --------------------------------------------------------------------------------------------------------------
# Keys and configs
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Keypair:
    private: str
    public: str


def gen_keypair() -> Keypair:
    private = run(None, "wg", "genkey", timeout=10).stdout.strip()
    public = run(None, "wg", "pubkey", input=private + "\n", timeout=10).stdout.strip()
    return Keypair(private, public)


def gen_psk() -> str:
    return run(None, "wg", "genpsk", timeout=10).stdout.strip()


def random_public_key() -> str:
    """A well-formed public key that belongs to nobody in the test."""
    return gen_keypair().public


def unique_iface(prefix: str = "wgt") -> str:
    while True:
        name = f"{prefix}{secrets.token_hex(3)}"
        assert len(name) <= 15, name
        if not (UAPI_DIR / f"{name}.sock").exists() and not (WGPY_RUN_DIR / f"{name}.pid").exists():
            return name


@dataclass(frozen=True)
class PeerSpec:
    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None = None
    preshared_key: str | None = None
    persistent_keepalive: int | None = None
    extra_lines: tuple[str, ...] = ()        # more [Peer] lines, as written (wgpy's own keys: RateLimit = ...)


def render_config(private_key: str, listen_port: int | None, peers: Iterable[PeerSpec], *,
                  addresses: Sequence[str] = (), mtu: int | None = None,
                  extra_interface_lines: Sequence[str] = ()) -> str:
    """A wg-quick style config.  Without addresses/mtu/extra lines it is also valid for `wg setconf`."""
    lines = ["[Interface]", f"PrivateKey = {private_key}"]
    if listen_port is not None:
        lines.append(f"ListenPort = {listen_port}")
    if addresses:
        lines.append(f"Address = {', '.join(addresses)}")
    if mtu is not None:
        lines.append(f"MTU = {mtu}")
    lines.extend(extra_interface_lines)
    for peer in peers:
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        if peer.preshared_key:
            lines.append(f"PresharedKey = {peer.preshared_key}")
        if peer.endpoint:
            lines.append(f"Endpoint = {peer.endpoint}")
        lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
        lines.extend(peer.extra_lines)
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    """Write `<tmp_path>/<name>.conf` with exactly `mode` (umask does not apply); return the absolute path."""
    path = (Path(tmp_path) / f"{name}.conf").resolve()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


def format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"



def b64_of_length(n: int) -> str:
    return base64.b64encode(b"\x01" * n).decode()


# --------------------------------------------------------------------------------------------------------------
# Inspecting WireGuard state
# --------------------------------------------------------------------------------------------------------------

def _opt_int(tok: str) -> int | None:
    return None if tok in ("off", "(none)", "") else int(tok, 0)   # wg prints the fwmark in hex (0xca6c)


def parse_wg_dump(text: str) -> dict[str, Any]:
    """Parse `wg show IFACE dump`.

    Returns {"private_key", "public_key", "listen_port", "fwmark", "peers": {public_key: peer}} where a peer is
    {"public_key", "preshared_key", "endpoint", "allowed_ips": [...], "latest_handshake", "rx", "tx",
     "persistent_keepalive"}; "(none)"/"off" become None.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty wg dump")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise ValueError(f"unexpected interface line in wg dump: {lines[0]!r}")
    result: dict[str, Any] = {
        "private_key": head[0], "public_key": head[1], "listen_port": _opt_int(head[2]),
        "fwmark": _opt_int(head[3]), "peers": {},
    }
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) != 8:
            raise ValueError(f"unexpected peer line in wg dump: {line!r}")
        result["peers"][f[0]] = {
            "public_key": f[0],
            "preshared_key": None if f[1] == "(none)" else f[1],
            "endpoint": None if f[2] == "(none)" else f[2],
            "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
            "latest_handshake": int(f[4]),
            "rx": int(f[5]),
            "tx": int(f[6]),
            "persistent_keepalive": _opt_int(f[7]),
        }
    return result


def wg_dump(ns: str | None, iface: str) -> dict[str, Any]:
    return parse_wg_dump(run(ns, "wg", "show", iface, "dump", timeout=10).stdout)


def latest_handshake(ns: str | None, iface: str, peer_public_key: str) -> int:
    return wg_dump(ns, iface)["peers"][peer_public_key]["latest_handshake"]


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}


def parse_size(text: str) -> float:
    number, unit = text.split()
    return float(number) * _UNITS[unit]


def parse_wg_show(text: str) -> dict[str, Any]:
    """Parse the human format of `wg show` / `wgpy show` (first interface only).

    Returns {"interface": name, "public key": ..., "listening port": ..., "peers": {key: {...}}}; a peer's
    "transfer" line is additionally split into integer "rx"/"tx" byte counts (approximate, from the units).
    """
    out: dict[str, Any] = {"peers": {}}
    current: dict[str, Any] = out
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()  # strip colours, if any
        if not line.strip() or ":" not in line:
            continue
        key, _, value = line.strip().partition(":")
        key, value = key.strip(), value.strip()
        if not raw.startswith(" ") and key == "interface":
            if "interface" in out:
                break
            out["interface"] = value
            current = out
        elif not raw.startswith(" ") and key == "peer":
            current = {"peer": value}
            out["peers"][value] = current
        else:
            current[key] = value
            if key == "transfer":
                m = re.match(r"(.+?) received, (.+?) sent", value)
                if m:
                    current["rx"] = int(parse_size(m.group(1)))
                    current["tx"] = int(parse_size(m.group(2)))
    return out
