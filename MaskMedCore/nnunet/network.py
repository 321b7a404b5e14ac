"""The network of an nnU-Net v2 configuration as a MaskMed ``ModelConfig`` (point-wise head, no bridge).

MaskMed's point-wise head without a bridge *is* nnU-Net's ``PlainConvUNet`` (MaskMed §3.1), so a
PlainConvUNet configuration maps to ``ModelConfig(head="pointwise", bridge="none")`` with the same
stages, features, kernels, strides and convs per stage. Both plans formats are read: nnU-Net >= 2.3
(``architecture.arch_kwargs``) and the older one (``UNet_class_name``, ``UNet_base_num_features``,
``conv_kernel_sizes``, ``pool_op_kernel_sizes``; e.g. TotalSegmentator's released weights). Building
blocks that differ from MaskMed's (nnU-Net's defaults: Conv3d with bias, InstanceNorm3d eps 1e-5
affine, LeakyReLU 0.01, no dropout) are refused with the field's name.

nnU-Net's ResEnc presets (``nnUNetResEncUNet{M,L,XL}Plans``) use ``ResidualEncoderUNet``: the same decoder
after a residual encoder (``MaskMedCore.models.residual_encoder``), mapped to ``encoder="residual"`` with
``n_blocks_per_stage``. Its options MaskMed does not build (bottleneck blocks, another stem width,
squeeze-excitation, stochastic depth, pooling instead of strided convs) are refused by name.
"""

from __future__ import annotations

from typing import Any

from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.nnunet.result_folder import NnUNetModelError, NnUNetResultFolder, network_class_name

_EXPECTED_BLOCKS = {
    "conv_op": ("torch.nn.modules.conv.Conv3d", "torch.nn.Conv3d"),
    "norm_op": ("torch.nn.modules.instancenorm.InstanceNorm3d", "torch.nn.InstanceNorm3d"),
    "nonlin": ("torch.nn.LeakyReLU", "torch.nn.modules.activation.LeakyReLU"),
    "dropout_op": (None,),
    "conv_bias": (True,),
}

RESIDUAL = "ResidualEncoderUNet"
_RESIDUAL_BLOCKS = ("dynamic_network_architectures.building_blocks.residual.BasicBlockD", "BasicBlockD")
_RESIDUAL_OPTIONS = {
    # arch_kwargs field: (values MaskMed's residual encoder builds, what it has). nnU-Net's ResEnc planners
    # write none of these keys; a hand-edited plans file may.
    "block": ((None, *_RESIDUAL_BLOCKS), "basic ResNet-D blocks (BasicBlockD)"),
    "bottleneck_channels": ((None,), "no bottleneck blocks"),
    "squeeze_excitation": ((None, False), "no squeeze-excitation"),
    "stochastic_depth_p": ((None, 0, 0.0), "no stochastic depth"),
    "pool_type": ((None, "conv"), "strided convs, no pooling layers"),
}


def architecture_kwargs(folder: NnUNetResultFolder) -> dict[str, Any]:
    """``network, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage`` (PlainConvUNet) or
    ``n_blocks_per_stage`` (ResidualEncoderUNet), ``n_conv_per_stage_decoder`` of the configuration's network,
    from either plans format (checked)."""
    source = f"{folder.path / 'plans.json'} (configuration '{folder.configuration}')"
    cfg = folder.config
    network = network_class_name(cfg, folder.path / "plans.json", folder.configuration)  # raises if none is named
    encoder_key = "n_blocks_per_stage" if network == RESIDUAL else "n_conv_per_stage"
    arch = cfg.get("architecture")
    if isinstance(arch, dict):
        kw = dict(arch.get("arch_kwargs") or {})
        if network == RESIDUAL:
            _check_residual_options(kw, source)
        for key, allowed in _EXPECTED_BLOCKS.items():
            if key in kw and kw[key] not in allowed:
                raise NnUNetModelError(
                    f"{source}: architecture.arch_kwargs.{key} is {kw[key]!r}; MaskMed's UNet has {allowed[0]!r}"
                )
        norm_kwargs = kw.get("norm_op_kwargs") or {}
        if norm_kwargs.get("affine", True) is not True or abs(float(norm_kwargs.get("eps", 1e-5)) - 1e-5) > 1e-12:
            raise NnUNetModelError(
                f"{source}: architecture.arch_kwargs.norm_op_kwargs is {norm_kwargs}; MaskMed uses eps 1e-5, affine"
            )
        slope = (kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01)
        if abs(float(slope) - 0.01) > 1e-12:
            raise NnUNetModelError(f"{source}: LeakyReLU negative_slope is {slope}; MaskMed uses 0.01")
        n = int(kw["n_stages"])
        out = {
            "network": network,
            "n_stages": n,
            "features_per_stage": [int(f) for f in kw["features_per_stage"]],
            "kernel_sizes": [[int(k) for k in ks] for ks in kw["kernel_sizes"]],
            "strides": [[int(s) for s in st] for st in kw["strides"]],
            encoder_key: _as_list(kw[encoder_key], n, encoder_key, source),
            "n_conv_per_stage_decoder": _as_list(
                kw["n_conv_per_stage_decoder"], n - 1, "n_conv_per_stage_decoder", source
            ),
        }
    else:  # plans written by nnU-Net v2 < 2.3
        kernels = cfg["conv_kernel_sizes"]
        n = len(kernels)
        base, cap = int(cfg["UNet_base_num_features"]), int(cfg.get("unet_max_num_features", 320))
        # nnU-Net < 2.3 passed n_conv_per_stage_encoder as n_blocks_per_stage to a ResidualEncoderUNet,
        # and conv_bias True, InstanceNorm, LeakyReLU to both networks (get_network_from_plans).
        out = {
            "network": network,
            "n_stages": n,
            "features_per_stage": [min(base * 2**i, cap) for i in range(n)],
            "kernel_sizes": [[int(k) for k in ks] for ks in kernels],
            "strides": [[int(s) for s in st] for st in cfg["pool_op_kernel_sizes"]],
            encoder_key: _as_list(cfg["n_conv_per_stage_encoder"], n, "n_conv_per_stage_encoder", source),
            "n_conv_per_stage_decoder": _as_list(
                cfg["n_conv_per_stage_decoder"], n - 1, "n_conv_per_stage_decoder", source
            ),
        }
    for key in ("features_per_stage", "kernel_sizes", "strides"):
        if len(out[key]) != out["n_stages"]:
            raise NnUNetModelError(f"{source}: {key} has {len(out[key])} entries for {out['n_stages']} stages")
    if any(len(k) != 3 for k in out["kernel_sizes"]) or any(len(s) != 3 for s in out["strides"]):
        raise NnUNetModelError(f"{source}: kernel_sizes/strides are not 3D; only 3D configurations are supported")
    return out


