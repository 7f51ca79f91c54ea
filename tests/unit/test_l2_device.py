"""L2 mode of the sans-IO core (Device(..., l2=True)): switching, learning, flooding, relaying, allowed MACs.

Devices are wired by hand with a fake clock (core_pair.Net, the generalisation of the Pair of test_device_pair.py
to any number of devices and any peering: star, mesh).
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from wgpy import crypto
from wgpy.config import ConfigError, parse, to_uapi
from wgpy.constants import MAC_AGING_TIME
from wgpy.io import udp
from wgpy.protocol.device import Device
from wgpy.uapi.protocol import handle_request
from wgpy.routing.mactable import LOCAL, MacTable

from wgpy_testkit.core_pair import Clock, Net, mtype, seeded_rand

BCAST = b"\xff" * 6


def lookup(t, mac: bytes, now: float):
    """The port `mac` was last seen on, or None if unknown or aged out (the rule the data path applies inline)."""
    e = t.entries.get(mac)
    return None if e is None or now - e[1] >= t.aging else e[0]


def m(i: int) -> bytes:
    """A locally administered unicast MAC."""
    return bytes([0x02, 0, 0, 0, 0, i])


def eth(dst: bytes, src: bytes, payload: bytes = b"x" * 46, ethertype: int = 0x88B5) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def vlan(dst: bytes, src: bytes, vid: int, payload: bytes = b"v" * 42) -> bytes:
    return dst + src + struct.pack("!HH", 0x8100, vid) + struct.pack("!H", 0x0800) + payload


def unpad(received: bytes, sent: bytes) -> bool:
    """`received` is `sent` plus the protocol's zero padding to 16 bytes."""
    return (received[:len(sent)] == sent and not any(received[len(sent):])
            and len(received) == len(sent) + (-len(sent) & 15))


def net(names: str, links: list[tuple[str, str]], relay: set[str] = frozenset()) -> Net:
    """Named L2 devices peering as `links` says (both ways); the hubs in `relay` forward between their peers."""
    n = Net(names, links, l2=True, strict=True)
    for name, dev in n.dev.items():
        dev.relay = name in relay
    return n


def pair() -> Net:
    n = net("AB", [("A", "B")])
    n.connect(("A", "B"))
    return n


# ---------------------------------------------------------------------------------------------------------------

def test_l2_device_uses_the_l2_data_path_and_l3_is_untouched():
    l3 = Device(rand=seeded_rand(1), wall=Clock().wall)
    l2 = Device(rand=seeded_rand(1), wall=Clock().wall, l2=True)
    from wgpy.protocol.router import Router
    from wgpy.protocol.switch import Switch
    # the forwarding strategy is chosen when the device is made: the same two entry points, no mode test inside
    assert type(l3.forwarding) is Router and l3.macs is None and l3.send_packets == l3.forwarding.send
    assert type(l2.forwarding) is Switch and l2.macs is l2.forwarding.macs and l2.send_packets == l2.forwarding.send


def test_broadcast_triggers_handshake_and_arrives_padded():
    n = net("AB", [("A", "B")])
    f = eth(BCAST, m(1), b"arp-ish" + b"\x00" * 21)        # 42 bytes, like an ARP request
    n.send("A", [f], 0.0)
    assert [mtype(d) for *_, d in n.log] == [1, 2, 4]   # initiation, response, the staged frame
    assert len(n.tap["B"]) == 1 and unpad(n.tap["B"][0], f) and len(n.tap["B"][0]) == 48
    assert lookup(n.dev["A"].macs, m(1), 0.0) is LOCAL
    assert lookup(n.dev["B"].macs, m(1), 0.0) is n.peer[("B", "A")]


