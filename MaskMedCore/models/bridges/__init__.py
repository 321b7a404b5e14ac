"""Encoder-decoder skip bridges (MaskMed §3.3, appendix B): dense, deformable and FSAD Transformers."""

from MaskMedCore.models.bridges.builder import BRIDGE_KINDS, build_bridge
from MaskMedCore.models.bridges.deformable_bridge import DeformableBridge, DeformableEncoderLayer
from MaskMedCore.models.bridges.dense_bridge import DenseBridge

__all__ = ["BRIDGE_KINDS", "DeformableBridge", "DeformableEncoderLayer", "DenseBridge", "build_bridge"]
