"""Checkpoints: plain-data files, written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so loading can never run
code: configs are stored as JSON strings, RNG states as tensors/ints. Anything else in the file
(e.g. a pickled object that would execute code) is refused with a ``CheckpointError``.

Layout::

    {
      "format": "maskmed-checkpoint", "format_version": 1, "maskmed_version": "0.1.0",
      "model_config": "<ModelConfig JSON>", "plan": "<PlanConfig JSON>",
      "loss_config": "<LossConfig JSON>", "training_config": "<TrainingConfig JSON>" (or ""),
      "label_names": ["background", ...],
      "model_state": {param name: tensor},
      "training_state": {...} or {}    # optimiser, scheduler, scaler, epoch, RNG, history
    }
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from MaskMedCore._version import __version__
from MaskMedCore.config.loss_config import LossConfig
from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.errors import CheckpointError, ConfigError
from MaskMedCore.io_utils import atomic_write_bytes

CHECKPOINT_FORMAT = "maskmed-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model_config", "plan", "label_names", "model_state")


@dataclass
class Checkpoint:
    """A loaded checkpoint (configs parsed and validated)."""

    model_config: ModelConfig
    plan: PlanConfig
    label_names: list[str]
    model_state: dict[str, torch.Tensor]
    loss_config: LossConfig = field(default_factory=LossConfig)
    training_config_json: str = ""
    training_state: dict[str, Any] = field(default_factory=dict)
    maskmed_version: str = ""
    path: Path | None = None

    def build_model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The network with these weights, on ``device``, in eval mode."""
        from MaskMedCore.models.build import build_model

        model = build_model(self.model_config)
        try:
            model.load_state_dict(self.model_state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise CheckpointError(
                f"checkpoint {self.path}: weights do not fit its model config ({first}); "
                "the file was made by another MaskMed version or edited"
            ) from None
        return model.to(device).eval()


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    model_config: ModelConfig,
    plan: PlanConfig,
    loss_config: LossConfig | None = None,
    training_config_json: str = "",
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + fsync + rename): a failed write (disk full,
    killed process) leaves any previous file at ``path`` untouched and no partial file behind."""
    state = model.module.state_dict() if hasattr(model, "module") else model.state_dict()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "maskmed_version": __version__,
        "model_config": model_config.to_json(),
        "plan": plan.to_json(),
        "loss_config": (loss_config or LossConfig()).to_json(),
        "training_config": training_config_json,
        "label_names": list(plan.label_names),
        "model_state": {k: v.detach().cpu() for k, v in state.items()},
        "training_state": training_state or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        return atomic_write_bytes(path, buffer.getvalue())
    except Exception as exc:  # MaskMedError from the writer: say it was a checkpoint
        raise CheckpointError(f"could not save checkpoint {path}: {exc}; the previous checkpoint is kept") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint file (or the ``checkpoint_best.pt``/``checkpoint_latest.pt``
    of a run folder). Raises CheckpointError naming the file and the problem."""
    path = resolve_checkpoint_path(path)
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt (not a PyTorch zip archive)"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it contains objects other than plain data (tensors, numbers, strings), "
            f"which could run code when loaded ({str(exc).splitlines()[0][:200]})"
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt ({str(exc).splitlines()[0][:200]})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a MaskMed checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the field(s) {missing}")
    if data["format_version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {data['format_version']}; this MaskMed "
            f"({__version__}) reads version {CHECKPOINT_VERSION}"
        )
    try:
        model_config = ModelConfig.from_json(data["model_config"], source=f"{path}: model_config")
        plan = PlanConfig.from_json(data["plan"], source=f"{path}: plan")
        loss_config = LossConfig.from_json(data.get("loss_config") or "{}", source=f"{path}: loss_config")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {exc}") from None
    return Checkpoint(
        model_config=model_config,
        plan=plan,
        label_names=list(data["label_names"]),
        model_state=data["model_state"],
        loss_config=loss_config,
        training_config_json=data.get("training_config", ""),
        training_state=data.get("training_state") or {},
        maskmed_version=str(data.get("maskmed_version", "")),
        path=path,
    )


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (its best checkpoint, else its latest)."""
    path = Path(path)
    if path.is_dir():
        for name in ("checkpoint_best.pt", "checkpoint_latest.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run folder {path} has no checkpoint_best.pt or checkpoint_latest.pt")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path