def test_unicast_reply_goes_to_the_learned_peer_only():
    n = net("ABC", [("A", "B"), ("A", "C")])
    n.connect(("A", "B"), ("A", "C"))
    n.send("B", [eth(BCAST, m(2))])                        # A learns m2 behind B
    n.send("C", [eth(BCAST, m(3))])                        # ... and m3 behind C
    start = len(n.log)
    n.send("A", [eth(m(2), m(1), b"to-b" * 12)])
    assert n.data_to("B", start) == 1 and n.data_to("C", start) == 0
    assert n.tap["B"][-1][:12] == m(2) + m(1)
    start = len(n.log)
    n.send("A", [eth(m(9), m(1))])                         # unknown unicast: flooded to both
    assert n.data_to("B", start) == 1 and n.data_to("C", start) == 1


def test_frame_to_a_local_address_is_filtered():
    n = pair()
    n.send("A", [eth(BCAST, m(1)), eth(BCAST, m(5))])      # m1 and m5 are both behind A's TAP
    start = len(n.log)
    n.send("A", [eth(m(5), m(1))])
    assert n.data_to("B", start) == 0 and n.dev["A"].drops["l2_filtered"] == 1


def test_bad_frames_are_dropped_and_counted():
    n = pair()
    a, b = n.dev["A"], n.dev["B"]
    n.send("A", [b"\x01" * 13, eth(m(2), b"\x01\x00\x5e\x00\x00\x01"), eth(m(2), b"\x00" * 6)])
    assert a.drops["l2_short_frame"] == 1 and a.drops["l2_bad_src_mac"] == 2
    assert n.data_to("B") == 0
    # the same from a peer (an L2 peer that sends nonsense): encrypt by hand with A's session. A 5-byte
    # plaintext arrives padded to 16 bytes, so its "source MAC" is zero.
    out: list = []
    a._send_to_peer(n.peer[("A", "B")], [b"short", eth(m(2), BCAST)], 1.0, out)
    n.deliver("A", out, 1.0)
    assert b.drops["l2_bad_src_mac"] == 2 and n.tap["B"] == [] and len(b.macs) == 0


def test_never_sent_back_where_it_came_from():
    n = pair()
    n.send("B", [eth(BCAST, m(2))])                        # A: m2 is behind B
    out: list = []
    frame = eth(m(2), m(7))                                # B sends a frame to its own side's address
    n.dev["B"]._send_to_peer(n.peer[("B", "A")], [frame], 1.0, out)
    start, on_tap = len(n.log), len(n.tap["A"])
    n.deliver("B", out, 1.0)
    assert n.data_to("B", start) == 0 and len(n.tap["A"]) == on_tap and n.dev["A"].drops["l2_filtered"] == 1


def test_keepalive_is_not_a_frame():
    n = pair()
    out: list = []
    n.dev["A"].send_keepalive(n.peer[("A", "B")], 1.0, out)
    assert len(out) == 1 and len(out[0][0]) == 32
    n.deliver("A", out, 1.0)
    assert n.tap["B"] == [] and not n.dev["B"].drops


def test_vlan_tagged_frames_pass_untouched_and_are_learned():
    n = pair()
    f = vlan(BCAST, m(1), 42)
    n.send("A", [f])
    assert unpad(n.tap["B"][0], f)
    n.send("B", [vlan(m(1), m(2), 42, b"w" * 1400)])
    assert n.tap["A"][0][12:16] == b"\x81\x00\x00\x2a" and n.tap["A"][0][16:] .startswith(b"\x08\x00w")
    assert lookup(n.dev["B"].macs, m(1), 0.0) is n.peer[("B", "A")]


def test_full_size_and_oversize_frames_are_not_padded_beyond_the_mtu():
    n = pair()
    full = eth(BCAST, m(1), b"f" * (1420 - 14))            # TAP MTU 1406 + 14 = the tunnel MTU
    tagged = vlan(BCAST, m(1), 7, b"t" * (1406 - 4))       # 1424: a full-size VLAN frame
    n.send("A", [full, tagged])
    assert n.tap["B"] == [full, tagged]


