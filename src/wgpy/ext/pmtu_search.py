"""The path MTU estimate toward one peer and its probe search (sans-IO): what the kernel learns (ICMP), active
probes between wgpy peers (black holes), re-probing upward.

Terms (docs/pmtu.md has the whole picture):
    path MTU   the largest outer IP packet that reaches the peer unfragmented (PathMTU.mtu)
    overhead   outer IP header (20 IPv4 / 40 IPv6) + UDP 8 + WireGuard 32 (16 header, 16 tag)
    usable     path MTU - overhead: the largest plaintext (IP packet, or Ethernet frame in L2) for that peer

PathMTU (one per peer with a UDP endpoint) holds the estimate and the search:
    start      estimate = the local link MTU toward the endpoint (as the kernel's own PMTU discovery starts);
               never below the floor: 576 for an IPv4 underlay, 1280 for IPv6
    ICMP       the kernel's "fragmentation needed"/"packet too big" (error queue, io/pmtu.py), once the extension
               matched it to a datagram really sent (sent_above: the largest datagrams of the last few seconds),
               lowers the estimate at once to the MTU it carries (clamped to [floor, link MTU]; kernel()) for a
               peer that is not probed; it never raises it. Between wgpy peers it is only a hint (icmp_hint()): a round
               starts at once, probing the ICMP's size and the old estimate too, and the estimate changes only
               as the probes say (the old size answered: kept; unanswered after two tries while the ICMP's size
               got through: lowered then, without waiting for the third). An ICMP whose quote carries our own
               WireGuard header (its sender saw the datagram: on the path) lowers the estimate at once as well,
               and the round restores the old size if that is answered; during a search it narrows the search
               (kernel())
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

Pure: numbers in, sizes to probe out (the extension, ext/pmtu.py, sends them).
"""

from __future__ import annotations

from ..constants import (
    IPV4_HEADER_LEN, IPV6_HEADER_LEN, PMTU_DEFAULT_LINK_MTU, PMTU_FLOOR_V4, PMTU_FLOOR_V6,
    PMTU_PROBE_TIMEOUT_INITIAL, PMTU_PROBE_TIMEOUT_MAX, PMTU_PROBE_TIMEOUT_MIN, PMTU_PROBE_TRIES,
    PMTU_ICMP_PROBE_GAP, PMTU_ICMP_RECENT, PMTU_PROBES_PER_STEP, UDP_HEADER_LEN, WIREGUARD_DATA_OVERHEAD,
)

__all__ = ["overhead", "PathMTU"]


def overhead(v6: bool) -> int:
    """Bytes a UDP-carried data message adds to its plaintext on the wire."""
    return (IPV6_HEADER_LEN if v6 else IPV4_HEADER_LEN) + UDP_HEADER_LEN + WIREGUARD_DATA_OVERHEAD


class PathMTU:
    """The path MTU estimate toward one UDP endpoint and its probe search (see the module docstring)."""

    __slots__ = ("endpoint", "v6", "floor", "ceiling", "mtu", "source", "changed", "lo", "hi", "pending",
                 "answered_any", "deadline", "next_round", "srtt", "sent_at", "rounds", "unanswered_rounds",
                 "ids", "seq", "interval", "due", "top", "top_prev", "top_at", "hint", "hint_before", "hint_at",
                 "hint_kept")

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
        # the largest plaintext (padded, within the limit) sent in the current and the previous PMTU_ICMP_RECENT
        # seconds: an ICMP about a datagram larger than this was not about one of ours (sent_above)
        self.top = self.top_prev = 0
        self.top_at = now
        self.hint = 0                                    # an ICMP's size, probed in the round it started
        self.hint_before = 0                             # the estimate when that round started
        self.hint_at = -PMTU_ICMP_PROBE_GAP              # when the last such round was asked for
        self.hint_kept: bool | None = None               # how that round ended (read and cleared by the extension)

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

    def note_sent(self, pkts: list, limit: int, now: float) -> None:
        """A batch of plaintexts went to this peer (the data path calls it once per batch): keep the largest."""
        age = now - self.top_at
        if self.top >= limit and age < PMTU_ICMP_RECENT:
            return                                  # the largest there can be is already recorded: bulk traffic
        top = max(map(len, pkts))
        top += -top & 15                            # the padding to 16 bytes, within the limit
        if top > limit:
            top = limit                             # larger ones were not sent as they are (ICMP, fragments)
        if age >= PMTU_ICMP_RECENT:
            self.top_prev = self.top if age < 2 * PMTU_ICMP_RECENT else 0
            self.top = 0
            self.top_at = now
        if top > self.top:
            self.top = top

    def sent_above(self, mtu: int, now: float) -> bool:
        """Was a datagram whose outer IP packet is larger than `mtu` sent within the last 2 x PMTU_ICMP_RECENT
        seconds? (What an ICMP reporting `mtu` must be about.)"""
        age = now - self.top_at
        best = self.top if age < 2 * PMTU_ICMP_RECENT else 0
        if age < PMTU_ICMP_RECENT and self.top_prev > best:
            best = self.top_prev
        return best > 0 and best + self.overhead > mtu

    def icmp_hint(self, mtu: int, now: float, lower: bool = False) -> bool:
        """A (matched) ICMP reported `mtu`, between wgpy peers, no search under way: ask for a round at once
        (next_round = now) that probes `mtu` and the current estimate besides the usual sizes. The estimate is
        left alone, unless `lower` (the ICMP quoted our own WireGuard header: its sender saw the datagram):
        then it takes `mtu` at once and the round restores the old size if that is answered. Returns whether a
        round was asked for: not when the ICMP is not lower than the estimate, or when such a round was asked
        for less than PMTU_ICMP_PROBE_GAP seconds ago."""
        mtu = min(max(mtu, self.floor), self.ceiling)
        if mtu >= self.mtu or self.pending is not None:
            return False
        before = self.mtu
        if lower:
            self._set(mtu, "icmp")
        if now - self.hint_at < PMTU_ICMP_PROBE_GAP:
            return False
        self.hint = mtu
        self.hint_before = before
        self.hint_at = now
        self.next_round = now
        return True

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
        if self.hint:
            sizes.add(self.hint)
            if self.floor < self.hint_before <= self.ceiling:
                sizes.add(self.hint_before)
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
            if self.hint_before and self.lo >= self.hint_before > self.mtu:
                self._set(self.lo, "probe")         # the size before the ICMP got through: restored at once
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
        if (self.hint and self.answered_any and self.lo >= self.hint and self.mtu > self.lo
                and pending.get(self.hint_before, 0) >= 2):
            self._set(self.lo, "icmp")              # the ICMP's size got through, the estimate did not, twice
            self.hint = 0
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
        if self.hint_before:
            self.hint_kept = self.mtu >= self.hint_before
        self.hint = self.hint_before = 0
        self.pending = None
        self.deadline = None
        self.next_round = now + self.interval if self.interval else None

    def next_event(self) -> float | None:
        return self.deadline if self.pending is not None else self.next_round
