"""Constant tiles (CT air, padding) are predicted once per value and reused: same outputs, fewer passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunet_result_builders import write_checkpoint, write_result_folder

from MaskMedCore.config import ModelConfig
from MaskMedCore.data.phantom import generate_phantom
from MaskMedCore.inference.constant_tiles import ConstantTileForward, constant_tile_key
from MaskMedCore.inference.predictor import Predictor
from MaskMedCore.models.build import build_model
from MaskMedCore.models.outputs import MaskMedOutput
from MaskMedCore.nnunet import read_result_folder
from MaskMedCore.nnunet.network import model_config
from MaskMedCore.nnunet.predictor import NnUNetModelPredictor
from MaskMedCore.nnunet.weights import maskmed_to_nnunet_state


def test_constant_tile_key():
    tile = torch.full((2, 4, 5, 6), 3.5)
    tile[1] = -1.25
    assert constant_tile_key(tile) == ((2, 4, 5, 6), torch.float32, torch.device("cpu"), (3.5, -1.25))
    tile[0, 1, 2, 3] = 3.50001
    assert constant_tile_key(tile) is None
    assert constant_tile_key(torch.full((1, 3, 3, 3), float("nan"))) is None
    # The same value at another tile size is another key: the network output has another shape.
    assert constant_tile_key(torch.zeros(1, 4, 4, 4)) != constant_tile_key(torch.zeros(1, 4, 4, 8))


def _outputs_close(a: MaskMedOutput, b: MaskMedOutput) -> None:
    torch.testing.assert_close(a.class_logits, b.class_logits, rtol=1e-5, atol=1e-5)
    for x, y in zip(a.mask_logits, b.mask_logits, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.class_embeddings, b.class_embeddings, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.mask_embeddings, b.mask_embeddings, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_stored", [4, 0])
def test_reused_outputs_equal_the_network_outputs(max_stored):
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", 1, 3)
    model = build_model(cfg).eval()
    model.deep_supervision = False
    calls = []

    def forward(tiles):
        calls.append(tiles.shape[0])
        return model(tiles)

    reuse = ConstantTileForward(forward, max_stored=max_stored)
    noise = torch.randn(1, 1, 16, 16, 16)
    air, pad = torch.full_like(noise, -1.7), torch.zeros_like(noise)
    with torch.no_grad():
        batches = [torch.cat([air, noise, air]), torch.cat([pad, air, pad]), torch.cat([noise, noise])]
        for tiles in batches:
            _outputs_close(reuse(tiles), model(tiles))
    if max_stored:
        # Batch 1 computes air once and noise; batch 2 only padding; batch 3 both noise tiles.
        assert calls == [2, 1, 2] and (reuse.computed, reuse.reused) == (5, 3)
    else:
        # Nothing stored: within a batch a value is still computed once; across batches every time.
        assert calls == [2, 2, 2] and (reuse.computed, reuse.reused) == (6, 2)


def _air_framed_phantom(seed: int) -> sitk.Image:
    """A small phantom CT inside a wide frame of constant air, as a whole scan's field of view around a body."""
    image, _ = generate_phantom(seed, shape=(20, 40, 44), spacing=(2.0, 1.5, 1.5))
    array = np.pad(sitk.GetArrayFromImage(image), ((20, 20), (64, 64), (64, 64)), constant_values=-1000)
    framed = sitk.GetImageFromArray(array)
    framed.SetSpacing(image.GetSpacing())
    framed.SetOrigin(image.GetOrigin())
    return framed


def test_predictor_reuses_air_tiles_with_identical_results(quick_run):
    image = _air_framed_phantom(3)
    plain = Predictor.from_checkpoint(quick_run, device="cpu", reuse_constant_tiles=False)
    reuse = Predictor.from_checkpoint(quick_run, device="cpu")
    a, b = plain.predict(image, save_queries=True), reuse.predict(image, save_queries=True)
    assert reuse.tile_counts["reused"] > 0 and reuse.tile_counts["computed"] > 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.labels), sitk.GetArrayFromImage(b.labels))
    # Query statistics see every tile, reused ones included.
    np.testing.assert_allclose(a.class_probabilities, b.class_probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.class_embeddings, b.class_embeddings, rtol=1e-4, atol=1e-5)
    for qa, qb in zip(a.query_probabilities, b.query_probabilities, strict=True):
        np.testing.assert_allclose(sitk.GetArrayFromImage(qa), sitk.GetArrayFromImage(qb), atol=1e-5)


def test_nnunet_folds_never_share_a_stored_tile(tmp_path):
    """Two folds with different weights: a tile stored for fold 0 must not answer for fold 1."""
    folder = write_result_folder(tmp_path, folds=(0, 1))
    for fold in (0, 1):
        torch.manual_seed(fold)
        weights = maskmed_to_nnunet_state(build_model(model_config(read_result_folder(folder))).state_dict())
        plans, dataset = (json.loads((folder / name).read_text()) for name in ("plans.json", "dataset.json"))
        write_checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pth", plans, dataset, fold, weights)
    rng = np.random.default_rng(0)
    array = np.full((40, 150, 160), 7.0, np.float32)  # constant frame (not 0: nnU-Net crops zeros away)
    array[10:30, 60:90, 60:100] = rng.normal(50, 10, (20, 30, 40))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    plain = NnUNetModelPredictor(folder, folds=[0, 1], device="cpu", reuse_constant_tiles=False)
    reuse = NnUNetModelPredictor(folder, folds=[0, 1], device="cpu")
    from MaskMedCore.nnunet.preprocessing import preprocess

    data, _ = preprocess([image], plain.preprocessing)
    expected, got = plain.logits(data), reuse.logits(data)
    assert reuse.tile_counts["reused"] > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
