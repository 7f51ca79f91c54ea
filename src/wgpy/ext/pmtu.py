"""Path MTU per peer (sans-IO): what the kernel learns (ICMP), active probes between wgpy peers (black holes),
re-probing upward, the tunnel MTU each peer can carry, and ICMP "too big" answers for the TUN.

Terms (docs/pmtu.md has the whole picture):
    path MTU   the largest outer IP packet that reaches the peer unfragmented (PathMTU.mtu)
    overhead   outer IP header (20 IPv4 / 40 IPv6) + UDP 8 + WireGuard 32 (16 header, 16 tag)
    usable     path MTU - overhead: the largest plaintext (IP packet, or Ethernet frame in L2) for that peer

PathMTU (one per peer with a UDP endpoint) holds the estimate and the search:
    start      estimate = the local link MTU toward the endpoint (as the kernel's own PMTU discovery starts);
               never below the floor: 576 for an IPv4 underlay, 1280 for IPv6
    ICMP       the kernel's "fragmentation needed"/"packet too big" (error queue, io/pmtu.py) lowers the estimate
               at once to the MTU it carries (clamped to [floor, link MTU]); it never raises it
    search     between wgpy peers only (HELLO said it answers probes), in the automatic MTU mode: a round probes
               the interval (lo, hi) with PMTU_PROBES_PER_STEP sizes at once, spread up to hi - 1 and always
               including the current estimate; an answered size raises lo, a size unanswered after
               PMTU_PROBE_TRIES tries (each waiting the probe timeout, 4 x the smoothed probe RTT) lowers hi,
               until hi - lo = 1: the estimate becomes lo. The first step also probes the floor: if not even that
               is answered the peer is unresponsive and the estimate is left alone.
    black hole the current estimate itself unanswered while a smaller size was answered: lowered to the
               largest answered size at once (traffic flows again) while the search goes on
    re-probe   a new round every `interval` seconds (the path can grow again, or shrink silently); a peer that
               does not answer probes (wireguard-go, kernel WireGuard) instead gets its estimate reset to the
               link MTU, and the kernel's ICMP lowers it again if the path is still small (RFC 1191's ageing)

PmtuMixin is the Device's side: the control channel (HELLO, PROBE, PROBE_REPLY, see control.py), probe
timers on the peer's t_pmtu deadline, the per-peer plaintext limit `peer.mtu` used by the data path, and what is
done with a packet above it (L3: ICMP into the TUN or, for IPv4 without DF, fragmentation as a router does;
L2: dropped and counted, as a switch drops an oversized frame).
"""

from __future__ import annotations

import ipaddress
import struct

from ..constants import (
    ICMP_TOO_BIG_BURST, ICMP_TOO_BIG_PER_SECOND, IPV4_HEADER_LEN, IPV6_HEADER_LEN, PMTU_DEFAULT_LINK_MTU,
    PMTU_FLOOR_V4, PMTU_FLOOR_V6, PMTU_HELLO_ATTEMPTS, PMTU_PROBE_INTERVAL, PMTU_PROBE_TIMEOUT_INITIAL,
    PMTU_PROBE_TIMEOUT_MAX, PMTU_PROBE_TIMEOUT_MIN, PMTU_PROBE_TRIES, PMTU_PROBES_PER_STEP, REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME, UDP_HEADER_LEN, WIREGUARD_DATA_OVERHEAD,
)
from ..routing.ip import checksum
from ..protocol.events import PATH_MTU_CHANGED, TunPacket
from ..protocol.transport import seal
from . import control
from .base import Extension



def overhead(v6: bool) -> int:
    """Bytes a UDP-carried data message adds to its plaintext on the wire."""
    return (IPV6_HEADER_LEN if v6 else IPV4_HEADER_LEN) + UDP_HEADER_LEN + WIREGUARD_DATA_OVERHEAD


