"""The MaskMed network: UNet encoder -> bridge (FSAD-Transformer) -> UNet decoder -> head (MaskMed §3.4, Fig. 2a)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from MaskMedCore.errors import DataError
from MaskMedCore.models.outputs import MaskMedOutput
from MaskMedCore.models.residual_encoder import ResidualUNetEncoder
from MaskMedCore.models.unet_decoder import UNetDecoder
from MaskMedCore.models.unet_encoder import UNetEncoder


class MaskMed(nn.Module):
    """Encoder-decoder with an optional skip bridge and a MaskMed segmentation head.

    Build it with ``MaskMedCore.build_model(cfg)``; this class only wires the parts.

    Args:
        encoder: UNet encoder, plain or residual (returns skips finest first).
        decoder: UNet decoder (returns stage features coarsest first).
        bridge: module refining the coarsest skips (FSAD-Transformer etc.) or None.
        head: PointwiseHead or MaskedMultiScaleHead.
        in_channels: C expected in the input.
        total_stride: (D, H, W) factor the input size must divide by.
        deep_supervision: return every decoder stage's prediction (training) or only the finest.
    """

    def __init__(
        self,
        encoder: UNetEncoder | ResidualUNetEncoder,
        decoder: UNetDecoder,
        bridge: nn.Module | None,
        head: nn.Module,
        in_channels: int,
        total_stride: tuple[int, int, int],
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.bridge = bridge
        self.decoder = decoder
        self.head = head
        self.in_channels = in_channels
        self.total_stride = total_stride
        self.deep_supervision = deep_supervision

    def check_input(self, x: Tensor) -> None:
        """Raise DataError unless x is (B, C, D, H, W) with the right C and a divisible size."""
        if x.dim() != 5:
            raise DataError(f"network input has shape {tuple(x.shape)}; expected 5 dims (B, C, D, H, W)")
        if x.shape[1] != self.in_channels:
            raise DataError(f"network input has {x.shape[1]} channel(s); this model expects {self.in_channels}")
        bad = [f"{a}={s}" for a, s, t in zip("DHW", x.shape[2:], self.total_stride) if s % t]
        if bad:
            raise DataError(
                f"network input size {tuple(x.shape[2:])} is not divisible by the total stride "
                f"{self.total_stride} ({', '.join(bad)}); pad the patch to a multiple"
            )

    def forward(self, x: Tensor) -> MaskMedOutput:
        """x: (B, C, D, H, W) float -> MaskMedOutput (see ``MaskMedCore.models.outputs``)."""
        self.check_input(x)
        skips = self.encoder(x)
        if self.bridge is not None:
            skips = self.bridge(skips)
        features = self.decoder(skips)
        return self.head(features, all_stages=self.deep_supervision)

    def cnn_modules(self) -> list[nn.Module]:
        """The convolutional parts (the UNet, and the point-wise head when used)."""
        from MaskMedCore.models.heads.pointwise import PointwiseHead

        modules: list[nn.Module] = [self.encoder, self.decoder]
        if isinstance(self.head, PointwiseHead):
            modules.append(self.head)
        return modules

    def param_groups(
        self, lr: float, transformer_lr_ratio: float = 0.1, weight_decay: float = 3e-5
    ) -> list[dict[str, Any]]:
        """Optimiser parameter groups with the paper's CNN : Transformer learning-rate ratio (Table 5, Eq. 7).

        The UNet (and the point-wise head) is the CNN group; the bridge and every query-based
        head are the Transformer group. Each group carries ``lr_scale`` so a per-group poly
        scheduler keeps the ratio for the whole run (nnU-Net's PolyLRScheduler would not).

        Returns:
            [{"name": "cnn", ...}, {"name": "transformer", ...}] (empty groups are omitted).
        """
        cnn_ids = {id(p) for m in self.cnn_modules() for p in m.parameters()}
        cnn = [p for p in self.parameters() if id(p) in cnn_ids]
        transformer = [p for p in self.parameters() if id(p) not in cnn_ids]
        groups = []
        for name, params, scale in (("cnn", cnn, 1.0), ("transformer", transformer, transformer_lr_ratio)):
            if params:
                groups.append(
                    {"name": name, "params": params, "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay}
                )
        return groups
