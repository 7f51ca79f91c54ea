"""wgpy's extensions to WireGuard, as plug-ins of the core (protocol/): each keeps its own per-peer state and
is called through the small interface of ext/base.py, on the handshake and timer paths only.

    base.py      the Extension interface (hooks with the kernel's names) and how the device calls them
    control.py   the in-band control channel between wgpy peers (HELLO, PROBE, PROBE_REPLY): its wire format
    pmtu.py      path MTU discovery per peer, the per-peer plaintext limit, ICMP too-big answers (docs/pmtu.md)
    fallback.py  UDP -> TCP/TLS fallback per peer (docs/transports.md)
The stream transports themselves are streams/ (pure parts) and io/stream.py (sockets).
"""
