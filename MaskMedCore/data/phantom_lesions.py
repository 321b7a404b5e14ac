"""Lesions in the synthetic CT phantom: instance targets and case-level labels for multi-task training (issue 12).

A lesion phantom is the anatomy of :func:`MaskMedCore.data.phantom.generate_phantom` for the same seed plus
0..``max_lesions`` focal lesions (the count drawn uniformly) inside the liver or a kidney. Each lesion is an
ellipsoid of random orientation (equivalent radius 4-14 mm, and at least :data:`MIN_LESION_VOXELS`
voxels) with low-frequency boundary noise, lies inside its organ at least one voxel (the largest spacing)
from the organ's boundary, and is at least ``_GAP`` voxels from every other lesion, so each lesion is
exactly one 26-connected component. All lesions of a case are of one type, hypodense or hyperdense (40-70
HU below or above the organ): the contrast is added to the finished image, partial-volume blurred at the
edge, so the organ's texture and the image noise stay. Lesions are painted over the organ as label
:data:`LESION_LABEL`.

The lesions draw from their own generator ``np.random.default_rng([seed, 1])``: the anatomy, and every
phantom dataset written before lesions existed, stay byte-identical, and a case with no lesion drawn is
exactly ``generate_phantom(seed)``.

When an organ is too small for another lesion (tiny shapes), fewer lesions are placed than drawn; the case
labels always describe what was placed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from MaskMedCore.data.image_io import write_image
from MaskMedCore.data.multitask_spec import MultiTaskSpec
from MaskMedCore.data.phantom import (  # this module extends phantom: it shares its checks and random fields
    DEFAULT_PHANTOM_SHAPE,
    DEFAULT_PHANTOM_SPACING,
    PHANTOM_LABELS,
    _check_geometry,
    _check_seed,
    _fourier_field,
    phantom_arrays,
    phantom_images,
)
from MaskMedCore.errors import ConfigError

LESION_LABEL = 6
LESION_PHANTOM_LABELS: dict[str, int] = {**PHANTOM_LABELS, "lesion": LESION_LABEL}
LESION_TYPES = ("hypodense", "hyperdense")
LESION_CASE_TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lesion_count", ("none", "one", "several")),
    ("lesion_type", ("none", *LESION_TYPES)),
)
LESION_RADIUS_MM: tuple[float, float] = (4.0, 14.0)
"""Range of a lesion's equivalent radius (geometric mean of its semi-axes); raised to reach the minimum size."""
LESION_CONTRAST_HU: tuple[float, float] = (40.0, 70.0)
"""Range of a lesion's |HU difference| to its organ (drawn per lesion; the sign is the case's lesion type)."""
MIN_LESION_VOXELS = 20

_HOSTS = {"liver": 0.6, "kidney_left": 0.2, "kidney_right": 0.2}  # organ: probability of hosting a lesion
_GAP = 2  # voxels of other tissue at least between two lesions
_ROUGH = 0.08  # boundary noise amplitude on the normalised squared radius
_NOISE_WAVES = 6
_REACH = math.sqrt(1.0 + _ROUGH * math.sqrt(2.0 * _NOISE_WAVES))  # farthest boundary / semi-axis (|field| bound)
_MAX_ASPECT = 0.2  # semi-axes are the radius times exp(U(-a, a)), renormalised to geometric mean 1
_STRETCH = math.exp(4.0 / 3.0 * _MAX_ASPECT) * _REACH  # farthest boundary / equivalent radius
_MIN_VOLUME_FACTOR = 0.85  # a rough lesion's volume / its ellipsoid's, low end (smaller ones are redrawn)
_PV_SIGMA = (0.45, 0.6, 0.6)  # voxels, as the phantom's own partial-volume blur
_TRIES = 30


class LesionPhantom(NamedTuple):
    """One lesion phantom case; all three images share one geometry (array shape (D, H, W)).

    Attributes:
        image: int16 HU.
        labels: uint8, values of :data:`LESION_PHANTOM_LABELS`.
        instances: uint16, 0 outside lesions, 1..n, one id per lesion.
        case_labels: ``{"lesion_count": "none" | "one" | "several", "lesion_type": "none" | "hypodense" |
            "hyperdense"}``.
    """

    image: sitk.Image
    labels: sitk.Image
    instances: sitk.Image
    case_labels: dict[str, str]


