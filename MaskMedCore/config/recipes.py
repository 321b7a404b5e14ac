"""Training recipes: the optimiser, learning rates and loss extras ``maskmed train --recipe`` selects.

- ``maskmed`` (the default): AdamW, LR 3e-3 for CNN and Transformer alike (ratio 1), and the set loss
  plus CE + soft Dice on the composed class probabilities (``LossConfig.semantic_weight`` 2). Chosen from
  learning curves on MSD hippocampus on 2 CPU cores (BENCHMARKS.md, "Accuracy on real anatomy"): with
  the set loss alone the decoupled head's queries both cover the whole hippocampus for ~150 iterations
  before they separate (validation Dice 0.32 at 150 iterations vs 0.77 for the point-wise head); the
  semantic term makes them compete per voxel from the start (0.77 at 150). AdamW learns in hundreds of
  iterations where the paper's SGD 1e-3 needs tens of thousands.
- ``paper``: MaskMed appendix C: SGD (Nesterov 0.99), LR 1e-3, CNN : Transformer = 1 : 0.1, set loss only.
  The recipe of the paper's GPU budget (1000 x 250 iterations).

Explicit options (``--optimizer``, ``--lr``, ``--transformer-lr-ratio``, ``--semantic-weight``) override
the recipe's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from MaskMedCore.config.validation import check_choice


@dataclass(frozen=True)
class Recipe:
    """Attributes:
    optimizer: ``sgd`` or ``adamw``.
    initial_lr: LR of the CNN group.
    transformer_lr_ratio: Transformer : CNN LR.
    semantic_weight: ``LossConfig.semantic_weight``.
    """

    optimizer: str
    initial_lr: float
    transformer_lr_ratio: float
    semantic_weight: float

    def training_fields(self) -> dict[str, Any]:
        """The TrainingConfig fields this recipe sets."""
        return {
            "optimizer": self.optimizer,
            "initial_lr": self.initial_lr,
            "transformer_lr_ratio": self.transformer_lr_ratio,
        }


RECIPES = {
    "maskmed": Recipe(optimizer="adamw", initial_lr=3e-3, transformer_lr_ratio=1.0, semantic_weight=2.0),
    "paper": Recipe(optimizer="sgd", initial_lr=1e-3, transformer_lr_ratio=0.1, semantic_weight=0.0),
}
DEFAULT_RECIPE = "maskmed"


def get_recipe(name: str) -> Recipe:
    check_choice("recipe", name, tuple(RECIPES))
    return RECIPES[name]
