"""Shorter protocol timers for wgpy daemons a test starts, and for them only (the peer, wireguard-go, keeps the
whitepaper's). `Lab.wgpy_env.update(short_timers(lab.tmp, rekey_after_time=20))`: every later `wgpy` command
of that lab, and so the daemon `wgpy up` starts, imports a sitecustomize that sets the constants before any
part of wgpy reads them. Nothing in wgpy itself knows about it: production code has no test knobs.
"""

from __future__ import annotations

import os
from pathlib import Path

_SITE = '''\
# written by wgpy_testkit.shorttimers: protocol constants for a test's wgpy daemon
import os as _os
for _name in ("REKEY_AFTER_TIME", "REJECT_AFTER_TIME", "KEEPALIVE_TIMEOUT"):
    _value = _os.environ.get("WGPY_TESTKIT_" + _name)
    if _value:
        import wgpy.constants as _c
        setattr(_c, _name, float(_value))
'''


def short_timers(tmp: Path, **constants: float) -> dict[str, str]:
    """The environment that gives wgpy these constants (keyword names in lower case: rekey_after_time=...)."""
    site = Path(tmp) / "shorttimers"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITE)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    for name, value in constants.items():
        key = name.upper()
        if key not in ("REKEY_AFTER_TIME", "REJECT_AFTER_TIME", "KEEPALIVE_TIMEOUT"):
            raise ValueError(f"no such timer: {name}")
        env[f"WGPY_TESTKIT_{key}"] = repr(float(value))
    return env
