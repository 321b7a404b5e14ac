"""The Segment section's state machine: one segmentation at a time, its result, and their lifetime.

:class:`SegmentTask` runs :meth:`MaskMedLogic.start_segmentation` / :meth:`~MaskMedLogic.finish_segmentation`
(the one code path, with its input checks) for the panel's timer (:meth:`SegmentTask.poll`) and for the
Python console (:meth:`SegmentTask.run`, blocking). It owns what a run leaves besides the segmentation:

- a **new run** removes the previous run's inspection data (table nodes, overlay, query segment, chart)
  and query maps;
- the **scene closing** (``StartCloseEvent``, observed here) kills a running child and deletes its
  temporary folders, and drops the result (the scene removes its nodes);
- :meth:`SegmentTask.close` (**module cleanup**) does both and stops observing the scene.

States: ``idle`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``.
"""

from __future__ import annotations

import logging
import time
import weakref

from MaskMedSlicerLib.errors import MaskMedSlicerError, SegmentationCancelled
from MaskMedSlicerLib.inspection import Inspection
from MaskMedSlicerLib.task_state import CANCELLED, DONE, FAILED, IDLE, RUNNING, TaskUpdate, log_line


class SegmentTask:
    """One segmentation at a time on one scene.

    Args:
        logic: the ``MaskMedLogic`` that runs the child.
        scene: the ``vtkMRMLScene`` the results go to (observed for close events).
        python_executable: interpreter for the child (Slicer: ``PythonSlicer``).

    Attributes:
        state: ``idle``, ``running``, ``done``, ``failed`` or ``cancelled``.
        status: one line for a status label.
        fraction: progress in 0..1 while running, else None.
        error: the failure's one-line message (state ``failed``).
        result: the last successful result (None after clear, a failure or a scene close).
        inspection: the Inspect section's nodes for ``result``.
    """

    def __init__(self, logic, scene, python_executable=None) -> None:
        self.logic = logic
        self.scene = scene
        self.python_executable = python_executable
        self.state = IDLE
        self.status = ""
        self.fraction: float | None = None
        self.error = ""
        self.job = None
        self.inspection: Inspection | None = None
        this = weakref.ref(self)  # the scene must not keep a forgotten task alive, nor call into a dead one

        def on_start_close(caller, event) -> None:
            task = this()
            if task is not None:
                task._on_scene_start_close()

        self._observer = scene.AddObserver(scene.StartCloseEvent, on_start_close)

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def result(self):
        return self.inspection.result if self.inspection is not None else None

    # ------------------------------------------------------------------------------------ run
    def start(self, volume_nodes, model=None, device="auto", roi=None, **options) -> list[str]:
        """Check the inputs and start the child; the previous result's inspection data is removed first.

        Args:
            volume_nodes: one scalar volume per model channel (a single node is accepted).
            model, device, roi: as for :meth:`MaskMedLogic.segment` (model: path or bundled name).
            options: ``save_queries``, ``segmentation_node``, ``use_terminology``, ``save_embeddings``.

        Returns:
            Log lines about the set-up (e.g. the ROI crop).

        Raises:
            MaskMedSlicerError: a segmentation is running, or the inputs are refused (nothing started).
        """
        if self.running:
            raise MaskMedSlicerError("a segmentation is already running; cancel it first")
        nodes = list(volume_nodes) if isinstance(volume_nodes, (list, tuple)) else [volume_nodes]
        self.clear_result()
        self.job = self.logic.start_segmentation(
            nodes, model=model, device=device, scene=self.scene, roi=roi,
            python_executable=self.python_executable, **options,
        )  # fmt: skip
        self.state, self.fraction, self.error = RUNNING, 0.0, ""
        self.status = f"Running MaskMed on {nodes[0].GetName()}…"
        return list(self.job.messages)

    def poll(self) -> TaskUpdate:
        """Drain the child's events (never blocks); once it has ended, load the result into the scene."""
        update = TaskUpdate()
        if self.state != RUNNING:
            return update
        events, ended = self.job.process.poll_events()
        for event in events:
            if event.kind == "tiles" and event.fraction is not None:
                self.fraction = 0.05 + 0.9 * event.fraction
                self.status = f"Segmenting: {event.message}"
            line = log_line(event)
            if line:
                update.log.append(line)
        if ended:
            self._finish()
            update.finished = True
        return update

    def _finish(self) -> None:
        job, self.job = self.job, None
        self.fraction = None
        try:
            result = self.logic.finish_segmentation(job)
        except Exception as exc:  # noqa: BLE001 - shown as one line; the traceback goes to the log
            if not isinstance(exc, MaskMedSlicerError):
                logging.exception("MaskMed: loading the result failed")
            self.state, self.error = FAILED, str(exc)
            self.status = f"Failed: {exc}"
            return
        self.inspection = Inspection(self.logic, result)
        self.state = DONE
        segmentation = result.segmentation_node
        count = segmentation.GetSegmentation().GetNumberOfSegments()
        self.status = f"Done: {count} segment(s) in '{segmentation.GetName()}'."
        instances = result.instances
        if instances is not None and instances.instances_table is not None:
            table = instances.instances_table.GetName()
            self.status += f" {len(instances.outputs.instances)} instance(s): see table '{table}'."

    def run(self, volume_nodes, progress=None, poll_interval: float = 0.1, **options):
        """Blocking :meth:`start` + :meth:`poll` loop for scripts; returns the result.

        Args:
            progress: called with every log line.
            options: as for :meth:`start`.

        Raises:
            MaskMedSlicerError: refused inputs or a failed run (its one-line message).
            SegmentationCancelled: the run was cancelled (e.g. the scene was closed).
        """
        report = progress or (lambda line: None)
        for line in self.start(volume_nodes, **options):
            report(line)
        while self.running:
            for line in self.poll().log:
                report(line)
            if self.running:
                time.sleep(poll_interval)
        if self.state == FAILED:
            raise MaskMedSlicerError(self.error)
        if self.state == CANCELLED:
            raise SegmentationCancelled(self.status)
        return self.result

    # ------------------------------------------------------------------------------------ stop and clean
    def cancel(self, status: str = "Cancelled; the scene was left as it was.") -> None:
        """Kill a running child and delete its temporary folders (nothing was added to the scene)."""
        if self.job is not None:
            self.logic.cancel_segmentation(self.job)
            self.job = None
            self.state, self.status, self.fraction = CANCELLED, status, None

    def clear_result(self) -> None:
        """Remove the inspection data of the last result (the segmentation node stays)."""
        if self.inspection is not None:
            self.inspection.clear()
            self.inspection = None

    def _on_scene_start_close(self) -> None:
        self.cancel("Cancelled: the scene was closed.")
        if self.inspection is not None:  # the scene removes the nodes; drop what we hold in memory
            self.inspection.result.query_maps = {}
            self.inspection = None

    def close(self) -> None:
        """Module cleanup: cancel, remove the inspection data and stop observing the scene."""
        self.cancel()
        self.clear_result()
        if self._observer is not None:
            self.scene.RemoveObserver(self._observer)
            self._observer = None
