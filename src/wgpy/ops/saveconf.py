"""`SaveConfig = true`: `wgpy down` writes the running configuration back into the file first, as wg-quick does.

wg-quick's `save_config` rewrites the whole file from `wg showconf` with its own [Interface] lines in front, so
the saved file is (and wgpy's is, in this order):

    [Interface]
    Address = ...            one line per address the interface has now (not the file's: `ip address add`s
                             made since are kept; IPv6 link-local addresses the kernel made are not)
    DNS = ...                the file's (what `up` applied: servers and search domains)
    MTU = ...                only if the file has one: the link's MTU now (`MTU = auto` stays auto)
    Table = ...              only if the file has one
    SaveConfig = true
    PreUp/PostUp/PreDown/PostDown = ...   the file's, in order
    Mode, Relay, Masquerade, User, MTUProbeInterval, MetricsListen, ListenTCP, ListenTLS, CertificateFile,
    KeyFile                  wgpy's own keys: the file's lines, as written
    ListenPort = ...         the running port (a random one too, as `wg showconf`)
    FwMark = 0x...           the running mark, when set (a full tunnel's automatic one too, as wg-quick)
    PrivateKey = ...

    [Peer]                   every running peer, in the daemon's order: added live ones (`wg set`, `wgpy
                             genconf`) included, removed ones gone
    PublicKey, PresharedKey (when set), AllowedIPs / AllowedMACs, Endpoint, PersistentKeepalive (when set), and
    the peer's FallbackEndpoint, FallbackAfter, FallbackProbeInterval, TLSServerName, TLSCAFile, TLSPin lines
    from the file.

Endpoint: the running one, so an endpoint learned from roaming is kept; but while a host-name endpoint is still
at the address its name gives (`wgpy_endpoint_name`), the name is written, so that dynamic DNS keeps working;
a tcp:// or tls:// endpoint is the file's line (the daemon only knows its address).

Comments and blank lines are not kept, nor is the order of the lines: wg-quick keeps none of them either. Unlike
wg-quick (which writes a new file with umask 077), the file keeps its mode and owner; it is replaced atomically
(a temporary file beside it, fsync, rename), and a symbolic link keeps pointing at the file it names.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile

from .. import crypto
from .. import config as cfgmod
from ..settings.values import f_rate

# [Interface] keys copied from the file as written (lower case -> the spelling written)
_OWN_INTERFACE = {k.lower(): k for k in ("Mode", "Relay", "Masquerade", "User", "MTUProbeInterval",
                                          "MetricsListen", "ListenTCP", "ListenTLS", "CertificateFile", "KeyFile")}
_HOOKS = {k.lower(): k for k in ("PreUp", "PostUp", "PreDown", "PostDown")}
_OWN_PEER = {k.lower(): k for k in ("FallbackEndpoint", "FallbackAfter", "FallbackProbeInterval", "TLSServerName",
                                     "TLSCAFile", "TLSPin")}
ZERO = "00" * 32
L2_HEADER = 14


class SaveError(Exception):
    pass


def _sections(text: str) -> tuple[list[tuple[str, str]], dict[bytes, list[tuple[str, str]]]]:
    """(the [Interface] lines, {peer public key: its lines}) as (lower-case key, `key = value` without the
    comment), comments cut at '#' as the parser (and wg-quick) does."""
    iface: list[tuple[str, str]] = []
    peers: dict[bytes, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.lower()
            current = iface if section == "[interface]" else [] if section == "[peer]" else None
            continue
        if current is None:
            continue
        key, _, value = line.partition("=")
        key = key.strip().lower()
        current.append((key, f"{key} = {value.strip()}"))
        if current is not iface and key == "publickey":
            try:
                peers[crypto.decode_key(value.strip(), "public key")] = current
            except crypto.KeyError_:
                pass
    return iface, peers


def _value(line: str) -> str:
    return line.partition("=")[2].strip()


def _live_addresses(name: str, kept: set) -> list[str]:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return []
        out = []
        for a in ipr.get_addr(index=idx[0]):
            addr = ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            if addr.version == 6 and addr.ip.is_link_local and addr not in kept:
                continue     # the kernel's own (a TAP's), not the user's
            out.append(str(addr))
        return out


def _live_mtu(name: str) -> int | None:
    try:
        with open(f"/sys/class/net/{name}/mtu") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def render(cfg: cfgmod.InterfaceConfig, text: str, dev: dict, peers: list[dict], addresses: list[str],
           link_mtu: int | None) -> str:
    """The saved file (see the module docstring) from the file's text and config, a get reply (show.parse_get),
    the interface's addresses and MTU now."""
    file_iface, file_peers = _sections(text)
    out = ["[Interface]"]
    out += [f"Address = {a}" for a in addresses]
    out += [f"DNS = {_value(ln)}" for k, ln in file_iface if k == "dns"]
    mtu_lines = [ln for k, ln in file_iface if k == "mtu"]
    if mtu_lines:
        if cfg.mtu is None:
            out.append("MTU = auto")
        elif link_mtu:
            out.append(f"MTU = {link_mtu + (L2_HEADER if cfg.mode == 'tap' else 0)}")
        else:
            out.append(f"MTU = {cfg.mtu}")
    out += [f"Table = {_value(ln)}" for k, ln in file_iface if k == "table"][-1:]
    out.append("SaveConfig = true")
    for hook in ("preup", "postup", "predown", "postdown"):
        out += [f"{_HOOKS[hook]} = {_value(ln)}" for k, ln in file_iface if k == hook]
    out += [f"{_OWN_INTERFACE[k]} = {_value(ln)}" for k, ln in file_iface if k in _OWN_INTERFACE]
    if dev.get("listen_port", "0") not in ("", "0"):
        out.append(f"ListenPort = {dev['listen_port']}")
    if dev.get("fwmark", "0") not in ("", "0"):
        out.append(f"FwMark = 0x{int(dev['fwmark']):x}")
    out.append(f"PrivateKey = {crypto.encode_key(bytes.fromhex(dev['private_key']))}")
    for p in peers:
        key = bytes.fromhex(p["public_key"])
        mine = file_peers.get(key, [])
        out += ["", "[Peer]", f"PublicKey = {crypto.encode_key(key)}"]
        if p.get("preshared_key", ZERO) != ZERO:
            out.append(f"PresharedKey = {crypto.encode_key(bytes.fromhex(p['preshared_key']))}")
        if p.get("allowed_ips"):
            out.append(f"AllowedIPs = {', '.join(p['allowed_ips'])}")
        if p.get("wgpy_allowed_mac"):
            out.append(f"AllowedMACs = {', '.join(p['wgpy_allowed_mac'])}")
        endpoint = None
        if "wgpy_endpoint" in p:             # a stream endpoint: the file's URL (a name stays a name)
            endpoint = next((_value(ln) for k, ln in mine if k == "endpoint" and "://" in ln), p["wgpy_endpoint"])
        elif "wgpy_endpoint_name" in p:
            endpoint = p["wgpy_endpoint_name"]
        elif "endpoint" in p:
            endpoint = p["endpoint"]
        if endpoint:
            out.append(f"Endpoint = {endpoint}")
        if p.get("persistent_keepalive_interval", "0") not in ("", "0"):
            out.append(f"PersistentKeepalive = {p['persistent_keepalive_interval']}")
        if p.get("wgpy_rate_limit", "0") != "0":
            out.append(f"RateLimit = {f_rate(int(p['wgpy_rate_limit']))}")
            if p.get("wgpy_rate_limit_burst", "0") != "0":
                out.append(f"RateLimitBurst = {p['wgpy_rate_limit_burst']}")
        out += [f"{_OWN_PEER[k]} = {_value(ln)}" for k, ln in mine if k in _OWN_PEER]
    return "\n".join(out) + "\n"


