"""Which data path runs: the native batch loop (C extension modules, src/native/) or the pure-Python reference.

    _crypto   ChaCha20-Poly1305 keys, batch seal, batch open with the replay window (src/native/crypto.c)
    _offload  TSO super-packet split and TCP coalescing for the TUN (src/native/offload.c)

A module is used when it was built and imported; `WGPY_NATIVE=0` in the environment forces the pure-Python path
for every module (the differential tests and the fallback sample of the suite set it). The pure-Python code stays
the reference: the native functions must give identical output and identical drop counts
(tests/unit/test_native_*.py compare them on random batches).

Rules of this file: imported once, decides once; nothing on the per-packet path asks it again (callers bind the
chosen functions at import time).
"""

from __future__ import annotations

import importlib
import os

__all__ = ["ENABLED", "load", "status"]

ENABLED = os.environ.get("WGPY_NATIVE", "1") != "0"
_why: dict[str, str] = {}


def load(name: str):
    """The native module `wgpy.<name>`, or None (disabled by WGPY_NATIVE=0, or not built: the reason is kept)."""
    if not ENABLED:
        _why[name] = "disabled by WGPY_NATIVE=0"
        return None
    try:
        mod = importlib.import_module(f"wgpy.{name}")
    except ImportError as e:
        _why[name] = f"not built ({e})"
        return None
    _why[name] = "native"
    return mod


def status() -> dict[str, str]:
    """name -> "native" or why the pure-Python path runs, for every module asked for so far."""
    return dict(_why)
