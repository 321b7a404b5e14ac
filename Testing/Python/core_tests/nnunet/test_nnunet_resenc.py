"""nnU-Net's ``ResidualEncoderUNet`` (the network of its ResEnc M/L/XL presets) run as MaskMed's residual encoder:
the plans map to ``ModelConfig(encoder="residual")``, the weights map both ways and give the same logits,
options MaskMed does not build are refused naming the field, and a model trained by nnunetv2 predicts as
``nnUNetPredictor`` does."""

from __future__ import annotations

import json

import pytest
import torch
from nnunet_result_builders import plans_json, write_result_folder
from torch import nn

from MaskMedCore.models.build import build_model
from MaskMedCore.nnunet import NnUNetModelError, read_result_folder
from MaskMedCore.nnunet.network import model_config
from MaskMedCore.nnunet.predictor import NnUNetModelPredictor
from MaskMedCore.nnunet.weights import maskmed_to_nnunet_state, nnunet_to_maskmed_state

RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # anisotropic: the first downsampling keeps D
BLOCKS = [1, 2, 2, 2]


def resenc_plans() -> dict:
    """The test plans with the architecture nnU-Net's ResEnc planners write (nnUNetResEncUNetPlanner)."""
    plans = plans_json()
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    arch["network_class_name"] = RESENC
    kw = arch["arch_kwargs"]
    kw.pop("n_conv_per_stage")
    kw.update(kernel_sizes=KERNELS, strides=STRIDES, n_blocks_per_stage=BLOCKS, n_conv_per_stage_decoder=[1, 1, 1])
    return plans