def generate_lesion_phantom(
    seed: int,
    shape: Sequence[int] = DEFAULT_PHANTOM_SHAPE,
    spacing: Sequence[float] = DEFAULT_PHANTOM_SPACING,
    max_lesions: int = 3,
) -> LesionPhantom:
    """Generate the phantom of ``seed`` with 0..``max_lesions`` liver/kidney lesions (see the module docstring).

    Args:
        seed: non-negative integer; the same arguments give the same case.
        shape: array size ``(D, H, W)``, each at least 16.
        spacing: voxel size ``(D, H, W)`` in mm.
        max_lesions: the most lesions per case; the count is drawn uniformly from 0..max_lesions.

    Returns:
        ``(image, labels, instances, case_labels)`` as a :class:`LesionPhantom`.

    Raises:
        ConfigError: a bad seed, shape, spacing or max_lesions.
    """
    seed = _check_seed(seed)
    shape, spacing = _check_geometry(shape, spacing)
    max_lesions = _check_max_lesions(max_lesions)
    hu, labels = phantom_arrays(seed, shape, spacing)
    instances, lesion_type = _add_lesions(np.random.default_rng([seed, 1]), hu, labels, spacing, max_lesions)
    image, label_image = phantom_images(hu, labels, spacing)
    instance_image = sitk.GetImageFromArray(instances)
    instance_image.CopyInformation(image)
    count = int(instances.max())
    case_labels = {"lesion_count": ("none", "one", "several")[min(count, 2)], "lesion_type": lesion_type}
    return LesionPhantom(image, label_image, instance_image, case_labels)


def write_lesion_cases(
    out: str | os.PathLike,
    cases: Sequence[str],
    seed: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    max_lesions: int,
) -> MultiTaskSpec:
    """Write lesion phantoms ``cases[i]`` (seed ``seed + i``) into the nnU-Net folders of ``out``.

    Writes ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz`` and ``instancesTr/<case>.nii.gz``
    (each atomically); ``imagesTr/`` and ``labelsTr/`` must exist. The caller writes dataset.json, with the
    fields of the returned spec's :meth:`MultiTaskSpec.to_meta`.

    Returns:
        instance class ``lesion``, the tasks :data:`LESION_CASE_TASKS` and every case's labels.
    """
    out = Path(out)
    (out / "instancesTr").mkdir(exist_ok=True)
    case_labels = {}
    for i, case in enumerate(cases):
        image, labels, instances, case_labels[case] = generate_lesion_phantom(seed + i, shape, spacing, max_lesions)
        write_image(image, out / "imagesTr" / f"{case}_0000.nii.gz")
        write_image(labels, out / "labelsTr" / f"{case}.nii.gz")
        write_image(instances, out / "instancesTr" / f"{case}.nii.gz")
    return MultiTaskSpec(("lesion",), LESION_CASE_TASKS, case_labels)


def _check_max_lesions(max_lesions) -> int:
    if isinstance(max_lesions, bool) or not isinstance(max_lesions, (int, np.integer)) or max_lesions < 0:
        raise ConfigError(f"max_lesions must be a non-negative integer, got {max_lesions!r}")
    return int(max_lesions)


class _Host(NamedTuple):
    """An organ's depth map: distance (mm) of each voxel to the nearest voxel outside it (or the array)."""

    depth: np.ndarray  # (D', H', W') float, over the organ's bounding box grown by one voxel
    offset: np.ndarray  # (3,) int, array index of depth[0, 0, 0] (may be -1)


def _host(labels: np.ndarray, value: int, spacing) -> _Host | None:
    mask = labels == value
    if not mask.any():
        return None
    (box,) = ndimage.find_objects(mask.view(np.uint8))  # the organ's bounding box
    depth = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=spacing)  # the array edge is outside
    return _Host(depth, np.array([s.start for s in box]) - 1)


def _add_lesions(
    rng: np.random.Generator, hu: np.ndarray, labels: np.ndarray, spacing, max_lesions: int
) -> tuple[np.ndarray, str]:
    """Draw and paint lesions into ``hu`` (D, H, W) float32 and ``labels`` (D, H, W) uint8, in place.

    Returns:
        ``(instances, lesion_type)``: instances (D, H, W) uint16 (0 outside, 1..n); the type, ``"none"``
        when no lesion was placed.
    """
    instances = np.zeros(labels.shape, np.uint16)
    drawn = int(rng.integers(0, max_lesions + 1))
    if drawn == 0:
        return instances, "none"
    lesion_type = LESION_TYPES[int(rng.integers(len(LESION_TYPES)))]
    sign = -1.0 if lesion_type == "hypodense" else 1.0
    spacing = np.asarray(spacing, float)
    # Smallest radius that usually keeps the voxel count (a lesion that does not is redrawn).
    volume = MIN_LESION_VOXELS * float(np.prod(spacing)) / _MIN_VOLUME_FACTOR
    radius_range = (max(LESION_RADIUS_MM[0], (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)), LESION_RADIUS_MM[1])
    margin = 1.01 * float(spacing.max())  # > one voxel: the six face neighbours of a lesion voxel are organ
    hosts = {name: _host(labels, PHANTOM_LABELS[name], spacing) for name in _HOSTS}
    placed = 0
    for _ in range(drawn):
        lesion = _place(rng, hosts, instances, spacing, radius_range, margin)
        if lesion is None:
            continue
        box, mask = lesion
        placed += 1
        instances[box][mask] = placed
        labels[box][mask] = LESION_LABEL
        _add_contrast(hu, box, mask, sign * rng.uniform(*LESION_CONTRAST_HU))
    return instances, lesion_type if placed else "none"