class PathMTU:
    """The path MTU estimate toward one UDP endpoint and its probe search (see the module docstring)."""

    __slots__ = ("endpoint", "v6", "floor", "ceiling", "mtu", "source", "changed", "lo", "hi", "pending",
                 "answered_any", "deadline", "next_round", "srtt", "sent_at", "rounds", "unanswered_rounds",
                 "ids", "seq", "interval", "due")

    def __init__(self, endpoint: tuple, link_mtu: int | None, now: float, interval: float) -> None:
        self.endpoint = endpoint
        self.v6 = len(endpoint) == 4
        self.floor = PMTU_FLOOR_V6 if self.v6 else PMTU_FLOOR_V4
        self.ceiling = max(link_mtu or PMTU_DEFAULT_LINK_MTU, self.floor)
        self.mtu = self.ceiling
        self.source = "link"
        self.changed = True
        self.lo = self.hi = 0
        self.pending: dict[int, int] | None = None      # size -> tries, while a search step is under way
        self.answered_any = False
        self.deadline: float | None = None
        self.next_round: float | None = now + interval if interval else None
        self.srtt: float | None = None
        self.sent_at = now
        self.rounds = 0
        self.unanswered_rounds = 0
        self.ids: dict[int, int] = {}                    # probe id -> size, for the sizes still awaited
        self.seq = 0
        self.interval = interval
        self.due = False                                 # a round came due without a session: at the next one

    @property
    def overhead(self) -> int:
        return overhead(self.v6)

    @property
    def usable(self) -> int:
        return self.mtu - self.overhead

    @property
    def searching(self) -> bool:
        return self.pending is not None

    def timeout(self) -> float:
        if self.srtt is None:
            return PMTU_PROBE_TIMEOUT_INITIAL
        return min(max(4 * self.srtt, PMTU_PROBE_TIMEOUT_MIN), PMTU_PROBE_TIMEOUT_MAX)

    def _set(self, mtu: int, source: str) -> None:
        if mtu != self.mtu:
            self.mtu = mtu
            self.changed = True
        self.source = source

    # ---- what the kernel says ---------------------------------------------------------------------------------

    def kernel(self, mtu: int) -> None:
        """ICMP fragmentation-needed / packet-too-big (or a local EMSGSIZE) reported `mtu` for this path."""
        mtu = min(max(mtu, self.floor), self.ceiling)
        if mtu < self.mtu:
            self._set(mtu, "icmp")
        if self.pending is not None and mtu + 1 < self.hi:
            self.hi = mtu + 1
            for s in [s for s in self.pending if s >= self.hi]:
                del self.pending[s]

    def reset(self, now: float) -> None:
        """A peer that is not probed: assume the link MTU again (the kernel says so if the path is still small)."""
        if self.mtu != self.ceiling:
            self._set(self.ceiling, "link")
        self._end(now)

    # ---- the search ---------------------------------------------------------------------------------------------

    def _spread(self) -> set[int]:
        lo, top = self.lo, self.hi - 1
        span = top - lo
        if span <= 0:
            return set()
        n = PMTU_PROBES_PER_STEP
        return {lo + -(-span * i // n) for i in range(1, n + 1)} - {lo}

    def _send(self, sizes: set[int], now: float, out: list) -> None:
        for s in sorted(sizes):
            self.pending[s] = 1
            out.append(s)
        self.sent_at = now
        self.deadline = now + self.timeout()

    def start_round(self, now: float, out: list) -> None:
        """Begin a search; the sizes to probe now are appended to `out`."""
        self.rounds += 1
        self.lo, self.hi = self.floor, self.ceiling + 1
        self.pending = {}
        self.answered_any = False
        sizes = self._spread() | {self.floor}
        if self.floor < self.mtu <= self.ceiling:
            sizes.add(self.mtu)
        self._send(sizes, now, out)

    def answered(self, size: int, now: float, out: list) -> None:
        """A PROBE_REPLY for `size` arrived; sizes of the next step, if it starts now, go to `out`."""
        pending = self.pending
        if pending is None or size not in pending:
            return                                  # late, or of an earlier step: nothing new
        tries = pending.pop(size)
        if tries == 1:
            sample = now - self.sent_at
            self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample
        self.answered_any = True
        if size > self.lo:
            self.lo = size
            for s in [s for s in pending if s <= size]:
                del pending[s]
        if not pending:
            self._step_done(now, out)

    def expired(self, now: float, out: list) -> None:
        """The step's timeout passed: resend what is unanswered, or count it as too big after the last try."""
        pending = self.pending
        if pending is None:
            return
        for s in [s for s, tries in pending.items() if tries >= PMTU_PROBE_TRIES]:
            del pending[s]
            if s < self.hi:
                self.hi = s
        for s in [s for s in pending if s >= self.hi]:
            del pending[s]
        if self.answered_any and self.mtu >= self.hi:
            self._set(self.lo, "probe")             # black hole: the estimate itself does not get through
        if pending:
            for s in sorted(pending):
                pending[s] += 1
                out.append(s)
            self.sent_at = now
            self.deadline = now + self.timeout()
        else:
            self._step_done(now, out)

    def _step_done(self, now: float, out: list) -> None:
        if not self.answered_any:
            self.unanswered_rounds += 1             # not even the floor: peer gone or not answering probes
            self._end(now)
            return
        self.unanswered_rounds = 0
        if self.hi - self.lo <= 1:
            self._set(self.lo, "probe")
            self._end(now)
            return
        self._send(self._spread(), now, out)

    def _end(self, now: float) -> None:
        self.pending = None
        self.deadline = None
        self.next_round = now + self.interval if self.interval else None

    def next_event(self) -> float | None:
        return self.deadline if self.pending is not None else self.next_round


# ---------------------------------------------------------------------------------------------------------------
# ICMP "too big" and IPv4 fragmentation (what a router does with a packet that does not fit the next link)
# ---------------------------------------------------------------------------------------------------------------

_ICMP_ERROR_TYPES_V4 = frozenset((3, 4, 5, 11, 12))


def icmp_too_big(pkt: bytes, mtu: int) -> bytes | None:
    """An ICMP error telling the sender of `pkt` that the next link carries at most `mtu` bytes:
    IPv4 type 3 code 4 "fragmentation needed" with the next-hop MTU (RFC 1191), IPv6 type 2 "packet too big"
    (RFC 4443), quoting as much of `pkt` as the minimum MTU allows. Its source is `pkt`'s destination (the far
    end of the tunnel, routed through the interface, so reverse-path filters accept it; the interface's own
    address would be dropped as a martian) and its destination is `pkt`'s source. None when no error may be
    sent: for an ICMP error, a non-first IPv4 fragment, or a multicast/unspecified/loopback source."""
    v = pkt[0] >> 4 if pkt else 0
    if v == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 15) * 4
        if pkt[9] == 1 and len(pkt) > ihl and pkt[ihl] in _ICMP_ERROR_TYPES_V4:
            return None
        if ((pkt[6] & 0x1F) << 8) | pkt[7]:
            return None
        src, dst = pkt[12:16], pkt[16:20]
        a = ipaddress.IPv4Address(src)
        if a.is_multicast or a.is_unspecified or a.is_loopback or src == b"\xff\xff\xff\xff":
            return None
        quote = pkt[:548]
        body = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quote
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        total = 20 + len(body)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, total, 0, 0, 64, 1, 0, dst, src)
        hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
        return hdr + body
    if v == 6 and len(pkt) >= 40:
        if pkt[6] == 58 and len(pkt) > 40 and pkt[40] < 128:
            return None
        src, dst = pkt[8:24], pkt[24:40]
        a = ipaddress.IPv6Address(src)
        if a.is_multicast or a.is_unspecified or a.is_loopback:
            return None
        quote = pkt[:1280 - 48]
        body = struct.pack("!BBHI", 2, 0, 0, mtu) + quote
        pseudo = dst + src + struct.pack("!II", len(body), 58)
        body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
        hdr = struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 64, dst, src)
        return hdr + body
    return None


