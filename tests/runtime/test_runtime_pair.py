"""The runtime layer: the real event loop (daemon.Interface) of two interfaces, with in-memory TUN devices and
datagram sockets and a fake clock (wgpy_testkit.runtime). What the core tests cannot show: that the loop reads
the TUN, hands batches to the core, runs its timers when they are due, sends what the core returns and writes
the TUN, with the configuration arriving through the UAPI."""

from __future__ import annotations

import pytest

from wgpy.constants import REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_TIMEOUT
from wgpy_testkit.core_pair import udp4
from wgpy_testkit.runtime import A_ADDR, A_IP4, B_ADDR, B_IP4, RuntimePair


@pytest.fixture
def pair():
    p = RuntimePair()
    yield p
    p.close()


def _handshakes(node) -> int:
    return int(node.get().get("last_handshake_time_sec", ["0"])[0])


def test_a_packet_into_a_tun_comes_out_of_the_other(pair):
    pkt = udp4(A_IP4, B_IP4, b"hello through the loop")
    pair.a.tun.inject(pkt)
    pair.pump()
    assert pair.b.tun.delivered() == [pkt]                # staged during the handshake, then sent
    back = udp4(B_IP4, A_IP4, b"and back")
    pair.b.tun.inject(back)
    pair.pump()
    assert pair.a.tun.delivered() == [back]
    # B learnt A's endpoint from the authenticated handshake, through the UAPI's view
    assert pair.b.get()["endpoint"] == [f"{A_ADDR[0]}:{A_ADDR[1]}"]
    assert pair.a.get()["endpoint"] == [f"{B_ADDR[0]}:{B_ADDR[1]}"]


def test_a_lost_initiation_is_retransmitted_by_the_loops_timer(pair):
    dropped = []

    def lose_first(src, dst, data):
        if data[0] == 1 and not dropped:
            dropped.append(data)
            return None
        return src, dst, data
    pair.net.filter = lose_first
    pkt = udp4(A_IP4, B_IP4, b"x" * 100)
    pair.a.tun.inject(pkt)
    pair.pump()
    assert dropped and pair.b.tun.delivered() == []
    pair.advance(REKEY_TIMEOUT + 1.5, step=0.25)          # the retransmit timer fires in the loop
    assert pair.b.tun.delivered() == [pkt]


def test_traffic_rolls_over_to_a_new_session_past_rekey_after_time(pair):
    got = []
    sent = 0
    first = None
    for second in range(0, int(REKEY_AFTER_TIME) + 30, 2):
        pkt = udp4(A_IP4, B_IP4, second.to_bytes(4, "big") * 10)
        pair.a.tun.inject(pkt)
        sent += 1
        pair.advance(2.0, step=1.0)
        got += pair.b.tun.delivered()
        if first is None:
            first = _handshakes(pair.a)
    assert len(got) == sent                              # nothing lost across the rekey
    assert _handshakes(pair.a) >= first + REKEY_AFTER_TIME  # a second handshake happened, later


def test_idle_keys_are_erased_and_a_new_packet_starts_over(pair):
    pair.a.tun.inject(udp4(A_IP4, B_IP4, b"first"))
    pair.pump()
    assert pair.b.tun.delivered()
    pair.advance(REJECT_AFTER_TIME * 3 + 10, step=30.0)
    stats = pair.a.iface.handle_uapi("wgpy_stats=1\n")
    assert "errno=0" in stats
    assert pair.a.iface.device.peers and all(p.current is None for p in pair.a.iface.device.peers.values())
    pkt = udp4(A_IP4, B_IP4, b"after the keys were zeroed")
    pair.a.tun.inject(pkt)
    pair.pump()
    assert pair.b.tun.delivered() == [pkt]


def test_listen_port_changed_live_through_the_uapi(pair):
    pair.a.tun.inject(udp4(A_IP4, B_IP4, b"1"))
    pair.pump()
    assert pair.b.tun.delivered()
    pair.a.uapi("set=1\nlisten_port=52000\n")
    assert pair.a.get()["listen_port"] == ["52000"]
    assert (A_ADDR[0], 52000) in pair.net.binds and A_ADDR not in pair.net.binds
    pkt = udp4(A_IP4, B_IP4, b"from the new port")
    pair.a.tun.inject(pkt)
    pair.pump()
    assert pair.b.tun.delivered() == [pkt]
    assert pair.b.get()["endpoint"] == [f"{A_ADDR[0]}:52000"]    # B roamed with it


def test_l2_frames_between_two_taps():
    p = RuntimePair(mode="tap")
    try:
        mac_a, mac_b = bytes.fromhex("02aa00000001"), bytes.fromhex("02bb00000002")
        frame = b"\xff" * 6 + mac_a + b"\x08\x06" + b"\x01" * 46          # a broadcast (ARP-like)
        p.a.tun.inject(frame)
        p.pump()
        assert p.b.tun.delivered() == [frame + b"\x00" * (-len(frame) & 15)]   # padded like packets
        reply = mac_a + mac_b + b"\x08\x06" + b"\x02" * 46
        p.b.tun.inject(reply)
        p.pump()
        assert p.a.tun.delivered() == [reply + b"\x00" * (-len(reply) & 15)]
    finally:
        p.close()


