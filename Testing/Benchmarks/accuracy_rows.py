"""Rows and budgets of the accuracy benchmark (``bench_accuracy.py``).

A *row* is one thing to train and score: a MaskMed variant (model-config, training-recipe and loss
changes against the mode's budget), nnU-Net v2 itself, or an alias of another row. A *budget* is what
every row of a mode shares: preset, patch, batch, iterations, the default recipe, validation.

Modes:

- ``quick``: a CPU smoke budget (a handful of iterations); exercises every code path, ranks nothing.
- ``standard``: the benchmark that counts on 2 CPU cores: MSD hippocampus with its committed
  140 / 20 / 40 split, the ``tiny`` preset on the planner's patch and batch, ``STANDARD_ITERATIONS``
  iterations per run, whole-case validation after every epoch (the learning curves), the final
  checkpoint scored on the 40 test cases (Dice and HD95). About 2 hours for its default rows.
- ``full``: the paper preset and recipe on a GPU (1/25 of the paper's iterations).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

PAPER_RECIPE = {"optimizer": "sgd", "initial_lr": 1e-3, "transformer_lr_ratio": 0.1, "warmup_iterations": 0}
"""MaskMed appendix C: SGD (Nesterov 0.99), LR 1e-3, CNN : Transformer = 1 : 0.1, no warm-up, set loss only."""

DEFAULT_RECIPE = {"optimizer": "adamw", "initial_lr": 3e-3, "transformer_lr_ratio": 1.0, "warmup_iterations": 0}
"""``maskmed train``'s default optimiser recipe (``MaskMedCore/config/recipes.py``, "maskmed"): every MaskMed
row of the quick and standard modes trains with it unless the row says otherwise."""
SEMANTIC_WEIGHT = 2.0
"""The "maskmed" recipe's ``LossConfig.semantic_weight``. The budgets keep 0 (the set loss only), which is
what the committed standard tables measured; the ``recipe_semantic_loss`` row adds it. Switching a budget
to it changes every cached run's key (a full rerun)."""

STANDARD_EPOCHS = 16
STANDARD_ITERATIONS_PER_EPOCH = 50
STANDARD_ITERATIONS = STANDARD_EPOCHS * STANDARD_ITERATIONS_PER_EPOCH
INIT_EPOCHS = 6
"""Epochs of the rows started from a trained nnU-Net: 6 x 50 = 300 iterations, 3/8 of the standard budget
(the poly schedule runs to its end over them)."""
INIT_ITERATIONS = INIT_EPOCHS * STANDARD_ITERATIONS_PER_EPOCH
INIT_FREEZE = 100
"""Iterations the frozen-backbone row keeps the nnU-Net encoder and decoder fixed."""


@dataclass(frozen=True)
class Row:
    """One row of the benchmark.

    Attributes:
        key: identifier (command line, result files).
        label: what the table says.
        kind: ``maskmed``, ``nnunet`` or ``alias``.
        model: ModelConfig overrides (MaskMed rows).
        training: TrainingConfig overrides on top of the budget's recipe (MaskMed rows).
        loss: LossConfig fields (MaskMed rows).
        alias: the row this one repeats (alias rows).
        nnunet_recipe: ``same`` (the budget's optimiser and LR) or ``own`` (nnU-Net's SGD 1e-2).
        init_from: the nnU-Net row whose trained model of the same seed the run starts from
            (``maskmed train --init-from``); that row must have been run with the seed first.
    """

    key: str
    label: str
    kind: str
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    alias: str | None = None
    nnunet_recipe: str | None = None
    init_from: str | None = None


def row_key(row: Row) -> dict[str, Any]:
    """A row's part of its runs' cache key: its fields, without those added later that it leaves at their
    default, so adding a field to ``Row`` keeps every cached run valid."""
    out = asdict(row)
    if out["init_from"] is None:
        del out["init_from"]
    return out


_NO_MASK = {"masked_attention": False}
POINT_LOSS = {
    "matcher_num_points": 12544,
    "loss_num_points": 12544,
    "oversample_ratio": 3.0,
    "importance_sample_ratio": 0.75,
}
"""Mask2Former's point-sampled matching and mask loss (12,544 points, oversample 3, importance 0.75)."""

