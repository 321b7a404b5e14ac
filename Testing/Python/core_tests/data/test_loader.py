"""BatchLoader: shapes and dtypes, reproducible per seed, different per rank, clean shutdown."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from MaskMedCore.data.loader import BatchLoader
from MaskMedCore.data.sampling import PatchSampler


@dataclass
class Case:
    image: np.ndarray
    labels: np.ndarray
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)


def make_sampler(batch_size: int = 2) -> PatchSampler:
    rng = np.random.default_rng(0)
    cases = []
    for shape in [(24, 24, 24), (20, 28, 22), (16, 16, 30)]:
        labels = (rng.random(shape) > 0.97).astype(np.int16) * rng.integers(1, 3, shape).astype(np.int16)
        image = rng.normal(size=(2, *shape)).astype(np.float32)
        cases.append(Case(image, labels, {k: np.argwhere(labels == k) for k in (1, 2)}))
    return PatchSampler(cases, (8, 8, 8), (12, 12, 12), batch_size)


def take(loader: BatchLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(loader) for _ in range(n)]


def same(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_yields_batches_of_the_right_shape_and_dtype(num_workers):
    with BatchLoader(make_sampler(3), num_workers=num_workers, seed=1) as loader:
        for images, labels in take(loader, 3):
            assert images.shape == (3, 2, 12, 12, 12) and images.dtype == torch.float32
            assert labels.shape == (3, 12, 12, 12) and labels.dtype == torch.int64
            assert set(labels.unique().tolist()) <= {0, 1, 2}
            assert images.is_pinned() == torch.cuda.is_available()


def test_same_seed_same_batches_and_workers_differ():
    sampler = make_sampler()
    with BatchLoader(sampler, num_workers=2, seed=7) as a, BatchLoader(sampler, num_workers=2, seed=7) as b:
        first_a, first_b = take(a, 4), take(b, 4)
    assert same(first_a, first_b)
    # consecutive batches come from different workers, which must not repeat each other
    assert not torch.equal(first_a[0][0], first_a[1][0])
    with BatchLoader(sampler, num_workers=0, seed=7) as in_process, BatchLoader(sampler, num_workers=1, seed=7) as one:
        assert same(take(in_process, 2), take(one, 2))


def test_different_rank_or_seed_gives_different_batches():
    sampler = make_sampler()
    with BatchLoader(sampler, 0, seed=7, rank=0) as r0, BatchLoader(sampler, 0, seed=7, rank=1) as r1:
        assert not same(take(r0, 2), take(r1, 2))
    with BatchLoader(sampler, 0, seed=7) as s7, BatchLoader(sampler, 0, seed=8) as s8:
        assert not same(take(s7, 2), take(s8, 2))


def test_close_stops_the_workers_without_hanging():
    before = set(multiprocessing.active_children())
    loader = BatchLoader(make_sampler(), num_workers=2, seed=3, prefetch=4)
    next(loader)
    assert len(set(multiprocessing.active_children()) - before) == 2
    start = time.monotonic()
    loader.close()
    loader.close()  # idempotent
    assert time.monotonic() - start < 10.0
    assert not set(multiprocessing.active_children()) - before
    with pytest.raises(RuntimeError, match="closed"):
        next(loader)


def test_closing_before_the_first_batch_is_fine():
    BatchLoader(make_sampler(), num_workers=2, seed=0).close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_workers=-1), "num_workers"),
        (dict(rank=-1), "rank"),
        (dict(prefetch=0), "prefetch"),
        (dict(seed=-2), "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchLoader(make_sampler(), **{"num_workers": 0, "seed": 0, **kwargs})