def test_allowed_macs_restrict_what_a_peer_may_send():
    n = pair()
    b = n.dev["B"]
    b.set_allowed_macs(n.peer[("B", "A")], [m(1)])
    n.send("A", [eth(BCAST, m(1)), eth(BCAST, m(6))])
    assert len(n.tap["B"]) == 1 and n.tap["B"][0][6:12] == m(1)
    assert b.drops["l2_mac_not_allowed"] == 1
    assert lookup(b.macs, m(6), 0.0) is None                # an address that is not allowed is not learned
    b.set_allowed_macs(n.peer[("B", "A")], None)
    n.send("A", [eth(BCAST, m(6))])
    assert len(n.tap["B"]) == 2


def test_narrowing_allowed_macs_forgets_what_the_peer_taught():
    n = pair()
    b = n.dev["B"]
    n.send("A", [eth(BCAST, m(1)), eth(BCAST, m(6))])
    assert lookup(b.macs, m(6), 0.0) is n.peer[("B", "A")]
    b.set_allowed_macs(n.peer[("B", "A")], [m(1)])
    assert lookup(b.macs, m(6), 0.0) is None and lookup(b.macs, m(1), 0.0) is not None


def test_mac_move_between_peers_after_the_old_entry_aged_out():
    """A host that moved to another peer's LAN (a migrated VM) is learned there once it has been silent at the
    old peer for the ageing time; before that its frames from the new peer are dropped (sticky ownership)."""
    n = net("ABC", [("A", "B"), ("A", "C")])
    n.connect(("A", "B"), ("A", "C"))
    a = n.dev["A"]
    n.send("B", [eth(BCAST, m(7))], 1.0)
    assert lookup(a.macs, m(7), 1.0) is n.peer[("A", "B")]
    n.send("C", [eth(BCAST, m(7))], 2.0)                   # the host moved to C's LAN: still B's for now
    assert lookup(a.macs, m(7), 2.0) is n.peer[("A", "B")] and a.drops["l2_mac_in_use"] == 1
    assert len(n.tap["A"]) == 1                            # its frame from C was dropped, not delivered
    t = 1.0 + MAC_AGING_TIME
    n.send("C", [eth(BCAST, m(7))], t)                     # silent at B for the ageing time: C's now
    assert lookup(a.macs, m(7), t) is n.peer[("A", "C")] and a.macs.moved == 1
    start = len(n.log)
    n.send("A", [eth(m(7), m(1))], t)
    assert n.data_to("C", start) == 1 and n.data_to("B", start) == 0


def test_a_forged_source_mac_does_not_take_over_another_peers_address():
    """Issue 21 item 10: with no AllowedMACs, one frame from C with B's host's MAC took the address over, and
    A's traffic for that host went to C. Now the address stays B's while B uses it; C's frame is dropped."""
    n = net("ABC", [("A", "B"), ("A", "C")])
    n.connect(("A", "B"), ("A", "C"))
    a = n.dev["A"]
    n.send("B", [eth(BCAST, m(7))], 1.0)
    n.send("C", [eth(BCAST, m(7), b"i-am-m7" * 6)], 2.0)   # C forges m7 as its source
    assert a.drops["l2_mac_in_use"] == 1 and a.macs.refused == 1
    start = len(n.log)
    n.send("A", [eth(m(7), m(1))], 3.0)                    # A's traffic for m7 still goes to B only
    assert n.data_to("B", start) == 1 and n.data_to("C", start) == 0
    # the local side is this switch's own: a peer cannot take a local address either
    n.send("A", [eth(BCAST, m(1))], 4.0)
    n.send("C", [eth(BCAST, m(1))], 5.0)
    assert lookup(a.macs, m(1), 5.0) is LOCAL and a.drops["l2_mac_in_use"] == 2


