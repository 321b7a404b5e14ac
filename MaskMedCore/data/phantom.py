"""Synthetic abdominal CT phantom: MaskMed's own shipped sample data.

Each case is an axial stack through the upper abdomen in the portal-venous contrast phase (the phase of
most public abdominal CT segmentation sets, e.g. BTCV, AMOS): air, an elliptic body with a subcutaneous
fat ring and a muscle wall, visceral fat, bowel loops and colon (fluid or gas), stomach with an air-fluid
level, a lumbar spine (vertebral bodies, discs, canal, posterior elements), paraspinal and psoas muscles,
ribs in the upper slices, inferior vena cava, gallbladder and the five labelled organs of
:data:`PHANTOM_LABELS`. Organs are ellipsoids (the liver a union of two lobes, the kidneys bean-shaped
around a fat-filled sinus) perturbed by low-frequency noise; the whole anatomy is then bent by a random
smooth deformation. The image gets parenchymal texture, bright hepatic vessels, partial-volume blur, a
smooth multiplicative/additive bias field and correlated Gaussian noise. Everything follows from ``seed``
through one ``np.random.default_rng(seed)``.

Orientation: SimpleITK/ITK LPS with identity direction. Array axes ``(D, H, W)`` are ``(z, y, x)``:
``D`` increases towards the head (superior), ``H`` towards the back (posterior), ``W`` towards the
patient's left. An axial slice ``image[d]`` shown with row 0 at the top is in radiological convention:
anterior up, patient's right (liver) on the image left, spine at the bottom.

Anatomy is laid out relative to the field of view (the body fills ~86 % of its width), so another
``shape``/``spacing`` scales the patient rather than cropping it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from MaskMedCore.data.image_io import write_image
from MaskMedCore.errors import ConfigError, MaskMedError
from MaskMedCore.io_utils import atomic_write_text

PHANTOM_LABELS: dict[str, int] = {
    "background": 0,
    "liver": 1,
    "spleen": 2,
    "kidney_left": 3,
    "kidney_right": 4,
    "aorta": 5,
}

#: Range that the median HU inside each organ (eroded one voxel in-plane) falls in, over seeds: the
#: per-case mean is drawn from a narrower range and bias field, vessels and noise move it a little.
PHANTOM_HU_RANGES: dict[str, tuple[float, float]] = {
    "liver": (85.0, 135.0),
    "spleen": (95.0, 145.0),
    "kidney_left": (135.0, 205.0),
    "kidney_right": (135.0, 205.0),
    "aorta": (140.0, 215.0),
}

DEFAULT_PHANTOM_SHAPE: tuple[int, int, int] = (48, 96, 96)
DEFAULT_PHANTOM_SPACING: tuple[float, float, float] = (4.0, 3.0, 3.0)
PHANTOM_GENERATOR_VERSION = 1
_MIN_SIZE = 16

# Tissue classes painted into one map, so each label covers exactly the voxels given its intensity.
# name: (per-case mean HU drawn uniformly from this range, texture std HU, label name or None)
_TISSUES: dict[str, tuple[tuple[float, float], float, str | None]] = {
    "air": ((-1000.0, -1000.0), 0.0, None),
    "subcutaneous_fat": ((-110.0, -90.0), 8.0, None),
    "muscle": ((45.0, 60.0), 6.0, None),
    "visceral_fat": ((-105.0, -80.0), 12.0, None),
    "bowel_wall": ((30.0, 50.0), 6.0, None),
    "bowel_fluid": ((5.0, 30.0), 6.0, None),
    "bowel_gas": ((-900.0, -700.0), 25.0, None),
    "spleen": ((108.0, 128.0), 5.0, "spleen"),
    "liver": ((100.0, 118.0), 6.0, "liver"),
    "gallbladder": ((0.0, 20.0), 4.0, None),
    "kidney_left": ((155.0, 185.0), 7.0, "kidney_left"),
    "kidney_right": ((155.0, 185.0), 7.0, "kidney_right"),
    "ivc": ((105.0, 135.0), 5.0, None),
    "aorta": ((160.0, 195.0), 5.0, "aorta"),
    "disc": ((70.0, 100.0), 6.0, None),
    "cancellous_bone": ((180.0, 280.0), 25.0, None),
    "cortical_bone": ((700.0, 1000.0), 40.0, None),
    "csf": ((5.0, 20.0), 4.0, None),
}
_T = {name: i for i, name in enumerate(_TISSUES)}
_LABEL_OF_TISSUE = np.array([PHANTOM_LABELS[lab] if lab else 0 for _, _, lab in _TISSUES.values()], np.uint8)


class _Grid(NamedTuple):
    """Warped anatomical coordinates, each (D, H, W) float32."""

    u: np.ndarray  # patient right -> left, abdominal cavity wall at about +-1
    v: np.ndarray  # anterior -> posterior, cavity wall at about +-1
    w: np.ndarray  # inferior -> superior, field-of-view ends at +-1
    z_mm: np.ndarray  # superior position in mm (vertebral levels)
    cavity: np.ndarray  # bool, inside the abdominal cavity (within the muscle wall)
    wall: np.ndarray  # bool, the muscle wall ring
    body: np.ndarray  # bool, inside the skin


def _waves(rng: np.random.Generator, ndim: int, wavelength: float, n: int):
    """``n`` random plane waves of about ``wavelength``: wave vectors (n, ndim) and phases (n,)."""
    direction = rng.normal(size=(n, ndim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
    k = direction * (2.0 * math.pi / (wavelength * rng.uniform(0.7, 1.4, (n, 1))))
    return k.astype(np.float32), rng.uniform(0.0, 2.0 * math.pi, n).astype(np.float32)


def _fourier_field(rng: np.random.Generator, coords: Sequence[np.ndarray], wavelength: float, n: int = 6):
    """Smooth random field (zero mean, unit std) at scattered ``coords``: a sum of ``n`` plane waves."""
    k, phase = _waves(rng, len(coords), wavelength, n)
    out = np.zeros(np.shape(coords[0]), np.float32)
    for kk, ph in zip(k, phase):
        out += np.cos(sum(kc * c for kc, c in zip(kk, coords)) + ph, dtype=np.float32)
    return out * np.float32(math.sqrt(2.0 / n))


def _fourier_field_grid(rng: np.random.Generator, axes: Sequence[np.ndarray], wavelength: float, n: int = 6):
    """As :func:`_fourier_field` on the regular (D, H, W) grid spanned by three 1-D ``axes``, computed
    separably: cos(a + b) = cos a cos b - sin a sin b with ``a`` over (D, H) and ``b`` over W."""
    z, y, x = axes
    k, phase = _waves(rng, 3, wavelength, n)
    out = np.zeros((len(z), len(y), len(x)), np.float32)
    for (kz, ky, kx), ph in zip(k, phase):
        a = (kz * z[:, None] + ky * y[None, :] + ph)[..., None]  # (D, H, 1)
        b = kx * x  # (W,)
        out += np.cos(a) * np.cos(b) - np.sin(a) * np.sin(b)
    return out * np.float32(math.sqrt(2.0 / n))


def _inside(rng: np.random.Generator, g: _Grid, q: np.ndarray, rough: float, wavelength: float) -> np.ndarray:
    """Bool mask ``q + rough * field < 1``; the field is only evaluated where it can change the answer."""
    n = 6
    near = q < 1.0 + rough * math.sqrt(2.0 * n)  # |field| <= sqrt(2 n)
    out = np.zeros(q.shape, bool)
    coords = (g.u[near], g.v[near], g.w[near])
    out[near] = q[near] + np.float32(rough) * _fourier_field(rng, coords, wavelength, n) < 1.0
    return out


def _ellipsoid(g: _Grid, centre, semi, angle: float = 0.0, tilt: float = 0.0) -> np.ndarray:
    """Normalised squared radius (< 1 inside) of an ellipsoid rotated by ``angle`` in the axial plane
    and ``tilt`` in the coronal (u, w) plane."""
    du, dv, dw = g.u - np.float32(centre[0]), g.v - np.float32(centre[1]), g.w - np.float32(centre[2])
    if tilt:
        ct, st = np.float32(math.cos(tilt)), np.float32(math.sin(tilt))
        du, dw = ct * du + st * dw, ct * dw - st * du
    if angle:
        ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        du, dv = ca * du + sa * dv, ca * dv - sa * du
    return (du / np.float32(semi[0])) ** 2 + (dv / np.float32(semi[1])) ** 2 + (dw / np.float32(semi[2])) ** 2


def _organ(rng: np.random.Generator, g: _Grid, centre, semi, angle=0.0, tilt=0.0, rough=0.25, jitter=0.04):
    """Bool mask of a perturbed ellipsoid with per-case jitter of centre, size and angle."""
    centre = np.asarray(centre, float) + rng.uniform(-jitter, jitter, 3) * np.array([1.0, 1.0, 1.5])
    semi = np.asarray(semi, float) * rng.uniform(0.88, 1.12, 3)
    angle += rng.uniform(-0.15, 0.15)
    q = _ellipsoid(g, centre, semi, angle, tilt)
    return _inside(rng, g, q, rough, wavelength=1.6 * float(np.mean(semi)))


def _grid(rng: np.random.Generator, shape, spacing) -> _Grid:
    """Scanner coordinates -> anatomical coordinates: random pose, smooth deformation, body size."""
    fov = np.array(shape, float) * np.array(spacing, float)  # (z, y, x) mm
    axes = [((np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(s)) for n, s in zip(shape, spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")  # each (D, H, W) mm
    # Random smooth deformation (displacement std ~5 mm in-plane, ~4 mm along z), then pose.
    wave = 0.8 * float(fov[1:].mean())
    x = x + np.float32(0.018 * fov[2]) * _fourier_field_grid(rng, axes, wave)
    y = y + np.float32(0.018 * fov[1]) * _fourier_field_grid(rng, axes, wave)
    z = z + np.float32(0.02 * fov[0]) * _fourier_field_grid(rng, axes, wave)
    theta = rng.uniform(-0.07, 0.07)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    tx, ty = rng.uniform(-0.03, 0.03) * fov[2], rng.uniform(-0.03, 0.03) * fov[1]
    x, y = c * x + s * y - np.float32(tx), c * y - s * x - np.float32(ty)
    # Body: ellipse, flatter at the back (superellipse), slightly wider towards the feet.
    a_x = 0.43 * fov[2] * rng.uniform(0.9, 1.04)
    a_y = 0.34 * fov[1] * rng.uniform(0.88, 1.06)
    w = z / np.float32(fov[0] / 2)
    ub = x / (np.float32(a_x) * (1 + np.float32(0.04) * (-w)))
    vb = y / np.float32(a_y)
    rb = np.where(vb > 0, (np.abs(ub) ** 2.6 + np.abs(vb) ** 2.6) ** (1 / 2.6), np.hypot(ub, vb))
    shell = (rb > 0.5) & (rb < 1.1)  # skin, fat and muscle wall lie here: perturb only these voxels
    coords = (ub[shell], vb[shell], w[shell])
    rb[shell] *= 1 + np.float32(0.015) * _fourier_field(rng, coords, 1.2)
    fat0, muscle0 = rng.uniform(0.06, 0.15), rng.uniform(0.04, 0.06)
    fat = np.full(rb.shape, fat0, np.float32)
    fat[shell] *= 1 + np.float32(0.35) * _fourier_field(rng, coords, 1.5)
    cavity_r = np.float32(1 - muscle0) - fat
    r0 = np.float32(1 - fat0 - muscle0)
    body = rb < 1
    return _Grid(ub / r0, vb / r0, w, z, rb < cavity_r, body & (rb >= cavity_r) & (rb < 1 - fat), body)


def _paint_anatomy(rng: np.random.Generator, g: _Grid) -> np.ndarray:
    """Tissue class map (D, H, W) uint8, painted from lowest to highest priority."""
    tissue = np.full(g.u.shape, _T["air"], np.uint8)
    tissue[g.body] = _T["subcutaneous_fat"]
    tissue[g.wall] = _T["muscle"]
    tissue[g.cavity] = _T["visceral_fat"]
    u, v, w = g.u, g.v, g.w

    # Paraspinal muscles behind the spine and psoas beside it (thicker towards the feet).
    for side in (-1, 1):
        tissue[_organ(rng, g, (0.2 * side, 0.9, 0.0), (0.19, 0.15, 3.0), rough=0.1, jitter=0.02)] = _T["muscle"]
        psoas = _ellipsoid(g, (0.21 * side, 0.45, 0.0), (1.0, 1.0, 1e9)) < (0.055 + 0.035 * (1 - w)) ** 2
        tissue[psoas & g.cavity] = _T["muscle"]

    # Small bowel: the super-level set of a wavy random field fills the peritoneal space with loops
    # (more of them towards the feet); wall, then fluid or gas inside. Ascending/descending colon as tubes.
    free = g.cavity & (v < np.float32(0.3 + rng.uniform(-0.05, 0.05))) & (tissue == _T["visceral_fat"])
    coords = (u[free], v[free], w[free])
    f = _fourier_field(rng, coords, rng.uniform(0.3, 0.4), n=12)
    f -= np.float32(rng.uniform(0.0, 0.3)) + np.float32(0.25) * (coords[2] + 1)  # loops where f > 0
    gas = _fourier_field(rng, coords, 0.5) > rng.uniform(0.7, 1.2)
    inside = [np.uint8(_T[t]) for t in ("bowel_gas", "bowel_fluid", "bowel_wall")]
    tissue[free] = np.select([(f > 0.4) & gas, f > 0.4, f > 0], inside, tissue[free])
    for side in (-1, 1):
        centre = (0.68 * side + rng.uniform(-0.05, 0.05), 0.15 + rng.uniform(-0.05, 0.05), -0.4)
        semi = (0.15, 0.15, 0.5)
        outer = _organ(rng, g, centre, semi, rough=0.2, jitter=0.0) & g.cavity
        tissue[outer] = _T["bowel_wall"]
        tissue[outer & (_ellipsoid(g, centre, (0.11, 0.11, 0.45)) < 1.0)] = _T["bowel_gas"]

    # Stomach (left upper quadrant) with an air-fluid level: gas rises anteriorly in a supine patient.
    sc = (0.32 + rng.uniform(-0.05, 0.05), -0.3 + rng.uniform(-0.05, 0.05), 0.55)
    stomach = _organ(rng, g, sc, (0.3, 0.26, 0.42), angle=0.5, rough=0.15, jitter=0.0) & g.cavity
    lumen = stomach & (_ellipsoid(g, sc, (0.25, 0.21, 0.37), angle=0.5) < 1.0)
    tissue[stomach] = _T["bowel_wall"]
    tissue[lumen] = _T["bowel_fluid"]
    tissue[lumen & (v < np.float32(sc[1] - rng.uniform(0.0, 0.15)))] = _T["bowel_gas"]

    # Labelled organs, lowest priority first; later ones carve earlier ones.
    spleen = _organ(rng, g, (0.64, 0.38, 0.45), (0.2, 0.42, 0.5), angle=0.55, rough=0.25)
    tissue[spleen & g.cavity] = _T["spleen"]
    liver_jitter = rng.uniform(-0.04, 0.04, 2)
    right_lobe = _ellipsoid(g, (-0.45 + liver_jitter[0], -0.02, 0.35), (0.52, 0.74, 0.8) * rng.uniform(0.9, 1.1, 3))
    left_lobe = _ellipsoid(g, (0.1 + liver_jitter[1], -0.44, 0.55), (0.42, 0.3, 0.45) * rng.uniform(0.85, 1.15, 3))
    tissue[_inside(rng, g, np.minimum(right_lobe, left_lobe), 0.25, 0.9) & g.cavity] = _T["liver"]
    gallbladder = _organ(rng, g, (-0.3, -0.42, -0.05), (0.1, 0.12, 0.2), angle=-0.6, rough=0.1)
    tissue[gallbladder & (tissue == _T["liver"])] = _T["gallbladder"]
    for side, name, z0 in ((1, "kidney_left", -0.02), (-1, "kidney_right", -0.2)):
        centre = np.array([0.45 * side, 0.52, z0]) + rng.uniform(-0.04, 0.04, 3) * np.array([1.0, 1.0, 2.0])
        # Local u is the short axis through the hilum, turned to face anteromedially; local v runs from
        # anterolateral to posteromedial as in an axial section of a real kidney.
        turn = 0.5 + rng.uniform(-0.15, 0.15)
        angle = side * turn
        semi = np.array([0.2, 0.26, 0.55]) * rng.uniform(0.9, 1.1, 3)
        q = _ellipsoid(g, centre, semi, angle, tilt=0.15 * side)
        kidney = _inside(rng, g, q, 0.12, 1.0) & g.cavity
        # Renal sinus: a fat notch on the anteromedial side makes the bean shape; it is not labelled.
        offset = 0.17 * np.array([-side * math.cos(turn), -math.sin(turn), 0.0])  # = -side * local u
        sinus = _ellipsoid(g, centre + offset, semi * np.array([0.55, 0.45, 0.45]), angle) < 1.0
        tissue[kidney] = _T[name]
        tissue[kidney & sinus] = _T["visceral_fat"]

    # Great vessels: IVC (right, runs through the liver) and the aorta (anterior-left of the spine).
    drift = np.float32(0.03) * _fourier_field(rng, (w,), 1.5)  # the vessels wander along z
    ivc = _ellipsoid(g, (-0.15 + rng.uniform(-0.03, 0.03), 0.22, 0.0), (0.1, 0.065, 1e9)) + drift < 1.0
    tissue[ivc & g.cavity] = _T["ivc"]
    radius = 0.085 * rng.uniform(0.85, 1.15)
    au = 0.1 + rng.uniform(-0.03, 0.03) + drift
    av = 0.24 + rng.uniform(-0.03, 0.03) + 0.5 * drift
    aorta = (u - au) ** 2 + ((v - av) * np.float32(0.8)) ** 2 < np.float32(radius**2)
    tissue[aorta & g.cavity] = _T["aorta"]

    _paint_spine(rng, g, tissue)
    return tissue


def _paint_spine(rng: np.random.Generator, g: _Grid, tissue: np.ndarray) -> None:
    """Lumbar vertebrae (cortical shell, cancellous core), discs, canal, posterior elements; ribs."""
    u, v, w = g.u, g.v, g.w
    period = rng.uniform(30.0, 36.0)  # mm per vertebral level
    level = np.mod((g.z_mm + np.float32(rng.uniform(0, period))) / np.float32(period), 1.0)
    disc = level < 0.25
    vb = (u / np.float32(0.2)) ** 2 + ((v - np.float32(0.55)) / np.float32(0.19)) ** 2
    tissue[(vb < 1) & disc] = _T["disc"]
    tissue[(vb < 1) & ~disc] = _T["cortical_bone"]
    tissue[(vb < 0.7) & ~disc] = _T["cancellous_bone"]
    canal = np.hypot(u, (v - np.float32(0.84)) * np.float32(0.9))
    arch = (canal < 0.14) & ((v > 0.74) | (level > 0.55))  # lamina at every level, pedicles at some
    spinous = (np.abs(u) < 0.035) & (v > 0.84) & (v < 1.04) & (level > 0.4)
    transverse = (np.abs(u) < 0.32) & (np.abs(v - np.float32(0.8)) < 0.035) & (level > 0.45) & (level < 0.75)
    tissue[(arch | spinous | transverse) & (vb >= 1)] = _T["cortical_bone"]
    tissue[canal < 0.075] = _T["csf"]
    # Ribs: dots in the muscle wall of the upper slices (not over the spine), sliding round with z.
    ring = g.wall & (w > np.float32(-0.25 + rng.uniform(-0.1, 0.1)))
    theta = np.arctan2(v[ring], u[ring])  # 0 patient left, pi/2 posterior, -pi/2 anterior
    ribs = np.abs(theta - np.float32(math.pi / 2)) > 0.45
    on_rib = np.zeros_like(ribs)
    for base in np.linspace(-1.0, 4.1, 9) + rng.uniform(-0.1, 0.1):
        d = np.mod(theta - np.float32(base) - np.float32(0.5) * w[ring] + np.float32(math.pi), np.float32(2 * math.pi))
        on_rib |= np.abs(d - np.float32(math.pi)) < 0.06
    tissue[ring] = np.where(ribs & on_rib, np.uint8(_T["cortical_bone"]), tissue[ring])


def _render(rng: np.random.Generator, tissue: np.ndarray, g: _Grid) -> np.ndarray:
    """HU image (D, H, W) float32 from the tissue map: texture, vessels, blur, bias field, noise."""
    shape = tissue.shape
    means = np.array([rng.uniform(*hu) for hu, _, _ in _TISSUES.values()], np.float32)
    kidney = rng.uniform(*_TISSUES["kidney_left"][0])
    means[_T["kidney_left"]], means[_T["kidney_right"]] = kidney + rng.uniform(-4, 4, 2)
    texture_std = np.array([t for _, t, _ in _TISSUES.values()], np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), sigma=(0.7, 1.3, 1.3))
    texture /= texture.std() + 1e-6
    hu = means[tissue] + texture_std[tissue] * texture
    # Portal/hepatic vessels: thin tubes (where two smooth fields are both near zero), still "liver".
    liver = tissue == _T["liver"]
    coords = (g.u[liver], g.v[liver], g.w[liver])
    tubes = (np.abs(_fourier_field(rng, coords, 0.5)) < 0.09) & (np.abs(_fourier_field(rng, coords, 0.5)) < 0.09)
    hu[liver] += tubes * np.float32(rng.uniform(30, 50))
    hu = ndimage.gaussian_filter(hu, sigma=(0.45, 0.6, 0.6))  # partial volume
    # Bias in scanner coordinates: <= ~0.6 % gain on attenuation (HU + 1000) plus <= ~4 HU offset (std).
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    gain = 1 + np.float32(rng.uniform(0.002, 0.006)) * _fourier_field_grid(rng, axes, 3.0, n=4)
    offset = np.float32(rng.uniform(1, 4)) * _fourier_field_grid(rng, axes, 3.0, n=4)
    hu = (hu + 1000) * gain - 1000 + offset
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), sigma=(0.0, 0.6, 0.6))
    hu += noise * np.float32(rng.uniform(10.0, 20.0) / (noise.std() + 1e-6))
    return hu


def _check_geometry(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    try:
        shape_t = tuple(int(s) for s in shape)
        ok = len(shape_t) == 3 and all(s == t and s >= _MIN_SIZE for s, t in zip(shape_t, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"shape must be three integers (D, H, W), each >= {_MIN_SIZE}, got {shape!r}")
    try:
        spacing_t = tuple(float(s) for s in spacing)
        ok = len(spacing_t) == 3 and all(math.isfinite(s) and s > 0 for s in spacing_t)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"spacing must be three positive numbers (D, H, W) in mm, got {spacing!r}")
    return shape_t, spacing_t


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def generate_phantom(
    seed: int,
    shape: Sequence[int] = DEFAULT_PHANTOM_SHAPE,
    spacing: Sequence[float] = DEFAULT_PHANTOM_SPACING,
) -> tuple[sitk.Image, sitk.Image]:
    """Generate one synthetic abdominal CT case (portal-venous phase; see the module docstring).

    Organ intensities: the median HU inside each organ lies in :data:`PHANTOM_HU_RANGES` (liver ~110,
    spleen ~118, kidneys ~170, aorta ~178); fat about -100, muscle about 50, bone 200-1000, air -1000.
    Generation takes ~0.3 s at the default shape on one CPU core.

    Args:
        seed: non-negative integer; the same seed, shape and spacing give the same case.
        shape: array size ``(D, H, W)``, each at least 16.
        spacing: voxel size ``(D, H, W)`` in mm.

    Returns:
        ``(image, labels)``: image int16 HU and labels uint8 with values of :data:`PHANTOM_LABELS`,
        both of array shape ``(D, H, W)``, same spacing, identity direction, origin centring the volume.

    Raises:
        ConfigError: a bad seed, shape or spacing.
    """
    seed = _check_seed(seed)
    shape, spacing = _check_geometry(shape, spacing)
    hu, labels = phantom_arrays(seed, shape, spacing)
    return phantom_images(hu, labels, spacing)


def phantom_arrays(
    seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays behind :func:`generate_phantom` (arguments already checked), for generators that add to
    the anatomy (:mod:`MaskMedCore.data.phantom_lesions`) before it is rounded to int16.

    Returns:
        ``(hu, labels)``: hu (D, H, W) float32 HU, not yet rounded or clipped; labels (D, H, W) uint8.
    """
    rng = np.random.default_rng(seed)
    g = _grid(rng, shape, spacing)
    tissue = _paint_anatomy(rng, g)
    hu = _render(rng, tissue, g)
    return hu, _LABEL_OF_TISSUE[tissue]


