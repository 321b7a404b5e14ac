"""Poly learning-rate decay applied per parameter group (MaskMed appendix C, Eq. 7).

``lr_g(e) = lr_scale_g * initial_lr * (1 - e / max_epochs) ** 0.9``

nnU-Net's ``PolyLRScheduler`` writes one LR into every group, which would silently erase the
paper's CNN : Transformer = 1 : 0.1 ratio; this scheduler multiplies each group by its own
``lr_scale`` (set by ``MaskMed.param_groups``), so the ratio holds for the whole run.
"""

from __future__ import annotations

from typing import Any

import torch


class PerGroupPolyLR:
    """Args:
    optimizer: optimiser whose groups carry ``lr_scale`` (default 1).
    initial_lr: LR of a group with scale 1 at epoch 0.
    max_epochs: epochs of the whole run.
    exponent: poly exponent (0.9).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, max_epochs: int, exponent: float = 0.9):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.max_epochs = max_epochs
        self.exponent = exponent
        self.epoch = 0
        self.step(0)

    def lr_at(self, epoch: int, scale: float = 1.0) -> float:
        progress = min(max(epoch, 0), self.max_epochs) / self.max_epochs
        return scale * self.initial_lr * (1.0 - progress) ** self.exponent

    def step(self, epoch: int) -> None:
        """Set every group's LR for ``epoch`` (called at the start of each epoch)."""
        self.epoch = epoch
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(epoch, group.get("lr_scale", 1.0))

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "initial_lr": self.initial_lr,
            "max_epochs": self.max_epochs,
            "exponent": self.exponent,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial_lr = float(state["initial_lr"])
        self.max_epochs = int(state["max_epochs"])
        self.exponent = float(state["exponent"])
        self.step(int(state["epoch"]))