def test_allowed_macs_let_a_peer_claim_its_address_at_once():
    n = net("ABC", [("A", "B"), ("A", "C")])
    n.connect(("A", "B"), ("A", "C"))
    a = n.dev["A"]
    n.send("B", [eth(BCAST, m(7))], 1.0)
    a.set_allowed_macs(n.peer[("A", "C")], [m(7), m(8)])   # the configuration says m7 is C's
    n.send("C", [eth(BCAST, m(7))], 2.0)
    assert lookup(a.macs, m(7), 2.0) is n.peer[("A", "C")] and not a.drops["l2_mac_in_use"]


def test_entries_age_out_and_unicast_floods_again():
    n = net("ABC", [("A", "B"), ("A", "C")])
    n.connect(("A", "B"), ("A", "C"))
    n.send("B", [eth(BCAST, m(2))], 1.0)
    start = len(n.log)
    n.send("A", [eth(m(2), m(1))], 1.0 + MAC_AGING_TIME - 1)
    assert n.data_to("B", start) == 1 and n.data_to("C", start) == 0
    start = len(n.log)
    n.send("A", [eth(m(2), m(1))], 1.0 + MAC_AGING_TIME + 1)
    assert n.data_to("B", start) == 1 and n.data_to("C", start) == 1


def test_hub_relays_unicast_and_broadcast_between_spokes():
    n = net("HST", [("H", "S"), ("H", "T")], relay={"H"})  # S and T only know the hub
    n.connect(("S", "H"), ("T", "H"))
    bc = eth(BCAST, m(10), b"who-has" * 7)
    n.send("S", [bc])
    assert unpad(n.tap["H"][-1], bc) and unpad(n.tap["T"][-1], bc)
    n.send("T", [eth(m(10), m(20), b"reply" * 10)])        # T's reply to S's MAC, through the hub
    assert n.tap["S"][-1][:12] == m(10) + m(20)
    assert n.tap["H"][-1][:12] == bc[:12]                  # known unicast for S is not copied to the hub's TAP
    h = n.dev["H"]
    assert lookup(h.macs, m(10), 0.0) is n.peer[("H", "S")] and lookup(h.macs, m(20), 0.0) is n.peer[("H", "T")]
    # the hub's own host reaches both spokes
    n.send("H", [eth(m(20), m(30))])
    assert n.tap["T"][-1][:12] == m(20) + m(30)


def test_storm_control_limits_what_one_spoke_floods_through_the_hub():
    """Issue 21 item 10: a relay hub floods at most L2_FLOOD_PER_SECOND broadcast (and as many multicast, and
    unknown unicast) frames per second from each peer, with a burst of as many; the rest are dropped at
    ingress and counted. Another spoke's floods and everyone's known unicast are not touched; the bucket fills
    again with time (fake clock)."""
    from wgpy.constants import L2_FLOOD_BURST, L2_FLOOD_PER_SECOND
    n = net("HSTU", [("H", "S"), ("H", "T"), ("H", "U")], relay={"H"})
    n.connect(("S", "H"), ("T", "H"), ("U", "H"))
    h = n.dev["H"]
    burst, rate = int(L2_FLOOD_BURST), L2_FLOOD_PER_SECOND
    n.send("T", [eth(BCAST, m(20))], 0.0)                  # H learns m20 behind T
    n.send("U", [eth(BCAST, m(30))], 0.0)
    on_t, on_u, on_h = len(n.tap["T"]), len(n.tap["U"]), len(n.tap["H"])
    storm = [eth(BCAST, m(10), b"%05d" % i + b"." * 41) for i in range(burst + 500)]
    n.send("S", storm, 1.0)
    assert len(n.tap["T"]) - on_t == len(n.tap["U"]) - on_u == len(n.tap["H"]) - on_h == burst
    assert h.drops["l2_storm_broadcast"] == 500
    # multicast and unknown unicast have their own buckets; known unicast is never limited
    mcast = b"\x01\x00\x5e\x00\x00\xfb"
    n.send("S", [eth(mcast, m(10))] * 3 + [eth(m(99), m(10))] * 3 + [eth(m(20), m(10))] * 2000, 1.0)
    assert h.drops["l2_storm_multicast"] == 0 and h.drops["l2_storm_unknown_unicast"] == 0
    assert len(n.tap["T"]) - on_t == burst + 3 + 3 + 2000
    # another spoke's broadcasts are its own budget: T is not limited by S's storm
    on_u = len(n.tap["U"])
    n.send("T", [eth(BCAST, m(20))] * 100, 1.0)
    assert len(n.tap["U"]) - on_u == 100 and h.drops["l2_storm_broadcast"] == 500
    # half a second later S has earned rate / 2 tokens again
    on_u = len(n.tap["U"])
    n.send("S", storm[:burst], 1.5)
    assert len(n.tap["U"]) - on_u == int(rate / 2)
    assert h.drops["l2_storm_broadcast"] == 500 + burst - int(rate / 2)
    # the frames over the limit were dropped whole: neither the hub's TAP nor the other spokes got them
    assert all(n.tap["H"].count(f) <= 1 for f in storm[:10])


