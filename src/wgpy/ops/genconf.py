"""`wgpy genconf --peer-of IFACE --address 10.0.0.7/32 > phone.conf`: a client config for a new peer, added live.

1. a new key pair (and with --psk a preshared key), made here and never written anywhere but stdout;
2. the running interface, through its UAPI socket: its public key (from the get reply), its UDP port, its peers'
   allowed IPs (the new address must not be routed to another peer already);
3. the peer is added live with a UAPI set (public_key, allowed_ip = the client's addresses); when an address is
   outside every network of the interface's own addresses, a route to it through the interface is added too
   (as `up` does for AllowedIPs);
4. the client config is printed on stdout: [Interface] PrivateKey, Address (DNS), [Peer] the server's PublicKey,
   Endpoint (--endpoint HOST[:PORT]; without a port the interface's; without it the address the host's default
   route leaves from), AllowedIPs (--allowed-ips, default: the networks of the interface's addresses),
   PersistentKeepalive (default 25: a phone is behind NAT).

genconf never writes the interface's config file. When that file (the one its `up` read, else NAME.conf where
`up NAME` looks) says SaveConfig = true, a note on stderr says `wgpy down` will write the peer into it
(ops/saveconf.py); otherwise the note says the file was not changed and gives the [Peer] section to add to it,
without any secret.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import sys

from .. import crypto

__all__ = ["genconf_main", "client_config", "GenconfError"]


class GenconfError(Exception):
    pass


def _get(name: str) -> tuple[dict, list[dict]]:
    from ..show import parse_get
    from ..uapi.server import request
    try:
        reply = request(name, "get=1\n")
    except OSError as e:
        raise GenconfError(f"unable to access interface {name}: {e.strerror or e}") from None
    dev, peers = parse_get(reply)
    if dev.get("errno", "0") != "0" or "private_key" not in dev:
        raise GenconfError(f"interface {name} has no private key (errno {dev.get('errno', '?')})")
    return dev, peers


def _link_networks(name: str) -> list:
    """The interface's own addresses (ip_interface objects), through netlink."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return []
        return [ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                for a in ipr.get_addr(index=idx[0])]


