"""Which of a pretrained model's tensors a new MaskMed network takes, and the report of what happened.

Rule (``maskmed train --init-from``): every tensor of the new network whose name and shape the source
has is copied; the encoder and decoder must all be copied (the run took the source's topology, so a
miss there is a bug or an edited file and stops the run); everything else of the new network (a
decoupled head, a bridge the source lacks) keeps its fresh initialisation and is reported as *new*.
Source tensors the new network cannot use are *skipped*, each with the reason: nnU-Net's point-wise
``seg_layers`` when the new head is a query head (they map features to class logits, a decoupled head
has no such layer), or a tensor whose shape differs (e.g. a head of another width).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from MaskMedCore.errors import CheckpointError

BACKBONE_PREFIXES = ("encoder.", "decoder.")
"""The UNet: always taken from the source."""


@dataclass(frozen=True)
class InitReport:
    """What ``--init-from`` did to the new network.

    Attributes:
        source: one line naming the source (``InitSource.description``).
        loaded: names of the tensors copied from the source.
        new: names of the new network's tensors the source does not have (fresh initialisation).
        skipped: source tensor name -> why it was not used.
        loaded_parameters: number of values copied.
        new_parameters: number of values left at their fresh initialisation.
    """

    source: str
    loaded: tuple[str, ...]
    new: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    loaded_parameters: int = 0
    new_parameters: int = 0

    def summary(self) -> str:
        """One line for the terminal, e.g. ``initialised from ...: loaded 62 tensors (0.41 M values: encoder,
        decoder); new 140 tensors (0.07 M: bridge, head); skipped 6 (head.seg_layers.*: ...)``."""
        skipped = "; ".join(f"{group}: {why}" for group, why in _group_reasons(self.skipped).items())
        loaded_modules, new_modules = ", ".join(_modules(self.loaded)), ", ".join(_modules(self.new))
        return (
            f"initialised from {self.source}: loaded {len(self.loaded)} tensors "
            f"({self.loaded_parameters / 1e6:.2f} M values: {loaded_modules or 'none'}); "
            f"new {len(self.new)} tensors ({self.new_parameters / 1e6:.2f} M: {new_modules or 'none'})"
            + (f"; skipped {len(self.skipped)} ({skipped})" if self.skipped else "")
        )

    def event(self) -> dict[str, Any]:
        """Fields of the ``{"event": "init", ...}`` progress event (and train.log line)."""
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "loaded_parameters": self.loaded_parameters,
            "loaded_modules": _modules(self.loaded),
            "new": len(self.new),
            "new_parameters": self.new_parameters,
            "new_modules": _modules(self.new),
            "skipped": dict(self.skipped),
        }


def initial_state(
    model_state: dict[str, torch.Tensor], source_state: dict[str, torch.Tensor], source: str, new_head: str
) -> tuple[dict[str, torch.Tensor], InitReport]:
    """The full state dict to load into a freshly built network, and the report.

    Args:
        model_state: the new network's ``state_dict()`` (its fresh initialisation).
        source_state: the source's tensors, MaskMed names (``nnunet.weights.nnunet_to_maskmed_state`` for nnU-Net).
        source: one line naming the source (for the report and errors).
        new_head: the new network's ``ModelConfig.head`` (for the skip reasons).

    Returns:
        (state, report): ``state`` has every key of ``model_state``, with the source's tensor where it fits.

    Raises:
        CheckpointError: an encoder/decoder tensor of the new network is missing from the source or has
            another shape (the topologies were checked to be equal, so the file does not hold what its
            plans say).
    """
    state: dict[str, torch.Tensor] = {}
    loaded, new, skipped = [], [], {}
    for name, fresh in model_state.items():
        theirs = source_state.get(name)
        if theirs is not None and tuple(theirs.shape) == tuple(fresh.shape):
            state[name] = theirs.to(dtype=fresh.dtype)
            loaded.append(name)
            continue
        if name.startswith(BACKBONE_PREFIXES):
            found = "missing" if theirs is None else f"of shape {tuple(theirs.shape)}"
            raise CheckpointError(
                f"{source}: UNet weight '{name}' is {found}, expected shape {tuple(fresh.shape)} for the topology "
                "its plans describe; the weights and the plans do not belong together"
            )
        state[name] = fresh
        new.append(name)
        if theirs is not None:
            skipped[name] = f"shape {tuple(theirs.shape)} in the source, {tuple(fresh.shape)} in the new network"
    for name in source_state:
        if name not in model_state:
            skipped[name] = _why_unused(name, new_head)
    report = InitReport(
        source=source,
        loaded=tuple(loaded),
        new=tuple(new),
        skipped=skipped,
        loaded_parameters=sum(state[n].numel() for n in loaded),
        new_parameters=sum(state[n].numel() for n in new),
    )
    return state, report


def _why_unused(name: str, new_head: str) -> str:
    if name.startswith("head.seg_layers."):
        return (
            f"the point-wise head's 1x1x1 class layers; the new '{new_head}' head predicts masks and classes "
            "from queries and has no such layer"
        )
    if name.startswith("bridge."):
        return "the source's bridge; the new network has none"
    return f"not part of the new network (head '{new_head}')"


def _modules(names) -> list[str]:
    """Top-level modules the names belong to, in first-seen order (``encoder``, ``decoder``, ``head``...)."""
    out: list[str] = []
    for name in names:
        top = name.split(".", 1)[0]
        if top not in out:
            out.append(top)
    return out


def _group_reasons(skipped: dict[str, str]) -> dict[str, str]:
    """``head.seg_layers.0.weight``, ``...1.bias`` -> ``head.seg_layers.*`` when they share a reason."""
    groups: dict[str, str] = {}
    for name, why in skipped.items():
        parts = name.split(".")
        key = ".".join(parts[:2]) + ".*" if len(parts) > 2 else name
        groups.setdefault(key, why)
    return groups
