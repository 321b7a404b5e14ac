"""The Segment section's model list: bundled models, then the ones the user added or trained.

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
from MaskMedSlicerLib.models import bundled_model_entries

SETTINGS_KEY = "MaskMed/Models"


@dataclass(frozen=True)
class ModelEntry:
    """One line of the model selector.

    Attributes:
        label: what the selector shows, e.g. ``Hippocampus, T1 MRI (bundled)`` or ``run1 (run)``.
        path: the checkpoint file or run folder (the selector's item data).
        tooltip: the model card for a bundled model, else the path.
        summary: one line about licence and input for a bundled model, else "".
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
        text: channels and classes (and the bundled model's licence line), or why they are unknown.
    """

    channel_names: tuple[str, ...]
    text: str

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
        return [ModelEntry(f"{e.title} (bundled)", str(e.path), e.description, e.summary, True) for e in entries]

    def entries(self, current: str = "") -> list[ModelEntry]:
        """Bundled models, remembered models, then ``current`` if it exists and is not listed yet."""
        entries = self.bundled()
        for path in self.remembered():
            kind = "run" if os.path.isdir(path) else "checkpoint"
            entries.append(ModelEntry(f"{os.path.basename(os.path.normpath(path))} ({kind})", path, path))
        listed = {os.path.normpath(e.path) for e in entries}
        if current and os.path.exists(current) and os.path.normpath(current) not in listed:
            entries.append(ModelEntry(os.path.basename(os.path.normpath(current)), current, current))
        return entries

    def summary(self, logic, path: str) -> ModelSummary:
        """Channels and classes of the model at ``path`` (needs torch to read a checkpoint)."""
        bundled = next((e for e in self.bundled() if os.path.normpath(e.path) == os.path.normpath(path)), None)
        try:
            info = logic.model_info(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user; torch may simply not be installed yet
            names, text = ("channel 1",), f"Model details not available yet: {exc}"
        else:
            names = tuple(info.channel_names)
            text = f"{info.num_channels} channel(s) ({', '.join(names)}); classes: {', '.join(info.class_names)}"
        if bundled is not None:
            text = f"{text}\n{bundled.summary}"
        return ModelSummary(names, text)