def model_config(folder: NnUNetResultFolder, **overrides: Any) -> ModelConfig:
    """MaskMed's config of the configuration's network: point-wise head, no bridge, no deep supervision
    (``overrides`` replace fields, e.g. ``head="decoupled"`` to start a MaskMed model from it)."""
    arch = architecture_kwargs(folder)
    source = f"{folder.path / 'plans.json'} (configuration '{folder.configuration}')"
    # Residual blocks may differ per stage (ResEnc: 1, 3, 4, 6, ...); conv counts must not.
    counts: dict[str, list[int]] = {}
    if arch["network"] == RESIDUAL:
        encoder_fields: dict[str, Any] = dict(encoder="residual", n_blocks_per_stage=tuple(arch["n_blocks_per_stage"]))
    else:
        counts["encoder"] = arch["n_conv_per_stage"]
        encoder_fields = dict(n_conv_per_stage=arch["n_conv_per_stage"][0])
    counts["decoder"] = arch["n_conv_per_stage_decoder"]
    if any(len(set(c)) != 1 for c in counts.values()):
        raise NnUNetModelError(
            f"{source}: convs per stage differ between stages ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
            "MaskMed's UNet uses one count for all stages"
        )
    fields: dict[str, Any] = dict(
        in_channels=len(folder.channel_names),
        num_classes=folder.num_classes,
        features_per_stage=tuple(arch["features_per_stage"]),
        kernel_sizes=tuple(tuple(k) for k in arch["kernel_sizes"]),
        strides=tuple(tuple(s) for s in arch["strides"]),
        **encoder_fields,
        n_conv_per_stage_decoder=arch["n_conv_per_stage_decoder"][0],
        head="pointwise",
        bridge="none",
        masked_attention=False,
        deep_supervision=False,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def _check_residual_options(kw: dict[str, Any], source: str) -> None:
    """Refuse ResidualEncoderUNet options MaskMed's residual encoder does not build."""
    for key, (allowed, has) in _RESIDUAL_OPTIONS.items():
        if kw.get(key) not in allowed:
            raise NnUNetModelError(
                f"{source}: architecture.arch_kwargs.{key} is {kw[key]!r}; MaskMed's residual encoder has {has}, "
                "so this ResidualEncoderUNet cannot be run"
            )
    stem = kw.get("stem_channels")
    first = (kw.get("features_per_stage") or [None])[0]
    if stem is not None and stem != first:
        raise NnUNetModelError(
            f"{source}: architecture.arch_kwargs.stem_channels is {stem}, not features_per_stage[0] ({first}); "
            "MaskMed's residual encoder has a stem as wide as stage 0"
        )
    # DNA's ResidualEncoderUNet defaults to conv_bias False (nnU-Net's planners write True); a missing
    # key therefore means no bias, which MaskMed's blocks do not build.
    if "conv_bias" not in kw:
        raise NnUNetModelError(
            f"{source}: architecture.arch_kwargs.conv_bias is missing, so ResidualEncoderUNet builds convs without "
            "bias; MaskMed's blocks have conv_bias True (what nnU-Net's ResEnc planners write)"
        )


def _as_list(value: Any, n: int, name: str, source: str) -> list[int]:
    values = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(values) != n:
        raise NnUNetModelError(f"{source}: {name} has {len(values)} entries, expected {n}")
    return values
