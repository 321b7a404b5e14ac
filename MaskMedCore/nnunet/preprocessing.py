"""nnU-Net v2's preprocessing and export for one configuration, reproduced with NumPy/SciPy.

MaskMed's own pipeline (``MaskMedCore.data.preprocessing``) follows nnU-Net with a few documented
departures; a model trained *by nnU-Net* must see exactly what nnU-Net fed it, so this module
follows nnunetv2 2.x step by step (``DefaultPreprocessor.run_case_npy``, ``default_resampling``,
``default_normalization_schemes``, ``export_prediction``):

1. channels stacked as float32 ``(C, z, y, x)``; spacing ``(z, y, x)``; both transposed by the
   plans' ``transpose_forward``;
2. crop to the bounding box of the non-zero region (union over channels, holes filled) -- nnU-Net
   always crops;
3. per-channel normalisation named by ``normalization_schemes`` (``ZScoreNormalization`` inside the
   non-zero mask when ``use_mask_for_norm``, ``CTNormalization`` with the fingerprint's 0.5/99.5
   percentiles, mean and std from ``foreground_intensity_properties_per_channel``,
   ``NoNormalization``, ``RescaleTo01Normalization``, ``RGBTo01Normalization``), in float32;
4. resampling to the configuration's spacing with ``resample_data_or_seg_to_shape`` and its kwargs
   (cubic splines; an axis more than 3x coarser than the others is done slice-wise with ``order_z``).
   nnU-Net resizes with scikit-image's ``resize(mode="edge", anti_aliasing=False)``, which is
   ``scipy.ndimage.zoom(grid_mode=True, mode="nearest")`` in float64 followed by clipping to the input's
   range; that is what :func:`resize_like_skimage` does, without the scikit-image dependency.

Export (``convert_predicted_logits_to_segmentation_with_correct_shape``): the logits are resampled
to the cropped shape with ``resampling_fn_probabilities`` (linear), arg-maxed, pasted into the
uncropped array and transposed back. Here the classes are resampled one at a time with a running
arg-max (same result, memory O(volume) instead of O(K x volume)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from MaskMedCore.data.preprocessing import bounding_box, nonzero_mask
from MaskMedCore.nnunet.result_folder import NnUNetModelError, NnUNetResultFolder

ANISO_THRESHOLD = 3.0
"""nnU-Net's ``ANISO_THRESHOLD``: separate-z resampling when max/min spacing exceeds it."""

SUPPORTED_RESAMPLING = ("resample_data_or_seg_to_shape",)
SUPPORTED_NORMALIZATION = (
    "ZScoreNormalization",
    "CTNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
    "RGBTo01Normalization",
)


@dataclass(frozen=True)
class NnUNetPreprocessing:
    """What one configuration's preprocessing needs, read and checked from the plans.

    Attributes:
        transpose_forward / transpose_backward: axis permutations of the plans.
        spacing: target spacing in the transposed axis order.
        schemes: one normalisation class name per channel.
        use_mask_for_norm: per channel.
        intensity: per channel, the fingerprint's foreground statistics (CT normalisation).
        data_kwargs / probabilities_kwargs: ``resampling_fn_*_kwargs`` (order, order_z, force_separate_z).
    """

    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    spacing: tuple[float, float, float]
    schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    intensity: tuple[dict, ...]
    data_kwargs: dict
    probabilities_kwargs: dict

    @classmethod
    def from_folder(cls, folder: NnUNetResultFolder) -> NnUNetPreprocessing:
        source = f"{folder.path / 'plans.json'} (configuration '{folder.configuration}')"
        cfg, plans = folder.config, folder.plans
        C = len(folder.channel_names)
        for key in ("resampling_fn_data", "resampling_fn_probabilities"):
            if cfg.get(key) not in SUPPORTED_RESAMPLING:
                raise NnUNetModelError(
                    f"{source}: {key} is {cfg.get(key)!r}; MaskMed reproduces {SUPPORTED_RESAMPLING[0]} only"
                )
        schemes = tuple(cfg.get("normalization_schemes") or ())
        if len(schemes) != C:
            raise NnUNetModelError(f"{source}: normalization_schemes has {len(schemes)} entries for {C} channel(s)")
        unknown = [s for s in schemes if s not in SUPPORTED_NORMALIZATION]
        if unknown:
            raise NnUNetModelError(
                f"{source}: normalization scheme {unknown[0]!r} is not one of nnU-Net's built-in schemes "
                f"{list(SUPPORTED_NORMALIZATION)}"
            )
        props = plans.get("foreground_intensity_properties_per_channel") or {}
        intensity = []
        for c, scheme in enumerate(schemes):
            stats = props.get(str(c), {})
            if scheme == "CTNormalization":
                missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k not in stats]
                if missing:
                    raise NnUNetModelError(
                        f"{folder.path / 'plans.json'}: foreground_intensity_properties_per_channel['{c}'] lacks "
                        f"{missing}, which CT normalisation of channel {c} needs"
                    )
            intensity.append(dict(stats))
        mask = tuple(bool(m) for m in (cfg.get("use_mask_for_norm") or [False] * C))
        forward = tuple(int(a) for a in plans.get("transpose_forward", (0, 1, 2)))
        backward = tuple(int(a) for a in plans.get("transpose_backward", (0, 1, 2)))
        if sorted(forward) != [0, 1, 2] or [forward[b] for b in backward] != [0, 1, 2]:
            raise NnUNetModelError(
                f"{folder.path / 'plans.json'}: transpose_forward {list(forward)} and transpose_backward "
                f"{list(backward)} are not inverse permutations of (0, 1, 2)"
            )
        return cls(
            transpose_forward=forward,
            transpose_backward=backward,
            spacing=tuple(float(s) for s in cfg["spacing"]),
            schemes=schemes,
            use_mask_for_norm=mask,
            intensity=tuple(intensity),
            data_kwargs=dict(cfg.get("resampling_fn_data_kwargs") or {}),
            probabilities_kwargs=dict(cfg.get("resampling_fn_probabilities_kwargs") or {}),
        )


