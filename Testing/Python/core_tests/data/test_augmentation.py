"""Augmenter: shapes, labels stay labels, exact centre crop, grid axis order, mirroring, determinism."""

from __future__ import annotations

import pytest
import torch

from MaskMedCore.config.augmentation_config import AugmentationConfig
from MaskMedCore.data.augmentation import Augmenter
from MaskMedCore.data.augmentation_intensity import (
    add_gaussian_noise,
    adjust_contrast,
    gamma_transform,
    gaussian_blur,
    simulate_low_resolution,
)
from MaskMedCore.data.augmentation_spatial import centre_crop, rotation_matrix, spatial_transform
from MaskMedCore.data.sampling import augmentation_sample_size

OFF = AugmentationConfig().without_randomness()


def batch(B=2, C=1, size=(20, 20, 20), values=(0, 1, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn((B, C, *size), generator=g)
    pick = torch.randint(0, len(values), (B, *size), generator=g)
    return images, torch.tensor(values)[pick]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("config", "patch", "sample", "C"),
    [
        (AugmentationConfig(), (12, 12, 12), (20, 20, 20), 1),
        (AugmentationConfig(), (8, 12, 16), (15, 18, 21), 3),
        (AugmentationConfig(dummy_2d=True), (4, 16, 16), (4, 24, 24), 2),
        (
            AugmentationConfig(elastic_p=1.0, elastic_alpha=(1.0, 2.0), elastic_sigma=(2.0, 3.0)),
            (10,) * 3,
            (16,) * 3,
            1,
        ),
        (AugmentationConfig(enabled=False), (12, 12, 12), (12, 12, 12), 2),
    ],
)
def test_output_shapes_and_dtypes(config, patch, sample, C):
    images, labels = batch(B=3, C=C, size=sample)
    for seed in range(4):
        out_images, out_labels = Augmenter(config, patch)(images, labels, gen(seed))
        assert out_images.shape == (3, C, *patch) and out_images.dtype == images.dtype
        assert out_labels.shape == (3, *patch) and out_labels.dtype == labels.dtype
        assert torch.isfinite(out_images).all()


def test_labels_stay_input_labels_under_every_spatial_transform():
    config = OFF.replace(
        rotation_p=1.0, scaling_p=1.0, elastic_p=1.0, elastic_alpha=(2.0, 3.0), elastic_sigma=(2.0, 3.0)
    )
    images, labels = batch(B=4, size=(18, 18, 18), values=(0, 2, 5))
    for seed in range(3):
        _, out = Augmenter(config, (12, 12, 12))(images, labels.to(torch.int16), gen(seed))
        assert out.dtype == torch.int16
        assert set(out.unique().tolist()) <= {0, 2, 5}


@pytest.mark.parametrize("sample", [(16, 16, 16), (17, 20, 23), (12, 12, 12)])
def test_all_probabilities_zero_is_exactly_a_centre_crop(sample):
    images, labels = batch(B=2, C=2, size=sample)
    out_images, out_labels = Augmenter(OFF, (12, 12, 12))(images, labels, gen(3))
    assert torch.equal(out_images, centre_crop(images, (12, 12, 12)))
    assert torch.equal(out_labels, centre_crop(labels, (12, 12, 12)))
    disabled_images, _ = Augmenter(AugmentationConfig(enabled=False), (12, 12, 12))(images, labels, gen(3))
    assert torch.equal(disabled_images, out_images)


@pytest.mark.parametrize("sample", [(16, 16, 16), (17, 20, 23)])
def test_zero_rotation_unit_scale_is_the_centre_crop(sample):
    # forces the grid_sample path with an identity transform
    config = OFF.replace(rotation_p=1.0, rotation_degrees=(0.0, 0.0), scaling_p=1.0, scaling_range=(1.0, 1.0))
    images, labels = batch(B=2, C=2, size=sample)
    out_images, out_labels = Augmenter(config, (12, 12, 12))(images, labels, gen(0))
    torch.testing.assert_close(out_images, centre_crop(images, (12, 12, 12)), atol=1e-5, rtol=0)
    assert torch.equal(out_labels, centre_crop(labels, (12, 12, 12)))


@pytest.mark.parametrize(
    ("angles", "dims"),
    [((90, 0, 0), (1, 2)), ((0, 90, 0), (2, 0)), ((0, 0, 90), (0, 1)), ((-90, 0, 0), (2, 1))],
)
def test_quarter_turn_equals_rot90(angles, dims):
    # A swapped (x, y, z) grid order would turn a different plane and fail this.
    images, labels = batch(B=1, C=1, size=(11, 11, 11), values=tuple(range(7)))
    A = rotation_matrix(angles).T[None]
    out_images, out_labels = spatial_transform(images, labels, (11, 11, 11), A)
    torch.testing.assert_close(out_images, torch.rot90(images, 1, [d + 2 for d in dims]), atol=1e-5, rtol=0)
    assert torch.equal(out_labels, torch.rot90(labels, 1, [d + 1 for d in dims]))


def test_quarter_turn_through_the_augmenter_with_a_crop():
    # dummy 2D rotates about axis 0 only; sample 14^3 -> patch 10^3 keeps the rotation centre
    config = OFF.replace(dummy_2d=True, rotation_p=1.0, rotation_degrees_dummy_2d=(90.0, 90.0))
    images, labels = batch(B=2, C=2, size=(14, 14, 14), values=(0, 1, 2, 3))
    out_images, out_labels = Augmenter(config, (10, 10, 10))(images, labels, gen(0))
    expected = centre_crop(torch.rot90(images, 1, (3, 4)), (10, 10, 10))
    torch.testing.assert_close(out_images, expected, atol=1e-5, rtol=0)
    assert torch.equal(out_labels, centre_crop(torch.rot90(labels, 1, (2, 3)), (10, 10, 10)))


def test_mirroring_flips_image_and_labels_together():
    labels = batch(B=4, size=(10, 12, 14), values=(0, 1, 2, 3))[1]
    images = labels[:, None].float()  # intensity == label
    always = OFF.replace(mirror_p=1.0)
    out_images, out_labels = Augmenter(always, (8, 10, 12))(images, labels, gen(0))
    assert torch.equal(out_images[:, 0], out_labels.float())
    assert torch.equal(out_labels, torch.flip(centre_crop(labels, (8, 10, 12)), (1, 2, 3)))
    crop = centre_crop(labels, (8, 10, 12))
    flipped = []
    for seed in range(12):
        out_images, out_labels = Augmenter(OFF.replace(mirror_p=0.5), (8, 10, 12))(images, labels, gen(seed))
        assert torch.equal(out_images[:, 0], out_labels.float())
        flipped += [not torch.equal(out_labels[b], crop[b]) for b in range(4)]
    assert any(flipped) and not all(flipped), "with p 0.5 some samples flip and some do not"


def test_same_seed_same_result_and_global_rng_untouched():
    config = AugmentationConfig(elastic_p=0.5, elastic_alpha=(1.0, 2.0), elastic_sigma=(2.0, 3.0)).replace(
        noise_p=1.0, rotation_p=0.5
    )
    images, labels = batch(B=3, C=2, size=(18, 18, 18))
    augment = Augmenter(config, (12, 12, 12))
    state = torch.get_rng_state()
    a = augment(images, labels, gen(11))
    b = augment(images, labels, gen(11))
    c = augment(images, labels, gen(12))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "name", ["noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p", "inverted_gamma_p", "gamma_p"]
)
def test_each_intensity_transform_keeps_shape_and_finite_values(name):
    config = OFF.replace(**{name: 1.0}, blur_p_per_channel=1.0, lowres_p_per_channel=1.0)
    images, labels = batch(B=2, C=2, size=(12, 12, 12))
    out_images, out_labels = Augmenter(config, (12, 12, 12))(images, labels, gen(0))
    assert out_images.shape == images.shape and torch.isfinite(out_images).all()
    assert not torch.allclose(out_images, images), f"{name} at p 1 must change the image"
    assert torch.equal(out_labels, labels), "intensity transforms never touch labels"


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("gamma", [0.7, 1.5])
def test_gamma_retain_stats_keeps_mean_and_std(gamma, invert):
    x = torch.randn((10, 11, 12), generator=gen(0)) * 3 + 2
    y = gamma_transform(x, gamma, invert=invert, retain_stats=True)
    assert not torch.allclose(x, y)
    torch.testing.assert_close(y.mean(), x.mean(), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(correction=0), x.std(correction=0), atol=1e-4, rtol=0)


