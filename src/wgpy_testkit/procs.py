"""Commands and processes for the namespace tests and the benchmark: always bounded, never a hung pipe.

`run` runs one command (inside a network namespace unless `ns` is None) with a hard timeout and returns its text
output; `wait_for` polls a condition with a deadline; `Proc` is a background process whose output goes to files
(see `Lab.popen`).  Failures raise `CommandError` / `WaitTimeout`, both AssertionErrors, with the command line
and the tail of its output.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence


# --------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------

class CommandError(AssertionError):
    """A command exited non-zero (or timed out) where success was required."""


def ns_exec(ns: str | None, *cmd: Any) -> list[str]:
    argv = [str(c) for c in cmd]
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def describe_command(argv: Sequence[str], rc: Any, out: str, err: str) -> str:
    return (f"command {shlex.join(argv)} -> {rc}\n"
            f"--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}")


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(ns: str | None, *cmd: Any, timeout: float = 30.0, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command (inside namespace `ns` unless it is None) with a hard timeout; return text output.

    Output goes through temporary files rather than pipes, so a command that leaves a daemon behind (which may
    keep inherited descriptors open) cannot make us wait for an EOF that never comes.
    """
    argv = ns_exec(ns, *cmd)
    full_env = {**os.environ, **env} if env else None
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=out_f, stderr=err_f, env=full_env, start_new_session=True)
        timed_out = False
        try:
            if input is not None:
                proc.stdin.write(input.encode())
                proc.stdin.close()
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc)
            rc = proc.wait()
        except BaseException:
            kill_group(proc)
            proc.wait()
            raise
        out_f.seek(0)
        err_f.seek(0)
        out = out_f.read().decode(errors="replace")
        err = err_f.read().decode(errors="replace")
    if timed_out:
        raise CommandError(describe_command(argv, f"timed out after {timeout}s", out, err))
    result = subprocess.CompletedProcess(argv, rc, out, err)
    if check and rc != 0:
        raise CommandError(describe_command(argv, rc, out, err))
    return result


class WaitTimeout(AssertionError):
    pass


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1,
             what: str | None = None) -> Any:
    """Poll `predicate` until it returns something truthy (which is returned); fail after `timeout` seconds.

    Exceptions raised by the predicate count as "not yet"; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            last_value = predicate()
            if last_value:
                return last_value
            last_exc = None
        except (Exception, AssertionError) as exc:  # noqa: B014 - AssertionError is an Exception, kept explicit
            last_exc = exc
        if time.monotonic() >= deadline:
            desc = what or getattr(predicate, "__name__", "condition")
            detail = f"; last error: {last_exc!r}" if last_exc else f"; last value: {last_value!r}"
            raise WaitTimeout(f"timed out after {timeout}s waiting for {desc}{detail}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # state is the field after the parenthesised command name
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")




def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (Uid, Gid, CapEff, CapPrm, CapBnd, CapAmb, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------------------------
# Tracked processes
# --------------------------------------------------------------------------------------------------------------

class Proc:
    """A background process started by the lab; stdout/stderr go to files next to the test's tmp_path."""

    def __init__(self, name: str, argv: list[str], popen: subprocess.Popen, out: Path, err: Path) -> None:
        self.name, self.argv, self.popen, self.out_path, self.err_path = name, argv, popen, out, err

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandError(describe_command(self.argv, f"still running after {timeout}s", self.stdout(),
                                         self.stderr())) from None

    def signal(self, sig: int) -> None:
        if self.alive():
            kill_group(self.popen, sig)

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM the process group, SIGKILL after `grace` seconds; always reaps."""
        if self.alive():
            kill_group(self.popen, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                kill_group(self.popen, signal.SIGKILL)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def describe(self) -> str:
        return describe_command(self.argv, self.popen.poll(), self.stdout(), self.stderr())