def _place(
    rng: np.random.Generator,
    hosts: dict[str, _Host | None],
    instances: np.ndarray,
    spacing: np.ndarray,
    radius_range: tuple[float, float],
    margin: float,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """One lesion ``(box, mask)``: index slices into the volume and a bool mask of the box; None when no
    organ has room for one more."""
    room = {n: (h.depth.max() - margin) / _STRETCH for n, h in hosts.items() if h is not None}
    names = [n for n, r in room.items() if r >= radius_range[0]]
    if not names:
        return None
    p = np.array([_HOSTS[n] for n in names])
    for _ in range(_TRIES):
        name = names[int(rng.choice(len(names), p=p / p.sum()))]
        host = hosts[name]
        radius = rng.uniform(radius_range[0], min(radius_range[1], room[name]))
        aspect = rng.uniform(-_MAX_ASPECT, _MAX_ASPECT, 3)
        semi = radius * np.exp(aspect - aspect.mean())  # geometric mean = radius
        reach = float(semi.max()) * _REACH
        centres = np.argwhere(host.depth >= reach + margin)
        if len(centres) == 0:
            continue
        centre = centres[int(rng.integers(len(centres)))] + host.offset
        # Every lesion voxel lies within ``reach`` of the centre, and the centre lies more than reach + one
        # voxel inside the array (the depth map counts the array edge as outside), so the box fits.
        half = np.ceil(reach / spacing).astype(int)
        lo, hi = centre - half, centre + half + 1
        assert (lo >= 0).all() and (hi <= instances.shape).all(), (lo, hi, instances.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        mask = _lesion_mask(rng, half, spacing, semi)
        if mask.sum() < MIN_LESION_VOXELS or _too_close(mask, box, instances):
            continue
        inside = np.argwhere(mask) + (lo - host.offset)  # lesion voxels as indices of the depth map
        assert (host.depth[tuple(inside.T)] > margin).all(), "a lesion voxel lies in its organ's margin"
        return box, mask
    return None


def _lesion_mask(rng: np.random.Generator, half: np.ndarray, spacing: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Bool (2 half + 1) box: a randomly rotated ellipsoid with ``semi`` axes (mm) and a rough boundary,
    one 26-connected component without holes."""
    axes = [np.arange(-h, h + 1, dtype=np.float32) * np.float32(s) for h, s in zip(half, spacing)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (d, h, w, 3) mm from the centre
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    local = offsets @ rotation.astype(np.float32)  # (d, h, w, 3) in the ellipsoid's axes
    q = ((local / semi.astype(np.float32)) ** 2).sum(-1)
    coords = tuple(offsets[..., i] / np.float32(semi.mean()) for i in range(3))
    field = _fourier_field(rng, coords, wavelength=2.0, n=_NOISE_WAVES)  # a few bumps round the boundary
    mask = q + np.float32(_ROUGH) * field < 1.0
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n > 1:  # keep the largest piece (the bumps rarely cut one off)
        mask = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    return ndimage.binary_fill_holes(mask)


def _too_close(mask: np.ndarray, box: tuple[slice, ...], instances: np.ndarray) -> bool:
    """Whether another lesion comes within ``_GAP`` voxels (Chebyshev) of ``mask`` placed at ``box``."""
    grown = tuple(slice(max(s.start - _GAP, 0), s.stop + _GAP) for s in box)
    pad = [(s.start - g.start, _GAP) for s, g in zip(box, grown)]
    near = ndimage.binary_dilation(np.pad(mask, pad), np.ones((2 * _GAP + 1,) * 3, bool))
    others = instances[grown]
    return bool((near[tuple(slice(0, n) for n in others.shape)] & (others > 0)).any())


def _add_contrast(hu: np.ndarray, box: tuple[slice, ...], mask: np.ndarray, contrast: float) -> None:
    """``hu += contrast * blurred mask`` around ``box``: an additive change keeps texture and noise."""
    pad = 2
    grown = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
    before = [s.start - g.start for s, g in zip(box, grown)]
    region = np.pad(mask.astype(np.float32), [(b, pad) for b in before])
    region = ndimage.gaussian_filter(region, sigma=_PV_SIGMA)
    target = hu[grown]
    target += np.float32(contrast) * region[tuple(slice(0, n) for n in target.shape)]
