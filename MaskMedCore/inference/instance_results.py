"""Instances, boxes and case-level classes of one case, collected from the sliding-window tiles and given in
the input image's geometry (issue 12).

:class:`TileOutputCollector` gathers, per tile, the instance candidates of the un-mirrored pass
(``MaskMedCore.inference.instances``) and the case-task probabilities of every pass. It keys them by
tile origin (and mirror axes), so tiles the sliding window predicts again after an out-of-memory error
replace their first results instead of counting twice.

:func:`restore_instances` takes the merged instance map back to the input's voxel grid with nearest
neighbour (through the crop and resampling of ``preprocess_case``) and measures every instance there.
An instance that no input voxel receives (smaller than an input voxel) is left out and the ids are
renumbered, so the written map holds exactly ids 1..n, in descending score.

Box conventions (the ``boxes`` of ``<case>_summary.json``): ``index_min``/``index_max`` are inclusive
voxel indices of the written image in SimpleITK (x, y, z) order, ``center_lps`` the physical centre
(``TransformContinuousIndexToPhysicalPoint`` of the index-space centre), ``size_mm`` the extent along
the image axes (voxels x spacing). Head boxes are continuous: their indices are the voxels whose
centres they contain (clipped to the image); centre and size are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from MaskMedCore.errors import CheckpointError
from MaskMedCore.inference.instances import InstanceCandidate, MergedInstances, merge_candidates, tile_candidates
from MaskMedCore.inference.sliding_window import TilePass


@dataclass
class InstanceInfo:
    """One instance of the written instance map (``<case>_instances<ending>``, value = ``id``)."""

    id: int
    class_name: str
    label_value: int
    score: float
    volume_ml: float
    voxel_count: int
    query: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BoxInfo:
    """A 3D box of an instance in the input image; ``source`` is ``mask`` (around its voxels) or ``head``."""

    instance: int
    source: str
    index_min: list[int]
    index_max: list[int]
    center_lps: list[float]
    size_mm: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CaseTaskPrediction:
    """A case-level task: the most probable class and every class's probability (mean over tiles and passes)."""

    predicted: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


class TileOutputCollector:
    """Collects instance candidates and case-task probabilities from ``predict_fn`` calls.

    Args:
        instance_classes: label values predicted as instances (empty: no candidates are collected).
        case_tasks: ``ModelConfig.case_tasks``, ``((task name, (class names...)), ...)``.
        threshold: minimum instance score.
    """

    def __init__(
        self,
        instance_classes: Sequence[int],
        case_tasks: Sequence[tuple[str, Sequence[str]]],
        threshold: float,
    ) -> None:
        self.instance_classes = tuple(instance_classes)
        self.case_tasks = tuple(case_tasks)
        self.threshold = threshold
        self.volume_shape: tuple[int, int, int] | None = None
        self._candidates: dict[tuple[int, ...], list[InstanceCandidate]] = {}
        self._case_probs: dict[tuple, list[np.ndarray]] = {}

    def add(self, out, info: TilePass) -> None:
        """One ``predict_fn`` call: ``out`` a ``MaskMedOutput`` of B tiles, ``info`` their :class:`TilePass`.

        Uses ``class_logits`` (B, Q, K+1), ``mask_logits[-1]`` (B, Q, d, h, w), ``boxes`` (B, Q, 6) or
        None, and ``case_logits``, one (B, C_t) per task.
        """
        self.volume_shape = info.input_shape
        if self.case_tasks:
            if len(out.case_logits) != len(self.case_tasks):
                raise CheckpointError(
                    f"the model returned {len(out.case_logits)} case-level output(s) but its config lists "
                    f"{len(self.case_tasks)} case_tasks {[t[0] for t in self.case_tasks]}; the checkpoint does not "
                    "fit this MaskMed version"
                )
            for b, origin in enumerate(info.origins):
                probs = [logits[b].float().softmax(-1).cpu().numpy() for logits in out.case_logits]
                self._case_probs[(origin, info.mirror_axes)] = probs
        if not self.instance_classes or info.mirrored:
            return
        masks = out.mask_logits[-1]
        for b, (origin, start) in enumerate(zip(info.origins, info.input_origins)):
            self._candidates[origin] = tile_candidates(
                out.class_logits[b],
                masks[b],
                self.instance_classes,
                start,
                info.input_shape,
                boxes=None if out.boxes is None else out.boxes[b],
                threshold=self.threshold,
            )

    def merged(self) -> MergedInstances | None:
        """The merged instances of the preprocessed volume, or None without instance classes."""
        if not self.instance_classes:
            return None
        assert self.volume_shape is not None, "no tile was collected"
        candidates = [c for origin in sorted(self._candidates) for c in self._candidates[origin]]
        return merge_candidates(candidates, self.volume_shape)

    def case_classification(self) -> dict[str, CaseTaskPrediction] | None:
        """Mean softmax over all tiles and mirror passes per task, or None without case tasks."""
        if not self.case_tasks:
            return None
        assert self._case_probs, "no tile was collected"
        result = {}
        for t, (name, classes) in enumerate(self.case_tasks):
            mean = np.mean([probs[t] for probs in self._case_probs.values()], axis=0)
            result[name] = CaseTaskPrediction(
                predicted=classes[int(np.argmax(mean))],
                probabilities={c: float(p) for c, p in zip(classes, mean)},
            )
        return result


