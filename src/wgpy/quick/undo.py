"""UndoStack: the record of what `wgpy up` changed, as the undo of each step, for an exact teardown.

Rules of this file:
- A step pushes its undo the moment there is something to undo: before the call that may fail half way when
  the undo copes with a half-done step (closing a half-opened interface, deleting a table that may not exist),
  right after the call otherwise. So whatever fails, the stack holds exactly the undos of what was done.
- unwind() pops and runs the undos newest first, every one of them whatever the others do: an undo that raises
  an Exception, or returns messages, adds to the returned list of problems and the next undo still runs.
- The stack is empty afterwards: a second unwind() does nothing.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

Undo = Callable[[], Optional[Iterable[str]]]


class UndoStack:
    def __init__(self) -> None:
        self._undos: list[tuple[str, Undo]] = []

    def push(self, what: str, undo: Undo) -> None:
        """Record `undo` (returning None or problem messages) for the step named `what`."""
        self._undos.append((what, undo))

    def __len__(self) -> int:
        return len(self._undos)

    def names(self) -> list[str]:
        """The steps recorded, oldest first."""
        return [what for what, _ in self._undos]

    def unwind(self) -> list[str]:
        """Run every undo, newest first; returns the problems, in the order they happened."""
        problems: list[str] = []
        while self._undos:
            what, undo = self._undos.pop()
            try:
                reported = undo()
            except Exception as e:
                problems.append(f"undoing {what}: {e}")
                continue
            if reported:
                problems.extend(reported)
        return problems
