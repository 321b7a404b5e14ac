"""nnU-Net's 2d configuration end to end on real MRI: plan -> train on slices -> predict slice by slice -> evaluate."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MaskMedCore.cli import main
from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.engine.checkpoint import load_checkpoint
from MaskMedCore.inference.sliding_window import axis_steps, sliding_window_predict
from MaskMedCore.models.build import build_model
from MaskMedCore.models.outputs import semantic_probs

CASES = 6


@pytest.fixture
def hippocampus_raw(tmp_path, shared_data):
    """6 real MSD hippocampus cases (CC-BY-SA 4.0) in nnU-Net v2's raw layout; the last one is held out."""
    source = shared_data / "msd_hippocampus"
    raw = tmp_path / "raw" / "Dataset950_Hippocampus"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    (raw / "imagesTs").mkdir()
    cases = sorted(p.name[: -len(".nii.gz")] for p in (source / "imagesTr").glob("*.nii.gz"))[:CASES]
    for i, case in enumerate(cases):
        target = raw / ("imagesTs" if i == CASES - 1 else "imagesTr")
        shutil.copy(source / "imagesTr" / f"{case}.nii.gz", target / f"{case}_0000.nii.gz")
        shutil.copy(source / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr" / f"{case}.nii.gz")
    (raw / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Dataset950_Hippocampus",
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, "anterior": 1, "posterior": 2},
                "numTraining": CASES - 1,
                "file_ending": ".nii.gz",
            }
        )
    )
    held_out = cases[-1]
    shutil.move(raw / "labelsTr" / f"{held_out}.nii.gz", raw.parent / f"{held_out}.nii.gz")
    return raw, held_out


@pytest.mark.realdata
def test_plan_train_predict_evaluate_with_the_2d_configuration(tmp_path, capsys, hippocampus_raw):
    raw, held_out = hippocampus_raw
    prep = tmp_path / "prep"
    assert main(["plan", str(raw), "--out", str(prep), "--configuration", "2d"]) == 0
    assert (prep / "plan.json").is_file() and (prep / "plan_2d.json").is_file()
    assert not (prep / "plan_cpu.json").exists()  # --configuration 2d plans only 2d beside 3d_fullres
    assert "2d plan" in capsys.readouterr().out
    run = tmp_path / "run"
    argv = ["train", str(raw), "--out", str(run), "--configuration", "2d", "--preset", "tiny", "--device", "cpu"]
    argv += ["--workers", "0", "--preprocessed", str(prep), "--fold", "all", "--epochs", "2"]
    argv += ["--iterations-per-epoch", "3", "--batch-size", "8", "--progress", "none", "--no-mirroring"]
    assert main(argv) == 0
    checkpoint = load_checkpoint(run / "checkpoint_latest.pt")
    assert checkpoint.model_config.spatial_dims == 2 and checkpoint.plan.patch_size[0] == 1
    assert json.loads(checkpoint.training_config_json)["configuration"] == "2d"
    assert any(v.dim() == 4 for v in checkpoint.model_state.values())  # Conv2d weights: (out, in, kH, kW)

    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run / "checkpoint_latest.pt"), "-i", str(raw / "imagesTs"), "-o", str(out)]) == 0
    image = sitk.ReadImage(str(raw / "imagesTs" / f"{held_out}_0000.nii.gz"))
    prediction = sitk.ReadImage(str(out / f"{held_out}.nii.gz"))
    assert prediction.GetSize() == image.GetSize()
    assert prediction.GetSpacing() == image.GetSpacing() and prediction.GetOrigin() == image.GetOrigin()
    assert prediction.GetDirection() == image.GetDirection()
    assert set(np.unique(sitk.GetArrayFromImage(prediction)).tolist()) <= {0, 1, 2}
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(raw.parent / f"{held_out}.nii.gz", ref / f"{held_out}.nii.gz")
    report = tmp_path / "evaluation"
    assert main(["evaluate", "--pred", str(out), "--ref", str(ref), "--labels", str(raw / "dataset.json"),
                 "--out", str(report)]) == 0  # fmt: skip
    scores = json.loads((report.with_suffix(".json")).read_text())
    assert set(scores["per_class"]) == {"anterior", "posterior"}


