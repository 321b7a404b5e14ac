"""What one poll of a background task tells the panel, and the states the tasks share.

The panel's timer calls ``task.poll()`` on each running task (:class:`~.segment_task.SegmentTask`,
:class:`~.training_task.TrainingTask`, :class:`~.dataset_check.DatasetCheck`,
:class:`~.device_probe.DeviceProbe`) and shows what comes back; the task keeps every state it needs, so
it finishes correctly whether or not a panel is there to show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IDLE = "idle"
RUNNING = "running"
STOPPING = "stopping"  # training: asked to stop after the current iteration
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"


@dataclass
class TaskUpdate:
    """The result of one ``poll()``.

    Attributes:
        log: new lines for the task's log, oldest first.
        finished: the task ended during this poll (its state, status and result are final).
    """

    log: list[str] = field(default_factory=list)
    finished: bool = False


def log_line(event) -> str | None:
    """The log line of a child's progress event (``message`` and ``log`` kinds), else None."""
    return event.message if event.kind in ("message", "log") and event.message else None
