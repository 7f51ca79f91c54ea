"""systemd's readiness protocol (sd_notify(3)), without libsystemd: one datagram to $NOTIFY_SOCKET.

A Type=notify service tells systemd it is up with "READY=1", what it is doing with "STATUS=...", that it stops
with "STOPPING=1". The socket is a unix datagram socket: a path, or an abstract name when it starts with '@'.
Without $NOTIFY_SOCKET (not started by systemd) every call does nothing. Never raises: a lost notification must
not take the tunnel down (systemd then times the start out and says so).
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "enabled"]


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in "/@":
        return None                  # unset, or a vsock address (not for a service on this host)
    return "\0" + addr[1:] if addr[0] == "@" else addr


def enabled() -> bool:
    return _address() is not None


def notify(*fields: str) -> bool:
    """Send "KEY=VALUE" fields in one datagram (e.g. notify("READY=1", "STATUS=...")); True if it was sent."""
    addr = _address()
    if addr is None:
        return False
    text = "\n".join(f.replace("\n", " ") for f in fields) + "\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(text.encode())
        return True
    except OSError:
        return False
