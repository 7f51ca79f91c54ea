"""Failures that look like success (issue 20): what is wrong with a peer, in words.

Layer 2 (two cores, fake clock): Peer.unanswered_initiations counts the initiations sent since the last
completed handshake, in either role; Peer.handshake_error() reports it from UNANSWERED_INITIATIONS_REPORTED on.
Layer 3 (real loopback sockets): a stream endpoint remembers its last failure until a connection comes up.
Then the UAPI key `wgpy_last_error` and the `last error:` line of `wgpy show`.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from wgpy import crypto, show as wgshow
from wgpy.constants import (
    MAX_TIMER_HANDSHAKES, REKEY_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX, UNANSWERED_INITIATIONS_REPORTED,
)
from wgpy.io.stream import PIN_MISMATCH
from wgpy.uapi import protocol as uapi

from wgpy_testkit.core_pair import A_IP4, B_IP4, Pair, make_key, mtype, udp4
from test_transport_config import Host
from test_transport_fallback import BOTH_WAYS, T, wire
from test_transport_stream import make_cert, pair, run_until
from test_uapi_protocol import FakeHost, do_set, peer_of

JIT = REKEY_TIMEOUT_JITTER_MAX


def initiations(p: Pair, sender: str) -> int:
    return len(p.sent(sender, type_=1))


# ---------------------------------------------------------------------------------------------------------------
# the core: unanswered handshake initiations
# ---------------------------------------------------------------------------------------------------------------

def test_threshold():
    # one initiation in flight is every rekey's normal state; two means a retransmission (REKEY_TIMEOUT passed)
    assert UNANSWERED_INITIATIONS_REPORTED == 2


def test_a_wrong_public_key_shows_as_unanswered_initiations():
    wrong = make_key(random.Random(99))[1]
    p = Pair(40, a_thinks_b_is=wrong)            # A's peer has a public key B does not have
    p.send("A", [udp4(A_IP4, B_IP4, b"x")], 0.0)
    assert p.pa.unanswered_initiations == 1
    assert p.pa.handshake_error() is None       # one in flight is normal
    p.advance(REKEY_TIMEOUT + JIT)
    assert p.pa.unanswered_initiations == 2
    assert p.pa.handshake_error() == "no answer to 2 handshake initiations"
    p.advance(60.0)
    n = initiations(p, "A")
    assert n >= 11 and p.pa.unanswered_initiations == n
    assert p.pa.handshake_error() == f"no answer to {n} handshake initiations"
    assert p.b.drops["invalid_mac1"] == n        # B never accepted one (mac1 is keyed with B's public key)
    # the retransmissions give up after REKEY_ATTEMPT_TIME; new data starts more, and the count goes on
    p.advance(300.0)
    assert p.pa.unanswered_initiations == 1 + MAX_TIMER_HANDSHAKES + 1 == initiations(p, "A")
    p.send("A", [udp4(A_IP4, B_IP4, b"again")], 301.0)
    assert p.pa.unanswered_initiations == MAX_TIMER_HANDSHAKES + 3
    assert p.pa.last_handshake_wall == 0 and p.tun["B"] == []


def test_the_other_side_of_a_wrong_key_counts_too():
    """B has A's right key, A does not have B's: B's initiations reach A, which finds no such peer."""
    wrong = make_key(random.Random(98))[1]
    p = Pair(41, a_thinks_b_is=wrong)
    p.send("B", [udp4(B_IP4, A_IP4, b"x")], 0.0)
    p.advance(2 * (REKEY_TIMEOUT + JIT))
    assert p.pb.unanswered_initiations == initiations(p, "B") == 3
    assert p.pb.handshake_error() == "no answer to 3 handshake initiations"
    assert p.a.drops["invalid_initiation"] == 3


def test_the_count_resets_when_a_handshake_completes():
    p = Pair(42)
    p.drop = lambda s, d: s == "A" and mtype(d) == 1 and p.clock.now < 12.0    # B hears nothing for 12 s
    pkt = udp4(A_IP4, B_IP4, b"eventually")
    p.send("A", [pkt], 0.0)
    p.advance(12.0)
    assert p.pa.unanswered_initiations == 3
    assert p.pa.handshake_error() == "no answer to 3 handshake initiations"
    p.advance(30.0)
    assert p.tun["B"] == [pkt]
    assert p.pa.unanswered_initiations == 0 and p.pa.handshake_error() is None
    assert initiations(p, "A") == 4


