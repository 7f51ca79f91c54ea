"""Handshake-flood defences below the namespace test (tests/integration/test_hostile_network.py):

- cookie replies are limited per claimed source (COOKIE_REPLIES_PER_SECOND / COOKIE_REPLY_BURST), so a flood
  from a few thousand addresses costs a mac1 check per message, not an XChaCha20 encryption and a send; a new
  source still gets its cookie at once, and a flood from more sources than the table holds is answered as
  WireGuard answers it (every message) rather than locking newcomers out;
- the UDP sockets steer transport messages and handshake messages into separate kernel queues (io/udp.py), so a
  flood that the daemon cannot keep up with overflows only the handshake queue.
"""

from __future__ import annotations

import socket
import time

from wgpy import crypto
from wgpy.constants import COOKIE_REPLY_BURST, COOKIE_REPLIES_PER_SECOND, RATELIMIT_MAX_ENTRIES
from wgpy.io.udp import UdpBind

from test_fuzz import fuzz


def flood_message(tgt) -> bytes:
    body = b"\x01\x00\x00\x00" + bytes(range(112))
    return body + crypto.mac(tgt.mac1_key, body) + bytes(16)


def test_cookie_replies_limited_per_source_and_newcomers_served():
    tgt = fuzz.ReceiveTarget("under-load", seed=31)
    msg = flood_message(tgt)
    now = tgt.now
    for i in range(200):
        for s in range(50):
            tgt.feed(msg, (f"198.18.0.{s}", 1000 + i))
    assert tgt.cookie_replies == 50 * COOKIE_REPLY_BURST
    assert tgt.dev.drops["cookie_ratelimited"] == 50 * 200 - 50 * COOKIE_REPLY_BURST
    # a newcomer gets its cookie at once, in the middle of the flood
    before = tgt.cookie_replies
    tgt.feed(msg, ("203.0.113.9", 51820))
    assert tgt.cookie_replies == before + 1
    # a second later every source has COOKIE_REPLIES_PER_SECOND more
    tgt.now = now + 1.0
    before = tgt.cookie_replies
    for s in range(50):
        for _ in range(20):
            tgt.feed(msg, (f"198.18.0.{s}", 1))
    assert tgt.cookie_replies - before == 50 * COOKIE_REPLIES_PER_SECOND
    tgt.now = now


def test_more_sources_than_the_table_are_all_answered():
    tgt = fuzz.ReceiveTarget("under-load", seed=32)
    msg = flood_message(tgt)
    n = RATELIMIT_MAX_ENTRIES + 500
    for i in range(n):
        tgt.feed(msg, (f"198.{18 + (i >> 16)}.{i >> 8 & 255}.{i & 255}", 1))
    assert tgt.cookie_replies == n
    assert len(tgt.dev.cookie_limiter.table) == RATELIMIT_MAX_ENTRIES


def test_sockets_steer_transport_and_handshake_messages_apart():
    b = UdpBind()
    b.open(0)
    try:
        assert b.h4 is not None, "steering not available"
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(3):
            c.sendto(b"\x04\0\0\0" + bytes(28), ("127.0.0.1", b.port))
            c.sendto(b"\x01\0\0\0" + bytes(144), ("127.0.0.1", b.port))
            c.sendto(b"\x07garbage", ("127.0.0.1", b.port))
        c.close()
        time.sleep(0.1)

        def drain(s):
            got = []
            while True:
                try:
                    got.append(s.recv(2048)[:1])
                except BlockingIOError:
                    return got
        assert drain(b.s4) == [b"\x04"] * 3
        assert sorted(drain(b.h4)) == [b"\x01"] * 3 + [b"\x07"] * 3
        # the port is still exclusive: a second UdpBind (another interface, another daemon) is refused
        other = UdpBind()
        try:
            other.open(b.port)
            raise AssertionError("a second UdpBind got the same port")
        except OSError:
            pass
    finally:
        b.close()
