"""Automatic fallback from UDP to a stream transport (FallbackEndpoint), sans-IO, driven by the peer's timers.

A peer with a fallback has two ways to be reached: its primary endpoint (a UDP address, what `Endpoint` says or
what roaming learned) and its fallback target (an opaque stream endpoint made by the I/O layer, e.g. a
tls://host:port connection). The core never opens anything; it only chooses which endpoint a peer's messages go
to, by setting `peer.endpoint`, exactly as roaming does.

Rules (all per peer; "on the fallback" means `peer.endpoint is fb.target`):
    1. Not on the fallback: the first handshake initiation we send that is not answered starts a clock
       (`unanswered_since`; one still unanswered when the fallback is configured counts from when it was
       sent); a handshake response from the peer stops it. When the clock reaches `after`
       seconds, the peer's endpoint becomes the fallback target and an initiation goes out over it at once.
    2. On the fallback, every `probe_interval` seconds (only while a session is up: a probe replaces the
       handshake state, which must not disturb a handshake over the stream), one initiation goes to the primary
       UDP endpoint, followed by a keepalive over the stream. If its response arrives over UDP, the ordinary
       roaming rule (an authenticated handshake message sets the peer's endpoint to its source) moves the peer
       back to UDP, and the keepalive the core sends on completing a handshake moves the other side too.
    3. One-way UDP: the probe may reach the other side (which then roams its endpoint for us to UDP) while its
       answer cannot reach us. The keepalive sent over the stream right after the probe, and another one
       FALLBACK_PROBE_ANSWER seconds later if no UDP answer came, are authenticated messages arriving over the
       stream, so the other side roams straight back: the tunnel loses at most those seconds, never more.
    4. Roaming stays the only rule that moves a peer between paths once a message authenticates; the fallback
       logic only acts on unanswered initiations and on its own timers, so it cannot fight roaming for long.
Hooks (called by device.py / timers.py, never per packet): initiation_sent, response_received, run_timer.
Types of endpoints: `isinstance(ep, tuple)` is a UDP address (the shared convention of the I/O layer: a plain tuple
or a received source, io/batch.py's Sticky, a tuple subclass); the
fallback target is compared by identity.
"""

from __future__ import annotations

from ..constants import FALLBACK_AFTER, FALLBACK_PROBE_ANSWER, FALLBACK_PROBE_INTERVAL, REJECT_AFTER_TIME
from ..protocol.events import FallbackSwitched
from ..protocol.peer import Peer
from .base import Extension


class FallbackState:
    __slots__ = ("target", "primary", "after", "probe_interval", "unanswered_since", "next_probe",
                 "probe_check", "deadline", "switches", "returns", "probes", "since")

    def __init__(self, target: object, primary: object | None, after: float, probe_interval: float) -> None:
        self.target = target                  # opaque stream endpoint (I/O layer), compared by identity
        self.primary = primary                # UDP endpoint probed while on the fallback (None: never probe)
        self.after = after
        self.probe_interval = probe_interval
        self.unanswered_since: float | None = None   # first unanswered initiation over the primary path
        self.next_probe: float | None = None
        self.probe_check: float | None = None        # re-pin the other side to the stream if no UDP answer
        self.deadline: float | None = None           # earliest of the above that is armed (in the timer heap)
        self.switches = 0                     # times we moved to the fallback
        self.returns = 0                      # times a UDP answer moved us back
        self.probes = 0
        self.since: float | None = None       # when we moved to the fallback (None: not on it)

    def on_fallback(self, peer: Peer) -> bool:
        return peer.endpoint is self.target


def _note(dev, peer: Peer, text: str) -> None:
    """A switch happened: an event for the runtime (it logs it); rare."""
    dev.events.append(FallbackSwitched(peer, text))


def _rearm(dev, peer: Peer) -> None:
    fb = peer.fallback
    ds = [d for d in ((fb.unanswered_since + fb.after) if fb.unanswered_since is not None else None,
                      fb.next_probe, fb.probe_check) if d is not None]
    fb.deadline = min(ds) if ds else None
    if fb.deadline is not None:
        dev.schedule(peer, fb.deadline)


def configure(dev, peer: Peer, target: object | None, now: float, out: list, *, after: float = FALLBACK_AFTER,
              probe_interval: float = FALLBACK_PROBE_INTERVAL) -> None:
    """Give `peer` a fallback target (None removes it). The peer's current endpoint, if it is a UDP address,
    becomes the primary; a peer without any endpoint starts on the fallback."""
    if target is None:
        fb = peer.fallback
        peer.fallback = None
        if fb is not None and peer.endpoint is fb.target:
            peer.endpoint = fb.primary
        return
    fb = peer.fallback
    if fb is None or fb.target is not target:
        old = fb
        fb = FallbackState(target, None, after, probe_interval)
        if old is not None:
            fb.primary = old.primary
            if peer.endpoint is old.target:
                peer.endpoint = target
        peer.fallback = fb
    fb.after = after
    fb.probe_interval = probe_interval
    if isinstance(peer.endpoint, tuple):
        fb.primary = peer.endpoint
    if peer.endpoint is None:
        peer.endpoint = target
    if (not fb.on_fallback(peer) and fb.unanswered_since is None and peer.current is None
            and peer.t_retransmit is not None):
        # configured while an initiation over UDP is still unanswered (the mesh agent gives a peer the relay
        # when its punch got no answer): the clock started with that initiation, not with the next one in 5 s
        fb.unanswered_since = peer.last_sent_handshake
    if fb.on_fallback(peer):
        fb.since = now if fb.since is None else fb.since
        fb.unanswered_since = None
        fb.next_probe = now + fb.probe_interval if fb.primary is not None else None
    _rearm(dev, peer)


