"""Reading nnU-Net v2 result folders, plans and checkpoints (no nnunetv2 needed): what is accepted, what is
refused with which message, and that nothing from a checkpoint can run code."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from nnunet_result_builders import plans_json, write_result_folder

from MaskMedCore.models.build import build_model
from MaskMedCore.nnunet import NnUNetModelError, read_result_folder
from MaskMedCore.nnunet.checkpoint import load_nnunet_checkpoint
from MaskMedCore.nnunet.network import model_config
from MaskMedCore.nnunet.predictor import NnUNetModelPredictor
from MaskMedCore.nnunet.weights import maskmed_to_nnunet_state, nnunet_to_maskmed_state


def _edit_plans(folder, edit) -> None:
    plans = json.loads((folder / "plans.json").read_text())
    edit(plans)
    (folder / "plans.json").write_text(json.dumps(plans))


def _nnunet_checkpoint(path, weights) -> None:
    """A checkpoint with every field type nnU-Net v2 stores (NumPy scalars in the log, a torch.device)."""
    torch.save(
        {
            "network_weights": weights,
            "optimizer_state": {"state": {}, "param_groups": []},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float32(0.5), np.float32(0.7)], "epoch_end_timestamps": [1.5]},
            "_best_ema": np.float64(0.7),
            "current_epoch": 2,
            "init_args": {"plans": {}, "configuration": "3d_fullres", "fold": 0, "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        path,
    )


def _real_weights(folder):
    """PlainConvUNet-named weights that fit the folder's plans (from a random MaskMed point-wise network)."""
    torch.manual_seed(0)
    model = build_model(model_config(read_result_folder(folder)))
    return model, maskmed_to_nnunet_state(model.state_dict())


def test_reads_a_result_folder(tmp_path):
    folder = write_result_folder(tmp_path, folds=(0, 1))
    info = read_result_folder(folder)
    assert (info.trainer, info.configuration, info.folds) == ("nnUNetTrainer", "3d_fullres", ("0", "1"))
    assert info.label_names == ("background", "anterior", "posterior") and info.channel_names == ("MRI",)
    cfg = model_config(info)
    assert (cfg.head, cfg.bridge, cfg.features_per_stage) == ("pointwise", "none", (8, 16, 32, 64))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["configurations"]["3d_fullres"].update(patch_size=[56, 40]), "only 3D configurations"),
        (lambda p: p["configurations"]["3d_fullres"].update(previous_stage="3d_lowres"), "cascade stage"),
        (
            lambda p: p["configurations"]["3d_fullres"]["architecture"].update(
                network_class_name="dynamic_network_architectures.architectures.unet.ResidualUNet"
            ),
            "network class 'ResidualUNet'",
        ),
        (lambda p: p.pop("configurations"), "'configurations' is missing"),
    ],
    ids=["2d", "cascade", "residual-decoder", "no-configurations"],
)
def test_unsupported_plans_are_refused_naming_the_field(tmp_path, edit, message):
    folder = write_result_folder(tmp_path)
    _edit_plans(folder, edit)
    with pytest.raises(NnUNetModelError, match=message):
        read_result_folder(folder)


