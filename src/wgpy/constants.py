"""Protocol and implementation constants.

The first block is fixed by the WireGuard whitepaper (section 6 "Timers & Stateless UX" and section 5.4 "Messages");
changing any of it breaks interoperability. The second block is this implementation's own choice.
"""

# ---------------------------------------------------------------------------------------------------------------
# Specification constants
# ---------------------------------------------------------------------------------------------------------------

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
KEEPALIVE_TIMEOUT = 10.0
COOKIE_REFRESH_TIME = 120.0
REKEY_TIMEOUT_JITTER_MAX = 1.0 / 3.0
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18

# message types (the 4-byte little-endian "type + 3 reserved zero bytes" word)
MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_TRANSPORT = 4

# wire sizes
KEY_LEN = 32
TAG_LEN = 16   # Poly1305 tag, the size of AEAD(k, n, ε, h)
MAC_LEN = 16
TIMESTAMP_LEN = 12
COOKIE_LEN = 16
COOKIE_NONCE_LEN = 24
MESSAGE_INITIATION_SIZE = 148
MESSAGE_RESPONSE_SIZE = 92
MESSAGE_COOKIE_REPLY_SIZE = 64
MESSAGE_TRANSPORT_HEADER_SIZE = 16
MESSAGE_TRANSPORT_MIN_SIZE = MESSAGE_TRANSPORT_HEADER_SIZE + TAG_LEN  # a keepalive
PADDING_MULTIPLE = 16

# ---------------------------------------------------------------------------------------------------------------
# Implementation constants
# ---------------------------------------------------------------------------------------------------------------

# Minimum time between two initiations accepted from one peer (wireguard-go: 50 per second).
HANDSHAKE_INITIATION_RATE = 1.0 / 50
# The device counts as "under load" (and demands cookies) when more than this many handshake messages
# arrived within one second; it stays under load for UNDER_LOAD_AFTER_TIME after the last such second.
UNDER_LOAD_HANDSHAKES_PER_SECOND = 256
UNDER_LOAD_AFTER_TIME = 1.0
# Per source address token bucket applied to handshake messages while under load.
RATELIMIT_PACKETS_PER_SECOND = 20
RATELIMIT_BURST = 5
RATELIMIT_MAX_ENTRIES = 8192
# Cookie replies per claimed source address (IPv4 address or IPv6 /64) while under load. A legitimate initiator
# needs one per REKEY_TIMEOUT; a flood from many addresses then costs a mac1 check per message, not an XChaCha20
# encryption and a send. The table has RATELIMIT_MAX_ENTRIES entries; when it is full of fresh sources (a flood
# from more addresses than that) the device answers every one, as WireGuard does, rather than lock newcomers out.
COOKIE_REPLIES_PER_SECOND = 5
COOKIE_REPLY_BURST = 5
# Packets queued for a peer while its handshake is under way (the oldest is dropped beyond this).
MAX_STAGED_PACKETS = 128
# Packets queued for all peers together while their handshakes are under way (new packets are dropped beyond
# this): with MAX_PEERS peers the per-peer bound alone would allow 128 * 2**20 packets.
MAX_STAGED_PACKETS_TOTAL = 8192
# Size of the anti-replay window, in messages (RFC 6479 style bitmap).
REPLAY_WINDOW = 8192 - 64
MAX_PEERS = 1 << 20
# Default tunnel MTU when nothing else is known (1500 - 80, as wg-quick).
DEFAULT_MTU = 1420
# A peer's handshake is reported as failing ("no answer to N handshake initiations", UAPI wgpy_last_error) once
# this many initiations went out without a completed handshake since: one is normal (every rekey and first
# handshake has one in flight for a round trip), two means a retransmission, REKEY_TIMEOUT without an answer.
UNANSWERED_INITIATIONS_REPORTED = 2

