"""The Train section's state machine: one ``maskmed train`` child, its live curves, and how it ended.

:class:`TrainingTask` holds everything a training run needs until it ends — the process, the curve and
its table/chart nodes, the run folder, the model list to add the trained model to — so it finishes the
same way whether the panel is shown, hidden (``exit()`` disconnects the panel from its parameter node)
or gone: the panel's timer only calls :meth:`TrainingTask.poll` and shows the task's state.

Stopping: the first :meth:`TrainingTask.stop` asks the child to stop after the current iteration with a
resumable checkpoint (``MaskMedProcess.request_stop``); a second one kills it (``cancel``).

States: ``idle`` -> ``running`` -> (``stopping``) -> ``done`` | ``cancelled`` | ``failed``.
"""

from __future__ import annotations

import os

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.progress import TrainingCurve
from MaskMedSlicerLib.task_state import CANCELLED, DONE, FAILED, IDLE, RUNNING, STOPPING, TaskUpdate
from MaskMedSlicerLib.training_views import training_curve_chart, training_curve_table

RUN_CHECKPOINTS = ("checkpoint_best.pt", "checkpoint_latest.pt")
STOP_EXIT_CODE = 130  # maskmed train's exit status after a requested stop (resumable checkpoint saved)


def run_checkpoint(run_dir: str | os.PathLike) -> str:
    """The run's best, else latest, checkpoint file; "" when it has none."""
    return next((os.path.join(run_dir, n) for n in RUN_CHECKPOINTS if os.path.isfile(os.path.join(run_dir, n))), "")


class TrainingTask:
    """One training run at a time.

    Args:
        logic: the ``MaskMedLogic`` that starts the child.
        scene: where the curve's table and chart nodes go.
        models: a ``ModelList``; a trained (or stopped, resumable) run is remembered there. None: not remembered.
        python_executable: interpreter for the child (Slicer: ``PythonSlicer``).

    Attributes:
        state: ``idle``, ``running``, ``stopping``, ``done``, ``cancelled`` or ``failed``.
        status: one line for a status label.
        fraction: progress in 0..1 when known, else None.
        model_path: the run folder once it holds a usable checkpoint at the end, else "".
        curve, table_node, chart_node: the loss / validation Dice history and its nodes.
    """

    def __init__(self, logic, scene, models=None, python_executable=None) -> None:
        self.logic = logic
        self.scene = scene
        self.models = models
        self.python_executable = python_executable
        self.state = IDLE
        self.status = ""
        self.fraction: float | None = None
        self.model_path = ""
        self.run_dir = ""
        self.process = None
        self._killed = False
        self.curve = TrainingCurve()
        self.table_node = None
        self.chart_node = None

    @property
    def running(self) -> bool:
        return self.state in (RUNNING, STOPPING)

    def start(self, dataset_dir, out_dir, preset="tiny", epochs=50, fold=0, device="auto", extra=()) -> None:
        """Start ``maskmed train`` (non-blocking); raises MaskMedSlicerError when it cannot start."""
        if self.running:
            raise MaskMedSlicerError("a training run is already going; stop it first")
        if not dataset_dir or not out_dir:
            raise MaskMedSlicerError("choose a dataset folder and an output folder first")
        self.process = self.logic.start_training(
            dataset_dir, out_dir, preset, int(epochs), int(fold), device, self.python_executable, extra
        )
        self.run_dir, self.model_path, self.fraction, self._killed = str(out_dir), "", 0.0, False
        self.curve, self.table_node, self.chart_node = TrainingCurve(), None, None
        self.state, self.status = RUNNING, "Starting (planning and preprocessing come first)…"

    def stop(self) -> None:
        """First call: stop after the current iteration (resumable checkpoint); second call: kill."""
        if self.state == RUNNING:
            self.process.request_stop()
            self.state, self.status = STOPPING, "Stopping after the current iteration (saving a checkpoint)…"
        elif self.state == STOPPING:
            self._killed = True
            self.process.cancel()

    def poll(self) -> TaskUpdate:
        """Drain the child's events (never blocks), update the curve's nodes, and finish once it ended."""
        update = TaskUpdate()
        if not self.running:
            return update
        events, ended = self.process.poll_events()
        curve_changed = False
        for event in events:
            if event.fraction is not None and event.kind in ("iteration", "epoch"):
                self.fraction = event.fraction
            if event.kind in ("iteration", "epoch", "message") and self.state == RUNNING:
                self.status = event.message
            if event.kind in ("epoch", "message", "log") and event.message:
                update.log.append(event.message)
            curve_changed |= self.curve.add(event)
        if curve_changed:
            self.update_curve_nodes()
        if ended:
            self._finish()
            update.finished = True
        return update

    def update_curve_nodes(self) -> None:
        """Fill (or re-create, e.g. after the scene was closed) the curve's table and chart nodes."""
        if self.table_node is not None and self.table_node.GetScene() is not self.scene:
            self.table_node = self.chart_node = None
        self.table_node = training_curve_table(self.curve, self.scene, table_node=self.table_node)
        if self.chart_node is None or self.chart_node.GetScene() is not self.scene:
            self.chart_node = training_curve_chart(self.table_node, self.scene)

    def _finish(self) -> None:
        process, checkpoint = self.process, run_checkpoint(self.run_dir)
        self.fraction = None
        if process.returncode == 0 and checkpoint:
            self.state, self.model_path = DONE, self.run_dir
            self.status = "Training finished; the model was added to the model list."
        elif self._killed:
            self.state = CANCELLED
            self.status = "Training was killed; resume it with 'maskmed train ... --resume'."
        elif process.returncode == STOP_EXIT_CODE and checkpoint:
            self.state, self.model_path = DONE, self.run_dir
            self.status = "Training stopped with a resumable checkpoint; the model was added to the list."
        else:
            self.state, self.status = FAILED, process.describe_failure("MaskMed training")
        if self.model_path and self.models is not None:
            self.models.remember(self.model_path)

    def close(self) -> None:
        """Module cleanup: kill a running child."""
        if self.running:
            self._killed = True
            self.process.cancel()
            self._finish()
