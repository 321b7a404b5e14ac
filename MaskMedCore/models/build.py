"""The one place that maps a ``ModelConfig`` to modules (3D, or 2D when the config's kernels/strides are pairs)."""

from __future__ import annotations

from torch import nn

from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.layers.conv_blocks import init_he_
from MaskMedCore.models.bridges import build_bridge
from MaskMedCore.models.heads.masked_multiscale_head import MaskedMultiScaleHead
from MaskMedCore.models.heads.pointwise import PointwiseHead
from MaskMedCore.models.maskmed import MaskMed
from MaskMedCore.models.residual_encoder import ResidualUNetEncoder
from MaskMedCore.models.unet_decoder import UNetDecoder
from MaskMedCore.models.unet_encoder import UNetEncoder


def build_model(cfg: ModelConfig) -> MaskMed:
    """Build the MaskMed network (or one of its ablation variants) described by ``cfg``.

    ``cfg.spatial_dims`` (2 for (H, W) kernel/stride pairs, 3 for triplets) picks the operators of every
    part; the code path is the same.
    """
    encoder: UNetEncoder | ResidualUNetEncoder
    if cfg.encoder == "residual":
        assert cfg.n_blocks_per_stage is not None  # ModelConfig validates this
        encoder = ResidualUNetEncoder(
            cfg.in_channels, cfg.features_per_stage, cfg.kernel_sizes, cfg.strides, cfg.n_blocks_per_stage
        )
    else:
        encoder = UNetEncoder(
            cfg.in_channels, cfg.features_per_stage, cfg.kernel_sizes, cfg.strides, cfg.n_conv_per_stage
        )
    decoder = UNetDecoder(cfg.features_per_stage, cfg.kernel_sizes, cfg.strides, cfg.n_conv_per_stage_decoder)
    init_he_(encoder)
    init_he_(decoder)
    bridge = build_bridge(
        cfg.bridge,
        cfg.features_per_stage,
        query_stages=cfg.bridge_query_stages,
        dim=cfg.bridge_dim,
        heads=cfg.bridge_heads,
        points=cfg.bridge_points,
        layers=cfg.bridge_layers,
        ffn_dim=cfg.bridge_ffn_dim,
        dropout=cfg.dropout,
        spatial_dims=cfg.spatial_dims,
    )
    head: nn.Module
    if cfg.head == "pointwise":
        head = PointwiseHead(decoder.output_channels, cfg.num_classes, spatial_dims=cfg.spatial_dims)
        init_he_(head)
    elif cfg.head == "qtseg":
        # Imported here: QTSeg is an ablation baseline the other heads do not need.
        from MaskMedCore.models.heads.qtseg_head import QTSegHead

        head = QTSegHead(
            decoder_channels=decoder.output_channels,
            encoder_channels=cfg.features_per_stage,
            num_classes=cfg.num_classes,
            spatial_dims=cfg.spatial_dims,
            dim=cfg.head_dim,
            heads=cfg.head_heads,
            ffn_dim=cfg.head_ffn_dim,
            layers_per_stage=cfg.head_layers_per_stage,
            dropout=cfg.dropout,
        )
    else:
        head = MaskedMultiScaleHead(
            decoder.output_channels,
            num_queries=cfg.queries_count,
            num_classes=cfg.num_classes,
            variant=cfg.head,
            shared_queries=cfg.queries == "shared",
            masked_attention=cfg.masked_attention,
            dim=cfg.head_dim,
            heads=cfg.head_heads,
            ffn_dim=cfg.head_ffn_dim,
            layers_per_stage=cfg.head_layers_per_stage,
            max_tokens=cfg.head_max_tokens,
            dropout=cfg.dropout,
            box_head=cfg.box_head,
            case_task_classes=[len(classes) for _, classes in cfg.case_tasks],
            spatial_dims=cfg.spatial_dims,
        )
    return MaskMed(
        encoder,
        decoder,
        bridge,
        head,
        in_channels=cfg.in_channels,
        total_stride=cfg.total_strides()[-1],
        deep_supervision=cfg.deep_supervision,
    )