# L2 mode (Mode = tap): the learning switch's MAC table (routing/mactable.py).
# At most this many MAC addresses are known at once (local and behind peers together); a new address beyond it
# evicts the least recently used one (second-chance order), so a flood of invented source addresses costs a
# bounded amount of memory (about 250 bytes per entry: 2 MiB) and only ever evicts addresses that went quiet.
MAC_TABLE_SIZE = 8192
# An address not seen for this long is forgotten (frames to it are flooded again): the Linux bridge's default
# ageing time (bridge ... ageing_time 30000 centiseconds).
MAC_AGING_TIME = 300.0
# Storm control on a relay hub (Relay = on, protocol/switch.py): of the frames a peer sends that the hub floods
# (to its TAP and every other peer), at most this many per second and kind (broadcast, multicast, unknown unicast)
# are forwarded, with a burst of as many; the rest are dropped and counted (l2_storm_broadcast, ...). A flooded
# frame costs the hub one encryption per other peer: without a bound one spoke's broadcast storm starves them all.
L2_FLOOD_PER_SECOND = 1000.0
L2_FLOOD_BURST = 1000.0
# Ethernet header (destination MAC, source MAC, EtherType): the TAP's MTU is the tunnel MTU minus this.
ETHERNET_HEADER_LEN = 14