ROWS: list[Row] = [
    # the paper's Tables 3 and 4, in their order
    Row("pointwise", "point-wise head (nnU-Net-style)", "maskmed", {"head": "pointwise", **_NO_MASK}),
    Row("mlp_cls", "MLP class embedding", "maskmed", {"head": "mlp_cls", **_NO_MASK}),
    Row("attn_cls", "attention class embedding", "maskmed", {"head": "attn_cls", **_NO_MASK}),
    Row("attn_cls_mask", "attention class + mask embedding", "maskmed", {"head": "attn_cls_mask", **_NO_MASK}),
    Row("decoupled", "decoupled (full MaskMed: shared queries, masked attention, FSAD)", "maskmed"),
    Row(
        "per_stage",
        "per-stage queries (decoupled, no masked attention)",
        "maskmed",
        {"queries": "per_stage", **_NO_MASK},
    ),
    Row("shared", "shared queries, no masked attention", "maskmed", dict(_NO_MASK)),
    Row("shared_masked", "shared queries + masked attention (= decoupled)", "alias", alias="decoupled"),
    Row("bridge_none", "bridge: none", "maskmed", {"bridge": "none"}),
    Row("bridge_standard", "bridge: standard (dense) attention", "maskmed", {"bridge": "standard"}),
    Row("bridge_deformable", "bridge: deformable (coarse stages only)", "maskmed", {"bridge": "deformable"}),
    Row("bridge_fsad", "bridge: FSAD (= decoupled)", "alias", alias="decoupled"),
    # recipes (the standard mode's question: which recipe makes the decoupled head learn fast on a CPU budget)
    Row(
        "paper_recipe",
        "decoupled, the paper's recipe (SGD 1e-3, Transformer LR ratio 0.1, set loss only)",
        "maskmed",
        training=PAPER_RECIPE,
        loss={"semantic_weight": 0.0},
    ),
    Row(
        "recipe_semantic_loss",
        "decoupled + CE + Dice on the composed class probabilities (weight 2; maskmed train's default)",
        "maskmed",
        loss={"semantic_weight": SEMANTIC_WEIGHT},
    ),
    Row("recipe_point_loss", "decoupled, point-sampled matching + mask loss (Mask2Former)", "maskmed", loss=POINT_LOSS),
    Row("recipe_ratio_0.1", "decoupled, Transformer LR ratio 0.1", "maskmed", training={"transformer_lr_ratio": 0.1}),
    Row("recipe_lr_1e-3", "decoupled, LR 1e-3", "maskmed", training={"initial_lr": 1e-3}),
    Row(
        "recipe_warmup", "decoupled, linear warm-up over 100 iterations", "maskmed", training={"warmup_iterations": 100}
    ),
    Row(
        "recipe_sgd_1e-2",
        "decoupled, SGD 1e-2 (nnU-Net's optimiser), ratio 0.1",
        "maskmed",
        training={"optimizer": "sgd", "initial_lr": 1e-2, "transformer_lr_ratio": 0.1, "warmup_iterations": 0},
    ),
    Row(
        "recipe_set_loss_only",
        "decoupled, set loss only (no CE + Dice on the composed class probabilities)",
        "maskmed",
        loss={"semantic_weight": 0.0},
    ),
    Row(
        "recipe_mirror",
        "decoupled, with mirroring (nnU-Net's default augmentation)",
        "maskmed",
        training={"mirror_axes": (0, 1, 2)},
    ),
    Row(
        "pointwise_sgd_1e-2",
        "point-wise head, SGD 1e-2 (nnU-Net's recipe in MaskMed's pipeline)",
        "maskmed",
        {"head": "pointwise", **_NO_MASK},
        training={"optimizer": "sgd", "initial_lr": 1e-2, "transformer_lr_ratio": 1.0, "warmup_iterations": 0},
    ),
    # upgrading a trained nnU-Net to MaskMed (maskmed train --init-from): a fraction of the budget
    Row(
        "decoupled_from_nnunet",
        f"decoupled, started from the trained nnU-Net (row nnunet, same seed), {INIT_ITERATIONS} iterations",
        "maskmed",
        training={"epochs": INIT_EPOCHS},
        loss={"semantic_weight": SEMANTIC_WEIGHT},
        init_from="nnunet",
    ),
    Row(
        "decoupled_from_nnunet_frozen",
        f"decoupled, started from the trained nnU-Net, encoder + decoder frozen for {INIT_FREEZE} iterations, "
        f"{INIT_ITERATIONS} iterations",
        "maskmed",
        training={"epochs": INIT_EPOCHS, "freeze_backbone_iterations": INIT_FREEZE},
        loss={"semantic_weight": SEMANTIC_WEIGHT},
        init_from="nnunet",
    ),
    Row(
        "decoupled_from_nnunet_lr_3e-4",
        f"decoupled, started from the trained nnU-Net, UNet LR 3e-4 (head and bridge 3e-3), {INIT_ITERATIONS} "
        "iterations",
        "maskmed",
        training={"epochs": INIT_EPOCHS, "initial_lr": 3e-4, "transformer_lr_ratio": 10.0},
        loss={"semantic_weight": SEMANTIC_WEIGHT},
        init_from="nnunet",
    ),
    # nnU-Net v2 itself
    Row("nnunet", "nnU-Net v2 (nnunetv2), same optimiser/LR as the MaskMed rows", "nnunet", nnunet_recipe="same"),
    Row("nnunet_own", "nnU-Net v2 (nnunetv2), its own SGD 1e-2 poly recipe", "nnunet", nnunet_recipe="own"),
]
ROW_KEYS = [r.key for r in ROWS]
ROW_BY_KEY = {r.key: r for r in ROWS}
RECIPE_ROWS = [r.key for r in ROWS if r.key.startswith("recipe_") or r.key == "pointwise_sgd_1e-2"]
INIT_ROWS = [r.key for r in ROWS if r.init_from]
QUICK_DEFAULT_ROWS = [
    k for k in ROW_KEYS if k not in ("nnunet_own", "paper_recipe") and k not in RECIPE_ROWS + INIT_ROWS
]
"""Quick mode leaves out nnU-Net's own SGD recipe and the recipe rows: at a few iterations they only show
that SGD has not started to learn (run them with ``--rows ...``)."""
FULL_DEFAULT_ROWS = [k for k in ROW_KEYS if k != "paper_recipe" and k not in RECIPE_ROWS + INIT_ROWS]
"""Full mode trains with the paper's recipe already, so ``paper_recipe`` would repeat ``decoupled``."""
STANDARD_DEFAULT_ROWS = ["decoupled", "pointwise", "paper_recipe", "nnunet_own"]
RECIPE_SWEEP_ROWS = [
    "decoupled",
    "pointwise",
    "recipe_semantic_loss",
    "recipe_mirror",
    "recipe_ratio_0.1",
    "nnunet",
]
"""The recipe comparison (one seed, standard budget): ``bench_accuracy.py --standard --rows <these> --seeds 0
--section accuracy-recipes``; decoupled and pointwise are the standard mode's own seed-0 runs (cached)."""
"""The issue's rows: MaskMed decoupled (default recipe), the point-wise head, the paper's recipe, nnU-Net v2."""
INIT_FROM_ROWS = ["nnunet", "decoupled", "recipe_semantic_loss", *INIT_ROWS]
"""Upgrading nnU-Net to MaskMed (issue 11): ``bench_accuracy.py --standard --rows <these> --seeds 0 --section
accuracy-init-from``; the nnU-Net model the init rows start from and the from-scratch rows are cached runs."""
MODE_TASKS = {"quick": ("brats", "totalseg"), "standard": ("hippocampus",), "full": ("brats", "totalseg")}


