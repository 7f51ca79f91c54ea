"""The mesh control plane's state, pure: nodes, policy, and each node's view, kept incrementally.

The server (mesh/server.py) feeds it what the database says changed and pushes what it returns; nothing here
does I/O or reads a clock (times are given). A node's *view* is the set of peers it may reach: their keys,
addresses and endpoints, what the data plane needs, nothing that changes by the minute: whether a peer is online
is asked for (`wgpy status`), never pushed, so a thousand nodes reconnecting after a server restart cost a
thousand view messages, not a million. Policy decides which pairs may reach each other; it is enforced by cryptokey routing,
so a pair the policy denies never appears in either view and has no session at all.

Incremental: adding, changing or removing one node costs one policy check per other node and a delta per node
whose view changes (the nodes it affects), never a recomputation of every node's view. Only a policy change
rebuilds the views, and then pushes only the differences.

Devices (plain WireGuard clients, the phone and desktop apps, which run no agent) hang off a gateway node: a
device is a peer of its gateway only, and its addresses are routed through the gateway (they are in the
gateway's AllowedIPs at every node that has the gateway as a peer). The gateway forwards between its devices and
the mesh. Adding or removing a device changes the gateway's view and the gateway's entry at its peers only.

Deltas are (node id, message) pairs, the messages the server sends down each node's stream (a node that has
just joined gets none: its stream starts with its whole view):
    {"type": "upsert", "version": V, "peer": PEER}      a peer added to the view, or one of its fields changed
    {"type": "remove", "version": V, "public_key": KEY}  a peer left the view
where V is that node's view version (it goes up by one per delta; a node that sees a gap asks for the whole view).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["Node", "Policy", "PolicyError", "Mesh", "allocate", "peer_entry", "device_config"]


@dataclass(frozen=True)
class Node:
    id: int
    name: str
    public_key: str                       # base64, as wg prints it
    addresses: tuple[str, ...]            # one per network: "100.80.0.3", "fd7a:6770::3"
    tags: frozenset[str] = frozenset()
    endpoint: str | None = None           # "ip:port" / "[ip6]:port" where others reach its UDP port
    online: bool = False
    last_seen: float = 0.0                # Unix time its stream was last seen
    listen_port: int = 0                  # its UDP port (the endpoint is the address its stream comes from)
    gateway: int | None = None            # a device: the node it is reached through (None: a node)
    candidates: tuple[str, ...] = ()      # where it may be reached, as it found them: "srflx ip:port" (its
                                          # NAT's mapping, by STUN), "host ip:port" (its own addresses)


def _host_routes(addresses) -> list[str]:
    return [f"{a}/{128 if ':' in a else 32}" for a in addresses]


def peer_entry(node: Node, routed: tuple[str, ...] = ()) -> dict:
    """What a view holds about a peer; `routed`: the addresses of the devices behind it (a gateway)."""
    e = {"name": node.name, "public_key": node.public_key,
         "allowed_ips": _host_routes(node.addresses) + _host_routes(routed),
         "endpoint": node.endpoint, "tags": sorted(node.tags)}
    if node.candidates:
        e["candidates"] = list(node.candidates)
    if node.gateway is not None:
        e["device"] = True
    return e


class PolicyError(ValueError):
    """A malformed policy: the message says what and where."""


@dataclass(frozen=True)
class Policy:
    """Which nodes may reach which: rules of (from tags, to tags), either side "*" for any node. A pair (a, b) is
    allowed when some rule matches it in either direction (a tunnel carries both ways; cryptokey routing cannot
    tell who opened a flow). No rules: every node may reach every other (the default)."""

    rules: tuple[tuple[frozenset[str], frozenset[str]], ...] = ()

    @staticmethod
    def parse(text: str) -> "Policy":
        """The policy file's JSON: {"rules": [{"from": ["laptops"], "to": ["servers"]}, ...]}; tags or "*"."""
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise PolicyError(f"not JSON: {e}") from None
        if not isinstance(doc, dict) or set(doc) - {"rules"}:
            raise PolicyError('expected an object with one key, "rules"')
        rules = doc.get("rules", [])
        if not isinstance(rules, list):
            raise PolicyError('"rules" must be a list')
        out = []
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict) or set(rule) != {"from", "to"}:
                raise PolicyError(f'rule {i + 1}: expected {{"from": [...], "to": [...]}}')
            sides = []
            for side in ("from", "to"):
                tags = rule[side]
                if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and valid_tag(t)
                                                                    for t in tags):
                    raise PolicyError(f'rule {i + 1}: "{side}" must be a non-empty list of tags '
                                      '(letters, digits, - and _) or "*"')
                sides.append(frozenset(tags))
            out.append((sides[0], sides[1]))
        return Policy(tuple(out))

    def to_json(self) -> str:
        return json.dumps({"rules": [{"from": sorted(a), "to": sorted(b)} for a, b in self.rules]})

    def allows(self, a: Node, b: Node) -> bool:
        if not self.rules:
            return True
        for src, dst in self.rules:
            if (_match(src, a) and _match(dst, b)) or (_match(src, b) and _match(dst, a)):
                return True
        return False


