"""wgpy: a userspace VPN for Linux that speaks the WireGuard protocol."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("wgpy")
except _metadata.PackageNotFoundError:   # run from a source tree that was never installed
    __version__ = "0+unknown"
