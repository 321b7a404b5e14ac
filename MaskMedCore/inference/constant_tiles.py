"""Run the network once per distinct constant tile: air around the body, zero padding.

A whole CT scan is mostly not patient: the air around the body (and the table-free corners of the
field of view) is clipped by CT normalisation to one value, the foreground's 0.5th intensity
percentile, so every tile that lies wholly in it holds the same number in every voxel. Zero padding
outside an MRI's field of view does the same. The network sees exactly the same input in each such
tile (it has no notion of where a tile lies in the volume), so its output is the same too: this
module computes it once per distinct value and hands out the stored result for the other tiles.

Exact up to floating-point rounding: a stored output was computed in some tile batch, and oneDNN may
round a batch of two differently from a batch of one in the last bits; labels are unchanged (tested).
Nothing is skipped: every tile still reaches the caller's accumulators, its mirrored passes (a flip of
a constant tile is the same tile) and its query statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from MaskMedCore.models.outputs import MaskMedOutput

# Distinct constant values kept per predictor call. One or two occur in practice (CT air, padding);
# each stored output is one tile's (Q or K) x d x h x w masks.
MAX_STORED_TILES = 4


def constant_tile_key(tile: Tensor) -> tuple | None:
    """A hashable key if every channel of ``tile`` holds a single value, else None.

    Args:
        tile: (C, d, h, w).

    Returns:
        ``(shape, dtype, device, per-channel values)``; None for a non-constant tile or one holding NaN
        (NaN never equals itself, so NaN tiles are always computed).
    """
    lo, hi = torch.aminmax(tile.reshape(tile.shape[0], -1), dim=1)
    if not torch.equal(lo, hi):
        return None
    return (tuple(tile.shape), tile.dtype, tile.device, tuple(lo.tolist()))


class ConstantTileForward:
    """``forward(tiles)`` that computes each distinct constant tile once and reuses its output.

    Args:
        forward: (B, C, d, h, w) tiles -> ``MaskMedOutput`` for the B tiles (e.g. a bound
            ``forward_batch_padded``). It must not change between calls: make a new instance when
            the weights change (another fold).
        max_stored: at most this many distinct constant tiles are kept; further ones are computed
            every time.

    Attributes:
        computed: tiles sent to ``forward`` so far.
        reused: tiles answered from a stored output.
    """

    def __init__(self, forward: Callable[[Tensor], MaskMedOutput], max_stored: int = MAX_STORED_TILES) -> None:
        self.forward = forward
        self.max_stored = max_stored
        self._stored: dict[tuple, MaskMedOutput] = {}
        self.computed = 0
        self.reused = 0

    def __call__(self, tiles: Tensor) -> MaskMedOutput:
        """(B, C, d, h, w) tiles -> the network's ``MaskMedOutput`` for them, in order."""
        keys = [constant_tile_key(tile) for tile in tiles]
        # Tiles to compute: non-constant ones, and the first tile of each constant value not stored yet.
        compute: list[int] = []
        first_of: dict[tuple, int] = {}
        for i, key in enumerate(keys):
            if key is None:
                compute.append(i)
            elif key not in self._stored and key not in first_of:
                first_of[key] = i
                compute.append(i)
        if len(compute) == len(keys) and not first_of:
            self.computed += len(keys)
            return self.forward(tiles)
        fresh = None
        if compute:
            index = torch.tensor(compute, device=tiles.device)
            fresh = self.forward(tiles.index_select(0, index))
            self.computed += len(compute)
        position = {i: j for j, i in enumerate(compute)}
        for key, i in first_of.items():
            if len(self._stored) < self.max_stored:
                self._stored[key] = fresh.take(torch.tensor([position[i]]))
        parts: list[MaskMedOutput] = []
        for i, key in enumerate(keys):
            if i in position:
                parts.append(fresh.take(torch.tensor([position[i]])))
                continue
            # Another tile of a stored value, or of a value first seen in this batch (the store may be full).
            stored = self._stored.get(key)
            parts.append(stored if stored is not None else fresh.take(torch.tensor([position[first_of[key]]])))
            self.reused += 1
        return MaskMedOutput.concat(parts)


__all__ = ["MAX_STORED_TILES", "ConstantTileForward", "constant_tile_key"]
