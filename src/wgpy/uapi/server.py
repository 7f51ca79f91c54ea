"""The UAPI unix socket: /var/run/wireguard/<iface>.sock, as wireguard-go creates it.

A daemon without root that cannot write /var/run/wireguard (README: without root) puts it in its user's own
runtime directory instead (privileges.user_runtime_dir()); clients look in both places.

The socket is created under a 0077 umask (mode 0600, root only); a stale socket left by a crashed daemon is
replaced, a live one means the interface is in use. Connections from a user other than our own (SO_PEERCRED) are
refused. Requests are served in the daemon's event loop: the clients (`wg`, `wgpy`) send one request and wait,
and a connection is given at most a short time to complete its request so a stuck client cannot stall traffic.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Callable

from ..host import privileges

SOCKET_DIR = "/var/run/wireguard"
REQUEST_TIMEOUT = 2.0
MAX_REQUEST = 16 << 20


def socket_path(name: str) -> str:
    """Where interface `name`'s socket is (the first that exists), else where a new one goes."""
    for d in privileges.search_dirs(SOCKET_DIR):
        path = os.path.join(d, f"{name}.sock")
        if os.path.exists(path):
            return path
    return os.path.join(privileges.runtime_dir(SOCKET_DIR), f"{name}.sock")


class UapiServer:
    def __init__(self, name: str, handler: Callable[[str], str]) -> None:
        self.path = os.path.join(privileges.runtime_dir(SOCKET_DIR, create=True), f"{name}.sock")
        self.handler = handler
        self.refused = 0
        old = os.umask(0o077)
        try:
            self.sock = self._listen()
        finally:
            os.umask(old)
        self.sock.setblocking(False)

    def _listen(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(self.path)
        except OSError:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                s.close()
                raise OSError(f"UAPI socket {self.path} is in use by another daemon") from None
            except (ConnectionRefusedError, FileNotFoundError):
                pass
            finally:
                probe.close()
            os.unlink(self.path)
            s.bind(self.path)
        s.listen(16)
        return s

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> None:
        """Serve every pending connection (called when the listening socket is readable)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                try:
                    self._serve(conn)
                except Exception:   # one bad client never stops the daemon
                    pass

    def _serve(self, conn: socket.socket) -> None:
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", cred)
        if uid not in (0, os.geteuid()):
            self.refused += 1
            return
        deadline = time.monotonic() + REQUEST_TIMEOUT
        buf = b""
        while True:
            while b"\n\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or len(buf) > MAX_REQUEST:
                    return
                conn.settimeout(remaining)
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            request, _, buf = buf.partition(b"\n\n")
            try:
                text = request.decode("utf-8")
            except UnicodeDecodeError:
                conn.sendall(b"errno=-22\n\n")
                continue
            conn.sendall(self.handler(text).encode())
            if not buf:
                # wg sends one request per connection; do not wait for another unless bytes are already here
                conn.settimeout(0.05)
                try:
                    more = conn.recv(65536)
                except (socket.timeout, BlockingIOError):
                    return
                if not more:
                    return
                buf = more

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except (FileNotFoundError, PermissionError):
                pass   # a daemon that dropped root cannot: `wgpy down` (or `wg`) removes the stale socket


def request(name: str, text: str, timeout: float = 5.0) -> str:
    """Client side: send one request (without the blank line) and return the response (with errno)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(socket_path(name))
        s.sendall(text.encode() + b"\n")
        buf = b""
        while b"errno=" not in buf or not buf.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf.decode()
    finally:
        s.close()