def _dna_network(kw: dict, num_classes: int = 3) -> nn.Module:
    """dynamic-network-architectures' ResidualEncoderUNet as nnU-Net builds it from ``kw``, with random weights
    everywhere (its init zeroes each block's last norm, which would hide conv2 from the comparison)."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    torch.manual_seed(1)
    net = ResidualEncoderUNet(
        input_channels=1,
        n_stages=kw["n_stages"],
        features_per_stage=kw["features_per_stage"],
        conv_op=nn.Conv3d,
        kernel_sizes=kw["kernel_sizes"],
        strides=kw["strides"],
        n_blocks_per_stage=kw["n_blocks_per_stage"],
        num_classes=num_classes,
        n_conv_per_stage_decoder=kw["n_conv_per_stage_decoder"],
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
    )
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def test_resenc_plans_give_a_residual_model_config(tmp_path):
    folder = write_result_folder(tmp_path, plans=resenc_plans())
    cfg = model_config(read_result_folder(folder))
    assert (cfg.encoder, cfg.n_blocks_per_stage, cfg.n_conv_per_stage_decoder) == ("residual", (1, 2, 2, 2), 1)
    assert (cfg.head, cfg.bridge, cfg.features_per_stage) == ("pointwise", "none", (8, 16, 32, 64))
    assert cfg.kernel_sizes[0] == (1, 3, 3) and cfg.strides[1] == (1, 2, 2)
    model = build_model(cfg)
    assert [len(stage) for stage in model.encoder.stages] == BLOCKS


def test_old_plans_format_resenc(tmp_path):
    """nnU-Net < 2.3 plans: UNet_class_name, and n_conv_per_stage_encoder holding the blocks per stage."""
    plans = plans_json()
    cfg = plans["configurations"]["3d_fullres"]
    cfg.pop("architecture")
    cfg.update(
        UNet_class_name="ResidualEncoderUNet",
        UNet_base_num_features=8,
        unet_max_num_features=64,
        conv_kernel_sizes=KERNELS,
        pool_op_kernel_sizes=STRIDES,
        n_conv_per_stage_encoder=[1, 3, 4, 6],
        n_conv_per_stage_decoder=[1, 1, 1],
    )
    folder = write_result_folder(tmp_path, plans=plans)
    mc = model_config(read_result_folder(folder))
    assert (mc.encoder, mc.n_blocks_per_stage, mc.features_per_stage) == ("residual", (1, 3, 4, 6), (8, 16, 32, 64))


def test_residual_encoder_unet_gives_the_same_logits(tmp_path):
    """The mapped MaskMed network computes what DNA's ResidualEncoderUNet computes, and the inverse mapping
    puts every weight back."""
    pytest.importorskip("dynamic_network_architectures", reason="dynamic-network-architectures is not installed")
    plans = resenc_plans()
    folder = write_result_folder(tmp_path, plans=plans)
    net = _dna_network(plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"])
    ours = build_model(model_config(read_result_folder(folder))).eval()
    ours.load_state_dict(nnunet_to_maskmed_state(net.state_dict()), strict=True)
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        expected = net(x)
        assert torch.allclose(expected, ours(x).mask_logits[-1], atol=1e-5)
    back = maskmed_to_nnunet_state(ours.state_dict())
    primary = {k for k in net.state_dict() if ".all_modules." not in k and not k.startswith("decoder.encoder.")}
    assert back.keys() == primary
    fresh = _dna_network(plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"])
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
        fresh.load_state_dict(back, strict=False)  # fills the aliases too: they are the same modules
        assert torch.allclose(fresh(x), expected, atol=1e-5)


def test_checkpoint_with_aliases_loads_and_a_plain_one_does_not_fit(tmp_path):
    pytest.importorskip("dynamic_network_architectures", reason="dynamic-network-architectures is not installed")
    plans = resenc_plans()
    folder = write_result_folder(tmp_path, plans=plans)
    net = _dna_network(plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"])
    path = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": net.state_dict(), "inference_allowed_mirroring_axes": (0, 1, 2)}, path)
    predictor = NnUNetModelPredictor(folder, device="cpu")
    assert predictor.model_config.encoder == predictor.model_summary()["model"]["encoder"] == "residual"
    edited = dict(net.state_dict())
    key = "encoder.stages.1.blocks.0.skip.1.all_modules.0.weight"
    edited[key] = edited[key] + 1
    with pytest.raises(NnUNetModelError, match="should be the same tensor"):
        nnunet_to_maskmed_state(edited)
    plain = write_result_folder(tmp_path / "plain")  # PlainConvUNet plans and weights
    torch.manual_seed(0)
    plain_weights = maskmed_to_nnunet_state(build_model(model_config(read_result_folder(plain))).state_dict())
    torch.save({"network_weights": plain_weights}, path)
    with pytest.raises(NnUNetModelError, match="do not fit the network in plans.json"):
        NnUNetModelPredictor(folder, device="cpu")


def test_init_from_a_resenc_model_takes_its_residual_encoder(tmp_path):
    """``maskmed train --init-from``: the upgraded MaskMed network has the source's residual encoder, and every
    encoder and decoder tensor of the source is loaded into it."""
    from MaskMedCore.config import ModelConfig
    from MaskMedCore.engine.init_from import read_init_source
    from MaskMedCore.engine.init_weights import initial_state

    folder = write_result_folder(tmp_path, plans=resenc_plans())
    torch.manual_seed(0)
    weights = maskmed_to_nnunet_state(build_model(model_config(read_result_folder(folder))).state_dict())
    torch.save({"network_weights": weights}, folder / "fold_0" / "checkpoint_final.pth")
    source = read_init_source(folder)
    assert (source.topology["encoder"], source.topology["n_blocks_per_stage"]) == ("residual", (1, 2, 2, 2))
    upgraded = ModelConfig.preset("tiny", 1, 3, **source.topology)  # decoupled head, FSAD bridge
    state, report = initial_state(build_model(upgraded).state_dict(), source.state, source.description, upgraded.head)
    backbone = {k for k in state if k.startswith(("encoder.", "decoder."))}
    assert backbone <= set(report.loaded) and any(".skip.1.conv." in k for k in report.loaded)


def _set(key, value):
    return lambda kw: kw.update({key: value})


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("conv_bias", False), r"arch_kwargs\.conv_bias is False"),
        (lambda kw: kw.pop("conv_bias"), r"arch_kwargs\.conv_bias is missing"),
        (_set("block", "dynamic_network_architectures.building_blocks.residual.BottleneckD"), r"arch_kwargs\.block"),
        (_set("bottleneck_channels", [4, 8, 16, 32]), r"arch_kwargs\.bottleneck_channels"),
        (_set("stem_channels", 16), r"arch_kwargs\.stem_channels is 16"),
        (_set("squeeze_excitation", True), r"arch_kwargs\.squeeze_excitation"),
        (_set("pool_type", "max"), r"arch_kwargs\.pool_type"),
        (_set("norm_op", "torch.nn.BatchNorm3d"), r"arch_kwargs\.norm_op"),
        (_set("n_blocks_per_stage", [1, 2, 2]), "n_blocks_per_stage has 3 entries, expected 4"),
        (_set("n_conv_per_stage_decoder", [1, 2, 1]), "convs per stage differ"),
    ],
    ids=["no-bias", "bias-missing", "bottleneck", "bottleneck-channels", "stem", "se", "pooling", "batchnorm",
         "blocks-length", "decoder-convs"],
)  # fmt: skip
def test_unsupported_resenc_options_are_refused_naming_the_field(tmp_path, edit, message):
    plans = resenc_plans()
    edit(plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"])
    folder = write_result_folder(tmp_path, plans=plans)
    with pytest.raises(NnUNetModelError, match=message):
        model_config(read_result_folder(folder))


@pytest.mark.slow
@pytest.mark.parametrize("tta", [False, True], ids=["no-mirroring", "mirroring"])
def test_resenc_model_agrees_with_nnunet(nnunet_resenc_model, tta):
    """Target (issue 11): >= 99.9 % of voxels equal to nnUNetPredictor's, as for PlainConvUNet models."""
    import SimpleITK as sitk
    from test_nnunet_equivalence import AGREEMENT, agreement, nnunet_reference

    folder, images = nnunet_resenc_model
    assert json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"][
        "network_class_name"
    ].endswith("ResidualEncoderUNet")
    predictor = NnUNetModelPredictor(folder, folds=("0",), device="cpu", tta=tta)
    assert predictor.model_config.encoder == "residual"
    ours = [sitk.GetArrayFromImage(predictor.predict(im).labels) for im in images]
    theirs = nnunet_reference(folder, images, mirroring=tta)
    assert all(a.shape == b.shape for a, b in zip(ours, theirs))
    assert sum(int((t > 0).sum()) for t in theirs) > 1000, "the model must predict foreground for a real check"
    assert agreement(ours, theirs) >= AGREEMENT
