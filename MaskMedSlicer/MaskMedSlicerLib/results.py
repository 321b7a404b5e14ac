"""What a segmentation run is while it runs (:class:`SegmentationJob`) and what it leaves (:class:`SegmentationResult`).

A job owns two temporary folders (the exported inputs, the child's prediction folder); both are deleted
when the job is finished or cancelled, so a run leaves no file behind. A result owns the nodes it added
besides the segmentation (four table nodes) and the compact per-query maps (:mod:`.query_maps`); the
instance nodes of a model with instances, boxes or case tasks (:mod:`.instance_views`) are results like
the segmentation: clearing the inspection data keeps them, the next such run on the volume replaces them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.instance_views import InstanceNodes
from MaskMedSlicerLib.models import ModelInfo
from MaskMedSlicerLib.process import MaskMedProcess
from MaskMedSlicerLib.query_maps import QueryMap
from MaskMedSlicerLib.query_views import QueryResults
from MaskMedSlicerLib.roi import RoiCrop
from MaskMedSlicerLib.scene_setup import remove_nodes


@dataclass
class SegmentationJob:
    """A prediction running in a child process (see :meth:`MaskMedLogic.start_segmentation`).

    Attributes:
        process: the running child; poll ``process.events()`` and ``process.running``.
        model: the model it runs.
        volume_nodes: the input volumes (the first is the reference geometry).
        scene: the scene the result goes to.
        input_dir: temporary copy of the inputs (deleted by finish/cancel).
        output_dir: the child's prediction folder (deleted by finish/cancel).
        segmentation_node: node to write into, or None for a new one.
        use_terminology: standard names, colours and terminology tags where known.
        crop: the ROI's part of the volume, or None for the whole volume.
        messages: lines for the log about the run's set-up (e.g. the ROI was clipped).
    """

    process: MaskMedProcess
    model: ModelInfo
    volume_nodes: list
    scene: object
    input_dir: Path
    output_dir: Path
    segmentation_node: object = None
    use_terminology: bool = False
    crop: RoiCrop | None = None
    messages: list[str] = field(default_factory=list)

    def remove_files(self) -> None:
        """Delete both temporary folders (idempotent)."""
        shutil.rmtree(self.input_dir, ignore_errors=True)
        shutil.rmtree(self.output_dir, ignore_errors=True)


@dataclass
class SegmentationResult:
    """What :meth:`MaskMedLogic.segment` added to the scene, and the query maps it keeps in memory.

    Attributes:
        segmentation_node: one segment per model class (segment ID = class name).
        summary_table: one row per query (index, class, score, volume (mL), no object); None for a model
            without queries (nnU-Net, point-wise head).
        class_probability_table: (Q, K+1) table, or None without embeddings.
        class_embedding_table: (Q, E) table, or None.
        mask_embedding_table: (Q, C) table, or None.
        queries: the parsed query summary and matrices.
        query_maps: query index -> compact probability map (empty when run without save_queries).
        reference_volume_node: the first input volume (geometry of every output).
        model: the model that produced it.
        crop: the ROI's part of the volume it was predicted in, or None.
        instances: the instance segmentation, box ROIs and instance / case-classification tables, or None
            for a model without instances, boxes or case tasks.
    """

    segmentation_node: object
    summary_table: object
    class_probability_table: object | None
    class_embedding_table: object | None
    mask_embedding_table: object | None
    queries: QueryResults
    query_maps: dict[int, QueryMap] = field(default_factory=dict)
    reference_volume_node: object = None
    model: ModelInfo | None = None
    crop: RoiCrop | None = None
    instances: InstanceNodes | None = None

    @property
    def has_queries(self) -> bool:
        """False for a point-wise model (nnU-Net, point-wise head): nothing per query to inspect."""
        return self.queries.has_queries

    def tables(self) -> list:
        """The table nodes this result added (present ones)."""
        tables = (self.summary_table, self.class_probability_table, self.class_embedding_table)
        return [n for n in (*tables, self.mask_embedding_table) if n is not None]

    def nodes(self) -> list:
        """The nodes this result added, the segmentation node first (then its tables and instance nodes)."""
        instance_nodes = self.instances.nodes() if self.instances is not None else []
        return [self.segmentation_node, *self.tables(), *instance_nodes]

    def query_map(self, index: int) -> QueryMap:
        """The compact probability map of query ``index``."""
        self.queries.query(index)  # raises for an unknown index
        if index not in self.query_maps:
            raise MaskMedSlicerError(f"no probability map for query {index}: segment with save_queries=True")
        return self.query_maps[index]

    def remove_tables(self) -> None:
        """Remove the result's table nodes from their scene and drop the query maps (the segmentation stays)."""
        scene = self.summary_table.GetScene() if self.summary_table is not None else None
        if scene is not None:
            remove_nodes(scene, self.tables())
        self.query_maps = {}
