"""Whole-volume prediction with a trained MaskMed checkpoint: the Python API behind ``maskmed predict``
and the Slicer module.

    predictor = Predictor.from_checkpoint("run/", device="auto")
    result = predictor.predict("case_0000.nii.gz", save_queries=True)
    result.labels            # SimpleITK label image with the input's exact geometry
    result.queries           # per-query class, score, volume, bounding box
    result.write("out/", "case")

Same preprocessing as training (``preprocess_case``), Gaussian-weighted sliding window with
optional mirroring TTA, then the per-class probabilities are resampled back one class at a time
(memory O(volume)) and arg-maxed in the input's original space.

Models with instance classes, a box head or case-level tasks (``ModelConfig.instance_classes``,
``box_head``, ``case_tasks``; issue 12) give more, from the same queries:

    result = predictor.predict("case_0000.nii.gz", instance_threshold=0.5)
    result.instance_map          # SimpleITK uint16 map, ids 1..n by descending score, input geometry
    result.instances             # [InstanceInfo(id, class_name, label_value, score, volume_ml, voxel_count, query)]
    result.boxes                 # [BoxInfo(instance, source "mask"/"head", index_min, index_max, center_lps, size_mm)]
    result.case_classification   # {"lesion_count": CaseTaskPrediction(predicted="one", probabilities={...})}

Instances come from the un-mirrored pass of every tile, merged across tiles
(``MaskMedCore.inference.instances`` documents the rule) and restored with nearest neighbour; case
tasks average the softmax over every tile and mirror pass. These fields are None for models that
do not predict them, and so are their keys in ``<case>_summary.json``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MaskMedCore.engine.checkpoint import Checkpoint, load_checkpoint
from MaskMedCore.engine.trainer import resolve_device
from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.inference.cpu_batching import (
    SLICE_TILE_BATCH,
    default_tile_batch,
    needs_batch_padding,
    network_forward,
    tile_counts,
)
from MaskMedCore.inference.instance_results import BoxInfo, CaseTaskPrediction, InstanceInfo, TileOutputCollector
from MaskMedCore.inference.instances import DEFAULT_THRESHOLD
from MaskMedCore.inference.precision import check_precision, forward_autocast
from MaskMedCore.inference.query_summary import (
    QueryAccumulator,
    QueryInfo,
    class_volumes_ml,
    summarise_queries,
    to_device_mass,
)
from MaskMedCore.io_utils import atomic_write_bytes, atomic_write_text

ImageInput = sitk.Image | str | os.PathLike


@dataclass
class Prediction:
    """Result of one case.

    Attributes:
        labels: label map (uint8) with exactly the input's size, spacing, origin and direction.
        label_names: name of each label value (index = value).
        queries: per-query class, score, volume and bounding box.
        class_volumes_ml: predicted volume of each foreground class.
        query_probabilities: per-query mask probability maps (float32, input geometry), if asked.
        class_embeddings: (Q, E_cls) mask-weighted mean class embedding per query.
        mask_embeddings: (Q, C_0) mask-weighted mean mask embedding per query.
        class_probabilities: (Q, K+1) mask-weighted mean class distribution per query.
        instances: per instance id (1..n): class, score, volume, voxel count, query; None when the model
            has no instance classes.
        instance_map: instance ids (uint16, 0 = none) with the input's geometry, or None.
        boxes: a ``mask`` box per instance, followed by its ``head`` box with a box head; None without
            instance classes.
        case_classification: task name -> predicted class and probabilities; None without case tasks.
    """

    labels: sitk.Image
    label_names: list[str]
    queries: list[QueryInfo]
    class_volumes_ml: dict[str, float]
    class_embeddings: np.ndarray
    mask_embeddings: np.ndarray
    class_probabilities: np.ndarray
    query_probabilities: list[sitk.Image] | None = None
    extra: dict = field(default_factory=dict)
    instances: list[InstanceInfo] | None = None
    instance_map: sitk.Image | None = None
    boxes: list[BoxInfo] | None = None
    case_classification: dict[str, CaseTaskPrediction] | None = None

    def summary(self) -> dict:
        """``<case>_summary.json``; ``extra`` adds keys (e.g. ``model`` for nnU-Net models, which have no queries).

        ``instances``, ``boxes`` and ``case_classification`` appear only when the model predicts them.
        """
        out = {
            "label_names": self.label_names,
            "class_volumes_ml": self.class_volumes_ml,
            "queries": [q.to_dict() for q in self.queries],
        }
        if self.instances is not None:
            out["instances"] = [i.to_dict() for i in self.instances]
        if self.boxes is not None:
            out["boxes"] = [b.to_dict() for b in self.boxes]
        if self.case_classification is not None:
            out["case_classification"] = {name: t.to_dict() for name, t in self.case_classification.items()}
        return {**out, **self.extra}

    def write(
        self,
        out_dir: str | os.PathLike,
        case_id: str,
        file_ending: str = ".nii.gz",
        save_queries: bool = False,
        save_embeddings: bool = False,
    ) -> dict[str, Path]:
        """Write ``<case><ending>`` (labels), ``<case>_instances<ending>`` (uint16 instance ids, when the model
        predicts instances), ``<case>_summary.json`` and, when asked, per-query maps in ``<case>_queries/`` and
        ``<case>_embeddings.npz``; every file atomically."""
        from MaskMedCore.data.image_io import write_image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = {"labels": out / f"{case_id}{file_ending}", "summary": out / f"{case_id}_summary.json"}
        write_image(self.labels, written["labels"])
        if self.instance_map is not None:
            written["instances"] = write_image(self.instance_map, out / f"{case_id}_instances{file_ending}")
        atomic_write_text(written["summary"], json.dumps(self.summary(), indent=2) + "\n")
        if save_queries and self.query_probabilities is not None:
            qdir = out / f"{case_id}_queries"
            qdir.mkdir(exist_ok=True)
            for info, image in zip(self.queries, self.query_probabilities, strict=True):
                write_image(image, qdir / f"query_{info.index:02d}_{info.class_name}{file_ending}")
            written["queries"] = qdir
        if save_embeddings:
            buffer = io.BytesIO()
            np.savez_compressed(
                buffer,
                class_embeddings=self.class_embeddings,
                mask_embeddings=self.mask_embeddings,
                class_probabilities=self.class_probabilities,
                label_names=np.array(self.label_names),
            )
            written["embeddings"] = atomic_write_bytes(out / f"{case_id}_embeddings.npz", buffer.getvalue())
        return written


def read_case_channels(image: ImageInput | Sequence[ImageInput], channel_names: Sequence[str]) -> list[sitk.Image]:
    """One case's channels (a SimpleITK image, a path, or one per channel), checked against the model's
    ``channel_names``: the right count, 3D, one voxel grid."""
    from MaskMedCore.data.image_io import read_image

    items = list(image) if isinstance(image, (list, tuple)) else [image]
    channels = [item if isinstance(item, sitk.Image) else read_image(item) for item in items]
    expected = len(channel_names)
    if len(channels) != expected:
        raise DataError(f"this model expects {expected} input channel(s) {list(channel_names)}, got {len(channels)}")
    for i, ch in enumerate(channels):
        if ch.GetDimension() != 3:
            raise DataError(f"input channel {i} is {ch.GetDimension()}D; expected a 3D image")
    ref = channels[0]
    for i, ch in enumerate(channels[1:], start=1):
        same = ch.GetSize() == ref.GetSize() and np.allclose(ch.GetSpacing(), ref.GetSpacing(), rtol=1e-3)
        if not same or not np.allclose(ch.GetOrigin(), ref.GetOrigin(), atol=1e-2):
            raise DataError(f"input channel {i} ({channel_names[i]}) does not share channel 0's geometry")
    return channels


class Predictor:
    """Args:
    checkpoint: a loaded checkpoint.
    device: ``auto``, ``cuda``, ``cpu`` or a torch device.
    tile_batch_size: tiles per network call; ``None`` picks :func:`default_tile_batch`.
    overlap: sliding-window overlap (nnU-Net: 0.5).
    tta: mirroring test-time augmentation over the plan's axes (all three; H and W for a 2D plan).
    precision: ``auto`` (bfloat16 on CUDA, float32 on the CPU), ``fp32`` or ``bf16`` (also on CPUs with native
        bfloat16); see ``MaskMedCore.inference.precision``.
    reuse_constant_tiles: run the network once per distinct constant tile (CT air, padding) and reuse its
        output (``constant_tiles``; exact). ``tile_counts`` then says how many tiles were computed/reused.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | torch.device = "auto",
        tile_batch_size: int | None = None,
        overlap: float = 0.5,
        tta: bool = False,
        reuse_constant_tiles: bool = True,
        precision: str = "auto",
    ) -> None:
        self.checkpoint = checkpoint
        self.reuse_constant_tiles = reuse_constant_tiles
        self.tile_counts = {"computed": 0, "reused": 0}
        self.plan = checkpoint.plan
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.precision = check_precision(precision, self.device)
        self.model = checkpoint.build_model(self.device)
        self.model.deep_supervision = False
        if tile_batch_size is None:
            tile_batch_size = default_tile_batch(
                self.device, checkpoint.model_config.features_per_stage[0], self.plan.patch_size
            )
            if self.plan.spatial_dims == 2:  # one-slice tiles: predict several slices per network call
                tile_batch_size = max(tile_batch_size, SLICE_TILE_BATCH)
        self.tile_batch_size = tile_batch_size
        self.min_batch = (
            2
            if needs_batch_padding(self.device, checkpoint.model_config.features_per_stage[0], self.plan.patch_size)
            else 1
        )
        self.overlap = overlap
        self.tta = tta

    @classmethod
    def from_nnunet(cls, folder: str | os.PathLike, device: str | torch.device = "auto", **kwargs):
        """An nnU-Net v2 result folder, run as nnU-Net runs it (see ``MaskMedCore.nnunet.predictor``);
        ``kwargs``: ``folds``, ``checkpoint``, ``tta``, ``step_size``, ``tile_batch_size``."""
        from MaskMedCore.nnunet.predictor import NnUNetModelPredictor

        return NnUNetModelPredictor(folder, device=device, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto", **kwargs) -> Predictor:
        """From a checkpoint file or a run folder (its best checkpoint)."""
        return cls(load_checkpoint(path), device, **kwargs)

    @property
    def label_names(self) -> list[str]:
        return self.plan.label_names

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self.plan.channel_names

    def read_channels(self, image: ImageInput | Sequence[ImageInput]) -> list[sitk.Image]:
        return read_case_channels(image, self.channel_names)

    def predict(
        self,
        image: ImageInput | Sequence[ImageInput],
        *,
        save_queries: bool = False,
        instance_threshold: float = DEFAULT_THRESHOLD,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Prediction:
        """Segment one case (a SimpleITK image, a path, or one per channel).

        Args:
            image: the case.
            save_queries: also restore every query's mask probability map.
            instance_threshold: minimum instance score (class probability x mean mask probability), in (0, 1];
                used only by models with instance classes.
            progress: ``progress(done_tiles, total_tiles)``.
            cancel: checked before every tile batch.

        Raises:
            ConfigError: ``instance_threshold`` outside (0, 1].
            DataError: unreadable or unfitting input.
        """
        from MaskMedCore.data.preprocessing import array_to_image, preprocess_case, restore_labels, restore_map
        from MaskMedCore.inference.instance_results import restore_instances
        from MaskMedCore.inference.sliding_window import TilePass, gaussian_importance_map, sliding_window_predict
        from MaskMedCore.models.outputs import semantic_probs

        if not (isinstance(instance_threshold, (int, float)) and 0.0 < instance_threshold <= 1.0):
            raise ConfigError(f"instance threshold must be in (0, 1], got {instance_threshold!r}")
        channels = self.read_channels(image)
        array, _, properties = preprocess_case(channels, None, self.plan)
        K = self.plan.num_classes
        accumulator = QueryAccumulator()
        config = self.checkpoint.model_config
        collector = TileOutputCollector(config.instance_classes, config.case_tasks, float(instance_threshold))
        weights = {}
        forward = network_forward(self.model, self.min_batch, self.reuse_constant_tiles)

        def predict_fn(tiles: torch.Tensor, info: TilePass) -> torch.Tensor:
            if next(self.model.parameters()).device != tiles.device:  # CPU fallback after CUDA OOM
                self.model.to(tiles.device)
            with torch.no_grad(), forward_autocast(tiles.device, self.precision, torch.bfloat16):
                out = forward(tiles)
            key = (tiles.device, tuple(tiles.shape[2:]))
            if key not in weights:
                weights[key] = gaussian_importance_map(tuple(tiles.shape[2:]), 1 / 8, tiles.device, torch.float32)
            mass = to_device_mass(out.mask_logits[-1], weights[key])
            accumulator.add(out.class_logits, out.class_embeddings, out.mask_embeddings, mass, out.decoupled)
            collector.add(out, info)
            probs = semantic_probs(out)
            if save_queries:
                masks = out.mask_logits[-1].float()
                masks = masks.sigmoid() if out.decoupled else masks.softmax(1)
                probs = torch.cat([probs, masks], dim=1)
            return probs

        merged = sliding_window_predict(
            torch.from_numpy(np.ascontiguousarray(array)),
            predict_fn,
            self.plan.patch_size,
            overlap=self.overlap,
            tile_batch_size=self.tile_batch_size,
            mirror_axes=self.plan.mirror_axes if self.tta else (),
            device=self.device,
            progress=progress,
            cancel=cancel,
            tile_info=True,
        )
        self.tile_counts = tile_counts(forward)
        labels = restore_labels(merged[:K], properties).astype(np.uint8)
        label_image = array_to_image(labels, properties)
        spacing = label_image.GetSpacing()
        voxel_ml = float(np.prod(spacing)) / 1000.0
        query_maps = None
        if save_queries:
            query_maps = [restore_map(merged[K + q].numpy(), properties) for q in range(merged.shape[0] - K)]
        class_prob, class_emb, mask_emb = accumulator.result()
        infos = summarise_queries(class_prob, query_maps, self.label_names, voxel_ml)
        merged_instances = collector.merged()
        instance_map = instances = boxes = None
        if merged_instances is not None:
            instance_map, instances, boxes = restore_instances(merged_instances, properties, self.label_names)
        return Prediction(
            labels=label_image,
            label_names=self.label_names,
            queries=infos,
            class_volumes_ml=class_volumes_ml(labels, self.label_names, voxel_ml),
            class_embeddings=class_emb,
            mask_embeddings=mask_emb,
            class_probabilities=class_prob,
            query_probabilities=None if query_maps is None else [array_to_image(m, properties) for m in query_maps],
            instances=instances,
            instance_map=instance_map,
            boxes=boxes,
            case_classification=collector.case_classification(),
        )
