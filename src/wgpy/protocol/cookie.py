"""Cookies: mac1, mac2 and the cookie reply (whitepaper 5.3 and 5.4.7).

Every handshake message carries mac1 = MAC(HASH(LABEL_MAC1 || S_pub_receiver), msg[:mac1]) so a responder can
drop messages not meant for it without any Diffie-Hellman work. Under load the responder also requires
mac2 = MAC(cookie, msg[:mac2]), where cookie = MAC(R_secret, source address) and R_secret changes every two
minutes; a message without a valid mac2 gets a cookie reply instead of being processed:
    encrypted_cookie = XAEAD(HASH(LABEL_COOKIE || S_pub_responder), nonce, cookie, mac1 of the message)

CookieChecker is the receiving side (one per device); CookieGenerator the sending side (one per peer).
Pure: `now` and randomness are passed in.
"""

from __future__ import annotations

import hmac as _hmac

from .. import crypto
from ..constants import COOKIE_REFRESH_TIME, REKEY_TIMEOUT
from .messages import CookieReply

_ZERO16 = b"\x00" * 16
COOKIE_SECRET_LATENCY = REKEY_TIMEOUT


class CookieChecker:
    __slots__ = ("mac1_key", "cookie_key", "secret", "secret_time")

    def __init__(self, mac1_key: bytes, cookie_key: bytes) -> None:
        self.mac1_key = mac1_key
        self.cookie_key = cookie_key
        self.secret = b""
        self.secret_time = float("-inf")

    def check_mac1(self, msg: bytes, mac1_offset: int) -> bool:
        expected = crypto.mac(self.mac1_key, msg[:mac1_offset])
        return _hmac.compare_digest(expected, msg[mac1_offset:mac1_offset + 16])

    def _cookie(self, source: bytes, now: float, random32: "callable") -> bytes:
        if now - self.secret_time >= COOKIE_REFRESH_TIME:
            self.secret = random32()
            self.secret_time = now
        return crypto.mac(self.secret, source)

    def check_mac2(self, msg: bytes, mac2_offset: int, source: bytes, now: float) -> bool:
        if not self.secret or now - self.secret_time >= COOKIE_REFRESH_TIME:
            return False
        cookie = crypto.mac(self.secret, source)
        expected = crypto.mac(cookie, msg[:mac2_offset])
        return _hmac.compare_digest(expected, msg[mac2_offset:mac2_offset + 16])

    def create_reply(self, msg: bytes, sender_index: int, mac1_offset: int, source: bytes, now: float,
                     random32: "callable", nonce24: bytes) -> bytes:
        cookie = self._cookie(source, now, random32)
        mac1 = msg[mac1_offset:mac1_offset + 16]
        encrypted = crypto.xaead_encrypt(self.cookie_key, nonce24, cookie, mac1)
        return CookieReply(sender_index, nonce24, encrypted).pack()


class CookieGenerator:
    """Adds mac1/mac2 to the handshake messages we send to one peer and consumes its cookie replies."""

    __slots__ = ("mac1_key", "cookie_key", "cookie", "cookie_time", "last_mac1", "have_sent_mac1")

    def __init__(self, mac1_key: bytes, cookie_key: bytes) -> None:
        self.mac1_key = mac1_key        # HASH(LABEL_MAC1 || S_pub_peer)
        self.cookie_key = cookie_key    # HASH(LABEL_COOKIE || S_pub_peer)
        self.cookie = b""
        self.cookie_time = float("-inf")
        self.last_mac1 = b""
        self.have_sent_mac1 = False

    def add_macs(self, msg: bytes, mac1_offset: int, now: float) -> bytes:
        """`msg` is the packed message with zeroed MACs; returns it with mac1 and (if a cookie is fresh) mac2."""
        body = msg[:mac1_offset]
        mac1 = crypto.mac(self.mac1_key, body)
        self.last_mac1 = mac1
        self.have_sent_mac1 = True
        if self.cookie and now - self.cookie_time < COOKIE_REFRESH_TIME - COOKIE_SECRET_LATENCY:
            mac2 = crypto.mac(self.cookie, body + mac1)
        else:
            mac2 = _ZERO16
        return body + mac1 + mac2

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        if not self.have_sent_mac1:
            return False
        try:
            cookie = crypto.xaead_decrypt(self.cookie_key, reply.nonce, reply.encrypted_cookie, self.last_mac1)
        except crypto.InvalidTag:
            return False
        self.cookie = cookie
        self.cookie_time = now
        self.have_sent_mac1 = False
        return True
