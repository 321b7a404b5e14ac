"""Find MaskMed models (checkpoint files and training run folders) and read what they segment.

Reading a checkpoint needs torch, imported here only when a checkpoint is read, never at import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError

_RUN_CHECKPOINTS = ("checkpoint_best.pt", "checkpoint_latest.pt")


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint segments.

    Attributes:
        path: the checkpoint file (a run folder resolves to its best, else latest, checkpoint).
        channel_names: one name per input channel, in order (C).
        label_names: K names, index = label value, 0 = background.
        dataset_name: the training dataset's name.
    """

    path: Path
    channel_names: tuple[str, ...]
    label_names: tuple[str, ...]
    dataset_name: str

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Foreground class names (K - 1)."""
        return self.label_names[1:]

    @property
    def title(self) -> str:
        """``dataset (run/checkpoint_best.pt)`` for a model selector."""
        return f"{self.dataset_name} ({self.path.parent.name}/{self.path.name})"


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
    )


def _candidates(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``: itself if it is a file or run folder, else its .pt files and run sub-folders."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    if any((folder / name).is_file() for name in _RUN_CHECKPOINTS):
        return [folder]
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_file() and child.suffix == ".pt":
            found.append(child)
        elif child.is_dir() and any((child / name).is_file() for name in _RUN_CHECKPOINTS):
            found.append(child)
    return found


def find_models(folders: Iterable[str | os.PathLike]) -> list[ModelInfo]:
    """Models in ``folders`` (each a checkpoint file, a run folder, or a folder of those, one level deep).

    Files that are not readable MaskMed checkpoints are skipped with a logged warning. A run folder
    counts once (its best checkpoint), and its ``checkpoint_*.pt`` files are not listed again.
    """
    models, seen = [], set()
    for folder in folders:
        for candidate in _candidates(Path(folder)):
            try:
                info = checkpoint_info(candidate)
            except MaskMedSlicerError as exc:
                logging.warning("MaskMed: skipping %s: %s", candidate, exc)
                continue
            run = info.path.parent if info.path.name in _RUN_CHECKPOINTS else info.path
            if run.resolve() not in seen:
                seen.add(run.resolve())
                models.append(info)
    return models