def preprocess(images: list[sitk.Image], prep: NnUNetPreprocessing) -> tuple[np.ndarray, dict[str, Any]]:
    """C single-channel images of one case -> ``(C, d, h, w)`` float32 network input and the properties
    :func:`export_labels` needs (plain lists: original shape/spacing/geometry, crop box, cropped shape)."""
    ref = images[0]
    data = np.stack([sitk.GetArrayFromImage(im) for im in images]).astype(np.float32)  # (C, z, y, x)
    spacing_zyx = tuple(float(s) for s in reversed(ref.GetSpacing()))
    shape_before_crop = data.shape[1:]
    data = np.ascontiguousarray(data.transpose((0, *(a + 1 for a in prep.transpose_forward))))
    spacing = tuple(spacing_zyx[a] for a in prep.transpose_forward)

    mask = nonzero_mask(data)
    bbox = bounding_box(mask)
    box = tuple(slice(a, b) for a, b in bbox)
    data = data[(slice(None), *box)]
    mask = mask[box]
    shape_after_crop = tuple(int(s) for s in data.shape[1:])

    for c, scheme in enumerate(prep.schemes):
        data[c] = normalize(data[c], scheme, mask if prep.use_mask_for_norm[c] else None, prep.intensity[c])

    new_shape = tuple(int(round(s / t * n)) for s, t, n in zip(spacing, prep.spacing, shape_after_crop))
    data = resample_to_shape(data, new_shape, spacing, prep.spacing, **_resampling_args(prep.data_kwargs))
    properties = {
        "shape_before_crop": list(shape_before_crop),  # (z, y, x) as read
        "spacing_zyx": list(spacing_zyx),
        "origin": list(ref.GetOrigin()),
        "direction": list(ref.GetDirection()),
        "bbox": bbox,  # in the transposed axis order
        "shape_after_crop": list(shape_after_crop),
        "spacing_transposed": list(spacing),
    }
    return np.ascontiguousarray(data, dtype=np.float32), properties


def normalize(x: np.ndarray, scheme: str, mask: np.ndarray | None, stats: dict) -> np.ndarray:
    """One float32 channel, as nnU-Net's ``ImageNormalization`` subclass ``scheme`` does it."""
    eps = 1e-8
    if scheme == "ZScoreNormalization":
        if mask is not None:
            values = x[mask]
            mean, std = values.mean(), values.std()
            x[mask] = (values - mean) / max(std, eps)
            return x
        mean, std = x.mean(), x.std()
        x -= mean
        x /= max(std, eps)
        return x
    if scheme == "CTNormalization":
        np.clip(x, stats["percentile_00_5"], stats["percentile_99_5"], out=x)
        x -= stats["mean"]
        x /= max(stats["std"], eps)
        return x
    if scheme == "RescaleTo01Normalization":
        x -= x.min()
        x /= np.clip(x.max(), a_min=eps, a_max=None)
        return x
    if scheme == "RGBTo01Normalization":
        if x.min() < 0 or x.max() > 255:
            raise NnUNetModelError(
                f"RGBTo01Normalization expects intensities in [0, 255]; this image has [{x.min()}, {x.max()}]"
            )
        x /= 255.0
        return x
    return x  # NoNormalization


