"""The node side of the mesh relay: for a peer no direct path works for, WireGuard messages go through the
control server (GET /api/v1/relay, mesh/server.py relay_forward), which forwards them by public key.

How it reaches the interface: the daemon's own UDP -> stream fallback (ext/fallback.py, docs/transports.md)
does the switching. For a peer that needs the relay the agent opens a TCP listener on 127.0.0.1 (one per peer:
the daemon's messages do not say whom they are for) and sets the peer's FallbackEndpoint to it; the daemon moves
the peer there after FALLBACK_AFTER seconds of unanswered initiations, sends the stream framing of the TCP
transport (streams/framing.py: a 2-byte length, a WireGuard message), and keeps probing the direct UDP path every
FALLBACK_PROBE seconds, returning to it when a probe is answered: the session is the same throughout, only the
path changes. This process turns each frame into one binary WebSocket message (the peer's key, the message) on
its one TLS connection to the server, and each message from the server back into a frame on the peer's local
connection. The relay sees WireGuard's ciphertext only.

Peers get the relay only when they need it (no handshake RELAY_WHEN seconds after their endpoint was punched,
or none for DEAD seconds): a stream endpoint makes the daemon's flush look at every message's endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import logging

from ..streams.framing import FrameError, encode_frame, parse_frames

__all__ = ["RelayClient", "RELAY_WHEN", "FALLBACK_AFTER", "FALLBACK_PROBE"]

log = logging.getLogger("wgpy.agent")

RELAY_WHEN = 1.0              # seconds after a punch without a handshake: the peer gets the relay
DEAD = 150.0                  # seconds without a handshake (a direct path that died): the peer gets the relay
FALLBACK_AFTER = 0.5          # the daemon's FallbackAfter for relayed peers
FALLBACK_PROBE = 10.0         # its FallbackProbeInterval: how soon a direct path is tried again
MAX_BUFFERED = 1 << 20        # bytes waiting for the daemon's local connection; more are dropped


class RelayClient:
    """The relay connection to the server and the local listeners of the relayed peers."""

    def __init__(self, connect) -> None:
        self._connect = connect                    # () -> async context manager of a WebSocket to /api/v1/relay
        self.ws = None
        self.ports: dict[str, int] = {}            # peer key (base64) -> its local listener's port
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._local: dict[str, asyncio.StreamWriter] = {}
        self.stats = {"to_server": 0, "from_server": 0, "dropped": 0}

    async def listen(self, key: str) -> int:
        """The local port for peer `key` (made on first use)."""
        port = self.ports.get(key)
        if port is None:
            server = await asyncio.start_server(lambda r, w: self._local_conn(key, r, w), "127.0.0.1", 0)
            self._servers[key] = server
            port = self.ports[key] = server.sockets[0].getsockname()[1]
        return port

    def forget(self, key: str) -> None:
        server = self._servers.pop(key, None)
        if server is not None:
            server.close()
        self.ports.pop(key, None)
        w = self._local.pop(key, None)
        if w is not None:
            w.close()

    async def _local_conn(self, key: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The daemon's connection for peer `key`: its frames go to the server with the peer's key first."""
        old = self._local.get(key)
        self._local[key] = writer
        if old is not None:
            old.close()
        raw = base64.b64decode(key)
        buf = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
                msgs: list = []
                try:
                    used = parse_frames(buf, None, msgs)
                except FrameError as e:
                    log.warning("relay: a bad frame from the interface (%s)", e.reason)
                    break
                del buf[:used]
                ws = self.ws
                for msg, _ in msgs:
                    if ws is None or ws.closed:
                        self.stats["dropped"] += 1
                        continue
                    await ws.send_bytes(raw + msg)
                    self.stats["to_server"] += 1
        except (ConnectionError, OSError):
            pass
        finally:
            if self._local.get(key) is writer:
                del self._local[key]
            writer.close()

    def deliver(self, data: bytes) -> None:
        """A message from the server: SOURCE KEY + WireGuard message, onto that peer's local connection."""
        if len(data) <= 32:
            self.stats["dropped"] += 1
            return
        w = self._local.get(base64.b64encode(data[:32]).decode())
        if w is None or w.transport.get_write_buffer_size() > MAX_BUFFERED:
            self.stats["dropped"] += 1            # the interface is not on the relay for it (yet): WireGuard
            return                                # retransmits what matters
        w.write(encode_frame(data[32:]))
        self.stats["from_server"] += 1

    async def run(self) -> None:
        """Hold the relay connection: reconnect with backoff (0.5 s doubling to 30 s) while the agent runs."""
        import aiohttp
        failures = 0
        while True:
            try:
                async with self._connect() as ws:
                    self.ws = ws
                    failures = 0
                    log.info("relay connected")
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            self.deliver(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                log.warning("relay: %s", e)
            finally:
                self.ws = None
            await asyncio.sleep(min(0.5 * 2 ** min(failures, 6), 30.0))

    def close(self) -> None:
        for key in list(self._servers):
            self.forget(key)


def needs_relay(handshake: int, punched: float | None, now_mono: float, now_wall: float) -> bool:
    """Whether a peer should get the relay: no handshake RELAY_WHEN s after its endpoint was punched, or its
    latest handshake (Unix time; 0: never) older than DEAD s."""
    if handshake == 0:
        return punched is not None and now_mono - punched >= RELAY_WHEN
    return now_wall - handshake > DEAD


def fallback_lines(port: int) -> list[str]:
    """The UAPI lines that give a peer (already named by its public_key line) the relay as its fallback."""
    return [f"wgpy_fallback_endpoint=tcp://127.0.0.1:{port}", f"wgpy_fallback_after={FALLBACK_AFTER:g}",
            f"wgpy_fallback_probe_interval={FALLBACK_PROBE:g}"]