def test_storm_control_needs_relay():
    """Without relay a peer's floods go to the TAP alone (nothing is replicated): no limit."""
    from wgpy.constants import L2_FLOOD_BURST
    n = pair()
    frames = [eth(BCAST, m(1))] * (int(L2_FLOOD_BURST) + 100)
    n.send("A", frames, 1.0)
    assert len(n.tap["B"]) == len(frames) and not any(k.startswith("l2_storm") for k in n.dev["B"].drops)


def test_without_relay_the_hub_keeps_frames_to_itself():
    n = net("HST", [("H", "S"), ("H", "T")])
    n.connect(("S", "H"), ("T", "H"))
    n.send("S", [eth(BCAST, m(10))])
    n.send("T", [eth(BCAST, m(20))])
    assert len(n.tap["H"]) == 2 and n.tap["S"] == [] and n.tap["T"] == []
    n.send("T", [eth(m(10), m(20))])                       # H knows m10 behind S but does not relay
    assert n.tap["S"] == [] and n.dev["H"].drops["l2_filtered"] == 1


def test_full_mesh_without_relay_delivers_each_broadcast_once():
    n = net("ABC", [("A", "B"), ("A", "C"), ("B", "C")])
    n.connect(("A", "B"), ("A", "C"), ("B", "C"))
    n.send("A", [eth(BCAST, m(1))])
    assert len(n.tap["B"]) == 1 and len(n.tap["C"]) == 1 and n.tap["A"] == []


def test_flood_of_source_macs_from_a_peer_is_bounded():
    n = pair()
    b = n.dev["B"]
    b.macs = MacTable(max_entries=64)
    rng = random.Random(3)
    frames = [eth(BCAST, bytes([0x02]) + rng.randbytes(5)) for _ in range(1000)]
    for i in range(0, 1000, 100):
        n.send("A", frames[i:i + 100])
    assert len(n.tap["B"]) == 1000 and len(b.macs) == 64 and b.macs.evicted == 1000 - 64


def test_removed_peer_is_forgotten_by_the_switch():
    n = pair()
    n.send("A", [eth(BCAST, m(1))])
    b = n.dev["B"]
    assert len(b.macs) == 1
    b.remove_peer(n.keys["A"])
    assert len(b.macs) == 0


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_many_frames_in_order(batch):
    n = pair()
    n.send("B", [eth(BCAST, m(2))])
    frames = [eth(m(2), m(1), bytes([i]) * (46 + i)) for i in range(batch)]
    n.send("A", frames)
    got = n.tap["B"]
    assert len(got) == batch and all(unpad(g, f) for g, f in zip(got, frames))


