"""The settings table: every configuration setting once, in the order the UAPI lists them.

One row per setting: its INI name ([Interface] or [Peer] of a wg-quick file; None: UAPI only), its UAPI key
(None: host setup done by `wgpy up`, never sent to the daemon), the section, the value type's parsers (INI and
UAPI spellings, values.py) and the UAPI formatter, the mode it applies to (l3, l2 or both), and notes.

Who iterates it:
    config.py       INI keys -> attributes of InterfaceConfig/PeerConfig (by_ini), "did you mean" suggestions
    render.py       InterfaceConfig -> the body of a UAPI set (`render` says how a row is written)
    uapi/protocol   a set request: key -> row -> parsed into the SetPlan (`dest`); a get reply, in table order
    show.py         `wgpy show`: which get keys repeat (list rows); its field table reads the get keys

`render`: "given" (written when not None), "nonzero" (when true/non-zero), "each" (one line per list item),
"always" (`fixed` written every time; l2 rows only for Mode = tap), "link" (written by `wgpy up` once the link's
MTU is known: render.link_uapi), "custom" (render.py has a function for the row), None (not rendered).
`set`/`get`: whether a UAPI set accepts the key / a get reply carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import listen, values as v

__all__ = ["Setting", "TABLE", "by_ini", "by_uapi", "rows"]


@dataclass(frozen=True)
class Setting:
    ini: str | None
    uapi: str | None
    section: str                                  # "interface" | "peer"
    attr: str | None = None                       # InterfaceConfig / PeerConfig attribute
    parse_ini: Callable[[str], Any] | None = None
    how: str = "set"                              # INI: "set" (once per section), "extend" (list), "dns"
    parse_uapi: Callable[[str, str], Any] | None = None
    fmt: Callable[[Any], str] = v.f_str
    mode: str = "both"                            # "l3" | "l2" | "both"
    set: bool = True
    get: bool = True
    list: bool = False                            # the UAPI key may repeat (a set appends, a get lists)
    dest: str | None = None                       # SetPlan/PeerOp attribute (None: attr, or the key's name)
    render: str | None = "given"
    fixed: str | None = None                      # render "always": the value written
    notes: str = ""


S = Setting
I, P = "interface", "peer"
ST = {"set": False, "render": None}              # get only: status the daemon reports

TABLE: tuple[Setting, ...] = (
    # ---- [Interface] / device section ------------------------------------------------------------------------
    S("PrivateKey", "private_key", I, "private_key", v.key, parse_uapi=v.u_hex_key, fmt=v.f_hex,
      notes="required in INI; all-zero in a set removes it; never logged"),
    S("ListenPort", "listen_port", I, "listen_port", v.port, parse_uapi=v.u_port16,
      notes="0 or omitted: a random port; the only UAPI value whose apply may fail (EADDRINUSE)"),
    S("FwMark", "fwmark", I, "fwmark", v.fwmark, parse_uapi=v.u_fwmark, render="nonzero",
      notes="INI: number, 0x hex or off; UAPI: decimal, empty = 0"),
    S("CertificateFile", "wgpy_tls_cert_file", I, "certificate_file", v.file, parse_uapi=v.u_path, get=False,
      render="nonzero", dest="transport", notes="with ListenTLS; relative to the config file; checked at up"),
    S("KeyFile", "wgpy_tls_key_file", I, "key_file", v.file, parse_uapi=v.u_path, get=False, render="nonzero",
      dest="transport", notes="with ListenTLS; a secret file: never read into a message"),
    S("ListenTCP", "wgpy_listen_tcp", I, "listen_tcp", v.stream_port, parse_uapi=v.u_port, render="nonzero",
      dest="transport", notes="UAPI 0: stop listening"),
    S("ListenTLS", "wgpy_listen_tls", I, "listen_tls", v.stream_port, parse_uapi=v.u_port, render="nonzero",
      dest="transport", notes="needs CertificateFile and KeyFile"),
    S("Mode", "wgpy_mode", I, "mode", v.mode, mode="l2", set=False, render=None,
      notes="tun|tap: chosen when the interface is made; get says wgpy_mode=tap on L2 devices only"),
    S("Relay", "wgpy_relay", I, "relay", v.on_off, parse_uapi=v.u_bool, fmt=v.f_bool, mode="l2", render="always",
      notes="forward frames between peers (the hub of a star)"),
    S(None, "wgpy_local_mac", I, mode="l2", list=True, **ST, notes="get: MAC AGE learned behind the TAP"),
    S("MTU", "wgpy_mtu", I, "mtu", v.mtu, parse_uapi=v.u_mtu, render="link",
      notes="INI: 576..65535 or auto (default); UAPI set: the core's MTU in plaintext bytes (L2: frame with "
            "header); get: `N auto` in the automatic mode only"),
    S("MTUProbeInterval", "wgpy_mtu_probe_interval", I, "mtu_probe_interval", v.probe_interval,
      parse_uapi=v.u_probe_interval, fmt=v.f_seconds, render="link",
      notes="seconds between path MTU re-probes, 0/off: none; get: in the automatic MTU mode only"),
    S(None, "wgpy_mtu_auto", I, parse_uapi=v.u_bool, fmt=v.f_bool, render="link", dest="mtu_auto",
      notes="INI: MTU = auto or no MTU (and CAP_NET_ADMIN): the interface MTU follows the path MTUs of the peers (L3: their upper median, L2: the smallest); the "
            "host sets the sockets' PMTU discovery mode; get: true, in the automatic mode only"),
    S(None, "wgpy_mtu_min", I, parse_uapi=v.u_mtu_min, render="link", dest="mtu_min",
      notes="the automatic MTU's floor, the interface's (L2: the TAP's) MTU: 1280 with IPv6 addresses, else 576; "
            "get: in the automatic mode only"),
    S("MetricsListen", "wgpy_metrics_listen", I, "metrics_listen", listen.metrics_listen,
      parse_uapi=listen.u_metrics_listen, fmt=listen.f_listen, render="given", dest="metrics_listen",
      notes="ADDRESS:PORT of the Prometheus /metrics endpoint (ops/metrics.py), off by default; UAPI empty = off; "
            "may fail like listen_port (EADDRINUSE)"),
    S("StunServer", "wgpy_stun_server", I, "stun_server", listen.stun_server, parse_uapi=listen.u_stun_server,
      fmt=listen.f_listen, render="given", dest="stun_server",
      notes="ADDRESS:PORT of a STUN server (RFC 8489), asked from the WireGuard socket itself for this host's "
            "public mapping (the mesh sets it; protocol/stun.py); UAPI empty = off"),
    S(None, "wgpy_stun_mapped", I, **ST, notes="get: ADDRESS:PORT the STUN server saw (the NAT's mapping of the "
                                                "listen port), once answered"),
    S(None, "replace_peers", I, parse_uapi=v.u_true, get=False, render="always", fixed="true"),
    # host setup by `wgpy up` (wg-quick's keys): no UAPI key
    S("Address", None, I, "addresses", v.addresses, how="extend", render=None),
    S("DNS", None, I, "dns", v.dns, how="dns", render=None),
    S("Table", None, I, "table", v.table, render=None),
    S("PreUp", None, I, "pre_up", v.command, how="extend", render=None),
    S("PostUp", None, I, "post_up", v.command, how="extend", render=None),
    S("PreDown", None, I, "pre_down", v.command, how="extend", render=None),
    S("PostDown", None, I, "post_down", v.command, how="extend", render=None),
    S("SaveConfig", None, I, "save_config", v.save_config, render=None, notes="true: `wgpy down` writes the running config back first (ops/saveconf.py)"),
    S("Masquerade", None, I, "masquerade", v.ifnames, how="extend", render=None),
    S("User", None, I, "user", v.user, render=None),

    # ---- [Peer] / peer sections ----------------------------------------------------------------------------
    S("PublicKey", "public_key", P, "public_key", v.key, parse_uapi=v.u_hex_key, fmt=v.f_hex,
      notes="required; starts a peer section"),
    S(None, "remove", P, parse_uapi=v.u_true, get=False, render=None),
    S(None, "update_only", P, parse_uapi=v.u_true, get=False, render=None),
    S("PresharedKey", "preshared_key", P, "preshared_key", v.key, parse_uapi=v.u_hex_key, fmt=v.f_hex,
      notes="get: all zero when none; never logged"),
    S(None, "protocol_version", P, parse_uapi=v.u_protocol_version, render=None),
    S("Endpoint", "endpoint", P, "endpoint", v.any_endpoint, render="custom",
      notes="UDP host:port (names resolved by `wgpy up`); tcp:// and tls:// go to wgpy_endpoint; the UAPI "
            "value is parsed by the host (numeric addresses only)"),
    S(None, "wgpy_endpoint_name", P, **ST,
      notes="get: HOST:PORT of a host-name Endpoint while the peer's endpoint is the address it gave (the "
            "runtime looks it up again: io/reresolve.py)"),
    S(None, "last_handshake_time_sec", P, **ST),
    S(None, "last_handshake_time_nsec", P, **ST),
    S(None, "tx_bytes", P, **ST),
    S(None, "rx_bytes", P, **ST),
    S("PersistentKeepalive", "persistent_keepalive_interval", P, "persistent_keepalive", v.keepalive,
      parse_uapi=v.u_port16, render="nonzero", dest="persistent_keepalive"),
    S("RateLimit", "wgpy_rate_limit", P, "rate_limit", v.rate, parse_uapi=v.u_rate, render="nonzero",
      notes="INI: 20mbit, 500kbit, 1gbit (bits per second), off; UAPI: bits per second, 0 = none. Both directions, "
            "the tunnel's packets counted (ext/ratelimit.py); get: when set"),
    S("RateLimitBurst", "wgpy_rate_limit_burst", P, "rate_limit_burst", v.size, parse_uapi=v.u_burst,
      render="nonzero", notes="INI: bytes (256k, 1m); UAPI: bytes, 0 = the default (10 ms of the rate, at least "
                              "64 KiB); kept when only the rate changes; get: when given"),
    S(None, "wgpy_rate_limit_dropped", P, **ST, notes="get: SENT RECEIVED packets the limit dropped (when set)"),
    S(None, "wgpy_punch", P, parse_uapi=v.u_true, get=False, render=None, dest="punch",
      notes="set only: a packet to the endpoint now (a keepalive, or without a session an initiation even within "
            "REKEY_TIMEOUT of the last): the mesh agent's hole punch on a new endpoint"),
    S(None, "replace_allowed_ips", P, parse_uapi=v.u_true, get=False, render="always", fixed="true"),
    S("AllowedIPs", "allowed_ip", P, "allowed_ips", v.cidrs, how="extend", parse_uapi=v.u_cidr_op, mode="l3",
      list=True, render="each", notes="UAPI: a leading '-' removes the prefix; refused on L2"),
    S(None, "wgpy_replace_allowed_macs", P, parse_uapi=v.u_true, mode="l2", get=False, render="always",
      fixed="true", dest="replace_allowed_macs"),
    S("AllowedMACs", "wgpy_allowed_mac", P, "allowed_macs", v.mac_list, how="extend", parse_uapi=v.u_mac_op,
      fmt=v.f_mac, mode="l2", list=True, render="each", notes="UAPI: a leading '-' removes it"),
    S(None, "wgpy_mac", P, mode="l2", list=True, **ST, notes="get: MAC AGE learned behind the peer"),
    S(None, "wgpy_path_mtu", P, **ST, notes="get: bytes link|icmp|probe[ probing]"),
    S(None, "wgpy_peer_wgpy", P, **ST, notes="get: the extension bits of the peer's HELLO"),
    S(None, "wgpy_endpoint", P, "stream_endpoint", parse_uapi=v.u_url, render="custom", dest="transport",
      notes="INI: Endpoint = tcp://host:port or tls://host:port"),
    S(None, "wgpy_endpoint_state", P, **ST),
    S("FallbackEndpoint", "wgpy_fallback_endpoint", P, "fallback_endpoint", v.stream_url,
      parse_uapi=v.u_url_or_none, render="custom", dest="transport", notes="UAPI: empty = none"),
    S(None, "wgpy_fallback", P, **ST, notes="get: active|standby"),
    S("FallbackAfter", "wgpy_fallback_after", P, "fallback_after", v.seconds, parse_uapi=v.u_seconds,
      fmt=v.f_seconds, dest="transport"),
    S("FallbackProbeInterval", "wgpy_fallback_probe_interval", P, "fallback_probe_interval", v.seconds,
      parse_uapi=v.u_seconds, fmt=v.f_seconds, dest="transport"),
    S(None, "wgpy_fallback_switches", P, **ST),
    S(None, "wgpy_fallback_returns", P, **ST),
    S(None, "wgpy_fallback_probes", P, **ST),
    S("TLSServerName", "wgpy_tls_server_name", P, "tls_server_name", v.server_name, parse_uapi=v.u_server_name,
      get=False, render="custom", dest="transport", notes="default: the URL's host name"),
    S("TLSCAFile", "wgpy_tls_ca_file", P, "tls_ca_file", v.file, parse_uapi=v.u_path, get=False,
      render="nonzero", dest="transport"),
    S("TLSPin", "wgpy_tls_pin", P, "tls_pin", v.pin, parse_uapi=v.u_pin, get=False, render="nonzero",
      dest="transport", notes="INI: what openssl prints, or 64 hex digits; kept as hex"),
    S(None, "wgpy_last_error", P, **ST, notes="get: what is wrong, in words; never key material"),
)


def rows(section: str, *, ini: bool = False, uapi: bool = False, get: bool = False) -> list[Setting]:
    """The rows of a section, in table order; with `ini` those with an INI name, `uapi` a UAPI key, `get` those
    a get reply carries."""
    return [s for s in TABLE if s.section == section and (not ini or s.ini) and (not uapi or s.uapi)
            and (not get or (s.uapi and s.get))]


def by_ini(section: str) -> dict[str, Setting]:
    """INI rows of a section by lower-case name."""
    return {s.ini.lower(): s for s in rows(section, ini=True)}


def by_uapi(section: str) -> dict[str, Setting]:
    """Rows a UAPI set accepts in a section, by key."""
    return {s.uapi: s for s in rows(section, uapi=True) if s.set}


LIST_KEYS = frozenset(s.uapi for s in TABLE if s.uapi and s.list)
