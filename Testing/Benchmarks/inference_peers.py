"""The peers of ``bench_inference.py``, built from the real PyPI packages, never re-implemented.

- nnU-Net v2: a trained-model folder in nnU-Net's own on-disk format (``plans.json``,
  ``dataset.json``, ``fold_0/checkpoint_final.pth``), so ``nnUNetPredictor`` loads it exactly as it
  loads a model trained with ``nnUNetv2_train``: trainer lookup, ``get_network_from_plans`` building
  dynamic-network-architectures' ``PlainConvUNet``, its preprocessor (crop, CTNormalization,
  resampling) and its export (resampling back, argmax, uncropping).
- MONAI: ``sliding_window_inference`` with a network and mirroring test-time augmentation wrapped
  around it by hand, because MONAI's inferer has no mirroring TTA of its own.

All arrays follow SimpleITK's array order: a volume is ``(D, H, W)`` = (z, y, x), spacing likewise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

NNUNET_CONFIGURATION = "3d_fullres"
NNUNET_TRAINER = "nnUNetTrainer"


def nnunet_architecture(
    features_per_stage: Sequence[int],
    kernel_sizes: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
    n_conv_per_stage: int,
    n_conv_per_stage_decoder: int,
) -> dict:
    """The ``architecture`` entry nnU-Net's ``ExperimentPlanner`` writes for a 3D ``PlainConvUNet``
    (conv bias on, affine InstanceNorm3d eps 1e-5, in-place LeakyReLU, no dropout)."""
    n = len(features_per_stage)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [int(f) for f in features_per_stage],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [list(map(int, k)) for k in kernel_sizes],
            "strides": [list(map(int, s)) for s in strides],
            "n_conv_per_stage": [int(n_conv_per_stage)] * n,
            "n_conv_per_stage_decoder": [int(n_conv_per_stage_decoder)] * (n - 1),
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


def build_plain_unet(architecture: dict, in_channels: int, num_classes: int) -> nn.Module:
    """The network exactly as ``nnUNetTrainer.build_network_architecture`` builds it for inference
    (``get_network_from_plans``, He initialisation, deep supervision off)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(
        architecture["network_class_name"],
        architecture["arch_kwargs"],
        architecture["_kw_requires_import"],
        in_channels,
        num_classes,
        allow_init=True,
        deep_supervision=False,
    )


def write_nnunet_model_folder(
    folder: Path,
    *,
    architecture: dict,
    labels: dict[str, int],
    patch_size: Sequence[int],
    spacing: Sequence[float],
    median_shape: Sequence[int],
    intensity: dict[str, float],
    seed: int,
) -> int:
    """Write a one-fold nnU-Net v2 model folder with random weights; return the parameter count.

    The plan's spacing is the benchmark volume's spacing, so nnU-Net's preprocessing and export do
    not resample (``compute_new_shape`` returns the input shape and ``resample_data_or_seg`` skips
    equal shapes); ``CTNormalization`` gets ``intensity`` (the dataset fingerprint's foreground
    ``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5``), the same numbers MaskMed's plan uses.
    """

    def resampling(is_seg: bool, order: int) -> dict:
        return {"is_seg": is_seg, "order": order, "order_z": 0, "force_separate_z": None}

    dataset = {
        "channel_names": {"0": "CT"},
        "labels": dict(labels),
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    configuration = {
        "data_identifier": f"nnUNetPlans_{NNUNET_CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [int(p) for p in patch_size],
        "median_image_size_in_voxels": [int(s) for s in median_shape],
        "spacing": [float(s) for s in spacing],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling(False, 3),
        "resampling_fn_seg_kwargs": resampling(True, 1),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": resampling(False, 1),
        "architecture": architecture,
        "batch_dice": False,
    }
    plans = {
        "dataset_name": "Dataset999_BenchInference",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": [int(s) for s in median_shape],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {NNUNET_CONFIGURATION: configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(intensity)},
    }
    torch.manual_seed(seed)
    network = build_plain_unet(architecture, 1, len(labels))
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    # The keys nnUNetPredictor.initialize_from_trained_model_folder reads from a trainer checkpoint.
    checkpoint = {
        "network_weights": network.state_dict(),
        "trainer_name": NNUNET_TRAINER,
        "init_args": {"plans": plans, "configuration": NNUNET_CONFIGURATION, "fold": 0, "dataset_json": dataset},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return sum(p.numel() for p in network.parameters())


class MirroredNetwork(nn.Module):
    """``net`` with nnU-Net-style mirroring TTA, for MONAI's inferer, which has none built in.

    Every subset of the spatial axes is flipped, predicted and flipped back, and the logits are
    averaged (nnU-Net averages logits; 8 passes for three axes). On CUDA the network runs under
    bfloat16 autocast like MaskMed's predictor; the result is float32 either way.
    """

    def __init__(self, net: nn.Module, mirror: bool) -> None:
        super().__init__()
        self.net = net
        dims = (2, 3, 4) if mirror else ()
        self.flip_sets = [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, d, h, w) tiles -> (B, K, d, h, w) float32 logits."""
        total = None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            for dims in self.flip_sets:
                pred = self.net(torch.flip(x, dims) if dims else x).float()
                pred = torch.flip(pred, dims) if dims else pred
                total = pred if total is None else total.add_(pred)
        return total / len(self.flip_sets)


def monai_segment(
    net: nn.Module,
    volume: Tensor,
    roi_size: Sequence[int],
    overlap: float,
    sw_batch_size: int,
) -> Tensor:
    """MONAI whole-volume segmentation: Gaussian-weighted ``sliding_window_inference`` + argmax.

    Args:
        net: maps (B, C, d, h, w) tiles to (B, K, d, h, w) logits (a ``MirroredNetwork``).
        volume: (1, C, D, H, W) normalised input, on the device the network runs on.
        roi_size: tile size (d, h, w).
        overlap: fraction of a tile shared with its neighbour (MONAI steps by ``roi * (1 - overlap)``).
        sw_batch_size: tiles per network call.

    Returns:
        (D, H, W) uint8 labels on the CPU.
    """
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            volume,
            roi_size=tuple(roi_size),
            sw_batch_size=sw_batch_size,
            predictor=net,
            overlap=overlap,
            mode="gaussian",
            sigma_scale=0.125,
        )  # (1, K, D, H, W) float32 on the volume's device
        return logits[0].argmax(0).to(torch.uint8).cpu()
