"""The UAPI text protocol (wgpy.uapi.protocol.handle_request) against a fake Host: no sockets, no namespaces.

Every key of a `set=1` request is exercised, the `get=1` output is checked line by line against what
wireguard-go prints, and every malformed request must come back with wireguard-go's negative errno while
leaving the device exactly as it was (the `get=1` output before and after is compared byte for byte).
"""

from __future__ import annotations

import errno
import os
import time

import pytest

from wgpy import crypto
from wgpy.io import udp
from wgpy.protocol.device import Device
from wgpy.uapi.protocol import handle_request

BUSY_PORT = 4444          # set_listen_port raises EADDRINUSE for this one
RANDOM_PORT = 43210       # what the fake binds when asked for port 0
ZERO_HEX = "00" * 32


def new_private() -> bytes:
    return crypto.clamp(os.urandom(32))


def pub_of(private: bytes) -> bytes:
    return crypto.public_from_private(private)


def new_public() -> bytes:
    return pub_of(new_private())


class FakeHost:
    """The I/O side of an interface, minus the I/O."""

    def __init__(self, private: bytes | None = None, listen_port: int = 51820) -> None:
        self.private = private or new_private()
        self.device = Device(self.private, rand=os.urandom, wall=time.time)
        self.listen_port = listen_port
        self.fwmark = 0
        self.flushed: list = []
        self.bind_calls: list[int] = []
        self.fwmark_calls: list[int] = []
        self.clock = 100.0

    def set_listen_port(self, port: int) -> None:
        self.bind_calls.append(port)
        if port == BUSY_PORT:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        self.listen_port = port or RANDOM_PORT

    def set_fwmark(self, mark: int) -> None:
        self.fwmark_calls.append(mark)
        self.fwmark = mark

    parse_endpoint = staticmethod(udp.parse_endpoint)
    format_endpoint = staticmethod(udp.format_endpoint)

    def now(self) -> float:
        return self.clock

    def flush(self, out: list) -> None:
        self.flushed.extend(out)


def req(host: FakeHost, *lines: str) -> str:
    """A request as the server hands it over: the lines, without the terminating blank line."""
    return handle_request("\n".join(lines), host)


def do_set(host: FakeHost, *lines: str) -> None:
    assert req(host, "set=1", *lines) == "errno=0\n\n"


def get(host: FakeHost) -> str:
    out = req(host, "get=1")
    assert out.endswith("errno=0\n\n"), out
    return out


def parse_get(text: str) -> tuple[dict[str, str], dict[str, dict]]:
    dev: dict[str, str] = {}
    peers: dict[str, dict] = {}
    cur: dict = dev
    for line in text.split("\n"):
        if not line or line.startswith("errno="):
            continue
        k, _, v = line.partition("=")
        if k == "public_key":
            cur = {"allowed_ip": []}
            peers[v] = cur
        elif k == "allowed_ip":
            cur["allowed_ip"].append(v)
        else:
            assert k not in cur, f"duplicate key {k} in get output"
            cur[k] = v
    return dev, peers


def peer_of(host: FakeHost, public: bytes) -> dict:
    return parse_get(get(host))[1][public.hex()]


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def loaded() -> FakeHost:
    """A host with some state, so that 'unchanged' means something."""
    h = FakeHost()
    h.p1, h.p2 = new_public(), new_public()
    do_set(h, "fwmark=7",
           f"public_key={h.p1.hex()}", f"preshared_key={'ab' * 32}", "endpoint=192.0.2.1:51820",
           "allowed_ip=10.0.0.0/24", "allowed_ip=fd00::/64",
           f"public_key={h.p2.hex()}", "endpoint=[2001:db8::2]:1234", "allowed_ip=10.9.0.2/32")
    h.flushed.clear()
    h.bind_calls.clear()
    h.fwmark_calls.clear()
    return h


# ---- get ------------------------------------------------------------------------------------------------------

def test_get_empty_device(host):
    assert get(host) == (f"private_key={host.private.hex()}\n"
                         "listen_port=51820\n"
                         "errno=0\n\n")