# ---------------------------------------------------------------------------------------------------------------
# configuration: config file keys and the UAPI extension keys of L2 devices
# ---------------------------------------------------------------------------------------------------------------

class L2Host:
    def __init__(self, l2: bool = True) -> None:
        self.device = Device(crypto.clamp(os.urandom(32)), rand=os.urandom, wall=lambda: 1e9, l2=l2)
        self.listen_port, self.fwmark, self.clock = 51820, 0, 1000.0

    def set_listen_port(self, port):
        self.listen_port = port

    def set_fwmark(self, mark):
        self.fwmark = mark

    parse_endpoint = staticmethod(udp.parse_endpoint)
    format_endpoint = staticmethod(udp.format_endpoint)

    def now(self):
        return self.clock

    def flush(self, out):
        pass


def uapi(host, *lines):
    return handle_request("\n".join(lines), host)


def get_lines(host):
    reply = uapi(host, "get=1")
    assert reply.endswith("errno=0\n\n")
    return reply.splitlines()[:-1]


def test_uapi_l2_keys_set_and_get():
    h = L2Host()
    k1, k2 = os.urandom(32).hex(), os.urandom(32).hex()
    assert uapi(h, "set=1", "wgpy_relay=true", f"public_key={k1}", "replace_allowed_ips=true",
                "wgpy_replace_allowed_macs=true", "wgpy_allowed_mac=02:00:00:00:00:0b",
                "wgpy_allowed_mac=02:00:00:00:00:0a", f"public_key={k2}") == "errno=0\n\n"
    dev = h.device
    p1, p2 = dev.peers[bytes.fromhex(k1)], dev.peers[bytes.fromhex(k2)]
    assert dev.relay and p1.allowed_macs == {m(10), m(11)} and p2.allowed_macs is None
    dev.macs.learn(m(10), p1, 990.0)
    dev.macs.learn(m(1), LOCAL, 999.5)
    lines = get_lines(h)
    assert "wgpy_mode=tap" in lines and "wgpy_relay=true" in lines
    assert lines.index("wgpy_local_mac=02:00:00:00:00:01 0") < lines.index(f"public_key={k1}")
    sect1 = lines[lines.index(f"public_key={k1}"):lines.index(f"public_key={k2}")]
    assert [ln for ln in sect1 if ln.startswith("wgpy_")] == [
        "wgpy_allowed_mac=02:00:00:00:00:0a", "wgpy_allowed_mac=02:00:00:00:00:0b", "wgpy_mac=02:00:00:00:00:0a 10"]
    assert not any(ln.startswith("allowed_ip=") for ln in lines)
    # remove one, then replace the list with nothing (= any source)
    assert uapi(h, "set=1", f"public_key={k1}", "wgpy_allowed_mac=-02:00:00:00:00:0b") == "errno=0\n\n"
    assert p1.allowed_macs == {m(10)}
    assert uapi(h, "set=1", "wgpy_relay=false", f"public_key={k1}",
                "wgpy_replace_allowed_macs=true") == "errno=0\n\n"
    assert p1.allowed_macs is None and not dev.relay


@pytest.mark.parametrize("lines", [
    ("public_key={k}", "allowed_ip=10.0.0.1/32"),                   # L2: frames are not routed by IP
    ("public_key={k}", "allowed_ip=-10.0.0.1/32"),
    ("public_key={k}", "wgpy_allowed_mac=02:00:00:00:00"),
    ("public_key={k}", "wgpy_allowed_mac=zz:00:00:00:00:00"),
    ("public_key={k}", "wgpy_replace_allowed_macs=false"),
    ("wgpy_relay=yes",),
    ("wgpy_mac=02:00:00:00:00:01",),
])
def test_uapi_l2_bad_requests_change_nothing(lines):
    h = L2Host()
    before = get_lines(h)
    k = os.urandom(32).hex()
    assert uapi(h, "set=1", *[ln.format(k=k) for ln in lines]) == "errno=-22\n\n"
    assert get_lines(h) == before


