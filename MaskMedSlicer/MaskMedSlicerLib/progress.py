"""Parse the JSON-lines progress that ``python -m MaskMedCore {predict,train} --progress json`` prints.

Each stdout line is one object with an ``event`` key (see ``MaskMedCore.engine.progress``):

- ``start`` ``{total_iterations, start_iteration}`` (predict: total_iterations = number of cases);
- ``tiles`` ``{case, done, total}`` (predict: sliding-window tiles of the current case);
- ``iteration`` ``{epoch, iteration, loss, terms, lr, eta_seconds}`` (train; ``iteration`` counts from 1
  over the whole run);
- ``epoch`` ``{epoch, iteration, train_loss, val_dice: {name: dice} | null, val_mean_dice, lr, ...}``;
- ``message`` ``{text}``; ``done`` ``{...}``.

Anything else (warnings, tracebacks, a non-JSON line) becomes a ``log`` event.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """One parsed line.

    Attributes:
        kind: ``start``, ``tiles``, ``iteration``, ``epoch``, ``message``, ``done`` or ``log``.
        fraction: overall progress in 0..1 when the line tells it, else None.
        message: one human-readable line.
        data: the JSON object (``{"stream": "stderr"}`` for stderr log lines; ``{}`` for stdout ones).
    """

    kind: str
    fraction: float | None
    message: str
    data: dict = field(default_factory=dict)


def _fraction(done: Any, total: Any) -> float | None:
    try:
        done, total = float(done), float(total)
    except (TypeError, ValueError):
        return None
    if not total > 0 or math.isnan(done):
        return None
    return min(max(done / total, 0.0), 1.0)


def _fmt(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def parse_progress_line(line: str, total_iterations: int | None = None) -> ProgressEvent | None:
    """Parse one output line.

    Args:
        line: a line of the child's stdout (trailing newline allowed).
        total_iterations: the run's total from its ``start`` event, needed for the fraction of
            ``iteration``/``epoch`` events (:class:`ProgressParser` remembers it for you).

    Returns:
        None for a blank line, a ``log`` event for a line that is not a progress object, else the event.
    """
    text = line.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return ProgressEvent("log", None, text, {})
    kind = data["event"]
    if kind == "start":
        total = data.get("total_iterations")
        return ProgressEvent(kind, _fraction(data.get("start_iteration", 0), total) or 0.0, "started", data)
    if kind == "tiles":
        done, total = data.get("done"), data.get("total")
        return ProgressEvent(kind, _fraction(done, total), f"{data.get('case', '')}: tile {done}/{total}", data)
    if kind == "iteration":
        message = f"epoch {data.get('epoch')}, iteration {data.get('iteration')}"
        message += f"/{total_iterations}" if total_iterations else ""
        message += f", loss {_fmt(data.get('loss'))}"
        return ProgressEvent(kind, _fraction(data.get("iteration"), total_iterations), message, data)
    if kind == "epoch":
        message = f"epoch {data.get('epoch')}: train loss {_fmt(data.get('train_loss'))}"
        if data.get("val_mean_dice") is not None:
            message += f", val Dice {_fmt(data.get('val_mean_dice'))}"
        return ProgressEvent(kind, _fraction(data.get("iteration"), total_iterations), message, data)
    if kind == "message":
        return ProgressEvent(kind, None, str(data.get("text", "")), data)
    if kind == "done":
        return ProgressEvent(kind, 1.0, "done", data)
    return ProgressEvent(kind, None, text, data)


class ProgressParser:
    """Stateful :func:`parse_progress_line` that remembers ``total_iterations`` from the ``start`` event."""

    def __init__(self) -> None:
        self.total_iterations: int | None = None

    def parse(self, line: str) -> ProgressEvent | None:
        event = parse_progress_line(line, self.total_iterations)
        if event is not None and event.kind == "start":
            total = event.data.get("total_iterations")
            self.total_iterations = int(total) if isinstance(total, (int, float)) and total > 0 else None
        return event


class TrainingCurve:
    """Training history for the Train panel's plot, built from ``epoch`` events.

    Attributes:
        epochs: epoch numbers, in arrival order.
        train_loss: mean training loss per epoch.
        val_mean_dice: mean validation Dice per epoch (NaN for epochs without validation).
        val_dice: class name -> validation Dice per epoch (NaN where not validated).
    """

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.val_mean_dice: list[float] = []
        self.val_dice: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self.epochs)

    def add(self, event: ProgressEvent) -> bool:
        """Record ``event`` if it is an ``epoch`` event; returns whether it was."""
        if event is None or event.kind != "epoch":
            return False
        data = event.data
        self.epochs.append(int(data.get("epoch", len(self.epochs))))
        self.train_loss.append(_as_float(data.get("train_loss")))
        self.val_mean_dice.append(_as_float(data.get("val_mean_dice")))
        per_class = data.get("val_dice") or {}
        for name in per_class:
            self.val_dice.setdefault(str(name), [math.nan] * (len(self.epochs) - 1))
        for name, values in self.val_dice.items():
            values.append(_as_float(per_class.get(name)))
        return True

    @property
    def class_names(self) -> list[str]:
        return list(self.val_dice)

    def best_val_mean_dice(self) -> float | None:
        values = [v for v in self.val_mean_dice if not math.isnan(v)]
        return max(values) if values else None


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