def _replace(path: str, text: str) -> None:
    """Write `text` over `path` atomically, keeping its mode and owner."""
    target = os.path.realpath(path)
    st = os.stat(target)
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)                           # nothing readable by others, even for a moment
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
            f.flush()
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def config_path_of(name: str, given: str | None) -> str | None:
    """The file `up` read for interface `name`: `given` (down NAME.conf), else the one its state file records,
    else where `up NAME` would look."""
    if given is not None:
        return given
    from ..quick import recovery
    found = recovery.find_state(name)
    path = (found.data or {}).get("config") if found is not None else None
    if isinstance(path, str) and path:
        return path
    try:
        return cfgmod.find_config(name)
    except cfgmod.ConfigError:
        return None


def saves(path: str | None) -> cfgmod.InterfaceConfig | None:
    """The file's config when it says SaveConfig = true, else None (also when it cannot be read)."""
    if path is None:
        return None
    try:
        cfg = cfgmod.parse(_read(path), path)
    except (cfgmod.ConfigError, OSError, UnicodeDecodeError):
        return None
    return cfg if cfg.save_config else None


def _read(path: str) -> str:
    with open(path, encoding="utf-8-sig") as f:
        return f.read(cfgmod.MAX_CONFIG_SIZE + 1)


def save(name: str, path: str) -> bool:
    """If `path` says SaveConfig = true, write interface `name`'s running configuration into it. Returns
    whether it saved; raises SaveError when it should have and could not."""
    cfg = saves(path)
    if cfg is None:
        return False
    from ..show import parse_get
    from ..uapi.server import request
    try:
        reply = request(name, "get=1\n")
    except OSError as e:
        raise SaveError(f"cannot read the running configuration of {name}: {e.strerror or e}") from None
    dev, peers = parse_get(reply)
    if "private_key" not in dev:
        raise SaveError(f"cannot read the running configuration of {name} ({reply.strip()[-40:]!r})")
    try:
        text = render(cfg, _read(path), dev, peers, _live_addresses(name, set(cfg.addresses)), _live_mtu(name))
        _replace(path, text)
    except OSError as e:
        raise SaveError(f"cannot write {path}: {e.strerror or e}") from None
    return True
