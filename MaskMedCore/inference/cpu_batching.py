"""How many tiles to send to the network per call on the CPU, and a padded call for too-small batches.

PyTorch (aten/src/ATen/native/Convolution.cpp, ``use_mkldnn``) runs a CPU convolution with a kernel of
at most 3x3 on oneDNN when the batch is larger than 1 or N*C*D*H of its input exceeds 20,480; otherwise
it falls back to ``slow_conv3d``. Small tiles (MaskMed's tiny preset, MSD hippocampus crops) hit the
fallback at batch 1 in every stage. These rules keep them on oneDNN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from MaskMedCore.models.outputs import MaskMedOutput

# Below this N*C*D*H a batch-1 convolution leaves oneDNN (~4x slower on the tiny preset's 8-channel
# 32x64x64 first stage, ~9x on its 40x56x40 hippocampus tile).
_ONEDNN_BATCH1_MIN_NCDH = 20480
SLICE_TILE_BATCH = 16
"""Slices per network call when a 2D model (2d configuration) predicts a volume: one-slice tiles are small, and
batching them amortises the per-call overhead (nnU-Net's 2d prediction calls the network once per slice)."""


def default_tile_batch(device: torch.device, first_stage_features: int, patch_size: Sequence[int]) -> int:
    """Tiles per network call when the caller does not say.

    GPU: 2. CPU: 1, as nnU-Net does: the peak RAM is about half that of 2, and with the FSAD
    sampler using every thread at batch 1 the paper network runs as fast (BENCHMARKS.md). Small
    tiles whose first stage would drop PyTorch's batch-1 convolutions off oneDNN get 2; their
    activations are small anyway.
    """
    if device.type != "cpu":
        return 2
    ncdh = first_stage_features * patch_size[0] * patch_size[1]
    return 1 if ncdh > _ONEDNN_BATCH1_MIN_NCDH else 2


def needs_batch_padding(device: torch.device, first_stage_features: int, patch_size: Sequence[int]) -> bool:
    """True where a batch-1 network call would leave oneDNN for ``slow_conv3d`` (see ``default_tile_batch``).

    On the CPU with small tiles (MSD hippocampus: 8 x 40 x 56 = 17,920 <= 20,480 in the tiny preset's first
    stage, and every coarser stage smaller still) a batch-1 call runs every convolution on PyTorch's
    scalar fallback: 0.62 s for one 40 x 56 x 40 tile on one thread, against 0.07 s for the same tile sent
    twice. A volume of a single tile, or the last tile of an odd count, is therefore sent with a copy.
    """
    return device.type == "cpu" and default_tile_batch(device, first_stage_features, patch_size) > 1


def forward_batch_padded(model: torch.nn.Module, tiles: torch.Tensor, min_batch: int) -> MaskMedOutput:
    """``model(tiles)``, sending copies of the last tile along when ``tiles`` has fewer than ``min_batch``.

    Args:
        model: a MaskMed network (returns ``MaskMedOutput``).
        tiles: (B, C, D, H, W) input.
        min_batch: the smallest batch to send (see :func:`needs_batch_padding`).

    Returns:
        The network's output for the B real tiles only (every tensor sliced to its first B entries).
    """
    B = tiles.shape[0]
    if B >= min_batch:
        return model(tiles)
    padded = torch.cat([tiles, tiles[-1:].expand(min_batch - B, *tiles.shape[1:])])
    return model(padded).take(slice(0, B))


def network_forward(model: torch.nn.Module, min_batch: int, reuse_constant_tiles: bool):
    """The tile forward a predictor uses: ``forward_batch_padded`` (``min_batch`` on the CPU, 1 elsewhere),
    wrapped in a fresh :class:`~MaskMedCore.inference.constant_tiles.ConstantTileForward` when asked.

    Returns:
        A callable (B, C, d, h, w) tiles -> ``MaskMedOutput``.
    """
    from MaskMedCore.inference.constant_tiles import ConstantTileForward

    def run(tiles: torch.Tensor) -> MaskMedOutput:
        return forward_batch_padded(model, tiles, min_batch if tiles.device.type == "cpu" else 1)

    return ConstantTileForward(run) if reuse_constant_tiles else run


def tile_counts(forward) -> dict[str, int]:
    """``{"computed": n, "reused": m}`` of a ``network_forward`` (zeros without constant-tile reuse)."""
    return {"computed": getattr(forward, "computed", 0), "reused": getattr(forward, "reused", 0)}
