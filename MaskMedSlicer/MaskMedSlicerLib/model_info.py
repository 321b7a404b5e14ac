"""What a model segments and from which input: :class:`ModelInfo`, for MaskMed checkpoints and nnU-Net folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KINDS = ("maskmed", "nnunet")


@dataclass(frozen=True)
class ModelInfo:
    """What a model segments.

    Attributes:
        path: the checkpoint file (a run folder resolves to its best, else latest, checkpoint), or the nnU-Net
            result folder (``Trainer__Plans__configuration``).
        channel_names: one name per input channel, in order (C).
        label_names: K names, index = label value, 0 = background.
        dataset_name: the training dataset's name.
        kind: ``maskmed`` (a MaskMed checkpoint) or ``nnunet`` (an nnU-Net v2 result folder, point-wise:
            it has no queries).
        configuration: the nnU-Net configuration, e.g. ``3d_fullres`` ("" for MaskMed checkpoints).
        target_spacing: (D, H, W) spacing in mm the model resamples to, when known.
    """

    path: Path
    channel_names: tuple[str, ...]
    label_names: tuple[str, ...]
    dataset_name: str
    kind: str = "maskmed"
    configuration: str = ""
    target_spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ModelInfo.kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Foreground class names (K - 1)."""
        return self.label_names[1:]

    @property
    def has_queries(self) -> bool:
        """False for nnU-Net models: a point-wise network predicts no per-query masks."""
        return self.kind != "nnunet"

    @property
    def title(self) -> str:
        """``dataset (run/checkpoint_best.pt)``, or ``Dataset903_Hippocampus 3d_fullres (nnU-Net)``."""
        if self.kind == "nnunet":
            return f"{self.dataset_name} {self.configuration} (nnU-Net)"
        return f"{self.dataset_name} ({self.path.parent.name}/{self.path.name})"
