#!/usr/bin/env python3
"""Bounded TCP bulk transfer with an end-to-end SHA-256 check.

    xfer.py serve PORT [--bind ADDR] [--timeout SECONDS]
        Listen on PORT (IPv4 and IPv6 "any" unless --bind is given), accept ONE connection, read until EOF,
        then print one JSON line {"role": "server", "sha256": HEX, "bytes": N, "seconds": S, "peer": "ip"}.
        Before accepting it prints {"role": "server", "listening": PORT} so a caller knows it is ready.

    xfer.py send HOST PORT NBYTES [--timeout SECONDS] [--rate BYTES_PER_SECOND] [--chunk BYTES]
        Connect, send NBYTES of random data, half-close, wait for the server to close (so that success means the
        server has read everything), then print {"role": "client", "sha256": HEX, "bytes": N, "seconds": S}.

Every blocking step is bounded by --timeout (a deadline for the whole run, default 60 s).
On failure the tool prints {"role": ..., "error": "..."} and exits with status 1 (2 for usage errors).
Only the standard library is used, so it runs with any python3 >= 3.9.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import time

CHUNK = 64 * 1024


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline exceeded")
        return remaining


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def listen_socket(port: int, bind: str | None) -> socket.socket:
    if bind is not None:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    else:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", port))
        except OSError:  # IPv6 disabled: IPv4 only
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
    sock.listen(1)
    return sock


def serve(args: argparse.Namespace) -> int:
    deadline = Deadline(args.timeout)
    lsock = listen_socket(args.port, args.bind)
    emit({"role": "server", "listening": lsock.getsockname()[1]})
    lsock.settimeout(deadline.left())
    conn, peer = lsock.accept()
    lsock.close()
    started = time.monotonic()
    digest = hashlib.sha256()
    total = 0
    with conn:
        while True:
            conn.settimeout(deadline.left())
            data = conn.recv(256 * 1024)
            if not data:
                break
            digest.update(data)
            total += len(data)
    emit({
        "role": "server", "sha256": digest.hexdigest(), "bytes": total,
        "seconds": round(time.monotonic() - started, 3), "peer": peer[0].removeprefix("::ffff:"),
    })
    return 0


def connect(host: str, port: int, deadline: Deadline) -> socket.socket:
    last_error: Exception | None = None
    while True:
        try:
            return socket.create_connection((host, port), timeout=min(deadline.left(), 10.0))
        except (ConnectionRefusedError, socket.timeout, OSError) as exc:  # tunnel may still be coming up
            last_error = exc
            if deadline.end - time.monotonic() < 0.3:
                raise TimeoutError(f"connect to {host}:{port} failed: {last_error}") from exc
            time.sleep(0.2)


def send(args: argparse.Namespace) -> int:
    deadline = Deadline(args.timeout)
    sock = connect(args.host, args.port, deadline)
    started = time.monotonic()
    digest = hashlib.sha256()
    sent = 0
    with sock:
        while sent < args.nbytes:
            block = os.urandom(min(args.chunk, args.nbytes - sent))
            sock.settimeout(deadline.left())
            sock.sendall(block)
            digest.update(block)
            sent += len(block)
            if args.rate:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(min(ahead, deadline.left()))
        sock.shutdown(socket.SHUT_WR)
        # Wait for the server to finish reading and close its side.
        while True:
            sock.settimeout(deadline.left())
            if not sock.recv(4096):
                break
    emit({"role": "client", "sha256": digest.hexdigest(), "bytes": sent,
          "seconds": round(time.monotonic() - started, 3)})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="receive one stream and hash it")
    p_serve.add_argument("port", type=int)
    p_serve.add_argument("--bind", default=None)
    p_serve.add_argument("--timeout", type=float, default=60.0)
    p_send = sub.add_parser("send", help="send NBYTES random bytes and hash them")
    p_send.add_argument("host")
    p_send.add_argument("port", type=int)
    p_send.add_argument("nbytes", type=int)
    p_send.add_argument("--timeout", type=float, default=60.0)
    p_send.add_argument("--rate", type=float, default=0.0, help="limit to this many bytes per second")
    p_send.add_argument("--chunk", type=int, default=CHUNK)
    args = parser.parse_args(argv)
    role = "server" if args.cmd == "serve" else "client"
    try:
        return serve(args) if args.cmd == "serve" else send(args)
    except (OSError, TimeoutError) as exc:
        emit({"role": role, "error": f"{type(exc).__name__}: {exc}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
