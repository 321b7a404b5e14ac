"""MaskMedLogic: segment volume nodes with a MaskMed model and inspect its queries, without Qt.

Usable from the Slicer Python console and from plain Python on ``slicer-core``::

    logic = MaskMedLogic()
    result = logic.segment([volume_node], scene=scene)       # bundled demo model
    overlay = logic.show_query(result, 3)                      # query 3's probability map
    logic.cleanup(result)                                      # delete the kept prediction folder

``segment`` blocks: it runs ``python -m MaskMedCore predict`` in a child process and polls it, calling
``progress(event)`` for each parsed line and ``cancel()`` between polls (inside Slicer the progress
callback can call ``slicer.app.processEvents()`` to keep the GUI live). A GUI that must not block uses
the two halves instead: ``job = logic.start_segmentation(...)``, poll ``job.process.events()`` from a
timer until ``job.process.running`` is False, then ``logic.finish_segmentation(job)`` (or
``logic.cancel_segmentation(job)``). Inside Slicer, ``python_executable`` should be ``PythonSlicer``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MaskMedSlicerLib.errors import MaskMedSlicerError, SegmentationCancelled
from MaskMedSlicerLib.models import ModelInfo, bundled_demo_model, checkpoint_info
from MaskMedSlicerLib.process import MaskMedProcess, build_predict_command, build_train_command, subprocess_env
from MaskMedSlicerLib.progress import ProgressEvent
from MaskMedSlicerLib.query_views import QueryResults, query_probability_volume
from MaskMedSlicerLib.scene_setup import remove_nodes, removed_on_error
from MaskMedSlicerLib.segmentation_io import add_binary_segment, default_label_colors, labelmap_file_to_segmentation
from MaskMedSlicerLib.volume_io import export_volume, ijk_to_ras, read_image

CASE_ID = "case"
FILE_ENDING = ".nii.gz"

ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class SegmentationResult:
    """What :meth:`MaskMedLogic.segment` added to the scene, and the prediction folder it keeps.

    Attributes:
        segmentation_node: one segment per model class (segment ID = class name).
        summary_table: one row per query (index, class, score, volume (mL), no object).
        class_probability_table: (Q, K+1) table, or None without embeddings.
        class_embedding_table: (Q, E) table, or None.
        mask_embedding_table: (Q, C) table, or None.
        queries: the parsed prediction folder (summary, matrices, query map files).
        output_dir: the kept prediction folder (removed by :meth:`MaskMedLogic.cleanup`).
        reference_volume_node: the first input volume (geometry of every output).
        model: the model that produced it.
    """

    segmentation_node: object
    summary_table: object
    class_probability_table: object | None
    class_embedding_table: object | None
    mask_embedding_table: object | None
    queries: QueryResults
    output_dir: Path
    reference_volume_node: object = None
    model: ModelInfo | None = None

    def nodes(self) -> list:
        """The nodes this result added (the segmentation node first)."""
        tables = (self.summary_table, self.class_probability_table, self.class_embedding_table)
        return [n for n in (self.segmentation_node, *tables, self.mask_embedding_table) if n is not None]


@dataclass
class SegmentationJob:
    """A prediction running in a child process (see :meth:`MaskMedLogic.start_segmentation`).

    Attributes:
        process: the running child; poll ``process.events()`` and ``process.running``.
        model: the model it runs.
        volume_nodes: the input volumes (the first is the reference geometry).
        scene: the scene the result goes to.
        input_dir: temporary copy of the inputs (deleted by finish/cancel).
        output_dir: prediction folder (kept by a successful finish, as ``SegmentationResult.output_dir``).
        segmentation_node: node to write into, or None for a new one.
        use_terminology: tag segments with SNOMED CT codes.
    """

    process: MaskMedProcess
    model: ModelInfo
    volume_nodes: list
    scene: object
    input_dir: Path
    output_dir: Path
    segmentation_node: object = None
    use_terminology: bool = False


def _node_label(node) -> str:
    return f"volume '{node.GetName()}'"


def _check_inputs(volume_nodes, scene):
    """Validated (list of volume nodes, scene)."""
    if volume_nodes is None:
        raise MaskMedSlicerError("no input volume selected")
    nodes = list(volume_nodes) if isinstance(volume_nodes, (list, tuple)) else [volume_nodes]
    if not nodes or any(n is None for n in nodes):
        raise MaskMedSlicerError("no input volume selected (one volume node per model channel is needed)")
    for node in nodes:
        if not node.IsA("vtkMRMLScalarVolumeNode"):
            raise MaskMedSlicerError(f"input {node.GetName()} is a {node.GetClassName()}, not a scalar volume")
    scene = scene if scene is not None else nodes[0].GetScene()
    if scene is None:
        raise MaskMedSlicerError(f"{_node_label(nodes[0])} is in no scene; pass scene=")
    for node in nodes:
        if node.GetScene() is not scene:
            raise MaskMedSlicerError(f"{_node_label(node)} is not in the given scene")
    first = nodes[0]
    dims = first.GetImageData().GetDimensions() if first.GetImageData() else None
    for node in nodes[1:]:
        same = node.GetImageData() is not None and node.GetImageData().GetDimensions() == dims
        if not same or not np.allclose(ijk_to_ras(node), ijk_to_ras(first), rtol=1e-4, atol=1e-3):
            raise MaskMedSlicerError(
                f"{_node_label(node)} does not share the voxel grid of {_node_label(first)}; resample it onto "
                f"'{first.GetName()}' first (e.g. Resample Scalar/Vector/DWI Volume)"
            )
    return nodes, scene


class MaskMedLogic:
    """Qt-free MaskMed logic.

    Args:
        temp_root: folder for temporary inputs and kept prediction folders (default: the system's).
        poll_interval: seconds between checks of the child process in :meth:`segment`.
    """

    def __init__(self, temp_root: str | os.PathLike | None = None, poll_interval: float = 0.1) -> None:
        self.temp_root = Path(temp_root) if temp_root is not None else None
        self.poll_interval = poll_interval
        self._model_infos: dict[tuple[str, float], ModelInfo] = {}

    # ------------------------------------------------------------------------------------ models
    def model_info(self, model: str | os.PathLike | ModelInfo | None = None) -> ModelInfo:
        """ModelInfo of a checkpoint/run folder (None: the bundled demo model); cached per file version."""
        if isinstance(model, ModelInfo):
            return model
        path = Path(model) if model is not None else bundled_demo_model()
        key_path = path
        if path.is_dir():
            key_path = next(
                (path / n for n in ("checkpoint_best.pt", "checkpoint_latest.pt") if (path / n).is_file()), path
            )
        key = (str(key_path.resolve()), key_path.stat().st_mtime if key_path.exists() else 0.0)
        if key not in self._model_infos:
            self._model_infos[key] = checkpoint_info(path)
        return self._model_infos[key]

    # ------------------------------------------------------------------------------------ segment
    def segment(
        self,
        volume_nodes: Sequence,
        model: str | os.PathLike | ModelInfo | None = None,
        device: str = "auto",
        scene=None,
        progress: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
        save_queries: bool = True,
        use_terminology: bool = False,
        python_executable: str | os.PathLike | None = None,
        segmentation_node=None,
        save_embeddings: bool = True,
    ) -> SegmentationResult:
        """Segment one case and load the result into the scene (blocking).

        Args:
            volume_nodes: one scalar volume node per model channel, in channel order, on one voxel grid.
            model: checkpoint file, run folder or ModelInfo; None: the bundled demo model.
            device: ``auto``, ``cuda`` or ``cpu``.
            scene: the ``vtkMRMLScene``; default: the scene of the first volume.
            progress: called with every parsed child event and a few of our own (``message`` kind).
            cancel: polled every ``poll_interval`` s; True kills the child and raises SegmentationCancelled.
            save_queries: keep each query's probability map (needed by :meth:`show_query`).
            use_terminology: tag segments with SNOMED CT codes where known.
            python_executable: interpreter with torch and MaskMedCore's dependencies (Slicer: PythonSlicer);
                default ``sys.executable``.
            segmentation_node: write into this node (MaskMed's segments replaced, others kept).
            save_embeddings: write the embedding matrices (the query heatmap tables need them).

        Returns:
            The SegmentationResult; its prediction folder stays until :meth:`cleanup`.

        Raises:
            SegmentationCancelled: ``cancel()`` returned True; the scene is as before the call.
            MaskMedSlicerError: bad inputs, the child failed (message: its last error line), or the
                outputs could not be read. No node of this call is left in the scene.
        """
        report = progress or (lambda event: None)
        report(ProgressEvent("message", 0.0, "writing the input volume(s)"))
        job = self.start_segmentation(
            volume_nodes,
            model=model,
            device=device,
            scene=scene,
            save_queries=save_queries,
            use_terminology=use_terminology,
            python_executable=python_executable,
            segmentation_node=segmentation_node,
            save_embeddings=save_embeddings,
        )
        try:
            while job.process.running:
                for event in job.process.events():
                    report(event)
                if cancel is not None and cancel():
                    raise SegmentationCancelled("MaskMed segmentation cancelled")
                time.sleep(self.poll_interval)
            job.process.wait()
            for event in job.process.events():
                report(event)
        except BaseException:  # cancelled, or the progress callback raised
            self.cancel_segmentation(job)
            raise
        report(ProgressEvent("message", None, "loading the segmentation into the scene"))
        result = self.finish_segmentation(job)
        report(ProgressEvent("message", 1.0, f"segmented {job.volume_nodes[0].GetName()}"))
        return result

    def start_segmentation(
        self,
        volume_nodes: Sequence,
        model: str | os.PathLike | ModelInfo | None = None,
        device: str = "auto",
        scene=None,
        save_queries: bool = True,
        use_terminology: bool = False,
        python_executable: str | os.PathLike | None = None,
        segmentation_node=None,
        save_embeddings: bool = True,
    ) -> SegmentationJob:
        """Non-blocking first half of :meth:`segment`: check the inputs, write them, start the child.

        Poll ``job.process.events()`` (never blocks) until ``job.process.running`` is False, then call
        :meth:`finish_segmentation` (on the main thread), or :meth:`cancel_segmentation` to abort. The
        scene is not touched until :meth:`finish_segmentation`. Arguments as for :meth:`segment`.
        """
        nodes, scene = _check_inputs(volume_nodes, scene)
        info = self.model_info(model)
        if len(nodes) != info.num_channels:
            raise MaskMedSlicerError(
                f"model {info.title} needs {info.num_channels} input volume(s) {list(info.channel_names)}, "
                f"got {len(nodes)}: {[n.GetName() for n in nodes]}"
            )
        input_dir = Path(tempfile.mkdtemp(prefix="maskmed-input-", dir=self.temp_root))
        output_dir = Path(tempfile.mkdtemp(prefix="maskmed-result-", dir=self.temp_root))
        try:
            files = [export_volume(n, input_dir / f"{CASE_ID}_{c:04d}{FILE_ENDING}") for c, n in enumerate(nodes)]
            command = build_predict_command(
                python_executable or sys.executable,
                info.path,
                files,
                output_dir,
                device=device,
                save_queries=save_queries,
                save_embeddings=save_embeddings,
                output_format=FILE_ENDING,
            )
            process = MaskMedProcess(command, subprocess_env()).start()
        except BaseException:
            shutil.rmtree(input_dir, ignore_errors=True)
            shutil.rmtree(output_dir, ignore_errors=True)
            raise
        return SegmentationJob(process, info, nodes, scene, input_dir, output_dir, segmentation_node, use_terminology)

    def finish_segmentation(self, job: SegmentationJob) -> SegmentationResult:
        """Second half of :meth:`segment`, once ``job.process`` has ended: load its result into the scene.

        Raises:
            MaskMedSlicerError: the child is still running or failed (message: its error line), an input
                volume left the scene, or the outputs cannot be read. Nothing is left in the scene and the
                prediction folder is deleted.
        """
        if job.process.running:
            raise MaskMedSlicerError("the MaskMed prediction is still running; wait for it or cancel it")
        job.process.wait()
        shutil.rmtree(job.input_dir, ignore_errors=True)
        try:
            if job.process.returncode != 0:
                raise MaskMedSlicerError(job.process.describe_failure("MaskMed prediction"))
            reference = job.volume_nodes[0]
            if reference.GetScene() is not job.scene:
                raise MaskMedSlicerError(f"{_node_label(reference)} was removed while MaskMed was running")
            return self.import_result(
                job.output_dir, reference, job.model, job.scene, job.segmentation_node, job.use_terminology
            )
        except BaseException:
            shutil.rmtree(job.output_dir, ignore_errors=True)
            raise

    @staticmethod
    def cancel_segmentation(job: SegmentationJob) -> None:
        """Kill the job's process tree and delete its files (the scene was never touched)."""
        job.process.cancel()
        shutil.rmtree(job.input_dir, ignore_errors=True)
        shutil.rmtree(job.output_dir, ignore_errors=True)

    def import_result(
        self, output_dir: Path, reference, info: ModelInfo, scene, segmentation_node=None, use_terminology=False
    ) -> SegmentationResult:
        """Load a finished prediction folder (``maskmed predict`` output for one case) into ``scene``.

        Everything it adds is removed again if any step fails. Args as in :meth:`segment`; ``reference``
        is the first input volume node (the geometry of every output).
        """
        queries = QueryResults.load(output_dir, CASE_ID)
        names = queries.label_names or list(info.label_names)
        base = reference.GetName()
        with removed_on_error(scene):
            segmentation = labelmap_file_to_segmentation(
                output_dir / f"{CASE_ID}{FILE_ENDING}",
                reference,
                names,
                scene,
                colors=default_label_colors(names),
                segmentation_node=segmentation_node,
                name=f"{base} MaskMed segmentation",
                use_terminology=use_terminology,
            )
            has_matrices = queries.class_probabilities is not None
            return SegmentationResult(
                segmentation_node=segmentation,
                summary_table=queries.summary_table(scene, f"{base} MaskMed queries"),
                class_probability_table=queries.class_probability_table(scene, f"{base} MaskMed query classes")
                if has_matrices
                else None,
                class_embedding_table=queries.class_embedding_table(scene, f"{base} MaskMed class embeddings")
                if has_matrices
                else None,
                mask_embedding_table=queries.mask_embedding_table(scene, f"{base} MaskMed mask embeddings")
                if has_matrices
                else None,
                queries=queries,
                output_dir=output_dir,
                reference_volume_node=reference,
                model=info,
            )

    # ------------------------------------------------------------------------------------ queries
    def show_query(
        self,
        result: SegmentationResult,
        index: int,
        scene=None,
        volume_node=None,
        threshold: float | None = None,
    ):
        """Load query ``index``'s probability map (0..1, viridis) as an overlay volume.

        Args:
            result: a :meth:`segment` result whose folder was not cleaned up, run with save_queries.
            index: query index (the ``index`` column of the summary table).
            scene: default: the segmentation node's scene.
            volume_node: reuse this node (e.g. the overlay of the previously shown query).
            threshold: also add the query's mask (probability >= threshold) as a segment
                (see :meth:`add_query_segment`).

        Returns:
            The ``vtkMRMLScalarVolumeNode``; show it as the slice foreground, e.g. with
            ``slicer.util.setSliceViewerLayers(foreground=node, foregroundOpacity=0.5)``.
        """
        scene = scene if scene is not None else result.segmentation_node.GetScene()
        query = result.queries.query(index)
        path = result.queries.query_map_path(index)
        name = f"MaskMed query {index} ({query['class_name']})"
        node = query_probability_volume(path, result.reference_volume_node, scene, name, volume_node=volume_node)
        node.SetAttribute("MaskMed.QueryIndex", str(index))
        if threshold is not None:
            self.add_query_segment(result, index, threshold, scene)
        return node

    def add_query_segment(self, result: SegmentationResult, index: int, threshold: float = 0.5, scene=None) -> str:
        """Add query ``index``'s mask (probability >= ``threshold``) to the result's segmentation node.

        Returns:
            The segment ID, ``query_XX`` (replaced if it exists); its colour is the query's class colour.
        """
        import SimpleITK as sitk

        if not 0.0 < threshold <= 1.0:
            raise MaskMedSlicerError(f"threshold must be in (0, 1], got {threshold}")
        scene = scene if scene is not None else result.segmentation_node.GetScene()
        query = result.queries.query(index)
        image = read_image(result.queries.query_map_path(index))
        names = result.queries.label_names
        colors = default_label_colors(names) if len(names) > 1 else [(1.0, 1.0, 0.0)] * 2
        color = colors[query["class_index"]] if 0 < query["class_index"] < len(colors) else (1.0, 1.0, 0.0)
        return add_binary_segment(
            sitk.GreaterEqual(image, float(threshold)),
            result.segmentation_node,
            f"query_{index:02d}",
            f"Q{index} {query['class_name']} (p >= {threshold:g})",
            color,
            scene,
        )

    # ------------------------------------------------------------------------------------ cleanup
    def cleanup(self, result: SegmentationResult, remove_nodes_too: bool = False) -> None:
        """Delete the result's prediction folder; with ``remove_nodes_too`` also its nodes."""
        shutil.rmtree(result.output_dir, ignore_errors=True)
        if remove_nodes_too:
            scene = result.segmentation_node.GetScene()
            if scene is not None:
                remove_nodes(scene, result.nodes())

    # ------------------------------------------------------------------------------------ training
    def start_training(
        self,
        dataset_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        preset: str = "paper",
        epochs: int = 1000,
        fold: int = 0,
        device: str = "auto",
        python_executable: str | os.PathLike | None = None,
        extra: Sequence[str] = (),
    ) -> MaskMedProcess:
        """Start ``maskmed train`` in the background and return the running process (non-blocking).

        Poll ``process.events()`` (e.g. from a QTimer), feed ``epoch`` events to a
        :class:`~MaskMedSlicerLib.progress.TrainingCurve`; ``process.request_stop()`` stops after the
        current iteration with a resumable checkpoint (``extra=("--resume",)`` continues),
        ``process.cancel()`` kills it at once.
        """
        dataset = Path(dataset_dir)
        if not (dataset / "dataset.json").is_file():
            raise MaskMedSlicerError(
                f"{dataset} is not a raw dataset folder (no dataset.json); it needs dataset.json, imagesTr/, labelsTr/"
            )
        command = build_train_command(
            python_executable or sys.executable, dataset, out_dir, preset, epochs, fold, device, extra
        )
        return MaskMedProcess(command, subprocess_env()).start()
