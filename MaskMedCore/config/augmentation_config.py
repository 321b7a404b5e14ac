"""Augmentation configuration: a frozen, JSON round-trippable description of training-time augmentation.

The defaults are nnU-Net v2's ``get_training_transforms`` (batchgeneratorsv2), in its order:
spatial (rotation, scaling, optional elastic; centre crop to the final patch), Gaussian noise,
Gaussian blur, multiplicative brightness, contrast, low-resolution simulation, inverted gamma,
gamma, mirroring. See ``MaskMedCore.data.augmentation`` for what each field does.

Conventions:

- Angles are in degrees. In 3D each axis gets its own angle from ``rotation_degrees``; with
  ``dummy_2d`` only axis 0 (D) is rotated, by an angle from ``rotation_degrees_dummy_2d``, and
  scaling and elastic deformation act in the (H, W) plane only.
- A scale ``s`` magnifies the content: ``s > 1`` zooms in, ``s < 1`` zooms out.
- Every ``*_p`` is the probability that a transform is applied to one sample of a batch;
  ``*_p_per_channel`` is the probability, once applied, for each channel.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from MaskMedCore.config.json_config import JsonConfig
from MaskMedCore.errors import ConfigError

DUMMY_2D_ANISOTROPY = 3.0
"""nnU-Net's rule: dummy-2D augmentation when ``max(patch) / patch[0] > 3``."""

Range = tuple[float, float]
_BOOL_FIELDS = ("enabled", "dummy_2d", "scaling_synchronized", "contrast_preserve_range", "gamma_retain_stats")


def needs_dummy_2d(patch_size: tuple[int, int, int]) -> bool:
    """nnU-Net's rule for dummy-2D augmentation: the patch is much thinner along D than in-plane."""
    return max(patch_size) / patch_size[0] > DUMMY_2D_ANISOTROPY