def test_get_without_private_key_or_port():
    h = FakeHost(listen_port=0)
    do_set(h, f"private_key={ZERO_HEX}")
    assert get(h) == "errno=0\n\n"


def test_get_full_peer_in_wireguard_go_order(host):
    pk, psk = new_public(), os.urandom(32)
    do_set(host, "fwmark=51820",
           f"public_key={pk.hex()}", f"preshared_key={psk.hex()}", "endpoint=198.51.100.7:9999",
           "persistent_keepalive_interval=25", "allowed_ip=10.1.0.0/16", "allowed_ip=fd01::/48")
    peer = host.device.peers[pk]
    peer.last_handshake_wall = 1_700_000_000.25
    peer.rx_bytes, peer.tx_bytes = 1234, 5678
    assert get(host) == (f"private_key={host.private.hex()}\n"
                         "listen_port=51820\n"
                         "fwmark=51820\n"
                         f"public_key={pk.hex()}\n"
                         f"preshared_key={psk.hex()}\n"
                         "protocol_version=1\n"
                         "endpoint=198.51.100.7:9999\n"
                         "last_handshake_time_sec=1700000000\n"
                         "last_handshake_time_nsec=250000000\n"
                         "tx_bytes=5678\n"
                         "rx_bytes=1234\n"
                         "persistent_keepalive_interval=25\n"
                         "allowed_ip=10.1.0.0/16\n"
                         "allowed_ip=fd01::/48\n"
                         "errno=0\n\n")


def test_get_new_peer_defaults(host):
    pk = new_public()
    do_set(host, f"public_key={pk.hex()}")
    p = peer_of(host, pk)
    assert p == {"preshared_key": ZERO_HEX, "protocol_version": "1", "last_handshake_time_sec": "0",
                 "last_handshake_time_nsec": "0", "tx_bytes": "0", "rx_bytes": "0",
                 "persistent_keepalive_interval": "0", "allowed_ip": []}


def test_get_with_arguments_is_invalid(host):
    assert req(host, "get=1", "private_key=1") == "errno=-22\n\n"


def test_unknown_operation(host):
    assert req(host, "frob=1") == "errno=-22\n\n"
    assert req(host, "get=2") == "errno=-22\n\n"


# ---- set: device keys ---------------------------------------------------------------------------------------

def test_set_private_key(host):
    new = new_private()
    do_set(host, f"private_key={new.hex()}")
    assert host.device.public_key == pub_of(new)
    assert parse_get(get(host))[0]["private_key"] == new.hex()


def test_set_private_key_all_zero_removes_it(host):
    do_set(host, f"private_key={ZERO_HEX}")
    assert host.device.identity is None
    assert "private_key" not in parse_get(get(host))[0]
    # and a key can be set again afterwards
    new = new_private()
    do_set(host, f"private_key={new.hex()}")
    assert parse_get(get(host))[0]["private_key"] == new.hex()


def test_set_private_key_equal_to_a_peer_removes_that_peer(host):
    new = new_private()
    other = new_public()
    do_set(host, f"public_key={pub_of(new).hex()}", f"public_key={other.hex()}")
    assert len(host.device.peers) == 2
    do_set(host, f"private_key={new.hex()}")
    assert set(parse_get(get(host))[1]) == {other.hex()}


def test_peer_with_own_public_key_is_ignored(host):
    do_set(host, f"public_key={pub_of(host.private).hex()}", "allowed_ip=10.0.0.0/8")
    assert parse_get(get(host))[1] == {}


def test_set_listen_port(host):
    do_set(host, "listen_port=12345")
    assert host.bind_calls == [12345]
    assert "listen_port=12345\n" in get(host)
    do_set(host, "listen_port=12345")          # unchanged: no rebind
    assert host.bind_calls == [12345]
    do_set(host, "listen_port=0")              # 0: a random port, as wireguard-go
    assert parse_get(get(host))[0]["listen_port"] == str(RANDOM_PORT)


def test_set_listen_port_in_use(loaded):
    before = get(loaded)
    assert req(loaded, "set=1", f"listen_port={BUSY_PORT}") == "errno=-98\n\n"
    assert get(loaded) == before


