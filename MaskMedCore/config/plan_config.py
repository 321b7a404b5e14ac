"""Plan configuration: what ``maskmed plan`` decides for a dataset (nnU-Net v2's plans file, in small).

A plan fixes everything that must be identical at training and inference time: the channels
and their normalisation, the target spacing, the patch size, the batch size and the network
topology. It is saved as ``plan.json`` beside the preprocessed data and inside every checkpoint.

All per-axis values are in array order ``(D, H, W)`` = (z, y, x) of the SimpleITK array
``GetArrayFromImage`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from MaskMedCore.config.json_config import JsonConfig
from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.config.validation import check_choice, check_positive_int, check_triplets
from MaskMedCore.errors import ConfigError

NORMALIZATION_SCHEMES = ("ct", "zscore", "none")
PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ChannelNormalization:
    """How one input channel is normalised.

    - ``ct``: clip to [lower, upper] (the 0.5 / 99.5 foreground percentiles of the dataset), then
      ``(x - mean) / std`` with the dataset's foreground mean and std (nnU-Net's CTNormalization).
    - ``zscore``: per image, ``(x - mean(x)) / std(x)`` (over the non-zero region when the image was
      cropped to non-zero; nnU-Net's ZScoreNormalization).
    - ``none``: leave intensities as they are.
    """

    scheme: str
    mean: float = 0.0
    std: float = 1.0
    lower: float = 0.0
    upper: float = 0.0

    def __post_init__(self) -> None:
        check_choice("normalization.scheme", self.scheme, NORMALIZATION_SCHEMES)
        if self.scheme == "ct":
            if not self.std > 0:
                raise ConfigError(f"normalization.std must be > 0 for scheme 'ct', got {self.std}")
            if not self.upper >= self.lower:
                raise ConfigError(f"normalization.upper ({self.upper}) must be >= normalization.lower ({self.lower})")


@dataclass(frozen=True)
class PlanConfig(JsonConfig):
    """Attributes:
    dataset_name: name from dataset.json (or the folder name).
    channel_names: one name per input channel, in channel order (e.g. ("FLAIR", "T1c")).
    labels: label name -> integer value; must be exactly 0..K-1 with "background" = 0.
    file_ending: image file ending of the raw dataset, e.g. ".nii.gz".
    normalization: one ChannelNormalization per channel.
    target_spacing: (D, H, W) spacing in mm that every case is resampled to.
    patch_size: (D, H, W) training patch, divisible by the network's total stride. A 2D plan (nnU-Net's
        ``2d`` configuration) has D = 1: its patches are single slices (``network_patch_size`` is (H, W)).
    batch_size: training batch size.
    features_per_stage: network channels per stage (finest first).
    kernel_sizes: per-stage (D, H, W) kernels; (H, W) pairs in a 2D plan.
    strides: per-stage (D, H, W) strides, strides[0] all ones; (H, W) pairs in a 2D plan.
    median_shape: (D, H, W) median shape after cropping and resampling.
    crop_to_nonzero: whether cases are cropped to the bounding box of non-zero voxels.
    format_version: plan format version.
    """

    config_name: ClassVar[str] = "plan"

    dataset_name: str
    channel_names: tuple[str, ...]
    labels: Mapping[str, int]
    file_ending: str
    normalization: tuple[ChannelNormalization, ...]
    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    batch_size: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    strides: tuple[tuple[int, int, int], ...]
    median_shape: tuple[int, int, int]
    crop_to_nonzero: bool = True
    format_version: int = PLAN_FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_names", tuple(str(c) for c in self.channel_names))
        object.__setattr__(self, "labels", dict(self.labels))
        norms = tuple(
            n if isinstance(n, ChannelNormalization) else ChannelNormalization(**n) for n in self.normalization
        )
        object.__setattr__(self, "normalization", norms)
        object.__setattr__(self, "target_spacing", tuple(float(s) for s in self.target_spacing))
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        object.__setattr__(self, "median_shape", tuple(int(s) for s in self.median_shape))
        object.__setattr__(self, "features_per_stage", tuple(int(f) for f in self.features_per_stage))
        object.__setattr__(self, "kernel_sizes", check_triplets("kernel_sizes", self.kernel_sizes, (2, 3)))
        object.__setattr__(self, "strides", check_triplets("strides", self.strides, (2, 3)))
        self._validate()

    def _validate(self) -> None:
        if self.format_version != PLAN_FORMAT_VERSION:
            raise ConfigError(
                f"plan format_version is {self.format_version}; this MaskMed reads version {PLAN_FORMAT_VERSION}. "
                "Re-run 'maskmed plan' on the dataset"
            )
        if not self.channel_names:
            raise ConfigError("channel_names is empty; a plan needs at least one input channel")
        if len(self.normalization) != len(self.channel_names):
            raise ConfigError(
                f"normalization has {len(self.normalization)} entries but there are "
                f"{len(self.channel_names)} channels {list(self.channel_names)}"
            )
        values = sorted(self.labels.values())
        if values != list(range(len(values))) or len(values) < 2:
            raise ConfigError(f"labels must map names to 0..K-1 (K >= 2), got {dict(self.labels)}")
        if self.labels.get("background", 0) != 0 or 0 not in values:
            raise ConfigError(f"labels must give background the value 0, got {dict(self.labels)}")
        if len(self.target_spacing) != 3 or any(s <= 0 for s in self.target_spacing):
            raise ConfigError(f"target_spacing must be 3 positive numbers (D, H, W), got {self.target_spacing}")
        for name in ("patch_size", "median_shape"):
            value = getattr(self, name)
            if len(value) != 3 or any(v <= 0 for v in value):
                raise ConfigError(f"{name} must be 3 positive integers (D, H, W), got {value}")
        check_positive_int("batch_size", self.batch_size)
        if self.spatial_dims == 2 and self.patch_size[0] != 1:
            raise ConfigError(
                f"patch_size is {list(self.patch_size)} but the plan's network is 2D ((H, W) strides); "
                "a 2D plan's patch is one slice: [1, H, W]"
            )
        # The topology must form a valid network for this patch.
        self.model_config("tiny").check_input_shape(self.network_patch_size)

    # ------------------------------------------------------------------ derived
    @property
    def num_classes(self) -> int:
        """K, background included."""
        return len(self.labels)

    @property
    def spatial_dims(self) -> int:
        """2 for a 2D plan (slices), 3 for a 3D one."""
        return len(self.strides[0])

    @property
    def network_patch_size(self) -> tuple[int, ...]:
        """The network's input size: ``patch_size`` in 3D, its (H, W) in 2D."""
        return self.patch_size[1:] if self.spatial_dims == 2 else self.patch_size

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """Volume axes (0=D, 1=H, 2=W) a model of this plan may be mirrored along (nnU-Net: all of the
        network's axes, so in 2D only H and W)."""
        return (1, 2) if self.spatial_dims == 2 else (0, 1, 2)

    @property
    def label_names(self) -> list[str]:
        """Names ordered by label value (index k is label k)."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    def model_config(self, preset: str = "paper", **overrides: Any) -> ModelConfig:
        """The network for this plan: the preset's head/bridge/transformer settings on the plan's topology.

        With ``preset="tiny"`` the channel counts are the tiny preset's, scaled to the plan's stage count.
        """
        base: dict[str, Any] = dict(kernel_sizes=self.kernel_sizes, strides=self.strides)
        if preset == "paper":
            base["features_per_stage"] = self.features_per_stage
        else:
            base["features_per_stage"] = tuple(min(8 * 2**i, 64) for i in range(len(self.strides)))
        base.update(overrides)
        return ModelConfig.preset(preset, len(self.channel_names), self.num_classes, **base)

    # ------------------------------------------------------------------ JSON
