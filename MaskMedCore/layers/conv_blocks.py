"""nnU-Net's conv building blocks: Conv3d -> InstanceNorm3d -> LeakyReLU, stacked per stage.

Follows dynamic-network-architectures' ``ConvDropoutNormReLU`` / ``StackedConvBlocks`` as used by
nnU-Net v2's ``PlainConvUNet`` (conv bias on, InstanceNorm eps 1e-5 affine, LeakyReLU 0.01).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

Triplet = tuple[int, int, int]


class ConvNormAct(nn.Module):
    """Conv3d (padding keeps the size up to the stride) -> InstanceNorm3d -> LeakyReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: (kD, kH, kW), odd.
        stride: (sD, sH, sW).
        bias: conv bias (nnU-Net's plans set it; the 1x1 projection of a residual skip has none).
        act: apply the LeakyReLU; a residual block's last conv and its skip projection leave it out
            (the nonlinearity comes after the addition).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Triplet,
        stride: Triplet = (1, 1, 1),
        bias: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        padding = tuple((k - 1) // 2 for k in kernel_size)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm = nn.InstanceNorm3d(out_channels, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True) if act else nn.Identity()  # no parameters either way

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, D, H, W) -> (B, C_out, D/sD, H/sH, W/sW)."""
        return self.act(self.norm(self.conv(x)))


class StackedConvBlocks(nn.Sequential):
    """``n`` ConvNormAct blocks; only the first one strides (nnU-Net's strided-conv pooling)."""

    def __init__(
        self, n: int, in_channels: int, out_channels: int, kernel_size: Triplet, first_stride: Triplet
    ) -> None:
        blocks = [ConvNormAct(in_channels, out_channels, kernel_size, first_stride)]
        blocks += [ConvNormAct(out_channels, out_channels, kernel_size) for _ in range(n - 1)]
        super().__init__(*blocks)


def init_he_(module: nn.Module, neg_slope: float = 1e-2) -> None:
    """nnU-Net's ``InitWeights_He``: kaiming-normal conv weights (a = 0.01), zero conv biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=neg_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_stage_lists(features: Sequence[int], kernel_sizes: Sequence[Triplet], strides: Sequence[Triplet]) -> None:
    """Internal consistency check (configs are validated earlier; this guards direct use)."""
    if not len(features) == len(kernel_sizes) == len(strides):
        raise ValueError(
            f"features ({len(features)}), kernel_sizes ({len(kernel_sizes)}) and strides ({len(strides)}) "
            "must have one entry per stage"
        )