# --- path MTU (ext/pmtu.py, docs/pmtu.md) ------------------------------------------------------------------------
# Path MTU = the largest outer IP packet that crosses the path to a peer unfragmented (docs/pmtu.md).
# Never assumed below the minimum every IPv4 host must accept (RFC 791) / the IPv6 minimum link MTU (RFC 8200).
PMTU_FLOOR_V4 = 576
PMTU_FLOOR_V6 = 1280
# The local link MTU toward an endpoint when it cannot be found out (Ethernet's).
PMTU_DEFAULT_LINK_MTU = 1500
# Encapsulation overhead: outer IP header, UDP header, WireGuard data header (16) + Poly1305 tag (16).
# The TCP/TLS transports carry frames on a byte stream: no per-packet size limit, so they do not constrain the
# tunnel MTU; their per-packet overhead (outer IP + TCP header 20 + options + the 2-byte frame length, + TLS
# record overhead) is documented in docs/pmtu.md.
IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8
WIREGUARD_DATA_OVERHEAD = 32
# Re-probe every peer's path upward (and check it did not shrink) this often; config `MTUProbeInterval`.
PMTU_PROBE_INTERVAL = 300.0
# A probe size counts as lost (too big) after this many unanswered tries, each waiting the probe timeout.
PMTU_PROBE_TRIES = 3
# Sizes probed at once in one search step (the interval between known-good and known-bad is cut in as many).
PMTU_PROBES_PER_STEP = 5
# Probe timeout: 4 x the smoothed probe round-trip time, within these bounds; the first before any sample.
PMTU_PROBE_TIMEOUT_INITIAL = 1.0
PMTU_PROBE_TIMEOUT_MIN = 0.3
PMTU_PROBE_TIMEOUT_MAX = 3.0
# HELLOs sent to a peer that never answered one (a standard WireGuard peer drops them).
PMTU_HELLO_ATTEMPTS = 3
# ICMP "fragmentation needed" / "packet too big" written into the TUN: token bucket per device.
ICMP_TOO_BIG_PER_SECOND = 100
ICMP_TOO_BIG_BURST = 50
# An ICMP "too big" from the network is believed only about a datagram actually sent to that peer this recently
# (seconds; the record of the largest sends covers between one and two of these) and larger than the MTU it reports.
PMTU_ICMP_RECENT = 2.0
# Between wgpy peers such an ICMP only starts a probe round at once; at most one round per peer this often (seconds).
PMTU_ICMP_PROBE_GAP = 1.0
# --- TCP/TLS transports and the fallback ---
# TCP and TLS transports (io/stream.py) and the automatic fallback to them (ext/fallback.py); see
# docs/transports.md. On a stream each WireGuard message is one frame: a 2-byte big-endian length, then the message.
# The smallest valid frame is a keepalive (32 bytes). The largest is the largest UDP payload over IPv4
# (65535 - 20 - 8): a message that could not travel as one UDP datagram has no business on a stream either,
# since a peer may roam between the two at any moment. A shorter or longer length closes the connection.
STREAM_MIN_FRAME = 32
STREAM_MAX_FRAME = 65507
# Bytes waiting in user space for one connection's socket (on top of the kernel's bounded unsent queue,
# TCP_NOTSENT_LOWAT below). Beyond it new messages are dropped and counted, never queued: a tunnel over TCP must
# let the inner TCP see loss instead of an ever growing delay (TCP-over-TCP meltdown, docs/transports.md).
STREAM_SEND_BUFFER = 256 * 1024
STREAM_NOTSENT_LOWAT = 128 * 1024
# Accepted connections that have not yet carried an authenticated WireGuard message: at most this many at once,
# and at most PER_SOURCE from one source (an IPv4 address, an IPv6 /64); a newcomer beyond either limit evicts
# the oldest such connection (of its own source first), it is never refused: a flood of half-open connections
# then churns only its own slots, and a real client, which authenticates within a round trip or two, gets in.
# A connection must deliver its first complete frame (TLS handshake included) within FIRST_MESSAGE_TIMEOUT and
# authenticate within UNAUTHENTICATED_TIMEOUT, with at most UNAUTHENTICATED_FRAMES frames.
STREAM_MAX_UNAUTHENTICATED = 64
STREAM_UNAUTHENTICATED_PER_SOURCE = 8
STREAM_FIRST_MESSAGE_TIMEOUT = 3.0
STREAM_UNAUTHENTICATED_TIMEOUT = 10.0
STREAM_UNAUTHENTICATED_FRAMES = 16
# Outbound connections: TCP connect plus TLS handshake must finish within this time; after a failure or a drop
# the next attempt waits a random time between half and all of min(BACKOFF_MIN * 2**failures, BACKOFF_MAX).
STREAM_CONNECT_TIMEOUT = 10.0
STREAM_BACKOFF_MIN = 0.5
STREAM_BACKOFF_MAX = 30.0
# Dead connections: TCP keepalive probes after this much idle time (then every INTERVAL, COUNT of them), and
# TCP_USER_TIMEOUT for data the peer does not acknowledge.
STREAM_KEEPIDLE = 25
STREAM_KEEPINTVL = 5
STREAM_KEEPCNT = 4
STREAM_USER_TIMEOUT = 30.0
# Fallback (FallbackEndpoint): switch to the fallback when our handshake initiations over UDP got no answer for
# FALLBACK_AFTER seconds; while on it, send one initiation over UDP every FALLBACK_PROBE_INTERVAL seconds and
# move back when its response arrives over UDP. FALLBACK_PROBE_ANSWER seconds after a probe that got no answer,
# a keepalive over the stream pins the other side back to the stream (the probe may have reached it, moving its
# endpoint to UDP, while its answers cannot reach us over UDP).
FALLBACK_AFTER = 15.0
FALLBACK_PROBE_INTERVAL = 30.0
FALLBACK_PROBE_ANSWER = 3.0
# --- per-peer rate limits (RateLimit, protocol/shaper.py, ext/ratelimit.py) ---
# A token bucket per peer and direction, counting the tunnel's (inner) packet bytes. Its depth: RateLimitBurst, by
# default RATE_LIMIT_BURST_TIME of the rate and at least RATE_LIMIT_BURST_MIN (a TSO burst of the local stack is
# 64 KiB, so a small bucket only moves the wait into the queue). Packets over the limit wait in a FIFO of at most
# RATE_LIMIT_QUEUE_TIME of the rate (at least the burst, at most RATE_LIMIT_QUEUE_MAX bytes): that bounds the delay
# the limit adds and the memory a peer can hold; beyond it they are dropped and counted (tail drop: never
# reordered). A queue is let out when its head fits, no sooner than RATE_LIMIT_MIN_WAIT after it was last looked
# at, so a limited peer costs at most ~1000 wake-ups a second.
RATE_LIMIT_BURST_TIME = 0.01
RATE_LIMIT_BURST_MIN = 64 * 1024
RATE_LIMIT_QUEUE_TIME = 0.05
RATE_LIMIT_QUEUE_MAX = 4 * 1024 * 1024
RATE_LIMIT_MIN_WAIT = 0.001
# RateLimit's range, bits per second (8 kbit/s: 1000 bytes a second; 100 Gbit/s: beyond any path here)
RATE_LIMIT_MIN = 8_000
RATE_LIMIT_MAX = 100_000_000_000
# RateLimitBurst's range, bytes
RATE_LIMIT_BURST_RANGE = (1500, 64 * 1024 * 1024)