def test_one_slice_tiles_step_once_per_slice():
    assert axis_steps(5, 1, 0.5) == [0, 1, 2, 3, 4]  # not twice per slice at overlap 0.5
    assert axis_steps(40, 20, 0.5) == [0, 10, 20]  # 3D tiles unchanged


def test_volume_prediction_of_a_2d_network_equals_each_slice_alone():
    torch.manual_seed(0)
    cfg = ModelConfig.preset(
        "tiny", 1, 3, features_per_stage=(8, 16, 32), kernel_sizes=((3, 3),) * 3, strides=((1, 1), (2, 2), (2, 2))
    )
    model = build_model(cfg).eval()
    model.deep_supervision = False
    volume = torch.randn(1, 7, 16, 24)  # (C, D, H, W); the tile is one whole slice

    def predict(tiles):  # (B, C, 1, h, w) -> (B, K, 1, h, w)
        return semantic_probs(model(tiles))

    merged = sliding_window_predict(volume, predict, (1, 16, 24), tile_batch_size=4)
    with torch.no_grad():
        alone = torch.stack([semantic_probs(model(volume[None, :, d]))[0] for d in range(7)], dim=1)
    assert merged.shape == (3, 7, 16, 24)
    torch.testing.assert_close(merged, alone, rtol=1e-5, atol=1e-6)


def _middle_slices(source, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The slice with the most hippocampus of each of ``count`` real cases, z-scored, cropped to a common
    multiple of 8: (N, 1, H, W) images and (N, H, W) labels."""
    images, labels = [], []
    for path in sorted((source / "imagesTr").glob("*.nii.gz"))[:count]:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr" / path.name)))
        d = int(np.argmax((label > 0).sum((1, 2))))
        images.append((image[d] - image[d].mean()) / image[d].std())
        labels.append(label[d])
    h = min(i.shape[0] for i in images) // 8 * 8
    w = min(i.shape[1] for i in images) // 8 * 8
    x = torch.tensor(np.stack([i[:h, :w] for i in images]))[:, None]
    return x, torch.tensor(np.stack([lab[:h, :w] for lab in labels])).long()


@pytest.mark.realdata
def test_decoupled_2d_network_overfits_a_set_of_real_slices(shared_data):
    from MaskMedCore.config.loss_config import LossConfig
    from MaskMedCore.losses.build import build_criterion

    torch.manual_seed(0)
    x, y = _middle_slices(shared_data / "msd_hippocampus", 8)
    assert all(int((y == k).sum()) > 500 for k in (1, 2))
    # the tiny preset on a 2d plan's topology, the full MaskMed head (decoupled, masked attention, FSAD) and
    # maskmed train's default recipe (AdamW 3e-3, semantic loss weight 2)
    cfg = ModelConfig.preset(
        "tiny", 1, 3, features_per_stage=(8, 16, 32, 64), kernel_sizes=((3, 3),) * 4, strides=((1, 1),) + ((2, 2),) * 3
    )
    assert cfg.head == "decoupled" and cfg.bridge == "fsad" and cfg.masked_attention
    model = build_model(cfg)
    criterion = build_criterion(cfg, LossConfig(semantic_weight=2.0))
    optimiser = torch.optim.AdamW(model.param_groups(3e-3, transformer_lr_ratio=1.0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss = criterion(model(x), y, generator=gen).total
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        pred = semantic_probs(model(x)).argmax(1)
    dice = [2 * ((pred == k) & (y == k)).sum().item() / ((pred == k).sum() + (y == k).sum()).item() for k in (1, 2)]
    assert min(dice) > 0.9, f"per-class Dice {dice} after 100 steps on 8 real slices"
