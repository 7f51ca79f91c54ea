"""Failures that look like success (issue 20): `wgpy show` says what is wrong with a peer, in words.

    ┌──────── ns[0] ────────┐   veth   ┌──────── ns[1] ────────┐
    │ 10.201.0.1  client    ├──────────┤ server  10.201.0.2    │
    │ tunnel 10.99.0.1      │          │ tunnel 10.99.0.2      │
    └───────────────────────┘          └───────────────────────┘

(a) The client's peer has a public key the server does not have: its handshake initiations are never answered,
    and `wgpy show` reports "no answer to N handshake initiations" (N >= 2: one REKEY_TIMEOUT, 5 s, went by).
(b) The client reaches the server over tls:// with a TLSPin of another certificate: `wgpy show` reports
    "TLS: certificate does not match the pinned fingerprint"; the right pin, given live, clears it.
Both are wgpy (`wgpy up`); every interface and namespace is made here and removed by the lab afterwards.
"""

from __future__ import annotations

import base64
import re
import sys

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import gen_keypair, random_public_key, run, wait_for, write_config
from test_transport_streams import fingerprint, make_cert

pytestmark = pytest.mark.netns

TLS_PORT = 8443
CLIENT_TUN, SERVER_TUN = "10.99.0.1", "10.99.0.2"


@pytest.fixture(autouse=True)
def _real_wgpy_only(lab):
    lab.require_real_wgpy("wgpy show's last error")


def show(ns: str, iface: str) -> str:
    return run(ns, netlab.WGPY, "show", iface, timeout=10).stdout


def last_errors(text: str) -> list[str]:
    return re.findall(r"^  last error: (.*)$", text, re.M)


def up(lab, ns: str, lines: list[str]) -> str:
    iface = netlab.unique_iface()
    return lab.wgpy_up(ns, write_config(lab.tmp, iface, "\n".join(lines) + "\n"))


def test_wrong_public_key_shows_unanswered_initiations(lab, two_ns):
    client_ns, server_ns = two_ns.ns
    kc, ks = gen_keypair(), gen_keypair()
    wrong = random_public_key()
    up(lab, server_ns, ["[Interface]", f"PrivateKey = {ks.private}", "ListenPort = 51820",
                        f"Address = {SERVER_TUN}/24", "", "[Peer]", f"PublicKey = {kc.public}",
                        f"AllowedIPs = {CLIENT_TUN}/32"])
    iface = up(lab, client_ns, ["[Interface]", f"PrivateKey = {kc.private}", f"Address = {CLIENT_TUN}/24", "",
                                "[Peer]", f"PublicKey = {wrong}", f"Endpoint = {two_ns.ip[1]}:51820",
                                f"AllowedIPs = {SERVER_TUN}/32"])
    assert last_errors(show(client_ns, iface)) == []            # nothing sent yet: nothing wrong yet
    run(client_ns, "ping", "-c", "1", "-W", "1", SERVER_TUN, check=False, timeout=10)   # starts the handshake
    # the second initiation goes out REKEY_TIMEOUT (5 s) + jitter (< 1/3 s) after the first
    wait_for(lambda: last_errors(show(client_ns, iface)), 12, interval=0.25, what="a last error in wgpy show")
    text = show(client_ns, iface)
    errors = last_errors(text)
    assert len(errors) == 1 and re.fullmatch(r"no answer to (\d+) handshake initiations", errors[0]), text
    assert int(errors[0].split()[3]) >= 2
    assert f"peer: {wrong}" in text and "latest handshake" not in text
    assert kc.private not in text and base64.b64decode(kc.private).hex() not in text
    # `wg show` still works (it skips the wgpy_ keys)
    wg = run(client_ns, "wg", "show", iface, timeout=10).stdout
    assert f"peer: {wrong}" in wg and "endpoint: 10.201.0.2:51820" in wg


def test_wrong_tls_pin_shows_the_certificate_refusal(lab, two_ns):
    client_ns, server_ns = two_ns.ns
    kc, ks = gen_keypair(), gen_keypair()
    cert, key = make_cert(lab)
    other, _ = make_cert(lab, "someone.else.test", "other")
    up(lab, server_ns, ["[Interface]", f"PrivateKey = {ks.private}", f"Address = {SERVER_TUN}/24",
                        f"ListenTLS = {TLS_PORT}", f"CertificateFile = {cert}", f"KeyFile = {key}", "",
                        "[Peer]", f"PublicKey = {kc.public}", f"AllowedIPs = {CLIENT_TUN}/32"])
    url = f"tls://{two_ns.ip[1]}:{TLS_PORT}"
    iface = up(lab, client_ns, ["[Interface]", f"PrivateKey = {kc.private}", f"Address = {CLIENT_TUN}/24", "",
                                "[Peer]", f"PublicKey = {ks.public}", f"Endpoint = {url}",
                                f"TLSPin = {fingerprint(other)}", f"AllowedIPs = {SERVER_TUN}/32",
                                "PersistentKeepalive = 1"])
    want = "TLS: certificate does not match the pinned fingerprint"
    wait_for(lambda: any(want in e for e in last_errors(show(client_ns, iface))), 10, interval=0.25,
             what="the pin refusal in wgpy show")
    text = show(client_ns, iface)
    assert re.search(rf"^  endpoint: {re.escape(url)} \((backoff|connecting|tls-handshake)\)$", text, re.M), text
    assert [e for e in last_errors(text) if e.startswith(want)], text
    assert kc.private not in text
    assert run(client_ns, "wg", "show", iface, timeout=10).returncode == 0
    # the right pin, live: the tunnel comes up and the error is gone
    req = (f"set=1\npublic_key={base64.b64decode(ks.public).hex()}\nwgpy_endpoint={url}\n"
           f"wgpy_tls_pin={fingerprint(cert)}\n")
    out = run(client_ns, sys.executable, "-c", "import sys; from wgpy.uapi.server import request; "
              "sys.stdout.write(request(sys.argv[1], sys.argv[2]))", iface, req, timeout=10).stdout
    assert out.strip() == "errno=0"
    wait_for(lambda: run(client_ns, "ping", "-c", "1", "-W", "1", SERVER_TUN, check=False, timeout=10)
             .returncode == 0, 15, interval=0.2, what="a ping through the tunnel")
    text = show(client_ns, iface)
    assert last_errors(text) == [] and f"endpoint: {url} (up)" in text, text