def test_set_fwmark(host):
    do_set(host, "fwmark=51820")
    assert host.fwmark_calls == [51820]
    assert "fwmark=51820\n" in get(host)
    do_set(host, "fwmark=4294967295")
    assert "fwmark=4294967295\n" in get(host)
    do_set(host, "fwmark=0")
    assert "fwmark" not in get(host)


def test_set_replace_peers(loaded):
    p3 = new_public()
    do_set(loaded, "replace_peers=true", f"public_key={p3.hex()}", "allowed_ip=10.3.0.0/16")
    peers = parse_get(get(loaded))[1]
    assert set(peers) == {p3.hex()}
    assert peers[p3.hex()]["allowed_ip"] == ["10.3.0.0/16"]
    # the removed peers' prefixes are gone from the routing table too
    assert len(loaded.device.allowed_ips) == 1
    do_set(loaded, "replace_peers=true")
    assert parse_get(get(loaded))[1] == {}


# ---- set: peer keys -----------------------------------------------------------------------------------------

def test_set_public_key_adds_peer_and_is_idempotent(host):
    pk = new_public()
    do_set(host, f"public_key={pk.hex()}", "allowed_ip=10.0.0.1/32")
    do_set(host, f"public_key={pk.hex()}")     # existing peer: nothing changes
    peers = parse_get(get(host))[1]
    assert list(peers) == [pk.hex()]
    assert peers[pk.hex()]["allowed_ip"] == ["10.0.0.1/32"]


def test_set_uppercase_hex_key(host):
    pk = new_public()
    do_set(host, f"public_key={pk.hex().upper()}")
    assert pk in host.device.peers


def test_set_remove(loaded):
    do_set(loaded, f"public_key={loaded.p1.hex()}", "remove=true")
    assert set(parse_get(get(loaded))[1]) == {loaded.p2.hex()}
    assert loaded.device.allowed_ips.entries(loaded.device.peers[loaded.p2]) != []
    assert len(loaded.device.allowed_ips) == 1     # p1's two prefixes went with it
    # removing a peer that does not exist is not an error
    do_set(loaded, f"public_key={new_public().hex()}", "remove=true")
    assert set(parse_get(get(loaded))[1]) == {loaded.p2.hex()}


def test_set_update_only(loaded):
    stranger = new_public()
    do_set(loaded, f"public_key={stranger.hex()}", "update_only=true", "allowed_ip=10.7.0.0/16")
    assert stranger.hex() not in parse_get(get(loaded))[1]
    do_set(loaded, f"public_key={loaded.p2.hex()}", "update_only=true", "allowed_ip=10.8.0.0/16")
    assert peer_of(loaded, loaded.p2)["allowed_ip"] == ["10.9.0.2/32", "10.8.0.0/16"]   # insertion order


def test_set_preshared_key_and_clear_it(host):
    pk, psk = new_public(), os.urandom(32)
    do_set(host, f"public_key={pk.hex()}", f"preshared_key={psk.hex()}")
    assert peer_of(host, pk)["preshared_key"] == psk.hex()
    do_set(host, f"public_key={pk.hex()}", f"preshared_key={ZERO_HEX}")
    assert peer_of(host, pk)["preshared_key"] == ZERO_HEX


@pytest.mark.parametrize("given, shown", [
    ("192.0.2.1:51820", "192.0.2.1:51820"),
    ("[2001:db8::1]:51820", "[2001:db8::1]:51820"),
    ("[2001:0db8:0000::0001]:1", "[2001:db8::1]:1"),
    ("[::ffff:192.0.2.9]:7", "192.0.2.9:7"),
    ("255.255.255.255:65535", "255.255.255.255:65535"),
])
def test_set_endpoint(host, given, shown):
    pk = new_public()
    do_set(host, f"public_key={pk.hex()}", f"endpoint={given}")
    assert peer_of(host, pk)["endpoint"] == shown


