"""nnU-Net's conv building blocks: Conv -> InstanceNorm -> LeakyReLU, stacked per stage, in 2D or 3D.

Follows dynamic-network-architectures' ``ConvDropoutNormReLU`` / ``StackedConvBlocks`` as used by
nnU-Net v2's ``PlainConvUNet`` (conv bias on, InstanceNorm eps 1e-5 affine, LeakyReLU 0.01). As there
(``convert_dim_to_conv_op``), one code path serves both: the operators are chosen by the number of
spatial axes, which is the length of the per-axis kernel sizes and strides ((kH, kW) pairs make a 2D
network, (kD, kH, kW) triplets a 3D one; issue 13).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

PerAxis = tuple[int, ...]
"""One integer per spatial axis: (D, H, W) in 3D, (H, W) in 2D."""


class SpatialOps(NamedTuple):
    """The torch operators of one dimensionality."""

    conv: type[nn.Module]
    transposed_conv: type[nn.Module]
    instance_norm: type[nn.Module]
    avg_pool: type[nn.Module]


_OPS = {
    2: SpatialOps(nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d, nn.AvgPool2d),
    3: SpatialOps(nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d, nn.AvgPool3d),
}


def spatial_ops(spatial_dims: int) -> SpatialOps:
    """Conv, transposed conv, instance norm and average pool for 2 or 3 spatial axes.

    Raises:
        ValueError: for any other number of axes.
    """
    if spatial_dims not in _OPS:
        raise ValueError(f"spatial_dims is {spatial_dims!r}; networks are 2D or 3D (expected 2 or 3)")
    return _OPS[spatial_dims]


class ConvNormAct(nn.Module):
    """Conv (padding keeps the size up to the stride) -> InstanceNorm -> LeakyReLU, 2D or 3D.

    The dimensionality is ``len(kernel_size)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: (kD, kH, kW) or (kH, kW), odd.
        stride: per-axis stride, as long as ``kernel_size``; None is all ones.
        bias: conv bias (nnU-Net's plans set it; the 1x1 projection of a residual skip has none).
        act: apply the LeakyReLU; a residual block's last conv and its skip projection leave it out
            (the nonlinearity comes after the addition).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: PerAxis,
        stride: PerAxis | None = None,
        bias: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        ops = spatial_ops(len(kernel_size))
        stride = (1,) * len(kernel_size) if stride is None else tuple(stride)
        if len(stride) != len(kernel_size):
            raise ValueError(f"stride {stride} and kernel_size {tuple(kernel_size)} must have one entry per axis")
        padding = tuple((k - 1) // 2 for k in kernel_size)
        self.conv = ops.conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm = ops.instance_norm(out_channels, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True) if act else nn.Identity()  # no parameters either way

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, D, H, W) or (B, C_in, H, W) -> (B, C_out, D/sD, H/sH, W/sW) or (B, C_out, H/sH, W/sW)."""
        return self.act(self.norm(self.conv(x)))


class StackedConvBlocks(nn.Sequential):
    """``n`` ConvNormAct blocks; only the first one strides (nnU-Net's strided-conv pooling)."""

    def __init__(
        self, n: int, in_channels: int, out_channels: int, kernel_size: PerAxis, first_stride: PerAxis
    ) -> None:
        blocks = [ConvNormAct(in_channels, out_channels, kernel_size, first_stride)]
        blocks += [ConvNormAct(out_channels, out_channels, kernel_size) for _ in range(n - 1)]
        super().__init__(*blocks)


_HE_INIT_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def init_he_(module: nn.Module, neg_slope: float = 1e-2) -> None:
    """nnU-Net's ``InitWeights_He``: kaiming-normal conv weights (a = 0.01), zero conv biases (2D and 3D)."""
    for m in module.modules():
        if isinstance(m, _HE_INIT_TYPES):
            nn.init.kaiming_normal_(m.weight, a=neg_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_stage_lists(features: Sequence[int], kernel_sizes: Sequence[PerAxis], strides: Sequence[PerAxis]) -> int:
    """Internal consistency check (configs are validated earlier; this guards direct use).

    Returns:
        The number of spatial axes (2 or 3) shared by every kernel size and stride.
    """
    if not len(features) == len(kernel_sizes) == len(strides):
        raise ValueError(
            f"features ({len(features)}), kernel_sizes ({len(kernel_sizes)}) and strides ({len(strides)}) "
            "must have one entry per stage"
        )
    lengths = {len(t) for t in (*kernel_sizes, *strides)}
    if len(lengths) != 1:
        raise ValueError(
            f"kernel_sizes {tuple(kernel_sizes)} and strides {tuple(strides)} must all be (H, W) pairs (2D) "
            "or all (D, H, W) triplets (3D)"
        )
    spatial_dims = lengths.pop()
    spatial_ops(spatial_dims)  # raises for anything but 2 or 3 axes
    return spatial_dims
