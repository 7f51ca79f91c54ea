"""SIGTERM, SIGINT and SIGHUP from the first moment of `wgpy up`: during setup they undo what was done, once the
interface runs they stop it (and its teardown undoes everything), during teardown they are ignored.

The handlers are installed before the config is read. During setup a signal is noted and acted on at the next
safe point: between two steps (Session.up calls check()), or at once while a step that can be cut short runs
(interruptible(): PreUp and PostUp commands, endpoint resolution), where the handler raises Interrupted and the
command's process is killed. Never in the middle of a step that changes the host (a rule added but not yet
recorded, an nft transaction): such a step completes and pushes its undo first. Interrupted is an UpError, so
`up` reports it like any failure and exits non-zero after the undo stack has run.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

from .hooks import UpError

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)   # SIGHUP: the terminal of `wgpy up` closed


class Interrupted(UpError):
    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} during up; what up had done is undone")
        self.signum = signum


class UpSignals:
    """The daemon's signal handling through its whole life (setup -> running -> teardown)."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.pending: int | None = None     # the first signal received
        self._interruptible = False
        self._iface = None

    def install(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame) -> None:
        if self.pending is None:
            self.pending = signum
        if self.phase == "running":
            self._iface.stop()
        elif self.phase == "setup" and self._interruptible:
            self._interruptible = False       # one raise; a second signal waits for the undo to finish
            raise Interrupted(signum)

    def check(self) -> None:
        """A safe point of setup: raise Interrupted if a signal came."""
        if self.phase == "setup" and self.pending is not None:
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A step that a signal may cut short at any moment (it changes nothing of the host's by itself)."""
        self.check()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
        self.check()

    def running(self, iface) -> None:
        """Setup is complete: from now on a signal stops the event loop (through its wake-up pipe)."""
        self._iface = iface
        signal.set_wakeup_fd(iface._wake_w, warn_on_full_buffer=False)
        self.phase = "running"

    def tearing_down(self) -> None:
        self.phase = "teardown"