def endpoint_set(dev, peer: Peer, now: float) -> None:
    """The peer's endpoint was set by configuration (UAPI `endpoint=`): it is the new primary."""
    fb = peer.fallback
    if fb is None:
        return
    if isinstance(peer.endpoint, tuple):
        fb.primary = peer.endpoint
    fb.unanswered_since = None
    fb.probe_check = None
    if fb.on_fallback(peer):
        fb.next_probe = now + fb.probe_interval if fb.primary is not None else None
    else:
        fb.since = None
        fb.next_probe = None
    _rearm(dev, peer)


def initiation_sent(dev, peer: Peer, now: float) -> None:
    """An initiation went to peer.endpoint. Off the fallback, start the no-answer clock."""
    fb = peer.fallback
    if fb.on_fallback(peer) or peer.endpoint is None:
        return
    if fb.unanswered_since is None:
        fb.unanswered_since = now
        _rearm(dev, peer)


def response_received(dev, peer: Peer, src: object, now: float) -> None:
    """A handshake response from `peer` authenticated (the core already set peer.endpoint = src)."""
    fb = peer.fallback
    fb.unanswered_since = None
    fb.probe_check = None
    if src is fb.target:
        _rearm(dev, peer)
        return
    if isinstance(src, tuple):
        fb.primary = src
    if fb.since is not None:        # we were on the fallback: the answer over UDP brought us back
        fb.returns += 1
        fb.since = None
        _note(dev, peer, f"UDP answered again; back from the fallback to {src!r}")
    fb.next_probe = None
    _rearm(dev, peer)


def run_timer(dev, peer: Peer, now: float, out: list) -> None:
    """The fallback's deadline passed (called from the device's timer loop)."""
    fb = peer.fallback
    fb.deadline = None
    if not fb.on_fallback(peer):
        if fb.since is not None:    # roaming moved the peer off the fallback (an authenticated message)
            fb.since = None
            fb.next_probe = fb.probe_check = None
        if fb.unanswered_since is not None and now - fb.unanswered_since >= fb.after:
            fb.unanswered_since = None
            fb.switches += 1
            fb.since = now
            peer.endpoint = fb.target
            _note(dev, peer, f"no handshake answer over UDP for {fb.after:g} s; using the fallback {fb.target!r}")
            fb.next_probe = now + fb.probe_interval if fb.primary is not None else None
            peer.last_sent_handshake = -float("inf")    # the new path gets its initiation now, not in 5 s
            dev.initiate_handshake(peer, now, out, retry=False)
    else:
        fb.unanswered_since = None
        if fb.since is None:
            fb.since = now          # configured or roamed onto the stream
        if fb.probe_check is not None and now >= fb.probe_check:
            fb.probe_check = None
            dev.send_keepalive(peer, now, out)           # no UDP answer: pin the other side to the stream
        if fb.next_probe is not None and now >= fb.next_probe:
            fb.next_probe = now + fb.probe_interval
            _probe(dev, peer, now, out)
        elif fb.next_probe is None and fb.primary is not None:
            fb.next_probe = now + fb.probe_interval
    _rearm(dev, peer)


def _probe(dev, peer: Peer, now: float, out: list) -> None:
    """One initiation to the primary UDP endpoint, then a keepalive over the stream (rule 3 above)."""
    fb = peer.fallback
    kp = peer.current
    if (fb.primary is None or dev.identity is None or peer.removed or kp is None
            or now - kp.created >= REJECT_AFTER_TIME or peer.t_retransmit is not None):
        return      # no session (or a handshake under way): probing would disturb the handshake on the stream
    data = dev.new_initiation(peer, now)
    if data is None:
        return
    peer.last_sent_handshake = now
    fb.probes += 1
    out.append((data, fb.primary))
    dev.send_keepalive(peer, now, out)
    fb.probe_check = now + FALLBACK_PROBE_ANSWER


class FallbackExtension(Extension):
    """The fallback as a plug-in of the device (ext/base.py): its per-peer state is peer.fallback (FallbackState,
    None unless a FallbackEndpoint is configured, through configure() above)."""

    name = "fallback"

    def __init__(self, dev) -> None:
        self.dev = dev

    def initiation_sent(self, peer, now: float) -> None:
        if peer.fallback is not None:
            initiation_sent(self.dev, peer, now)

    def response_received(self, peer, src: object, now: float) -> None:
        if peer.fallback is not None:
            response_received(self.dev, peer, src, now)

    def deadline(self, peer) -> float | None:
        fb = peer.fallback
        return fb.deadline if fb is not None else None

    def timer(self, peer, now: float, out: list) -> None:
        run_timer(self.dev, peer, now, out)