def test_set_endpoint_replaces_the_old_one(loaded):
    do_set(loaded, f"public_key={loaded.p1.hex()}", "endpoint=[fd00::9]:9")
    assert peer_of(loaded, loaded.p1)["endpoint"] == "[fd00::9]:9"
    assert loaded.device.peers[loaded.p1].endpoint == ("fd00::9", 9, 0, 0)


def test_set_persistent_keepalive_sends_at_once(host):
    pk = new_public()
    do_set(host, f"public_key={pk.hex()}", "endpoint=192.0.2.1:51820", "persistent_keepalive_interval=25")
    assert peer_of(host, pk)["persistent_keepalive_interval"] == "25"
    # as wireguard-go: turning keepalive on with a known endpoint sends something (here: an initiation) now
    assert host.flushed and all(ep == ("192.0.2.1", 51820) for _, ep in host.flushed)
    assert host.flushed[0][0][0] == 1
    do_set(host, f"public_key={pk.hex()}", "persistent_keepalive_interval=0")
    assert peer_of(host, pk)["persistent_keepalive_interval"] == "0"
    do_set(host, f"public_key={pk.hex()}", "persistent_keepalive_interval=65535")
    assert peer_of(host, pk)["persistent_keepalive_interval"] == "65535"


def test_set_persistent_keepalive_without_endpoint_sends_nothing(host):
    pk = new_public()
    do_set(host, f"public_key={pk.hex()}", "persistent_keepalive_interval=25")
    assert host.flushed == []


def test_set_allowed_ip_add_and_normalise(host):
    pk = new_public()
    do_set(host, f"public_key={pk.hex()}", "allowed_ip=10.1.2.3/24", "allowed_ip=fd00::1/64",
           "allowed_ip=0.0.0.0/0", "allowed_ip=::/0", "allowed_ip=192.0.2.1/32")
    assert peer_of(host, pk)["allowed_ip"] == ["10.1.2.0/24", "fd00::/64", "0.0.0.0/0", "::/0", "192.0.2.1/32"]


def test_set_allowed_ip_moves_prefix_between_peers(loaded):
    do_set(loaded, f"public_key={loaded.p2.hex()}", "allowed_ip=10.0.0.0/24")
    assert peer_of(loaded, loaded.p1)["allowed_ip"] == ["fd00::/64"]
    assert peer_of(loaded, loaded.p2)["allowed_ip"] == ["10.9.0.2/32", "10.0.0.0/24"]


def test_set_allowed_ip_removal(loaded):
    do_set(loaded, f"public_key={loaded.p1.hex()}", "allowed_ip=-10.0.0.0/24")
    assert peer_of(loaded, loaded.p1)["allowed_ip"] == ["fd00::/64"]
    # removing a prefix that belongs to another peer, or to nobody, does nothing
    do_set(loaded, f"public_key={loaded.p1.hex()}", "allowed_ip=-10.9.0.2/32", "allowed_ip=-172.16.0.0/12")
    assert peer_of(loaded, loaded.p2)["allowed_ip"] == ["10.9.0.2/32"]
    assert peer_of(loaded, loaded.p1)["allowed_ip"] == ["fd00::/64"]
    do_set(loaded, f"public_key={loaded.p1.hex()}", "allowed_ip=-fd00::/64")
    assert peer_of(loaded, loaded.p1)["allowed_ip"] == []


def test_set_replace_allowed_ips(loaded):
    do_set(loaded, f"public_key={loaded.p1.hex()}", "replace_allowed_ips=true", "allowed_ip=10.5.0.0/16")
    assert peer_of(loaded, loaded.p1)["allowed_ip"] == ["10.5.0.0/16"]
    do_set(loaded, f"public_key={loaded.p1.hex()}", "replace_allowed_ips=true")
    assert peer_of(loaded, loaded.p1)["allowed_ip"] == []
    assert peer_of(loaded, loaded.p2)["allowed_ip"] == ["10.9.0.2/32"]


def test_set_protocol_version_1(host):
    pk = new_public()
    do_set(host, f"public_key={pk.hex()}", "protocol_version=1", "allowed_ip=10.0.0.0/8")
    assert peer_of(host, pk)["allowed_ip"] == ["10.0.0.0/8"]


