"""Model cards: what a shipped model segments, from what input, trained on which data under which
licence, and how well it did on held-out cases.

A card is a JSON file (``model_card.json`` beside the checkpoint): the one place the numbers live.
Code reads it (``maskmed models``, ``maskmed demo``, the Slicer model list) and the Markdown card is
rendered from it (:func:`render_model_card`). Unknown keys are refused by name, as in every MaskMed config.

Layout (``null`` = not measured yet)::

    {"format": "maskmed-model-card", "format_version": 1,
     "name": "hippocampus", "title": "...", "summary": "...", "status": "placeholder" | "final",
     "checkpoint": "maskmed_hippocampus.pt", "classes": ["anterior", "posterior"],
     "input": {"modality", "channels": [...], "spacing_mm": [x, y, z], "size_voxels_xyz": [x, y, z], "notes"},
     "training": {"data", "data_licence", "cases", "commands": [...], ...free-form text fields},
     "evaluation": {"cases", "dice": {class: float | null}, "mean_dice", "hd95_mm": {...}, "commands"},
     "licence": {"name", "url", "file", "attribution"},
     "sample": {"case", "split", "image", "label", "image_sha256", "label_sha256", "readme", "description"}
               | null}

Paths in ``licence`` and ``sample`` are relative to the card's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MaskMedCore.errors import ConfigError

CARD_FILE_NAME = "model_card.json"
CARD_FORMAT = "maskmed-model-card"
CARD_VERSION = 1
STATUSES = ("placeholder", "final")
_TOP = {"format", "format_version", "name", "title", "summary", "status", "checkpoint", "classes", "input"}
_TOP |= {"training", "evaluation", "licence", "sample"}
_INPUT = {"modality", "channels", "spacing_mm", "size_voxels_xyz", "notes"}
_LICENCE = {"name", "url", "file", "attribution"}
_SAMPLE = {"case", "split", "image", "label", "image_sha256", "label_sha256", "readme", "description"}
_EVALUATION_NUMBERS = ("dice", "hd95_mm")


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: modality, channel names (C), spacing and size in (x, y, z) order."""

    modality: str
    channels: tuple[str, ...]
    spacing_mm: tuple[float, ...] | None
    size_voxels_xyz: tuple[int, ...] | None
    notes: str = ""

    def describe(self) -> str:
        """One line, e.g. ``MRI, 1 channel (MRI), ~1 mm spacing, ~35×50×35 voxels (x×y×z); notes``."""
        parts = [self.modality, f"{len(self.channels)} channel(s) ({', '.join(self.channels)})"]
        if self.spacing_mm:
            parts.append("~" + " × ".join(f"{s:g}" for s in self.spacing_mm) + " mm spacing")
        if self.size_voxels_xyz:
            parts.append("~" + "×".join(str(s) for s in self.size_voxels_xyz) + " voxels (x×y×z)")
        return ", ".join(parts) + (f"; {self.notes}" if self.notes else "")


@dataclass(frozen=True)
class SampleCase:
    """A held-out case shipped with the model: image and manual label files (absolute paths)."""

    case: str
    split: str
    image: Path
    label: Path
    image_sha256: str
    label_sha256: str
    readme: Path | None
    description: str


@dataclass(frozen=True)
class ModelCard:
    """A parsed, validated model card. ``training`` and ``evaluation`` keep the JSON's free-form text;
    ``source`` is the card file and ``folder`` the folder its relative paths resolve against (None for a
    built-in card)."""

    name: str
    title: str
    summary: str
    status: str
    checkpoint_file: str
    classes: tuple[str, ...]
    input: InputSpec
    licence: str
    licence_url: str
    licence_file: Path | None
    attribution: str
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    sample: SampleCase | None = None
    source: Path | None = None
    folder: Path | None = None

    @property
    def test_dice(self) -> dict[str, float | None]:
        """Per-class test Dice from the card (None where not measured yet)."""
        return dict(self.evaluation.get("dice") or {c: None for c in self.classes})

    @property
    def is_placeholder(self) -> bool:
        return self.status == "placeholder"

    def describe(self) -> str:
        """A few lines for ``maskmed models`` and the Slicer model list's tooltip."""
        dice = self.test_dice
        measured = [f"{c} {dice[c]:.3f}" for c in self.classes if dice.get(c) is not None]
        lines = [
            f"{self.title}{' [placeholder model]' if self.is_placeholder else ''}",
            f"classes: {', '.join(self.classes)}",
            f"input: {self.input.describe()}",
            f"licence: {self.licence}; {self.attribution}",
            "test Dice: " + (", ".join(measured) + f" ({self.evaluation.get('cases', '')})" if measured else "—"),
        ]
        if self.sample is not None:
            lines.append(f"sample case: {self.sample.case} ({self.sample.split} split) {self.sample.image}")
        return "\n".join(lines)


