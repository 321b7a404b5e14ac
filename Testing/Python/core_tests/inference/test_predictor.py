"""Whole-volume prediction: exact input geometry (oblique too), per-query outputs, bad input, the CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MaskMedCore.cli import main
from MaskMedCore.data.phantom import generate_phantom
from MaskMedCore.errors import DataError
from MaskMedCore.inference.predictor import Predictor, default_tile_batch


@pytest.fixture(scope="module")
def predictor(quick_run):
    return Predictor.from_checkpoint(quick_run, device="cpu")


def _oblique_phantom(seed=42):
    image, labels = generate_phantom(seed, shape=(20, 40, 44), spacing=(3.3, 1.7, 2.1))
    angle = np.deg2rad(20)
    direction = (1, 0, 0, 0, np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle))
    for im in (image, labels):
        im.SetDirection(direction)
        im.SetOrigin((-12.5, 30.0, 7.25))
    return image, labels


def test_output_has_exactly_the_input_geometry(predictor):
    image, _ = _oblique_phantom()
    result = predictor.predict(image)
    out = result.labels
    assert out.GetSize() == image.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(out.GetOrigin(), image.GetOrigin())
    np.testing.assert_allclose(out.GetDirection(), image.GetDirection(), atol=1e-12)
    values = np.unique(sitk.GetArrayFromImage(out))
    assert set(values.tolist()) <= set(range(len(predictor.label_names)))


def test_per_query_outputs_are_written(predictor, tmp_path):
    image, _ = _oblique_phantom(7)
    result = predictor.predict(image, save_queries=True)
    Q = len(result.queries)
    assert Q == len(predictor.label_names)  # Q = K
    assert result.class_probabilities.shape == (Q, Q + 1)
    np.testing.assert_allclose(result.class_probabilities.sum(1), 1.0, rtol=1e-5)
    assert len(result.query_probabilities) == Q
    prob = sitk.GetArrayFromImage(result.query_probabilities[0])
    assert prob.shape == sitk.GetArrayFromImage(image).shape and 0 <= prob.min() and prob.max() <= 1
    written = result.write(tmp_path, "case", ".nrrd", save_queries=True, save_embeddings=True)
    assert written["labels"].name == "case.nrrd" and written["labels"].is_file()
    summary = json.loads(written["summary"].read_text())
    assert {"class_volumes_ml", "queries", "label_names"} <= set(summary)
    assert {"index", "class_name", "score", "volume_ml", "bbox", "class_distribution"} <= set(summary["queries"][0])
    assert len(list(written["queries"].iterdir())) == Q
    emb = np.load(written["embeddings"])
    assert emb["class_embeddings"].shape[0] == Q and emb["mask_embeddings"].shape[0] == Q


def test_default_tile_batch_by_device_and_tile_size():
    cpu = torch.device("cpu")
    assert default_tile_batch(cpu, 32, (128, 128, 128)) == 1  # paper tile: batch 1 stays on oneDNN
    assert default_tile_batch(cpu, 8, (32, 64, 64)) == 2  # tiny tile: batch 1 would use slow_conv3d
    assert default_tile_batch(torch.device("cuda"), 32, (128, 128, 128)) == 2


def test_tile_batch_does_not_change_labels(quick_run):
    image, _ = generate_phantom(5, shape=(20, 44, 40))  # 2 x 2 x 2 tiles of the 16 x 32 x 32 patch
    one = Predictor.from_checkpoint(quick_run, device="cpu", tile_batch_size=1).predict(image)
    three = Predictor.from_checkpoint(quick_run, device="cpu", tile_batch_size=3).predict(image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(one.labels), sitk.GetArrayFromImage(three.labels))


def test_tta_runs_and_keeps_geometry(quick_run):
    image, _ = generate_phantom(3, shape=(16, 32, 32))
    result = Predictor.from_checkpoint(quick_run, device="cpu", tta=True).predict(image)
    assert result.labels.GetSize() == image.GetSize()


def test_bad_inputs_are_clear_errors(predictor, tmp_path):
    image, _ = generate_phantom(1, shape=(16, 32, 32))
    with pytest.raises(DataError, match="expects 1 input channel"):
        predictor.predict([image, image])
    flat = sitk.Image(32, 32, sitk.sitkFloat32)
    with pytest.raises(DataError, match="3D"):
        predictor.predict(flat)
    with pytest.raises(DataError, match="file not found"):
        predictor.predict(tmp_path / "missing.nii.gz")


def test_predict_command_on_a_folder(quick_run, phantom_dataset, tmp_path, capsys):
    out = tmp_path / "pred"
    rc = main(
        [
            "predict",
            "-m",
            str(quick_run),
            "-i",
            str(phantom_dataset / "imagesTr"),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--progress",
            "none",
            "--save-queries",
        ]
    )
    assert rc == 0
    cases = sorted(p.name for p in out.glob("*.nii.gz"))
    assert cases == [f"phantom_00{i}.nii.gz" for i in range(4)]
    ref = sitk.ReadImage(str(phantom_dataset / "labelsTr" / "phantom_000.nii.gz"))
    assert sitk.ReadImage(str(out / "phantom_000.nii.gz")).GetSize() == ref.GetSize()


def test_predict_into_an_unwritable_place_fails_cleanly(quick_run, phantom_dataset, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc = main(
        [
            "predict",
            "-m",
            str(quick_run),
            "-i",
            str(phantom_dataset / "imagesTr"),
            "-o",
            str(blocker / "out"),
            "--device",
            "cpu",
            "--progress",
            "none",
        ]
    )
    assert rc == 2
    assert "cannot create output folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_predict_with_a_bad_checkpoint(tmp_path, phantom_dataset, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    rc = main(["predict", "-m", str(bad), "-i", str(phantom_dataset / "imagesTr"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "truncated or corrupt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_padded_batch_gives_the_unpadded_outputs():
    """The copy sent along to keep a batch-1 CPU call on oneDNN must not change the real tile's outputs."""
    from MaskMedCore.config import ModelConfig
    from MaskMedCore.inference.cpu_batching import forward_batch_padded, needs_batch_padding
    from MaskMedCore.models.build import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("tiny", 1, 3)).eval()
    model.deep_supervision = False
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        plain, padded = model(x), forward_batch_padded(model, x, 2)
    assert padded.class_logits.shape[0] == 1 and padded.mask_logits[-1].shape[0] == 1
    for a, b in ((plain.class_logits, padded.class_logits), (plain.mask_logits[-1], padded.mask_logits[-1])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert needs_batch_padding(torch.device("cpu"), 8, (40, 56, 40))
    assert not needs_batch_padding(torch.device("cpu"), 32, (128, 128, 128))
    assert not needs_batch_padding(torch.device("cuda"), 8, (40, 56, 40))