def test_set_empty_request_is_fine(loaded):
    before = get(loaded)
    do_set(loaded)
    assert get(loaded) == before


def test_setconf_like_wg_sends_it(loaded):
    """The exact shape `wg setconf` produces: replace_peers, then replace_allowed_ips per peer."""
    new, p3, psk = new_private(), new_public(), os.urandom(32)
    do_set(loaded, f"private_key={new.hex()}", "listen_port=40000", "fwmark=0", "replace_peers=true",
           f"public_key={p3.hex()}", f"preshared_key={psk.hex()}", "endpoint=203.0.113.5:51820",
           "persistent_keepalive_interval=0", "replace_allowed_ips=true", "allowed_ip=10.77.0.0/16")
    assert get(loaded) == (f"private_key={new.hex()}\n"
                           "listen_port=40000\n"
                           f"public_key={p3.hex()}\n"
                           f"preshared_key={psk.hex()}\n"
                           "protocol_version=1\n"
                           "endpoint=203.0.113.5:51820\n"
                           "last_handshake_time_sec=0\n"
                           "last_handshake_time_nsec=0\n"
                           "tx_bytes=0\n"
                           "rx_bytes=0\n"
                           "persistent_keepalive_interval=0\n"
                           "allowed_ip=10.77.0.0/16\n"
                           "errno=0\n\n")


# ---- malformed requests: the right errno and no change at all ----------------------------------------------

def _peer(loaded: FakeHost) -> str:
    return f"public_key={loaded.p1.hex()}"


