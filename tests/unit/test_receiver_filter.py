"""The transport sockets' receiver filter (io/udp.py receivers_filter, UdpBind.filter_receivers): once sessions
exist the kernel lets a transport message into the transport queue only if its receiver index is one of the
device's keypairs, so a flood of transport-type garbage cannot fill the queue the sessions' packets need
(issue 21 item 13: docs/reliability.md section 4). Real sockets on the loopback, the kernel runs the program."""

from __future__ import annotations

import os
import random
import socket
import time

import pytest

from wgpy.io.udp import MAX_FILTERED_INDICES, UdpBind, receivers_filter


def transport(index: int, size: int = 32) -> bytes:
    return b"\x04\x00\x00\x00" + index.to_bytes(4, "little") + bytes(size - 8)


def drain(sock) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(4096))
        except BlockingIOError:
            return got


def exchange(bind: UdpBind, datagrams: list[bytes], host: str = "127.0.0.1") -> tuple[list[bytes], list[bytes]]:
    """Send `datagrams` to the bind; -> (what its transport socket got, what its handshake socket got)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    c = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        for d in datagrams:
            c.sendto(d, (host, bind.port))
    finally:
        c.close()
    time.sleep(0.05)
    s, h = (bind.s6, bind.h6) if fam == socket.AF_INET6 else (bind.s4, bind.h4)
    return drain(s), drain(h) if h is not None else []


@pytest.fixture
def bind():
    b = UdpBind()
    b.open(0)
    yield b
    b.close()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 8, 9, 17, 100, MAX_FILTERED_INDICES])
def test_only_known_receiver_indices_pass(bind, n):
    rng = random.Random(n)
    known = {rng.getrandbits(32) for _ in range(n)}
    assert bind.filter_receivers(dict.fromkeys(known)) and bind.filtered
    probe = sorted(known)[:300] if n > 300 else sorted(known)
    unknown = [rng.getrandbits(32) for _ in range(200)] + [0, 0xFFFFFFFF]
    unknown += [k ^ 1 for k in probe] + [k ^ (1 << 31) for k in probe]     # neighbours of every known value
    unknown = [u for u in unknown if u not in known]
    drops0 = bind.kernel_drops()
    got, _ = exchange(bind, [transport(k) for k in probe] + [transport(u) for u in unknown])
    assert sorted(got) == sorted(transport(k) for k in probe)
    assert bind.kernel_drops() - drops0 == len(unknown)            # dropped by the kernel, counted there


def test_handshake_messages_and_short_garbage(bind):
    bind.filter_receivers({7: None})
    init = b"\x01\x00\x00\x00" + bytes(144)
    got, hs = exchange(bind, [transport(7), b"\x04\x00\x00\x00\x07\x00", b"\x04", init])
    assert got == [transport(7)]                                   # too short for an index: dropped
    assert hs == [init]                                            # the handshake queue is not filtered


def test_ipv6_transport_socket_is_filtered_too(bind):
    if bind.s6 is None:
        pytest.skip("no IPv6 in this environment")
    bind.filter_receivers({0x01020304: None})
    try:
        got, _ = exchange(bind, [transport(0x01020304), transport(0x04030201)], "::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    assert got == [transport(0x01020304)]


def test_too_many_indices_or_no_steering_is_the_core_alone(bind):
    rng = random.Random(5)
    assert bind.filter_receivers({7: None})
    assert not bind.filter_receivers(dict.fromkeys(rng.getrandbits(32) for _ in range(MAX_FILTERED_INDICES + 1)))
    assert not bind.filtered
    got, _ = exchange(bind, [transport(7), transport(8)])
    assert sorted(got) == sorted([transport(7), transport(8)])    # no filter: the core drops what is unknown


def test_a_refused_program_leaves_no_socket_filtered(bind, monkeypatch):
    """The kernel refuses the program on the second socket (e.g. out of option memory): the first, which took
    it, must not keep filtering with it, nor any socket with an older program that lacks a new index."""
    from wgpy.io import udp
    if bind.s6 is None:
        pytest.skip("one socket only")
    real = udp._attach
    calls = []

    def second_fails(sock, option, program):
        calls.append(sock)
        if len(calls) == 2:
            raise OSError(12, "Cannot allocate memory")
        real(sock, option, program)
    monkeypatch.setattr(udp, "_attach", second_fails)
    assert not bind.filter_receivers({7: None, 8: None}) and not bind.filtered
    got, _ = exchange(bind, [transport(7), transport(8), transport(9)])
    assert sorted(got) == sorted([transport(7), transport(8), transport(9)])     # the core decides


def test_program_fits_the_kernel_limit():
    rng = random.Random(9)
    prog = receivers_filter(rng.getrandbits(32) for _ in range(MAX_FILTERED_INDICES))
    assert len(prog) // 8 <= 4096                                  # BPF_MAXINSNS


def test_without_steering_other_messages_pass_the_transport_socket():
    """The single-socket fallback (no SO_REUSEPORT steering): everything arrives on s4, and the filter passes
    every message that is not a transport message."""
    b = UdpBind()
    s4, s6, h4, h6 = b._plain(0, False)
    b.s4, b.port = s4, s4.getsockname()[1]
    s4.setblocking(False)
    try:
        b.filter_receivers({9: None})
        init = b"\x01\x00\x00\x00" + bytes(144)
        got, _ = exchange(b, [transport(9), transport(10), init, b"\x07junk"])
        assert sorted(got) == sorted([transport(9), init, b"\x07junk"])
    finally:
        b.close()


# ---------------------------------------------------------------------------------------------------------------
# the event loop keeps the filter current (daemon.Interface, real UDP sockets on the loopback, in-memory TUNs)
# ---------------------------------------------------------------------------------------------------------------

def test_the_loop_filters_garbage_and_follows_new_sessions():
    """Two real event loops over the loopback: once a session is up, transport-type garbage sent to B is
    dropped by the kernel (B's core sees none of it) while A's packets arrive; a new handshake (a new receiver
    index) is in the filter before A's first message with it, and a listen port changed live keeps it."""
    import ipaddress

    from wgpy.daemon import Interface
    from wgpy.io.memory import MemoryTun
    from wgpy_testkit.core_pair import A_IP4, B_IP4, udp4

    def node(name):
        i = Interface(name, tun=MemoryTun(name), uapi=False, host_link=False)
        i.open()
        i.device.set_private_key(os.urandom(32))
        return i

    a, b = node("wgfa"), node("wgfb")
    try:
        pa, pb = a.device.add_peer(b.device.public_key), b.device.add_peer(a.device.public_key)
        a.device.allowed_ips.insert(ipaddress.ip_network(B_IP4 + "/32"), pa)
        b.device.allowed_ips.insert(ipaddress.ip_network(A_IP4 + "/32"), pb)
        pa.endpoint = ("127.0.0.1", b.listen_port)
        got: list[bytes] = []

        def send(n: int, tag: bytes) -> None:
            out: list = []
            a.device.send_packets([udp4(A_IP4, B_IP4, tag + b"%d" % i) for i in range(n)], time.monotonic(), out)
            a.flush(out)
            deadline = time.monotonic() + 5
            want = len(got) + n
            while len(got) < want and time.monotonic() < deadline:
                a.step(0.005)
                b.step(0.005)
                got.extend(b.tun.delivered())
            assert len(got) == want, (len(got), want)

        send(3, b"first")
        assert b.bind.filtered and set(b.device.keypairs_by_index) and a.bind.filtered
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(1)
        drops0 = b.bind.kernel_drops()
        for _ in range(500):
            c.sendto(transport(rng.getrandbits(32), 96), ("127.0.0.1", b.listen_port))
        send(3, b"beside the garbage")
        assert b.device.drops["unknown_index"] == 0                # the core never saw the garbage
        assert b.bind.kernel_drops() - drops0 >= 500
        from wgpy.uapi.protocol import handle_stats
        stats = dict(line.split("=", 1) for line in handle_stats(b).splitlines())
        assert int(stats["udp_kernel_drops"]) >= 500               # `wgpy show IFACE stats` tells
        # a new session: A initiates again, B (the responder) has a new index before A's first message with it
        old, session = set(b.device.keypairs_by_index), pa.current
        out: list = []
        pa.last_sent_handshake = -1e9              # (REKEY_TIMEOUT since the first one, without the wait)
        time.sleep(0.1)                            # a newer TAI64N stamp than the first initiation's
        a.device.initiate_handshake(pa, time.monotonic(), out, retry=False)
        a.flush(out)
        deadline = time.monotonic() + 5
        while pa.current is session:
            assert time.monotonic() < deadline, ("no new session", dict(b.device.drops), dict(a.device.drops))
            a.step(0.005)
            b.step(0.005)
        send(3, b"new session")
        assert not b.device.drops["unknown_index"] and set(b.device.keypairs_by_index) - old
        # a new listen port: the new sockets get the filter of the sessions that exist
        b.set_listen_port(0)
        pa.endpoint = ("127.0.0.1", b.listen_port)
        assert b.bind.filtered
        drops0 = b.bind.kernel_drops()
        for _ in range(100):
            c.sendto(transport(rng.getrandbits(32), 96), ("127.0.0.1", b.listen_port))
        send(3, b"new port")
        assert b.device.drops["unknown_index"] == 0 and b.bind.kernel_drops() - drops0 >= 100
        c.close()
    finally:
        a.close()
        b.close()
