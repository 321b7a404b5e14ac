"""MaskMedLogic: segment volume nodes with a MaskMed model and inspect its queries, without Qt.

Usable from the Slicer Python console and from plain Python on ``slicer-core``::

    logic = MaskMedLogic()
    result = logic.segment([volume_node], scene=scene)                  # bundled demo model
    result = logic.segment([volume_node], model="hippocampus", roi=roi)  # a bundled model, inside an ROI
    overlay = logic.show_query(result, 3)                                 # query 3's probability map
    data = logic.instances(result)                                        # instances, boxes, case tasks
    logic.cleanup(result)                                                 # remove its table nodes

``segment`` blocks: it runs ``python -m MaskMedCore predict`` in a child process and polls it, calling
``progress(event)`` for each parsed line and ``cancel()`` between polls. A GUI that must not block uses
the two halves instead (the panel does, through :class:`~MaskMedSlicerLib.segment_task.SegmentTask`):
``job = logic.start_segmentation(...)``, poll ``job.process.events()`` until ``job.process.running`` is
False, then ``logic.finish_segmentation(job)`` (or ``logic.cancel_segmentation(job)``). Both paths run
the same input checks. Inside Slicer, ``python_executable`` should be ``PythonSlicer``.

Temporary files live only while a job runs: finishing loads the label map, the query tables and compact
query maps (:mod:`.query_maps`) into memory and the scene, and, for a model with instances, boxes or case
tasks, the instance map and those summary keys (:mod:`.instance_results`, :mod:`.instance_views`), then
deletes the job's folders.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from MaskMedSlicerLib.errors import MaskMedSlicerError, SegmentationCancelled
from MaskMedSlicerLib.inputs import check_channels, check_inputs, node_label, resolve_model
from MaskMedSlicerLib.instance_results import InstanceOutputs, read_instance_outputs
from MaskMedSlicerLib.instance_views import add_instance_nodes
from MaskMedSlicerLib.models import ModelInfo, read_model_info
from MaskMedSlicerLib.process import MaskMedProcess, build_predict_command, build_train_command, subprocess_env
from MaskMedSlicerLib.progress import ProgressEvent
from MaskMedSlicerLib.query_maps import compact_query_map
from MaskMedSlicerLib.query_views import QueryResults, query_overlay_volume
from MaskMedSlicerLib.results import SegmentationJob, SegmentationResult
from MaskMedSlicerLib.roi import crop_image, mask_outside, roi_crop
from MaskMedSlicerLib.scene_setup import remove_nodes, removed_on_error
from MaskMedSlicerLib.segmentation_io import add_binary_segment, default_label_colors, labelmap_to_segmentation
from MaskMedSlicerLib.volume_io import channel_images_from_volume_node, ijk_to_ras, read_image, write_image

CASE_ID = "case"
FILE_ENDING = ".nii.gz"

ProgressCallback = Callable[[ProgressEvent], None]


class MaskMedLogic:
    """Qt-free MaskMed logic.

    Args:
        temp_root: folder for the temporary folders of running jobs (default: the system's).
        poll_interval: seconds between checks of the child process in :meth:`segment`.
    """

    def __init__(self, temp_root: str | os.PathLike | None = None, poll_interval: float = 0.1) -> None:
        self.temp_root = Path(temp_root) if temp_root is not None else None
        self.poll_interval = poll_interval
        self._model_infos: dict[tuple[str, float], ModelInfo] = {}

    # ------------------------------------------------------------------------------------ models
    def model_info(self, model: str | os.PathLike | ModelInfo | None = None) -> ModelInfo:
        """ModelInfo of a checkpoint, run folder, nnU-Net result folder or bundled model name (None: the demo
        model); cached until the files it was read from change. Only MaskMed checkpoints need torch."""
        if isinstance(model, ModelInfo):
            return model
        path = resolve_model(model)
        key = _model_cache_key(path)
        if key not in self._model_infos:
            self._model_infos[key] = read_model_info(path)
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
        roi=None,
    ) -> SegmentationResult:
        """Segment one case and load the result into the scene (blocking).

        Args:
            volume_nodes: one scalar volume node per model channel, in channel order, on one voxel grid; a
                colour (vector) volume gives 3 channels R, G, B (RGBA: alpha dropped), e.g. one RGB photo
                for a model of R, G, B channels. One-slice volumes (2D images) are segmented like any other.
            model: checkpoint file, run folder, nnU-Net v2 result folder (a point-wise model: the result has
                no queries), bundled model name (``"phantom"``, ``"hippocampus"``) or ModelInfo; None: the
                bundled demo model.
            device: ``auto``, ``cuda`` or ``cpu``.
            scene: the ``vtkMRMLScene``; default: the scene of the first volume.
            progress: called with every parsed child event and a few of our own (``message`` kind).
            cancel: polled every ``poll_interval`` s; True kills the child and raises SegmentationCancelled.
            save_queries: keep each query's probability map (needed by :meth:`show_query`).
            use_terminology: standard segment names, colours and terminology tags where known.
            python_executable: interpreter with torch and MaskMedCore's dependencies (Slicer: PythonSlicer);
                default ``sys.executable``.
            segmentation_node: write into this node (MaskMed's segments replaced, others kept).
            save_embeddings: write the embedding matrices (the query tables need them).
            roi: a markups ROI node: predict only inside it (the crop of the volume it covers, clipped to
                the volume); the result is placed in the whole volume's geometry, empty outside the ROI.

        Returns:
            The SegmentationResult; no temporary file is left.

        Raises:
            SegmentationCancelled: ``cancel()`` returned True; the scene is as before the call.
            MaskMedSlicerError: bad inputs (an ROI that misses the volume included), the child failed
                (message: its last error line), or the outputs could not be read. No node of this call
                is left in the scene.
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
            roi=roi,
        )
        for message in job.messages:
            report(ProgressEvent("message", None, message))
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
        roi=None,
    ) -> SegmentationJob:
        """Non-blocking first half of :meth:`segment`: check the inputs, write them, start the child.

        Poll ``job.process.events()`` (never blocks) until ``job.process.running`` is False, then call
        :meth:`finish_segmentation` (on the main thread), or :meth:`cancel_segmentation` to abort. The
        scene is not touched until :meth:`finish_segmentation`. Arguments as for :meth:`segment`;
        ``job.messages`` says what was cropped.
        """
        nodes, scene = check_inputs(volume_nodes, scene)
        if segmentation_node is not None and segmentation_node.GetScene() is not scene:
            raise MaskMedSlicerError(f"segmentation node '{segmentation_node.GetName()}' is not in the given scene")
        crop = roi_crop(nodes[0], roi) if roi is not None else None
        info = self.model_info(model)
        check_channels(nodes, info.channel_names, info.title)
        input_dir = Path(tempfile.mkdtemp(prefix="maskmed-input-", dir=self.temp_root))
        output_dir = Path(tempfile.mkdtemp(prefix="maskmed-result-", dir=self.temp_root))
        try:
            files = []
            channels = [(node, image) for node in nodes for image in channel_images_from_volume_node(node)]
            for channel, (node, image) in enumerate(channels):
                path = input_dir / f"{CASE_ID}_{channel:04d}{FILE_ENDING}"
                files.append(write_image(crop_image(image, crop) if crop else image, path, node_label(node)))
            command = build_predict_command(
                python_executable or sys.executable,
                info.path,
                files,
                output_dir,
                device=device,
                save_queries=save_queries and info.has_queries,  # an nnU-Net model has no queries to save
                save_embeddings=save_embeddings and info.has_queries,
                output_format=FILE_ENDING,
            )
            process = MaskMedProcess(command, subprocess_env()).start()
        except BaseException:
            SegmentationJob(None, info, nodes, scene, input_dir, output_dir).remove_files()
            raise
        job = SegmentationJob(
            process, info, nodes, scene, input_dir, output_dir, segmentation_node, use_terminology, crop
        )
        if crop is not None:
            job.messages.append(crop.message)
        return job

    def finish_segmentation(self, job: SegmentationJob) -> SegmentationResult:
        """Second half of :meth:`segment`, once ``job.process`` has ended: load its result into the scene.

        The job's folders are deleted whatever happens.

        Raises:
            MaskMedSlicerError: the child is still running or failed (message: its error line), an input
                volume left the scene, or the outputs cannot be read. Nothing is left in the scene.
        """
        if job.process.running:
            raise MaskMedSlicerError("the MaskMed prediction is still running; wait for it or cancel it")
        job.process.wait()
        try:
            if job.process.returncode != 0:
                raise MaskMedSlicerError(job.process.describe_failure("MaskMed prediction"))
            reference = job.volume_nodes[0]
            if reference.GetScene() is not job.scene:
                raise MaskMedSlicerError(f"{node_label(reference)} was removed while MaskMed was running")
            return self.import_result(
                job.output_dir,
                reference,
                job.model,
                job.scene,
                job.segmentation_node,
                job.use_terminology,
                crop=job.crop,
            )
        finally:
            job.remove_files()

    @staticmethod
    def cancel_segmentation(job: SegmentationJob) -> None:
        """Kill the job's process tree and delete its files (the scene was never touched)."""
        job.process.cancel()
        job.remove_files()

    def import_result(
        self,
        output_dir: Path,
        reference,
        info: ModelInfo,
        scene,
        segmentation_node=None,
        use_terminology=False,
        crop=None,
    ) -> SegmentationResult:
        """Load a finished prediction folder (``maskmed predict`` output for one case) into ``scene``.

        Everything it adds is removed again if any step fails; the folder itself is left to the caller.
        Args as in :meth:`segment`; ``reference`` is the first input volume node (the geometry of every
        output) and ``crop`` the :class:`~MaskMedSlicerLib.roi.RoiCrop` the inputs were cut to, if any.
        Instance outputs (instance map, ``instances`` / ``boxes`` / ``case_classification``) are checked
        before anything is added and loaded last (:func:`~MaskMedSlicerLib.instance_views.add_instance_nodes`:
        they replace the volume's previous instance nodes); a summary without those keys adds nothing more.
        """
        queries = QueryResults.load(output_dir, CASE_ID)
        names = queries.label_names or list(info.label_names)
        base = reference.GetName()
        labels = read_image(Path(output_dir) / f"{CASE_ID}{FILE_ENDING}")
        instance_outputs = read_instance_outputs(output_dir, CASE_ID, FILE_ENDING, queries.summary, labels)
        if crop is not None:
            labels = mask_outside(labels, crop)
        grid = ijk_to_ras(reference)
        extent = reference.GetImageData().GetExtent()
        grid[:3, 3] = grid[:3, :3] @ np.array(extent[::2], np.float64) + grid[:3, 3]  # voxel [0,0,0] of the array
        grid_shape = tuple(reversed(reference.GetImageData().GetDimensions()))
        inside = crop.inside if crop is not None else None
        query_maps = {
            index: compact_query_map(read_image(path), grid, grid_shape, inside)
            for index, path in queries.query_maps.items()
        }
        queries.query_maps = {}  # the files go with the folder
        with removed_on_error(scene):
            segmentation = labelmap_to_segmentation(
                labels,
                reference,
                names,
                scene,
                colors=default_label_colors(names),
                segmentation_node=segmentation_node,
                name=f"{base} MaskMed segmentation",
                use_terminology=use_terminology,
                source=f"the predicted label map of {node_label(reference)}",
            )
            has_matrices = queries.class_probabilities is not None
            result = SegmentationResult(
                segmentation_node=segmentation,
                summary_table=queries.summary_table(scene, f"{base} MaskMed queries") if queries.has_queries else None,
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
                query_maps=query_maps,
                reference_volume_node=reference,
                model=info,
                crop=crop,
            )
            result.instances = add_instance_nodes(instance_outputs, reference, scene, crop, use_terminology)
            return result

    # ------------------------------------------------------------------------------------ instances
    @staticmethod
    def instances(result: SegmentationResult) -> dict:
        """A result's instances, boxes and case classification as plain Python data (for scripts).

        Returns:
            ``{"instances": [...], "boxes": [...], "case_classification": {...}}``, empty lists / dict for a
            model without them. Instances (by id) carry ``id``, ``class_name``, ``score``, ``voxel_count``,
            ``volume_ml``, ``label_value``, ``query`` and ``segment_id`` (in ``result.instances.segmentation_node``);
            boxes ``instance``, ``source`` (``mask`` | ``head``), ``index_min`` / ``index_max`` (inclusive IJK of
            the volume), ``center_lps``, ``center_ras``, ``size_mm`` and ``roi_node_id``; each case task
            ``predicted``, ``probability`` (of the prediction) and ``probabilities`` (class -> p).
        """
        if result.instances is None:
            return InstanceOutputs("").as_dict()
        return result.instances.as_dict()

    # ------------------------------------------------------------------------------------ queries
    def show_query(self, result: SegmentationResult, index: int, scene=None, volume_node=None, threshold=None):
        """Show query ``index``'s probability map (0..1, viridis) as an overlay volume.

        Args:
            result: a :meth:`segment` result run with save_queries.
            index: query index (the ``index`` column of the summary table).
            scene: default: the segmentation node's scene.
            volume_node: reuse this node (e.g. the overlay of the previously shown query).
            threshold: also add the query's mask (probability >= threshold) as a segment
                (see :meth:`add_query_segment`).

        Returns:
            The ``vtkMRMLScalarVolumeNode`` (the map's non-zero box, on the volume's grid); show it as the
            slice foreground, e.g. ``slicer.util.setSliceViewerLayers(foreground=node, foregroundOpacity=0.5)``.
        """
        scene = scene if scene is not None else result.segmentation_node.GetScene()
        query = result.queries.query(index)
        name = f"MaskMed query {index} ({query['class_name']})"
        image = result.query_map(index).image()
        node = query_overlay_volume(image, result.reference_volume_node, scene, name, volume_node=volume_node)
        node.SetAttribute("MaskMed.QueryIndex", str(index))
        if threshold is not None:
            self.add_query_segment(result, index, threshold, scene)
        return node

    def add_query_segment(self, result: SegmentationResult, index: int, threshold: float = 0.5, scene=None) -> str:
        """Add query ``index``'s mask (probability >= ``threshold``) to the result's segmentation node.

        Returns:
            The segment ID, ``query_XX`` (replaced if it exists); its colour is the query's class colour.
        """
        scene = scene if scene is not None else result.segmentation_node.GetScene()
        query = result.queries.query(index)
        mask = result.query_map(index).image(threshold=threshold)
        names = result.queries.label_names
        colors = default_label_colors(names) if len(names) > 1 else [(1.0, 1.0, 0.0)] * 2
        color = colors[query["class_index"]] if 0 < query["class_index"] < len(colors) else (1.0, 1.0, 0.0)
        return add_binary_segment(
            mask,
            result.segmentation_node,
            f"query_{index:02d}",
            f"Q{index} {query['class_name']} (p >= {threshold:g})",
            color,
            scene,
            reference_volume_node=result.reference_volume_node,
        )

    # ------------------------------------------------------------------------------------ cleanup
    @staticmethod
    def cleanup(result: SegmentationResult, remove_nodes_too: bool = False) -> None:
        """Remove the result's table nodes and query maps; with ``remove_nodes_too`` its segmentation and
        instance nodes too."""
        result.remove_tables()
        if remove_nodes_too:
            scene = result.segmentation_node.GetScene()
            if scene is not None:
                instance_nodes = result.instances.nodes() if result.instances is not None else []
                remove_nodes(scene, [result.segmentation_node, *instance_nodes])

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

        See :class:`~MaskMedSlicerLib.training_task.TrainingTask` for the state machine the panel uses.
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


def _model_cache_key(path: Path) -> tuple[str, float]:
    """(file, newest mtime) of what a model's info is read from: a run's best/latest checkpoint, an nnU-Net
    folder's plans.json and dataset.json, or the checkpoint file itself."""
    files = [path]
    if path.is_dir():
        run = [path / n for n in ("checkpoint_best.pt", "checkpoint_latest.pt") if (path / n).is_file()]
        files = run[:1] or [path / n for n in ("plans.json", "dataset.json") if (path / n).is_file()] or [path]
    mtimes = [f.stat().st_mtime for f in files if f.exists()]
    return str(files[0].resolve()), max(mtimes, default=0.0)
