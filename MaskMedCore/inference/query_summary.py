"""Per-query information of a whole-volume prediction, aggregated over sliding-window tiles.

Each tile has its own query predictions, so a query's class distribution, class embedding and
mask embedding for the whole volume are averages over tiles, weighted by how much of the
query's mask each tile holds (``sum of gaussian-weighted sigmoid(mask)``): tiles where the
query found nothing barely count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


class QueryAccumulator:
    """Mask-weighted running means of per-query class probabilities and embeddings.

    Shapes: Q queries, K+1 classes (last = no object), E_cls / C_0 embedding widths.
    """

    def __init__(self) -> None:
        self.weight: Tensor | None = None  # (Q,)
        self.class_prob: Tensor | None = None  # (Q, K+1)
        self.class_emb: Tensor | None = None  # (Q, E_cls)
        self.mask_emb: Tensor | None = None  # (Q, C_0)

    def add(
        self, class_logits: Tensor, class_emb: Tensor, mask_emb: Tensor, mask_mass: Tensor, decoupled: bool
    ) -> None:
        """Args (one tile batch):
        class_logits: (N, Q, K+1).
        class_emb: (N, Q, E_cls).
        mask_emb: (N, Q, C_0).
        mask_mass: (N, Q) weight of each query in each tile.
        decoupled: class_logits are logits (softmax) rather than a class-mixing matrix.
        """
        probs = class_logits.float().softmax(-1) if decoupled else class_logits.float()
        w = mask_mass.float().clamp_min(1e-6)[..., None]  # (N, Q, 1)
        parts = {
            "weight": w[..., 0].sum(0),
            "class_prob": (probs * w).sum(0),
            "class_emb": (class_emb.float() * w).sum(0),
            "mask_emb": (mask_emb.float() * w).sum(0),
        }
        for name, value in parts.items():
            value = value.detach().cpu()
            current = getattr(self, name)
            setattr(self, name, value if current is None else current + value)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(class_prob (Q, K+1), class_embeddings (Q, E_cls), mask_embeddings (Q, C_0)) as numpy."""
        if self.weight is None:
            raise RuntimeError("no tile was accumulated")
        w = self.weight[:, None]
        return (
            (self.class_prob / w).numpy(),
            (self.class_emb / w).numpy(),
            (self.mask_emb / w).numpy(),
        )


@dataclass
class QueryInfo:
    """What the Slicer Inspect panel and the JSON summary show for one query."""

    index: int
    class_index: int  # argmax over the K real classes (no-object excluded)
    class_name: str
    score: float  # class probability x mean mask probability inside the predicted mask
    no_object_probability: float
    class_distribution: list[float]  # (K+1,)
    volume_ml: float
    bbox: list[list[int]] | None  # [[d0, d1), [h0, h1), [w0, w1)] in original voxel indices, or None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def summarise_queries(
    class_prob: np.ndarray,
    query_maps: list[np.ndarray] | None,
    label_names: list[str],
    voxel_volume_ml: float,
) -> list[QueryInfo]:
    """QueryInfo per query from aggregated class probabilities and (optional) original-space mask maps."""
    infos = []
    for q, dist in enumerate(class_prob):
        k = int(np.argmax(dist[:-1]))
        volume, bbox, mask_score = 0.0, None, 1.0
        if query_maps is not None:
            prob = query_maps[q]
            mask = prob >= 0.5
            volume = float(mask.sum()) * voxel_volume_ml
            if mask.any():
                idx = np.argwhere(mask)
                bbox = [[int(a), int(b) + 1] for a, b in zip(idx.min(0), idx.max(0))]
                mask_score = float(prob[mask].mean())
            else:
                mask_score = 0.0
        infos.append(
            QueryInfo(
                index=q,
                class_index=k,
                class_name=label_names[k] if k < len(label_names) else str(k),
                score=float(dist[k]) * mask_score,
                no_object_probability=float(dist[-1]),
                class_distribution=[float(v) for v in dist],
                volume_ml=volume,
                bbox=bbox,
            )
        )
    return infos


def class_volumes_ml(labels: np.ndarray, label_names: list[str], voxel_volume_ml: float) -> dict[str, float]:
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(label_names))
    return {name: float(counts[k]) * voxel_volume_ml for k, name in enumerate(label_names) if k > 0}


def to_device_mass(mask_logits: Tensor, weights: Tensor) -> Tensor:
    """(N, Q) mask mass: sum over voxels of sigmoid(mask) x importance weights (D, H, W)."""
    return torch.einsum("nqdhw,dhw->nq", mask_logits.float().sigmoid(), weights.float())