def test_a_handshake_completed_as_responder_resets_it():
    """B's own initiations are lost; A's handshake succeeds: B's count resets when A's first data arrives."""
    p = Pair(43)
    p.drop = lambda s, d: s == "B" and mtype(d) == 1
    back = udp4(B_IP4, A_IP4, b"from B")
    p.send("B", [back], 0.0)
    p.advance(REKEY_TIMEOUT + JIT)
    assert p.pb.unanswered_initiations == 2 and p.pb.handshake_error() is not None
    p.send("A", [udp4(A_IP4, B_IP4, b"from A")], 6.0)
    assert p.pb.current is not None and p.pb.current.is_initiator is False
    assert p.pb.unanswered_initiations == 0 and p.pb.handshake_error() is None
    assert p.tun["A"] == [back]                  # B's staged packet went out with the new session
    assert p.pa.unanswered_initiations == 0


def test_rekeys_of_a_working_session_report_nothing():
    p = Pair(44)
    t = 0.0
    while t < 3 * REKEY_AFTER_TIME:
        p.send("A", [udp4(A_IP4, B_IP4, b"a")], t)
        p.send("B", [udp4(B_IP4, A_IP4, b"b")], t + 0.5)
        assert p.pa.handshake_error() is None and p.pb.handshake_error() is None
        t += 7.0
        p.advance(t)
    assert initiations(p, "A") >= 3                 # it did rekey
    assert p.pa.unanswered_initiations == 0


def test_a_new_private_key_starts_the_count_again():
    wrong = make_key(random.Random(97))[1]
    p = Pair(45, a_thinks_b_is=wrong)
    p.send("A", [udp4(A_IP4, B_IP4, b"x")], 0.0)
    p.advance(REKEY_TIMEOUT + JIT)
    assert p.pa.unanswered_initiations == 2
    p.a.set_private_key(make_key(random.Random(96))[0])
    assert p.pa.unanswered_initiations == 0


def test_fallback_probes_over_blocked_udp_are_not_counted():
    """While on the fallback the UDP probes go unanswered by design; the tunnel works over the stream."""
    w = wire(after=3.0, probe=10.0)
    w.blocked |= BOTH_WAYS
    w.send_udp("A", b"x", 0.0)
    w.advance(3.0)
    assert w.pa.endpoint is T
    to_b, to_a = w.traffic(3.5, 2.5 * REKEY_AFTER_TIME)          # rekeys over the stream on the way
    assert to_b == to_a > 0 and w.pa.fallback.probes >= 20
    assert w.pa.unanswered_initiations == 0 and w.pa.handshake_error() is None


# ---------------------------------------------------------------------------------------------------------------
# the stream transports: the endpoint's last failure
# ---------------------------------------------------------------------------------------------------------------

def test_connection_refused_is_remembered_until_the_connection_comes_up():
    server, client, ps, pc, port = pair("tcp")
    server.streams.listen("tcp", 0)              # nobody listens on the port yet
    try:
        out: list = []
        client.dev.send_packets([udp4(A_IP4, B_IP4, b"x")], time.monotonic(), out)
        client.streams.send(out)
        run_until([client], lambda: pc.endpoint.failures >= 1, 5)
        assert pc.endpoint.last_error == "connection refused"
        assert uapi.last_error(pc) == "connection refused"       # one initiation: not reported yet
        server.streams.listen("tcp", port)
        run_until([server, client], lambda: pc.endpoint.state == "up", 10)
        assert pc.endpoint.last_error is None
        run_until([server, client], lambda: pc.current is not None, 10)
        assert uapi.last_error(pc) is None
    finally:
        server.close()
        client.close()


@pytest.mark.parametrize("how", ["wrong pin", "wrong ca"])
def test_a_refused_certificate_is_the_endpoints_last_error(tmp_path, how):
    cert, key, _ = make_cert(tmp_path)
    other, _, other_pin = make_cert(tmp_path, "other.example.test")
    opts = {"pin": other_pin} if how == "wrong pin" else {"ca_file": str(other), "server_name": "vpn.example.test"}
    server, client, ps, pc, _ = pair("tls", cert=str(cert), key=str(key), **opts)
    try:
        out: list = []
        client.dev.send_packets([udp4(A_IP4, B_IP4, b"x")], time.monotonic(), out)
        client.streams.send(out)
        run_until([server, client], lambda: pc.endpoint.failures >= 1, 10)
        err = pc.endpoint.last_error
        if how == "wrong pin":
            assert err == PIN_MISMATCH == "TLS: certificate does not match the pinned fingerprint"
        else:
            assert err.startswith("TLS: certificate verify failed: "), err
        assert uapi.last_error(pc) == err
        assert pc.endpoint.state == "backoff"
    finally:
        server.close()
        client.close()


