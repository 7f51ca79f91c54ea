"""Source address stickiness in the UDP batch layer (io/batch.py): a read names the local address the datagram
arrived at (a Sticky source), and what is sent to that source leaves from that address. Loopback only: 127.0.0.1
and 127.0.0.2 are both local (all of 127/8 is), so "two addresses on one interface" needs no namespace."""

from __future__ import annotations

import socket

import pytest

from wgpy.io.batch import BatchSender, Sticky, enable_gro, enable_pktinfo, receive_batch
from wgpy.io.udp import format_endpoint, make_endpoint

from test_batch import drain


def _server(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    s.setblocking(False)
    enable_gro(s)
    assert enable_pktinfo(s)
    return s


def _read(sock: socket.socket, want: int = 1) -> list:
    return drain(sock, want)


@pytest.fixture
def v4():
    """A wildcard-bound server with PKTINFO and GRO, and a client on 127.0.0.1; both closed afterwards."""
    srv = _server(socket.AF_INET)
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.bind(("127.0.0.1", 0))
    yield srv, cli
    srv.close()
    cli.close()


def _recv_from(client: socket.socket, n: int) -> list:
    client.settimeout(2)
    return [client.recvfrom(2048) for _ in range(n)]


@pytest.mark.parametrize("local", ["127.0.0.1", "127.0.0.2"])
def test_answers_leave_from_the_address_written_to_v4(v4, local):
    srv, cli = v4
    port = srv.getsockname()[1]
    cli.sendto(b"hello", (local, port))
    (data, src), = _read(srv)
    assert data == b"hello"
    assert src.__class__ is Sticky and src.local == local
    # the peer's address everywhere an endpoint is compared, hashed or shown
    plain = cli.getsockname()
    assert src == plain and hash(src) == hash(plain) and {plain: 1}[src] == 1
    assert format_endpoint(src) == f"127.0.0.1:{plain[1]}"
    sender = BatchSender()
    # one datagram (sendmsg instead of sendto) and a GSO run of three plus a shorter tail
    sender.send([(b"one", src)] + [(b"x" * 100, src)] * 3 + [(b"y", src)], srv, None)
    assert sender.errors == 0
    got = _recv_from(cli, 5)
    assert [d for d, _ in got] == [b"one"] + [b"x" * 100] * 3 + [b"y"]
    assert {a for _, a in got} == {(local, port)}


@pytest.mark.parametrize("local", ["::1"])
def test_answers_leave_from_the_address_written_to_v6(local):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = _server(socket.AF_INET6)
    cli = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        cli.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    try:
        port = srv.getsockname()[1]
        cli.sendto(b"hello", (local, port))
        (_, src), = _read(srv)
        assert src.__class__ is Sticky and src.local == local and len(src) == 4
        assert format_endpoint(src) == f"[::1]:{cli.getsockname()[1]}"
        sender = BatchSender()
        sender.send([(b"a" * 50, src)] * 2, None, srv)
        assert sender.errors == 0
        assert {a[:2] for _, a in _recv_from(cli, 2)} == {(local, port)}
    finally:
        srv.close()
        cli.close()


def test_a_gro_read_shares_one_source(v4):
    srv, cli = v4
    port = srv.getsockname()[1]
    for _ in range(8):
        cli.sendto(b"z" * 200, ("127.0.0.2", port))
    got = _read(srv, 8)
    assert len(got) == 8
    assert all(s.local == "127.0.0.2" for _, s in got)


def test_a_source_that_left_the_host_falls_over_to_the_kernels_choice(v4):
    srv, cli = v4
    cli.sendto(b"hello", ("127.0.0.2", srv.getsockname()[1]))
    (_, src), = _read(srv)
    gone = Sticky(src)           # as if 192.0.2.77 had been the local address and was removed since
    gone.cmsg = (src.cmsg[0], src.cmsg[1], bytes(4) + socket.inet_aton("192.0.2.77") + bytes(4))
    sender = BatchSender()
    sender.send([(b"one", gone)], srv, None)
    sender.send([(b"r" * 80, gone)] * 3, srv, None)
    assert sender.errors == 0 and sender.gso
    assert gone.cmsg is None and gone.local is None     # forgotten: the next read re-learns it
    got = _recv_from(cli, 4)
    assert [d for d, _ in got] == [b"one"] + [b"r" * 80] * 3
    assert {a[0] for _, a in got} == {"127.0.0.1"}


def test_without_pktinfo_and_configured_endpoints_stay_plain_tuples():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        cli.sendto(b"x", s.getsockname())
        (_, src), = _read(s)
        assert src.__class__ is tuple
        assert make_endpoint("127.0.0.2", 1).__class__ is tuple
    finally:
        s.close()
        cli.close()
