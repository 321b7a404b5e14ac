"""The Train section's dataset check: ``python -m MaskMedCore validate-dataset DIR`` in the background.

``validate-dataset`` needs no torch. It prints one problem (or warning) per line and a summary line
last, and exits 0 (valid; warnings are listed), 1 (problems found) or 2 (not a dataset folder at all).
"""

from __future__ import annotations

import os
import sys

from MaskMedSlicerLib.process import MaskMedProcess, subprocess_env
from MaskMedSlicerLib.task_state import CANCELLED, DONE, FAILED, IDLE, RUNNING, TaskUpdate


def stdout_lines(events) -> list[str]:
    """The plain stdout lines among a process's events."""
    return [e.message for e in events if e.kind == "log" and e.data.get("stream") != "stderr"]


def describe_validation(return_code: int, lines: list[str], error_line: str) -> tuple[str, list[str]]:
    """(status line, problems) from validate-dataset's exit code and stdout lines; a valid dataset's
    warnings (e.g. mixed orientations) are listed as its problems."""
    lines = [line for line in lines if line.strip()]
    if return_code == 0:
        warnings = [line for line in lines[:-1] if line.startswith("warning:")]
        return (lines[-1] if lines else "The dataset is valid."), warnings
    if return_code == 1:
        problems = [line for line in lines[:-1] if not line.startswith("maskmed")]
        return (lines[-1] if lines else "Problems were found."), problems
    return f"Not a usable dataset: {error_line or 'see the log'}", []


class DatasetCheck:
    """One dataset check at a time; starting another cancels the previous one.

    Attributes:
        state: ``idle``, ``running``, ``done``, ``failed`` (the check could not run) or ``cancelled``.
        status: one line for the panel.
        problems: one line per problem or warning (after the check ended).
        path: the folder checked last.
    """

    def __init__(self, python_executable: str | os.PathLike | None = None) -> None:
        self.python_executable = python_executable
        self.state, self.status, self.problems, self.path = IDLE, "", [], ""
        self.process = None
        self._lines: list[str] = []

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def start(self, path: str) -> None:
        """Check ``path`` ("" only clears the state)."""
        self.cancel()
        self.path, self.problems, self._lines = path, [], []
        self.state, self.status = IDLE, ""
        if not path:
            return
        command = [str(self.python_executable or sys.executable), "-m", "MaskMedCore", "validate-dataset", str(path)]
        try:
            self.process = MaskMedProcess(command, subprocess_env()).start()
        except Exception as exc:  # noqa: BLE001 - one line for the panel
            self.state, self.status = FAILED, f"Cannot check the dataset: {exc}"
            return
        self.state, self.status = RUNNING, "Checking the dataset…"

    def poll(self) -> TaskUpdate:
        if not self.running:
            return TaskUpdate()
        events, ended = self.process.poll_events()
        self._lines += stdout_lines(events)
        if not ended:
            return TaskUpdate()
        self.status, self.problems = describe_validation(
            self.process.returncode, self._lines, self.process.error_line()
        )
        self.state = DONE
        return TaskUpdate(finished=True)

    def cancel(self) -> None:
        if self.running:
            self.process.cancel()
            self.state = CANCELLED