def _check_probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_range(name: str, value: Any, low: float, high: float, low_open: bool = False) -> Range:
    """Return ``value`` as a (lo, hi) float pair with low <= lo <= hi <= high (lo > low if low_open)."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    ok = len(pair) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in pair
    )
    if not ok:
        raise ConfigError(f"{name} must be a [low, high] pair of finite numbers, got {value!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if lo > hi:
        raise ConfigError(f"{name} must have low <= high, got [{lo}, {hi}]")
    if lo < low or hi > high or (low_open and lo == low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must lie in {bracket}{low}, {high}], got [{lo}, {hi}]")
    return (lo, hi)


@dataclass(frozen=True)
class AugmentationConfig(JsonConfig):
    """Training-time augmentation (``MaskMedCore.data.augmentation.Augmenter``).

    Attributes:
        enabled: master switch; ``False`` makes the augmenter a plain centre crop (validation).
        dummy_2d: augment spatially in the (H, W) plane only (anisotropic patches, see
            ``needs_dummy_2d``); rotation is then about axis 0 only.
        rotation_p: probability of a rotation per sample.
        rotation_degrees: angle range of each axis in 3D.
        rotation_degrees_dummy_2d: angle range about axis 0 with ``dummy_2d``.
        scaling_p: probability of scaling per sample.
        scaling_range: scale range; ``s > 1`` zooms in.
        scaling_synchronized: one scale for all axes (``False``: one per axis).
        sample_scaling_range: scale range used only to size the enlarged crop
            (``MaskMedCore.data.sampling.augmentation_sample_size``). nnU-Net sizes it for
            (0.85, 1.25), narrower than ``scaling_range``, so the strongest zoom-outs show a
            zero border; set it to ``scaling_range`` for no border ever (larger crops).
        elastic_p: probability of an elastic deformation per sample (nnU-Net: off).
        elastic_alpha: largest displacement in voxels of the sampled sample (drawn per sample).
        elastic_sigma: smoothness (Gaussian sigma, voxels) of the displacement field.
        noise_p: probability of additive Gaussian noise.
        noise_variance: variance range of the noise (one variance per sample, all channels).
        blur_p: probability of Gaussian blur.
        blur_sigma: sigma range in voxels, drawn per channel and per axis.
        blur_p_per_channel: probability per channel once blur is applied.
        brightness_p: probability of multiplicative brightness.
        brightness_range: multiplier range, drawn per channel.
        contrast_p: probability of a contrast change.
        contrast_range: contrast factor range, drawn per channel.
        contrast_preserve_range: clip the result to the channel's original [min, max].
        lowres_p: probability of simulating low resolution.
        lowres_scale: downsampling factor range (same factor on every axis; axis 0 untouched
            with ``dummy_2d``).
        lowres_p_per_channel: probability per channel once low resolution is applied.
        inverted_gamma_p: probability of gamma on the inverted image.
        gamma_p: probability of gamma.
        gamma_range: gamma range for both gamma transforms.
        gamma_retain_stats: restore the channel's mean and std after gamma.
        mirror_axes: spatial axes (0 = D, 1 = H, 2 = W) that may be flipped.
        mirror_p: probability of flipping each of ``mirror_axes``, independently.
    """

    config_name: ClassVar[str] = "augmentation config"

    enabled: bool = True
    dummy_2d: bool = False
    rotation_p: float = 0.2
    rotation_degrees: Range = (-30.0, 30.0)
    rotation_degrees_dummy_2d: Range = (-180.0, 180.0)
    scaling_p: float = 0.2
    scaling_range: Range = (0.7, 1.4)
    scaling_synchronized: bool = True
    sample_scaling_range: Range = (0.85, 1.25)
    elastic_p: float = 0.0
    elastic_alpha: Range = (0.0, 8.0)
    elastic_sigma: Range = (9.0, 13.0)
    noise_p: float = 0.1
    noise_variance: Range = (0.0, 0.1)
    blur_p: float = 0.2
    blur_sigma: Range = (0.5, 1.0)
    blur_p_per_channel: float = 0.5
    brightness_p: float = 0.15
    brightness_range: Range = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast_range: Range = (0.75, 1.25)
    contrast_preserve_range: bool = True
    lowres_p: float = 0.25
    lowres_scale: Range = (0.5, 1.0)
    lowres_p_per_channel: float = 0.5
    inverted_gamma_p: float = 0.1
    gamma_p: float = 0.3
    gamma_range: Range = (0.7, 1.5)
    gamma_retain_stats: bool = True
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    mirror_p: float = 0.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ConfigError(f"{f.name} must be true or false, got {value!r}")
            elif f.name.endswith("_p") or f.name.endswith("_p_per_channel"):
                object.__setattr__(self, f.name, _check_probability(f.name, value))
        inf = math.inf
        ranges = {
            "rotation_degrees": (-180.0, 180.0, False),
            "rotation_degrees_dummy_2d": (-180.0, 180.0, False),
            "scaling_range": (0.0, inf, True),
            "sample_scaling_range": (0.0, inf, True),
            "elastic_alpha": (0.0, inf, False),
            "elastic_sigma": (0.0, inf, True),
            "noise_variance": (0.0, inf, False),
            "blur_sigma": (0.0, inf, False),
            "brightness_range": (0.0, inf, False),
            "contrast_range": (0.0, inf, False),
            "lowres_scale": (0.0, 1.0, True),
            "gamma_range": (0.0, inf, True),
        }
        for name, (low, high, low_open) in ranges.items():
            object.__setattr__(self, name, _check_range(name, getattr(self, name), low, high, low_open))
        try:
            axes = tuple(self.mirror_axes)
        except TypeError:
            raise ConfigError(f"mirror_axes must be a list of axes in 0, 1, 2, got {self.mirror_axes!r}") from None
        if any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ConfigError(f"mirror_axes must be distinct axes from 0 (D), 1 (H), 2 (W), got {list(axes)}")
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in axes))

    # ------------------------------------------------------------------ derived values
    @property
    def rotation_range(self) -> Range:
        """The angle range in degrees that applies: about axis 0 with ``dummy_2d``, per axis otherwise."""
        return self.rotation_degrees_dummy_2d if self.dummy_2d else self.rotation_degrees

    def without_randomness(self) -> AugmentationConfig:
        """This config with every probability 0: the augmenter becomes a plain centre crop."""
        return self.replace(**{f.name: 0.0 for f in dataclasses.fields(self) if f.name.endswith("_p")})
