"""PatchSampler and enlarged_patch_size: nnU-Net's oversampling rule, centring, padding, tiny images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from MaskMedCore.config.augmentation_config import AugmentationConfig
from MaskMedCore.data.sampling import PatchSampler, augmentation_sample_size, enlarged_patch_size, foreground_forced
from MaskMedCore.errors import DataError


@dataclass
class Case:
    """A preprocessed case held in memory (the contract's image / labels / class_locations)."""

    image: np.ndarray
    labels: np.ndarray
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)


def locations(labels: np.ndarray, every: int = 1) -> dict[int, np.ndarray]:
    """Stored voxels per foreground class; ``every`` > 1 keeps only a subset, like nnU-Net's."""
    return {int(k): np.argwhere(labels == k)[::every].astype(np.int64) for k in np.unique(labels) if k != 0}


def blob_case(shape, centre, radius, label=1, channels=1, seed=0) -> Case:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int16)
    d, h, w = centre
    labels[d - radius : d + radius + 1, h - radius : h + radius + 1, w - radius : w + radius + 1] = label
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    return Case(image, labels, locations(labels))


@pytest.mark.parametrize(
    ("B", "forced"), [(1, []), (2, [1]), (3, [2]), (4, [3]), (5, [3, 4]), (6, [4, 5]), (12, [8, 9, 10, 11])]
)
def test_oversampling_rule_table(B, forced):
    # round(B * 0.67): with B=2 one of two samples (50 %) is forced, with B=1 none.
    assert [j for j in range(B) if foreground_forced(j, B, 0.33)] == forced


def test_forced_samples_contain_foreground():
    cases = [
        blob_case((40, 40, 40), c, 1, label=k, seed=i) for i, (c, k) in enumerate([((5, 30, 8), 1), ((33, 6, 20), 2)])
    ]
    patch, sample = (16, 16, 16), (24, 24, 24)
    sampler = PatchSampler(cases, patch, sample, batch_size=3)
    rng = np.random.default_rng(0)
    free_with_fg = 0
    off = [(s - p) // 2 for s, p in zip(sample, patch)]
    for _ in range(60):
        images, labels = sampler.sample_batch(rng)
        assert images.shape == (3, 1, *sample) and images.dtype == np.float32
        assert labels.shape == (3, *sample) and labels.dtype == np.int16
        centre_patch = labels[2, off[0] : off[0] + 16, off[1] : off[1] + 16, off[2] : off[2] + 16]
        assert (centre_patch > 0).any(), "the forced sample's final patch must contain foreground"
        free_with_fg += int((labels[:2] > 0).any(axis=(1, 2, 3)).sum())
    # tiny blobs in a 40^3 volume: uniform crops mostly miss them, so the rule is doing the work
    assert free_with_fg < 60


def test_forced_crop_is_centred_on_a_stored_voxel():
    shape = (40, 40, 40)
    labels = np.zeros(shape, dtype=np.int16)
    labels[15:25, 12:28, 18:22] = 1
    labels[10:13, 10:13, 25:30] = 2
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float32)
    case = Case(coords, labels, locations(labels, every=3))  # channels hold (d, h, w) of each voxel
    stored = {k: {tuple(v) for v in vox} for k, vox in case.class_locations.items()}
    patch, sample = (8, 9, 10), (14, 13, 16)
    sampler = PatchSampler([case], patch, sample, batch_size=1, oversample_foreground=1.0)
    centre = [(s - p) // 2 + p // 2 for s, p in zip(sample, patch)]
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(100):
        images, out = sampler.sample_batch(rng)
        voxel = tuple(int(v) for v in images[0, :, centre[0], centre[1], centre[2]])
        k = int(out[0, centre[0], centre[1], centre[2]])
        assert voxel in stored[k], f"centre voxel {voxel} (label {k}) is not a stored voxel"
        seen.add(k)
    assert seen == {1, 2}, "both foreground classes must be chosen"


def test_padding_is_zero_and_stays_within_half_the_enlargement():
    shape = (20, 20, 20)
    case = Case(np.full((2, *shape), 7.0, dtype=np.float32), np.full(shape, 2, dtype=np.int16))
    patch, sample = (12, 12, 12), (20, 20, 20)
    sampler = PatchSampler([case], patch, sample, batch_size=2, oversample_foreground=0.0)
    rng = np.random.default_rng(2)
    padded = 0
    for _ in range(50):
        images, labels = sampler.sample_batch(rng)
        outside = images[:, 0] == 0.0
        assert np.array_equal(outside, labels == 0) and np.array_equal(images[:, 1] == 0.0, outside)
        assert set(np.unique(images)) <= {0.0, 7.0} and set(np.unique(labels)) <= {0, 2}
        # the final centre patch always lies inside the image
        assert (labels[:, 4:16, 4:16, 4:16] == 2).all()
        padded += int(outside.any())
    assert padded > 0, "crops must sometimes reach outside the image"


def test_image_smaller_than_patch_is_centred_and_padded():
    shape = (4, 5, 6)
    labels = np.zeros(shape, dtype=np.int16)
    labels[2, 2, 3] = 1
    case = Case(np.ones((1, *shape), dtype=np.float32), labels, locations(labels))
    patch, sample = (8, 8, 8), (12, 12, 12)
    sampler = PatchSampler([case], patch, sample, batch_size=2)
    images, out = sampler.sample_batch(np.random.default_rng(3))
    assert images.shape == (2, 1, 12, 12, 12) and out.shape == (2, 12, 12, 12)
    for b in range(2):
        inside = np.argwhere(images[b, 0] == 1.0)
        assert inside.min(axis=0).tolist() == [4, 3, 3] and inside.max(axis=0).tolist() == [7, 7, 8]
        assert images[b].sum() == np.prod(shape)
        assert out[b].sum() == 1


def test_case_without_foreground_falls_back_to_a_random_crop():
    shape = (30, 30, 30)
    case = Case(np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32), np.zeros(shape, np.int16))
    sampler = PatchSampler([case], (8, 8, 8), (12, 12, 12), batch_size=2, oversample_foreground=1.0)
    first = [sampler.sample_batch(np.random.default_rng(s))[0][:, 0, 6, 6, 6] for s in range(5)]
    assert len({tuple(v) for v in first}) > 1, "crop positions must vary"


