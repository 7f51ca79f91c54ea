"""UDP GSO sending and GRO receiving (src/wgpy/io/batch.py) over real loopback sockets."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from wgpy.io.batch import GSO_MAX_SEGMENTS, BatchSender, enable_gro, receive_batch


@pytest.fixture
def pair():
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    r.setblocking(False)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield s, r
    s.close()
    r.close()


def drain(r, want: int, timeout: float = 2.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        receive_batch(r, 10_000, got)
        time.sleep(0.005)
    return got


def test_runs_of_equal_size_go_out_in_one_call_each_and_arrive_intact(pair):
    s, r = pair
    enable_gro(r)
    ep = r.getsockname()
    out = [(bytes([i]) * 1452, ep) for i in range(100)] + [(b"tail" * 20, ep)]
    sender = BatchSender()
    sender.send(out, s, None)
    # 100 full datagrams + 1 short one: runs of at most 44 (64 KB) -> 3 calls, the short one ends the last run
    assert sender.gso and sender.errors == 0
    assert sender.calls == 3
    got = drain(r, len(out))
    assert [d for d, _ in got] == [d for d, _ in out]   # order and boundaries preserved
    assert all(src == ("127.0.0.1", s.getsockname()[1]) for _, src in got)


def test_a_larger_datagram_or_another_endpoint_starts_a_new_run(pair):
    s, r = pair
    ep = r.getsockname()
    r2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r2.bind(("127.0.0.1", 0))
    r2.setblocking(False)
    try:
        out = [(b"a" * 100, ep), (b"b" * 100, ep), (b"c" * 200, ep), (b"d" * 100, r2.getsockname()),
               (b"e" * 50, ep)]
        sender = BatchSender()
        sender.send(out, s, None)
        assert sender.calls == 4          # [a b] [c] [d] [e]
        assert [d for d, _ in drain(r, 4)] == [b"a" * 100, b"b" * 100, b"c" * 200, b"e" * 50]
        assert [d for d, _ in drain(r2, 1)] == [b"d" * 100]
    finally:
        r2.close()


def test_segment_limit(pair):
    s, r = pair
    ep = r.getsockname()
    out = [(b"x" * 10, ep)] * (GSO_MAX_SEGMENTS + 1)
    sender = BatchSender()
    sender.send(out, s, None)
    assert sender.calls == 2
    assert len(drain(r, len(out))) == len(out)


def test_fallback_without_gso(pair):
    s, r = pair
    ep = r.getsockname()
    sender = BatchSender()
    sender.gso = False
    sender.send([(b"y" * 30, ep)] * 5, s, None)
    assert sender.calls == 5
    assert len(drain(r, 5)) == 5


def test_missing_family_socket_counts_errors(pair):
    s, _r = pair
    sender = BatchSender()
    sender.send([(b"z", ("::1", 9, 0, 0))], s, None)
    assert sender.errors == 1


class SmallPathMtu:
    """A real socket whose GSO sends are refused as the kernel refuses segments above the path MTU."""

    def __init__(self, sock, mtu_payload: int) -> None:
        self.sock, self.limit, self.refused = sock, mtu_payload, 0

    def sendmsg(self, buffers, ancdata, flags, address):
        seg = int.from_bytes(ancdata[0][2], "little") if ancdata else len(buffers[0])
        if seg > self.limit:
            self.refused += 1
            raise OSError(errno.EMSGSIZE, "Message too long")
        return self.sock.sendmsg(buffers, ancdata, flags, address)

    def sendto(self, data, address):
        return self.sock.sendto(data, address)     # the kernel fragments a lone datagram


def test_runs_above_the_path_mtu_go_out_singly_and_gso_stays_on(pair):
    s, r = pair
    ep = r.getsockname()
    wrapped = SmallPathMtu(s, 1472)
    big = [(bytes([i]) * 1546, ep) for i in range(5)]          # e.g. L2 frames of 1514 bytes: fragmented
    small = [(bytes([i]) * 1000, ep) for i in range(5)]
    sender = BatchSender()
    sender.send(big + small, wrapped, None)
    assert wrapped.refused == 1 and sender.gso and sender.errors == 0
    # the refused run is the five big ones plus the first shorter one (which may end a run): six single sends,
    # then the other four small ones in one GSO call
    assert sender.calls == 6 + 1
    assert [d for d, _ in drain(r, 10)] == [d for d, _ in big + small]
