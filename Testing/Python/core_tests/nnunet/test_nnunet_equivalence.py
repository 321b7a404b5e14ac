"""``maskmed predict`` on nnU-Net v2 models trained here by ``nnunetv2`` agrees with ``nnUNetPredictor``.

Target (issue 11): >= 99.9 % of voxels equal, with the same folds, mirroring and step size. The CT model
exercises the transpose, CT normalisation and separate-z resampling (test images at other spacings); the
MRI model z-score normalisation on real hippocampus cases.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from MaskMedCore.nnunet.predictor import NnUNetModelPredictor

AGREEMENT = 0.999


def nnunet_reference(folder, images, mirroring: bool, step_size: float = 0.5, folds=(0,)):
    """nnU-Net's own predictor on each image: a list of (z, y, x) label arrays."""
    import nnunetv2.inference.predict_from_raw_data as predict_module
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    # nnU-Net finds the trainer class by name by importing every trainer module; its Primus trainers need
    # timm, absent from the CPU install. The trainer only contributes build_network_architecture, which
    # the test trainer (a subclass with another optimiser) inherits unchanged from nnUNetTrainer.
    original = predict_module.recursive_find_trainer_class_by_name
    predict_module.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer
    try:
        predictor = predict_module.nnUNetPredictor(
            tile_step_size=step_size,
            use_gaussian=True,
            use_mirroring=mirroring,
            perform_everything_on_device=False,
            device=torch.device("cpu"),
            allow_tqdm=False,
        )
        predictor.initialize_from_trained_model_folder(
            str(folder), use_folds=folds, checkpoint_name="checkpoint_final.pth"
        )
    finally:
        predict_module.recursive_find_trainer_class_by_name = original
    out = []
    for image in images:
        data, props = SimpleITKIO().read_images([str(image)])
        out.append(np.asarray(predictor.predict_single_npy_array(data, props)))
    return out


def agreement(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    equal = sum(int((a == b).sum()) for a, b in zip(ours, theirs, strict=True))
    return equal / sum(a.size for a in theirs)


@pytest.mark.parametrize("tta", [False, True], ids=["no-mirroring", "mirroring"])
def test_ct_model_agrees_with_nnunet(nnunet_ct_model, tta):
    folder, images = nnunet_ct_model
    predictor = NnUNetModelPredictor(folder, folds=("0",), device="cpu", tta=tta)
    assert predictor.preprocessing.transpose_forward != (0, 1, 2)  # the transpose path is exercised
    assert predictor.preprocessing.schemes == ("CTNormalization",)
    assert predictor.mirror_axes == ((0, 1, 2) if tta else ())
    ours = [sitk.GetArrayFromImage(predictor.predict(im).labels) for im in images]
    theirs = nnunet_reference(folder, images, mirroring=tta)
    assert all(a.shape == b.shape for a, b in zip(ours, theirs))
    assert sum(int((t > 0).sum()) for t in theirs) > 1000, "the model must predict foreground for a real check"
    assert agreement(ours, theirs) >= AGREEMENT


def test_mri_model_agrees_with_nnunet(nnunet_mri_model):
    folder, images = nnunet_mri_model
    predictor = NnUNetModelPredictor(folder, folds="all", device="cpu", tta=True, step_size=0.7)
    assert predictor.preprocessing.schemes == ("ZScoreNormalization",)
    ours = [sitk.GetArrayFromImage(predictor.predict(im).labels) for im in images]
    theirs = nnunet_reference(folder, images, mirroring=True, step_size=0.7, folds=("all",))
    assert sum(int((t > 0).sum()) for t in theirs) > 1000, "the model must predict foreground for a real check"
    assert agreement(ours, theirs) >= AGREEMENT


def test_cli_predicts_with_an_nnunet_folder(nnunet_ct_model, tmp_path):
    folder, images = nnunet_ct_model
    out = tmp_path / "pred"
    cmd = [sys.executable, "-m", "MaskMedCore", "predict", "-m", str(folder), "-i", str(images[1]), "-o", str(out)]
    proc = subprocess.run([*cmd, "--progress", "none", "--folds", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    case = images[1].name[: -len("_0000.nii.gz")]
    labels = sitk.ReadImage(str(out / f"{case}.nii.gz"))
    source = sitk.ReadImage(str(images[1]))
    assert labels.GetSize() == source.GetSize() and np.allclose(labels.GetSpacing(), source.GetSpacing())
    summary = json.loads((out / f"{case}_summary.json").read_text())
    assert summary["queries"] == [] and summary["model"]["kind"] == "nnunet"
    assert summary["label_names"][1] == "liver"
    expected = nnunet_reference(folder, [images[1]], mirroring=False)[0]
    assert agreement([sitk.GetArrayFromImage(labels)], [expected]) >= AGREEMENT


def test_missing_fold_is_one_clear_error(nnunet_ct_model, tmp_path):
    folder, images = nnunet_ct_model
    cmd = [sys.executable, "-m", "MaskMedCore", "predict", "-m", str(folder), "-i", str(images[0])]
    proc = subprocess.run(
        [*cmd, "-o", str(tmp_path / "p"), "--folds", "3"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "fold_3/checkpoint_final.pth does not exist" in proc.stderr and "fold_0/checkpoint_final.pth" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