BAD_REQUESTS = {
    # keys
    "private_key bad hex": lambda h: ["private_key=" + "zz" * 32],
    "private_key short": lambda h: ["private_key=" + "ab" * 31],
    "private_key long": lambda h: ["private_key=" + "ab" * 33],
    "private_key empty": lambda h: ["private_key="],
    "public_key bad hex": lambda h: ["public_key=" + "g" * 64],
    "public_key short": lambda h: ["public_key=" + h.p1.hex()[:-1]],
    "public_key base64": lambda h: ["public_key=" + crypto.encode_key(h.p1)],
    "preshared_key bad hex": lambda h: [_peer(h), "preshared_key=" + "x" * 64],
    "preshared_key short": lambda h: [_peer(h), "preshared_key=" + "ab" * 16],
    # unknown keys
    "unknown device key": lambda h: ["frobnicate=1"],
    "unknown peer key": lambda h: [_peer(h), "frobnicate=1"],
    "device key in peer section": lambda h: [_peer(h), "listen_port=1000"],
    "replace_peers in peer section": lambda h: [_peer(h), "replace_peers=true"],
    "peer key in device section": lambda h: ["allowed_ip=10.0.0.0/8"],
    "get key in set": lambda h: ["errno=0"],
    "empty key": lambda h: ["="],
    # numbers
    "listen_port not numeric": lambda h: ["listen_port=http"],
    "listen_port negative": lambda h: ["listen_port=-1"],
    "listen_port too big": lambda h: ["listen_port=65536"],
    "listen_port empty": lambda h: ["listen_port="],
    "listen_port with space": lambda h: ["listen_port= 1000"],
    "listen_port hex": lambda h: ["listen_port=0x100"],
    "fwmark hex": lambda h: ["fwmark=0x10"],
    "fwmark too big": lambda h: ["fwmark=4294967296"],
    "fwmark negative": lambda h: ["fwmark=-1"],
    "keepalive not numeric": lambda h: [_peer(h), "persistent_keepalive_interval=often"],
    "keepalive too big": lambda h: [_peer(h), "persistent_keepalive_interval=65536"],
    # booleans
    "remove=false": lambda h: [_peer(h), "remove=false"],
    "remove=1": lambda h: [_peer(h), "remove=1"],
    "update_only=false": lambda h: [_peer(h), "update_only=false"],
    "replace_peers=false": lambda h: ["replace_peers=false"],
    "replace_peers=TRUE": lambda h: ["replace_peers=TRUE"],
    "replace_allowed_ips=false": lambda h: [_peer(h), "replace_allowed_ips=false"],
    "protocol_version=2": lambda h: [_peer(h), "protocol_version=2"],
    "protocol_version empty": lambda h: [_peer(h), "protocol_version="],
    # CIDRs
    "allowed_ip prefix too long v4": lambda h: [_peer(h), "allowed_ip=10.0.0.0/33"],
    "allowed_ip prefix too long v6": lambda h: [_peer(h), "allowed_ip=fd00::/129"],
    "allowed_ip bad octet": lambda h: [_peer(h), "allowed_ip=10.0.0.300/32"],
    "allowed_ip garbage": lambda h: [_peer(h), "allowed_ip=everything"],
    "allowed_ip empty": lambda h: [_peer(h), "allowed_ip="],
    "allowed_ip lone dash": lambda h: [_peer(h), "allowed_ip=-"],
    "allowed_ip double dash": lambda h: [_peer(h), "allowed_ip=--10.0.0.0/24"],
    "allowed_ip negative prefix": lambda h: [_peer(h), "allowed_ip=10.0.0.0/-1"],
    # endpoints
    "endpoint without port": lambda h: [_peer(h), "endpoint=192.0.2.1"],
    "endpoint port too big": lambda h: [_peer(h), "endpoint=192.0.2.1:65536"],
    "endpoint port not numeric": lambda h: [_peer(h), "endpoint=192.0.2.1:port"],
    "endpoint hostname": lambda h: [_peer(h), "endpoint=example.invalid:51820"],
    "endpoint unclosed bracket": lambda h: [_peer(h), "endpoint=[2001:db8::1:51820"],
    "endpoint bad address": lambda h: [_peer(h), "endpoint=300.1.1.1:51820"],
    "endpoint empty": lambda h: [_peer(h), "endpoint="],
    # a valid first half, then one bad line: nothing of the first half may be applied
    "valid then bad allowed_ip": lambda h: [
        "private_key=" + new_private().hex(), "listen_port=40001", "fwmark=99", "replace_peers=true",
        "public_key=" + new_public().hex(), "endpoint=198.51.100.1:1", "persistent_keepalive_interval=5",
        "allowed_ip=10.50.0.0/16",
        _peer(h), "remove=true",
        "public_key=" + h.p2.hex(), "allowed_ip=10.60.0.0/16", "allowed_ip=10.60.0.0/99"],
    "valid then bad key": lambda h: [
        "listen_port=40002", _peer(h), "replace_allowed_ips=true", "allowed_ip=10.51.0.0/16",
        "public_key=" + "ab" * 31],
    "valid then remove=false": lambda h: [
        "fwmark=12", _peer(h), "preshared_key=" + ZERO_HEX, "endpoint=198.51.100.2:2", "remove=false"],
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_set_is_refused_and_changes_nothing(loaded, name):
    lines = BAD_REQUESTS[name](loaded)
    before = get(loaded)
    assert req(loaded, "set=1", *lines) == "errno=-22\n\n"
    assert get(loaded) == before
    assert loaded.bind_calls == [] and loaded.fwmark_calls == [] and loaded.flushed == []
    assert loaded.listen_port == 51820 and loaded.fwmark == 7


@pytest.mark.parametrize("line", ["listen_port", "public_key", "garbage without equals sign"])
def test_line_without_equals_sign_is_a_protocol_error(loaded, line):
    before = get(loaded)
    assert req(loaded, "set=1", "fwmark=1", line) == f"errno={-errno.EPROTO}\n\n"
    assert get(loaded) == before


def test_listen_port_in_use_changes_nothing_else(loaded):
    """The only failure while applying: binding the new port. It comes first, so nothing else is applied."""
    before = get(loaded)
    reply = req(loaded, "set=1", "private_key=" + new_private().hex(), f"listen_port={BUSY_PORT}", "fwmark=1",
                "replace_peers=true", "public_key=" + new_public().hex(), "allowed_ip=10.0.0.0/8")
    assert reply == f"errno={-errno.EADDRINUSE}\n\n" == "errno=-98\n\n"
    assert get(loaded) == before
    assert loaded.fwmark_calls == [] and loaded.flushed == []


def test_refusal_is_logged_without_key_material(loaded):
    logged: list[str] = []
    secret = new_private().hex()
    reply = handle_request(f"set=1\nprivate_key={secret}\nbogus=1", loaded, logged.append)
    assert reply == "errno=-22\n\n"
    assert logged and all(secret not in m for m in logged)


# ---- bugs: requests that escape validation ------------------------------------------------------------------

@pytest.mark.parametrize("lines", [
    ["listen_port=²"],
    ["fwmark=³"],
    ["public_key=" + "11" * 32, "persistent_keepalive_interval=¹"],
    ["listen_port=١٢٣٤"],
], ids=["listen_port-superscript", "fwmark-superscript", "keepalive-superscript", "listen_port-arabic"])
def test_regression_non_ascii_digits(loaded, lines):
    before = get(loaded)
    assert req(loaded, "set=1", *lines) == "errno=-22\n\n"
    assert get(loaded) == before


@pytest.mark.parametrize("which", ["private_key", "public_key", "preshared_key"])
def test_regression_hex_key_with_whitespace(loaded, which):
    key = "ab" * 31 + "  "
    assert len(key) == 64
    lines = {"private_key": ["fwmark=1", f"private_key={key}"],
             "public_key": ["fwmark=1", f"public_key={key}"],
             "preshared_key": ["fwmark=1", f"public_key={loaded.p1.hex()}", f"preshared_key={key}"]}[which]
    before = get(loaded)
    assert req(loaded, "set=1", *lines) == "errno=-22\n\n"
    assert get(loaded) == before


@pytest.mark.parametrize("value", ["10.0.0.1", "10.0.0.0/255.0.0.0", "fd00::1"])
def test_regression_lenient_allowed_ip(loaded, value):
    before = get(loaded)
    assert req(loaded, "set=1", _peer(loaded), f"allowed_ip={value}") == "errno=-22\n\n"
    assert get(loaded) == before


def test_punch_initiates_now_even_within_rekey_timeout(host):
    """wgpy_punch: the mesh agent's hole punch on a new endpoint. Without a session, an initiation goes to the
    new endpoint at once, although one went to the old endpoint a moment ago (which the 5 s REKEY_TIMEOUT
    would otherwise hold back); a peer without an endpoint gets nothing; a set without it sends nothing."""
    p = new_public()
    do_set(host, f"public_key={p.hex()}", "endpoint=192.0.2.1:51820", "persistent_keepalive_interval=25")
    assert [(d[0], ep) for d, ep in host.flushed] == [(1, ("192.0.2.1", 51820))]      # the keepalive's initiation
    host.flushed.clear()
    host.clock += 0.5
    do_set(host, f"public_key={p.hex()}", "endpoint=198.51.100.7:40001")
    assert host.flushed == []                                                         # rate-limited as usual
    do_set(host, f"public_key={p.hex()}", "wgpy_punch=true")
    assert [(d[0], ep) for d, ep in host.flushed] == [(1, ("198.51.100.7", 40001))]
    host.flushed.clear()
    q = new_public()
    do_set(host, f"public_key={q.hex()}", "wgpy_punch=true")
    assert host.flushed == []
    assert "wgpy_punch" not in get(host)
    assert req(host, "set=1", f"public_key={p.hex()}", "wgpy_punch=yes").startswith("errno=-22")


def test_punch_after_the_keepalive_initiation_sends_no_second_one(host):
    """The agent sets the keepalive (which initiates) and punches in one set: one initiation, not two (the
    second would carry the same 16.8 ms timestamp: the peer would refuse it as a replay, or it would replace
    the first whose answer is on its way)."""
    p = new_public()
    do_set(host, f"public_key={p.hex()}", "endpoint=192.0.2.1:51820", "persistent_keepalive_interval=25",
           "wgpy_punch=true")
    assert [d[0] for d, ep in host.flushed] == [1]