def test_gamma_without_retain_stats_keeps_the_range():
    x = torch.rand((8, 8, 8), generator=gen(1)) * 5 - 1
    y = gamma_transform(x, 1.5, invert=False, retain_stats=False)
    assert y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5
    assert y.mean() < x.mean()  # gamma > 1 darkens


@pytest.mark.parametrize("factor", [0.75, 1.25, 3.0])
def test_contrast_preserve_range_stays_within_the_original_range(factor):
    x = torch.randn((9, 9, 9), generator=gen(2))
    y = adjust_contrast(x, factor, preserve_range=True)
    assert y.min() >= x.min() and y.max() <= x.max()
    if factor > 1:
        assert not torch.allclose(adjust_contrast(x, factor, preserve_range=False).clamp(x.min(), x.max()), x)


def test_blur_noise_and_lowres_behave():
    x = torch.randn((12, 12, 12), generator=gen(3))
    assert gaussian_blur(x, (1.0, 1.0, 1.0)).std() < x.std()
    torch.testing.assert_close(gaussian_blur(torch.full((6, 6, 6), 2.0), (0.8, 0.6, 0.5)), torch.full((6, 6, 6), 2.0))
    noisy = add_gaussian_noise(torch.zeros((1, 20, 20, 20)), 0.09, gen(4))
    assert abs(noisy.std().item() - 0.3) < 0.03
    # in-plane low resolution leaves an image that only varies along D untouched (dummy-2D rule)
    ramp = torch.arange(8.0)[:, None, None].expand(8, 10, 10)
    torch.testing.assert_close(simulate_low_resolution(ramp, (1.0, 0.5, 0.5)), ramp)
    assert not torch.allclose(simulate_low_resolution(ramp, (0.5, 0.5, 0.5)), ramp)


