"""Training patch sampling with foreground oversampling (nnU-Net v2's ``nnUNetDataLoader``, our code).

A batch is drawn in two sizes:

- the *sample size*: an enlarged crop cut from the preprocessed case on the CPU
  (``enlarged_patch_size``, nnU-Net's ``get_patch_size`` idea), big enough that rotating and
  scaling it about its centre and then centre-cropping leaves no empty border;
- the *patch size*: what the network sees, cut from the sample's centre by the augmenter
  (``MaskMedCore.data.augmentation.Augmenter``) on the training device.

Foreground oversampling follows nnU-Net: sample ``j`` of a batch of ``B`` is forced to contain
foreground iff ``j >= round(B * (1 - oversample_foreground))``. With the default 0.33 that is 1 of
2 samples for ``B = 2`` (50 %, not 33 %), 1 of 3 for ``B = 3``, and none for ``B = 1``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from MaskMedCore.config.augmentation_config import AugmentationConfig
from MaskMedCore.errors import DataError

Triplet = tuple[int, int, int]


class PatchCase(Protocol):
    """What the sampler reads from one preprocessed case.

    Attributes:
        image: (C, D, H, W) float32 array (may be a read-only ``np.memmap``).
        labels: (D, H, W) int16 label map with values 0..K-1 (0 = background).
        class_locations: foreground label value -> (N, 3) int64 (d, h, w) voxel coordinates
            (background excluded; empty for a case without foreground).
    """

    image: np.ndarray
    labels: np.ndarray
    class_locations: Mapping[int, np.ndarray]


def _triplet(name: str, value: Sequence[int]) -> Triplet:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 positive integers (D, H, W), got {value!r}") from None
    if len(out) != 3 or any(v <= 0 for v in out):
        raise ValueError(f"{name} must be 3 positive integers (D, H, W), got {value!r}")
    return out  # type: ignore[return-value]


def _rotation_matrices(angles_deg: np.ndarray) -> np.ndarray:
    """(N, 3) angles about axes (D, H, W) in degrees -> (N, 3, 3) rotations R_D @ R_H @ R_W in (d, h, w) order.

    Same composition as ``augmentation_spatial.rotation_matrix``.
    """
    a = np.deg2rad(angles_deg)
    c, s = np.cos(a), np.sin(a)
    N = len(a)
    eye = np.broadcast_to(np.eye(3), (N, 3, 3))
    r_d, r_h, r_w = eye.copy(), eye.copy(), eye.copy()
    # about D: rotates the (h, w) plane; about H: the (d, w) plane; about W: the (d, h) plane
    r_d[:, 1, 1], r_d[:, 1, 2], r_d[:, 2, 1], r_d[:, 2, 2] = c[:, 0], -s[:, 0], s[:, 0], c[:, 0]
    r_h[:, 0, 0], r_h[:, 0, 2], r_h[:, 2, 0], r_h[:, 2, 2] = c[:, 1], s[:, 1], -s[:, 1], c[:, 1]
    r_w[:, 0, 0], r_w[:, 0, 1], r_w[:, 1, 0], r_w[:, 1, 1] = c[:, 2], -s[:, 2], s[:, 2], c[:, 2]
    return r_d @ r_h @ r_w


def enlarged_patch_size(
    patch_size: Sequence[int],
    rotation: float | tuple[float, float],
    scale_range: tuple[float, float],
    dummy_2d: bool,
    margin: float = 0.0,
    composed_rotations: bool = True,
) -> Triplet:
    """The sample size to crop so that a rotated/scaled centre crop of ``patch_size`` has no border.

    nnU-Net's ``get_patch_size`` idea, computed for the augmenter's actual transform: an output voxel
    at offset ``u`` from the patch centre reads the sample at ``R^T u / s``. The half-extent needed
    along axis i is the maximum of ``sum_j |R_ji| (P_j - 1) / 2`` over the allowed rotations
    (the three axis angles vary jointly, searched on a 25^3 grid and capped by the half-diagonal),
    divided by the smallest scale, plus ``margin``. Unlike nnU-Net (which rotates about one axis at a
    time) this covers composed rotations. The result is at least ``patch_size`` and ``result - patch``
    is even on every axis, so the patch sits exactly in the sample's centre.

    Args:
        patch_size: final (D, H, W) patch.
        rotation: largest absolute angle in degrees, or a (low, high) angle range; per axis in 3D,
            about axis 0 only when ``dummy_2d``.
        scale_range: (low, high) scale range (``s > 1`` zooms in); only the low end matters.
        dummy_2d: spatial augmentation in the (H, W) plane only; axis 0 keeps ``patch_size[0]``.
        margin: extra voxels on each side of every augmented axis (e.g. the largest elastic
            displacement).
        composed_rotations: cover the three axis rotations drawn together (what the augmenter does).
            ``False`` covers each axis rotation on its own, as nnU-Net does: smaller crops (about
            206 instead of 254 for a 128^3 patch at 30 degrees and scale 0.85), at the cost of a thin
            zero border on rare samples where all three angles are large.

    Returns:
        (D, H, W) sample size.
    """
    P = np.array(_triplet("patch_size", patch_size), dtype=np.float64)
    angles = (-abs(float(rotation)), abs(float(rotation))) if np.isscalar(rotation) else tuple(rotation)
    max_angle = min(max(abs(float(a)) for a in angles), 180.0)
    if len(scale_range) != 2 or min(scale_range) <= 0:
        raise ValueError(f"scale_range must be a (low, high) pair of positive scales, got {scale_range!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0 voxels, got {margin}")
    half = (P - 1.0) / 2.0  # voxel-centre half extents of the patch
    grid = np.linspace(-max_angle, max_angle, 25)
    zeros = np.zeros_like(grid)
    if dummy_2d:
        combos = np.stack([grid, zeros, zeros], axis=1)
    elif not composed_rotations:
        combos = np.concatenate([np.roll(np.stack([grid, zeros, zeros], axis=1), k, axis=1) for k in range(3)])
    else:
        combos = np.array(list(itertools.product(grid, grid, grid)))
    R = _rotation_matrices(combos)  # (N, 3, 3)
    # |R^T| @ half for every rotation: (N, 3)
    extents = np.abs(np.transpose(R, (0, 2, 1))) @ half
    needed_half = np.minimum(extents.max(axis=0), np.linalg.norm(half if not dummy_2d else half[1:]))
    needed_half = np.maximum(needed_half, half) / min(scale_range) + margin
    size = np.ceil(2.0 * needed_half + 1.0 - 1e-6).astype(int)
    size = np.maximum(size, P.astype(int))
    size += (size - P.astype(int)) % 2  # make the enlargement even so the patch is centred exactly
    if dummy_2d:
        size[0] = int(P[0])
    return tuple(int(s) for s in size)  # type: ignore[return-value]


def augmentation_sample_size(
    config: AugmentationConfig, patch_size: Sequence[int], composed_rotations: bool = True
) -> Triplet:
    """The sample size ``PatchSampler`` should crop for ``config``'s augmenter (patch size if disabled).

    ``composed_rotations=False`` gives nnU-Net's per-axis sizes (much smaller crops, e.g. 206^3
    instead of 254^3 for a 128^3 patch; rare samples then show a thin zero border).
    """
    patch = _triplet("patch_size", patch_size)
    if not config.enabled:
        return patch
    rotation = config.rotation_range if config.rotation_p > 0 else (0.0, 0.0)
    scales = (min(config.sample_scaling_range[0], 1.0), 1.0) if config.scaling_p > 0 else (1.0, 1.0)
    margin = config.elastic_alpha[1] if config.elastic_p > 0 else 0.0
    return enlarged_patch_size(patch, rotation, scales, config.dummy_2d, margin, composed_rotations)


def foreground_forced(j: int, batch_size: int, oversample_foreground: float) -> bool:
    """nnU-Net's rule: sample ``j`` must contain foreground iff ``j >= round(B * (1 - p))``.

    Python's ``round`` (half to even) as in nnU-Net: B=1 -> never, B=2 -> sample 1, B=3 -> sample 2.
    """
    return j >= round(batch_size * (1.0 - oversample_foreground))


class PatchSampler:
    """Draws batches of enlarged crops from preprocessed cases (CPU, numpy).

    Crops may reach outside the image by half the enlargement ``(sample_size - patch_size) / 2`` on
    each side, so the final centre patch always lies inside the image (nnU-Net's ``need_to_pad``);
    an image smaller than the patch on some axis is centred in the crop on that axis. Outside the
    image the crop is padded with image 0 and label 0 (background). nnU-Net pads labels with -1 and
    maps -1 to 0 after augmentation; since our augmenter also fills borders with 0 the result is the
    same.

    Args:
        cases: preprocessed cases (``PatchCase``), drawn uniformly with replacement.
        patch_size: final (D, H, W) patch the network sees.
        sample_size: enlarged (D, H, W) crop, >= ``patch_size`` (see ``enlarged_patch_size``).
        batch_size: samples per batch B.
        oversample_foreground: fraction p of each batch forced to contain foreground
            (``foreground_forced``).
        case_targets: optional (N_cases, T) int64 case-level class index per task (-1 = unknown), one row
            per case of ``cases``; ``training_batch`` then also returns each sample's row.

    Raises:
        DataError: a case's image or labels have the wrong rank, mismatched shapes, or a channel
            count different from the first case.
        ValueError: a size, the batch size or ``oversample_foreground`` is invalid.
    """

    def __init__(
        self,
        cases: Sequence[PatchCase],
        patch_size: Sequence[int],
        sample_size: Sequence[int],
        batch_size: int,
        oversample_foreground: float = 0.33,
        case_targets: np.ndarray | None = None,
    ) -> None:
        if len(cases) == 0:
            raise ValueError("cases is empty; the sampler needs at least one case")
        self.patch_size = _triplet("patch_size", patch_size)
        self.sample_size = _triplet("sample_size", sample_size)
        if any(s < p for s, p in zip(self.sample_size, self.patch_size)):
            raise ValueError(f"sample_size {self.sample_size} must be >= patch_size {self.patch_size} on every axis")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0.0 <= oversample_foreground <= 1.0:
            raise ValueError(f"oversample_foreground must be in [0, 1], got {oversample_foreground}")
        self.cases = cases
        self.batch_size = batch_size
        self.oversample_foreground = float(oversample_foreground)
        self.num_channels = self._check_cases()
        if case_targets is not None:
            case_targets = np.asarray(case_targets, dtype=np.int64)
            if case_targets.ndim != 2 or case_targets.shape[0] != len(cases):
                raise ValueError(
                    f"case_targets must be (N_cases, T) = ({len(cases)}, T), got shape {case_targets.shape}"
                )
        self.case_targets = case_targets

    def _check_cases(self) -> int:
        channels = None
        for i, case in enumerate(self.cases):
            image, labels = case.image, case.labels
            if labels is None:
                raise DataError(f"case {i} has no labels; training patches need labelled cases")
            if image.ndim != 4 or labels.ndim != 3:
                raise DataError(
                    f"case {i}: image must be (C, D, H, W) and labels (D, H, W), "
                    f"got image {image.shape} and labels {labels.shape}"
                )
            if image.shape[1:] != labels.shape:
                raise DataError(f"case {i}: image spatial shape {image.shape[1:]} != labels shape {labels.shape}")
            if channels is None:
                channels = image.shape[0]
            elif image.shape[0] != channels:
                raise DataError(f"case {i}: image has {image.shape[0]} channels but case 0 has {channels}")
        return int(channels)

    # ------------------------------------------------------------------ crop placement
    def _origin_bounds(self, shape: Sequence[int]) -> tuple[list[int], list[int]]:
        """Lowest and highest allowed crop origin per axis (origins may be negative)."""
        lows, highs = [], []
        for n, p, s in zip(shape, self.patch_size, self.sample_size):
            pad = max(s - p, s - n)  # total voxels the crop may reach outside the image
            lows.append(-(pad // 2))
            highs.append(n + (pad - pad // 2) - s)
        return lows, highs

    def crop_origin(self, case: PatchCase, force_foreground: bool, rng: np.random.Generator) -> Triplet:
        """(d, h, w) index of the crop's first voxel in ``case`` (may be negative or past the end).

        A forced crop picks a random foreground class present in ``case``, then a random stored voxel
        of it, and places the crop so that this voxel is the centre voxel of the final patch
        (index ``patch_size // 2`` of the patch), clipped to the allowed range. Without foreground
        (or when not forced) the origin is uniform over the allowed range.
        """
        shape = case.labels.shape
        lows, highs = self._origin_bounds(shape)
        # background (0) is never a forced class, even if a store lists its locations
        present = [k for k, v in case.class_locations.items() if k != 0 and len(v) > 0] if force_foreground else []
        if not present:
            return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(lows, highs))  # type: ignore[return-value]
        k = present[int(rng.integers(len(present)))]
        voxels = np.asarray(case.class_locations[k])
        if voxels.ndim != 2 or voxels.shape[1] != 3:
            raise DataError(f"class_locations[{k}] must be (N, 3) (d, h, w) coordinates, got {voxels.shape}")
        voxel = voxels[int(rng.integers(len(voxels)))]
        origin = []
        for v, lo, hi, p, s in zip(voxel, lows, highs, self.patch_size, self.sample_size):
            centre_offset = (s - p) // 2 + p // 2  # position of the patch's centre voxel in the crop
            origin.append(int(min(max(int(v) - centre_offset, lo), hi)))
        return tuple(origin)  # type: ignore[return-value]

    def crop(self, case: PatchCase, origin: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Cut a ``sample_size`` crop at ``origin``, padding outside the image with 0.

        Returns:
            image: (C, *sample_size) float32.
            labels: (*sample_size) int16.
        """
        image_src, labels_src = case.image, case.labels
        image = np.zeros((image_src.shape[0], *self.sample_size), dtype=np.float32)
        labels = np.zeros(self.sample_size, dtype=np.int16)
        src, dst = [], []
        for o, s, n in zip(origin, self.sample_size, labels_src.shape):
            lo, hi = max(o, 0), min(o + s, n)
            if hi <= lo:  # the crop misses the image on this axis (cannot happen with crop_origin)
                return image, labels
            src.append(slice(lo, hi))
            dst.append(slice(lo - o, hi - o))
        image[(slice(None), *dst)] = image_src[(slice(None), *src)]
        labels[tuple(dst)] = labels_src[tuple(src)]
        return image, labels

    # ------------------------------------------------------------------ batches
    def sample_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one batch.

        Args:
            rng: the only source of randomness (cases, classes, voxels, crop origins).

        Returns:
            images: (B, C, *sample_size) float32.
            labels: (B, *sample_size) int16, values 0..K-1.
        """
        images, labels, _ = self.sample_indexed(rng)
        return images, labels

    def sample_indexed(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``sample_batch`` plus the (B,) int64 index into ``cases`` of every sample (same random draws)."""
        B, C = self.batch_size, self.num_channels
        images = np.empty((B, C, *self.sample_size), dtype=np.float32)
        labels = np.empty((B, *self.sample_size), dtype=np.int16)
        indices = rng.integers(0, len(self.cases), size=B)
        for j, index in enumerate(indices):
            case = self.cases[int(index)]
            force = foreground_forced(j, B, self.oversample_foreground)
            images[j], labels[j] = self.crop(case, self.crop_origin(case, force, rng))
        return images, labels, indices.astype(np.int64)

    def training_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """What a training step consumes: ``(images, labels)``, and with ``case_targets`` a third array,
        ``(B, T)`` int64 the case-level targets of each sample's case."""
        images, labels, indices = self.sample_indexed(rng)
        if self.case_targets is None:
            return images, labels
        return images, labels, self.case_targets[indices]

    def __repr__(self) -> str:
        return (
            f"PatchSampler(cases={len(self.cases)}, patch_size={self.patch_size}, sample_size={self.sample_size}, "
            f"batch_size={self.batch_size}, oversample_foreground={self.oversample_foreground})"
        )