def _field(data: dict, key: str, kind, where: str, optional: bool = False):
    if key not in data:
        if optional:
            return None
        raise ConfigError(f"{where}: missing field {key!r}")
    value = data[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: field {key!r} must be {name}, got {value!r}")
    return value


def _no_unknown(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _numbers(values: Any, classes: tuple[str, ...], where: str, unit_interval: bool) -> None:
    if not isinstance(values, dict) or sorted(values) != sorted(classes):
        raise ConfigError(f"{where} must map each class {list(classes)} to a number or null, got {values!r}")
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}[{name!r}] must be a non-negative number or null, got {value!r}")
        if unit_interval and value > 1:
            raise ConfigError(f"{where}[{name!r}] is a Dice score and must be in [0, 1], got {value!r}")


def card_from_dict(data: dict, source: str | os.PathLike = "model card", folder: Path | None = None) -> ModelCard:
    """Validate a card's JSON object; relative paths resolve against ``folder``.

    Raises:
        ConfigError: naming ``source``, the field, what was found and what is expected.
    """
    where = str(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a model card must be a JSON object, got {type(data).__name__}")
    _no_unknown(data, _TOP, where)
    if data.get("format") != CARD_FORMAT or data.get("format_version") != CARD_VERSION:
        raise ConfigError(
            f"{where}: format/format_version are {data.get('format')!r}/{data.get('format_version')!r}; "
            f"expected {CARD_FORMAT!r}/{CARD_VERSION}"
        )
    status = _field(data, "status", str, where)
    if status not in STATUSES:
        raise ConfigError(f"{where}: status is {status!r}; expected one of {list(STATUSES)}")
    classes = tuple(_field(data, "classes", list, where))
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError(f"{where}: classes must be a non-empty list of names (foreground only), got {classes!r}")
    inp = _field(data, "input", dict, f"{where}")
    _no_unknown(inp, _INPUT, f"{where}: input")
    spacing = _field(inp, "spacing_mm", list, f"{where}: input", optional=True)
    size = _field(inp, "size_voxels_xyz", list, f"{where}: input", optional=True)
    input_spec = InputSpec(
        modality=_field(inp, "modality", str, f"{where}: input"),
        channels=tuple(_field(inp, "channels", list, f"{where}: input")),
        spacing_mm=tuple(float(s) for s in spacing) if spacing else None,
        size_voxels_xyz=tuple(int(s) for s in size) if size else None,
        notes=_field(inp, "notes", str, f"{where}: input", optional=True) or "",
    )
    training = _field(data, "training", dict, where)
    evaluation = _field(data, "evaluation", dict, where)
    for key in _EVALUATION_NUMBERS:
        if key in evaluation:
            _numbers(evaluation[key], classes, f"{where}: evaluation.{key}", unit_interval=key == "dice")
    if status == "final":
        missing = [c for c, v in (evaluation.get("dice") or {}).items() if v is None]
        if missing or "dice" not in evaluation:
            raise ConfigError(
                f"{where}: status is 'final' but evaluation.dice has no number for {missing or list(classes)}; "
                "fill in the measured test Dice, or keep status 'placeholder'"
            )
    lic = _field(data, "licence", dict, where)
    _no_unknown(lic, _LICENCE, f"{where}: licence")
    lic_file = _field(lic, "file", str, f"{where}: licence", optional=True)
    base = folder if folder is not None else Path(".")
    return ModelCard(
        name=_field(data, "name", str, where),
        title=_field(data, "title", str, where),
        summary=_field(data, "summary", str, where),
        status=status,
        checkpoint_file=_field(data, "checkpoint", str, where),
        classes=classes,
        input=input_spec,
        licence=_field(lic, "name", str, f"{where}: licence"),
        licence_url=_field(lic, "url", str, f"{where}: licence"),
        licence_file=base / lic_file if lic_file else None,
        attribution=_field(lic, "attribution", str, f"{where}: licence"),
        training=training,
        evaluation=evaluation,
        sample=_sample(_field(data, "sample", dict, where, optional=True), base, f"{where}: sample"),
        source=Path(source) if folder is not None else None,
        folder=folder,
    )


def _sample(data: dict | None, base: Path, where: str) -> SampleCase | None:
    if data is None:
        return None
    _no_unknown(data, _SAMPLE, where)
    readme = _field(data, "readme", str, where, optional=True)
    return SampleCase(
        case=_field(data, "case", str, where),
        split=_field(data, "split", str, where),
        image=base / _field(data, "image", str, where),
        label=base / _field(data, "label", str, where),
        image_sha256=_field(data, "image_sha256", str, where),
        label_sha256=_field(data, "label_sha256", str, where),
        readme=base / readme if readme else None,
        description=_field(data, "description", str, where, optional=True) or "",
    )


def load_model_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate ``model_card.json``; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read model card {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model card {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return card_from_dict(data, source=path, folder=path.parent)


def _value(value: Any) -> str:
    if value is None:
        return "not filled in yet"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_model_card(card: ModelCard) -> str:
    """The Markdown model card (``MODEL_CARD.md``), rendered from the JSON card only."""

    def rel(path: Path | None) -> str:
        return str(path.relative_to(card.folder)) if path is not None and card.folder is not None else str(path)

    out = [f"# {card.title}", "", f"<!-- Generated from {CARD_FILE_NAME} by 'maskmed models --write-cards'. -->", ""]
    if card.is_placeholder:
        out += [
            "> **Placeholder.** The checkpoint here is a development model and the numbers below are not "
            "measured yet; they are filled in when the final model is trained.",
            "",
        ]
    out += [card.summary, "", f"- Name: `{card.name}` (`maskmed predict -m {card.name} -i ... -o ...`)"]
    out += [f"- Checkpoint: `{card.checkpoint_file}`", f"- Classes: {', '.join(card.classes)}", ""]
    spec = card.input
    channels = f"{len(spec.channels)} ({', '.join(spec.channels)})"
    out += ["## Input", "", f"- Modality: {spec.modality}", f"- Channels: {channels}"]
    if spec.spacing_mm:
        out.append(f"- Spacing: ~{' × '.join(f'{s:g}' for s in spec.spacing_mm)} mm (x × y × z)")
    if spec.size_voxels_xyz:
        out.append(f"- Size: ~{' × '.join(str(s) for s in spec.size_voxels_xyz)} voxels (x × y × z)")
    if spec.notes:
        out.append(f"- Notes: {spec.notes}")
    out += ["", "## Training", ""]
    for key, value in card.training.items():
        if key != "commands":
            out.append(f"- {key.replace('_', ' ').capitalize()}: {_value(value)}")
    if card.training.get("commands"):
        out += ["", "To reproduce:", "", "```bash", *card.training["commands"], "```"]
    out += ["", "## Evaluation", "", f"Cases: {card.evaluation.get('cases', '—')}", ""]
    numbers = [k for k in _EVALUATION_NUMBERS if k in card.evaluation]
    if numbers:
        headers = {"dice": "Dice", "hd95_mm": "HD95 (mm)"}
        out += ["| class | " + " | ".join(headers[k] for k in numbers) + " |", "|---" * (len(numbers) + 1) + "|"]
        for c in card.classes:
            out.append(f"| {c} | " + " | ".join(_value(card.evaluation[k].get(c)) for k in numbers) + " |")
        if "mean_dice" in card.evaluation:
            out.append(f"| mean | {_value(card.evaluation['mean_dice'])} |" + " |" * (len(numbers) - 1))
    for key, value in card.evaluation.items():
        if key not in (*_EVALUATION_NUMBERS, "mean_dice", "cases", "commands"):
            out += ["", f"- {key.replace('_', ' ').capitalize()}: {_value(value)}"]
    if card.evaluation.get("commands"):
        out += ["", "Measured with:", "", "```bash", *card.evaluation["commands"], "```"]
    out += ["", "## Licence and attribution", "", f"{card.licence} ({card.licence_url}).", "", card.attribution]
    if card.licence_file is not None:
        out += ["", f"Full text: `{rel(card.licence_file)}`."]
    if card.sample is not None:
        s = card.sample
        out += ["", "## Sample case", ""]
        out.append(f"`{s.case}`, from the {s.split} split (never seen in training). {s.description}")
        out += ["", f"- Image: `{rel(s.image)}`", f"- Manual label: `{rel(s.label)}`"]
        if s.readme is not None:
            out.append(f"- Licence and attribution: `{rel(s.readme)}`")
    return "\n".join(out) + "\n"
