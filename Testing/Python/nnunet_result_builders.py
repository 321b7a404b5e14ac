"""Small but real nnU-Net v2 result folders and model zips for tests (no nnU-Net needed).

``plans.json`` and ``dataset.json`` follow the structure nnU-Net v2 writes (copied from a folder trained
by nnunetv2 on MSD hippocampus: one ``3d_fullres`` PlainConvUNet configuration, 4 stages); the
checkpoint is a ``torch.save`` of the dict ``nnUNetTrainer.save_checkpoint`` writes, with a tiny
``network_weights``. A test that needs weights that fit the network builds them itself.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

DATASET = "Dataset903_Hippocampus"
TRAINER, PLANS, CONFIGURATION = "nnUNetTrainer", "nnUNetPlans", "3d_fullres"

PLAIN_CONV_UNET = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 4,
        "features_per_stage": [8, 16, 32, 64],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 4,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def plans_json(dataset: str = DATASET, plans_name: str = PLANS, spacing=(1.0, 1.0, 1.0)) -> dict:
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": dataset,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [36, 50, 35],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": f"{plans_name}_{CONFIGURATION}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 6,
                "patch_size": [40, 56, 40],
                "median_image_size_in_voxels": [36.0, 50.0, 35.0],
                "spacing": list(spacing),
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": copy.deepcopy(PLAIN_CONV_UNET),
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 465995.1,
                "mean": 27351.5,
                "median": 368.3,
                "min": 0.0,
                "percentile_00_5": 28.0,
                "percentile_99_5": 284065.5,
                "std": 66030.1,
            }
        },
    }


def dataset_json(dataset: str = DATASET, labels: dict | None = None, **extra) -> dict:
    return {
        "name": dataset,
        "channel_names": {"0": "MRI"},
        "labels": labels or {"background": 0, "anterior": 1, "posterior": 2},
        "numTraining": 160,
        "file_ending": ".nii.gz",
        **extra,
    }


def write_checkpoint(path: Path, plans: dict, dataset: dict, fold: int | str = 0, weights: dict | None = None) -> Path:
    """A ``checkpoint_*.pth`` as nnU-Net v2 saves it (``weights``, default: one tiny tensor)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if weights is None:
        weights = {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(8, 1, 3, 3, 3)}
    torch.save(
        {
            "network_weights": weights,
            "optimizer_state": {"state": {}, "param_groups": []},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [], "ema_fg_dice": [], "train_losses": [], "val_losses": []},
            "_best_ema": None,
            "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": fold, "dataset_json": dataset},
            "trainer_name": TRAINER,
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        path,
    )
    return path


def write_result_folder(
    results_root: Path,
    dataset: str = DATASET,
    trainer: str = TRAINER,
    plans_name: str = PLANS,
    folds=(0,),
    plans: dict | None = None,
    dataset_fields: dict | None = None,
    labels: dict | None = None,
) -> Path:
    """``results_root/<dataset>/<trainer>__<plans>__3d_fullres`` with plans.json, dataset.json and
    ``fold_X/checkpoint_final.pth`` for each fold; returns the result folder."""
    folder = results_root / dataset / f"{trainer}__{plans_name}__{CONFIGURATION}"
    folder.mkdir(parents=True)
    plans = plans or plans_json(dataset, plans_name)
    data = dataset_json(dataset, labels, **(dataset_fields or {}))
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(data, indent=2))
    (folder / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [[1.0, 1.0, 1.0]]}))
    for fold in folds:
        write_checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pth", plans, data, fold)
        (folder / f"fold_{fold}" / "validation").mkdir()
        (folder / f"fold_{fold}" / "validation" / "summary.json").write_text('{"foreground_mean": {"Dice": 0.8}}')
    return folder


def zip_results(results_root: Path, zip_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Zip every file under ``results_root`` with names relative to it, as ``export_pretrained_model`` does;
    ``extra`` adds members verbatim (name -> bytes)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(results_root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(results_root).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return zip_path
