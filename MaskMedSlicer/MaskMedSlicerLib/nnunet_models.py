"""nnU-Net v2 result folders as models of the model selector: read (no torch), found, added, installed from zips.

A result folder is ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration/`` with ``plans.json``,
``dataset.json`` and ``fold_X/checkpoint_*.pth`` (:mod:`MaskMedCore.nnunet.result_folder` reads and checks
it). Zips that nnU-Net's ``nnUNetv2_export_model_to_zip`` writes are installed into the module's models
folder (:func:`user_models_folder`) by :func:`install_nnunet_zip_model`, which checks everything before it
writes anything (:mod:`MaskMedCore.nnunet.model_zip`).
"""

from __future__ import annotations

import os
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.model_info import ModelInfo

MODELS_FOLDER_NAME = "MaskMed"
NNUNET_RESULTS_NAME = "nnUNet_results"


def _core():
    """MaskMedCore's nnU-Net result-folder reader (no torch), or a clear error when MaskMedCore is missing."""
    try:
        from MaskMedCore.nnunet import result_folder
    except ImportError as exc:
        raise MaskMedSlicerError(f"MaskMedCore cannot be imported ({exc}); is the extension installed fully?") from None
    return result_folder


def nnunet_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of an nnU-Net v2 result folder: classes from dataset.json, channels, target spacing (no torch).

    Raises:
        MaskMedSlicerError: not a usable result folder (the message names the file and field).
    """
    core = _core()
    try:
        folder = core.read_result_folder(path)
    except core.NnUNetModelError as exc:
        raise MaskMedSlicerError(str(exc)) from None
    return ModelInfo(
        path=Path(folder.path),
        channel_names=folder.channel_names,
        label_names=folder.label_names,
        dataset_name=folder.dataset_name,
        kind="nnunet",
        configuration=folder.configuration,
        target_spacing=folder.spacing_dhw,
    )


def nnunet_folders_in(folder: str | os.PathLike, depth: int = 2) -> list[Path]:
    """nnU-Net result folders at ``folder`` and up to ``depth`` levels below it, sorted.

    ``depth=2`` covers an ``nnUNet_results`` folder (``DatasetXXX/Trainer__Plans__configuration``). Hidden
    folders are skipped (an install in progress extracts into ``.maskmed-install-*``).
    """
    core = _core()
    root = Path(folder)
    found, level = [], [root] if root.is_dir() else []
    for _ in range(depth + 1):
        below = []
        for candidate in level:
            if core.is_nnunet_result_folder(candidate):
                found.append(candidate)
            else:
                try:
                    below += [c for c in candidate.iterdir() if c.is_dir() and not c.name.startswith(".")]
                except OSError:
                    continue
        level = sorted(below)
    return sorted(found)


def resolve_nnunet_folder(path: str | os.PathLike) -> Path:
    """The result folder a user picked: the folder itself, or the only one inside it (a ``DatasetXXX`` or
    ``nnUNet_results`` folder picked by mistake).

    Raises:
        MaskMedSlicerError: none inside (why the folder itself is not one), or several (listed: pick one).
    """
    folders = nnunet_folders_in(path, depth=2)
    if len(folders) == 1:
        return folders[0]
    if not folders:
        nnunet_info(path)  # raises, saying what the folder lacks
        raise MaskMedSlicerError(f"{path} is not an nnU-Net result folder")
    listed = ", ".join(str(f.relative_to(path)) for f in folders)
    raise MaskMedSlicerError(f"{path} holds {len(folders)} nnU-Net result folders ({listed}); choose one of them")


def add_nnunet_folder(path: str | os.PathLike, model_list) -> str:
    """Check an nnU-Net result folder (or the only one inside ``path``) and remember it in ``model_list``.

    Returns:
        The result folder's path (the model list's entry).

    Raises:
        MaskMedSlicerError: not a usable result folder, or several inside ``path`` (listed).
    """
    folder = resolve_nnunet_folder(path)
    nnunet_info(folder)  # refuses what MaskMed cannot run (region labels, cascades, 2D, other networks)
    model_list.remember(str(folder))
    return str(folder)


def user_models_folder(user_data_dir: str | os.PathLike) -> Path:
    """Where installed nnU-Net zips go: ``<user_data_dir>/MaskMed/nnUNet_results`` (an nnU-Net results tree).

    Args:
        user_data_dir: the application's per-user folder (in Slicer: the folder of the user settings file).
    """
    return Path(user_data_dir) / MODELS_FOLDER_NAME / NNUNET_RESULTS_NAME


def install_nnunet_zip_model(
    zip_path: str | os.PathLike, models_folder: str | os.PathLike, model_list=None, sha256: str | None = None
) -> list[str]:
    """Verify and install an nnU-Net model zip, and remember each installed model in ``model_list``.

    Args:
        zip_path: the zip (``nnUNetv2_export_model_to_zip`` output).
        models_folder: install folder, e.g. :func:`user_models_folder`.
        model_list: a ``ModelList`` to remember the models in (None: not remembered).
        sha256: expected SHA-256 of the zip (64 hex digits, any case), or None / "" to skip the check.

    Returns:
        The installed result folders, as strings (the model list's paths).

    Raises:
        MaskMedSlicerError: the zip was refused (checksum, unsafe member, unusable or already installed
            model); nothing was written.
    """
    try:
        from MaskMedCore.errors import MaskMedError
        from MaskMedCore.nnunet.model_zip import install_nnunet_zip
    except ImportError as exc:
        raise MaskMedSlicerError(f"MaskMedCore cannot be imported ({exc}); is the extension installed fully?") from None
    try:
        installed = install_nnunet_zip(zip_path, models_folder, sha256=(sha256 or "").strip() or None)
    except MaskMedError as exc:
        raise MaskMedSlicerError(str(exc)) from None
    paths = [str(p) for p in installed]
    if model_list is not None:
        for path in paths:
            model_list.remember(path)
    return paths
