"""Sliding-window prediction: tiling, Gaussian blending, batching, mirroring TTA, OOM fallback, cancel."""

import itertools

import pytest
import torch

from MaskMedCore.errors import MaskMedError
from MaskMedCore.inference import (
    InferenceCancelled,
    InferenceOutOfMemory,
    gaussian_importance_map,
    sliding_window_predict,
    tile_positions,
)

PATCH = (8, 10, 12)


def image_of(shape, channels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((channels, *shape), generator=g)


def identity(x):
    return x


def mix_channels(x):
    """Elementwise and flip-equivariant: (B, 2, d, h, w) -> (B, 3, d, h, w)."""
    a, b = x[:, 0], x[:, 1]
    return torch.stack([a + 2 * b, torch.tanh(a) * b, a * a - b], dim=1)


@pytest.mark.parametrize(
    "size, patch, overlap, expected",
    [
        (100, 64, 0.5, [0, 18, 36]),  # ceil(36 / 32) + 1 = 3 steps
        (64, 64, 0.5, [0]),
        (65, 64, 0.5, [0, 1]),
        (128, 32, 0.5, [0, 16, 32, 48, 64, 80, 96]),
        (128, 32, 0.0, [0, 32, 64, 96]),
        (10, 4, 0.25, [0, 3, 6]),  # target step 3 voxels: ceil(6 / 3) + 1 = 3 steps
        (11, 4, 0.25, [0, 2, 5, 7]),  # ceil(7 / 3) + 1 = 4 steps, 7/3 apart, rounded
    ],
)
def test_tile_starts_follow_nnunet(size, patch, overlap, expected):
    starts = [sl[0].start for sl in tile_positions((size, patch, patch), (patch, patch, patch), overlap)]
    assert starts == expected


@pytest.mark.parametrize("shape", [(16, 20, 24), (19, 23, 13), (8, 10, 12), (30, 11, 40)])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_tiles_cover_every_voxel_and_stay_inside(shape, overlap):
    tiles = tile_positions(shape, PATCH, overlap)
    count = torch.zeros(shape, dtype=torch.int32)
    for sl in tiles:
        assert all(s.stop - s.start == p and 0 <= s.start and s.stop <= n for s, p, n in zip(sl, PATCH, shape))
        count[sl] += 1
    assert bool((count > 0).all())


def test_gaussian_importance_map():
    g = gaussian_importance_map(PATCH, 1 / 8)
    assert g.shape == PATCH and g.dtype == torch.float32
    assert g.max() == 1.0 and g[4, 5, 6] == 1.0  # centre p // 2
    assert bool((g > 0).all())
    torch.testing.assert_close(g[4, 5, 1:], g[4, 5, 1:].flip(0))  # symmetric about the centre
    # A narrow Gaussian underflows in fp16; the zeros are replaced by the smallest non-zero value.
    narrow = gaussian_importance_map((64, 64, 64), 1 / 64, dtype=torch.float16)
    exact = gaussian_importance_map((64, 64, 64), 1 / 64, dtype=torch.float64)
    underflowed = exact.to(torch.float16) == 0
    assert underflowed.any() and bool((narrow > 0).all())
    assert bool((narrow[underflowed] == narrow[~underflowed].min()).all())


@pytest.mark.parametrize("shape", [(16, 20, 24), (19, 23, 13), (5, 6, 30), (3, 4, 5)])
def test_identity_reconstructs_the_input(shape):
    """Multiples of the patch, not multiples, and smaller than the patch (zero-padded, cropped back)."""
    image = image_of(shape)
    out = sliding_window_predict(image, identity, PATCH, overlap=0.5)
    assert out.shape == image.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, image, rtol=1e-6, atol=1e-6)


def test_constant_prediction_is_returned_everywhere():
    image = image_of((19, 23, 13), channels=1)

    def constant(x):
        B, C, d, h, w = x.shape
        return torch.full((B, 4, d, h, w), 0.25)

    out = sliding_window_predict(image, constant, PATCH)
    assert out.shape == (4, 19, 23, 13)
    assert torch.equal(out, torch.full_like(out, 0.25))  # a power of two: exact in float arithmetic

    def constant64(x):
        B, C, d, h, w = x.shape
        return torch.full((B, 4, d, h, w), 0.675, dtype=torch.float64)

    out = sliding_window_predict(image, constant64, PATCH, accumulate_dtype=torch.float64)
    torch.testing.assert_close(out, torch.full_like(out, 0.675), rtol=1e-14, atol=0)