def box_info(image: sitk.Image, instance: int, source: str, edges: np.ndarray) -> BoxInfo:
    """A box from voxel-edge coordinates of the image's (D, H, W) array.

    Args:
        image: the written image (its geometry).
        instance: instance id.
        source: ``mask`` or ``head``.
        edges: (6,) ``(d0, h0, w0, d1, h1, w1)``; voxel ``i`` spans ``[i, i + 1)``.
    """
    lo = np.asarray(edges[:3], dtype=np.float64)[::-1]  # (D, H, W) -> SimpleITK (x, y, z)
    hi = np.asarray(edges[3:], dtype=np.float64)[::-1]
    size = np.asarray(image.GetSize())
    index_min = np.clip(np.round(lo), 0, size - 1).astype(int)
    index_max = np.maximum(index_min, np.clip(np.round(hi) - 1, 0, size - 1).astype(int))
    centre = (lo + hi) / 2 - 0.5  # continuous index: voxel centres at integers
    return BoxInfo(
        instance=instance,
        source=source,
        index_min=[int(v) for v in index_min],
        index_max=[int(v) for v in index_max],
        center_lps=[float(v) for v in image.TransformContinuousIndexToPhysicalPoint([float(c) for c in centre])],
        size_mm=[float(v) for v in (hi - lo) * np.asarray(image.GetSpacing())],
    )


def restore_instances(
    merged: MergedInstances, properties: dict, label_names: Sequence[str]
) -> tuple[sitk.Image, list[InstanceInfo], list[BoxInfo]]:
    """The instance map in the input's geometry, with every instance measured there.

    Args:
        merged: instances of the preprocessed volume (``merged.label_map`` at
            ``properties["shape_after_resampling"]``).
        properties: from ``preprocess_case``.
        label_names: name of each label value.

    Returns:
        The instance map (uint16, ids 1..n in descending score, the input's exact geometry), one
        :class:`InstanceInfo` per id, and per instance its ``mask`` box followed by its ``head`` box
        (when the model has a box head).
    """
    from MaskMedCore.data.preprocessing import array_to_image, preprocessed_to_original_edges, restore_label_map

    restored = restore_label_map(merged.label_map, properties)  # (D0, H0, W0) int32
    counts = np.bincount(restored.ravel(), minlength=len(merged.instances) + 1)
    kept = [inst for inst in merged.instances if counts[inst.id] > 0]
    if len(kept) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(kept)} instances do not fit a uint16 instance map")
    renumber = np.zeros(len(merged.instances) + 1, dtype=np.uint16)
    for new_id, inst in enumerate(kept, start=1):
        renumber[inst.id] = new_id
    out = renumber[restored]  # (D0, H0, W0) uint16
    image = array_to_image(out, properties)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    objects = _object_bounds(out, len(kept))
    infos, boxes = [], []
    for new_id, inst in enumerate(kept, start=1):
        count = int(counts[inst.id])
        infos.append(
            InstanceInfo(
                id=new_id,
                class_name=label_names[inst.class_value],
                label_value=inst.class_value,
                score=float(inst.score),
                volume_ml=count * voxel_ml,
                voxel_count=count,
                query=inst.query,
            )
        )
        bounds = objects[new_id - 1]
        mask_edges = np.array([s.start for s in bounds] + [s.stop for s in bounds], dtype=np.float64)
        boxes.append(box_info(image, new_id, "mask", mask_edges))
        if inst.box is not None:
            edges = preprocessed_to_original_edges(np.reshape(inst.box, (2, 3)), properties).reshape(6)
            boxes.append(box_info(image, new_id, "head", edges))
    return image, infos, boxes


def _object_bounds(labels: np.ndarray, n: int) -> list[tuple[slice, ...]]:
    """Bounding slices of ids 1..n (all present) in a (D, H, W) map."""
    from scipy import ndimage

    found = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=n)
    assert all(f is not None for f in found), "every kept instance has voxels"
    return found
