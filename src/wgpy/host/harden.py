"""Process hardening for the daemon, which holds private and preshared keys in memory.

`no_core_dumps()` makes the process non-dumpable (prctl PR_SET_DUMPABLE 0: no core file, and /proc/PID/mem,
environ, ... are closed to everyone without CAP_SYS_PTRACE, even the same user) and sets RLIMIT_CORE to 0, so a
crash can never write key material to disk. It is called before any key is read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource

PR_SET_DUMPABLE = 4   # include/uapi/linux/prctl.h
PR_GET_DUMPABLE = 3


def _prctl():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def no_core_dumps() -> None:
    """Raises OSError if the kernel refuses (it never should)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _prctl()(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_DUMPABLE, 0) failed")


def is_dumpable() -> bool:
    return _prctl()(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0
