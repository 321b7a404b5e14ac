"""Progress of long jobs: a terminal bar, JSON lines for the Slicer launcher, and a log file.

JSON mode prints one object per line on stdout, each with an ``event`` key:

- ``{"event": "start", "total_iterations": ..., "start_iteration": ...}``
- ``{"event": "estimate", "seconds_per_iteration": ..., "iterations": ..., "estimated_seconds": ..., ...}``
  (the run's duration estimated before its first step, ``engine/time_estimate.py``)
- ``{"event": "init", "source": ..., "loaded": n, "loaded_parameters": ..., "new": n, "skipped": {...}, ...}``
  (a run started from a pretrained model, ``--init-from``; ``engine/init_weights.py``)
- ``{"event": "iteration", "epoch": e, "iteration": i, "loss": ..., "terms": {...}, "lr": ..., "eta_seconds": ...}``
  (at most one per ``json_interval`` seconds, plus the last of each epoch)
- ``{"event": "epoch", "epoch": e, "iteration": i, "train_loss": ..., "val_dice": {name: d} | null,
  "val_mean_dice": ... | null, "lr": ..., "elapsed_seconds": ..., "eta_seconds": ...}``
- ``{"event": "message", "text": ...}``, ``{"event": "done", ...}``

Everything is also appended to the log file, one line per event.

The terminal bar is tqdm's where tqdm is installed; tqdm is optional (3D Slicer does not ship it, and
the Slicer module's children use ``json`` mode, which never needs it). Without it :func:`make_bar`
returns a :class:`TextBar`: plain lines on stderr, at most one per ``interval`` seconds plus the last,
each with the count, the elapsed time, the measured rate and the remaining time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

MODES = ("bar", "json", "none")


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: a duration for progress lines."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_rate(done: float, seconds: float, unit: str) -> str:
    """The measured rate of ``done`` units in ``seconds``: ``3.2 it/s`` or, below one per second,
    ``4.1 s/case``; ``? s/unit`` before anything was done or timed."""
    if done <= 0 or seconds <= 0:
        return f"? s/{unit}"
    rate = done / seconds
    return f"{rate:.3g} {unit}/s" if rate >= 1 else f"{seconds / done:.3g} s/{unit}"


class TextBar:
    """A progress "bar" of plain text lines, for terminals and logs without tqdm.

    It implements the part of tqdm's interface MaskMed uses (``update``, ``set_postfix``,
    ``set_postfix_str``, ``write``, ``close``, ``n``, ``total``). A line such as
    ``train: 120/500 it (24%), 1m02s elapsed, 1.94 it/s, ~3m16s left, loss=0.41`` goes to ``stream``
    when the count first moves, then at most every ``interval`` seconds, and once more on ``close``.
    The rate counts only what this bar saw (``initial`` is excluded), over the wall time since it was
    made, so a resumed run or a slow first step is not misreported.

    Args:
        total: units of the whole job (None: unknown).
        desc: prefix of every line.
        unit: name of one unit (``it``, ``case``).
        initial: units already done before this bar (resumed runs).
        stream: where lines go (default ``sys.stderr``).
        interval: minimum seconds between two lines.
        disable: print nothing.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        stream: TextIO | None = None,
        interval: float = 5.0,
        disable: bool = False,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.initial = initial
        self.n = initial
        self.stream = stream
        self.interval = interval
        self.disable = disable
        self.postfix = ""
        self._t0 = time.monotonic()
        self._last_line: float | None = None
        self._printed_n: int | None = None

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self._last_line is None or now - self._last_line >= self.interval:
            self._print(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def refresh(self) -> None:
        """tqdm's redraw; a text bar prints on its own schedule."""

    def line(self, now: float | None = None) -> str:
        """The current progress line."""
        elapsed = (time.monotonic() if now is None else now) - self._t0
        done = self.n - self.initial
        parts = []
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(count)
        parts.append(f"{format_duration(elapsed)} elapsed")
        parts.append(format_rate(done, elapsed, self.unit))
        if self.total and done > 0 and self.n < self.total:
            parts.append(f"~{format_duration(elapsed / done * (self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print one line (to ``file``, default this bar's stream)."""
        if not self.disable:
            print(text, file=file or self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if self._printed_n != self.n:
            self._print(time.monotonic())
        self.disable = True

    def _print(self, now: float) -> None:
        self._last_line = now
        self._printed_n = self.n
        self.write(self.line(now))


def make_bar(
    total: int | None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    leave: bool = True,
):
    """A terminal progress bar on stderr: tqdm's if it is installed, else a :class:`TextBar`.

    Args:
        total: units of the whole job.
        desc: label in front of the bar.
        unit: name of one unit.
        initial: units already done (resumed runs).
        disable: show nothing (both kinds still accept every call).
        leave: keep tqdm's finished bar on screen.
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return TextBar(total, desc, unit, initial=initial, disable=disable)
    return tqdm(
        total=total, desc=desc or None, unit=unit, initial=initial, disable=disable, leave=leave, dynamic_ncols=True
    )


class ProgressReporter:
    """Args:
    mode: ``bar`` (a terminal bar on stderr, :func:`make_bar`), ``json`` (JSON lines on ``stream``)
        or ``none``.
    total_iterations: iterations of the whole run.
    start_iteration: iteration the run (re)starts at (for resumed runs).
    log_path: file to append every event to, or None.
    stream: where JSON lines go (stdout).
    json_interval: minimum seconds between two ``iteration`` events.
    """

    def __init__(
        self,
        mode: str,
        total_iterations: int,
        start_iteration: int = 0,
        log_path: Path | None = None,
        stream: TextIO | None = None,
        json_interval: float = 1.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode is {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.total = total_iterations
        self.start_iteration = start_iteration
        self.stream = stream or sys.stdout
        self.json_interval = json_interval
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 - closed in close()
        self._t0 = time.monotonic()
        self._last_json = 0.0
        self._bar = None
        if mode == "bar":
            self._bar = make_bar(total_iterations, desc="train", unit="it", initial=start_iteration)
        self._emit({"event": "start", "total_iterations": total_iterations, "start_iteration": start_iteration})

    def eta_seconds(self, iteration: int) -> float | None:
        done = iteration - self.start_iteration
        if done <= 0:
            return None
        return (time.monotonic() - self._t0) / done * (self.total - iteration)

    def iteration(
        self, epoch: int, iteration: int, loss: float, terms: dict[str, float], lr: float, last: bool = False
    ):
        """Report a finished training iteration (``iteration`` counts from 1 over the whole run)."""
        if self._bar is not None:  # postfix first: a text bar prints its line in update()
            self._bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self._bar.update(1)
        now = time.monotonic()
        if self.mode == "json" and (last or now - self._last_json >= self.json_interval):
            self._last_json = now
            self._emit(
                {
                    "event": "iteration",
                    "epoch": epoch,
                    "iteration": iteration,
                    "loss": loss,
                    "terms": {k: v for k, v in terms.items() if "/" not in k},
                    "lr": lr,
                    "eta_seconds": self.eta_seconds(iteration),
                },
                log=False,
            )

    def epoch(
        self,
        epoch: int,
        iteration: int,
        train_loss: float,
        lr: float,
        val_dice: dict[str, float] | None = None,
    ) -> None:
        mean = None if not val_dice else sum(val_dice.values()) / len(val_dice)
        event = {
            "event": "epoch",
            "epoch": epoch,
            "iteration": iteration,
            "train_loss": train_loss,
            "val_dice": val_dice,
            "val_mean_dice": mean,
            "lr": lr,
            "elapsed_seconds": time.monotonic() - self._t0,
            "eta_seconds": self.eta_seconds(iteration),
        }
        if self._bar is not None:
            dice = "" if mean is None else f", val Dice {mean:.4f}"
            self._bar.write(f"epoch {epoch}: train loss {train_loss:.4f}{dice}, lr {lr:.2e}")
        self._emit(event)

    def estimate(self, text: str, **fields: Any) -> None:
        """The duration estimate: ``text`` for people, ``fields`` for the ``estimate`` event."""
        if self._bar is not None:
            self._bar.write(text)
        elif self.mode == "none":
            print(text, file=sys.stderr)
        self._emit({"event": "estimate", **fields})

    def init(self, text: str, **fields: Any) -> None:
        """What ``--init-from`` loaded: ``text`` for people, ``fields`` for the ``init`` event."""
        if self._bar is not None:
            self._bar.write(text)
        elif self.mode == "none":
            print(text, file=sys.stderr)
        self._emit({"event": "init", **fields})

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        elif self.mode == "none":
            print(text, file=sys.stderr)
        self._emit({"event": "message", "text": text})

    def done(self, **info: Any) -> None:
        self._emit({"event": "done", **info})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def _emit(self, event: dict[str, Any], log: bool = True) -> None:
        line = json.dumps(event)
        if self.mode == "json":
            print(line, file=self.stream, flush=True)
        if log and self.log is not None:
            self.log.write(line + "\n")
            self.log.flush()