def test_region_based_and_incomplete_folders_are_refused(tmp_path):
    regions = write_result_folder(tmp_path / "a", labels={"background": 0, "whole": [1, 2], "core": [2]})
    with pytest.raises(NnUNetModelError, match="region-based"):
        read_result_folder(regions)
    missing = write_result_folder(tmp_path / "b")
    (missing / "dataset.json").unlink()
    with pytest.raises(NnUNetModelError, match="dataset.json is missing"):
        read_result_folder(missing)
    empty = write_result_folder(tmp_path / "c")
    (empty / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(NnUNetModelError, match="no fold_X folder with a checkpoint"):
        read_result_folder(empty)


def test_inherited_configuration_and_old_plans_format(tmp_path):
    folder = write_result_folder(tmp_path)

    def old_style(plans):
        cfg = plans["configurations"].pop("3d_fullres")
        arch = cfg.pop("architecture")["arch_kwargs"]
        base = {k: v for k, v in cfg.items() if k != "patch_size"}
        base.update(
            UNet_class_name="PlainConvUNet",
            UNet_base_num_features=8,
            unet_max_num_features=64,
            conv_kernel_sizes=arch["kernel_sizes"],
            pool_op_kernel_sizes=arch["strides"],
            n_conv_per_stage_encoder=[2, 2, 2, 2],
            n_conv_per_stage_decoder=[2, 2, 2],
        )
        plans["configurations"] = {"base": base, "3d_fullres": {"inherits_from": "base", "patch_size": [40, 56, 40]}}

    _edit_plans(folder, old_style)
    info = read_result_folder(folder)
    assert info.patch_size == (40, 56, 40) and info.config["UNet_class_name"] == "PlainConvUNet"
    assert model_config(info).features_per_stage == (8, 16, 32, 64)


def test_checkpoint_loads_with_the_allow_list_and_maps_exactly(tmp_path):
    folder = write_result_folder(tmp_path)
    model, weights = _real_weights(folder)
    _nnunet_checkpoint(folder / "fold_0" / "checkpoint_final.pth", weights)
    checkpoint = load_nnunet_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    assert checkpoint.mirror_axes == (0, 1, 2) and checkpoint.epoch == 2
    mapped = nnunet_to_maskmed_state(checkpoint.network_weights)
    assert mapped.keys() == model.state_dict().keys()
    assert all(torch.equal(mapped[k], v) for k, v in model.state_dict().items())
    predictor = NnUNetModelPredictor(folder, device="cpu", tta=True)
    assert predictor.mirror_axes == (0, 1, 2) and predictor.folds == ("0",)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    folder = write_result_folder(tmp_path)
    marker = tmp_path / "pwned"
    path = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(NnUNetModelError, match=r"references '(posix|os)\.system'") as info:
        load_nnunet_checkpoint(path)
    assert "could run code" in str(info.value)
    assert not marker.exists()
    with pytest.raises(NnUNetModelError, match="could run code"):
        NnUNetModelPredictor(folder, device="cpu")
    assert not marker.exists()


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    folder = write_result_folder(tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NnUNetModelError, match="not a PyTorch zip archive|truncated or corrupt"):
        load_nnunet_checkpoint(path)
    torch.save({"model_state": {}}, path)
    with pytest.raises(NnUNetModelError, match="no 'network_weights'"):
        load_nnunet_checkpoint(path)
    assert zipfile.is_zipfile(path)


def test_weights_from_another_network_or_edited_aliases_are_refused(tmp_path):
    folder = write_result_folder(tmp_path)
    _, weights = _real_weights(folder)
    with pytest.raises(NnUNetModelError, match="not part of nnU-Net's PlainConvUNet"):
        nnunet_to_maskmed_state({**weights, "encoder.stages.0.0.blocks.0.conv1.weight": torch.zeros(1)})
    key = "encoder.stages.0.0.convs.0.conv.weight"
    alias = key.replace(".conv.", ".all_modules.0.")
    with pytest.raises(NnUNetModelError, match="should be the same tensor"):
        nnunet_to_maskmed_state({**weights, alias: weights[key] + 1})
    _nnunet_checkpoint(
        folder / "fold_0" / "checkpoint_final.pth", {k: v for k, v in weights.items() if "seg_layers" not in k}
    )
    with pytest.raises(NnUNetModelError, match="do not fit the network in plans.json"):
        NnUNetModelPredictor(folder, device="cpu")


def test_plainconvunet_gives_the_same_logits(tmp_path):
    """The mapped MaskMed network computes what dynamic-network-architectures' PlainConvUNet computes."""
    pytest.importorskip("dynamic_network_architectures", reason="dynamic-network-architectures is not installed")
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    plans = plans_json()
    kw = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    kw["kernel_sizes"] = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    kw["strides"] = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    folder = write_result_folder(tmp_path, plans=plans)
    torch.manual_seed(1)
    net = PlainConvUNet(
        1,
        4,
        kw["features_per_stage"],
        nn.Conv3d,
        kw["kernel_sizes"],
        kw["strides"],
        2,
        3,
        2,
        True,
        nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True},
        None,
        None,
        nn.LeakyReLU,
        {"inplace": True},
    ).eval()
    ours = build_model(model_config(read_result_folder(folder))).eval()
    ours.load_state_dict(nnunet_to_maskmed_state(net.state_dict()))
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), ours(x).mask_logits[-1], atol=1e-5)