# ---------------------------------------------------------------------------------------------------------------
# UAPI get and wgpy show
# ---------------------------------------------------------------------------------------------------------------

def test_uapi_get_reports_unanswered_initiations():
    host = FakeHost()
    pk = crypto.public_from_private(crypto.clamp(os.urandom(32)))   # nobody has this key: no answer, ever
    do_set(host, f"public_key={pk.hex()}", "endpoint=192.0.2.1:51820", "allowed_ip=10.9.0.2/32")
    dev, peer = host.device, host.device.peers[pk]
    t0 = host.clock
    out: list = []
    dev.send_packets([udp4("10.9.0.1", "10.9.0.2", b"x")], t0, out)
    assert len(out) == 1 and "wgpy_last_error" not in peer_of(host, pk)
    for i in range(1, 12):
        dev.tick(t0 + i * (REKEY_TIMEOUT + JIT), out)
    assert len(out) == 12
    p = peer_of(host, pk)
    assert p["wgpy_last_error"] == "no answer to 12 handshake initiations"
    text = uapi.handle_request("get=1", host)
    line = next(ln for ln in text.split("\n") if ln.startswith("wgpy_last_error="))
    assert pk.hex() not in line and host.private.hex() not in line
    # the standard keys are untouched (`wg` skips wgpy_* keys)
    assert p["endpoint"] == "192.0.2.1:51820" and p["last_handshake_time_sec"] == "0"


def test_uapi_get_joins_the_stream_error_and_the_handshake_count_on_one_line():
    host = Host()
    try:
        pub = (b"\x02" * 32).hex()
        assert uapi.handle_request("\n".join(["set=1", f"public_key={pub}", "wgpy_endpoint=tcp://192.0.2.1:443"]),
                                   host) == "errno=0\n\n"
        peer = host.device.peers[b"\x02" * 32]
        assert "wgpy_last_error" not in uapi.handle_request("get=1", host)
        peer.endpoint.last_error = "TLS: certificate verify failed: self-signed\ncertificate\x1b[0m"
        peer.unanswered_initiations = 5
        text = uapi.handle_request("get=1", host)
        lines = [ln for ln in text.split("\n") if ln.startswith("wgpy_last_error=")]
        assert lines == ["wgpy_last_error=TLS: certificate verify failed: self-signed certificate [0m; "
                         "no answer to 5 handshake initiations"]
        assert all(c.isprintable() for c in lines[0])
        peer.endpoint.last_error = "x" * 1000
        err = uapi.last_error(peer)
        assert len(err) == uapi.LAST_ERROR_MAX
        # a UDP endpoint has no stream error
        peer.endpoint = ("192.0.2.1", 51820)
        assert uapi.last_error(peer) == "no answer to 5 handshake initiations"
    finally:
        host.streams.close()


def test_wgpy_show_prints_the_last_error(monkeypatch, capsys):
    priv = crypto.clamp(os.urandom(32))
    pk1, pk2 = (crypto.public_from_private(crypto.clamp(os.urandom(32))) for _ in range(2))
    reply = (f"private_key={priv.hex()}\nlisten_port=51820\n"
             f"public_key={pk1.hex()}\npreshared_key={'00' * 32}\nprotocol_version=1\nendpoint=192.0.2.1:51820\n"
             "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
             "persistent_keepalive_interval=0\nallowed_ip=10.9.0.2/32\n"
             "wgpy_last_error=no answer to 12 handshake initiations\n"
             f"public_key={pk2.hex()}\npreshared_key={'00' * 32}\nprotocol_version=1\n"
             "wgpy_endpoint=tls://192.0.2.2:8443\nwgpy_endpoint_state=backoff\n"
             "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
             "persistent_keepalive_interval=0\nallowed_ip=10.9.0.3/32\n"
             "wgpy_last_error=TLS: certificate does not match the pinned fingerprint\n"
             "errno=0\n\n")
    import wgpy.uapi.server
    monkeypatch.setattr(wgpy.uapi.server, "request", lambda name, req: reply)
    assert wgshow.show_one("wgtest0", None) == 0
    shown = capsys.readouterr().out
    blocks = shown.split("\n\n")
    first = next(b for b in blocks if crypto.encode_key(pk1) in b)
    second = next(b for b in blocks if crypto.encode_key(pk2) in b)
    assert "  last error: no answer to 12 handshake initiations\n" in first + "\n"
    assert "  endpoint: tls://192.0.2.2:8443 (backoff)" in second
    assert "  last error: TLS: certificate does not match the pinned fingerprint\n" in second + "\n"
    assert priv.hex() not in shown and crypto.encode_key(priv) not in shown
