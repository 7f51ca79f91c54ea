"""The plug-in interface between the WireGuard core (protocol/device.py) and wgpy's extensions.

An extension is made with the device it serves and keeps its own per-peer state. The device calls its hooks on
the handshake and timer paths, never per data packet, and only the hooks an extension overrides (the device
collects them once, when it is made). Hooks, named after the kernel's timer hooks they sit beside:
    initiation_sent(peer, now)              a handshake initiation to `peer` was sent (not a retransmission
                                            decided by the extension itself)
    response_received(peer, src, now)       our initiation was answered by a response from `src`
    handshake_complete(peer, now, out)      a handshake completed, either role (the session is usable)
    deadline(peer) -> float | None          this extension's next deadline for `peer`
    timer(peer, now, out)                   that deadline has passed
Outputs go where the core's go: datagrams to `out`, events to `device.events`; an extension asks the device to
wake it by device.schedule(peer, when) after moving its deadline earlier.
"""

from __future__ import annotations

__all__ = ["Extension", "hooks_of"]


class Extension:
    """Base class: every hook does nothing."""

    name = "extension"

    def initiation_sent(self, peer, now: float) -> None:
        pass

    def response_received(self, peer, src: object, now: float) -> None:
        pass

    def handshake_complete(self, peer, now: float, out: list) -> None:
        pass

    def deadline(self, peer) -> float | None:
        return None

    def timer(self, peer, now: float, out: list) -> None:
        pass


def hooks_of(extensions: list[Extension], hook: str) -> list:
    """The bound `hook` methods of the extensions that override it (the others would be calls that do nothing)."""
    base = getattr(Extension, hook)
    return [getattr(e, hook) for e in extensions if getattr(type(e), hook) is not base]
