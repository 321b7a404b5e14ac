"""UNet decoder (nnU-Net v2 ``UNetDecoder`` without its seg layers; MaskMed §3.4).

From the bottleneck up, each stage: transposed conv (kernel = stride = that stage's stride) ->
concatenate the encoder skip -> ``n_conv`` x ConvNormAct. The per-stage features are returned
(coarsest first) for the segmentation head, which owns every output layer. 2D or 3D by the length
of the per-axis kernel sizes and strides, as the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from MaskMedCore.layers.conv_blocks import PerAxis, StackedConvBlocks, check_stage_lists, spatial_ops


class UNetDecoder(nn.Module):
    """Args:
    features_per_stage: encoder channels per stage, finest first.
    kernel_sizes: encoder kernels per stage (decoder stage s reuses stage s's kernel); (D, H, W) or (H, W).
    strides: encoder strides per stage, as long as the kernels.
    n_conv_per_stage: conv blocks per decoder stage.
    """

    def __init__(
        self,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[PerAxis],
        strides: Sequence[PerAxis],
        n_conv_per_stage: int = 2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_stage_lists(features_per_stage, kernel_sizes, strides)
        transposed_conv = spatial_ops(self.spatial_dims).transposed_conv
        ones = (1,) * self.spatial_dims
        n = len(features_per_stage)
        ups, blocks = [], []
        for s in range(n - 1, 0, -1):  # from the bottleneck (stage n-1) up to stage 1
            below, above = features_per_stage[s], features_per_stage[s - 1]
            ups.append(transposed_conv(below, above, kernel_size=strides[s], stride=strides[s], bias=True))
            blocks.append(StackedConvBlocks(n_conv_per_stage, 2 * above, above, kernel_sizes[s - 1], ones))
        self.upsamples = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        # Channels of each decoder output, coarsest first (decoder output j sits at stage n-2-j).
        self.output_channels = tuple(features_per_stage[s - 1] for s in range(n - 1, 0, -1))

    def forward(self, skips: list[Tensor]) -> list[Tensor]:
        """skips: encoder outputs finest first (bottleneck last).

        Returns:
            decoder features, coarsest first; entry j: (B, C_{n-2-j}, D, H, W) of stage n-2-j
            ((B, C_{n-2-j}, H, W) in 2D), the last one at input resolution.
        """
        x = skips[-1]
        outputs = []
        for j, (up, block) in enumerate(zip(self.upsamples, self.blocks)):
            x = block(torch.cat([up(x), skips[-(j + 2)]], dim=1))
            outputs.append(x)
        return outputs
