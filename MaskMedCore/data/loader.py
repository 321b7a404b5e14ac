"""Background batch loading: worker processes crop batches while the training device computes.

nnU-Net v2 runs its data loader and CPU augmentation in ``NonDetMultiThreadedAugmenter`` worker
processes. Here the workers only crop (``PatchSampler``); augmentation runs on the training device
(``Augmenter``). The workers are a ``torch.utils.data.DataLoader`` over an endless
``IterableDataset`` with persistent workers, so batches travel through shared memory and, with
CUDA, are pinned for asynchronous host-to-device copies (``.to(device, non_blocking=True)``).

Seeding: worker ``w`` of rank ``r`` draws from ``np.random.default_rng([seed, r, w])``. Different
ranks and workers therefore crop different patches, and a run with the same seed, rank and number of
workers repeats itself exactly (the DataLoader returns the workers' batches round-robin, in order).
``num_workers=0`` and ``num_workers=1`` produce the same stream.

Workers are started with the platform's default multiprocessing context (fork on Linux), so the
sampler's cases are inherited, not pickled. With ``multiprocessing_context="spawn"`` (or
"forkserver") the sampler must be picklable, and a ``np.memmap`` pickles as a full in-memory copy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from MaskMedCore.data.sampling import PatchSampler


def worker_rng(seed: int, rank: int, worker: int) -> np.random.Generator:
    """The generator that worker ``worker`` of DDP rank ``rank`` samples with."""
    return np.random.default_rng([seed, rank, worker])


class _EndlessBatches(IterableDataset):
    """Yields ``sampler`` batches forever, seeded per rank and worker."""

    def __init__(self, sampler: PatchSampler, seed: int, rank: int) -> None:
        super().__init__()
        self.sampler, self.seed, self.rank = sampler, seed, rank

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = get_worker_info()
        rng = worker_rng(self.seed, self.rank, info.id if info is not None else 0)
        while True:
            yield batch_tensors(self.sampler.training_batch(rng))


def batch_tensors(batch: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
    """``PatchSampler.training_batch`` arrays as tensors: images float32, labels (and case targets) int64."""
    images, labels, *case_targets = batch
    return (torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), *map(torch.from_numpy, case_targets))


class BatchLoader:
    """Endless iterator of CPU training batches produced in background worker processes.

    Args:
        sampler: crops the batches (its cases are shared with the workers).
        num_workers: worker processes; 0 samples in the calling process.
        seed: base seed; combined with ``rank`` and the worker index.
        rank: DDP rank of this process (0 without DDP).
        prefetch: batches each worker prepares ahead.
        pin_memory: pin batches for fast copies to the GPU; default: when CUDA is available.
        multiprocessing_context: e.g. "spawn"; default: the platform's (fork on Linux).

    Yields:
        images: (B, C, *sample_size) float32 tensor.
        labels: (B, *sample_size) int64 tensor.
        case_targets: (B, T) int64 tensor, only when the sampler has ``case_targets``.

    Use as a context manager, or call ``close()``, to stop the workers::

        with BatchLoader(sampler, num_workers=4, seed=12345, rank=rank) as batches:
            for step in range(num_steps):
                images, labels = next(batches)
    """

    def __init__(
        self,
        sampler: PatchSampler,
        num_workers: int,
        seed: int,
        rank: int = 0,
        prefetch: int = 2,
        pin_memory: bool | None = None,
        multiprocessing_context: str | None = None,
    ) -> None:
        for name, value, low in (("num_workers", num_workers, 0), ("rank", rank, 0), ("prefetch", prefetch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.num_workers = num_workers
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        extra = {"persistent_workers": True, "prefetch_factor": prefetch} if num_workers > 0 else {}
        self._loader = DataLoader(
            _EndlessBatches(sampler, seed, rank),
            batch_size=None,  # the dataset yields whole batches
            num_workers=num_workers,
            pin_memory=pin,
            multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
            **extra,
        )
        self._iterator: Iterator | None = None
        self._closed = False

    def __iter__(self) -> BatchLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._closed:
            raise RuntimeError("BatchLoader is closed; create a new one to load more batches")
        if self._iterator is None:
            self._iterator = iter(self._loader)  # starts the workers
        return next(self._iterator)

    def close(self) -> None:
        """Stop and join the worker processes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        iterator, self._iterator = self._iterator, None
        # _shutdown_workers is what the DataLoader iterator's __del__ calls; calling it directly
        # joins the workers now instead of whenever the iterator is garbage-collected.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort if the owner forgot close(); never raise from a finaliser.
        try:
            self.close()
        except Exception:
            pass
