"""Metrics (ops/metrics.py, ops/http.py): the exposition of a live runtime interface, checked by promtool when it is
installed, and the HTTP server's bounds against slow, idle, oversized and too many clients."""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import threading
import time

import pytest

from wgpy import crypto
from wgpy.ops import http
from wgpy.ops.http import MetricsServer
from wgpy_testkit.core_pair import udp4
from wgpy_testkit.runtime import A_IP4, B_IP4, RuntimePair


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fetch(port: int, request: bytes = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", timeout: float = 5.0) -> bytes:
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        c.sendall(request)
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                return buf
            buf += d
    finally:
        c.close()


def serve_while(step, fn):
    """Run fn() in a thread while step() drives the loop; fn's result."""
    out: dict = {}

    def run():
        try:
            out["v"] = fn()
        except Exception as e:       # re-raised below
            out["e"] = e
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < deadline:
        step()
    t.join(1)
    if "e" in out:
        raise out["e"]
    return out["v"]


@pytest.fixture
def pair():
    p = RuntimePair()
    yield p
    p.close()


def scrape(pair, port) -> str:
    reply = serve_while(lambda: pair.a.iface.step(0.01), lambda: fetch(port))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/plain; version=0.0.4" in head
    return body.decode()


def test_metrics_of_a_live_interface(pair, tmp_path):
    port = free_port()
    assert pair.a.uapi(f"set=1\nwgpy_metrics_listen=127.0.0.1:{port}\n") == "errno=0\n\n"
    assert pair.a.get()["wgpy_metrics_listen"] == [f"127.0.0.1:{port}"]
    pair.a.tun.inject(udp4(A_IP4, B_IP4, b"x" * 300))
    pair.pump()
    body = scrape(pair, port)
    key = crypto.encode_key(pair.b.public)
    labels = f'allowed_ips="{B_IP4}/32",interface="wgra",public_key="{key}"'
    tx = pair.a.iface.device.peers[pair.b.public].tx_bytes
    assert tx > 0 and f"wireguard_sent_bytes_total{{{labels}}} {float(tx)}" in body
    assert f"wireguard_received_bytes_total{{{labels}}} " in body
    assert f"wireguard_latest_handshake_seconds{{{labels}}} 1.7" in body      # the fake wall clock
    for name in ("wgpy_dropped_packets_total", "wgpy_handshake_initiations_sent_total 1.0",
                 'wgpy_handshakes_completed_total{interface="wgra",role="initiator"} 1.0',
                 "wgpy_cookie_replies_sent_total", 'wgpy_under_load 0.0', "wgpy_staged_packets",
                 'source="link"', 'transport="udp"', 'fallback="none"', "process_resident_memory_bytes",
                 "process_open_fds", "wgpy_metrics_scrapes_total"):
        assert name in body.replace('{interface="wgra"}', ""), name
    # public keys only
    assert crypto.encode_key(pair.a.private) not in body and pair.a.private.hex() not in body
    assert crypto.encode_key(pair.b.private) not in body
    if shutil.which("promtool"):
        res = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


def test_metrics_listen_off_and_in_use(pair):
    port = free_port()
    assert pair.a.uapi(f"set=1\nwgpy_metrics_listen=127.0.0.1:{port}\n") == "errno=0\n\n"
    # the other interface cannot take the same address: the set fails as a listen_port would
    assert pair.b.iface.handle_uapi(f"set=1\nwgpy_metrics_listen=127.0.0.1:{port}\n") == "errno=-98\n\n"
    assert "wgpy_metrics_listen" not in pair.b.get()
    assert pair.a.uapi("set=1\nwgpy_metrics_listen=\n") == "errno=0\n\n"
    assert "wgpy_metrics_listen" not in pair.a.get()
    with pytest.raises(OSError):
        fetch(port)
    assert pair.a.iface.handle_uapi("set=1\nwgpy_metrics_listen=example.com:80\n") == "errno=-22\n\n"


# ---- the HTTP server alone, in an epoll loop of its own ------------------------------------------------------

class Loop:
    def __init__(self, render=lambda: ("text/plain; version=0.0.4", b"m 1\n")) -> None:
        self.epoll = select.epoll()
        self.server = MetricsServer(self.epoll, render)
        self.port = free_port()
        self.server.listen(("127.0.0.1", self.port))

    def step(self, wait: float = 0.01) -> None:
        d = self.server.next_deadline()
        timeout = wait if d is None else max(0.0, min(wait, d - time.monotonic()))
        for fd, ev in self.epoll.poll(timeout):
            self.server.event(fd, ev)
        self.server.tick(time.monotonic())

    def close(self) -> None:
        self.server.close()
        self.epoll.close()


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


def test_only_get_and_head_of_metrics(loop):
    assert serve_while(loop.step, lambda: fetch(loop.port)).endswith(b"\r\n\r\nm 1\n")
    head = serve_while(loop.step, lambda: fetch(loop.port, b"HEAD /metrics HTTP/1.0\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n") and b"Content-Length: 4" in head
    assert serve_while(loop.step, lambda: fetch(loop.port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
    assert serve_while(loop.step, lambda: fetch(loop.port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(
        b"HTTP/1.1 405")
    assert serve_while(loop.step, lambda: fetch(loop.port, b"\x16\x03\x01garbage\r\n\r\n")).startswith(
        b"HTTP/1.1 400")
    assert loop.server.stats["bad_request"] == 1 and loop.server.stats["scrapes"] == 2


def test_a_head_over_the_limit_is_refused(loop):
    reply = serve_while(loop.step, lambda: fetch(loop.port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000))
    assert reply.startswith(b"HTTP/1.1 431")


def test_a_silent_client_is_cut_off(loop, monkeypatch):
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", 0.3)
    c = socket.create_connection(("127.0.0.1", loop.port))
    c.sendall(b"GET /metr")                      # and then nothing (slowloris)
    t0 = time.monotonic()
    c.settimeout(0.0)
    closed = False
    while time.monotonic() - t0 < 3 and not closed:
        loop.step()
        try:
            closed = c.recv(100) == b""
        except BlockingIOError:
            pass
    assert closed and time.monotonic() - t0 < 2
    assert loop.server.stats["timeout"] == 1 and not loop.server.conns
    c.close()


def test_connections_are_bounded_and_the_newest_served(loop):
    idle = []
    for _ in range(http.MAX_CONNECTIONS + 10):       # idle clients, accepted as they come
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", loop.port))
        idle.append(s)
        loop.step(0.005)
    assert len(loop.server.conns) <= http.MAX_CONNECTIONS
    assert serve_while(loop.step, lambda: fetch(loop.port)).endswith(b"m 1\n")    # a real scraper still gets in
    assert loop.server.stats["evicted"] >= 10
    for s in idle:
        s.close()


def test_one_render_a_second_however_often_asked(loop):
    calls = []

    def render():
        calls.append(1)
        return "text/plain", f"m {len(calls)}\n".encode()
    loop.server.render = render
    for _ in range(5):
        assert serve_while(loop.step, lambda: fetch(loop.port)).endswith(b"m 1\n")
    assert len(calls) == 1


def test_a_reader_that_never_reads_is_cut_off(monkeypatch):
    monkeypatch.setattr(http, "REPLY_TIMEOUT", 0.3)
    lp = Loop(lambda: ("text/plain", b"x" * (8 << 20)))        # far more than the socket buffers hold
    try:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", lp.port))
        c.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3 and (lp.server.conns or time.monotonic() - t0 < 0.05):
            lp.step()
        assert not lp.server.conns and lp.server.stats["timeout"] == 1
        c.close()
    finally:
        lp.close()
