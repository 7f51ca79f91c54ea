"""io/stream.py: framing, and two real cores talking over real loopback TCP/TLS sockets in this process (the
daemon's epoll loop reduced to what streams need: no TUN, no UDP)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wgpy.constants import STREAM_MAX_FRAME, STREAM_SEND_BUFFER
from wgpy.daemon import Interface
from wgpy.io import stream
from wgpy.io.memory import MemoryBind, MemoryNetwork, MemoryTun
from wgpy.io.stream import FrameError, encode_frame, parse_frames, parse_pin, parse_url
from wgpy.streams import connection

from wgpy_testkit.core_pair import A_IP4, B_IP4, udp4

KEEPALIVE = b"\x04\x00\x00\x00" + b"\x00" * 28
INITIATION = b"\x01\x00\x00\x00" + b"\x00" * 144


# ---------------------------------------------------------------------------------------------------------------
# framing
# ---------------------------------------------------------------------------------------------------------------

def test_frames_round_trip_in_any_pieces():
    msgs = [KEEPALIVE, INITIATION, b"\x04\x00\x00\x00" + os.urandom(1400), b"\x02\x00\x00\x00" + b"\x01" * 88,
            b"\x03\x00\x00\x00" + b"\x02" * 60]
    wire = b"".join(encode_frame(m) for m in msgs)
    for cut in (1, 2, 3, 5, 6, 7, 100, len(wire)):
        buf = bytearray()
        got: list = []
        for i in range(0, len(wire), cut):
            buf += wire[i:i + cut]
            used = parse_frames(buf, "src", got)
            del buf[:used]
        assert [m for m, _ in got] == msgs and not buf
        assert all(src == "src" for _, src in got)


@pytest.mark.parametrize("data,reason", [
    (struct.pack(">H", 0), "stream_short_frame"),
    (struct.pack(">H", 31), "stream_short_frame"),
    (struct.pack(">H", STREAM_MAX_FRAME + 1), "stream_oversized_frame"),
    (struct.pack(">H", 65535), "stream_oversized_frame"),
    (struct.pack(">H", 1000) + b"\x05\x00\x00\x00", "stream_bad_message_type"),
    (struct.pack(">H", 1000) + b"\x04\x00\x01\x00", "stream_bad_message_type"),
    (b"GET / HTTP/1.1\r\n", "stream_bad_message_type"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "stream_bad_message_type"),      # a TLS ClientHello
    (struct.pack(">H", 149) + b"\x01\x00\x00\x00", "stream_bad_message_size"),
    (struct.pack(">H", 93) + b"\x02\x00\x00\x00", "stream_bad_message_size"),
    (struct.pack(">H", 65) + b"\x03\x00\x00\x00", "stream_bad_message_size"),
])
def test_bad_frames_are_refused_from_their_first_bytes(data, reason):
    buf = bytearray(encode_frame(KEEPALIVE) + data)
    got: list = []
    with pytest.raises(FrameError) as e:
        parse_frames(buf, None, got)
    assert e.value.reason == reason
    assert [m for m, _ in got] == [KEEPALIVE]      # the good frame before it was kept


def test_largest_frame_is_accepted():
    msg = b"\x04\x00\x00\x00" + b"\x00" * (STREAM_MAX_FRAME - 4)
    got: list = []
    assert parse_frames(bytearray(encode_frame(msg)), None, got) == STREAM_MAX_FRAME + 2
    assert got[0][0] == msg


def test_parse_stops_at_the_limit_and_bytes_wanted_reads_no_further():
    """An unauthenticated connection's reads (stream_conn.Conn.read_unauthenticated): parse at most `limit`
    frames; read exactly what those frames still need, so no byte beyond the last of them is taken."""
    from wgpy.streams.framing import bytes_wanted
    msgs = [INITIATION, KEEPALIVE, b"\x04\x00\x00\x00" + b"\x01" * 1000]
    wire = b"".join(encode_frame(m) for m in msgs)
    got: list = []
    assert parse_frames(bytearray(wire), None, got, 2) == 150 + 34 and [m for m, _ in got] == msgs[:2]
    assert parse_frames(bytearray(wire), None, [], 0) == 0
    # reading byte by byte as bytes_wanted says: each frame whole, then nothing once the budget is reached
    for budget in (1, 2, 3):
        buf, reads = bytearray(), 0
        while (want := bytes_wanted(buf, budget)):
            buf += wire[len(buf):len(buf) + want]
            reads += 1
        assert bytes(buf) == b"".join(encode_frame(m) for m in msgs[:budget])
        # per frame a header with the smallest body, then the rest (a keepalive is the smallest: one read)
        assert reads == (2, 3, 5)[budget - 1]
    assert bytes_wanted(bytearray(), 0) == 0
    assert bytes_wanted(bytearray(b"\x00"), 1) == 33                       # the header's second byte and 32
    assert bytes_wanted(bytearray(struct.pack(">H", 65535)), 5) == 0      # a bad header: parse refuses it


def test_urls_and_pins():
    assert parse_url("tcp://192.0.2.1:443") == ("tcp", "192.0.2.1", 443)
    assert parse_url("TLS://[2001:db8::1]:8443") == ("tls", "2001:db8::1", 8443)
    assert parse_url("tcp://[::ffff:192.0.2.1]:1") == ("tcp", "192.0.2.1", 1)
    for bad in ("udp://1.2.3.4:1", "tcp://1.2.3.4", "tcp://1.2.3.4:0", "tcp://name.example:443", "tcp://[::1:1"):
        with pytest.raises(ValueError):
            parse_url(bad)
    h = hashlib.sha256(b"x").hexdigest()
    colons = ":".join(h[i:i + 2] for i in range(0, 64, 2)).upper()
    assert parse_pin(h) == parse_pin(colons) == parse_pin("sha256:" + colons) == bytes.fromhex(h)
    with pytest.raises(ValueError):
        parse_pin(h[:-2])


# ---------------------------------------------------------------------------------------------------------------
# two cores over loopback
# ---------------------------------------------------------------------------------------------------------------

class Node:
    """One real event loop (daemon.Interface) with an in-memory TUN, its UDP bind on a private in-memory network
    (unused here) and the real stream manager over loopback TCP/TLS; `tun` collects what the tunnel delivered.
    The runtime layer, not a copy of the loop."""

    def __init__(self, private: bytes | None = None) -> None:
        self._tun = MemoryTun("wgst")
        net = MemoryNetwork()
        self.iface = Interface("wgst", tun=self._tun, bind_factory=lambda: MemoryBind(net, "198.51.100.1"),
                               uapi=False, host_link=False)
        self.iface.open()
        self.dev = self.iface.device
        self.dev.control_enabled = False        # byte for byte the messages a plain WireGuard core sends
        self.dev.set_private_key(private or os.urandom(32))
        self.streams = self.iface.streams
        self.epoll = self.iface.epoll
        self.tun: list[bytes] = []

    def step(self, timeout: float = 0.01) -> None:
        self.iface.step(timeout)
        self.tun.extend(self._tun.delivered())

    def close(self) -> None:
        self.iface.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_until(nodes, cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in nodes:
            n.step(0.005)
        if cond():
            return
    raise AssertionError("condition not reached")


def pair(scheme: str = "tcp", host: str = "127.0.0.1", **target_opts):
    server, client = Node(), Node()
    ps = server.dev.add_peer(client.dev.public_key)
    pc = client.dev.add_peer(server.dev.public_key)
    server.dev.allowed_ips.insert(ipaddress.ip_network(A_IP4 + "/32"), ps)
    client.dev.allowed_ips.insert(ipaddress.ip_network(B_IP4 + "/32"), pc)
    port = free_port()
    if scheme == "tls":
        server.streams.set_tls_identity(target_opts.pop("cert"), target_opts.pop("key"))
    server.streams.listen(scheme, port)
    pc.endpoint = client.streams.target(scheme, host, port, **target_opts)
    return server, client, ps, pc, port


def make_cert(tmp_path, name: str = "vpn.example.test"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cpath, kpath = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def exchange(server, client, n: int = 50) -> None:
    out: list = []
    pkts = [udp4(A_IP4, B_IP4, os.urandom(1000) + bytes([i])) for i in range(n)]
    client.dev.send_packets(pkts, time.monotonic(), out)
    client.streams.send(out)
    run_until([server, client], lambda: len(server.tun) >= n)
    assert server.tun[-n:] == pkts
    back = [udp4(B_IP4, A_IP4, b"pong%d" % i) for i in range(n)]
    out = []
    server.dev.send_packets(back, time.monotonic(), out)
    server.streams.send(out)
    run_until([server, client], lambda: len(client.tun) >= n)
    assert client.tun[-n:] == back


def test_tcp_tunnel_between_two_cores():
    server, client, ps, pc, _ = pair("tcp")
    try:
        exchange(server, client)
        # the server learned the client's connection from the handshake, by authentication
        assert isinstance(ps.endpoint, stream.StreamEndpoint) and not ps.endpoint.outbound
        assert ps.endpoint.conn.authenticated and server.streams.unauthenticated == 0
        assert server.streams.counters["stream_authenticated"] == 1
        assert pc.endpoint.state == "up" and client.streams.counters["stream_connected"] == 1
        for sock in (pc.endpoint.conn.sock, ps.endpoint.conn.sock):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.close()
        client.close()


def test_tcp_over_ipv6():
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server, client, ps, pc, port = pair("tcp", "::1")
    try:
        exchange(server, client, 5)
        assert pc.endpoint.url == f"tcp://[::1]:{port}" and ps.endpoint.host == "::1"
    finally:
        server.close()
        client.close()


def test_reconnect_after_the_connection_dies():
    server, client, ps, pc, _ = pair("tcp")
    try:
        exchange(server, client, 5)
        old = ps.endpoint
        # kill the client's socket under it (as a RST would)
        pc.endpoint.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        pc.endpoint.conn.sock.shutdown(socket.SHUT_RDWR)
        run_until([server, client], lambda: client.streams.counters["stream_connected"] == 2, 10)
        run_until([server, client], lambda: ps.endpoint is not old and ps.endpoint.conn is not None, 10)
        exchange(server, client, 5)        # the same session: the greeting keepalive re-authenticated it
        assert client.streams.counters["stream_dropped"] == 1
        assert len(server.streams.conns) == 1
    finally:
        server.close()
        client.close()


def test_tls_with_a_pinned_certificate(tmp_path):
    cert, key, pin = make_cert(tmp_path)
    server, client, ps, pc, _ = pair("tls", cert=str(cert), key=str(key), pin=pin)
    try:
        exchange(server, client)
        sock = pc.endpoint.conn.sock
        assert isinstance(sock, ssl.SSLSocket) and sock.version() == "TLSv1.3"
    finally:
        server.close()
        client.close()


def test_tls_verified_against_a_ca_file_with_sni(tmp_path):
    cert, key, _ = make_cert(tmp_path)
    server, client, ps, pc, _ = pair("tls", cert=str(cert), key=str(key), ca_file=str(cert),
                                     server_name="vpn.example.test")
    try:
        exchange(server, client)
    finally:
        server.close()
        client.close()


@pytest.mark.parametrize("how", ["wrong pin", "wrong ca", "wrong name"])
def test_tls_refuses_an_untrusted_server_and_keeps_retrying(tmp_path, how, caplog):
    cert, key, pin = make_cert(tmp_path)
    other, _, other_pin = make_cert(tmp_path, "other.example.test")
    opts = {"wrong pin": {"pin": other_pin}, "wrong ca": {"ca_file": str(other), "server_name": "vpn.example.test"},
            "wrong name": {"ca_file": str(cert), "server_name": "not-it.example.test"}}[how]
    server, client, ps, pc, _ = pair("tls", cert=str(cert), key=str(key), **opts)
    try:
        out: list = []
        client.dev.send_packets([udp4(A_IP4, B_IP4, b"x")], time.monotonic(), out)
        with caplog.at_level("WARNING", logger="wgpy"):
            client.streams.send(out)
            run_until([server, client], lambda: pc.endpoint.failures >= 3, 15)
        assert server.tun == [] and pc.current is None
        assert client.streams.counters["stream_tls_handshake_failed"] >= 3
        reason = "does not match the pinned" if how == "wrong pin" else "certificate verify failed"
        assert sum(reason in r.getMessage() for r in caplog.records) >= 3
        if how == "wrong name":
            assert any("Hostname mismatch" in r.getMessage() for r in caplog.records)
        assert pc.endpoint.state == "backoff"
    finally:
        server.close()
        client.close()


def test_send_buffer_is_bounded_when_the_far_end_does_not_read():
    a = Node()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    try:
        ep = a.streams.target("tcp", "127.0.0.1", lsock.getsockname()[1])
        msg = b"\x04\x00\x00\x00" + b"\x00" * 1400
        for _ in range(200):
            a.streams.send([(msg, ep)] * 64)
            a.step(0.001)
        conn = ep.conn
        assert conn is not None and conn.state == "up"
        assert len(conn.wbuf) <= STREAM_SEND_BUFFER
        assert a.streams.counters["stream_send_buffer_full"] > 0
        unsent = a.streams.counters["stream_send_buffer_full"] * len(msg)
        assert unsent > 10 * STREAM_SEND_BUFFER            # most of it was dropped, not queued
    finally:
        a.close()
        lsock.close()


def test_unauthenticated_connections_are_bounded_and_a_newcomer_evicts_the_oldest(monkeypatch):
    monkeypatch.setattr(connection, "STREAM_MAX_UNAUTHENTICATED", 4)     # the Budget's limits
    monkeypatch.setattr(connection, "STREAM_UNAUTHENTICATED_PER_SOURCE", 3)
    server = Node()
    port = free_port()
    server.streams.listen("tcp", port)
    socks = []
    try:
        for _ in range(6):                        # one source: it keeps at most 3, its oldest go first
            socks.append(socket.create_connection(("127.0.0.1", port)))
            server.step(0.01)
        for _ in range(20):
            server.step(0.01)
        assert server.streams.unauthenticated == 3
        assert server.streams.counters["stream_unauthenticated_evicted"] == 3
        for s in socks[:3]:                       # the three oldest were closed by the server
            s.settimeout(2)
            assert s.recv(10) == b""
        # other sources fill the rest; the budget (4) full, the oldest of all makes room
        for src in ("127.0.0.2", "127.0.0.3"):
            s = socket.create_connection(("127.0.0.1", port), source_address=(src, 0))
            socks.append(s)
            server.step(0.01)
        for _ in range(20):
            server.step(0.01)
        assert server.streams.unauthenticated == 4
        assert server.streams.counters["stream_unauthenticated_evicted"] == 4
        # a bad frame frees a slot
        socks[-1].sendall(struct.pack(">H", 0))
        for _ in range(20):
            server.step(0.01)
        assert server.streams.unauthenticated == 3 and server.streams.counters["stream_short_frame"] == 1
    finally:
        for s in socks:
            s.close()
        server.close()


def test_listen_refuses_a_port_in_use_and_keeps_the_old_one():
    server = Node()
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen(1)
    try:
        port = free_port()
        server.streams.listen("tcp", port)
        with pytest.raises(OSError):
            server.streams.listen("tcp", busy.getsockname()[1])
        assert server.streams.listen_ports["tcp"] == port
        socket.create_connection(("127.0.0.1", port)).close()
        server.streams.listen("tcp", 0)
        assert not server.streams.listeners
        assert server.streams.active        # stays on: a peer may still hold a (now dead) stream endpoint
    finally:
        busy.close()
        server.close()


def test_a_dead_stream_endpoint_never_reaches_the_udp_sender():
    server, client, ps, pc, _ = pair("tcp")
    try:
        exchange(server, client, 2)
        server.streams.listen("tcp", 0)
        pc.endpoint.conn.sock.close()
        run_until([server, client], lambda: not server.streams.conns, 10)
        assert isinstance(ps.endpoint, stream.StreamEndpoint) and ps.endpoint.conn is None
        out: list = []
        server.dev.send_keepalive(ps, time.monotonic(), out)
        assert out and server.streams.active
        assert server.streams.send(out) == []
        assert server.streams.counters["stream_send_closed"] == 1
    finally:
        server.close()
        client.close()


def test_one_listener_many_peers_told_apart_by_their_handshakes():
    """Three clients on one TCP port (all from 127.0.0.1): each connection is bound to the peer whose handshake
    came over it, and the server's replies reach the right client."""
    server = Node()
    port = free_port()
    server.streams.listen("tcp", port)
    clients = []
    try:
        for i in range(3):
            c = Node()
            ps = server.dev.add_peer(c.dev.public_key)
            pc = c.dev.add_peer(server.dev.public_key)
            ip = f"10.0.1.{i + 1}"
            server.dev.allowed_ips.insert(ipaddress.ip_network(ip + "/32"), ps)
            c.dev.allowed_ips.insert(ipaddress.ip_network(B_IP4 + "/32"), pc)
            pc.endpoint = c.streams.target("tcp", "127.0.0.1", port)
            clients.append((c, ps, pc, ip))
        nodes = [server] + [c for c, *_ in clients]
        for c, ps, pc, ip in clients:
            out: list = []
            c.dev.send_packets([udp4(ip, B_IP4, b"hello from " + ip.encode())], time.monotonic(), out)
            c.streams.send(out)
        run_until(nodes, lambda: len(server.tun) == 3)
        eps = [ps.endpoint for _, ps, _, _ in clients]
        assert len({id(e) for e in eps}) == 3 and all(e.conn.authenticated for e in eps)
        assert {e.conn.peer for e in eps} == {ps for _, ps, _, _ in clients}
        out = []
        server.dev.send_packets([udp4(B_IP4, ip, b"to " + ip.encode()) for *_, ip in clients], time.monotonic(),
                                out)
        server.streams.send(out)
        run_until(nodes, lambda: all(c.tun for c, *_ in clients))
        for c, _, _, ip in clients:
            assert c.tun == [udp4(B_IP4, ip, b"to " + ip.encode())]
    finally:
        for c, *_ in clients:
            c.close()
        server.close()


