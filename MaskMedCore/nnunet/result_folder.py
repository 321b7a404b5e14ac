"""An nnU-Net v2 result folder (``nnUNet_results/DatasetXXX/Trainer__Plans__configuration``), read and checked.

nnU-Net writes one folder per trained configuration::

    Trainer__Plans__3d_fullres/
        plans.json  dataset.json  [dataset_fingerprint.json]
        fold_0/checkpoint_final.pth  fold_0/checkpoint_best.pth  ...  fold_all/...

This module reads the JSON files and finds the folds; it never loads a checkpoint (see
``nnunet.checkpoint``) and never needs torch, so the Slicer module can list such models cheaply.
Everything MaskMed cannot run is refused here with the field that says so: region-based labels,
cascade stages, 2D configurations, network classes other than ``PlainConvUNet`` and
``ResidualEncoderUNet`` (nnU-Net's ResEnc presets).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MaskMedCore.errors import MaskMedError

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
REQUIRED_FILES = ("plans.json", "dataset.json")
SUPPORTED_NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet")


class NnUNetModelError(MaskMedError):
    """An nnU-Net result folder, plans file or checkpoint MaskMed cannot use (the message says why)."""


@dataclass(frozen=True)
class NnUNetResultFolder:
    """One nnU-Net v2 trained configuration.

    Attributes:
        path: the result folder.
        trainer: trainer class name (from the folder name, or ``unknown``).
        plans_name: plans identifier (``plans["plans_name"]``).
        configuration: the configuration name, e.g. ``3d_fullres``.
        plans: plans.json as read.
        config: the configuration's entries with ``inherits_from`` resolved (nnU-Net's PlansManager rule).
        dataset_json: dataset.json as read.
        label_names: K names ordered by label value (index = value; 0 = background).
        channel_names: C input channel names (dataset.json ``channel_names``, a.k.a. modalities).
        file_ending: image file ending of the dataset, e.g. ``.nii.gz``.
        folds: folds with at least one checkpoint, e.g. ``("0", "1", "all")``.
    """

    path: Path
    trainer: str
    plans_name: str
    configuration: str
    plans: dict
    config: dict
    dataset_json: dict
    label_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    file_ending: str
    folds: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Target spacing of the configuration, in nnU-Net's (transposed) axis order."""
        return tuple(float(s) for s in self.config["spacing"])

    @property
    def spacing_dhw(self) -> tuple[float, ...]:
        """Target spacing in the image's (D, H, W) = (z, y, x) order (``transpose_backward`` applied)."""
        back = self.plans.get("transpose_backward", [0, 1, 2])
        return tuple(self.spacing[i] for i in back)

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.config["patch_size"])

    @property
    def dataset_name(self) -> str:
        return str(self.plans.get("dataset_name") or self.dataset_json.get("name") or self.path.parent.name)

    def checkpoint_path(self, fold: str | int, checkpoint: str = "checkpoint_final.pth") -> Path:
        """``fold_<fold>/<checkpoint>``; raises NnUNetModelError (listing what exists) when missing."""
        fold = str(fold)
        path = self.path / f"fold_{fold}" / checkpoint
        if not path.is_file():
            have = [
                f"fold_{f}/{n}" for f in self.folds for n in CHECKPOINT_NAMES if (self.path / f"fold_{f}" / n).is_file()
            ]
            raise NnUNetModelError(
                f"nnU-Net model {self.path}: {path.relative_to(self.path)} does not exist; "
                f"available: {', '.join(have) or 'none'}"
            )
        return path

    def describe(self) -> str:
        """One line: dataset, configuration, trainer, classes, folds."""
        return (
            f"{self.dataset_name} nnU-Net v2 {self.configuration} ({self.trainer}), "
            f"classes: {', '.join(self.label_names[1:])}; folds: {', '.join(self.folds)}"
        )