def test_same_rng_same_batch():
    case = blob_case((30, 30, 30), (15, 15, 15), 2)
    sampler = PatchSampler([case, blob_case((24, 28, 30), (5, 5, 5), 1, seed=1)], (8, 8, 8), (12, 12, 12), 3)
    a = sampler.sample_batch(np.random.default_rng(5))
    b = sampler.sample_batch(np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_memmap_cases_are_read_not_modified(tmp_path):
    shape = (16, 16, 16)
    path = tmp_path / "image.npy"
    np.save(path, np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape))
    image = np.load(path, mmap_mode="r")
    case = Case(image, np.zeros(shape, np.int16))
    images, _ = PatchSampler([case], (8, 8, 8), (8, 8, 8), 1).sample_batch(np.random.default_rng(0))
    assert images.flags.writeable and images.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(cases=[]), ValueError, "cases"),
        (dict(sample_size=(4, 8, 8)), ValueError, "sample_size"),
        (dict(patch_size=(8, 0, 8)), ValueError, "patch_size"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(oversample_foreground=1.5), ValueError, "oversample_foreground"),
        (dict(cases=[Case(np.zeros((1, 8, 8, 8), np.float32), np.zeros((8, 8, 9), np.int16))]), DataError, "case 0"),
        (dict(cases=[Case(np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.int16))]), DataError, "case 0"),
        (dict(cases=[Case(np.zeros((1, 8, 8, 8), np.float32), None)]), DataError, "no labels"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(
        cases=[Case(np.zeros((1, 8, 8, 8), np.float32), np.zeros((8, 8, 8), np.int16))],
        patch_size=(8, 8, 8),
        sample_size=(8, 8, 8),
        batch_size=2,
    )
    with pytest.raises(error, match=match):
        PatchSampler(**{**args, **kwargs})


# ---------------------------------------------------------------------- enlarged_patch_size
def test_enlarged_patch_size_without_augmentation_is_the_patch():
    assert enlarged_patch_size((16, 24, 32), 0.0, (1.0, 1.0), False) == (16, 24, 32)
    assert augmentation_sample_size(AugmentationConfig(enabled=False), (16, 24, 32)) == (16, 24, 32)


def test_enlarged_patch_size_scaling_and_parity():
    # zooming out by 0.5 doubles the voxel-centre extent: 2 * 7.5 / 0.5 + 1 = 31 -> 32 (even enlargement)
    assert enlarged_patch_size((16, 16, 16), 0.0, (0.5, 1.0), False) == (32, 32, 32)
    size = enlarged_patch_size((16, 20, 24), 30.0, (0.85, 1.25), False)
    assert all((s - p) % 2 == 0 and s > p for s, p in zip(size, (16, 20, 24)))


def test_enlarged_patch_size_rotation_bounds():
    # a full in-plane turn needs the patch's diagonal; axis 0 stays with dummy 2D
    d, h, w = enlarged_patch_size((6, 30, 40), (-180.0, 180.0), (1.0, 1.0), True)
    assert d == 6 and h == w and 49 <= h <= 52  # diagonal of the 29 x 39 voxel-centre box is 48.6
    # small rotations enlarge less than large ones
    assert enlarged_patch_size((32,) * 3, 10.0, (1, 1), False) < enlarged_patch_size((32,) * 3, 30.0, (1, 1), False)


def test_augmentation_sample_size_follows_the_config():
    cfg = AugmentationConfig()
    assert augmentation_sample_size(cfg, (16, 16, 16)) == enlarged_patch_size((16, 16, 16), 30.0, (0.85, 1.25), False)
    elastic = augmentation_sample_size(cfg.replace(elastic_p=0.2, elastic_alpha=(0.0, 3.0)), (16, 16, 16))
    assert all(e >= s + 6 for e, s in zip(elastic, augmentation_sample_size(cfg, (16, 16, 16))))
    assert augmentation_sample_size(cfg.replace(dummy_2d=True), (4, 32, 32))[0] == 4


def test_per_axis_rotation_bound_matches_nnunet_size():
    # nnU-Net's get_patch_size: 128 * (cos 30 + sin 30) / 0.85 = 205.7 for a cube
    per_axis = enlarged_patch_size((128,) * 3, 30.0, (0.85, 1.25), False, composed_rotations=False)
    assert all(205 <= s <= 208 for s in per_axis)
    assert all(c > p for c, p in zip(enlarged_patch_size((128,) * 3, 30.0, (0.85, 1.25), False), per_axis))
