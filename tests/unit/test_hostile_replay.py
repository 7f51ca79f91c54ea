"""Replays against the core, deterministically (the namespace version is in test_hostile_network.py):
data messages replayed are dropped and counted; an initiation replayed is rejected by its timestamp; and what a
responder restart changes: the restarted responder has forgotten the latest timestamp, so it answers a replayed
initiation, but no session can follow from that."""

from __future__ import annotations

from wgpy.protocol.device import Device

from wgpy_testkit.core_pair import A_IP4, B_IP4, Pair, mtype, seeded_rand, udp4


def captured(p: Pair, sender: str, type_: int) -> list[bytes]:
    return [d for _, s, _, d in p.log if s == sender and mtype(d) == type_]


def test_replayed_data_and_initiation_dropped_and_counted():
    p = Pair(41)
    p.handshake(0.0)
    p.send("A", [udp4(A_IP4, B_IP4, bytes([i])) for i in range(20)], 1.0)
    data, inits = captured(p, "A", 4), captured(p, "A", 1)
    delivered = len(p.tun["B"])
    out: list = []
    p.b.receive_datagrams([(d, "attacker") for d in data + inits], 2.0, out, p.tun["B"])
    assert out == [] and len(p.tun["B"]) == delivered
    assert p.b.drops["replay"] == len(data) and p.b.drops["invalid_initiation"] == len(inits) == 1
    assert p.pb.endpoint == "A"                          # a replay does not move the endpoint (no roaming)


def test_responder_restart_answers_a_replayed_initiation_but_no_session_follows():
    p = Pair(42)
    p.handshake(0.0)
    p.send("A", [udp4(A_IP4, B_IP4, b"secret")], 1.0)
    init, data = captured(p, "A", 1)[0], captured(p, "A", 4)
    # B restarts: same key, same peer, no memory of timestamps or sessions
    b2 = Device(p.priv_b, rand=seeded_rand(4242), wall=p.clock.wall)
    pa2 = b2.add_peer(p.pub_a)
    out: list = []
    tun: list = []
    b2.receive_datagrams([(init, "attacker")], 10.0, out, tun)
    # the initiation is authentic and newer than anything b2 remembers: it answers (to the attacker's address)
    assert [(len(d), mtype(d), ep) for d, ep in out] == [(92, 2, "attacker")]
    assert pa2.next is not None and pa2.current is None   # a responder's keypair waits for confirmation ...
    # (and, as in every WireGuard, an authenticated initiation moves the endpoint: until A's own next
    # handshake, b2's handshake attempts towards A go to the replayer's address, see docs/reliability.md)
    assert pa2.endpoint == "attacker"
    # ... which only the real A could give: the attacker has neither A's ephemeral nor static private key, so
    # it can neither read the response nor produce a transport message under the new keys. Old data messages
    # name a receiver index of the dead process:
    b2.receive_datagrams([(d, "attacker") for d in data], 11.0, out, tun)
    assert tun == [] and b2.drops["unknown_index"] == len(data)
    assert pa2.current is None and pa2.last_handshake_wall == 0.0
    # the next-keypair expires unused; a second replay of the same initiation is rejected by timestamp
    out.clear()
    b2.receive_datagrams([(init, "attacker")], 12.0, out, tun)
    assert out == [] and b2.drops["invalid_initiation"] == 1
