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