def is_nnunet_result_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder with plans.json, dataset.json and at least one ``fold_*`` folder."""
    p = Path(path)
    return (
        p.is_dir()
        and all((p / name).is_file() for name in REQUIRED_FILES)
        and any(child.is_dir() and child.name.startswith("fold_") for child in p.iterdir())
    )


def read_result_folder(path: str | os.PathLike, configuration: str | None = None) -> NnUNetResultFolder:
    """Read and check an nnU-Net v2 result folder.

    Args:
        path: the ``Trainer__Plans__configuration`` folder.
        configuration: the configuration to use; default: the folder name's third part, else the
            plans' only configuration.

    Raises:
        NnUNetModelError: a missing/unreadable file, no fold with a checkpoint, or a feature MaskMed
            does not run (the message names the file and field).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise NnUNetModelError(f"nnU-Net model folder {folder} does not exist")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise NnUNetModelError(
                f"{folder} is not an nnU-Net v2 result folder: {name} is missing "
                "(expected plans.json, dataset.json and fold_X/checkpoint_final.pth)"
            )
    plans = _read_json(folder / "plans.json")
    dataset_json = _read_json(folder / "dataset.json")
    parts = folder.name.split("__")
    trainer = parts[0] if len(parts) == 3 else "unknown"
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        raise NnUNetModelError(f"{folder / 'plans.json'}: field 'configurations' is missing or empty")
    if configuration is None:
        if len(parts) == 3 and parts[2] in configurations:
            configuration = parts[2]
        elif len(configurations) == 1:
            configuration = next(iter(configurations))
        else:
            raise NnUNetModelError(
                f"{folder}: cannot tell which configuration was trained (folder name is not "
                f"Trainer__Plans__configuration); pass one of {sorted(configurations)}"
            )
    config = resolve_configuration(plans, configuration, folder / "plans.json")
    check_supported(config, configuration, dataset_json, folder)
    label_names = _label_names(dataset_json, folder / "dataset.json")
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise NnUNetModelError(f"{folder / 'dataset.json'}: field 'channel_names' is missing or empty")
    channel_names = tuple(str(channels[k]) for k in sorted(channels, key=int))
    folds = tuple(
        child.name[len("fold_") :]
        for child in sorted(folder.iterdir(), key=lambda c: (not c.name[5:].isdigit(), c.name[5:].zfill(4)))
        if child.is_dir() and child.name.startswith("fold_") and any((child / n).is_file() for n in CHECKPOINT_NAMES)
    )
    if not folds:
        raise NnUNetModelError(
            f"nnU-Net model {folder} has no fold_X folder with a checkpoint ({', '.join(CHECKPOINT_NAMES)})"
        )
    return NnUNetResultFolder(
        path=folder,
        trainer=trainer,
        plans_name=str(plans.get("plans_name", parts[1] if len(parts) == 3 else "")),
        configuration=configuration,
        plans=plans,
        config=config,
        dataset_json=dataset_json,
        label_names=label_names,
        channel_names=channel_names,
        file_ending=str(dataset_json.get("file_ending", ".nii.gz")),
        folds=folds,
    )


def resolve_configuration(plans: dict, name: str, source: Path) -> dict:
    """The configuration ``name`` with its ``inherits_from`` chain applied (child entries win)."""
    configurations = plans.get("configurations", {})
    chain, current = [], name
    while current is not None:
        if current not in configurations:
            raise NnUNetModelError(
                f"{source}: configuration '{current}' is not in 'configurations' (has {sorted(configurations)})"
            )
        if current in chain:
            raise NnUNetModelError(f"{source}: configurations inherit from each other in a loop: {chain + [current]}")
        chain.append(current)
        current = configurations[current].get("inherits_from")
    merged: dict[str, Any] = {}
    for entry in reversed(chain):
        merged.update(configurations[entry])
    merged.pop("inherits_from", None)
    return merged


def check_supported(config: dict, name: str, dataset_json: dict, folder: Path) -> None:
    """Refuse, with the field that says so, what MaskMed cannot run as an nnU-Net model."""
    plans_file = folder / "plans.json"
    if "regions_class_order" in dataset_json or any(
        isinstance(v, (list, tuple)) for v in (dataset_json.get("labels") or {}).values()
    ):
        raise NnUNetModelError(
            f"{folder / 'dataset.json'}: region-based training ('labels' map to lists / 'regions_class_order') "
            "is not supported; MaskMed runs nnU-Net models trained on label maps"
        )
    if config.get("previous_stage"):
        raise NnUNetModelError(
            f"{plans_file}: configuration '{name}' is a cascade stage (previous_stage "
            f"'{config['previous_stage']}'); cascades are not supported, use the 3d_fullres or 3d_lowres model"
        )
    patch = config.get("patch_size")
    if not isinstance(patch, list) or len(patch) != 3:
        raise NnUNetModelError(
            f"{plans_file}: configuration '{name}' has patch_size {patch!r}; only 3D configurations are supported "
            "(2D configurations are not, yet)"
        )
    network = network_class_name(config, plans_file, name)
    if network not in SUPPORTED_NETWORKS:
        raise NnUNetModelError(
            f"{plans_file}: configuration '{name}' uses network class '{network}'; MaskMed can run "
            f"{', '.join(SUPPORTED_NETWORKS)} only"
        )


def network_class_name(config: dict, source: Path, name: str) -> str:
    """Short class name of the configuration's network (new 'architecture' or old 'UNet_class_name' plans)."""
    arch = config.get("architecture")
    if isinstance(arch, dict) and "network_class_name" in arch:
        return str(arch["network_class_name"]).rsplit(".", 1)[-1]
    if "UNet_class_name" in config:
        return str(config["UNet_class_name"])
    raise NnUNetModelError(
        f"{source}: configuration '{name}' names no network (neither architecture.network_class_name "
        "nor UNet_class_name)"
    )


def _label_names(dataset_json: dict, source: Path) -> tuple[str, ...]:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise NnUNetModelError(f"{source}: field 'labels' is missing or empty")
    try:
        by_value = {int(v): str(k) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise NnUNetModelError(f"{source}: 'labels' values must be integers, got {labels}") from None
    ignore = [v for k, v in by_value.items() if v == "ignore"]
    if ignore:
        # nnU-Net's ignore label is the highest value and is never predicted.
        by_value = {k: v for k, v in by_value.items() if v != "ignore"}
    if sorted(by_value) != list(range(len(by_value))):
        raise NnUNetModelError(f"{source}: 'labels' values must be 0..K-1 without gaps, got {sorted(by_value)}")
    return tuple(by_value[k] for k in range(len(by_value)))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NnUNetModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise NnUNetModelError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
