"""Residual UNet encoder (nnU-Net v2 ``ResidualEncoder``, the encoder of its ResEnc presets M/L/XL).

Isensee et al., "nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation"
(MICCAI 2024), built as in dynamic-network-architectures 0.4 (``ResidualEncoderUNet``): a stem
(one Conv -> InstanceNorm -> LeakyReLU at full resolution, kernel of stage 0), then per stage
``n_blocks`` ResNet-D basic blocks (He et al., "Bag of Tricks", CVPR 2019), the first one strided.
The decoder is MaskMed's plain ``UNetDecoder``, as in nnU-Net. Module names are chosen so nnU-Net
weights map one-to-one (``MaskMedCore.nnunet.weights``): a block's skip is a Sequential whose
projection sits at index 1 after a pooling layer and at 0 without one, as in nnU-Net. Like the
plain encoder it is 2D or 3D by the length of its per-axis kernel sizes and strides.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from MaskMedCore.layers.conv_blocks import ConvNormAct, PerAxis, check_stage_lists, spatial_ops


class ResidualBlock(nn.Module):
    """ResNet-D basic block: ``act(norm(conv(act(norm(conv(x))))) + skip(x))``.

    The skip is the identity, or -- when the block strides or changes the channels -- an average pool
    with kernel = stride (ResNet-D keeps every input voxel, where a strided 1x1 conv would drop 7 of 8)
    followed by a 1x1 conv (no bias) + InstanceNorm. 2D or 3D by ``len(kernel_size)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: (kD, kH, kW) (2D: (kH, kW)) of both 3x3x3-like convs.
        stride: per-axis stride of the first conv and of the skip's pooling; None is all ones.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: PerAxis, stride: PerAxis | None = None
    ) -> None:
        super().__init__()
        dims = len(kernel_size)
        stride = (1,) * dims if stride is None else tuple(stride)
        self.conv1 = ConvNormAct(in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size, act=False)
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            skip.append(spatial_ops(dims).avg_pool(stride, stride))
        if in_channels != out_channels:
            skip.append(ConvNormAct(in_channels, out_channels, (1,) * dims, bias=False, act=False))
        self.skip = nn.Sequential(*skip)  # empty = identity
        self.act = nn.LeakyReLU(0.01, inplace=True)
        # nnU-Net's init_last_bn_before_add_to_0: each block starts as its skip, which trains deep stacks stably.
        nn.init.zeros_(self.conv2.norm.weight)
        nn.init.zeros_(self.conv2.norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, D, H, W) -> (B, C_out, D/sD, H/sH, W/sW); 2D: (B, C_in, H, W) -> (B, C_out, H/sH, W/sW)."""
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class ResidualUNetEncoder(nn.Module):
    """Same interface as ``UNetEncoder`` (skips finest first; ``features_per_stage``, ``kernel_sizes``,
    ``strides``), so the decoder, bridges and heads take either.

    Args:
        in_channels: input channels C.
        features_per_stage: output channels of each stage, finest first.
        kernel_sizes: (kD, kH, kW) per stage (the stem uses stage 0's); (kH, kW) for a 2D encoder.
        strides: (sD, sH, sW) (2D: (sH, sW)) per stage; stage 0 is all ones.
        n_blocks_per_stage: residual blocks per stage, e.g. nnU-Net ResEnc's (1, 3, 4, 6, 6, 6).
    """

    def __init__(
        self,
        in_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[PerAxis],
        strides: Sequence[PerAxis],
        n_blocks_per_stage: Sequence[int],
    ) -> None:
        super().__init__()
        self.spatial_dims = check_stage_lists(features_per_stage, kernel_sizes, strides)
        if len(n_blocks_per_stage) != len(features_per_stage) or min(n_blocks_per_stage) < 1:
            raise ValueError(
                f"n_blocks_per_stage {tuple(n_blocks_per_stage)} must give a count >= 1 for each of the "
                f"{len(features_per_stage)} stages"
            )
        self.stem = ConvNormAct(in_channels, features_per_stage[0], kernel_sizes[0])
        stages, prev = [], features_per_stage[0]
        for feat, kernel, stride, n in zip(features_per_stage, kernel_sizes, strides, n_blocks_per_stage):
            blocks = [ResidualBlock(prev, feat, kernel, stride)]
            blocks += [ResidualBlock(feat, feat, kernel) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            prev = feat
        self.stages = nn.ModuleList(stages)
        self.features_per_stage = tuple(features_per_stage)
        self.kernel_sizes = tuple(kernel_sizes)
        self.strides = tuple(strides)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (B, C, D, H, W) -> skips, finest first; skips[s]: (B, C_s, D_s, H_s, W_s), last = bottleneck.

        A 2D encoder takes (B, C, H, W) and returns (B, C_s, H_s, W_s) skips.
        """
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips
