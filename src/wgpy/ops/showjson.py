"""`wgpy show [IFACE] [FIELD] --json`: what `wgpy show` prints, as JSON with stable field names.

The records are show.py's (parse_get of the UAPI get reply `wg` reads); the schema is docs/operations.md's
"JSON output". Secrets are treated exactly as by the text output: the listing (no FIELD) gives private_key and
preshared_key as "(hidden)" unless WG_HIDE_KEYS=never; the fields that exist to print a key (private-key,
preshared-keys, dump) give it. Every key of the schema is always present (null where it does not apply), so a
consumer never needs to test for a missing key.

    wgpy show wg0 --json            one interface object
    wgpy show --json                an array of interface objects (all interfaces)
    wgpy show wg0 transfer --json   {"interface": "wg0", "peers": [{"public_key": ..., "transfer_rx": ..., ...}]}
    wgpy show wg0 stats --json      {"interface": "wg0", "stats": {"drop_replay": 0, ...}}
    wgpy show interfaces --json     an array of names
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .. import crypto
from ..protocol.shaper import default_burst

__all__ = ["interface_object", "field_object", "stats_object", "show_json", "FIELD_KEYS", "HIDDEN"]

HIDDEN = "(hidden)"
ZERO = "0" * 64


def _b64(hexkey: str) -> str:
    return crypto.encode_key(bytes.fromhex(hexkey))


def _int(v: str | None, default: int | None = 0) -> int | None:
    return default if v is None or v == "" else int(v)


def _path_mtu(p: dict) -> dict | None:
    if "wgpy_path_mtu" not in p:
        return None
    mtu, _, rest = p["wgpy_path_mtu"].partition(" ")
    source, _, probing = rest.partition(" ")
    return {"mtu": int(mtu), "source": source, "probing": probing == "probing",
            "peer_is_wgpy": "wgpy_peer_wgpy" in p}


def _fallback(p: dict) -> dict | None:
    if "wgpy_fallback_endpoint" not in p:
        return None
    num = lambda k: float(p[k]) if k in p else None    # noqa: E731
    return {"endpoint": p["wgpy_fallback_endpoint"], "state": p.get("wgpy_fallback"),
            "after": num("wgpy_fallback_after"), "probe_interval": num("wgpy_fallback_probe_interval"),
            "switches": _int(p.get("wgpy_fallback_switches")), "returns": _int(p.get("wgpy_fallback_returns")),
            "probes": _int(p.get("wgpy_fallback_probes"))}


def _transport(p: dict) -> str:
    if "wgpy_endpoint" in p:
        return p["wgpy_endpoint"].partition(":")[0]
    if p.get("wgpy_fallback") == "active":
        return p["wgpy_fallback_endpoint"].partition(":")[0]
    return "udp"


def _learned(entries) -> list[dict]:
    out = []
    for entry in entries or ():
        mac, _, age = entry.partition(" ")
        out.append({"mac": mac, "age": int(age)})
    return out


def _rate_limit(p: dict) -> dict | None:
    if "wgpy_rate_limit" not in p:
        return None
    bits = int(p["wgpy_rate_limit"])
    given = _int(p.get("wgpy_rate_limit_burst"), None)
    sent, _, received = p.get("wgpy_rate_limit_dropped", "0 0").partition(" ")
    return {"bits_per_second": bits, "burst_bytes": given or default_burst(bits), "burst_default": not given,
            "dropped_sent": int(sent or 0), "dropped_received": int(received or 0)}


def peer_object(p: dict, l2: bool, hide: bool) -> dict:
    psk = p.get("preshared_key", ZERO)
    return {
        "public_key": _b64(p["public_key"]),
        "preshared_key": None if psk == ZERO else HIDDEN if hide else _b64(psk),
        "endpoint": p.get("endpoint"),
        "endpoint_name": p.get("wgpy_endpoint_name"),
        "stream_endpoint": ({"url": p["wgpy_endpoint"], "state": p.get("wgpy_endpoint_state")}
                            if "wgpy_endpoint" in p else None),
        "transport": _transport(p),
        "fallback": _fallback(p),
        "allowed_ips": None if l2 else list(p.get("allowed_ips", [])),
        "allowed_macs": list(p.get("wgpy_allowed_mac", [])) if l2 else None,
        "macs": _learned(p.get("wgpy_mac")) if l2 else None,
        "latest_handshake": _int(p.get("last_handshake_time_sec")),
        "transfer_rx": _int(p.get("rx_bytes")),
        "transfer_tx": _int(p.get("tx_bytes")),
        "persistent_keepalive": _int(p.get("persistent_keepalive_interval")),
        "path_mtu": _path_mtu(p),
        "rate_limit": _rate_limit(p),
        "last_error": p.get("wgpy_last_error"),
    }


def interface_object(name: str, dev: dict, peers: list[dict], hide: bool = True) -> dict:
    """One interface, everything `wgpy show IFACE` lists (keys as the listing treats them when `hide`)."""
    l2 = dev.get("wgpy_mode") == "tap"
    priv = dev.get("private_key")
    mtu = None
    if "wgpy_mtu" in dev:
        value, _, how = dev["wgpy_mtu"].partition(" ")
        mtu = {"mtu": int(value) - (14 if l2 else 0), "automatic": how == "auto",
               "probe_interval": float(dev["wgpy_mtu_probe_interval"]) if "wgpy_mtu_probe_interval" in dev else None}
    return {
        "interface": name,
        "public_key": crypto.encode_key(crypto.public_from_private(bytes.fromhex(priv))) if priv else None,
        "private_key": None if priv is None else HIDDEN if hide else _b64(priv),
        "listen_port": _int(dev.get("listen_port")),
        "fwmark": _int(dev.get("fwmark")),
        "mode": "tap" if l2 else "tun",
        "relay": dev.get("wgpy_relay") == "true" if l2 else None,
        "mtu": mtu,
        "listen_tcp": _int(dev.get("wgpy_listen_tcp"), None),
        "listen_tls": _int(dev.get("wgpy_listen_tls"), None),
        "metrics_listen": dev.get("wgpy_metrics_listen"),
        "stun_server": dev.get("wgpy_stun_server"),
        "stun_mapped": dev.get("wgpy_stun_mapped"),
        "local_macs": _learned(dev.get("wgpy_local_mac")) if l2 else None,
        "peers": [peer_object(p, l2, hide) for p in peers],
    }


# field mode -> the interface object's keys it gives ("peers.x": those keys of each peer, with its public key)
FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "public-key": ("public_key",),
    "private-key": ("private_key",),
    "listen-port": ("listen_port",),
    "fwmark": ("fwmark",),
    "peers": ("peers.public_key",),
    "preshared-keys": ("peers.preshared_key",),
    "endpoints": ("peers.endpoint",),
    "allowed-ips": ("peers.allowed_ips",),
    "latest-handshakes": ("peers.latest_handshake",),
    "transfer": ("peers.transfer_rx", "peers.transfer_tx"),
    "persistent-keepalive": ("peers.persistent_keepalive",),
    "macs": ("local_macs", "peers.macs"),
    "allowed-macs": ("peers.allowed_macs",),
    "path-mtu": ("peers.path_mtu",),
}
SHOWS_KEYS = frozenset({"private-key", "preshared-keys", "dump"})   # as in the text output


def field_object(field: str, name: str, dev: dict, peers: list[dict]) -> dict:
    """`wgpy show IFACE FIELD --json`: the interface name and that field's keys (dump: the whole object, keys
    shown, as `wgpy show IFACE dump` prints them)."""
    full = interface_object(name, dev, peers, hide=field not in SHOWS_KEYS)
    if field == "dump":
        return full
    out: dict[str, Any] = {"interface": name}
    own = [k for k in FIELD_KEYS[field] if not k.startswith("peers.")]
    per_peer = [k[6:] for k in FIELD_KEYS[field] if k.startswith("peers.")]
    for k in own:
        out[k] = full[k]
    if per_peer:
        out["peers"] = [{"public_key": p["public_key"], **{k: p[k] for k in per_peer}} for p in full["peers"]]
    return out


def stats_object(name: str, reply: str) -> dict:
    stats: dict[str, int | str] = {}
    for line in reply.splitlines():
        key, sep, value = line.partition("=")
        if sep and key != "errno":
            stats[key] = int(value) if value.lstrip("-").isdigit() else value
    return {"interface": name, "stats": stats}


# ---- the I/O ------------------------------------------------------------------------------------------------------

def _one(name: str, field: str | None) -> tuple[int, dict | None]:
    from ..show import parse_get
    from ..uapi.server import request
    try:
        reply = request(name, "wgpy_stats=1\n" if field == "stats" else "get=1\n")
    except OSError as e:
        print(f"wgpy: unable to access interface {name}: {e.strerror or e}", file=sys.stderr)
        return 1, None
    lines = [ln for ln in reply.splitlines() if ln]
    if not lines or lines[-1] != "errno=0":
        print(f"wgpy: interface {name}: {lines[-1] if lines else 'no reply'}", file=sys.stderr)
        return 1, None
    if field == "stats":
        return 0, stats_object(name, reply)
    dev, peers = parse_get(reply)
    dev.pop("errno", None)
    if field is None:
        return 0, interface_object(name, dev, peers, os.environ.get("WG_HIDE_KEYS", "always") != "never")
    return 0, field_object(field, name, dev, peers)


def show_json(name: str | None, field: str | None) -> int:
    """`wgpy show [IFACE|all|interfaces] [FIELD] --json` on stdout; errors on stderr, as `wgpy show`."""
    from ..show import interfaces
    if name == "interfaces":
        print(json.dumps(interfaces()))
        return 0
    if name in (None, "all"):
        rc, out = 0, []
        for n in interfaces():
            r, obj = _one(n, field)
            rc |= r
            if obj is not None:
                out.append(obj)
        print(json.dumps(out, indent=2))
        return rc
    from ..quick.down import check_interface_name
    why = check_interface_name(name)
    if why is not None:
        print(f"wgpy: {why}", file=sys.stderr)
        return 1
    rc, obj = _one(name, field)
    if obj is not None:
        print(json.dumps(obj, indent=2))
    return rc
