"""The error `wgpy up` reports, and the config's PreUp/PostUp/PreDown/PostDown shell commands (`%i` = name)."""

from __future__ import annotations

import subprocess
import sys

from ..settings.values import redact


class UpError(Exception):
    pass


def run_hook(cmds: list[str], name: str, what: str) -> None:
    """Run each command with bash, echoing it as wg-quick does (anything in it that could be a key written
    as [not shown]); raises UpError at the first that fails."""
    for cmd in cmds:
        cmd = cmd.replace("%i", name)
        print(f"[#] {redact(cmd)}", file=sys.stderr)    # a key in a command is not echoed (the daemon's log)
        r = subprocess.run(["bash", "-c", cmd])
        if r.returncode != 0:
            raise UpError(f"{what} command failed with exit code {r.returncode}: {redact(cmd)}")


def hook_errors(cmds: list[str], name: str, what: str) -> list[str]:
    """run_hook for teardown: a failing command is reported (as the returned message), not raised."""
    try:
        run_hook(cmds, name, what)
    except UpError as e:
        return [str(e)]
    return []
