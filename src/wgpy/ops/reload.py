"""`wgpy reload IFACE [CONFIG]`: apply a changed config file to the running interface, as `wg syncconf` does.

systemd's ExecReload (systemd/wgpy@.service) runs it. The file is read as `up` reads it (an interface name is
/etc/wireguard/IFACE.conf, else /etc/wgpy/IFACE.conf; host names resolved), rendered into the UAPI set `up`
sends, and compared with the interface's get reply:

* peers in the interface but not in the file are removed (`remove=true`);
* peers in the file but not in the interface are added;
* a peer whose every setting the get shows already matches is not sent at all, so its session, its roamed
  endpoint and its stream connection go on untouched; a changed peer is updated in place (`replace_allowed_ips`,
  no `replace_peers`): its keypairs survive unless its preshared key changed, exactly as with `wg syncconf`;
* the interface's keys are sent as in the file without `replace_peers` (an unchanged private key or port is a
  no-op); MetricsListen, ListenTCP and ListenTLS removed from the file are turned off, and so are a changed
  peer's RateLimit and RateLimitBurst (a new RateLimit alone keeps the queue of packets waiting, no drop).

Address, DNS, MTU, Table, Masquerade, User and the hooks are the host setup of `up`; a change to them takes a
restart (`systemctl restart wgpy@IFACE`). Routes for AllowedIPs added to the file outside the interface's own
networks are added (Table = off: none).
"""

from __future__ import annotations

import sys

__all__ = ["plan_reload", "reload_main"]

_PER_PEER_FLAGS = ("replace_allowed_ips", "wgpy_replace_allowed_macs")
_LIST = {"allowed_ip": "allowed_ips", "wgpy_allowed_mac": "wgpy_allowed_mac"}
_DEFAULTS = {"preshared_key": "0" * 64, "persistent_keepalive_interval": "0"}
# peer keys a get shows only while set: a changed peer's set clears them when the file no longer has them
_PEER_OFF_WHEN_ABSENT = {"wgpy_rate_limit": "0", "wgpy_rate_limit_burst": "0"}
_OFF_WHEN_ABSENT = {"wgpy_metrics_listen": "", "wgpy_stun_server": "", "wgpy_listen_tcp": "0", "wgpy_listen_tls": "0"}


def _chunks(body: str) -> tuple[list[str], list[list[str]]]:
    """A set body -> (device lines, one list of lines per peer, each starting with public_key=)."""
    device: list[str] = []
    peers: list[list[str]] = []
    for line in body.splitlines():
        if line.startswith("public_key="):
            peers.append([line])
        elif peers:
            peers[-1].append(line)
        elif line:
            device.append(line)
    return device, peers


def _unchanged(lines: list[str], cur: dict) -> bool:
    """Whether the get record `cur` already shows every setting of a peer's set lines."""
    want: dict[str, object] = dict(_DEFAULTS, **_PEER_OFF_WHEN_ABSENT)
    lists: dict[str, set] = {"allowed_ips": set(), "wgpy_allowed_mac": set()}
    for line in lines[1:]:
        key, _, value = line.partition("=")
        if key in _PER_PEER_FLAGS:
            continue
        if key in _LIST:
            lists[_LIST[key]].add(value)
        else:
            want[key] = value
    for key, value in want.items():
        if cur.get(key, _DEFAULTS.get(key, _PEER_OFF_WHEN_ABSENT.get(key))) != value:
            return False                     # changed, or a set-only key (TLS files, pins): sent again
    if set(cur.get("allowed_ips", [])) != lists["allowed_ips"]:
        return False
    return set(cur.get("wgpy_allowed_mac", [])) == lists["wgpy_allowed_mac"]


def plan_reload(body: str, dev: dict, peers: list[dict]) -> tuple[str, dict[str, int]]:
    """The set body that takes the interface from its get records (`dev`, `peers`) to the config's rendered set
    `body` (to_uapi), and counts: added, removed, updated, unchanged."""
    device, new_peers = _chunks(body)
    device = [ln for ln in device if ln != "replace_peers=true"]
    if any(ln == f"private_key={dev.get('private_key')}" for ln in device):
        device = [ln for ln in device if not ln.startswith("private_key=")]   # unchanged: not sent at all
    given = {ln.partition("=")[0] for ln in device}
    for key, off in _OFF_WHEN_ABSENT.items():
        if key in dev and key not in given:
            device.append(f"{key}={off}")
    current = {p["public_key"]: p for p in peers}
    counts = {"added": 0, "removed": 0, "updated": 0, "unchanged": 0}
    out = list(device)
    wanted = set()
    for chunk in new_peers:
        key = chunk[0].partition("=")[2]
        wanted.add(key)
        cur = current.get(key)
        if cur is None:
            counts["added"] += 1
            out += chunk
        elif _unchanged(chunk, cur):
            counts["unchanged"] += 1
        else:
            counts["updated"] += 1
            given = {ln.partition("=")[0] for ln in chunk}
            out += chunk + [f"{k}={off}" for k, off in _PEER_OFF_WHEN_ABSENT.items() if k in cur and k not in given]
    for key in current:
        if key not in wanted:
            counts["removed"] += 1
            out += [f"public_key={key}", "remove=true"]
    return "".join(ln + "\n" for ln in out), counts


def _add_routes(cfg, name: str) -> None:
    """Routes for AllowedIPs outside the interface's own networks, as `up` adds them (existing ones are fine)."""
    if cfg.table == "off" or cfg.mode == "tap":
        return
    from .genconf import _add_routes as add, _link_networks
    own = _link_networks(name)
    table_default = cfg.table in (None, "auto", "main")
    nets = sorted({n for p in cfg.peers for n in p.allowed_ips
                   if n.prefixlen and not any(n.version == a.version and n.subnet_of(a.network) for a in own)},
                  key=lambda n: (n.version, n))
    if nets and table_default:
        add(name, nets)


def reload_main(name: str, config: str | None) -> int:
    from .. import config as cfgmod
    from ..quick.down import check_interface_name
    from ..quick.resolve import resolve_endpoints, resolve_stream_endpoints
    from ..show import parse_get
    from ..uapi.server import request
    why = check_interface_name(name)
    if why is not None:
        print(f"wgpy: {why}", file=sys.stderr)
        return 1
    try:
        path = cfgmod.find_config(config or name)
        cfg = cfgmod.load(path)
        body = cfgmod.to_uapi(cfg, resolve_endpoints(cfg), resolve_stream_endpoints(cfg))
    except cfgmod.ConfigError as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    except Exception as e:       # a name that does not resolve (quick/resolve.py raises UpError)
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    try:
        dev, peers = parse_get(request(name, "get=1\n"))
        if dev.get("errno", "0") != "0":
            raise OSError(f"errno {dev['errno']}")
        text, counts = plan_reload(body, dev, peers)
        reply = request(name, "set=1\n" + text) if text else "errno=0\n\n"
    except OSError as e:
        print(f"wgpy: unable to access interface {name}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 1
    if reply.strip() != "errno=0":
        print(f"wgpy: reloading {name} from {path} failed ({reply.strip()}); the interface is unchanged",
              file=sys.stderr)
        return 1
    _add_routes(cfg, name)
    print(f"wgpy: reloaded {name} from {path}: {counts['added']} peer(s) added, {counts['removed']} removed, "
          f"{counts['updated']} updated, {counts['unchanged']} unchanged", file=sys.stderr)
    return 0