def test_uniform_weights_option():
    image = image_of((19, 23, 13))
    out = sliding_window_predict(image, identity, PATCH, gaussian_sigma_scale=None)
    torch.testing.assert_close(out, image, rtol=1e-6, atol=1e-6)


def test_tile_batch_size_does_not_change_the_result():
    image = image_of((19, 23, 13))
    one = sliding_window_predict(image, mix_channels, PATCH, tile_batch_size=1)
    three = sliding_window_predict(image, mix_channels, PATCH, tile_batch_size=3)
    assert one.shape == (3, 19, 23, 13)
    assert torch.equal(one, three)


def test_small_conv_network_batches_agree():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1)).eval()
    image = image_of((12, 14, 16))
    one = sliding_window_predict(image, net, PATCH, tile_batch_size=1)
    three = sliding_window_predict(image, net, PATCH, tile_batch_size=3)
    torch.testing.assert_close(one, three, rtol=1e-5, atol=1e-6)


def test_mirroring_with_an_equivariant_fn_changes_nothing():
    image = image_of((19, 23, 13))
    plain = sliding_window_predict(image, mix_channels, PATCH)
    tta = sliding_window_predict(image, mix_channels, PATCH, mirror_axes=(0, 1, 2))
    torch.testing.assert_close(tta, plain, rtol=1e-5, atol=1e-6)


def ramp_along_w(x):
    """Not flip-equivariant: scales voxel w of each tile by w."""
    w = x.shape[-1]
    return x * torch.arange(w, dtype=x.dtype)


def test_mirroring_with_a_non_equivariant_fn_averages_the_flips():
    # One tile exactly: the W-mirror average of x * w and flip(flip(x) * w) is x * (w_size - 1) / 2.
    image = image_of(PATCH)
    tta = sliding_window_predict(image, ramp_along_w, PATCH, mirror_axes=(2,))
    torch.testing.assert_close(tta, image * (PATCH[2] - 1) / 2, rtol=1e-5, atol=1e-5)
    # Mirroring only D leaves a W ramp unchanged; on a tiled volume, mirroring W changes the result.
    torch.testing.assert_close(
        sliding_window_predict(image, ramp_along_w, PATCH, mirror_axes=(0,)), ramp_along_w(image[None])[0]
    )
    big = image_of((19, 23, 13))
    plain = sliding_window_predict(big, ramp_along_w, PATCH)
    tta = sliding_window_predict(big, ramp_along_w, PATCH, mirror_axes=(2,))
    assert not torch.allclose(plain, tta, atol=1e-3)


def test_mirroring_calls_the_fn_once_per_axis_subset():
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return x

    sliding_window_predict(image_of(PATCH), counting, PATCH, mirror_axes=(0, 2), tile_batch_size=4)
    assert calls == [1, 1, 1, 1]  # one tile, {}, {D}, {W}, {D, W}


def test_out_of_memory_halves_the_batch_and_matches_batch_one():
    image = image_of((19, 23, 13))
    batches = []

    def fragile(x):
        batches.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return mix_channels(x)

    with pytest.warns(RuntimeWarning, match="out of memory") as record:
        out = sliding_window_predict(image, fragile, PATCH, tile_batch_size=4)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "predicting 4 tiles at once on cpu; retrying with tile batch 2" in messages[0]
    assert "predicting 2 tiles at once on cpu; retrying with tile batch 1" in messages[1]
    assert batches[:3] == [4, 2, 1] and set(batches[3:]) == {1}
    assert torch.equal(out, sliding_window_predict(image, mix_channels, PATCH, tile_batch_size=1))


def test_out_of_memory_at_batch_one_moves_to_the_cpu():
    # The "meta" device stands in for a GPU here: any non-CPU device takes the same path.
    image = image_of((12, 14, 16))
    devices = []

    def gpu_too_small(x):
        devices.append(x.device.type)
        if x.device.type != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return mix_channels(x)

    with pytest.warns(RuntimeWarning, match="out of memory") as record:
        out = sliding_window_predict(image, gpu_too_small, PATCH, device="meta", tile_batch_size=2)
    assert "retrying with tile batch 1" in str(record[0].message)
    assert "single tile on meta; continuing on the CPU" in str(record[1].message) and len(record) == 2
    assert devices[:3] == ["meta", "meta", "cpu"] and set(devices[3:]) == {"cpu"}
    assert torch.equal(out, sliding_window_predict(image, mix_channels, PATCH, tile_batch_size=1))