def fragment_ipv4(pkt: bytes, mtu: int) -> list[bytes]:
    """Cut an IPv4 packet without DF into fragments of at most `mtu` bytes (RFC 791); [] if it cannot be."""
    ihl = (pkt[0] & 15) * 4
    total = (pkt[2] << 8) | pkt[3]
    if ihl < 20 or total > len(pkt) or total <= ihl:
        return []
    step = (mtu - ihl) & ~7
    if step < 8:
        return []
    flags_off = (pkt[6] << 8) | pkt[7]
    base_off = flags_off & 0x1FFF
    more = flags_off & 0x2000
    payload = pkt[ihl:total]
    out = []
    for start in range(0, len(payload), step):
        chunk = payload[start:start + step]
        last = start + step >= len(payload)
        fo = (base_off + start // 8) | (more if last else 0x2000)
        hdr = bytearray(pkt[:ihl])
        struct.pack_into("!H", hdr, 2, ihl + len(chunk))
        struct.pack_into("!H", hdr, 6, fo)
        struct.pack_into("!H", hdr, 10, 0)
        struct.pack_into("!H", hdr, 10, checksum(hdr))
        out.append(bytes(hdr) + chunk)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The extension: the device's side
# ---------------------------------------------------------------------------------------------------------------

class PathMtuExtension(Extension):
    """Control channel and path MTU, a plug-in of the device (ext/base.py): its per-peer state is peer.pmtu
    (PathMTU), peer.t_pmtu (its deadline), peer.wgpy and peer.hellos_sent; it sets peer.mtu, the plaintext limit
    the data path applies.

    Settings (the I/O layer sets them):
        control_enabled speak the control channel (HELLO, answer probes); off by default so the bare core
                        behaves byte for byte like plain WireGuard; the daemon turns it on
        pmtu_auto       True in the automatic MTU mode: probe wgpy peers, limit each peer to its usable MTU and
                        answer larger packets as a router would. False (an explicit MTU): the path MTU is only
                        learned from the kernel and reported; packets are limited by the interface MTU alone.
        pmtu_interval   seconds between re-probe rounds (0: only the first round after a HELLO)
        link_mtu        callable(endpoint) -> MTU of the local link toward it, or None
    Outputs (Device.events, protocol/events.py):
        TunPacket       an ICMP error for the TUN, appended by the data path
        PATH_MTU_CHANGED  some peer's estimate changed (the runtime recomputes the interface MTU)
    """

    name = "pmtu"

    def __init__(self, dev) -> None:
        self.dev = dev
        self.control_enabled = False
        self.pmtu_auto = False
        self.pmtu_interval = PMTU_PROBE_INTERVAL
        self.link_mtu = lambda endpoint: None
        self._icmp_tokens = float(ICMP_TOO_BIG_BURST)
        self._icmp_time = 0.0

    # ---- MTU bookkeeping ----------------------------------------------------------------------------------------

    def limit(self, peer) -> int:
        """The plaintext limit for `peer`: the interface MTU, or less when its path is smaller (automatic mode)."""
        return self._peer_limit(peer)

    def _peer_limit(self, peer) -> int:
        m = self.dev._mtu
        st = peer.pmtu
        if self.pmtu_auto and st is not None:
            u = st.mtu - st.overhead
            if u < m:
                m = u
        return m

    def set_pmtu_auto(self, auto: bool) -> None:
        self.pmtu_auto = auto
        self.dev.mtu = self.dev.mtu               # every peer's limit follows

    def _pmtu_note(self, peer) -> None:
        st = peer.pmtu
        if st is not None and st.changed:
            st.changed = False
            peer.mtu = self._peer_limit(peer)
            if PATH_MTU_CHANGED not in self.dev.events:
                self.dev.events.append(PATH_MTU_CHANGED)

    def smallest_usable_mtu(self) -> int | None:
        """min over peers with a UDP path of (path MTU - overhead): what the automatic interface MTU follows."""
        best = None
        for peer in self.dev.peers.values():
            st = peer.pmtu
            if st is not None and type(peer.endpoint) is tuple:
                u = st.mtu - st.overhead
                if best is None or u < best:
                    best = u
        return best

    def _pmtu_ensure(self, peer, now: float) -> "PathMTU | None":
        ep = peer.endpoint
        if type(ep) is not tuple:
            return None
        st = peer.pmtu
        if st is None or st.endpoint[0] != ep[0] or len(st.endpoint) != len(ep):
            st = PathMTU(ep, self.link_mtu(ep), now, self.pmtu_interval)
            peer.pmtu = st
            self._pmtu_note(peer)
            self._pmtu_schedule(peer)
        return st

    def _pmtu_schedule(self, peer) -> None:
        st = peer.pmtu
        t = st.next_event() if st is not None else None
        peer.t_pmtu = t
        if t is not None:
            self.dev.schedule(peer, t)

    def _pmtu_probing(self, peer) -> bool:
        return (self.pmtu_auto and self.control_enabled and bool(peer.wgpy & control.EXT_PMTU)
                and type(peer.endpoint) is tuple)

    # ---- hooks called by the device ----------------------------------------------------------------------------

    def deadline(self, peer) -> float | None:
        return peer.t_pmtu

    def timer(self, peer, now: float, out: list) -> None:
        peer.t_pmtu = None
        self.pmtu_timer(peer, now, out)

    def handshake_complete(self, peer, now: float, out: list) -> None:
        """A handshake with `peer` completed: path state for its endpoint, and a HELLO unless it never answers."""
        st = self._pmtu_ensure(peer, now)
        if st is not None and st.due and not st.searching:
            st.due = False
            st.next_round = now
            self._pmtu_schedule(peer)
        if self.control_enabled and not peer.wgpy and peer.hellos_sent < PMTU_HELLO_ATTEMPTS:
            if self._send_control(peer, control.hello(True), now, out):
                peer.hellos_sent += 1

    def pmtu_timer(self, peer, now: float, out: list) -> None:
        """peer.t_pmtu expired: the next probe step, a retry, a new round, or (not probed) the periodic reset."""
        st = self._pmtu_ensure(peer, now)
        if st is None:
            return
        sizes: list[int] = []
        if st.searching:
            if st.deadline is not None and now >= st.deadline:
                st.expired(now, sizes)
        elif st.next_round is not None and now >= st.next_round:
            kp = peer.current
            if self._pmtu_probing(peer) and (kp is None or now - kp.created >= REJECT_AFTER_TIME):
                st.next_round = None                # no session to probe with: right after the next handshake
                st.due = True
            elif self._pmtu_probing(peer):
                link = self.link_mtu(st.endpoint)
                if link:
                    st.ceiling = max(link, st.floor)
                    if st.mtu > st.ceiling:
                        st._set(st.ceiling, "link")
                st.start_round(now, sizes)
            else:
                st.reset(now)
        self._send_probes(peer, st, sizes, now, out)
        self._pmtu_note(peer)
        self._pmtu_schedule(peer)

    def path_mtu_learned(self, host: str, port: int, mtu: int, now: float) -> int:
        """The kernel reported `mtu` for datagrams to host:port (port 0: any port). Returns how many peers."""
        n = 0
        for peer in self.dev.peers.values():
            ep = peer.endpoint
            if type(ep) is tuple and ep[0] == host and (not port or ep[1] == port):
                st = self._pmtu_ensure(peer, now)
                if st is not None:
                    st.kernel(mtu)
                    self._pmtu_note(peer)
                    self._pmtu_schedule(peer)
                    n += 1
        return n

    def receive_control(self, peer, msg: bytes, received: int, now: float, out: list) -> None:
        """An authenticated control message from `peer` (`received`: its plaintext length)."""
        if not self.control_enabled:
            self.dev.drops["control_disabled"] += 1
            return
        parsed = control.parse(msg)
        if parsed is None:
            self.dev.drops["control_malformed"] += 1
            return
        kind = parsed[0]
        if kind == control.PROBE:
            _, pid, size = parsed
            self._send_control(peer, control.probe_reply(pid, size, received), now, out)
        elif kind == control.PROBE_REPLY:
            st = peer.pmtu
            size = st.ids.pop(parsed[1], None) if st is not None else None
            if size is None:
                self.dev.drops["control_stale_reply"] += 1
                return
            sizes: list[int] = []
            st.answered(size, now, sizes)
            self._send_probes(peer, st, sizes, now, out)
            self._pmtu_note(peer)
            self._pmtu_schedule(peer)
        elif kind == control.HELLO:
            _, _version, flags, ext = parsed
            known = peer.wgpy
            peer.wgpy = ext | 0x80000000
            if flags & control.FLAG_REPLY_WANTED:
                self._send_control(peer, control.hello(False), now, out)
            if not known and self._pmtu_probing(peer):
                st = self._pmtu_ensure(peer, now)
                if st is not None and not st.searching:
                    st.next_round = now             # first round at once
                    self._pmtu_schedule(peer)
        else:
            self.dev.drops["control_unknown"] += 1

    # ---- sending ---------------------------------------------------------------------------------------------

    def _send_probes(self, peer, st: PathMTU, sizes: list[int], now: float, out: list) -> None:
        ids = st.ids
        pending = st.pending or {}
        for pid in [pid for pid, s in ids.items() if s not in pending]:
            del ids[pid]                            # bounded: only the sizes of the current step are awaited
        if not sizes:
            return
        ov = st.overhead + (len(control.L2_CONTROL_HEADER) if self.dev.l2 else 0)
        for size in sizes:
            st.seq = pid = (st.seq + 1) & 0xFFFFFFFF
            ids[pid] = size
            self._send_control(peer, control.probe(pid, size, size - ov), now, out, probe=True)

    def _send_control(self, peer, msg: bytes, now: float, out: list, probe: bool = False) -> bool:
        """Encrypt one control message with the current session (no padding, no staging, no handshake)."""
        kp = peer.current
        ep = peer.endpoint
        if (kp is None or ep is None or now - kp.created >= REJECT_AFTER_TIME
                or kp.send_counter >= REJECT_AFTER_MESSAGES - 1):
            return False
        pt = control.L2_CONTROL_HEADER + msg if self.dev.l2 else msg
        m = seal(kp, pt)
        out.append((m, ep))
        peer.tx_bytes += len(m)
        if probe:
            self.dev.timers.traversal(peer, now)            # a probe may be lost: it does not count as sent
        else:
            self.dev.timers.authenticated_sent(peer, now)
        return True

    # ---- packets too big for their peer ------------------------------------------------------------------------

    def packets_too_big(self, peer, pkts: list[bytes], limit: int, now: float, out: list) -> None:
        """Called by the data path, after its batch, for packets above `peer.mtu` (`limit`).

        Automatic MTU, L3: a router's answer: ICMP too-big into the TUN (rate-limited), or for IPv4 without DF,
        fragments. L2: dropped and counted, as a switch drops an oversized frame. Explicit MTU: sent as they
        are, unpadded (the interface MTU is the user's choice; the kernel fragments the outer packet)."""
        drops = self.dev.drops
        if not self.pmtu_auto:
            self._send_unpadded(peer, pkts, now, out)
            return
        if self.dev.l2:
            drops["l2_frame_too_big"] += len(pkts)
            return
        frags_all: list[bytes] = []
        for pkt in pkts:
            v = pkt[0] >> 4
            if v == 4 and len(pkt) >= 20 and not pkt[6] & 0x40:
                frags = fragment_ipv4(pkt, limit)
                if frags:
                    drops["too_big_fragmented"] += 1
                    frags_all.extend(frags)
                else:
                    drops["too_big_dropped"] += 1
                continue
            if v == 6 and limit < PMTU_FLOOR_V6:
                drops["too_big_dropped"] += 1       # IPv6 cannot be told less than 1280 (docs/pmtu.md)
                continue
            elapsed = now - self._icmp_time
            self._icmp_time = now
            tokens = min(self._icmp_tokens + elapsed * ICMP_TOO_BIG_PER_SECOND, ICMP_TOO_BIG_BURST)
            if tokens < 1:
                self._icmp_tokens = tokens
                drops["too_big_icmp_ratelimited"] += 1
                continue
            self._icmp_tokens = tokens - 1
            reply = icmp_too_big(pkt, limit)
            if reply is None:
                drops["too_big_dropped"] += 1
                continue
            drops["too_big_icmp_sent"] += 1
            self.dev.events.append(TunPacket(reply))
        if frags_all:
            self.dev._send_to_peer(peer, frags_all, now, out)

    def _send_unpadded(self, peer, pkts: list[bytes], now: float, out: list) -> None:
        kp = peer.current
        ep = peer.endpoint
        for pkt in pkts:
            m = seal(kp, pkt)
            out.append((m, ep))
            peer.tx_bytes += len(m)
