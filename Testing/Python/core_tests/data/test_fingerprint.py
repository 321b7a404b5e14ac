"""Fingerprint: spacing and cropped shape per case, seeded foreground intensity statistics per channel."""

import json

import numpy as np
import pytest
from raw_dataset_builders import case_arrays, link_spleen_msd, nnunet_dataset

from MaskMedCore.data.dataset import load_dataset
from MaskMedCore.data.fingerprint import compute_fingerprint, intensity_stats

SHAPE = (20, 24, 28)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp")
    nnunet_dataset(root, num_cases=3, channel_names=("T1", "T2"), shape=SHAPE, spacing=(2.0, 0.9, 0.8))
    return load_dataset(root)


def test_spacing_and_shape_after_crop(dataset):
    fp = compute_fingerprint(dataset, num_samples=30_000)
    assert [c["case_id"] for c in fp["cases"]] == ["case_000", "case_001", "case_002"]
    for case in fp["cases"]:
        assert case["spacing"] == pytest.approx([2.0, 0.9, 0.8])
        assert case["shape_before_crop"] == list(SHAPE)
        assert case["shape_after_crop"] == [14, 17, 20]  # the builder's non-zero "body" box
    assert fp["median_relative_size_after_cropping"] == pytest.approx(14 * 17 * 20 / np.prod(SHAPE))
    json.dumps(fp)  # JSON-serialisable


def test_foreground_statistics_match_the_pooled_foreground(dataset):
    fp = compute_fingerprint(dataset, num_samples=90_000)
    for c in range(2):
        pooled = np.concatenate([x[c][y > 0] for x, y in (case_arrays(SHAPE, 3, 2, seed=i) for i in range(3))])
        stats = fp["foreground_intensity_properties_per_channel"][str(c)]
        assert stats["mean"] == pytest.approx(pooled.mean(), rel=0.01)
        assert stats["std"] == pytest.approx(pooled.std(), rel=0.05)
        assert stats["median"] == pytest.approx(np.median(pooled), rel=0.01)
        assert pooled.min() <= stats["min"] <= stats["percentile_00_5"] < stats["percentile_99_5"] <= stats["max"]
        assert stats["max"] <= pooled.max()


def test_seeded_and_independent_of_worker_count(dataset):
    a = compute_fingerprint(dataset, workers=1, seed=3, num_samples=9_000)
    b = compute_fingerprint(dataset, workers=2, seed=3, num_samples=9_000)
    c = compute_fingerprint(dataset, workers=1, seed=4, num_samples=9_000)
    assert a == b
    assert a["foreground_intensity_properties_per_channel"] != c["foreground_intensity_properties_per_channel"]


def test_empty_pool_gives_none_statistics():
    assert intensity_stats(np.zeros(0)) == {k: None for k in intensity_stats(np.ones(3))}


@pytest.mark.realdata
def test_spleen_ct_fingerprint(shared_data, tmp_path):
    ds = load_dataset(link_spleen_msd(shared_data, tmp_path / "spleen"))
    fp = compute_fingerprint(ds, num_samples=50_000)
    (case,) = fp["cases"]
    assert case["case_id"] == "spleen_2"  # the symlink's name, not its target's
    assert case["spacing"] == pytest.approx([5.0, 0.795, 0.795], abs=1e-3)
    assert case["shape_before_crop"] == [26, 166, 164]
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert 50 < stats["median"] < 200  # contrast-enhanced spleen, in HU
    assert stats["percentile_00_5"] < stats["mean"] < stats["percentile_99_5"]