def test_out_of_memory_on_the_cpu_at_batch_one_is_a_clear_error():
    def always_oom(x):
        raise torch.cuda.OutOfMemoryError("out of memory (simulated)")

    with pytest.raises(InferenceOutOfMemory, match="single tile on the CPU"):
        sliding_window_predict(image_of(PATCH), always_oom, PATCH, tile_batch_size=1)


def test_progress_reports_increasing_tile_counts():
    image = image_of((19, 23, 13))
    total = len(tile_positions((19, 23, 13), PATCH, 0.5))
    seen = []
    sliding_window_predict(image, identity, PATCH, tile_batch_size=3, progress=lambda d, t: seen.append((d, t)))
    expected_done = list(range(3, total, 3)) + [total]
    assert seen == [(d, total) for d in expected_done]


def test_cancel_stops_between_batches():
    image = image_of((19, 23, 13))
    calls = itertools.count()
    predicted = []

    def fn(x):
        predicted.append(x.shape[0])
        return x

    with pytest.raises(InferenceCancelled, match="after 4 of"):
        sliding_window_predict(image, fn, PATCH, tile_batch_size=2, cancel=lambda: next(calls) >= 2)
    assert predicted == [2, 2]
    assert issubclass(InferenceCancelled, MaskMedError)


def test_accumulate_in_float16():
    # σ = 1 voxel makes the tile-corner weights (~1e-17) far smaller than float16 can hold; the
    # weight floor keeps voxels that only a tile corner reaches (the image corners) accurate.
    image = image_of((19, 23, 13))
    out = sliding_window_predict(image, identity, PATCH, accumulate_dtype=torch.float16)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), image, rtol=5e-3, atol=1e-3)  # a few float16 roundings


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": torch.zeros(1, 8, 8)}, "image"),
        ({"patch_size": (8, 0, 8)}, "patch_size"),
        ({"patch_size": (8, 8)}, "patch_size"),
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"tile_batch_size": 0}, "tile_batch_size"),
        ({"mirror_axes": (3,)}, "mirror_axes"),
        ({"mirror_axes": (1, 1)}, "mirror_axes"),
        ({"gaussian_sigma_scale": 0.0}, "sigma_scale"),
        ({"predict_fn": lambda x: x[:, :, :-1]}, "spatial size"),
        ({"predict_fn": lambda x: x[0]}, r"\(B, K, d, h, w\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"image": image_of((8, 8, 8)), "predict_fn": identity, "patch_size": (8, 8, 8), **kwargs}
    image, predict_fn, patch = args.pop("image"), args.pop("predict_fn"), args.pop("patch_size")
    with pytest.raises(ValueError, match=match):
        sliding_window_predict(image, predict_fn, patch, **args)


def test_centred_padding_shows_the_network_the_input_in_the_middle():
    """nnU-Net pads an input smaller than the patch on both sides; the network sees it centred, and the
    result is cropped back to the input."""
    image = torch.arange(1, 1 + 3 * 5 * 4, dtype=torch.float32).reshape(1, 3, 5, 4)
    seen = []

    def record(tiles):
        seen.append(tiles.clone())
        return tiles

    out = sliding_window_predict(image, record, (8, 8, 8), center_padding=True)
    torch.testing.assert_close(out, image)
    tile = seen[0][0, 0]
    nonzero = tile.nonzero()
    assert nonzero.min(0).values.tolist() == [2, 1, 2]  # pad before = (8 - size) // 2 per axis
    assert nonzero.max(0).values.tolist() == [4, 5, 5]


def test_an_explicit_importance_map_replaces_the_gaussian():
    image = torch.zeros(1, 12, 8, 8)
    calls = iter([1.0, 3.0])

    def constant(tiles):
        return torch.full_like(tiles, next(calls))

    weights = torch.ones(8, 8, 8)
    weights[:, :, :] = torch.linspace(1, 2, 8)[:, None, None]  # heavier towards each tile's last slices
    out = sliding_window_predict(image, constant, (8, 8, 8), overlap=0.5, tile_batch_size=1, importance_map=weights)
    # rows 4..7 are covered by both tiles: tile 1 (value 1) at its rows 4..7 (weights 1.57..2),
    # tile 2 (value 3) at its rows 0..3 (weights 1..1.43); the average follows the weights
    w1, w2 = torch.linspace(1, 2, 8)[4:], torch.linspace(1, 2, 8)[:4]
    torch.testing.assert_close(out[0, 4:8, 0, 0], (w1 * 1 + w2 * 3) / (w1 + w2))
    with pytest.raises(ValueError, match="importance_map has shape"):
        sliding_window_predict(image, constant, (8, 8, 8), importance_map=torch.ones(4, 4, 4))
