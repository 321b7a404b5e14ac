"""Plain conv UNet encoder (nnU-Net v2 ``PlainConvEncoder``; MaskMed §3.4 uses it as backbone).

Per stage: ``n_conv`` x (Conv -> InstanceNorm -> LeakyReLU); the first conv of stages 1.. is
strided (no pooling layers). Per-stage, per-axis kernels and strides make anisotropic topologies
(e.g. strides (1, 2, 2) for thick-slice CT) plain config; (H, W) pairs instead of (D, H, W)
triplets make the same encoder 2D.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from MaskMedCore.layers.conv_blocks import PerAxis, StackedConvBlocks, check_stage_lists


class UNetEncoder(nn.Module):
    """Args:
    in_channels: input channels C.
    features_per_stage: output channels of each stage, finest first.
    kernel_sizes: (kD, kH, kW) per stage, or (kH, kW) for a 2D encoder.
    strides: (sD, sH, sW) (2D: (sH, sW)) per stage; stage 0 is all ones.
    n_conv_per_stage: conv blocks per stage.
    """

    def __init__(
        self,
        in_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[PerAxis],
        strides: Sequence[PerAxis],
        n_conv_per_stage: int = 2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_stage_lists(features_per_stage, kernel_sizes, strides)
        stages, prev = [], in_channels
        for feat, kernel, stride in zip(features_per_stage, kernel_sizes, strides):
            stages.append(StackedConvBlocks(n_conv_per_stage, prev, feat, kernel, stride))
            prev = feat
        self.stages = nn.ModuleList(stages)
        self.features_per_stage = tuple(features_per_stage)
        self.kernel_sizes = tuple(kernel_sizes)
        self.strides = tuple(strides)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (B, C, D, H, W) -> skips, finest first; skips[s]: (B, C_s, D_s, H_s, W_s), last = bottleneck.

        A 2D encoder takes (B, C, H, W) and returns (B, C_s, H_s, W_s) skips.
        """
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips
