"""Checks before `wgpy up` changes anything: the name is free, the tools and the user the file asks for exist,
and without CAP_NET_ADMIN, that root prepared the TUN this user may attach to (naming the commands root still
has to run otherwise)."""

from __future__ import annotations

import os
import pwd

from .. import config as cfgmod
from ..constants import ETHERNET_HEADER_LEN
from ..host import netlink, nft, privileges
from ..host.privileges import has_net_admin
from . import routes
from .hooks import UpError


def preflight(cfg: cfgmod.InterfaceConfig) -> list[str]:
    """Checks that need no changes to the system. Returns warnings; raises UpError/ConfigError."""
    warnings = []
    w = cfgmod.check_permissions(cfg.path)
    if w:
        warnings.append(w)
    if not has_net_admin():
        _check_attach(cfg)
        return warnings
    if netlink.link_exists(cfg.name):
        raise UpError(f"interface {cfg.name} already exists (in use); choose another name or remove it first")
    routes.check(cfg)        # the table `Table =` names exists; a full tunnel has its `nft`
    if cfg.masquerade and nft.nft_path() is None:
        raise cfgmod.ConfigError(cfg.path, None, "Masquerade",
                                 "needs the `nft` command (Debian package nftables), which is not installed")
    if cfg.user is not None:
        if os.geteuid() != 0:
            raise cfgmod.ConfigError(cfg.path, None, "User", "dropping to another user needs `wgpy up` as root")
        if cfg.dns_servers or cfg.dns_search:
            raise cfgmod.ConfigError(cfg.path, None, "User", "cannot be combined with DNS: the daemon could not "
                                     "restore the resolver configuration at `down` once it is no longer root")
        try:
            privileges.lookup_user(cfg.user)
        except privileges.PrivilegeError as e:
            raise cfgmod.ConfigError(cfg.path, None, "User", str(e)) from None
    return warnings


def _check_attach(cfg: cfgmod.InterfaceConfig) -> None:
    """Without CAP_NET_ADMIN: only a persistent TUN of ours, prepared by root, will do. Raises UpError naming
    the capability and, when the link exists, exactly the commands root still has to run."""
    name = cfg.name
    owner = _tun_owner(name)
    if owner is None:
        raise UpError(
            f"creating interface {name} needs CAP_NET_ADMIN: run as root, or have root create a persistent TUN "
            f"for this user first (ip tuntap add dev {name} mode {cfg.mode} user {_me()}; see README, Without root)")
    uid, gid = owner
    if uid != os.geteuid() and not (uid == -1 and gid in os.getgroups() + [os.getegid()]):
        raise UpError(f"interface {name} exists but is not a TUN device owned by this user (uid {os.geteuid()}); "
                      f"without CAP_NET_ADMIN wgpy can only attach to one created with `user {_me()}`")
    needs_root = []
    if cfg.user is not None:
        needs_root.append("User (dropping privileges needs `wgpy up` as root)")
    if cfg.fwmark:
        needs_root.append("FwMark (marking packets needs CAP_NET_ADMIN)")
    if routes.full_tunnel(cfg):
        needs_root.append("AllowedIPs with a /0 (the full-tunnel fwmark and policy rules need CAP_NET_ADMIN; "
                          "with Table = off route it yourself)")
    if cfg.masquerade:
        needs_root.append("Masquerade (nftables and forwarding need CAP_NET_ADMIN)")
    if cfg.dns_servers or cfg.dns_search:
        needs_root.append("DNS (changing the resolver configuration needs root)")
    if needs_root:
        raise UpError(f"without CAP_NET_ADMIN these settings cannot be applied: {'; '.join(needs_root)}")
    missing = _missing_setup(cfg)
    if missing:
        raise UpError(f"interface {name} is a TUN of this user, but without CAP_NET_ADMIN wgpy cannot configure "
                      f"it; have root run:\n  " + "\n  ".join(missing))


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _tun_owner(name: str) -> tuple[int, int] | None:
    """(owner uid, group gid) of TUN device `name` (-1 = none), or None if it is no TUN device."""
    base = f"/sys/class/net/{name}"
    try:
        with open(f"{base}/owner") as f:
            uid = int(f.read())
        with open(f"{base}/group") as f:
            gid = int(f.read())
    except (OSError, ValueError):
        return None
    return uid, gid


def _missing_setup(cfg: cfgmod.InterfaceConfig) -> list[str]:
    """The `ip` commands still needed for what cfg asks (addresses, MTU, up, routes); reading needs no privilege."""
    name = cfg.name
    nl = netlink.NetlinkSetup(name)
    try:
        main_table = cfg.table in (None, "auto", "main")   # routes in another table are root's business
        mtu = cfg.mtu - ETHERNET_HEADER_LEN if cfg.mtu and cfg.mode == "tap" else cfg.mtu   # L2: the TAP's MTU
        return nl.missing(cfg.addresses, mtu,
                          sorted({n for p in cfg.peers for n in p.allowed_ips}, key=lambda n: (n.version, n.prefixlen))
                          if main_table else [])
    finally:
        nl.close()
