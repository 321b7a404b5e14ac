"""A model card for every model in the selector: where it came from, what it segments, the licence of its
training data, and the input it expects.

Bundled models have real cards (:mod:`MaskMedCore.model_card`). The others get the same lines from what
they record, and nothing is invented: a MaskMed training run from its ``plan.json`` (no torch), a lone
MaskMed checkpoint from the checkpoint (torch, through the logic's cache), an nnU-Net v2 result folder
from its ``plans.json`` and ``dataset.json`` (no torch). Where a licence is not recorded, the card says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.models import BundledModelEntry, bundled_model_entry
from MaskMedSlicerLib.nnunet_models import nnunet_folders_in
from MaskMedSlicerLib.training_task import RUN_CHECKPOINTS

KINDS = ("bundled", "maskmed", "nnunet")
MASKMED_LICENCE_NOT_RECORDED = "licence of your training data (not recorded)"
NNUNET_LICENCE_NOT_STATED = "not stated (dataset.json has no licence field)"
NNUNET_LICENCE_FIELDS = ("licence", "license")


@dataclass(frozen=True)
class ModelCardInfo:
    """What the selector's tooltip and the model info label say about one model.

    Attributes:
        kind: ``bundled``, ``maskmed`` (a training run or checkpoint) or ``nnunet`` (a result folder).
        title: one line naming the model.
        origin: where it came from: the bundled name and file; the run folder or checkpoint; the nnU-Net
            folder with its trainer, plans, configuration and folds.
        classes: foreground class names (K - 1); empty when not known yet.
        training_data: the training dataset, as recorded.
        licence: the training data's licence, or why it is not known.
        input: modality / channel names, C, target spacing.
        notes: further lines (model licence and test Dice of a bundled model, what could not be read).
    """

    kind: str
    title: str
    origin: str
    classes: tuple[str, ...]
    training_data: str
    licence: str
    input: str
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ModelCardInfo.kind must be one of {KINDS}, got {self.kind!r}")

    def text(self) -> str:
        """The whole card, a few lines (the selector's tooltip)."""
        lines = [
            self.title,
            f"From: {self.origin}",
            f"Classes: {', '.join(self.classes) or 'not known yet'}",
            f"Training data: {self.training_data}",
            f"Training data licence: {self.licence}",
            f"Input: {self.input}",
        ]
        return "\n".join(lines + list(self.notes))

    def summary(self) -> str:
        """One line for the model info label: licence and input."""
        return f"Training data licence: {self.licence}. Input: {self.input}"


def model_card_info(path: str | os.PathLike, logic=None) -> ModelCardInfo:
    """The card of the model at ``path``: a bundled checkpoint, a MaskMed run or checkpoint, an nnU-Net folder.

    Args:
        path: what the model selector holds.
        logic: a ``MaskMedLogic``; reads a checkpoint outside a run folder (torch, cached). None: such a
            card says its classes are read when the model is selected.

    Raises:
        MaskMedSlicerError: the model cannot be read (the message names the file).
    """
    bundled = bundled_model_entry(path)
    if bundled is not None:
        return bundled_model_card(bundled)
    folders = nnunet_folders_in(path, depth=0)
    if folders:
        return _nnunet_card(folders[0])
    return _maskmed_card(Path(path), logic)


def bundled_model_card(entry: BundledModelEntry) -> ModelCardInfo:
    """The card of a bundled model, from its ``model_card.json`` (or the built-in phantom card)."""
    try:
        from MaskMedCore.bundled_models import bundled_model
        from MaskMedCore.errors import MaskMedError

        card = bundled_model(entry.name).card
    except (ImportError, MaskMedError) as exc:
        raise MaskMedSlicerError(f"the card of bundled model {entry.name} cannot be read: {exc}") from None
    dice = card.test_dice
    measured = [f"{c} {dice[c]:.3f}" for c in card.classes if dice.get(c) is not None]
    sample = card.sample
    sample_line = (f"Sample case: {sample.case} ({sample.split} split) {sample.image}",) if sample else ()
    return ModelCardInfo(
        kind="bundled",
        title=card.title + (" [placeholder model]" if card.is_placeholder else ""),
        origin=f"bundled with MaskMed as '{entry.name}' ({entry.path})",
        classes=tuple(card.classes),
        training_data=str(card.training.get("data", "not stated in the card")),
        licence=str(card.training.get("data_licence") or f"not stated in the card (model licence: {card.licence})"),
        input=card.input.describe(),
        notes=(
            f"Model licence: {card.licence} ({card.licence_url}); {card.attribution}",
            "Test Dice: " + (", ".join(measured) if measured else "not measured yet"),
            *sample_line,
        ),
    )


def _nnunet_card(folder: Path) -> ModelCardInfo:
    from MaskMedCore.nnunet.result_folder import NnUNetModelError, read_result_folder

    try:
        model = read_result_folder(folder)
    except NnUNetModelError as exc:
        raise MaskMedSlicerError(str(exc)) from None
    data = model.dataset_json
    training = model.dataset_name
    if data.get("numTraining"):
        training += f", {data['numTraining']} training cases"
    if data.get("description"):
        training += f" ({data['description']})"
    licence = next((str(data[k]) for k in NNUNET_LICENCE_FIELDS if data.get(k)), "")
    if data.get("reference"):
        licence = f"{licence}; reference: {data['reference']}" if licence else f"reference: {data['reference']}"
    spacing = " × ".join(f"{s:g}" for s in model.spacing_dhw)
    patch = "×".join(str(p) for p in model.patch_size)
    return ModelCardInfo(
        kind="nnunet",
        title=f"{model.dataset_name} {model.configuration} (nnU-Net)",
        origin=(
            f"nnU-Net v2 result folder {model.path}: trainer {model.trainer}, plans {model.plans_name}, "
            f"configuration {model.configuration}, folds {', '.join(model.folds)}"
        ),
        classes=model.label_names[1:],
        training_data=training,
        licence=licence or NNUNET_LICENCE_NOT_STATED,
        input=(
            f"{len(model.channel_names)} channel(s) ({', '.join(model.channel_names)}); target spacing "
            f"{spacing} mm (z × y × x); patch {patch} voxels"
        ),
        notes=("Point-wise network: no queries to inspect.",),
    )


def _maskmed_card(path: Path, logic) -> ModelCardInfo:
    run = path if path.is_dir() else path.parent
    origin = f"MaskMed training run {run}" if path.is_dir() else f"MaskMed checkpoint {path}"
    plan_file = run / "plan.json"
    in_run = path.is_dir() or path.name in RUN_CHECKPOINTS  # a copied .pt beside some plan.json is not its run
    if in_run and plan_file.is_file():
        try:
            plan = json.loads(plan_file.read_text(encoding="utf-8"))
            labels = sorted(plan["labels"].items(), key=lambda item: int(item[1]))
            dataset, channels, spacing = plan["dataset_name"], tuple(plan["channel_names"]), plan["target_spacing"]
            classes = tuple(str(name) for name, _ in labels[1:])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MaskMedSlicerError(f"cannot read the plan of {origin}: {plan_file}: {exc!r}") from None
        return _maskmed(origin, dataset, classes, channels, spacing)
    if logic is None:
        return ModelCardInfo(
            kind="maskmed",
            title=path.name,
            origin=origin,
            classes=(),
            training_data="read from the checkpoint when the model is selected",
            licence=MASKMED_LICENCE_NOT_RECORDED,
            input="read from the checkpoint when the model is selected (needs PyTorch)",
        )
    info = logic.model_info(str(path))
    return _maskmed(origin, info.dataset_name, info.class_names, info.channel_names, info.target_spacing)


def _maskmed(origin: str, dataset: str, classes, channels, spacing) -> ModelCardInfo:
    where = f"; target spacing {' × '.join(f'{float(s):g}' for s in spacing)} mm (z × y × x)" if spacing else ""
    return ModelCardInfo(
        kind="maskmed",
        title=f"{dataset} (MaskMed)",
        origin=origin,
        classes=tuple(classes),
        training_data=f"{dataset} (the plan's dataset name)",
        licence=MASKMED_LICENCE_NOT_RECORDED,
        input=f"{len(channels)} channel(s) ({', '.join(channels)}){where}",
    )
