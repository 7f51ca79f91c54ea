"""wgpy extension: WireGuard messages over TCP and TLS (docs/transports.md). The pure parts live here (framing,
endpoint URLs and records); the sockets, TLS and connection handling are io/stream.py."""