def test_random_bytes_never_break_the_parser():
    """Random streams (and random corruptions of a valid one) only ever give well-formed frames or FrameError."""
    import random
    rng = random.Random(7)
    valid = b"".join(encode_frame(m) for m in (KEEPALIVE, INITIATION) * 4)
    for i in range(5000):
        if i % 2:
            data = bytearray(rng.randbytes(rng.randrange(0, 300)))
        else:
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        got: list = []
        try:
            used = parse_frames(data, None, got)
        except FrameError as e:
            assert e.reason.startswith("stream_")
            used = None
        for msg, _ in got:
            assert 32 <= len(msg) <= STREAM_MAX_FRAME and msg[1:4] == b"\x00\x00\x00" and 1 <= msg[0] <= 4
            assert msg[0] == 4 or len(msg) == (0, 148, 92, 64)[msg[0]]
        if used is not None:
            assert used == sum(len(m) + 2 for m, _ in got) and used <= len(data)


def test_unauthenticated_burst_reaches_the_core_only_up_to_the_limit():
    from wgpy.constants import STREAM_UNAUTHENTICATED_FRAMES
    server = Node()
    port = free_port()
    server.streams.listen("tcp", port)
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        bogus = encode_frame(INITIATION)
        sock.sendall(bogus * 500)
        run_until([server], lambda: server.streams.counters["stream_unauthenticated_frames"] == 1, 5)
        assert server.dev.drops["invalid_mac1"] == STREAM_UNAUTHENTICATED_FRAMES
        assert not server.streams.conns
    finally:
        sock.close()
        server.close()


