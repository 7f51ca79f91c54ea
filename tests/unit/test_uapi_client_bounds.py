"""The UAPI client (wgpy show, down, reload... through uapi.server.request) is bounded against what holds the
socket: a peer that trickles its reply a byte at a time, or sends without end, makes the request fail within the
bound instead of stalling `wgpy show` for ever or filling its memory (issue 21 item 6, left over)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from wgpy.uapi import server


def _serve(path: str, behaviour: str, stop: threading.Event) -> threading.Thread:
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)

    def run() -> None:
        conn, _ = ls.accept()
        conn.recv(4096)
        try:
            while not stop.is_set():
                if behaviour == "trickle":
                    conn.sendall(b"x")
                    time.sleep(0.05)
                else:
                    conn.sendall(b"y" * 65536)
        except OSError:
            pass
        finally:
            conn.close()
            ls.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("behaviour", ["trickle", "flood"])
def test_a_trickling_or_flooding_socket_cannot_hold_the_client(tmp_path, monkeypatch, behaviour):
    path = str(tmp_path / "wgx0.sock")
    monkeypatch.setattr(server, "find_socket", lambda name: path)
    monkeypatch.setattr(server, "REPLY_TIME", 1.0)
    monkeypatch.setattr(server, "REPLY_LIMIT", 4 << 20)
    stop = threading.Event()
    t = _serve(path, behaviour, stop)
    t0 = time.monotonic()
    try:
        with pytest.raises(OSError) as err:            # TimeoutError is an OSError
            server.request("wgx0", "get=1\n", timeout=0.5)
        took = time.monotonic() - t0
        assert took < 3.0, took
        assert ("no complete reply" in str(err.value)) if behaviour == "trickle" else ("larger than 4 MiB" in str(err.value))
    finally:
        stop.set()
        t.join(5)


def test_a_whole_reply_in_pieces_is_read(tmp_path, monkeypatch):
    path = str(tmp_path / "wgx1.sock")
    monkeypatch.setattr(server, "find_socket", lambda name: path)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)

    def run() -> None:
        conn, _ = ls.accept()
        conn.recv(4096)
        for piece in (b"listen_port=1\n", b"errno=", b"0\n", b"\n"):
            conn.sendall(piece)
            time.sleep(0.02)
        conn.close()
        ls.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert server.request("wgx1", "get=1\n", timeout=2.0) == "listen_port=1\nerrno=0\n\n"
    t.join(5)
    os.unlink(path)
