"""The I/O runtime of one interface: TUN device, UDP sockets, UAPI socket and the event loop around the core.

Event loop (one thread, epoll):
    1. wait for the TUN, a UDP socket or the UAPI socket to be readable, or for the core's next deadline
    2. TUN readable: read until about BATCH packets are in hand, or just one after a quiet spell (with TSO one
       read returns a TCP super-packet, cut into MTU-sized packets by offload.split), hand them to
       Device.send_packets as one batch
    3. UDP readable: read up to BATCH datagrams (UDP GRO lets one read return several), hand them to
       Device.receive_datagrams as one batch
    4. carry out what the core returned: datagrams in as few sendmsg() calls as UDP GSO allows; packets for the
       TUN merged per TCP flow by offload.coalesce into super-packets, one write() each
    5. run expired timers (Device.tick); once a second check that the interface still exists (through the TUN
       file descriptor, so it works wherever the interface was moved) and let host-name endpoints be looked up
       again (io/reresolve.py: worker threads; an answer moves a peer through a UAPI set)
Nothing on the per-packet path logs or allocates beyond the packet buffers themselves.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import time

from .io.offload import coalesce, split
from .io.pmtu import PathMtuIO
from .io.reresolve import EndpointNames
from .io.stream import StreamManager
from .io.tun import Tun
from .io.udp import UdpBind, format_endpoint, make_endpoint, parse_endpoint
from .ops.http import MetricsServer
from .protocol.device import Device
from .protocol.stun import StunClient
from .protocol.events import PATH_MTU_CHANGED, FallbackSwitched, Fragmentable, TunPacket, TunPackets
from .uapi import protocol as uapi
from .uapi.server import UapiServer

log = logging.getLogger("wgpy")
BATCH = 64
QUIET = 0.002      # seconds without reads after which a read is taken alone (see run)
_EAGAIN = (BlockingIOError, InterruptedError)


class Interface:
    """One wgpy interface: implements uapi.Host for the UAPI layer and runs the event loop."""

    def __init__(self, name: str, mode: str = "tun", *, tun=None, bind_factory=UdpBind, clock=time.monotonic,
                 wall=time.time, rand=os.urandom, uapi: bool = True, host_link: bool = True) -> None:
        """The parts are replaceable for the runtime test layer (tests/runtime/): `tun` an opened device with
        the interface of io/tun.Tun (io/memory.MemoryTun), `bind_factory` makes binds with the interface of
        io/udp.UdpBind (io/memory.MemoryBind), `clock`/`wall`/`rand` the sources of time and randomness,
        `uapi=False` no UAPI socket (requests through handle_uapi), `host_link=False` no netlink look-ups of
        the host's links (path MTUs start from the default)."""
        self.name = name
        self.mode = mode
        # mode "tap": the core is a learning switch (L2); the loop below is the same, one frame per read/write
        self.device = Device(rand=rand, wall=wall, l2=(mode == "tap"))
        self._bind_factory = bind_factory
        self.bind = bind_factory()
        self.tun = tun
        self._own_tun = tun is None
        self._clock = clock
        self._want_uapi = uapi
        self.uapi: UapiServer | None = None
        self.listen_port = 0
        self.fwmark = 0
        self.epoll = select.epoll()
        self.running = False
        self._stop_requested = False
        self._next_check = 0.0
        self._last_reads = (-1.0, -1.0)
        self.tun_write_errors = 0
        self.tun_read_drops = 0
        self.offload = os.environ.get("WGPY_TUN_OFFLOAD", "1") != "0"
        # path MTU: the control channel on, the error queue read, the interface MTU in automatic mode
        self.device.control_enabled = True
        self.pmtu = PathMtuIO(name, self.device, mode == "tap")
        self.device.link_mtu = self.pmtu.link_mtu if host_link else (lambda endpoint: None)
        # TCP/TLS listeners and connections (io/stream.py), in the same epoll
        self.streams = StreamManager(self.epoll, rand=rand, clock=clock)
        # MetricsListen: Prometheus /metrics (ops/), served in the same epoll; not listening until set
        self.metrics = MetricsServer(self.epoll, self._render_metrics, clock)
        self._metrics_registry = None
        # host-name endpoints, looked up again in worker threads (io/reresolve.py); None: there are none
        self.names: EndpointNames | None = None
        self._wall = wall
        # StunServer: the public mapping of the listen port, asked from the WireGuard socket (protocol/stun.py)
        self.stun: StunClient | None = None
        self.stun_server: tuple[str, int] | None = None
        self._stun_due = float("inf")
        self._rand = rand

    # ---- setup / teardown ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the TUN device, bind a UDP port and open the UAPI socket (undone by close() on failure)."""
        try:
            if self.tun is None:
                self.tun = Tun(self.name, self.mode, offload=self.offload)
                if self.mode == "tun":
                    _no_link_local(self.tun.name)
            self.name = self.tun.name
            self.bind.open(0)
            self.listen_port = self.bind.port
            if self._want_uapi:
                self.uapi = UapiServer(self.name, self.uapi_steps)
        except BaseException:
            self.close()
            raise
        self.epoll.register(self.tun.fd, select.EPOLLIN)
        if self.uapi is not None:
            self.epoll.register(self.uapi.fileno(), select.EPOLLIN)
            self.uapi.attach(self.epoll)        # its connections are served in this loop, never blocking it
        # signals wake the loop at once: the handler's byte lands in this pipe
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self._wake_r, select.EPOLLIN)
        self._register_sockets()

    def _register_sockets(self) -> None:
        self._sock_by_fd = {s.fileno(): s for s in self.bind.sockets()}
        self.bind.configure(self.pmtu)          # GRO; IP_RECVERR and the PMTU discovery mode
        # the kernel lets transport messages in for the device's receiver indices only (io/udp.py)
        keep = getattr(self.bind, "filter_receivers", None)
        self.device.index.on_keypair = keep
        if keep is not None and self.device.keypairs_by_index:
            keep(self.device.keypairs_by_index)
        for fd in self._sock_by_fd:
            self.epoll.register(fd, select.EPOLLIN)

    def close(self) -> None:
        if self.uapi is not None:
            self.uapi.close()
            self.uapi = None
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass   # not the main thread
        for fd in (getattr(self, "_wake_r", -1), getattr(self, "_wake_w", -1)):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self.bind.close()
        self.streams.close()
        self.metrics.close()
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        self.pmtu.close()
        if self.names is not None:
            self.names.close()
        self.device.zero_all()

    # ---- uapi.Host ----------------------------------------------------------------------------------------

    def handle_uapi(self, text: str) -> str:
        return uapi.handle_request(text, self, log.warning)

    def uapi_steps(self, text: str):
        """The UAPI socket's handler: a large set in slices (uapi.request_steps), between passes of the loop."""
        return uapi.request_steps(text, self, log.warning)

    def set_listen_port(self, port: int) -> None:
        old = dict(self._sock_by_fd) if hasattr(self, "_sock_by_fd") else {}
        new = self._bind_factory()
        new.open(port, self.fwmark)         # raises before anything changes
        for fd in old:
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass
        self.bind.close()
        self.bind = new
        self.listen_port = new.port
        self._register_sockets()

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark
        self.bind.set_fwmark(mark)
        self.streams.set_fwmark(mark)   # outbound TCP must bypass the tunnel too

    def set_mtu_auto(self, enabled: bool, min_mtu: int | None = None) -> None:
        """wgpy_mtu_auto= / wgpy_mtu_min=: the automatic MTU mode (io/pmtu.py), then its PMTU discovery mode on
        every UDP socket (a later set_listen_port's new sockets get it too)."""
        self.pmtu.set_auto(enabled, min_mtu)
        self.bind.configure(self.pmtu)

    @property
    def mtu_min(self) -> int:
        return self.pmtu.min_mtu

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        return self.metrics.address

    def set_metrics_listen(self, addr: tuple[str, int] | None) -> None:
        """wgpy_metrics_listen= (MetricsListen): serve /metrics on addr, or stop (None); raises OSError."""
        self.metrics.listen(addr)
        if addr is not None:
            log.info("metrics at http://%s/metrics", format_endpoint(self.metrics.address))

    def set_stun_server(self, addr: tuple[str, int] | None) -> None:
        """wgpy_stun_server= (StunServer): ask `addr` for this socket's public mapping now and every 25 s, or
        stop (None). Its answers come in on the WireGuard socket and reach the client through the core's
        non-transport path (Device.stun_sink)."""
        if addr == self.stun_server and (addr is None) == (self.stun is None):
            return
        self.stun_server = addr
        if addr is None:
            self.stun = None
            self.device.stun_sink = None
            self._stun_due = float("inf")
            return
        self.stun = StunClient([make_endpoint(*addr)], rand=self._rand)
        self.device.stun_sink = self.stun.receive
        self._stun_poll(self._clock())

    def _stun_poll(self, now: float) -> None:
        out = self.stun.poll(now)
        if out:
            self.bind.send(out)
        self._stun_due = self.stun.deadline()

    def _render_metrics(self) -> tuple[str, bytes]:
        from .ops import metrics               # prometheus_client is imported once metrics are asked for
        if self._metrics_registry is None:
            self._metrics_registry = metrics.registry_for(self, lambda: self.metrics.stats)
        return metrics.CONTENT_TYPE, metrics.render(self._metrics_registry)

    def track_endpoint_names(self, entries) -> None:
        """(public key, host, port, resolved endpoint) of each peer whose Endpoint is a host name, as `wgpy up`
        resolved them: looked up again while the interface runs (io/reresolve.py)."""
        if self.names is None:
            self.names = EndpointNames(self.device.peers, self._set_resolved_endpoint, self._clock, self._wall)
        for key, host, port, resolved in entries:
            self.names.add(key, host, port, resolved)

    def _set_resolved_endpoint(self, public_key: bytes, endpoint: str) -> bool:
        reply = self.handle_uapi(f"set=1\npublic_key={public_key.hex()}\nupdate_only=true\nendpoint={endpoint}\n")
        return reply == "errno=0\n\n"

    def endpoint_name(self, peer) -> str | None:
        """wgpy_endpoint_name: the peer's host-name endpoint while its address is the one the name gave."""
        return self.names.in_force(peer) if self.names is not None else None

    parse_endpoint = staticmethod(parse_endpoint)
    format_endpoint = staticmethod(format_endpoint)

    def now(self) -> float:
        return self._clock()

    def flush(self, out: list) -> None:
        if self.streams.active:         # stream endpoints are not tuples
            out = self.streams.send(out)
        self.bind.send(out)

    # ---- event loop ---------------------------------------------------------------------------------------

    def run(self) -> None:
        """The event loop, until stop() (one called before run() too: a signal just before the loop starts is
        not lost) or until the interface is deleted."""
        self.running = True
        if self._stop_requested:
            self.running = False
        self._loop(None)

    def step(self, max_wait: float = 0.0) -> None:
        """One pass of the loop, waiting at most `max_wait` seconds for something to happen (the runtime tests
        drive two interfaces in one thread with a fake clock this way)."""
        self.running = True
        self._loop(max_wait)

    def _loop(self, max_wait: float | None) -> None:
        dev = self.device
        tun_fd = self.tun.fd
        uapi_fd = self.uapi.fileno() if self.uapi is not None else -1
        uapi_conns = self.uapi.conns if self.uapi is not None else None
        uapi_server = self.uapi
        metrics = self.metrics
        metrics_fds = metrics.fds               # the same dicts while MetricsListen changes
        metrics_conns = metrics.conns
        wake_fd = self._wake_r
        read = os.read
        write = os.write
        vnet = self.tun.vnet
        read_size = 65536 + 64 if vnet else 65536
        monotonic = self._clock
        receive = self.bind.receive
        streams = self.streams
        if max_wait is None:
            self._next_check = monotonic() + 1.0
        tun_last, net_last = self._last_reads
        once = max_wait is not None
        while self.running:
            now = monotonic()
            next_check = self._next_check
            deadline = dev.next_deadline()
            timeout = min(next_check, deadline if deadline is not None else next_check) - now
            if uapi_conns:              # a UAPI client's idle cut-off
                timeout = min(timeout, self.uapi.next_deadline() - now)
            if uapi_server is not None and uapi_server.job is not None:
                timeout = 0.0           # a large set is applied in slices: the next one after this pass
            if metrics_conns:           # a metrics client's cut-off
                timeout = min(timeout, metrics.next_deadline() - now)
            if once:
                timeout = min(timeout, max_wait)
            if streams.active:          # the stream transports' connect/idle timeouts, reconnections
                sd = streams.next_deadline()
                if sd is not None:
                    timeout = min(timeout, sd - now)
            try:
                events = self.epoll.poll(max(timeout, 0.0))
            except InterruptedError:
                continue
            now = monotonic()
            out_net: list = []
            out_tun: list = []
            for fd, ev in events:
                if fd == tun_fd:
                    packets: list = []
                    count = 0
                    # after a quiet spell take one read and skip the draining read that would fail with EAGAIN
                    # (a syscall after idle costs tens of us here): level-triggered epoll reports the TUN again
                    # at once if more is queued, and then it is no longer quiet
                    limit = BATCH if now - tun_last < QUIET else 1
                    tun_last = now
                    while count < limit:
                        try:
                            buf = read(tun_fd, read_size)
                        except _EAGAIN:
                            break
                        except OSError as e:
                            if e.errno in (errno.EBADFD, errno.EIO, errno.ENODEV):
                                self.running = False   # the interface was deleted under us
                            break
                        if vnet:
                            got = split(buf, packets)
                            if not got:
                                self.tun_read_drops += 1
                            count += got
                        else:
                            packets.append(buf)
                            count += 1
                    if packets:
                        dev.send_packets(packets, now, out_net)
                elif fd == uapi_fd:
                    self.uapi.accept()
                elif fd == wake_fd:
                    try:
                        os.read(fd, 512)
                    except OSError:
                        pass
                else:
                    sock = self._sock_by_fd.get(fd)
                    if sock is None:
                        if uapi_conns and fd in uapi_conns:
                            self.uapi.event(fd, ev)     # a UAPI client's connection
                        elif fd in metrics_fds:
                            metrics.event(fd, ev)       # the metrics endpoint or one of its clients
                        else:
                            streams.event(fd, ev, now)  # a stream transport's socket
                        continue
                    if ev & select.EPOLLERR:
                        self.pmtu.drain(sock, now)     # ICMP/EMSGSIZE from the error queue (path MTU)
                    datagrams: list = []
                    receive(sock, BATCH if now - net_last < QUIET else 1, datagrams)   # as for the TUN
                    net_last = now
                    if datagrams:
                        dev.receive_datagrams(datagrams, now, out_net, out_tun)
            if streams.active:          # the stream transports' messages to the core, their owners, timers
                self._streams(now, out_net, out_tun)
            deadline = dev.next_deadline()
            if deadline is not None and deadline <= now:
                dev.tick(now, out_net)
            if uapi_conns:
                self.uapi.tick(now)
            if uapi_server is not None and uapi_server.job is not None:
                uapi_server.work()             # one slice of a large set (UapiServer.work), then the data path again
            if metrics_conns:
                metrics.tick(now)
            if out_net:
                self.flush(out_net)
            if dev.events:                             # typed events of the core (protocol/events.py)
                self._events(out_tun)
            if out_tun:
                if vnet:
                    bufs: list = []
                    coalesce(out_tun, bufs)
                    out_tun = bufs
                for pkt in out_tun:
                    try:
                        write(tun_fd, pkt)
                    except OSError:
                        self.tun_write_errors += 1
            if now >= self._stun_due:
                self._stun_poll(now)                    # STUN requests due (the loop wakes at least once a second)
            if now >= next_check:
                self._next_check = now + 1.0
                if self.names is not None:
                    self.names.tick(now)               # host-name endpoints: answers in, lookups due out
                if not self.tun.attached():
                    log.info("interface %s was removed; stopping", self.name)
                    self.running = False
            if once:
                self._last_reads = (tun_last, net_last)
                return

    def _streams(self, now: float, out_net: list, out_tun: list) -> None:
        """The stream transports are a source of messages like the UDP bind: the loop hands them to the core and
        tells the stream manager who owns a new connection (the core's answer, not a parse of the bytes)."""
        dev = self.device
        streams = self.streams
        batch, pending = streams.take_received(now)
        if batch:
            dev.receive_datagrams(batch, now, out_net, out_tun)
        for conn, frames in pending:
            dev.receive_datagrams(frames, now, out_net, out_tun)
            owners = dev.peers_at(conn.ep)
            held = streams.owner_found(conn, owners[0] if owners else None, now)
            if held:
                dev.receive_datagrams(held, now, out_net, out_tun)
        for ep in streams.take_connected():
            for peer in dev.peers_at(ep):
                if peer.current is not None:
                    dev.send_keepalive(peer, now, out_net)   # tells the listener who this connection is
        streams.tick_due(now)

    def _events(self, out_tun: list) -> None:
        events = self.device.events
        self.device.events = []
        for ev in events:
            if type(ev) is TunPacket:
                out_tun.append(ev.packet)           # ICMP too-big answers for the local stack
            elif type(ev) is TunPackets:
                out_tun.extend(ev.packets)          # a rate-limited peer's packets let out (ext/ratelimit.py)
            elif type(ev) is Fragmentable:
                self.bind.send_fragmentable(ev.datagrams, ev.path_mtu)   # above the path MTU, outer fragments
            elif ev is PATH_MTU_CHANGED:
                self.pmtu.apply()                   # the interface MTU follows the peers (io/pmtu.py)
            elif type(ev) is FallbackSwitched:
                log.info("peer %s: %s", ev.peer, ev.text)

    def stop(self, *_args) -> None:
        self._stop_requested = True
        self.running = False


def _no_link_local(name: str) -> None:
    """An L3 tunnel gets no IPv6 link-local address, as kernel WireGuard's interfaces have none: with one, the
    kernel sends router solicitations and MLD reports into the tunnel (drops counted on an idle tunnel, and
    `wg-quick save` would record the address). Set before the link goes up (by `up`, or by wg-quick after
    wgpyd returns); a host without IPv6, or a user without CAP_NET_ADMIN (attach mode), keeps what it has."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/addr_gen_mode", "w") as f:
            f.write("1\n")           # IN6_ADDR_GEN_MODE_NONE
    except OSError:
        pass


def install_signal_handlers(iface: Interface) -> None:
    signal.signal(signal.SIGTERM, iface.stop)
    signal.signal(signal.SIGINT, iface.stop)
    signal.signal(signal.SIGHUP, iface.stop)      # a closed terminal tears down as SIGTERM does
    signal.set_wakeup_fd(iface._wake_w, warn_on_full_buffer=False)