@pytest.mark.parametrize("line", ["wgpy_relay=true", "public_key={k}\nwgpy_allowed_mac=02:00:00:00:00:01",
                                  "public_key={k}\nwgpy_replace_allowed_macs=true"])
def test_uapi_l3_device_refuses_l2_keys(line):
    h = L2Host(l2=False)
    assert uapi(h, "set=1", line.format(k=os.urandom(32).hex())) == "errno=-22\n\n"
    assert not any(ln.startswith("wgpy_") for ln in get_lines(h))


KEY = crypto.encode_key(crypto.clamp(bytes(range(32))))
PEER = crypto.encode_key(crypto.public_from_private(crypto.clamp(bytes(range(1, 33)))))


def test_config_tap_mode_keys_and_uapi_rendering():
    cfg = parse(f"[Interface]\nPrivateKey = {KEY}\nMode = tap\nRelay = on\n"
                f"[Peer]\nPublicKey = {PEER}\nAllowedMACs = 02:00:00:00:00:01, 02-00-00-00-00-02\n"
                f"AllowedMACs = 02:00:00:00:00:03\nEndpoint = 192.0.2.7:51820\n")
    assert cfg.mode == "tap" and cfg.relay is True and cfg.addresses == []
    assert cfg.peers[0].allowed_macs == [m(1), m(2), m(3)]
    text = to_uapi(cfg)
    assert "wgpy_relay=true\n" in text and text.index("wgpy_relay") < text.index("public_key=")
    assert text.endswith("wgpy_replace_allowed_macs=true\nwgpy_allowed_mac=02:00:00:00:00:01\n"
                         "wgpy_allowed_mac=02:00:00:00:00:02\nwgpy_allowed_mac=02:00:00:00:00:03\n")
    h = L2Host()
    assert handle_request("set=1\n" + text, h) == "errno=0\n\n"
    assert h.device.relay and h.device.peers[crypto.decode_key(PEER)].allowed_macs == {m(1), m(2), m(3)}
    # an L3 config renders none of the extension keys
    plain = parse(f"[Interface]\nPrivateKey = {KEY}\n[Peer]\nPublicKey = {PEER}\nAllowedIPs = 10.0.0.2/32\n")
    assert "wgpy_" not in to_uapi(plain)


@pytest.mark.parametrize("body,line,key,msg", [
    ("Mode = tap\n[Peer]\nPublicKey = {p}\nAllowedIPs = 10.0.0.2/32\n", 6, "AllowedIPs", "not used with Mode = tap"),
    ("[Peer]\nPublicKey = {p}\nAllowedIPs = 10.0.0.2/32\n[Interface]\nMode = tap\n", 5, "AllowedIPs",
     "AllowedMACs"),
    ("Relay = on\n", 3, "Relay", "needs Mode = tap"),
    ("Mode = tun\n[Peer]\nPublicKey = {p}\nAllowedMACs = 02:00:00:00:00:01\n", 6, "AllowedMACs", "needs Mode = tap"),
    ("Mode = tap\n[Peer]\nPublicKey = {p}\nAllowedMACs = 02:00:00:00:00\n", 6, "AllowedMACs", "invalid MAC address"),
    ("Mode = tap\n[Peer]\nPublicKey = {p}\nAllowedMACs = 01:00:5e:00:00:01\n", 6, "AllowedMACs", "multicast"),
    ("Mode = tap\nRelay = sometimes\n", 4, "Relay", "expected on or off"),
])
def test_config_tap_mode_errors(body, line, key, msg):
    with pytest.raises(ConfigError) as info:
        parse(f"[Interface]\nPrivateKey = {KEY}\n" + body.format(p=PEER), "/etc/wireguard/l2.conf")
    e = info.value
    assert (e.line, e.key) == (line, key) and msg in e.message, str(e)
    assert KEY not in str(e)
