"""Network-agnostic sliding-window (tiled) prediction with Gaussian weighting and mirroring TTA.

Follows nnU-Net v2's sliding-window inference (Isensee et al. 2021, nnU-Net; ``inference/
sliding_window_prediction.py``): evenly spread overlapping tiles, each prediction weighted by a
Gaussian importance map centred on the tile, the weighted sum divided by the summed weights, and
mirroring test-time augmentation that averages the flipped-back predictions of every subset of the
mirror axes. It averages whatever ``predict_fn`` returns (logits, log-probabilities or
probabilities); see upstream-facts §0 item 3 for why MaskMed's heads return log-probabilities.

Differences from nnU-Net, all deliberate:

- The importance map is an analytic separable Gaussian normalised to max 1 (nnU-Net filters a delta
  with ``scipy.ndimage.gaussian_filter``, truncated at 4σ, and scales to max 10); the scale cancels
  in the weighted average and the shape differs only where the truncated filter is 0.
- The accumulators default to float32 on the CPU (nnU-Net: fp16 on the device), so a large volume
  never needs device memory beyond one tile batch; pass ``accumulate_device``/``accumulate_dtype``
  to change that.
- Tile batches larger than 1 (``tile_batch_size``); on an out-of-memory error the batch is halved,
  and at batch 1 the work moves to the CPU, each time with a warning.
- With ``tile_info=True``, ``predict_fn`` also learns where its tiles lie and which mirror pass it
  is computing (:class:`TilePass`), for outputs that are not voxel maps (instances, case-level
  classes; ``MaskMedCore.inference.instances``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from MaskMedCore.errors import MaskMedError


@dataclass(frozen=True)
class TilePass:
    """Where the tiles of one ``predict_fn`` call lie, and which mirror pass it is (``tile_info=True``).

    Attributes:
        origins: first voxel (d, h, w) of each of the B tiles in the padded volume, in batch order.
        pad_before: voxels of zero padding added before the input along (D, H, W) (0 unless the input
            is smaller than the patch and ``center_padding`` is set); input voxel = padded voxel - this.
        input_shape: (D, H, W) of the unpadded input.
        mirror_axes: spatial axes (0=D, 1=H, 2=W) flipped in this pass; () is the plain, un-mirrored pass.
        pass_index: index of this mirror pass, 0 = un-mirrored.
        num_passes: mirror passes per tile (2 ** len(mirror_axes) of ``sliding_window_predict``).
    """

    origins: tuple[tuple[int, int, int], ...]
    pad_before: tuple[int, int, int]
    input_shape: tuple[int, int, int]
    mirror_axes: tuple[int, ...]
    pass_index: int
    num_passes: int

    @property
    def input_origins(self) -> tuple[tuple[int, int, int], ...]:
        """Each tile's first voxel in the unpadded input's (D, H, W) coordinates (negative where it
        starts in the padding before the input)."""
        return tuple(tuple(o - p for o, p in zip(origin, self.pad_before)) for origin in self.origins)

    @property
    def mirrored(self) -> bool:
        return bool(self.mirror_axes)


PredictFn = Callable[[Tensor], Tensor]
TilePredictFn = Callable[[Tensor, TilePass], Tensor]
"""``predict_fn`` of ``sliding_window_predict(..., tile_info=True)``: tiles (B, C, d, h, w) and their
:class:`TilePass` -> (B, K, d, h, w)."""


class InferenceCancelled(MaskMedError):
    """``cancel()`` returned True; the prediction stopped between two tile batches."""


class InferenceOutOfMemory(MaskMedError):
    """Even a single tile on the CPU ran out of memory."""


def _as_triple(name: str, value: Sequence[int]) -> tuple[int, int, int]:
    value = tuple(value)
    if len(value) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ValueError(f"{name} must be three positive integers (D, H, W), got {value!r}")
    return value


def _check_overlap(overlap: float) -> None:
    if not (isinstance(overlap, (int, float)) and 0.0 <= overlap < 1.0):
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")


def axis_steps(size: int, patch: int, overlap: float) -> list[int]:
    """Tile start positions along one axis (nnU-Net's ``compute_steps_for_sliding_window``).

    ``n = ceil((size - patch) / (patch * (1 - overlap))) + 1`` tiles, spread evenly from 0 to
    ``size - patch`` (rounded to the nearest voxel). The step is at least one voxel: a 2D plan's tiles are
    one slice deep, and each slice is predicted once (nnU-Net's 2d prediction), not twice at overlap 0.5.
    """
    if size < patch:
        raise ValueError(f"size {size} is smaller than the patch {patch}; pad the input first")
    _check_overlap(overlap)
    n = math.ceil((size - patch) / max(1.0, patch * (1.0 - overlap))) + 1
    if n == 1:
        return [0]
    step = (size - patch) / (n - 1)
    return [int(round(i * step)) for i in range(n)]


def tile_positions(
    shape: Sequence[int], patch: Sequence[int], overlap: float = 0.5
) -> list[tuple[slice, slice, slice]]:
    """Tiles covering a volume, as (D, H, W) slice triples in row-major order.

    Args:
        shape: volume size (D, H, W); at least ``patch`` along every axis (pad smaller inputs).
        patch: tile size (d, h, w).
        overlap: fraction of the patch shared by neighbouring tiles, in [0, 1); nnU-Net's
            ``tile_step_size`` is ``1 - overlap``.

    Returns:
        One ``(slice_d, slice_h, slice_w)`` per tile; together they cover every voxel.

    Raises:
        ValueError: bad patch or overlap, or the volume is smaller than the patch.
    """
    shape = _as_triple("shape", shape)
    patch = _as_triple("patch", patch)
    steps = [axis_steps(s, p, overlap) for s, p in zip(shape, patch)]
    return [tuple(slice(start, start + p) for start, p in zip(starts, patch)) for starts in itertools.product(*steps)]


def gaussian_importance_map(
    patch: Sequence[int],
    sigma_scale: float = 1.0 / 8,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gaussian tile weights: highest at the tile centre, never 0.

    Args:
        patch: tile size (d, h, w).
        sigma_scale: σ per axis as a fraction of the patch size (nnU-Net: 1/8).
        device: where the map lives.
        dtype: its dtype.

    Returns:
        (d, h, w) weights, max 1, centred on voxel ``p // 2`` per axis (nnU-Net's centre); values
        that are 0 in ``dtype`` are replaced by the smallest non-zero value (nnU-Net).
    """
    patch = _as_triple("patch", patch)
    if not (isinstance(sigma_scale, (int, float)) and sigma_scale > 0):
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale!r}")
    axes = []
    for p in patch:
        x = torch.arange(p, dtype=torch.float64)
        sigma = p * sigma_scale
        axes.append(torch.exp(-0.5 * ((x - p // 2) / sigma) ** 2))
    g = torch.einsum("d,h,w->dhw", *axes)  # separable 3D Gaussian, max 1 at the centre
    g = (g / g.max()).to(device=device, dtype=dtype)
    zero = g == 0
    if zero.any():
        g[zero] = g[~zero].min()
    return g


def _mirror_sets(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial mirror axes, as tensor dims of (B, C, D, H, W); () first."""
    axes = tuple(mirror_axes)
    if len(set(axes)) != len(axes) or not all(a in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror_axes must be distinct values from (0, 1, 2) = (D, H, W), got {axes!r}")
    dims = [a + 2 for a in sorted(axes)]
    return [combo for r in range(len(dims) + 1) for combo in itertools.combinations(dims, r)]


class _TilePredictor:
    """Runs ``predict_fn`` (with mirroring) on tile batches, shrinking the batch or moving to the CPU on OOM."""

    def __init__(
        self,
        predict_fn: PredictFn | TilePredictFn,
        mirror_sets,
        device: torch.device,
        batch_size: int,
        dtype,
        tile_info: dict | None = None,
    ):
        self.predict_fn = predict_fn
        self.mirror_sets = mirror_sets
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype
        self.tile_info = tile_info  # TilePass fields other than origins/mirror axes, or None: plain predict_fn

    def _once(self, tiles: Tensor, origins: Sequence[tuple[int, int, int]]) -> Tensor:
        """(B, C, d, h, w) tiles -> (B, K, d, h, w) mirror-averaged predictions in ``dtype``."""
        x = tiles.to(self.device)
        total = None
        for pass_index, dims in enumerate(self.mirror_sets):
            flipped = torch.flip(x, dims) if dims else x
            if self.tile_info is None:
                pred = self.predict_fn(flipped)
            else:
                info = TilePass(
                    origins=tuple(origins),
                    mirror_axes=tuple(d - 2 for d in dims),
                    pass_index=pass_index,
                    num_passes=len(self.mirror_sets),
                    **self.tile_info,
                )
                pred = self.predict_fn(flipped, info)
            if not isinstance(pred, Tensor) or pred.ndim != 5 or pred.shape[0] != x.shape[0]:
                got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
                raise ValueError(f"predict_fn must return (B, K, d, h, w) for a (B, C, d, h, w) input; got {got}")
            if pred.shape[2:] != x.shape[2:]:
                raise ValueError(f"predict_fn returned spatial size {tuple(pred.shape[2:])}, expected {x.shape[2:]}")
            pred = (torch.flip(pred, dims) if dims else pred).to(self.dtype)
            if total is None:
                # copy when more passes follow: predict_fn may return (a view of) its input, which
                # the next pass flips again and must not find summed into.
                total = pred.clone() if len(self.mirror_sets) > 1 else pred
            else:
                total.add_(pred)
        if len(self.mirror_sets) > 1:
            total.mul_(1.0 / len(self.mirror_sets))
        return total

    def __call__(self, tiles: Tensor, origins: Sequence[tuple[int, int, int]]) -> list[Tensor]:
        """Predict all tiles (first voxels ``origins`` in the padded volume), in as many sub-batches as
        memory allows; one (K, d, h, w) result per tile."""
        out: list[Tensor] = []
        start = 0
        while start < tiles.shape[0]:
            chunk = tiles[start : start + self.batch_size]
            try:
                pred = self._once(chunk, origins[start : start + chunk.shape[0]])
            except torch.cuda.OutOfMemoryError:
                pred = None  # recover outside the except block, so the traceback's tensors are freed first
            if pred is None:
                self._recover(chunk.shape[0])
                continue
            out.extend(pred.unbind(0))
            start += chunk.shape[0]
        return out

    def _recover(self, failed_batch: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if failed_batch > 1:
            self.batch_size = max(1, failed_batch // 2)
            warnings.warn(
                f"out of memory predicting {failed_batch} tiles at once on {self.device}; "
                f"retrying with tile batch {self.batch_size}",
                RuntimeWarning,
                stacklevel=2,
            )
        elif self.device.type != "cpu":
            warnings.warn(
                f"out of memory predicting a single tile on {self.device}; continuing on the CPU (much slower). "
                "Use a smaller patch or free device memory",
                RuntimeWarning,
                stacklevel=2,
            )
            self.device = torch.device("cpu")
        else:
            raise InferenceOutOfMemory(
                "out of memory predicting a single tile on the CPU; use a smaller patch size or free memory"
            )


def sliding_window_predict(
    image: Tensor,
    predict_fn: PredictFn | TilePredictFn,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    gaussian_sigma_scale: float | None = 1.0 / 8,
    tile_batch_size: int = 2,
    mirror_axes: tuple[int, ...] = (),
    device: torch.device | str = "cpu",
    accumulate_device: torch.device | str | None = None,
    accumulate_dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    importance_map: Tensor | None = None,
    center_padding: bool = False,
    tile_info: bool = False,
) -> Tensor:
    """Predict a whole volume tile by tile and blend the tiles with Gaussian weights.

    Tiles are cut from ``image`` where it lives, moved to ``device`` ``tile_batch_size`` at a time,
    predicted (with mirroring TTA when ``mirror_axes`` is set) and added into accumulators on
    ``accumulate_device``, so the model never sees the whole volume and the peak memory is the
    accumulators ((K + 1) x volume) plus one tile batch. Inputs smaller than the patch along an axis
    are zero-padded at the end of that axis and the result is cropped back.

    ``predict_fn`` is called under ``torch.no_grad()``. It should compute on the device of the tiles
    it is given (e.g. ``lambda x: model.to(x.device)(x)``): after an out-of-memory error at tile
    batch 1 the remaining tiles are sent on the CPU. After an out-of-memory error the same tiles
    are predicted again (in smaller batches), so side effects of ``predict_fn`` (statistics it
    collects) may already include some passes over them; with ``tile_info`` such a repeat has the
    same :class:`TilePass` origins and mirror axes, so a collector keyed by them stays exact.

    Args:
        image: (C, D, H, W) input volume.
        predict_fn: maps (B, C, d, h, w) tiles to (B, K, d, h, w) predictions (any float dtype); with
            ``tile_info`` it is called as ``predict_fn(tiles, info)``, ``info`` a :class:`TilePass`.
        patch_size: tile size (d, h, w).
        overlap: fraction of the patch shared by neighbouring tiles, in [0, 1) (nnU-Net: 0.5).
        gaussian_sigma_scale: σ of the importance map as a fraction of the patch (nnU-Net: 1/8);
            ``None`` weights every tile voxel equally.
        tile_batch_size: tiles per ``predict_fn`` call (B). Peak memory grows with it; on the CPU
            MaskMed's network is as fast at 1 as at 2 (BENCHMARKS.md), so ``Predictor`` uses 1 there.
        mirror_axes: spatial axes (0=D, 1=H, 2=W) to mirror; every subset of them is predicted and
            the flipped-back predictions are averaged (2**len passes per tile, nnU-Net's scheme).
        device: where ``predict_fn`` runs.
        accumulate_device: where the accumulators and the result live (default: the CPU).
        accumulate_dtype: their dtype (default float32).
        progress: called as ``progress(done_tiles, total_tiles)`` after every tile batch.
        cancel: checked before every tile batch; returning True stops with ``InferenceCancelled``.
        importance_map: (d, h, w) tile weights to use instead of ``gaussian_sigma_scale``'s map
            (e.g. nnU-Net's own, for models trained by nnU-Net).
        center_padding: pad inputs smaller than the patch on both sides (nnU-Net's ``pad_nd_image``)
            instead of at the end; the network sees the same tile as in nnU-Net.
        tile_info: pass each call's :class:`TilePass` (tile origins, padding, mirror pass) to
            ``predict_fn`` as a second argument. Default False: ``predict_fn(tiles)`` as before.

    Returns:
        (K, D, H, W) Gaussian-weighted average of the tile predictions, ``accumulate_dtype`` on
        ``accumulate_device``.

    Raises:
        ValueError: a bad argument, or ``predict_fn`` returned the wrong shape.
        InferenceCancelled: ``cancel()`` returned True.
        InferenceOutOfMemory: a single tile ran out of memory even on the CPU.
    """
    if not isinstance(image, Tensor) or image.ndim != 4:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a (C, D, H, W) tensor, got {got}")
    patch = _as_triple("patch_size", patch_size)
    _check_overlap(overlap)
    if not isinstance(tile_batch_size, int) or tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be an integer >= 1, got {tile_batch_size!r}")
    mirror_sets = _mirror_sets(mirror_axes)
    device = torch.device(device)
    acc_device = torch.device(accumulate_device) if accumulate_device is not None else torch.device("cpu")

    C, D, H, W = image.shape
    # Zero-pad every axis shorter than the patch (at the end, or centred); cropped back at the end.
    pad = [max(0, p - s) for s, p in zip((D, H, W), patch)]
    before = [p // 2 for p in pad] if center_padding else [0, 0, 0]
    if any(pad):
        after = [p - b for p, b in zip(pad, before)]
        image = F.pad(image, (before[2], after[2], before[1], after[1], before[0], after[0]))  # last axis first
    padded = tuple(image.shape[1:])
    tiles = tile_positions(padded, patch, overlap)

    if importance_map is not None:
        if tuple(importance_map.shape) != patch:
            raise ValueError(f"importance_map has shape {tuple(importance_map.shape)}, expected the patch {patch}")
        weight = importance_map.to(device=acc_device, dtype=accumulate_dtype).clone()
    elif gaussian_sigma_scale is None:
        weight = torch.ones(patch, device=acc_device, dtype=accumulate_dtype)
    else:
        weight = gaussian_importance_map(patch, gaussian_sigma_scale, acc_device, accumulate_dtype)
        # Floor the weights at sqrt(smallest normal number) so that weight * prediction stays a
        # normal number: in float16 the tile-corner weights would otherwise be subnormal and the
        # voxels only a tile corner reaches (the image corners) would lose all precision.
        # No effect in float32 for any sensible patch (the floor is ~1e-19).
        weight.clamp_(min=torch.finfo(accumulate_dtype).tiny ** 0.5)
    weight_sum = torch.zeros(padded, device=acc_device, dtype=accumulate_dtype)
    result: Tensor | None = None  # (K, D, H, W), allocated once K is known
    tile_fields = {"pad_before": tuple(before), "input_shape": (D, H, W)} if tile_info else None
    predictor = _TilePredictor(predict_fn, mirror_sets, device, tile_batch_size, accumulate_dtype, tile_fields)

    done = 0
    with torch.no_grad():
        while done < len(tiles):
            if cancel is not None and cancel():
                raise InferenceCancelled(f"prediction cancelled after {done} of {len(tiles)} tiles")
            batch = tiles[done : done + predictor.batch_size]
            inputs = torch.stack([image[(slice(None), *sl)] for sl in batch])  # (B, C, d, h, w)
            origins = [tuple(axis.start for axis in sl) for sl in batch]
            for sl, pred in zip(batch, predictor(inputs, origins)):
                pred = pred.to(acc_device)  # (K, d, h, w)
                if result is None:
                    result = torch.zeros((pred.shape[0], *padded), device=acc_device, dtype=accumulate_dtype)
                result[(slice(None), *sl)].addcmul_(pred, weight)
                weight_sum[sl].add_(weight)
            done += len(batch)
            if progress is not None:
                progress(done, len(tiles))

    assert result is not None and bool((weight_sum > 0).all()), "tiles must cover every voxel"
    result.div_(weight_sum)
    if any(pad):
        result = result[:, before[0] : before[0] + D, before[1] : before[1] + H, before[2] : before[2] + W].contiguous()
    return result