def valid_tag(tag: str) -> bool:
    return tag == "*" or (0 < len(tag) <= 63 and all(c.isalnum() or c in "-_" for c in tag) and tag.isascii())


def _match(tags: frozenset[str], node: Node) -> bool:
    return "*" in tags or not tags.isdisjoint(node.tags)


@dataclass
class Mesh:
    policy: Policy = field(default_factory=Policy)
    nodes: dict[int, Node] = field(default_factory=dict)
    peers: dict[int, set[int]] = field(default_factory=dict)      # node id -> the ids in its view
    versions: dict[int, int] = field(default_factory=dict)        # node id -> its view version
    devices: dict[int, Node] = field(default_factory=dict)        # device id -> device
    behind: dict[int, set[int]] = field(default_factory=dict)     # gateway node id -> its devices' ids
    _json: dict[int, str] = field(default_factory=dict, repr=False)   # id -> its entry as JSON (view_json)
    by_tag: dict[str, set[int]] = field(default_factory=dict, repr=False)   # tag -> the nodes that have it
    by_key: dict[str, int] = field(default_factory=dict, repr=False)        # public key -> node or device id

    def find(self, public_key: str) -> Node | None:
        """The node (or device) with this public key."""
        i = self.by_key.get(public_key)
        return None if i is None else self.nodes.get(i) or self.devices.get(i)

    def view_ids(self, node_id: int) -> list[int]:
        """The ids in a node's view: its peers, then (a gateway) its devices."""
        return sorted(self.peers.get(node_id, ())) + sorted(self.behind.get(node_id, ()))

    def reachable(self, node: Node) -> set[int]:
        """The ids of the nodes `node` may reach under the policy, from the tag index: the work is the rules
        plus the nodes that match them, not a check of every node (a join in a network of 10,000 split into
        100 tags costs ~100, not 10,000 x the rules)."""
        rules = self.policy.rules
        if not rules:
            out = set(self.nodes)
        else:
            out = set()
            tags = node.tags
            for src, dst in rules:
                for a, b in ((src, dst), (dst, src)):
                    if "*" in a or not tags.isdisjoint(a):
                        if "*" in b:
                            return set(self.nodes) - {node.id}
                        for t in b:
                            out |= self.by_tag.get(t, set())
        out.discard(node.id)
        return out

    def _index(self, old: Node | None, node: Node | None) -> None:
        if old is not None:
            for t in old.tags:
                ids = self.by_tag.get(t)
                if ids is not None:
                    ids.discard(old.id)
                    if not ids:
                        del self.by_tag[t]
        if node is not None:
            for t in node.tags:
                self.by_tag.setdefault(t, set()).add(node.id)

    def entry(self, node_id: int) -> dict:
        """A view's entry for a node or a device."""
        if node_id in self.devices:
            return peer_entry(self.devices[node_id])
        routed = tuple(a for d in sorted(self.behind.get(node_id, ())) for a in self.devices[d].addresses)
        return peer_entry(self.nodes[node_id], routed)

    def entry_json(self, node_id: int) -> str:
        text = self._json.get(node_id)
        if text is None:
            text = self._json[node_id] = json.dumps(self.entry(node_id), separators=(",", ":"))
        return text

    def view_json(self, node_id: int) -> str:
        """view() as JSON text, from each entry's cached JSON: a node connecting to a network of N nodes costs a
        join of N strings, not N dicts serialised again (a server restart reconnects every node at once)."""
        return ('{"type":"view","version":%d,"peers":[%s]}'
                % (self.versions.get(node_id, 0), ",".join(self.entry_json(p) for p in self.view_ids(node_id))))

    def view(self, node_id: int) -> dict:
        """The whole view of a node: {"type": "view", "version": V, "peers": [...]} (a gateway's devices too)."""
        return {"type": "view", "version": self.versions.get(node_id, 0),
                "peers": [self.entry(p) for p in self.view_ids(node_id)]}

    def _bump(self, node_id: int) -> int:
        v = self.versions.get(node_id, 0) + 1
        self.versions[node_id] = v
        return v

    def _upsert(self, to: int, peer: Node, out: list, entry: dict | None = None) -> None:
        out.append((to, {"type": "upsert", "version": self._bump(to),
                         "peer": entry if entry is not None else self.entry(peer.id)}))

    def _remove(self, to: int, peer: Node, out: list) -> None:
        out.append((to, {"type": "remove", "version": self._bump(to), "public_key": peer.public_key}))

    def upsert(self, node: Node) -> list[tuple[int, dict]]:
        """A node joined or changed (endpoint, online state, tags), or a device was added: the deltas for every
        node it affects."""
        if node.gateway is not None:
            return self._upsert_device(node)
        out: list = []
        old = self.nodes.get(node.id)
        self.nodes[node.id] = node
        self.by_key[node.public_key] = node.id
        self._json.pop(node.id, None)
        mine = self.peers.setdefault(node.id, set())
        self.versions.setdefault(node.id, 0)
        if old is not None and old.tags == node.tags:
            # the same pairs as before: only the nodes that have it as a peer hear of the change
            if _entry_changed(old, node):
                entry = self.entry(node.id)
                for other in sorted(mine):
                    self._upsert(other, node, out, entry)
            return out
        self._index(old, node)
        want = self.reachable(node)
        kept = mine & want
        entry = self.entry(node.id)               # one entry for every delta about it (shared, read-only)
        new = old is None                         # a new node gets its whole view when it connects: no deltas
        for other_id in sorted(want - mine):
            mine.add(other_id)
            self.peers[other_id].add(node.id)
            self._upsert(other_id, node, out, entry)
            if not new:
                self._upsert(node.id, self.nodes[other_id], out)
        for other_id in sorted(mine - want):
            mine.discard(other_id)
            self.peers[other_id].discard(node.id)
            self._remove(other_id, node, out)
            self._remove(node.id, self.nodes[other_id], out)
        if _entry_changed(old, node):             # its tags are in its entry: the peers it keeps hear of them
            for other_id in sorted(kept):
                self._upsert(other_id, node, out, entry)
        return out

    def _upsert_device(self, dev: Node) -> list[tuple[int, dict]]:
        out: list = []
        old = self.devices.get(dev.id)
        if old is not None and old.gateway != dev.gateway:
            out += self.remove(dev.id)
            old = None
        gw = self.nodes.get(dev.gateway)
        if gw is None:
            return out                           # its gateway is gone: the device waits, reaching nobody
        self.devices[dev.id] = dev
        self.by_key[dev.public_key] = dev.id
        self._json.pop(dev.id, None)
        self._json.pop(gw.id, None)              # its entry routes the device's addresses
        self.behind.setdefault(dev.gateway, set()).add(dev.id)
        if old is None or peer_entry(old) != peer_entry(dev):
            self._upsert(gw.id, dev, out)        # the gateway has the device as a peer
        if old is None or old.addresses != dev.addresses:
            for other in self.peers.get(gw.id, ()):
                self._upsert(other, gw, out)     # and routes its addresses for everyone who reaches it
        return out

    def remove(self, node_id: int) -> list[tuple[int, dict]]:
        """A node left or was removed: every node that had it as a peer loses it (and its devices go with it);
        a device removed: its gateway loses it and stops routing its addresses."""
        out: list = []
        self._json.pop(node_id, None)
        dev = self.devices.pop(node_id, None)
        if dev is not None:
            self.by_key.pop(dev.public_key, None)
            self._json.pop(dev.gateway, None)
            self.behind.get(dev.gateway, set()).discard(node_id)
            gw = self.nodes.get(dev.gateway)
            if gw is not None:
                self._remove(gw.id, dev, out)
                for other in self.peers.get(gw.id, ()):
                    self._upsert(other, gw, out)
            return out
        for d in sorted(self.behind.pop(node_id, set())):
            gone = self.devices.pop(d, None)     # a gateway's devices reach nobody without it
            if gone is not None:
                self.by_key.pop(gone.public_key, None)
            self._json.pop(d, None)
        node = self.nodes.pop(node_id, None)
        if node is None:
            return out
        self._index(node, None)
        self.by_key.pop(node.public_key, None)
        for other in self.peers.pop(node_id, set()):
            self.peers[other].discard(node_id)
            self._remove(other, node, out)
        self.versions.pop(node_id, None)
        return out

    def set_policy(self, policy: Policy) -> list[tuple[int, dict]]:
        """A new policy: every node's reachable set again (from the tag index: the work is the pairs the
        policy allows, not every pair); deltas only where a view changes."""
        self.policy = policy
        out: list = []
        for a in sorted(self.nodes):
            want = self.reachable(self.nodes[a])
            have = self.peers[a]
            for b in sorted(want - have):
                have.add(b)
                self.peers[b].add(a)
                self._upsert(a, self.nodes[b], out)
                self._upsert(b, self.nodes[a], out)
            for b in sorted(have - want):
                have.discard(b)
                self.peers[b].discard(a)
                self._remove(a, self.nodes[b], out)
                self._remove(b, self.nodes[a], out)
        return out

    def full_views(self) -> dict[int, set[int]]:
        """Every view computed from scratch (the reference the incremental views are tested against)."""
        allows = self.policy.allows
        return {a: {b for b in self.nodes if b != a and allows(self.nodes[a], self.nodes[b])} for a in self.nodes}


