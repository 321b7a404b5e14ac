"""Find models (MaskMed checkpoint files and training run folders, nnU-Net v2 result folders) and read what
they segment.

Reading a MaskMed checkpoint needs torch, imported here only when a checkpoint is read, never at import;
an nnU-Net result folder is read from its JSON files (:mod:`.nnunet_models`), without torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.model_info import ModelInfo
from MaskMedSlicerLib.nnunet_models import nnunet_folders_in, nnunet_info

_RUN_CHECKPOINTS = ("checkpoint_best.pt", "checkpoint_latest.pt")


@dataclass(frozen=True)
class BundledModelEntry:
    """A model shipped with the extension, for the model selector (read from its card; no torch needed).

    Attributes:
        name: the bundled name (``maskmed predict -m NAME``), e.g. ``hippocampus``.
        title: a human-readable title, e.g. ``Hippocampus, T1 MRI (MSD Task04)``.
        path: the checkpoint file.
        class_names: foreground class names (K - 1), from the card.
        licence: the licence of the model (e.g. ``CC-BY-SA 4.0``).
        summary: one line for a label: licence and input expectations.
        description: the whole card in a few lines, for a tooltip.
        placeholder: the card says the checkpoint is a development placeholder.
    """

    name: str
    title: str
    path: Path
    class_names: tuple[str, ...]
    licence: str
    summary: str
    description: str
    placeholder: bool


def bundled_model_entries() -> list[BundledModelEntry]:
    """The bundled models that are installed (checkpoint present), phantom demo first.

    A model whose card cannot be read is skipped with a logged warning.

    Raises:
        MaskMedSlicerError: MaskMedCore cannot be imported.
    """
    try:
        from MaskMedCore.bundled_models import BUNDLED_NAMES, bundled_model
        from MaskMedCore.errors import MaskMedError
    except ImportError as exc:
        raise MaskMedSlicerError(f"MaskMedCore cannot be imported ({exc}); is the extension installed fully?") from None
    entries = []
    for name in BUNDLED_NAMES:
        try:
            model = bundled_model(name)
        except MaskMedError as exc:
            logging.warning("MaskMed: bundled model %s skipped: %s", name, exc)
            continue
        if not model.available:
            logging.warning("MaskMed: bundled model %s is not installed (looked at %s)", name, model.searched[0])
            continue
        card = model.card
        entries.append(
            BundledModelEntry(
                name=name,
                title=card.title,
                path=model.checkpoint,
                class_names=card.classes,
                licence=card.licence,
                summary=f"Licence {card.licence}. Input: {card.input.describe()}",
                description=card.describe(),
                placeholder=card.is_placeholder,
            )
        )
    return entries


def bundled_model_entry(path: str | os.PathLike) -> BundledModelEntry | None:
    """The bundled model whose checkpoint is ``path``; None for any other model (or an unreadable path)."""
    try:
        target = Path(path).resolve()
        return next((e for e in bundled_model_entries() if e.path.resolve() == target), None)
    except (OSError, MaskMedSlicerError):
        return None


def bundled_demo_model() -> Path:
    """The demo checkpoint shipped with the extension (``$MASKMED_DEMO_MODEL`` overrides it)."""
    try:
        from MaskMedCore.demo import find_demo_model
        from MaskMedCore.errors import MaskMedError
    except ImportError as exc:
        raise MaskMedSlicerError(f"MaskMedCore cannot be imported ({exc}); is the extension installed fully?") from None
    try:
        return find_demo_model()
    except MaskMedError as exc:
        raise MaskMedSlicerError(str(exc)) from None


def checkpoint_info(path: str | os.PathLike) -> ModelInfo:
    """Read a checkpoint file or run folder (loads it on the CPU with torch; errors name the file)."""
    try:
        from MaskMedCore.engine.checkpoint import load_checkpoint
        from MaskMedCore.errors import MaskMedError
    except ImportError as exc:
        raise MaskMedSlicerError(f"cannot read MaskMed checkpoints: {exc} (install PyTorch first)") from None
    try:
        checkpoint = load_checkpoint(path, map_location="cpu")
    except MaskMedError as exc:
        raise MaskMedSlicerError(str(exc)) from None
    plan = checkpoint.plan
    return ModelInfo(
        path=Path(checkpoint.path),
        channel_names=tuple(plan.channel_names),
        label_names=tuple(checkpoint.label_names),
        dataset_name=plan.dataset_name,
        target_spacing=tuple(float(s) for s in plan.target_spacing),
    )


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of an nnU-Net result folder (no torch) or a MaskMed checkpoint file or run folder (torch)."""
    folders = nnunet_folders_in(path, depth=0)
    return nnunet_info(folders[0]) if folders else checkpoint_info(path)


def _candidates(folder: Path) -> list[Path]:
    """Models in ``folder``: itself if it is a file, run folder or nnU-Net result folder, else its .pt files,
    run sub-folders and the nnU-Net result folders in it (also two levels down, ``nnUNet_results/DatasetXXX/``)."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    if any((folder / name).is_file() for name in _RUN_CHECKPOINTS) or nnunet_folders_in(folder, depth=0):
        return [folder]
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_file() and child.suffix == ".pt":
            found.append(child)
        elif child.is_dir() and any((child / name).is_file() for name in _RUN_CHECKPOINTS):
            found.append(child)
    return found + nnunet_folders_in(folder, depth=2)


def find_models(folders: Iterable[str | os.PathLike]) -> list[ModelInfo]:
    """Models in ``folders``: each a checkpoint file, a run folder, an nnU-Net result folder, or a folder of
    those (checkpoints and runs one level deep, nnU-Net result folders up to two).

    Files that are not readable models are skipped with a logged warning. A run folder counts once (its
    best checkpoint), and its ``checkpoint_*.pt`` files are not listed again.
    """
    models, seen = [], set()
    for folder in folders:
        for candidate in _candidates(Path(folder)):
            try:
                info = read_model_info(candidate)
            except MaskMedSlicerError as exc:
                logging.warning("MaskMed: skipping %s: %s", candidate, exc)
                continue
            run = info.path.parent if info.kind == "maskmed" and info.path.name in _RUN_CHECKPOINTS else info.path
            if run.resolve() not in seen:
                seen.add(run.resolve())
                models.append(info)
    return models
