"""Per-peer state: configuration, handshake, keypairs, timers, staged packets and counters.

Rules of this file: plain state plus the keypair rotation rules of the whitepaper (5.4.5 / 6.1 and the
kernel's noise.c); everything that needs the device (index table, allowed IPs, sending) lives in device.py.

Keypair slots:
    previous  the keypair before `current`; still accepted on receive while packets in flight drain
    current   used for sending
    next      a responder's new keypair, not used for sending until the initiator proves it has it by sending
              the first transport message with it ("responder waits for the first data packet")

Timers (whitepaper 6.2 - 6.5; each is an absolute monotonic deadline or None; see timers.py):
    t_retransmit      resend an initiation after REKEY_TIMEOUT + jitter without a response
    t_send_keepalive  passive keepalive KEEPALIVE_TIMEOUT after receiving data without sending any
    t_new_handshake   new handshake when data was sent but nothing came back for KEEPALIVE + REKEY_TIMEOUT
    t_zero_keys       erase all key material REJECT_AFTER_TIME * 3 after the last session was derived
    t_persistent      persistent keepalive, `persistent_keepalive` seconds after the last packet either way

Handshake health: `unanswered_initiations` counts the initiations sent to the peer (by initiate_handshake, not
the fallback's UDP probes) since the last completed handshake, either role; handshake_error() puts it in words
once it reaches UNANSWERED_INITIATIONS_REPORTED. It is touched on the handshake paths only, never per packet.
"""

from __future__ import annotations

from collections import deque

from ..constants import MAX_STAGED_PACKETS, UNANSWERED_INITIATIONS_REPORTED
from .cookie import CookieGenerator
from .keypair import Keypair
from .noise import Handshake

INF = float("inf")


class Peer:
    __slots__ = (
        "public_key", "handshake", "cookie", "endpoint", "persistent_keepalive",
        "previous", "current", "next", "staged",
        "rx_bytes", "tx_bytes", "last_handshake_wall",
        "t_retransmit", "t_send_keepalive", "t_new_handshake", "t_zero_keys", "t_persistent",
        "handshake_attempts", "last_sent_handshake", "initiation_to", "sent_lastminute_handshake", "need_another_keepalive",
        "unanswered_initiations",
        "scheduled", "removed", "allowed_macs",
        "flood",        # L2 relay hub: the storm-control buckets of this peer's flooded frames (protocol/switch.py)
        "mtu",          # the plaintext limit the data path applies (the interface MTU, or less: ext/pmtu.py)
        # state of wgpy's extensions (ext/), kept here so the data path reaches it without a lookup:
        "pmtu", "t_pmtu", "wgpy", "hellos_sent",   # ext/pmtu.py: path state, its deadline, the peer's HELLO
        "fallback",     # ext/fallback.py: FallbackState or None
        "limit",        # ext/ratelimit.py: PeerLimit (protocol/shaper.py), None without a RateLimit
    )

    def __init__(self, public_key: bytes, handshake: Handshake) -> None:
        self.public_key = public_key
        self.handshake = handshake
        self.cookie = CookieGenerator(handshake.mac1_key, handshake.cookie_key)
        self.endpoint: object | None = None
        self.persistent_keepalive = 0
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake_wall = 0.0
        self.t_retransmit: float | None = None
        self.t_send_keepalive: float | None = None
        self.t_new_handshake: float | None = None
        self.t_zero_keys: float | None = None
        self.t_persistent: float | None = None
        self.handshake_attempts = 0
        self.last_sent_handshake = -INF
        self.initiation_to: object = None       # the endpoint the last initiation went to (Device.punch)
        self.sent_lastminute_handshake = False
        self.need_another_keepalive = False
        self.unanswered_initiations = 0   # initiations sent since the last completed handshake
        self.scheduled = INF          # earliest deadline this peer has in the device's timer heap
        self.removed = False
        self.allowed_macs: frozenset[bytes] | None = None   # L2 mode: source MACs accepted (None: any)
        self.flood: list[float] | None = None   # L2 relay: tokens per kind of flooded frame, and when filled
        self.mtu = 65535               # largest plaintext sent to this peer (the device sets it)
        self.pmtu = None               # PathMTU for a UDP endpoint, made once a handshake completed
        self.t_pmtu: float | None = None   # next probe step / retry / re-probe round
        self.wgpy = 0                  # extensions announced by the peer's HELLO (0: not known to be wgpy)
        self.hellos_sent = 0           # HELLOs sent without having received one
        self.fallback = None          # FallbackState when a FallbackEndpoint is set
        self.limit = None             # PeerLimit when a RateLimit is set (ext/ratelimit.py)

    def keypairs(self) -> list[Keypair]:
        return [k for k in (self.previous, self.current, self.next) if k is not None]

    def next_deadline(self) -> float | None:
        """The earliest of the protocol's five timers (the extensions' deadlines are theirs: ext/base.py)."""
        ds = [d for d in (self.t_retransmit, self.t_send_keepalive, self.t_new_handshake, self.t_zero_keys,
                          self.t_persistent) if d is not None]
        return min(ds) if ds else None

    def handshake_error(self) -> str | None:
        """What is wrong with the handshake, in words, or None. Initiations that keep going unanswered mean the
        peer never accepted them (a wrong public key on either side, a wrong preshared key, the peer down or
        unreachable, the endpoint wrong); the text names no key."""
        n = self.unanswered_initiations
        if n >= UNANSWERED_INITIATIONS_REPORTED:
            return f"no answer to {n} handshake initiations"
        return None

    def __repr__(self) -> str:
        from ..crypto import encode_key
        return f"Peer({encode_key(self.public_key)})"