def test_an_unauthenticated_connection_is_read_only_up_to_its_frame_budget(monkeypatch):
    """Issue 21 item 7: a connection that streams well-framed garbage gets only its frame budget's bytes read
    and parsed (16 frames here), not the READ_BUDGET of 1 MiB a wakeup of an authenticated one may read; the
    rest stays in the kernel until the connection is closed."""
    from wgpy.constants import STREAM_UNAUTHENTICATED_FRAMES
    from wgpy.io import stream_conn
    parsed = []
    real_parse = stream_conn.parse_frames

    def counting_parse(buf, src, out, *limit):
        n0 = len(out)
        used = real_parse(buf, src, out, *limit)
        parsed.append((len(buf), len(out) - n0))
        return used
    monkeypatch.setattr(stream_conn, "parse_frames", counting_parse)
    server = Node()
    port = free_port()
    server.streams.listen("tcp", port)
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        garbage = encode_frame(KEEPALIVE) * 20000              # 680,000 bytes of transport frames
        sock.setblocking(False)
        try:
            sock.send(garbage)
        except BlockingIOError:
            pass
        run_until([server], lambda: server.streams.counters["stream_unauthenticated_frames"] == 1, 5)
        assert server.dev.drops["unknown_index"] == STREAM_UNAUTHENTICATED_FRAMES
        assert sum(n for _, n in parsed) == STREAM_UNAUTHENTICATED_FRAMES
        assert max(size for size, _ in parsed) <= STREAM_UNAUTHENTICATED_FRAMES * 34
        assert not server.streams.conns
    finally:
        sock.close()
        server.close()


def test_a_reconnecting_client_burst_is_delivered_whole():
    """After a reconnection the client's queued messages arrive in one burst, longer than the unauthenticated
    frame limit: the first authenticates the connection and none is lost."""
    server, client, ps, pc, _ = pair("tcp")
    try:
        exchange(server, client, 2)
        pc.endpoint.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        pc.endpoint.conn.sock.shutdown(socket.SHUT_RDWR)
        run_until([server, client], lambda: pc.endpoint.conn is None, 5)
        client.streams.again.clear()
        pc.endpoint.retry_at = 0.0
        n0 = len(server.tun)
        pkts = [udp4(A_IP4, B_IP4, b"burst %d" % i) for i in range(100)]
        out: list = []
        client.dev.send_packets(pkts, time.monotonic(), out)
        client.streams.send(out)           # connects and queues all 100 before the connection is up
        run_until([server, client], lambda: len(server.tun) >= n0 + 100, 10)
        assert server.tun[n0:] == pkts
    finally:
        server.close()
        client.close()
