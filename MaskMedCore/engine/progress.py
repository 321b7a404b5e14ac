"""Progress of long jobs: a terminal bar, JSON lines for the Slicer launcher, and a log file.

JSON mode prints one object per line on stdout, each with an ``event`` key:

- ``{"event": "start", "total_iterations": ..., "start_iteration": ...}``
- ``{"event": "estimate", "seconds_per_iteration": ..., "iterations": ..., "estimated_seconds": ..., ...}``
  (the run's duration estimated before its first step, ``engine/time_estimate.py``)
- ``{"event": "iteration", "epoch": e, "iteration": i, "loss": ..., "terms": {...}, "lr": ..., "eta_seconds": ...}``
  (at most one per ``json_interval`` seconds, plus the last of each epoch)
- ``{"event": "epoch", "epoch": e, "iteration": i, "train_loss": ..., "val_dice": {name: d} | null,
  "val_mean_dice": ... | null, "lr": ..., "elapsed_seconds": ..., "eta_seconds": ...}``
- ``{"event": "message", "text": ...}``, ``{"event": "done", ...}``

Everything is also appended to the log file, one line per event.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

MODES = ("bar", "json", "none")


class ProgressReporter:
    """Args:
    mode: ``bar`` (tqdm on stderr), ``json`` (JSON lines on ``stream``) or ``none``.
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
            from tqdm import tqdm

            self._bar = tqdm(total=total_iterations, initial=start_iteration, unit="it", dynamic_ncols=True)
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
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
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
