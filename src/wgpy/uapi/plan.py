"""A UAPI `set=1` request -> a SetPlan, validated completely before anything is applied (uapi/protocol.py
applies it). Pure: the keys, their sections, modes and value types come from the settings table
(settings/table.py); only `endpoint=` is parsed by the host (io/udp.py: numeric addresses only).

Errors carry wireguard-go's negative errno values: errno=-22 for an invalid key or value, -71 (EPROTO) for a
line without '='. Messages name the key only if it looks like one, and never hold a value (it may be a key).
"""

from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable

from ..settings.table import by_uapi
from ..settings.values import Bad, BadAtLine

EINVAL = -errno.EINVAL
EPROTO = -errno.EPROTO
EIO = -errno.EIO
EADDRINUSE = -errno.EADDRINUSE
UNSET = object()


class UapiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class PeerOp:
    public_key: bytes
    line: int
    remove: bool = False
    update_only: bool = False
    preshared_key: object = field(default=UNSET, repr=False)   # never in a repr (tracebacks, logs)
    protocol_version: object = UNSET
    endpoint: object = UNSET
    persistent_keepalive: object = UNSET
    rate_limit: object = UNSET          # wgpy_rate_limit, bits per second (0: none)
    rate_limit_burst: object = UNSET    # wgpy_rate_limit_burst, bytes (0: the default)
    punch: bool = False                 # wgpy_punch: a packet to the endpoint now (Device.punch)
    replace_allowed_ips: bool = False
    allowed_ips: list[tuple[bool, ipaddress.IPv4Network | ipaddress.IPv6Network]] = field(default_factory=list)
    replace_allowed_macs: bool = False
    allowed_macs: list[tuple[bool, bytes]] = field(default_factory=list)
    transport: dict = field(default_factory=dict, repr=False)   # the wgpy_* stream keys (uapi/transport.py)
    section: int = 0                  # which peer section of the request (0 for the first public_key)


@dataclass
class SetPlan:
    private_key: object = field(default=UNSET, repr=False)
    listen_port: object = UNSET
    fwmark: object = UNSET
    replace_peers: bool = False
    relay: object = UNSET
    mtu: object = UNSET                    # wgpy_mtu: the core's MTU (largest plaintext)
    mtu_probe_interval: object = UNSET     # wgpy_mtu_probe_interval
    mtu_auto: object = UNSET               # wgpy_mtu_auto: the automatic MTU mode (the host: Host.set_mtu_auto)
    mtu_min: object = UNSET                # wgpy_mtu_min: its floor
    metrics_listen: object = UNSET         # wgpy_metrics_listen: (address, port) or None (the host: Host.set_metrics_listen)
    stun_server: object = UNSET            # wgpy_stun_server: (address, port) or None (the host: Host.set_stun_server)
    peers: list[PeerOp] = field(default_factory=list)
    transport: dict = field(default_factory=dict, repr=False)   # the wgpy_* stream keys (uapi/transport.py)


_KEY_NAME = re.compile(r"[a-z_]{1,40}")
_DEVICE = by_uapi("interface")
_PEER = by_uapi("peer")


def _name(key: str) -> str:
    """A key name for an error message: only if it looks like one, so a line holding key material (a value typed
    where the name should be) never reaches the log."""
    return f" {key!r}" if _KEY_NAME.fullmatch(key) else ""


class SetParser:
    """A set request parsed one line at a time (parse_set feeds it a whole request; uapi/protocol.py feeds a
    large one in slices and takes the finished peer sections as it goes). `plan` holds the device section and
    the peer sections not yet taken; `target` is the section lines now go to (the plan itself before the first
    public_key). Raises UapiError at the first bad line, numbered from 1 after the operation line."""

    def __init__(self, parse_endpoint: Callable[[str], object], l2: bool = False) -> None:
        self.parse_endpoint = parse_endpoint
        self.l2 = l2
        self.plan = SetPlan()
        self.target: SetPlan | PeerOp = self.plan
        self.n = 0                      # lines parsed
        self.sections = 0               # peer sections begun

    def line(self, line: str) -> None:
        self.n += 1
        n, plan, target, l2 = self.n, self.plan, self.target, self.l2
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(EPROTO, f"line {n}: expected key=value")
        section = "device" if target is plan else "peer"
        row = (_DEVICE if target is plan else _PEER).get(key)
        if key == "public_key":
            row = _PEER[key]
        elif row is None or (row.mode == "l2" and not l2):
            raise UapiError(EINVAL, f"line {n}: invalid {section} key{_name(key)}")
        elif row.mode == "l3" and l2:
            raise UapiError(EINVAL, f"line {n}: {key} is not used by an L2 (tap) device; use wgpy_allowed_mac")
        try:
            if row.parse_uapi is not None:
                parsed = row.parse_uapi(value, key)
            else:                                               # endpoint=: the host's address syntax
                try:
                    parsed = self.parse_endpoint(value)
                except ValueError:
                    raise BadAtLine(f"invalid {key}") from None
        except BadAtLine as e:
            raise UapiError(EINVAL, f"line {n}: {e}") from None
        except Bad as e:
            raise UapiError(EINVAL, str(e)) from None
        if key == "public_key":
            self.target = PeerOp(parsed, n, section=self.sections)
            self.sections += 1
            plan.peers.append(self.target)
            return
        dest = row.dest or row.attr or row.uapi
        if dest == "transport":
            target.transport[key] = parsed
        elif row.list:
            getattr(target, dest).append(parsed)
        else:
            setattr(target, dest, parsed)

    def take_finished(self) -> list[PeerOp]:
        """The peer sections that are complete (all but the one lines still go to), removed from the plan."""
        peers = self.plan.peers
        keep = 1 if peers and self.target is peers[-1] else 0
        done = peers[:len(peers) - keep]
        del peers[:len(peers) - keep]
        return done


def parse_set(lines: list[str], parse_endpoint: Callable[[str], object], l2: bool = False) -> SetPlan:
    """Parse a set request for an L3 device, or with `l2` for an L2 (TAP) device."""
    parser = SetParser(parse_endpoint, l2)
    for line in lines:
        parser.line(line)
    return parser.plan