def separate_axis(current: tuple[float, ...], new: tuple[float, ...], force: bool | None) -> int | None:
    """nnU-Net's ``determine_do_sep_z_and_axis``: the one coarse axis to resample on its own, or None."""

    def lowres(spacing) -> list[int]:
        s = np.asarray(spacing, dtype=np.float64)
        return list(np.flatnonzero(s.max() / s == 1))

    if force is not None:
        axes = lowres(current) if force else None
    elif np.max(current) / np.min(current) > ANISO_THRESHOLD:
        axes = lowres(current)
    elif np.max(new) / np.min(new) > ANISO_THRESHOLD:
        axes = lowres(new)
    else:
        axes = None
    return axes[0] if axes is not None and len(axes) == 1 else None


def resize_like_skimage(x: np.ndarray, new_shape: tuple[int, ...], order: int) -> np.ndarray:
    """scikit-image's ``resize(x, new_shape, order, mode="edge", anti_aliasing=False)`` on a float64 array."""
    factors = [n / s for n, s in zip(new_shape, x.shape)]
    out = ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True)
    if order > 0:  # skimage clips to the input's range (cubic splines overshoot)
        np.clip(out, x.min(), x.max(), out=out)
    return out


def resample_to_shape(
    data: np.ndarray,
    new_shape: tuple[int, ...],
    current_spacing: tuple[float, ...],
    new_spacing: tuple[float, ...],
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = None,
) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg_to_shape`` (``is_seg=False``) for ``(C, d, h, w)`` data.

    Computes in float64 and returns ``data``'s dtype; returns ``data`` itself when the shape is unchanged.
    """
    if tuple(data.shape[1:]) == tuple(new_shape):
        return data
    axis = separate_axis(current_spacing, new_spacing, force_separate_z)
    out = np.empty((data.shape[0], *new_shape), dtype=data.dtype)
    for c in range(data.shape[0]):
        x = data[c].astype(np.float64)
        if axis is None:
            out[c] = resize_like_skimage(x, new_shape, order)
            continue
        plane = tuple(n for i, n in enumerate(new_shape) if i != axis)
        moved = np.moveaxis(x, axis, 0)
        slices = np.stack([resize_like_skimage(s, plane, order) for s in moved])  # (S_old, P, Q)
        if slices.shape[0] != new_shape[axis]:
            slices = _resample_axis0(slices, new_shape[axis], order_z)
        out[c] = np.moveaxis(slices, 0, axis)
    return out


def _resample_axis0(x: np.ndarray, n: int, order: int) -> np.ndarray:
    """nnU-Net's separate-z step: ``map_coordinates(mode="nearest")`` along axis 0 only, at source
    positions ``scale * (i + 0.5) - 0.5`` (the other axes map to themselves, so 1-D interpolation is exact)."""
    old = x.shape[0]
    pos = (old / n) * (np.arange(n) + 0.5) - 0.5
    pos = np.clip(pos, 0, old - 1)
    if order == 0:
        return x[np.floor(pos + 0.5).astype(np.int64).clip(0, old - 1)]
    if order != 1:
        raise NnUNetModelError(f"resampling order_z {order} is not supported (nnU-Net uses 0 or 1)")
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, old - 1)
    w = (pos - lo)[:, None, None]
    return x[lo] * (1 - w) + x[hi] * w


def export_labels(logits: Any, properties: dict[str, Any], prep: NnUNetPreprocessing) -> np.ndarray:
    """``(K, d, h, w)`` logits at the network grid -> ``(z, y, x)`` uint8/uint16 labels of the input image.

    Classes are resampled one at a time (nnU-Net's probabilities resampling) with a running arg-max
    (first maximum wins, as ``argmax``).
    """
    shape = tuple(properties["shape_after_crop"])
    args = _resampling_args(prep.probabilities_kwargs)
    K = int(logits.shape[0])
    best = arg = None
    for k in range(K):
        channel = logits[k]
        channel = channel.detach().float().cpu().numpy() if hasattr(channel, "detach") else np.asarray(channel)
        score = resample_to_shape(
            channel[None].astype(np.float32), shape, prep.spacing, tuple(properties["spacing_transposed"]), **args
        )[0]
        if best is None:
            best, arg = score.copy(), np.zeros(shape, dtype=np.uint8 if K <= 255 else np.uint16)
            continue
        np.putmask(arg, score > best, k)
        np.maximum(best, score, out=best)
    transposed_shape = tuple(properties["shape_before_crop"][a] for a in prep.transpose_forward)
    out = np.zeros(transposed_shape, dtype=arg.dtype)
    out[tuple(slice(a, b) for a, b in properties["bbox"])] = arg
    return np.ascontiguousarray(out.transpose(prep.transpose_backward))


def _resampling_args(kwargs: dict) -> dict:
    return {
        "order": int(kwargs.get("order", 3)),
        "order_z": int(kwargs.get("order_z", 0)),
        "force_separate_z": kwargs.get("force_separate_z"),
    }