def _default_source() -> str | None:
    """The source address of the host's default route (IPv4 first): a guess at the endpoint's address."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for family, probe in ((2, "192.0.2.1"), (10, "2001:db8::1")):
            try:
                routes = ipr.route("get", dst=probe, family=family)
            except Exception:
                continue
            for r in routes:
                src = r.get_attr("RTA_PREFSRC")
                if src:
                    return src
    return None


def _endpoint(given: str | None, port: int) -> tuple[str, bool]:
    """(HOST:PORT, guessed)."""
    from ..settings.values import host_port
    if given:
        if given.startswith("[") and "]:" in given or (given.count(":") == 1 and not given.startswith("[")):
            return given, False
        return host_port(given.strip("[]"), port), False
    src = _default_source()
    if src is None:
        raise GenconfError("cannot tell this host's address (no default route): give --endpoint HOST[:PORT]")
    return host_port(src, port), True


def client_config(private_key: bytes, addresses: list, dns: list[str], server_public: bytes, psk: bytes | None,
                  endpoint: str, allowed: list, keepalive: int) -> str:
    lines = ["[Interface]", f"PrivateKey = {crypto.encode_key(private_key)}",
             f"Address = {', '.join(str(a) for a in addresses)}"]
    if dns:
        lines.append(f"DNS = {', '.join(dns)}")
    lines += ["", "[Peer]", f"PublicKey = {crypto.encode_key(server_public)}"]
    if psk is not None:
        lines.append(f"PresharedKey = {crypto.encode_key(psk)}")
    lines += [f"Endpoint = {endpoint}", f"AllowedIPs = {', '.join(str(n) for n in allowed)}"]
    if keepalive:
        lines.append(f"PersistentKeepalive = {keepalive}")
    return "\n".join(lines) + "\n"


def _parse_list(items: list[str], make, what: str) -> list:
    out = []
    for item in items:
        for part in item.replace(",", " ").split():
            try:
                out.append(make(part))
            except ValueError:
                raise GenconfError(f"invalid {what} {part!r}") from None
    return out


def genconf(name: str, address: list[str], endpoint: str | None, allowed_ips: list[str] | None, dns: list[str],
            keepalive: int, with_psk: bool) -> str:
    addrs = _parse_list(address, lambda s: ipaddress.ip_interface(s if "/" in s else
                                                                  s + ("/128" if ":" in s else "/32")), "address")
    if not addrs:
        raise GenconfError("give the client's tunnel address: --address 10.0.0.7/32")
    dns = [str(d) for d in _parse_list(dns, ipaddress.ip_address, "DNS server")]
    # the server routes the client's addresses to it: host prefixes, as a client config's Address usually is
    routed = [ipaddress.ip_network(a.ip) for a in addrs]
    dev, peers = _get(name)
    for p in peers:
        for cidr in p.get("allowed_ips", ()):
            net = ipaddress.ip_network(cidr)
            for r in routed:
                if r.version == net.version and r.subnet_of(net):
                    raise GenconfError(f"{r} is already routed to peer {crypto.encode_key(bytes.fromhex(p['public_key']))}"
                                       f" ({net}): choose another --address")
    own = _link_networks(name)
    allowed = (_parse_list(allowed_ips, lambda s: ipaddress.ip_network(s, strict=False), "network")
               if allowed_ips else sorted({a.network for a in own}, key=lambda n: (n.version, n)))
    if not allowed:
        raise GenconfError(f"interface {name} has no address to route to: give --allowed-ips (e.g. 0.0.0.0/0, ::/0)")
    port = int(dev.get("listen_port", "0"))
    ep, guessed = _endpoint(endpoint, port)
    server_public = crypto.public_from_private(bytes.fromhex(dev["private_key"]))
    dev.pop("private_key")
    private = crypto.clamp(os.urandom(32))
    public = crypto.public_from_private(private)
    psk = os.urandom(32) if with_psk else None

    from ..uapi.server import request
    body = f"set=1\npublic_key={public.hex()}\n"
    if psk is not None:
        body += f"preshared_key={psk.hex()}\n"
    body += "".join(f"allowed_ip={r}\n" for r in routed)
    reply = request(name, body)
    if reply.strip() != "errno=0":
        raise GenconfError(f"adding the peer to {name} failed ({reply.strip()})")
    outside = [r for r in routed if not any(r.version == a.version and r.subnet_of(a.network) for a in own)]
    if outside:
        _add_routes(name, outside)
    _note(name, public, routed, guessed, ep, psk is not None)
    return client_config(private, addrs, dns, server_public, psk, ep, allowed, keepalive)


def _add_routes(name: str, nets: list) -> None:
    from ..host import netlink
    try:
        import socket
        netlink.add_routes(nets, socket.if_nametoindex(name), None)
        print(f"wgpy: added route{'s' if len(nets) > 1 else ''} {', '.join(map(str, nets))} via {name}",
              file=sys.stderr)
    except OSError as e:
        print(f"wgpy: warning: no route to {', '.join(map(str, nets))} via {name}: {e.strerror or e}",
              file=sys.stderr)


def _note(name: str, public: bytes, routed: list, guessed: bool, endpoint: str, psk: bool) -> None:
    from ..config import CONFIG_DIRS
    print(f"wgpy: peer {crypto.encode_key(public)} added to {name} (live)", file=sys.stderr)
    if guessed:
        print(f"wgpy: Endpoint = {endpoint} is this host's default-route address; give --endpoint if the "
              f"client reaches it elsewhere (a public address, a port forward)", file=sys.stderr)
    from .saveconf import config_path_of, saves
    path = config_path_of(name, None)
    if saves(path) is not None:
        print(f"wgpy: {path} has SaveConfig = true: `wgpy down {name}` writes the peer into it, so it stays "
              f"after a restart", file=sys.stderr)
        return
    for path in [path] + [os.path.join(d, f"{name}.conf") for d in CONFIG_DIRS]:
        if path is not None and os.path.exists(path):
            print(f"wgpy: {path} was not changed; to keep the peer after a restart add:\n\n[Peer]\n"
                  f"PublicKey = {crypto.encode_key(public)}\n"
                  + ("PresharedKey = <the PresharedKey of the client config>\n" if psk else "")
                  + f"AllowedIPs = {', '.join(map(str, routed))}\n", file=sys.stderr)
            break


def _warn_if_shared_output() -> None:
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        print("Warning: writing a private key to a file others can read.\nConsider setting the umask to 077 "
              "(or chmod 600 the file).", file=sys.stderr)


def genconf_main(args) -> int:
    from ..quick.down import check_interface_name
    why = check_interface_name(args.peer_of)
    if why is not None:
        print(f"wgpy: {why}", file=sys.stderr)
        return 1
    _warn_if_shared_output()
    try:
        text = genconf(args.peer_of, args.address, args.endpoint, args.allowed_ips, args.dns or [],
                       args.keepalive, args.psk)
    except GenconfError as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0
