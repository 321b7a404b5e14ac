"""The point-wise convolutional segmentation head (MaskMed §3.1, Fig. 1b, Eq. 1; nnU-Net's head).

One 1x1x1 Conv3d (2D network: 1x1 Conv2d) per decoder stage maps C_s features to K class logits.
Seen as a MaskMed head it has Q = K queries whose mask embeddings are the conv weights and whose class
embedding matrix is the fixed identity ``I_cls``: class k is exactly channel k. Its per-class
probabilities are therefore ``softmax(conv(F))`` — nnU-Net.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from MaskMedCore.layers.conv_blocks import spatial_ops
from MaskMedCore.models.outputs import MaskMedOutput


class PointwiseHead(nn.Module):
    """Args:
    stage_channels: decoder channels per stage, coarsest first.
    num_classes: K (background included).
    spatial_dims: 3 for (D, H, W) decoder features, 2 for (H, W) ones.
    """

    def __init__(self, stage_channels: Sequence[int], num_classes: int, spatial_dims: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        conv = spatial_ops(spatial_dims).conv
        self.seg_layers = nn.ModuleList(conv(c, num_classes, kernel_size=1, bias=True) for c in stage_channels)

    def identity_class_logits(self, batch: int, like: Tensor) -> Tensor:
        """``[I_cls | 0]``: (B, K, K+1), the fixed channel-to-class mapping (no no-object class)."""
        K = self.num_classes
        eye = torch.eye(K, K + 1, device=like.device, dtype=like.dtype)
        return eye.expand(batch, K, K + 1)

    def forward(self, features: list[Tensor], all_stages: bool = True) -> MaskMedOutput:
        """features: decoder outputs coarsest first, entry s (B, C_s, D_s, H_s, W_s) (2D: (B, C_s, H_s, W_s)).

        Returns a MaskMedOutput with Q = K; with ``all_stages`` False only the finest stage is computed.
        """
        stages = range(len(features)) if all_stages else [len(features) - 1]
        masks = [self.seg_layers[s](features[s]) for s in stages]  # (B, K, D_s, H_s, W_s) or (B, K, H_s, W_s)
        B = features[-1].shape[0]
        cls = self.identity_class_logits(B, masks[-1])
        finest = self.seg_layers[-1].weight  # (K, C_0, 1, 1, 1), 2D: (K, C_0, 1, 1)
        return MaskMedOutput(
            class_logits=cls,
            mask_logits=masks,
            stage_class_logits=[cls] * len(masks),
            class_embeddings=cls[..., :-1],
            mask_embeddings=finest.flatten(1).expand(B, -1, -1),
            decoupled=False,
        )
