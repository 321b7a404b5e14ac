"""nnU-Net v2 ``PlainConvUNet`` / ``ResidualEncoderUNet`` weights <-> MaskMed's UNet (point-wise head, no bridge).

MaskMed's encoder, decoder and point-wise head are nnU-Net's blocks with other module names
(``MaskMedCore.layers.conv_blocks``), so a state dict maps one-to-one:

=============================================  =======================================
nnU-Net (dynamic-network-architectures 0.4)    MaskMed
=============================================  =======================================
encoder.stages.{s}.0.convs.{i}.conv.*          encoder.stages.{s}.{i}.conv.*
encoder.stages.{s}.0.convs.{i}.norm.*          encoder.stages.{s}.{i}.norm.*
decoder.transpconvs.{j}.*                      decoder.upsamples.{j}.*
decoder.stages.{j}.convs.{i}.conv/norm.*       decoder.blocks.{j}.{i}.conv/norm.*
decoder.seg_layers.{j}.*                       head.seg_layers.{j}.*
ResidualEncoderUNet (``encoder="residual"``):
encoder.stem.convs.0.conv/norm.*               encoder.stem.conv/norm.*
encoder.stages.{s}.blocks.{b}.{m}.conv/norm.*  encoder.stages.{s}.{b}.{m}.conv/norm.*
=============================================  =======================================

where ``{m}`` is ``conv1``, ``conv2`` or the skip projection ``skip.{0,1}`` (index 1 after an average
pool, 0 without one: the same Sequential in both). The decoder is the same for both networks.

nnU-Net's state dict also holds aliases of the same tensors (``...convs.{i}.all_modules.{0,1}.*``
and ``decoder.encoder.*``); they are checked to equal the primary names and then dropped. With
conv pooling (nnU-Net's default) a stage's Sequential has the StackedConvBlocks at index 0; max/avg
pooling stages (index 1) are accepted too.
"""

from __future__ import annotations

import re

import torch

from MaskMedCore.nnunet.result_folder import NnUNetModelError

_ENCODER = re.compile(r"^encoder\.stages\.(\d+)\.(\d+)\.convs\.(\d+)\.(conv|norm)\.(weight|bias)$")
_DECODER = re.compile(r"^decoder\.stages\.(\d+)\.convs\.(\d+)\.(conv|norm)\.(weight|bias)$")
_TRANSP = re.compile(r"^decoder\.transpconvs\.(\d+)\.(weight|bias)$")
_SEG = re.compile(r"^decoder\.seg_layers\.(\d+)\.(weight|bias)$")
_STEM = re.compile(r"^encoder\.stem\.convs\.0\.(conv|norm)\.(weight|bias)$")
_BLOCK = re.compile(r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\.(conv1|conv2|skip\.\d)\.(conv|norm)\.(weight|bias)$")
_ALIAS = re.compile(r"(\.all_modules\.\d+\.)|(^decoder\.encoder\.)")


def nnunet_to_maskmed_state(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a ``PlainConvUNet`` or ``ResidualEncoderUNet`` state dict to MaskMed's (point-wise head) names.

    Keys of both encoders are recognised here; whether they fit the network of plans.json is checked
    when the state is loaded (strict) into the network built from it.

    Raises:
        NnUNetModelError: a key that is part of neither network, or an alias that differs from its
            primary tensor (the file was edited).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _ALIAS.search(key):
            continue
        if m := _ENCODER.match(key):
            stage, _, conv, part, kind = m.groups()
            out[f"encoder.stages.{stage}.{conv}.{part}.{kind}"] = value
        elif m := _STEM.match(key):
            out[f"encoder.stem.{m[1]}.{m[2]}"] = value
        elif m := _BLOCK.match(key):
            stage, block, module, part, kind = m.groups()
            out[f"encoder.stages.{stage}.{block}.{module}.{part}.{kind}"] = value
        elif m := _DECODER.match(key):
            stage, conv, part, kind = m.groups()
            out[f"decoder.blocks.{stage}.{conv}.{part}.{kind}"] = value
        elif m := _TRANSP.match(key):
            out[f"decoder.upsamples.{m[1]}.{m[2]}"] = value
        elif m := _SEG.match(key):
            out[f"head.seg_layers.{m[1]}.{m[2]}"] = value
        else:
            raise NnUNetModelError(
                f"{source}: network weight '{key}' is not part of nnU-Net's PlainConvUNet or ResidualEncoderUNet; "
                "the checkpoint was made with another network class"
            )
    _check_aliases(state, source)
    return out


def maskmed_to_nnunet_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse for the primary names (no aliases): MaskMed UNet + point-wise head -> PlainConvUNet
    (plain encoder) or ResidualEncoderUNet (residual encoder).

    ``load_state_dict(..., strict=False)`` on the nnU-Net network fills the aliases too, since they are
    the same modules. Bridge and query-head weights have no nnU-Net counterpart and are left out.
    """
    out = {}
    for key, value in state.items():
        if m := re.match(r"^encoder\.stages\.(\d+)\.(\d+)\.(conv|norm)\.(weight|bias)$", key):
            out[f"encoder.stages.{m[1]}.0.convs.{m[2]}.{m[3]}.{m[4]}"] = value
        elif m := re.match(r"^encoder\.stem\.(conv|norm)\.(weight|bias)$", key):
            out[f"encoder.stem.convs.0.{m[1]}.{m[2]}"] = value
        elif m := re.match(r"^encoder\.stages\.(\d+)\.(\d+)\.(conv1|conv2|skip\.\d)\.(conv|norm)\.(weight|bias)$", key):
            out[f"encoder.stages.{m[1]}.blocks.{m[2]}.{m[3]}.{m[4]}.{m[5]}"] = value
        elif m := re.match(r"^decoder\.blocks\.(\d+)\.(\d+)\.(conv|norm)\.(weight|bias)$", key):
            out[f"decoder.stages.{m[1]}.convs.{m[2]}.{m[3]}.{m[4]}"] = value
        elif m := re.match(r"^decoder\.upsamples\.(\d+)\.(weight|bias)$", key):
            out[f"decoder.transpconvs.{m[1]}.{m[2]}"] = value
        elif m := re.match(r"^head\.seg_layers\.(\d+)\.(weight|bias)$", key):
            out[f"decoder.seg_layers.{m[1]}.{m[2]}"] = value
    return out


def _check_aliases(state: dict[str, torch.Tensor], source: str) -> None:
    """``all_modules.0`` is ``conv``, ``all_modules.1`` is ``norm`` and ``decoder.encoder`` is ``encoder``."""
    for key, value in state.items():
        primary = None
        if key.startswith("decoder.encoder."):
            primary = key[len("decoder.") :]
        if ".all_modules.0." in (primary or key):
            primary = (primary or key).replace(".all_modules.0.", ".conv.")
        elif ".all_modules.1." in (primary or key):
            primary = (primary or key).replace(".all_modules.1.", ".norm.")
        if primary is None:
            continue
        other = state.get(primary)
        if other is None or other.shape != value.shape or not torch.equal(other, value):
            raise NnUNetModelError(
                f"{source}: weight '{key}' should be the same tensor as '{primary}' but differs; "
                "the checkpoint was edited or is not a PlainConvUNet / ResidualEncoderUNet"
            )
