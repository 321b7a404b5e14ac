"""Batch augmentation on the training device (nnU-Net v2's ``get_training_transforms``, our code).

``Augmenter`` turns a batch of enlarged samples from ``PatchSampler`` into network patches, in
nnU-Net's order (upstream-facts §2.8):

1. spatial: rotation (p 0.2), scaling (p 0.2), optional elastic deformation, all in one
   ``grid_sample`` that also centre-crops to the patch (a plain slice when nothing is drawn);
2. Gaussian noise; 3. Gaussian blur; 4. multiplicative brightness; 5. contrast;
6. low-resolution simulation; 7. gamma on the inverted image; 8. gamma;
9. mirroring of image and labels together.

Parameters are drawn on the host from the ``torch.Generator`` passed to each call (all draws of a
batch first, in a fixed order), so one seed gives one result. Noise fields (Gaussian noise, elastic)
are drawn on the tensors' device from a generator seeded by one draw of that generator. Nothing
touches the global RNG.

Deliberate simplifications against batchgeneratorsv2, none changing the parameter ranges:
labels are resampled by nearest neighbour (not per-class linear); gamma below and above 1 is drawn
with equal chance (batchgenerators v1's rule); blur pads by edge replication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from MaskMedCore.config.augmentation_config import AugmentationConfig
from MaskMedCore.data.augmentation_intensity import (
    add_gaussian_noise,
    adjust_contrast,
    gamma_transform,
    gaussian_blur,
    simulate_low_resolution,
)
from MaskMedCore.data.augmentation_spatial import (
    centre_crop,
    elastic_displacement,
    mirror,
    rotation_matrix,
    spatial_transform,
)

Triplet = tuple[int, int, int]


@dataclass
class SampleParameters:
    """Everything drawn for one sample; ``None`` (or an empty list entry) means "not applied".

    Per-channel lists have one entry per channel C.
    """

    angles: tuple[float, float, float] | None = None
    scales: tuple[float, float, float] | None = None
    elastic: tuple[float, float] | None = None  # (alpha, sigma) in voxels
    noise_variance: float | None = None
    blur_sigmas: list[tuple[float, float, float] | None] | None = None
    brightness: list[float] | None = None
    contrast: list[float] | None = None
    lowres_scale: list[float | None] | None = None
    inverted_gamma: list[float] | None = None
    gamma: list[float] | None = None
    mirror_axes: list[int] = field(default_factory=list)

    @property
    def spatial(self) -> bool:
        return self.angles is not None or self.scales is not None or self.elastic is not None


class Augmenter:
    """nnU-Net's training augmentation for whole batches, on whatever device the batch is on.

    Args:
        config: what to draw and how often (``enabled=False``: centre crop only).
        patch_size: final (D, H, W) patch.

    Call with:
        images: (B, C, D', H', W') float, D' >= D etc. (the enlarged samples).
        labels: (B, D', H', W') integer labels 0..K-1.
        generator: the only source of randomness (any device; a CPU generator is fine).

    Returns:
        images: (B, C, D, H, W), same dtype and device as the input.
        labels: (B, D, H, W), same dtype and device; values are a subset of the input's values
        plus 0 (background where the spatial transform reads outside the sample).
    """

    def __init__(self, config: AugmentationConfig, patch_size: Sequence[int]) -> None:
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != 3 or any(p <= 0 for p in patch):
            raise ValueError(f"patch_size must be 3 positive integers (D, H, W), got {patch_size!r}")
        self.config = config
        self.patch_size: Triplet = patch  # type: ignore[assignment]

    # ------------------------------------------------------------------ drawing
    @staticmethod
    def _rand(generator: torch.Generator) -> float:
        return float(torch.rand((), generator=generator, device=generator.device))

    def _uniform(self, generator: torch.Generator, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return lo + (hi - lo) * self._rand(generator)

    def _hit(self, generator: torch.Generator, p: float) -> bool:
        # p == 0 draws nothing at all; p == 1 always applies.
        return p > 0 and self._rand(generator) < p

    def _triple(self, generator: torch.Generator, bounds: tuple[float, float]) -> tuple[float, float, float]:
        return (self._uniform(generator, bounds), self._uniform(generator, bounds), self._uniform(generator, bounds))

    def _gamma(self, generator: torch.Generator) -> float:
        lo, hi = self.config.gamma_range
        if lo < 1.0 < hi:  # brighten or darken with equal chance
            return self._uniform(generator, (lo, 1.0) if self._rand(generator) < 0.5 else (1.0, hi))
        return self._uniform(generator, (lo, hi))

    def draw(self, num_channels: int, generator: torch.Generator) -> SampleParameters:
        """Draw the parameters of one sample with ``num_channels`` channels C."""
        cfg, g, C = self.config, generator, num_channels
        params = SampleParameters()
        if not cfg.enabled:
            return params
        if self._hit(g, cfg.rotation_p):
            rng = cfg.rotation_range
            params.angles = (self._uniform(g, rng), 0.0, 0.0) if cfg.dummy_2d else self._triple(g, rng)
        if self._hit(g, cfg.scaling_p):
            if cfg.scaling_synchronized:
                s = self._uniform(g, cfg.scaling_range)
                scales = [s, s, s]
            else:
                scales = [self._uniform(g, cfg.scaling_range) for _ in range(3)]
            if cfg.dummy_2d:
                scales[0] = 1.0
            params.scales = tuple(scales)  # type: ignore[assignment]
        if self._hit(g, cfg.elastic_p):
            params.elastic = (self._uniform(g, cfg.elastic_alpha), self._uniform(g, cfg.elastic_sigma))
        if self._hit(g, cfg.noise_p):
            params.noise_variance = self._uniform(g, cfg.noise_variance)
        if self._hit(g, cfg.blur_p):
            params.blur_sigmas = [
                self._triple(g, cfg.blur_sigma) if self._hit(g, cfg.blur_p_per_channel) else None for _ in range(C)
            ]
        if self._hit(g, cfg.brightness_p):
            params.brightness = [self._uniform(g, cfg.brightness_range) for _ in range(C)]
        if self._hit(g, cfg.contrast_p):
            params.contrast = [self._uniform(g, cfg.contrast_range) for _ in range(C)]
        if self._hit(g, cfg.lowres_p):
            params.lowres_scale = [
                self._uniform(g, cfg.lowres_scale) if self._hit(g, cfg.lowres_p_per_channel) else None for _ in range(C)
            ]
        if self._hit(g, cfg.inverted_gamma_p):
            params.inverted_gamma = [self._gamma(g) for _ in range(C)]
        if self._hit(g, cfg.gamma_p):
            params.gamma = [self._gamma(g) for _ in range(C)]
        params.mirror_axes = [a for a in cfg.mirror_axes if self._hit(g, cfg.mirror_p)]
        return params

    # ------------------------------------------------------------------ applying
    def _sample_to_patch(self, params: SampleParameters) -> torch.Tensor:
        """(3, 3) float64 map A from patch offsets to sample offsets: R^T diag(1/s)."""
        R = rotation_matrix(params.angles) if params.angles is not None else torch.eye(3, dtype=torch.float64)
        s = params.scales if params.scales is not None else (1.0, 1.0, 1.0)
        return R.T @ torch.diag(1.0 / torch.tensor(s, dtype=torch.float64))

    def _spatial(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        params: list[SampleParameters],
        device_generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial transform + centre crop for the batch: (B, C, D', H', W') -> (B, C, D, H, W)."""
        B, C = images.shape[:2]
        out_images = centre_crop(images, self.patch_size).clone()
        out_labels = centre_crop(labels, self.patch_size).clone()
        chosen = [b for b in range(B) if params[b].spatial]
        if not chosen:
            return out_images, out_labels
        maps = torch.stack([self._sample_to_patch(params[b]) for b in chosen])
        displacement = None
        if any(params[b].elastic is not None for b in chosen):
            fields = []
            for b in chosen:
                if params[b].elastic is None:
                    fields.append(torch.zeros((3, *self.patch_size), device=images.device))
                else:
                    alpha, sigma = params[b].elastic
                    fields.append(
                        elastic_displacement(
                            self.patch_size, alpha, sigma, self.config.dummy_2d, device_generator, images.device
                        )
                    )
            displacement = torch.stack(fields)
        index = torch.tensor(chosen, device=images.device)
        warped_images, warped_labels = spatial_transform(
            images[index], labels[index], self.patch_size, maps, displacement
        )
        out_images[index] = warped_images
        out_labels[index] = warped_labels
        return out_images, out_labels

    def _intensity(
        self, image: torch.Tensor, params: SampleParameters, device_generator: torch.Generator
    ) -> torch.Tensor:
        """Transforms 2-8 on one sample (C, D, H, W), in nnU-Net's order."""
        cfg = self.config
        out = image.float()
        if params.noise_variance is not None:
            out = add_gaussian_noise(out, params.noise_variance, device_generator)
        channels = list(out.unbind(0))
        for c in range(len(channels)):
            x = channels[c]
            if params.blur_sigmas is not None and params.blur_sigmas[c] is not None:
                x = gaussian_blur(x, params.blur_sigmas[c])
            if params.brightness is not None:
                x = x * params.brightness[c]
            if params.contrast is not None:
                x = adjust_contrast(x, params.contrast[c], cfg.contrast_preserve_range)
            if params.lowres_scale is not None and params.lowres_scale[c] is not None:
                s = params.lowres_scale[c]
                x = simulate_low_resolution(x, (1.0 if cfg.dummy_2d else s, s, s))
            if params.inverted_gamma is not None:
                x = gamma_transform(x, params.inverted_gamma[c], invert=True, retain_stats=cfg.gamma_retain_stats)
            if params.gamma is not None:
                x = gamma_transform(x, params.gamma[c], invert=False, retain_stats=cfg.gamma_retain_stats)
            channels[c] = x
        return torch.stack(channels).to(image.dtype)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 5 or not images.is_floating_point():
            raise ValueError(f"images must be a (B, C, D, H, W) float tensor, got {tuple(images.shape)} {images.dtype}")
        if labels.ndim != 4 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a (B, D, H, W) integer tensor, got {tuple(labels.shape)} {labels.dtype}")
        B, C, D, H, W = images.shape
        if tuple(labels.shape) != (B, D, H, W):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match images {tuple(images.shape)}")
        if labels.device != images.device:
            raise ValueError(f"images are on {images.device} but labels on {labels.device}")
        if any(s < p for s, p in zip((D, H, W), self.patch_size)):
            raise ValueError(
                f"samples {(D, H, W)} are smaller than patch_size {self.patch_size}; "
                "crop them with PatchSampler(sample_size=augmentation_sample_size(config, patch_size))"
            )
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        params = [self.draw(C, generator) for _ in range(B)]
        device_generator = torch.Generator(device=images.device)
        device_generator.manual_seed(seed)

        out_images, out_labels = self._spatial(images, labels, params, device_generator)
        results_images, results_labels = [], []
        for b in range(B):
            image = self._intensity(out_images[b], params[b], device_generator)
            image, label = mirror(image, out_labels[b], params[b].mirror_axes)
            results_images.append(image)
            results_labels.append(label)
        return torch.stack(results_images), torch.stack(results_labels)

    def __repr__(self) -> str:
        return (
            f"Augmenter(patch_size={self.patch_size}, enabled={self.config.enabled}, dummy_2d={self.config.dummy_2d})"
        )
