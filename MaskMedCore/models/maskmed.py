"""The MaskMed network: UNet encoder -> bridge (FSAD-Transformer) -> UNet decoder -> head (MaskMed §3.4, Fig. 2a).

The network is 3D or 2D (issue 13), set by its topology (``len(total_stride)``). A 2D network takes
(B, C, H, W) images, and also (B, C, D, H, W) volumes, which it segments slice by slice: the slices are
folded into the batch and the output unfolded with ``MaskMedOutput.slices_to_volume``, so sliding-window
inference treats it like a 3D network (tiles of depth 1 in practice).
"""

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
        head: PointwiseHead, MaskedMultiScaleHead or QTSegHead.
        in_channels: C expected in the input.
        total_stride: (D, H, W) factor the input size must divide by; an (H, W) pair makes a 2D network.
        deep_supervision: return every decoder stage's prediction (training) or only the finest.

    Attributes:
        spatial_dims: 3 for a 3D network, 2 for a 2D one.
    """

    def __init__(
        self,
        encoder: UNetEncoder | ResidualUNetEncoder,
        decoder: UNetDecoder,
        bridge: nn.Module | None,
        head: nn.Module,
        in_channels: int,
        total_stride: tuple[int, ...],
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.bridge = bridge
        self.decoder = decoder
        self.head = head
        self.in_channels = in_channels
        self.total_stride = tuple(total_stride)
        self.spatial_dims = len(self.total_stride)
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"total_stride {self.total_stride} must have 2 (H, W) or 3 (D, H, W) entries")
        self.deep_supervision = deep_supervision

    def check_input(self, x: Tensor) -> None:
        """Raise DataError unless x fits: (B, C, D, H, W) for a 3D network, (B, C, H, W) or a (B, C, D, H, W)
        volume for a 2D one, with the right C and (H, W) or (D, H, W) divisible by the total stride."""
        if self.spatial_dims == 3 and x.dim() != 5:
            raise DataError(f"network input has shape {tuple(x.shape)}; this 3D network expects 5 dims (B, C, D, H, W)")
        if self.spatial_dims == 2 and x.dim() not in (4, 5):
            raise DataError(
                f"network input has shape {tuple(x.shape)}; this 2D network expects (B, C, H, W) images or "
                "(B, C, D, H, W) volumes (segmented slice by slice)"
            )
        if x.shape[1] != self.in_channels:
            raise DataError(f"network input has {x.shape[1]} channel(s); this model expects {self.in_channels}")
        # A 2D network strides H and W only; a volume's D is its slice count.
        spatial = tuple(x.shape[-self.spatial_dims :])
        axes = "DHW"[-self.spatial_dims :]
        bad = [f"{a}={s}" for a, s, t in zip(axes, spatial, self.total_stride) if s % t]
        if bad:
            raise DataError(
                f"network input size {spatial} ({', '.join(axes)}) is not divisible by the total stride "
                f"{self.total_stride} ({', '.join(bad)}); pad the patch to a multiple"
            )

    def forward(self, x: Tensor) -> MaskMedOutput:
        """Segment a batch.

        Args:
            x: (B, C, D, H, W) float for a 3D network; (B, C, H, W) or (B, C, D, H, W) for a 2D one.

        Returns:
            MaskMedOutput (see ``MaskMedCore.models.outputs``): mask logits (B, Q, D_s, H_s, W_s), or
            (B, Q, H_s, W_s) for a 2D network on images. A 2D network on a volume runs its B*D slices as
            one batch and returns ``out.slices_to_volume(B, D)``: (B, Q, D, H_s, W_s) mask logits and
            per-query tensors with ``query_slices = D``.

        Raises:
            DataError: if ``x`` does not fit the network (see :meth:`check_input`).
        """
        self.check_input(x)
        if self.spatial_dims == 2 and x.dim() == 5:
            B, C, D, H, W = x.shape
            # (B, C, D, H, W) -> (B, D, C, H, W) -> (B*D, C, H, W): volume-major, slice d of volume b at b*D + d
            slices = x.transpose(1, 2).reshape(B * D, C, H, W)
            return self._forward(slices).slices_to_volume(B, D)
        return self._forward(x)

    def _forward(self, x: Tensor) -> MaskMedOutput:
        """x: (B, C, D, H, W) (2D network: (B, C, H, W)) already checked -> the network's output."""
        skips = self.encoder(x)
        if self.bridge is not None:
            skips = self.bridge(skips)
        features = self.decoder(skips)
        if getattr(self.head, "uses_encoder_skips", False):
            # QTSeg's decoder also reads the encoder outputs (after the bridge), finest first.
            return self.head(features, all_stages=self.deep_supervision, skips=skips)
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