@pytest.mark.parametrize(
    "config",
    [
        OFF.replace(rotation_p=1.0, scaling_p=1.0, scaling_range=(0.85, 1.25)),
        OFF.replace(rotation_p=1.0, scaling_p=1.0, dummy_2d=True, scaling_range=(0.85, 1.25)),
        OFF.replace(
            rotation_p=1.0,
            elastic_p=1.0,
            elastic_alpha=(0.0, 2.0),
            elastic_sigma=(2.0, 3.0),
            scaling_range=(0.85, 1.25),
        ),
    ],
)
def test_enlarged_sample_leaves_no_border(config):
    patch = (10, 12, 14) if not config.dummy_2d else (3, 14, 16)
    sample = augmentation_sample_size(config, patch)
    images = torch.ones((4, 1, *sample))
    labels = torch.ones((4, *sample), dtype=torch.long)
    for seed in range(10):
        out_images, out_labels = Augmenter(config, patch)(images, labels, gen(seed))
        assert (out_labels == 1).all(), "a zero border means the sample size is too small"
        torch.testing.assert_close(out_images, torch.ones_like(out_images), atol=1e-4, rtol=0)


def test_bad_inputs_are_named():
    augment = Augmenter(AugmentationConfig(), (8, 8, 8))
    images, labels = batch(B=1, size=(8, 8, 8))
    with pytest.raises(ValueError, match="images"):
        augment(images[0], labels, gen())
    with pytest.raises(ValueError, match="labels"):
        augment(images, labels.float(), gen())
    with pytest.raises(ValueError, match="smaller than patch_size"):
        augment(images[..., :6], labels[..., :6], gen())
    with pytest.raises(ValueError, match="patch_size"):
        Augmenter(AugmentationConfig(), (8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_tensors_device():
    config = AugmentationConfig(elastic_p=0.5, elastic_alpha=(1.0, 2.0), elastic_sigma=(2.0, 3.0)).replace(noise_p=1.0)
    images, labels = batch(B=2, C=2, size=(18, 18, 18))
    a = Augmenter(config, (12, 12, 12))(images.cuda(), labels.cuda(), gen(5))
    b = Augmenter(config, (12, 12, 12))(images.cuda(), labels.cuda(), gen(5))
    assert a[0].device.type == "cuda" and a[1].device.type == "cuda"
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