def test_slow_uapi_clients_never_stall_the_data_path():
    """16 clients connect to the UAPI socket and send nothing (or half a request); traffic keeps flowing at once
    and a well-behaved `get` is answered meanwhile. (Before: each was served in a blocking read of up to 2 s
    inside the loop, freezing the tunnel for 32 s.)"""
    import os
    import socket
    import time as walltime
    if os.geteuid() != 0:
        pytest.skip("the UAPI socket directory /run/wireguard is root's")
    p = RuntimePair(uapi_socket=True)
    slow = []
    try:
        path = p.a.iface.uapi.path
        for i in range(16):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            if i % 2:
                s.sendall(b"get=1\n")                  # half a request: no empty line yet
            slow.append(s)
        t0 = walltime.monotonic()
        for n in range(5):
            pkt = udp4(A_IP4, B_IP4, bytes([n]) * 64)
            p.a.tun.inject(pkt)
            p.pump()
            assert p.b.tun.delivered() == [pkt]
        good = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        good.connect(path)
        good.sendall(b"get=1\n\n")
        reply = b""
        good.setblocking(False)
        while not reply.endswith(b"errno=0\n\n") and walltime.monotonic() - t0 < 5:
            p.pump()
            try:
                reply += good.recv(65536)
            except BlockingIOError:
                pass
        good.close()
        assert reply.endswith(b"errno=0\n\n") and b"listen_port=51820" in reply
        assert walltime.monotonic() - t0 < 1.5, "the loop waited on a UAPI client"
        assert len(p.a.iface.uapi.conns) <= 32
    finally:
        for s in slow:
            s.close()
        p.close()


def test_a_multi_megabyte_set_never_stalls_the_data_path():
    """A 4 MB `set` (40,000 peers, as `wg setconf` of a big config sends it) through the UAPI socket while
    packets flow: they keep coming through during the seconds the set takes (it is applied in slices between
    passes of the loop), the set ends with errno=0 and every peer, and a `get` sent meanwhile waits for it and
    sees all of it; the client shut its side after the request (`nc -N`) and still gets the reply. (Before: the
    loop applied it in one go; an 8 MB set held the data path 6-7 s, RSS 70 -> 331 MB.)"""
    import os
    import random
    import socket
    import threading
    import time as walltime
    if os.geteuid() != 0:
        pytest.skip("the UAPI socket directory /run/wireguard is root's")
    rng = random.Random(21)
    lines = ["set=1"]
    for n in range(40000):
        lines += [f"public_key={rng.randbytes(32).hex()}",
                  f"allowed_ip=172.{16 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}/32"]
    request = ("\n".join(lines) + "\n\n").encode()
    assert len(request) > 4_000_000
    p = RuntimePair(uapi_socket=True)
    try:
        path = p.a.iface.uapi.path
        p.a.tun.inject(udp4(A_IP4, B_IP4, b"warm up"))
        p.pump()
        assert p.b.tun.delivered()
        result = {}

        def setconf():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)          # as `nc -N` does: the reply must still come
            reply = b""
            while not reply.endswith(b"\n\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            result["reply"], result["at"] = reply, walltime.monotonic()
            s.close()
        client = threading.Thread(target=setconf)
        t0 = last = walltime.monotonic()
        client.start()
        gap, sent, got, getter, got_reply = 0.0, 0, 0, None, b""
        while "reply" not in result and walltime.monotonic() - t0 < 120:
            p.a.tun.inject(udp4(A_IP4, B_IP4, sent.to_bytes(4, "big") * 16))
            sent += 1
            p.pump(3)
            delivered = p.b.tun.delivered()
            now = walltime.monotonic()
            if delivered:
                got += len(delivered)
                gap, last = max(gap, now - last), now
            if getter is None and len(p.a.iface.device.peers) > 1000:      # the set is under way
                getter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                getter.connect(path)
                getter.sendall(b"get=1\n\n")
                getter.setblocking(False)
        client.join()
        duration = result["at"] - t0
        assert result["reply"] == b"errno=0\n\n"
        assert len(p.a.iface.device.peers) == 40001
        assert got >= sent - 2 and getter is not None
        assert gap < max(0.5, duration / 5), f"no packet for {gap:.2f} s of a {duration:.1f} s set"
        while not got_reply.endswith(b"errno=0\n\n") and walltime.monotonic() - t0 < 150:
            p.pump(1)
            try:
                got_reply += getter.recv(1 << 20)
            except BlockingIOError:
                pass
        getter.close()
        assert got_reply.count(b"public_key=") == 40001          # the whole set, never half of it
        p.pump(1)
        assert p.a.iface.uapi.buffered == 0 and p.a.iface.uapi.job is None
    finally:
        p.close()
