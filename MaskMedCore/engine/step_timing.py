"""Timing training steps before a run starts, without changing the run (MaskMed's CPU path).

:func:`measure_step_time` runs ``WARMUP_STEPS + TIMED_STEPS`` training steps on a deep copy of the
network with its own optimiser, on batches cropped from the training cases with their own random
stream, inside ``torch.random.fork_rng``: the run then trains exactly as it would have without the
measurement (same weights, same patches, same random numbers). One eval-mode forward pass is timed
too, for validation. ``time_estimate.py`` turns the timing into the schedule's duration.

Data loading counts where it is not hidden: with ``num_workers == 0`` a step costs cropping plus
compute; with workers, the larger of compute and cropping / workers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from MaskMedCore.data.loader import batch_tensors
from MaskMedCore.engine.train_step import train_step

WARMUP_STEPS = 1
TIMED_STEPS = 3
_ESTIMATE_STREAM = 0x7E57  # the measurement's own patch stream: never one the training loop draws


@dataclass(frozen=True)
class StepTiming:
    """Measured costs, in seconds.

    Attributes:
        step_seconds: one training iteration as the loop will see it (data loading included where
            the workers do not hide it).
        compute_seconds: augmentation, forward, loss, backward and optimiser step of one batch.
        sample_seconds: cropping one batch on the CPU.
        forward_seconds: one eval-mode forward pass of a batch of patches (validation).
        measured_seconds: wall time of the whole measurement.
        timed_steps: how many steps were averaged.
    """

    step_seconds: float
    compute_seconds: float
    sample_seconds: float
    forward_seconds: float
    measured_seconds: float
    timed_steps: int


def measure_step_time(
    model: torch.nn.Module,
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
    criterion: Callable,
    sampler,
    augmenter,
    *,
    device: torch.device,
    use_amp: bool,
    amp_dtype: torch.dtype,
    grad_clip: float,
    memory_format: torch.memory_format,
    num_workers: int,
    seed: int,
    rank: int = 0,
    warmup_steps: int = WARMUP_STEPS,
    timed_steps: int = TIMED_STEPS,
) -> StepTiming:
    """Time training steps on a deep copy of ``model`` (``model`` and the RNG states are left as they were).

    Args:
        model: the network, on ``device`` (not DDP-wrapped: the copy synchronises with no one).
        make_optimizer: builds the copy's optimiser (the run's optimiser type and groups).
        criterion: the run's loss.
        sampler: the run's ``PatchSampler``; drawn from with a separate generator.
        augmenter: the run's ``Augmenter`` or None.
        num_workers: the run's data-loading workers (decides whether cropping time counts).
        seed, rank: seed the estimate's own patch stream.
        warmup_steps: untimed first steps (kernel selection, allocator warm-up).
        timed_steps: steps averaged into ``compute_seconds``.

    Returns:
        The measured costs.

    Raises:
        ValueError: ``warmup_steps < 0`` or ``timed_steps < 1``.
    """
    if warmup_steps < 0 or timed_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and timed_steps >= 1, got {warmup_steps} and {timed_steps}")
    start = time.perf_counter()
    rng = np.random.default_rng([seed, rank, _ESTIMATE_STREAM])
    batches, sample_times = [], []
    for _ in range(warmup_steps + timed_steps):
        t0 = time.perf_counter()
        batch = sampler.training_batch(rng)
        sample_times.append(time.perf_counter() - t0)
        batches.append(batch_tensors(batch))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        twin = copy.deepcopy(model)
        twin.train()
        twin.deep_supervision = True
        optimizer = make_optimizer(twin)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        gen = torch.Generator().manual_seed(seed)
        stream = iter(batches)
        step_times = []
        for i in range(len(batches)):
            _synchronize(device)
            t0 = time.perf_counter()
            train_step(
                twin,
                criterion,
                optimizer,
                scaler,
                augmenter,
                stream,
                device,
                use_amp,
                amp_dtype,
                grad_clip,
                gen,
                memory_format,
            )
            _synchronize(device)
            if i >= warmup_steps:
                step_times.append(time.perf_counter() - t0)
        forward = _time_forward(twin, batches[0][0], sampler.patch_size, device, memory_format)
        del twin, optimizer
    compute = float(np.mean(step_times))
    sample = float(np.mean(sample_times[warmup_steps:]))
    step = compute + sample if num_workers == 0 else max(compute, sample / num_workers)
    return StepTiming(step, compute, sample, forward, time.perf_counter() - start, timed_steps)


@torch.no_grad()
def _time_forward(model, images: torch.Tensor, patch: Sequence[int], device, memory_format) -> float:
    """Seconds of one eval-mode forward of ``images`` cropped to ``patch`` (the faster of two calls).

    Args:
        images: (B, C, D', H', W') enlarged crops, D' >= d etc.
    """
    from MaskMedCore.models.outputs import semantic_probs

    d, h, w = patch
    x = images[:, :, :d, :h, :w].to(device).contiguous(memory_format=memory_format)
    model.eval()
    model.deep_supervision = False
    times = []
    for _ in range(2):
        _synchronize(device)
        t0 = time.perf_counter()
        semantic_probs(model(x))
        _synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