def phantom_images(hu: np.ndarray, labels: np.ndarray, spacing: Sequence[float]) -> tuple[sitk.Image, sitk.Image]:
    """``(image, labels)`` as :func:`generate_phantom` returns them, from (D, H, W) ``hu`` and ``labels``.

    The image is ``hu`` rounded and clipped to int16 [-1024, 3071]; both images share one geometry.
    """
    shape = hu.shape
    image = sitk.GetImageFromArray(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK order is (x, y, z) = (W, H, D)
    image.SetOrigin(tuple(-(n - 1) / 2 * s for n, s in zip(reversed(shape), reversed(spacing))))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    return image, label_image


def write_phantom_dataset(
    out_dir: str | os.PathLike,
    num_cases: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_PHANTOM_SHAPE,
    spacing: Sequence[float] = DEFAULT_PHANTOM_SPACING,
    name: str = "MaskMedPhantom",
    max_lesions: int = 0,
) -> Path:
    """Write ``num_cases`` phantoms as an nnU-Net v2 raw dataset and return its folder.

    Layout: ``dataset.json``, ``imagesTr/phantom_000_0000.nii.gz``, ``labelsTr/phantom_000.nii.gz``, ...;
    case ``i`` uses seed ``seed + i``. Every file is written atomically and ``dataset.json`` last, so a
    folder without it is an interrupted run.

    With ``max_lesions > 0`` the cases are lesion phantoms
    (:func:`MaskMedCore.data.phantom_lesions.generate_lesion_phantom`): the labels gain ``"lesion": 6``,
    ``instancesTr/<case>.nii.gz`` holds each case's instance map (the reference for instance evaluation)
    and dataset.json gains ``instance_classes`` and ``case_labels`` (see
    :mod:`MaskMedCore.data.multitask_spec`). With 0 the output is that of the plain phantom.

    Raises:
        ConfigError: bad ``num_cases``, ``seed``, ``shape``, ``spacing`` or ``max_lesions``.
        MaskMedError: ``out_dir`` exists and is not an empty folder, or a file cannot be written.
    """
    if isinstance(num_cases, bool) or not isinstance(num_cases, (int, np.integer)) or num_cases < 1:
        raise ConfigError(f"num_cases must be a positive integer, got {num_cases!r}")
    seed = _check_seed(seed)
    shape, spacing = _check_geometry(shape, spacing)
    if isinstance(max_lesions, bool) or not isinstance(max_lesions, (int, np.integer)) or max_lesions < 0:
        raise ConfigError(f"max_lesions must be a non-negative integer, got {max_lesions!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is not a folder" if not out.is_dir() else "is not empty"
        raise MaskMedError(f"output folder {out} {what}; choose a new or empty folder for the phantom dataset")
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)
    cases = [f"phantom_{i:03d}" for i in range(num_cases)]
    labels_json = dict(PHANTOM_LABELS)
    description = "MaskMed synthetic abdominal CT phantom (portal-venous phase), generated, not patient data"
    multitask: dict = {}
    if max_lesions:
        # Imported here: phantom_lesions builds on this module.
        from MaskMedCore.data.phantom_lesions import LESION_PHANTOM_LABELS, write_lesion_cases

        multitask = write_lesion_cases(out, cases, seed, shape, spacing, int(max_lesions)).to_meta()
        labels_json = dict(LESION_PHANTOM_LABELS)
        description += (
            f"; with 0..{max_lesions} liver/kidney lesions per case (label 'lesion', instance maps in instancesTr/, "
            "case labels lesion_count and lesion_type)"
        )
    else:
        for i, case in enumerate(cases):
            image, labels = generate_phantom(seed + i, shape, spacing)
            write_image(image, out / "imagesTr" / f"{case}_0000.nii.gz")
            write_image(labels, out / "labelsTr" / f"{case}.nii.gz")
    meta = {
        "name": name,
        "description": description,
        "channel_names": {"0": "CT"},
        "labels": labels_json,
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
        "licence": "Apache-2.0 (generated by MaskMed)",
        "maskmed_phantom": {
            "generator_version": PHANTOM_GENERATOR_VERSION,
            "seed": seed,
            "shape": list(shape),
            "spacing": list(spacing),
            "hu_ranges": {k: list(r) for k, r in PHANTOM_HU_RANGES.items()},
        },
    }
    if max_lesions:
        meta["maskmed_phantom"]["max_lesions"] = int(max_lesions)
        meta.update(multitask)
    atomic_write_text(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    return out
