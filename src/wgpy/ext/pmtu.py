"""Path MTU per peer, the extension (sans-IO, a plug-in of the device: ext/base.py): the control channel (HELLO,
PROBE, PROBE_REPLY, see control.py), probe timers on the peer's t_pmtu deadline, the per-peer plaintext limit
`peer.mtu` the data path applies, and what is done with a packet above it (L3: ICMP into the TUN or, for IPv4
without DF, fragmentation as a router does, ext/icmp.py; L2: dropped and counted, as a switch drops an oversized
frame). The estimate and its search are ext/pmtu_search.py; docs/pmtu.md has the whole picture.
"""

from __future__ import annotations

from ..constants import (
    ICMP_TOO_BIG_BURST, ICMP_TOO_BIG_PER_SECOND, PMTU_FLOOR_V6, PMTU_HELLO_ATTEMPTS, PMTU_PROBE_INTERVAL,
    REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME,
)
from ..protocol.events import PATH_MTU_CHANGED, Fragmentable, TunPacket
from ..protocol.transport import seal
from . import control
from .base import Extension
from .icmp import fragment_ipv4, icmp_too_big
from .pmtu_search import PathMTU, overhead

__all__ = ["PathMtuExtension", "PathMTU", "overhead", "icmp_too_big", "fragment_ipv4"]


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
        Fragmentable    datagrams to send with outer fragmentation allowed (IPv6 packets above a peer's limit
                        below 1280, which IPv6 cannot be told about)
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
        if st is not None and st.hint_kept is not None:
            self.dev.drops["icmp_refuted" if st.hint_kept else "icmp_confirmed"] += 1
            st.hint_kept = None

    def smallest_usable_mtu(self) -> int | None:
        """min over peers with a UDP path of (path MTU - overhead)."""
        usable = self._usable()
        return min(usable) if usable else None

    def interface_usable_mtu(self) -> int | None:
        """What the automatic interface MTU follows (docs/pmtu.md): in L3 the upper median of the peers' usable
        MTUs, the largest that at least half of them carry, so that no minority of peers (one on a bad path, or
        lying to our probes) drags everyone's MTU down; the per-peer limits and the router's answers above them
        (ICMP, fragments) keep the smaller peers working. In L2 the minimum: a switch cannot tell a sender that a
        frame was too big, so the segment has the MTU of its smallest port."""
        usable = self._usable()
        if not usable:
            return None
        if self.dev.l2:
            return min(usable)
        usable.sort()
        return usable[len(usable) // 2]

    def _usable(self) -> list[int]:
        return [peer.pmtu.mtu - peer.pmtu.overhead for peer in self.dev.peers.values()
                if peer.pmtu is not None and isinstance(peer.endpoint, tuple)]

    def _pmtu_ensure(self, peer, now: float) -> "PathMTU | None":
        ep = peer.endpoint
        if not isinstance(ep, tuple):
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
                and isinstance(peer.endpoint, tuple))

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

    def path_mtu_learned(self, host: str, port: int, mtu: int, now: float, quote: bytes = b"",
                         local: bool = False) -> int:
        """The kernel reported `mtu` for a datagram to host:port. Returns how many peers took it.

        `local`: a local EMSGSIZE (our own datagram was above the local device's MTU), true by construction;
        port 0 then means any port at that address (an unconnected socket's local error has none).
        Otherwise an ICMP from the network, which anyone who knows the address and port can forge. It is about a
        peer only if it names that peer's exact endpoint (port 0 matches nothing), only if a datagram larger than
        `mtu` went to that peer in the last few seconds (PathMTU.sent_above), and, when the router quoted the
        WireGuard header (`quote`: the start of the quoted UDP payload, as the error queue gives it), only if it
        is a transport message of one of the peer's sessions with a counter already sent. A peer that is probed
        (a wgpy peer, the automatic MTU) takes it as a hint: a probe round at once, probing that size and the
        old estimate as well; only the probes' answers change the estimate, unless the quote carried our header
        (then it is lowered at once and the round restores the old size if that is answered); during a search
        only such a quote counts (it narrows the search). Any other peer's estimate is lowered at once, as
        before (docs/pmtu.md)."""
        drops = self.dev.drops
        if not port and not local:
            drops["icmp_unmatched"] += 1
            return 0
        n = 0
        noop = False
        for peer in self.dev.peers.values():
            ep = peer.endpoint
            if not isinstance(ep, tuple) or ep[0] != host or (port and ep[1] != port):
                continue
            if local:
                st = self._pmtu_ensure(peer, now)
                if st is None:
                    continue
                st.kernel(mtu)
            else:
                st = peer.pmtu
                if st is None or st.endpoint[0] != host:
                    continue
                if min(max(mtu, st.floor), st.ceiling) >= st.mtu:
                    noop = True                 # never raises: nothing to do
                    continue
                if not self._icmp_about_ours(peer, st, mtu, quote, now):
                    continue
                if self._pmtu_probing(peer):
                    seen = len(quote) >= 16             # it quoted our header: its sender saw the datagram
                    if st.searching:
                        if not seen:
                            noop = True                 # the running search answers the same question
                            continue
                        st.kernel(mtu)                  # narrows it
                    elif st.icmp_hint(mtu, now, lower=seen):
                        drops["icmp_probed"] += 1
                else:
                    st.kernel(mtu)
            self._pmtu_note(peer)
            self._pmtu_schedule(peer)
            n += 1
        if not n and not local and not noop:
            drops["icmp_unmatched"] += 1
        return n

    @staticmethod
    def _icmp_about_ours(peer, st: PathMTU, mtu: int, quote: bytes, now: float) -> bool:
        """Could an ICMP reporting `mtu` and quoting `quote` be about a datagram we sent to `peer`?"""
        if not st.sent_above(mtu, now) and not (st.pending and max(st.pending) > mtu):
            return False                        # nothing that large went there recently (data, or the probes)
        if not quote:
            return True                         # only the UDP header quoted (RFC 792's minimum): nothing more
        head = quote[:8]
        for kp in (peer.current, peer.previous, peer.next):
            if kp is not None and kp.header_prefix.startswith(head):
                return len(quote) < 16 or int.from_bytes(quote[8:16], "little") < kp.send_counter
        return False

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
        fragments. IPv6 when the limit is below 1280 (IPv6 cannot be told less): sent as it is, with outer
        fragmentation allowed (a Fragmentable event for the I/O layer), as kernel WireGuard and wireguard-go
        send every datagram. L2: dropped and counted, as a switch drops an oversized frame. Explicit MTU: sent
        as they are, unpadded (the interface MTU is the user's choice; the kernel fragments the outer packet)."""
        drops = self.dev.drops
        if not self.pmtu_auto:
            self._send_unpadded(peer, pkts, now, out)
            return
        if self.dev.l2:
            drops["l2_frame_too_big"] += len(pkts)
            return
        frags_all: list[bytes] = []
        outer: list[bytes] = []
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
                outer.append(pkt)                   # IPv6 cannot be told less than 1280 (docs/pmtu.md)
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
        if outer:
            self._send_fragmentable(peer, outer)

    def _send_fragmentable(self, peer, pkts: list[bytes]) -> None:
        """Seal `pkts` (unpadded) for a Fragmentable event: the I/O layer sends them with outer fragmentation
        allowed, in fragments of at most the peer's path MTU."""
        kp = peer.current
        ep = peer.endpoint
        st = peer.pmtu
        datagrams = []
        for pkt in pkts:
            m = seal(kp, pkt)
            datagrams.append((m, ep))
            peer.tx_bytes += len(m)
        self.dev.drops["too_big_outer_fragmented"] += len(pkts)
        self.dev.events.append(Fragmentable(datagrams, st.mtu if st is not None else 0))

    def _send_unpadded(self, peer, pkts: list[bytes], now: float, out: list) -> None:
        kp = peer.current
        ep = peer.endpoint
        for pkt in pkts:
            m = seal(kp, pkt)
            out.append((m, ep))
            peer.tx_bytes += len(m)