def _entry_changed(old: Node | None, new: Node) -> bool:
    return old is None or peer_entry(old) != peer_entry(new)


def allocate(network: str, used: Iterable[str], node_id: int | None = None) -> str:
    """A free host address of `network`: the network's address plus `node_id` when that is a host address not in
    `used`, else the lowest one not in `used` (the first and, for IPv4, the last address of the prefix are never
    given). Raises ValueError when the network is full."""
    net = ipaddress.ip_network(network)
    taken = {ipaddress.ip_address(u) for u in used}
    if node_id is not None and 0 < node_id < net.num_addresses - (1 if net.version == 4 else 0):
        cand = net.network_address + node_id
        if cand not in taken:
            return str(cand)
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    a = first
    while a <= last:
        addr = ipaddress.ip_address(a)
        if addr not in taken:
            return str(addr)
        a += 1
    raise ValueError(f"network {network} has no free address")


def device_config(private_b64: str, device, gateway, networks: list[str]) -> str:
    """A wg-quick config for a device: its key and addresses, its gateway as the one peer, the networks routed."""
    addrs = ", ".join(f"{a}/{128 if ':' in a else 32}" for a in device.addresses)
    lines = ["[Interface]", f"PrivateKey = {private_b64}", f"Address = {addrs}", "", "[Peer]",
             f"PublicKey = {gateway.public_key}", f"AllowedIPs = {', '.join(networks)}"]
    if gateway.endpoint:
        lines.append(f"Endpoint = {gateway.endpoint}")
    lines.append("PersistentKeepalive = 25")
    return "\n".join(lines) + "\n"
