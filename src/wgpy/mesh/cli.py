"""`wgpy server ...`, `wgpy join`, `wgpy status`, `wgpy leave`: argument parsing for the mesh (docs/mesh.md).

The server's config file (--config, default /etc/wgpy/server.toml) names the database and the networks; `init`
writes it. Every admin command (token, nodes, policy) works on the database directly, so it works with the
server running or not; a running server (every instance) picks the change up from the change log within a
fraction of a second.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import time
import tomllib
from pathlib import Path

__all__ = ["add_parsers", "dispatch"]

DEFAULT_CONFIG = "/etc/wgpy/server.toml"
_DURATION = re.compile(r"([0-9]+)([smhd])")


def duration(text: str) -> float:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30m, 1h, 7d)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def add_parsers(sub) -> None:
    p = sub.add_parser("server", help="the mesh control plane (docs/mesh.md)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"server config file (default {DEFAULT_CONFIG})")
    ss = p.add_subparsers(dest="server_cmd", required=True)
    init = ss.add_parser("init", help="make the server's config and database")
    init.add_argument("--network", action="append", required=True, help="address pool, IPv4 and/or IPv6 "
                                                                          "(e.g. 100.80.0.0/16, fd7a:6770::/48)")
    init.add_argument("--db", default="sqlite:////var/lib/wgpy/server.db",
                      help="SQLAlchemy URL: sqlite:////path (default) or postgresql+psycopg://...")
    init.add_argument("--admin-password-file", required=True, help="file holding the web admin's password")
    init.add_argument("--url", action="append", default=[], help="the public https:// URL of a server instance "
                                                                 "(repeat for each): nodes fail over between them")
    run = ss.add_parser("run", help="serve the API")
    run.add_argument("--listen", default="0.0.0.0:8443", help="ADDRESS:PORT (default 0.0.0.0:8443)")
    run.add_argument("--cert", required=True, help="TLS certificate (PEM)")
    run.add_argument("--key", required=True, help="its private key (PEM)")
    run.add_argument("--stun-port", type=int, default=3478, help="UDP port STUN is answered on, on the --listen "
                                                                 "address (default 3478; 0: none)")
    tok = ss.add_parser("token", help="join tokens")
    ts = tok.add_subparsers(dest="token_cmd", required=True)
    tc = ts.add_parser("create", help="make a join token (printed once)")
    tc.add_argument("--tag", action="append", default=[], help="tag of the nodes that join with it")
    tc.add_argument("--expires", type=duration, default=3600.0, help="lifetime (default 1h)")
    tc.add_argument("--reusable", action="store_true", help="may be used more than once")
    ts.add_parser("list", help="the tokens (not their values)")
    tr = ts.add_parser("revoke", help="revoke a token by id")
    tr.add_argument("id", type=int)
    nodes = ss.add_parser("nodes", help="the network's nodes")
    ns = nodes.add_subparsers(dest="nodes_cmd")
    ns.add_parser("list")
    nr = ns.add_parser("remove", help="remove a node everywhere")
    nr.add_argument("name")
    nt = ns.add_parser("tag", help="set a node's tags")
    nt.add_argument("name")
    nt.add_argument("tags", nargs="*")
    dev = ss.add_parser("devices", help="plain WireGuard clients (phone and desktop apps) behind a gateway node")
    ds = dev.add_subparsers(dest="devices_cmd")
    ds.add_parser("list")
    da = ds.add_parser("add", help="make a device's config (and QR code); its private key is shown once, "
                                   "never stored")
    da.add_argument("name")
    da.add_argument("--gateway", required=True, help="the node the device connects to (it forwards for it)")
    da.add_argument("--tag", action="append", default=[])
    da.add_argument("--qr", action="store_true", help="also print the config as a QR code")
    da.add_argument("--png", help="write the QR code to this PNG file (0600) instead of printing it")
    dr = ds.add_parser("remove")
    dr.add_argument("name")
    pol = ss.add_parser("policy", help="who may reach whom")
    ps = pol.add_subparsers(dest="policy_cmd", required=True)
    pset = ps.add_parser("set", help='set the policy from a JSON file: {"rules": [{"from": [...], "to": [...]}]}')
    pset.add_argument("file")
    ps.add_parser("show")

    def node_args(q, with_iface=True):
        q.add_argument("--interface", default="wgpy0", help="the mesh interface (default wgpy0)")
        q.add_argument("--state-dir", type=Path, default=Path("/var/lib/wgpy/mesh"), help=argparse.SUPPRESS)

    j = sub.add_parser("join", help="put this machine on a mesh network")
    j.add_argument("url", help="the server, https://HOST:PORT")
    j.add_argument("--token", required=True)
    j.add_argument("--name", default=os.uname().nodename.split(".")[0], help="this node's name (default: host name)")
    j.add_argument("--ca", help="CA certificate to trust the server with (a self-signed server: its certificate)")
    j.add_argument("--port", type=int, default=51820, help="UDP listen port (default 51820)")
    node_args(j)
    s = sub.add_parser("status", help="the mesh network as this node sees it")
    s.add_argument("--json", action="store_true")
    node_args(s)
    lv = sub.add_parser("leave", help="leave the mesh network and take the interface down")
    lv.add_argument("--force", action="store_true", help="leave locally even if the server cannot be reached")
    node_args(lv)
    ag = sub.add_parser("agent", help=argparse.SUPPRESS)
    ag.add_argument("interface")
    ag.add_argument("--state-dir", type=Path, default=Path("/var/lib/wgpy/mesh"))


def _config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        raise SystemExit(f"wgpy: {path}: no such file (run `wgpy server init` first, or give --config)") from None
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"wgpy: {path}: {e}") from None
    for key in ("db", "networks"):
        if key not in cfg:
            raise SystemExit(f"wgpy: {path}: missing key {key!r}")
    return cfg


def _store(cfg_path: str):
    from .store import Store, StoreError
    cfg = _config(cfg_path)
    try:
        return Store(cfg["db"])
    except StoreError as e:
        raise SystemExit(f"wgpy: {e}") from None


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_init(args) -> int:
    from .store import Store, StoreError, hash_password
    nets = []
    for n in args.network:
        try:
            net = ipaddress.ip_network(n, strict=True)
        except ValueError as e:
            print(f"wgpy: --network {n}: {e}", file=sys.stderr)
            return 1
        if (net.version == 4 and net.prefixlen > 30) or (net.version == 6 and net.prefixlen > 120):
            print(f"wgpy: --network {n}: too small for a network of nodes", file=sys.stderr)
            return 1
        nets.append(str(net))
    if len({ipaddress.ip_network(n).version for n in nets}) != len(nets):
        print("wgpy: give at most one IPv4 and one IPv6 --network", file=sys.stderr)
        return 1
    try:
        password = Path(args.admin_password_file).read_text().strip()
    except OSError as e:
        print(f"wgpy: --admin-password-file: {e.strerror}: {args.admin_password_file}", file=sys.stderr)
        return 1
    if len(password) < 8:
        print("wgpy: the admin password must be at least 8 characters", file=sys.stderr)
        return 1
    if args.db.startswith("sqlite:///"):
        Path(args.db[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    server_key = X25519PrivateKey.generate().private_bytes_raw()
    try:
        bad = [u for u in args.url if not u.startswith("https://")]
        if bad:
            print(f"wgpy: --url {bad[0]}: expected https://HOST:PORT", file=sys.stderr)
            return 1
        Store(args.db).create(server_key, hash_password(password), nets, args.url)
    except StoreError as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    cfg = Path(args.config)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# wgpy server (docs/mesh.md)\ndb = {_toml_str(args.db)}\n"
            f"networks = [{', '.join(_toml_str(n) for n in nets)}]\n")
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # the URL may hold a database password
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"wgpy: server config {cfg}, database {args.db}, networks {', '.join(nets)}", file=sys.stderr)
    return 0


def server_main(args) -> int:
    import json
    from .model import Policy, PolicyError
    from .store import StoreError
    if args.server_cmd == "init":
        return server_init(args)
    store = _store(args.config)
    try:
        if args.server_cmd == "run":
            import logging
            from .server import run_server
            logging.basicConfig(level=logging.INFO, format="%(asctime)s wgpy server: %(message)s")
            host, _, port = args.listen.rpartition(":")
            if not port.isdigit() or not host:
                print(f"wgpy: --listen {args.listen}: expected ADDRESS:PORT", file=sys.stderr)
                return 1
            for f in (args.cert, args.key):
                if not os.path.isfile(f):
                    print(f"wgpy: {f}: no such file", file=sys.stderr)
                    return 1
            store.server_private()            # initialised? (a clear error before binding)
            if not 0 <= args.stun_port <= 65535:
                print(f"wgpy: --stun-port {args.stun_port}: expected 0-65535", file=sys.stderr)
                return 1
            run_server(store, host.strip("[]"), int(port), args.cert, args.key, args.stun_port)
            return 0
        if args.server_cmd == "token":
            if args.token_cmd == "create":
                from .model import valid_tag
                bad = [t for t in args.tag if not valid_tag(t) or t == "*"]
                if bad:
                    print(f"wgpy: invalid tag {bad[0]!r} (letters, digits, - and _)", file=sys.stderr)
                    return 1
                print(store.create_token(args.tag, args.expires, args.reusable))
                return 0
            if args.token_cmd == "list":
                now = time.time()
                for t in store.tokens():
                    state = t.state(now)
                    print(f"{t.id}\t{state}\t{'reusable' if t.reusable else 'single-use'}\tuses {t.uses}\t"
                          f"tags {','.join(t.tags) or '-'}\texpires {time.strftime('%Y-%m-%d %H:%M', time.localtime(t.expires))}")
                return 0
            if not store.revoke_token(args.id):
                print(f"wgpy: no token {args.id}", file=sys.stderr)
                return 1
            return 0
        if args.server_cmd == "nodes":
            if args.nodes_cmd in (None, "list"):
                for n in store.all_nodes():
                    print(f"{n.name}\t{', '.join(n.addresses)}\t{','.join(sorted(n.tags)) or '-'}\t"
                          f"{n.endpoint or '-'}\tlast seen {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(n.last_seen)) if n.last_seen else 'never'}")
                return 0
            node = store.node_by_name(args.name)
            if node is None:
                print(f"wgpy: no node {args.name!r} (`wgpy server nodes list`)", file=sys.stderr)
                return 1
            if args.nodes_cmd == "remove":
                store.remove_node(node.id)
                print(f"wgpy: removed {node.name}", file=sys.stderr)
                return 0
            from .model import valid_tag
            bad = [t for t in args.tags if not valid_tag(t) or t == "*"]
            if bad:
                print(f"wgpy: invalid tag {bad[0]!r}", file=sys.stderr)
                return 1
            store.set_tags(node.id, args.tags)
            return 0
        if args.server_cmd == "devices":
            return devices_main(args, store)
        if args.server_cmd == "policy":
            if args.policy_cmd == "show":
                print(store.policy().to_json())
                return 0
            try:
                policy = Policy.parse(Path(args.file).read_text())
            except OSError as e:
                print(f"wgpy: {args.file}: {e.strerror}", file=sys.stderr)
                return 1
            except PolicyError as e:
                print(f"wgpy: {args.file}: {e}; the policy is unchanged", file=sys.stderr)
                return 1
            store.set_policy(policy)
            print(f"wgpy: policy set ({len(policy.rules)} rule(s))", file=sys.stderr)
            return 0
    except StoreError as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    _ = json
    return 2


def devices_main(args, store) -> int:
    from .store import JoinError
    if args.devices_cmd in (None, "list"):
        nodes = {n.id: n for n in store.all_nodes()}
        for n in nodes.values():
            if n.gateway is not None:
                print(f"{n.name}\t{', '.join(n.addresses)}\tvia {nodes[n.gateway].name if n.gateway in nodes else '?'}")
        return 0
    if args.devices_cmd == "remove":
        d = store.node_by_name(args.name)
        if d is None or d.gateway is None:
            print(f"wgpy: no device {args.name!r} (`wgpy server devices list`)", file=sys.stderr)
            return 1
        store.remove_node(d.id)
        print(f"wgpy: removed {d.name}", file=sys.stderr)
        return 0
    gw = store.node_by_name(args.gateway)
    if gw is None or gw.gateway is not None:
        print(f"wgpy: --gateway {args.gateway}: no such node (`wgpy server nodes list`)", file=sys.stderr)
        return 1
    if not gw.endpoint:
        print(f"wgpy: note: {gw.name} has no known endpoint yet; add Endpoint = HOST:{gw.listen_port} to the "
              "config by hand", file=sys.stderr)
    try:
        dev, text = store.new_device(args.name, gw.name, args.tag, time.time())
    except JoinError as e:
        print(f"wgpy: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    if args.qr or args.png:
        from ..ops import qr
        code = qr.make(text)
        if args.png:
            qr.write_png(code, args.png)
        else:
            qr.terminal(code, sys.stderr)
    print(f"wgpy: device {dev.name} ({', '.join(dev.addresses)}) via {gw.name}; the private key above is not "
          "stored anywhere: keep this config", file=sys.stderr)
    return 0


def dispatch(args) -> int | None:
    """Run a mesh command, or None when `args` is not one."""
    if args.cmd == "server":
        return server_main(args)
    from . import agent
    if args.cmd == "join":
        return agent.join_main(args.url, args.token, args.name, args.ca, args.interface, args.port, args.state_dir)
    if args.cmd == "status":
        return agent.status_main(args.interface, args.state_dir, args.json)
    if args.cmd == "leave":
        return agent.leave_main(args.interface, args.state_dir, args.force)
    if args.cmd == "agent":
        return agent.agent_main(args.interface, args.state_dir)
    return None