def default_rows(mode: str) -> list[str]:
    return {"quick": QUICK_DEFAULT_ROWS, "standard": STANDARD_DEFAULT_ROWS, "full": FULL_DEFAULT_ROWS}[mode]


def trained_rows(rows: list[str]) -> list[str]:
    """The rows that train (aliases resolved), in order, without repeats."""
    out: list[str] = []
    for key in rows:
        row = ROW_BY_KEY[key]
        real = row.alias if row.kind == "alias" else key
        if real not in out:
            out.append(real)
    return out


def recipe_for(budget: dict, row: Row) -> dict[str, Any]:
    """The TrainingConfig fields of a MaskMed row's recipe: the budget's, with the row's changes (which may
    also set other TrainingConfig fields, e.g. ``mirror_axes``)."""
    recipe = {k: budget[k] for k in ("optimizer", "initial_lr", "transformer_lr_ratio", "warmup_iterations")}
    recipe.update(row.training)
    return recipe


def make_budget(mode: str, device: str, iterations: int | None) -> dict[str, Any]:
    """The one budget every row of a mode gets (nnU-Net rows included).

    Quick (CPU): the tiny preset, a 32^3 patch (4 stages), batch 2, AdamW 3e-3 with one LR for CNN and
    Transformer, 2 epochs x 3 iterations, one validation batch per epoch, no sliding-window overlap. It
    exercises every code path in minutes (a child's start-up and test prediction cost seconds against
    ~0.45 s per iteration); it cannot rank the rows.

    Standard (2 CPU cores, ~2 h for the default rows): the tiny preset on the planner's patch and batch
    (MSD hippocampus: 40 x 56 x 40, batch 7, 4 stages), ``DEFAULT_RECIPE``, 16 x 50 iterations, whole-case
    validation after every epoch, 50 % overlap, the final checkpoint.

    Full (GPU): the paper preset on the planner's topology and patch, the paper's recipe, 100 x 100
    iterations (1/25 of the paper's 1000 x 250), 10 validation batches per epoch, 50 % overlap, as many
    data workers as nnU-Net's augmentation processes (half the cores, at most 8).
    """
    common = dict(weight_decay=3e-5, validation="patches", checkpoint="best", max_stages=6, semantic_weight=0.0)
    if mode == "quick":
        b = dict(
            common,
            preset="tiny",
            epochs=2,
            iterations_per_epoch=3,
            val_iterations=1,
            patch=[32, 32, 32],
            batch=2,
            max_stages=4,
            **DEFAULT_RECIPE,
            overlap=0.0,
            num_workers=0,
        )
    elif mode == "standard":
        b = dict(
            common,
            preset="tiny",
            epochs=STANDARD_EPOCHS,
            iterations_per_epoch=STANDARD_ITERATIONS_PER_EPOCH,
            val_iterations=1,
            validation="cases",
            checkpoint="final",
            patch=None,
            batch=None,
            **DEFAULT_RECIPE,
            overlap=0.5,
            num_workers=1,
        )
    elif mode == "full":
        b = dict(
            common,
            preset="paper",
            epochs=100,
            iterations_per_epoch=100,
            val_iterations=10,
            patch=None,
            batch=2,
            **PAPER_RECIPE,
            overlap=0.5,
            num_workers=min(8, max(1, (os.cpu_count() or 2) // 2)) if device.startswith("cuda") else 0,
        )
    else:
        raise ValueError(f"unknown mode {mode!r}")
    b["mode"] = mode
    if iterations is not None:
        if iterations < 1:
            raise SystemExit(f"--iterations must be >= 1, got {iterations}")
        b["epochs"] = min(b["epochs"], iterations)
        b["iterations_per_epoch"] = max(1, iterations // b["epochs"])
    b["iterations"] = b["epochs"] * b["iterations_per_epoch"]
    b["device"] = device
    return b


def nnunet_budget(budget: dict, row: Row, mirror: bool) -> dict:
    """nnU-Net's trainer settings: the same budget; ``own`` swaps in nnU-Net's SGD 1e-2 recipe."""
    b = dict(budget, mirror=mirror, lr=budget["initial_lr"])
    if row.nnunet_recipe == "own":
        b.update(optimizer="sgd", lr=1e-2)
    return b


def mirror_for(task: str, budget: dict) -> bool:
    """Mirror augmentation for a task under a budget (every row of the task alike, nnU-Net included).

    Never for the CT organs (left/right anatomy: spleen vs liver, as TotalSegmentator trains). Not in the
    standard mode: at its 800 iterations mirroring slows learning (MSD hippocampus, decoupled, one seed:
    validation Dice 0.821 with vs 0.847 without mirroring after 300 iterations); the recipe sweep's
    ``recipe_mirror`` row measures it at the full budget.
    """
    return task != "totalseg" and budget["mode"] != "standard"
