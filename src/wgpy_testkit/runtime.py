"""The runtime harness: real daemon.Interface event loops, with an in-memory TUN, in-memory datagram sockets and a
fake clock (io/memory.py), configured through UAPI strings as `wg` configures them.

    ┌─ Interface A ─────────┐    MemoryNetwork     ┌─ Interface B ─────────┐
    │ MemoryTun ─ loop ─ bind│── 192.0.2.1:51820 ──│bind ─ loop ─ MemoryTun │
    └───────────────────────┘    192.0.2.2:51821   └───────────────────────┘

Between the core tests (core_pair.Pair: two Device objects, bytes passed by hand) and the namespace tests (real
TUN devices, sockets and processes): here the loop itself runs, one pass at a time (Interface.step), both
interfaces in one thread, and time moves only when the test says so, so REKEY_AFTER_TIME or REJECT_AFTER_TIME
take no wall-clock time.
"""

from __future__ import annotations

import random

from wgpy import crypto
from wgpy.daemon import Interface
from wgpy.io.memory import MemoryBind, MemoryNetwork, MemoryTun

from .core_pair import WALL0

A_ADDR, B_ADDR = ("192.0.2.1", 51820), ("192.0.2.2", 51821)
A_IP4, B_IP4 = "10.0.0.1", "10.0.0.2"


class FakeClock:
    """Monotonic seconds the test advances; wall() follows at a fixed offset."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL0 + self.now


class RuntimeNode:
    def __init__(self, name: str, net: MemoryNetwork, host: str, clock: FakeClock, seed: int,
                 mode: str = "tun", uapi_socket: bool = False) -> None:
        rng = random.Random(seed)
        self.private = crypto.clamp(rng.randbytes(32))
        self.public = crypto.public_from_private(self.private)
        self.tun = MemoryTun(name, mode)
        self.iface = Interface(name, mode, tun=self.tun, bind_factory=lambda: MemoryBind(net, host), clock=clock,
                               wall=clock.wall, rand=random.Random(seed + 100).randbytes, uapi=uapi_socket,
                               host_link=False)
        self.iface.open()
        self.addr = host

    def uapi(self, text: str) -> str:
        reply = self.iface.handle_uapi(text)
        assert reply.endswith("errno=0\n\n"), reply
        return reply

    def get(self) -> dict[str, list[str]]:
        """The UAPI get reply as key -> values (in order, peers flattened)."""
        out: dict[str, list[str]] = {}
        for line in self.iface.handle_uapi("get=1\n").splitlines():
            k, _, v = line.partition("=")
            if k:
                out.setdefault(k, []).append(v)
        return out

    def close(self) -> None:
        self.iface.close()


class RuntimePair:
    """Two interfaces peered over a MemoryNetwork; A has B as endpoint, B learns A's from the handshake."""

    def __init__(self, mode: str = "tun", keepalive: int = 0, uapi_socket: bool = False) -> None:
        """`uapi_socket`: A also serves its UAPI on a real unix socket (/run/wireguard/NAME.sock, a unique
        name), for tests of the control socket inside the loop."""
        self.clock = FakeClock()
        self.net = MemoryNetwork()
        name_a = f"wgra{random.SystemRandom().randrange(16 ** 6):06x}" if uapi_socket else "wgra"
        self.a = RuntimeNode(name_a, self.net, A_ADDR[0], self.clock, 1, mode, uapi_socket)
        self.b = RuntimeNode("wgrb", self.net, B_ADDR[0], self.clock, 2, mode)
        l3 = mode == "tun"
        self.a.uapi(f"set=1\nprivate_key={self.a.private.hex()}\nlisten_port={A_ADDR[1]}\n"
                    f"public_key={self.b.public.hex()}\nendpoint={B_ADDR[0]}:{B_ADDR[1]}\n"
                    + (f"allowed_ip={B_IP4}/32\n" if l3 else "")
                    + (f"persistent_keepalive_interval={keepalive}\n" if keepalive else ""))
        self.b.uapi(f"set=1\nprivate_key={self.b.private.hex()}\nlisten_port={B_ADDR[1]}\n"
                    f"public_key={self.a.public.hex()}\n" + (f"allowed_ip={A_IP4}/32\n" if l3 else ""))

    def pump(self, rounds: int = 20) -> None:
        """Step both loops (no waiting, no time passing) until nothing moves, at most `rounds` times each."""
        for _ in range(rounds):
            before = self.net.passed
            self.a.iface.step(0.0)
            self.b.iface.step(0.0)
            if self.net.passed == before:
                self.a.iface.step(0.0)
                self.b.iface.step(0.0)
                if self.net.passed == before:
                    return

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """Let `seconds` of fake time pass in `step`s, running both loops (and their timers) at each."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now = min(end, self.clock.now + step)
            self.pump()

    def close(self) -> None:
        self.a.close()
        self.b.close()
