"""The Segment section's model list: bundled models, then the ones the user added, installed or trained
(MaskMed checkpoints and runs, nnU-Net v2 result folders), each with its model card (:mod:`.model_cards`).

Added and trained models are remembered in the application settings under :data:`SETTINGS_KEY`
(Slicer's ``slicer.app.settings()``, a ``QSettings``; any object with ``value(key)`` and
``setValue(key, value)`` works). ``QSettings`` hands back a one-element list as a plain string and a
missing key as None; both are read as lists here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.model_cards import ModelCardInfo, bundled_model_card, model_card_info
from MaskMedSlicerLib.models import bundled_model_entries

SETTINGS_KEY = "MaskMed/Models"


@dataclass(frozen=True)
class ModelEntry:
    """One line of the model selector.

    Attributes:
        label: what the selector shows, e.g. ``Hippocampus, T1 MRI (bundled)``, ``run1 (run)`` or
            ``Dataset903_Hippocampus 3d_fullres (nnU-Net)``.
        path: the checkpoint file, run folder or nnU-Net result folder (the selector's item data).
        tooltip: the model card (:meth:`ModelCardInfo.text`), or the path and why it cannot be read.
        summary: one line about the training data licence and the input, or "".
        bundled: shipped with the extension (cannot be removed from the list).
    """

    label: str
    path: str
    tooltip: str
    summary: str = ""
    bundled: bool = False


@dataclass(frozen=True)
class ModelSummary:
    """What the panel shows about the selected model.

    Attributes:
        channel_names: one name per input channel (C); ``("channel 1",)`` when the model is unreadable.
        text: channels and classes, and the card's licence and input line; or why they are unknown.
        tooltip: the whole model card, or "" when it cannot be read.
    """

    channel_names: tuple[str, ...]
    text: str
    tooltip: str = ""

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)


class ModelList:
    """Bundled and remembered models.

    Args:
        settings: the application settings (``QSettings``-like).
    """

    def __init__(self, settings) -> None:
        self.settings = settings

    def remembered(self) -> list[str]:
        """Models added or trained before that still exist, oldest first."""
        paths = self.settings.value(SETTINGS_KEY) or []
        paths = [paths] if isinstance(paths, str) else list(paths)
        return [p for p in paths if p and os.path.exists(p)]

    def remember(self, path: str) -> None:
        paths = [p for p in self.remembered() if os.path.normpath(p) != os.path.normpath(path)]
        self.settings.setValue(SETTINGS_KEY, [*paths, str(path)])

    def forget(self, path: str) -> None:
        paths = [p for p in self.remembered() if os.path.normpath(p) != os.path.normpath(path)]
        self.settings.setValue(SETTINGS_KEY, paths)

    @staticmethod
    def bundled() -> list[ModelEntry]:
        try:
            entries = bundled_model_entries()
        except MaskMedSlicerError as exc:
            logging.warning("MaskMed: %s", exc)
            return []
        listed = []
        for e in entries:
            try:
                card = bundled_model_card(e)
                tooltip, summary = card.text(), card.summary()
            except MaskMedSlicerError as exc:  # the entry's own lines still describe it
                logging.warning("MaskMed: %s", exc)
                tooltip, summary = e.description, e.summary
            listed.append(ModelEntry(f"{e.title} (bundled)", str(e.path), tooltip, summary, True))
        return listed

    def entries(self, current: str = "") -> list[ModelEntry]:
        """Bundled models, remembered models, then ``current`` if it exists and is not listed yet."""
        entries = self.bundled()
        for path in self.remembered():
            entries.append(_entry(path))
        listed = {os.path.normpath(e.path) for e in entries}
        if current and os.path.exists(current) and os.path.normpath(current) not in listed:
            entries.append(_entry(current))
        return entries

    def summary(self, logic, path: str) -> ModelSummary:
        """Channels and classes of the model at ``path`` and its card (a MaskMed checkpoint needs torch)."""
        try:
            info = logic.model_info(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user; torch may simply not be installed yet
            return ModelSummary(("channel 1",), f"Model details not available yet: {exc}")
        names = tuple(info.channel_names)
        text = f"{info.num_channels} channel(s) ({', '.join(names)}); classes: {', '.join(info.class_names)}"
        card = _card(path, logic)
        if card is None:
            return ModelSummary(names, text)
        return ModelSummary(names, f"{text}\n{card.summary()}", card.text())


def _card(path: str, logic=None) -> ModelCardInfo | None:
    """The model's card; None (with a logged warning) when it cannot be read."""
    try:
        return model_card_info(path, logic)
    except MaskMedSlicerError as exc:
        logging.warning("MaskMed: no model card for %s: %s", path, exc)
        return None


def _entry(path: str) -> ModelEntry:
    """A remembered model's line: nnU-Net folders by dataset and configuration, MaskMed ones by file name."""
    card = _card(path)
    if card is not None and card.kind == "nnunet":
        label = card.title
    else:
        label = f"{os.path.basename(os.path.normpath(path))} ({'run' if os.path.isdir(path) else 'checkpoint'})"
    if card is None:
        return ModelEntry(label, path, path)
    return ModelEntry(label, path, card.text(), card.summary())
