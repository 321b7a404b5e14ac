"""The peers' real networks and losses, built with the same topology as a MaskMed config.

nnU-Net v2's ``PlainConvUNet`` (dynamic-network-architectures) with nnU-Net's own building
blocks (Conv3d with bias, InstanceNorm3d affine eps 1e-5, LeakyReLU 0.01) and its training loss
(``DC_and_CE_loss`` + ``DeepSupervisionWrapper`` with nnU-Net's weights, the lowest output
zeroed), and MONAI's ``SwinUNETR`` with ``DiceCELoss``. Nothing here re-implements a peer: the
classes are imported from the installed packages, which are only needed for benchmarks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from MaskMedCore.config import ModelConfig


def plain_conv_unet(cfg: ModelConfig, deep_supervision: bool = True) -> nn.Module:
    """nnU-Net's PlainConvUNet with the stages/features/kernels/strides/convs of ``cfg``."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(
        input_channels=cfg.in_channels,
        n_stages=cfg.n_stages,
        features_per_stage=list(cfg.features_per_stage),
        conv_op=nn.Conv3d,
        kernel_sizes=[list(k) for k in cfg.kernel_sizes],
        strides=[list(s) for s in cfg.strides],
        n_conv_per_stage=[cfg.n_conv_per_stage] * cfg.n_stages,
        num_classes=cfg.num_classes,
        n_conv_per_stage_decoder=[cfg.n_conv_per_stage_decoder] * (cfg.n_stages - 1),
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None,
        dropout_op_kwargs=None,
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=deep_supervision,
    )


class NnUNetLoss(nn.Module):
    """nnU-Net v2's default training loss for label maps, as ``nnUNetTrainer._build_loss`` makes it.

    Takes the network's deep-supervision list (finest first) and a (B, D, H, W) label map; the
    targets of coarser outputs are the label map subsampled by the cumulative stride (nnU-Net's
    data loader downsamples with nearest-neighbour-like ``DownsampleSegForDSTransform``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        base = DC_and_CE_loss(
            {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
            {},
            weight_ce=1,
            weight_dice=1,
            ignore_label=None,
            dice_class=MemoryEfficientSoftDiceLoss,
        )
        n_outputs = cfg.n_stages - 1
        weights = np.array([1 / 2**i for i in range(n_outputs)])
        weights[-1] = 0
        self.loss = DeepSupervisionWrapper(base, weights / weights.sum())
        self.strides = cfg.total_strides()[:n_outputs]

    def forward(self, outputs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        targets = [labels[:, None, :: s[0], :: s[1], :: s[2]] for s in self.strides]
        return self.loss(outputs, targets)


def swin_unetr(cfg: ModelConfig, feature_size: int = 48) -> nn.Module:
    """MONAI's SwinUNETR (its default width 48) for the same channels and classes."""
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(in_channels=cfg.in_channels, out_channels=cfg.num_classes, feature_size=feature_size)


class MonaiDiceCE(nn.Module):
    """MONAI's ``DiceCELoss`` on softmax outputs and a (B, D, H, W) label map."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, labels[:, None])
