"""How long a training schedule will take, estimated before its first step (MaskMed's CPU path).

Neither the paper nor nnU-Net estimates a run's duration up front; on a GPU a 1000-epoch schedule
takes a day or two, on a CPU it can take months. :func:`estimate_schedule` times a few training
steps (``step_timing.py``, which leaves the run unchanged) and then:

- :func:`schedule_estimate`: iterations x seconds per iteration + validation rounds x seconds per
  round (checkpoint writing and worker start-up are not counted);
- :func:`epochs_for_budget`: the most epochs (at least 1) whose whole schedule fits a time budget,
  so the poly LR decay still reaches its end (``TrainingConfig.time_budget_minutes``);
- :func:`cpu_refusal_message`: the one-line error for a new CPU run estimated to exceed
  ``CPU_LIMIT_HOURS`` whose length nobody chose (no ``--epochs``, no ``--time-budget``), naming the
  options that make it finish, with numbers from the measured step time.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from MaskMedCore.config.training_config import TrainingConfig
from MaskMedCore.engine.step_timing import TIMED_STEPS, WARMUP_STEPS, StepTiming, measure_step_time
from MaskMedCore.errors import ConfigError

CPU_LIMIT_HOURS = 12.0
"""A new CPU run estimated to take longer is refused unless its length was chosen (``--epochs``/``--time-budget``)."""


@dataclass(frozen=True)
class ScheduleEstimate:
    """The remaining schedule's duration.

    Attributes:
        seconds_per_iteration: measured training step.
        iterations: training iterations still to run.
        validation_rounds: validation rounds still to run.
        seconds_per_validation: estimated seconds of one validation round.
        epochs: epochs of the whole schedule (after any time budget).
        iterations_per_epoch: iterations per epoch.
        measured_seconds: what the measurement itself took.
    """

    seconds_per_iteration: float
    iterations: int
    validation_rounds: int
    seconds_per_validation: float
    epochs: int
    iterations_per_epoch: int
    measured_seconds: float

    @property
    def total_seconds(self) -> float:
        return self.iterations * self.seconds_per_iteration + self.validation_rounds * self.seconds_per_validation

    def event(self, **extra: Any) -> dict[str, Any]:
        """The ``{"event": "estimate", ...}`` fields (without ``event``) for progress and train.log."""
        return {
            "seconds_per_iteration": self.seconds_per_iteration,
            "iterations": self.iterations,
            "validation_rounds": self.validation_rounds,
            "seconds_per_validation": self.seconds_per_validation,
            "estimated_seconds": self.total_seconds,
            "epochs": self.epochs,
            "iterations_per_epoch": self.iterations_per_epoch,
            "measured_seconds": self.measured_seconds,
            **extra,
        }

    def summary(self) -> str:
        validation = (
            f" + {self.validation_rounds} validation round(s) x {format_duration(self.seconds_per_validation)}"
            if self.validation_rounds
            else ""
        )
        return (
            f"estimated training time {format_duration(self.total_seconds)}: {self.iterations:,} iterations "
            f"x {self.seconds_per_iteration:.3g} s{validation} ({self.epochs} epochs x {self.iterations_per_epoch})"
        )


def estimate_schedule(
    model: torch.nn.Module,
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
    criterion: Callable,
    sampler,
    augmenter,
    val_cases: Sequence,
    patch_size: Sequence[int],
    batch_size: int,
    config: TrainingConfig,
    ctx,
    step_args: dict[str, Any],
    *,
    start_epoch: int = 0,
    start_iteration: int = 0,
    resumed: bool = False,
    cpu_limit_hours: float | None = CPU_LIMIT_HOURS,
    announce: bool = False,
) -> tuple[TrainingConfig, ScheduleEstimate]:
    """Time a few steps, then resolve ``config`` (:func:`resolve_schedule`); the trainer's entry point.

    Args:
        model, make_optimizer, criterion, sampler, augmenter: as for :func:`measure_step_time`.
        val_cases: this run's validation cases (none: no validation rounds).
        patch_size, batch_size: the plan's patch and the run's batch size.
        config: the run's recipe.
        ctx: the distributed context; every rank measures and the times are averaged, so all ranks
            resolve the same epochs and take the same decision.
        step_args: ``device``, ``use_amp``, ``amp_dtype``, ``memory_format`` of the training step.
        start_epoch, start_iteration: where a resumed run continues.
        resumed, cpu_limit_hours: see :func:`resolve_schedule`.
        announce: print a line on stderr before measuring (the progress bar's mode).

    Raises:
        ConfigError: a refused CPU run.
    """
    if announce:
        steps = WARMUP_STEPS + TIMED_STEPS
        print(f"timing {steps} training steps to estimate the run's duration ...", file=sys.stderr, flush=True)
    timing = measure_step_time(
        model,
        make_optimizer,
        criterion,
        sampler,
        augmenter,
        grad_clip=config.grad_clip,
        num_workers=config.num_workers,
        seed=config.seed,
        rank=ctx.rank,
        **step_args,
    )
    if ctx.enabled:
        sums = ctx.all_reduce_sum(torch.tensor([timing.step_seconds, timing.forward_seconds, timing.sample_seconds]))
        step, forward, sample = (sums / ctx.world_size).tolist()
        timing = dataclasses.replace(timing, step_seconds=step, forward_seconds=forward, sample_seconds=sample)
    val_seconds = validation_round_seconds(
        timing, config.validation, config.val_iterations, val_cases, patch_size, batch_size, ctx.world_size
    )
    return resolve_schedule(
        config,
        timing,
        val_seconds,
        device_type=step_args["device"].type,
        resumed=resumed,
        start_epoch=start_epoch,
        start_iteration=start_iteration,
        cpu_limit_hours=cpu_limit_hours,
    )


def validation_round_seconds(
    timing: StepTiming,
    validation: str,
    val_iterations: int,
    val_cases: Sequence,
    patch_size,
    batch_size: int,
    world_size: int = 1,
) -> float:
    """Estimated seconds of one validation round on this rank (0 without validation cases).

    ``patches``: ``ceil(val_iterations / world_size)`` batches, each a crop plus a forward pass.
    ``cases``: every tile of this rank's share of the validation cases (overlap 0.5, one tile per call),
    each costing a forward pass of one patch.
    """
    from MaskMedCore.inference.sliding_window import tile_positions

    if not val_cases:
        return 0.0
    if validation == "cases":
        tiles = sum(
            len(tile_positions([max(s, p) for s, p in zip(case.image.shape[1:], patch_size)], patch_size, 0.5))
            for case in val_cases
        )
        return tiles / world_size * timing.forward_seconds / batch_size
    return math.ceil(val_iterations / world_size) * (timing.forward_seconds + timing.sample_seconds)


def validation_rounds(epochs: int, val_every: int, start_epoch: int = 0) -> int:
    """Rounds in epochs ``start_epoch..epochs-1``: after every ``val_every``-th epoch and after the last."""
    if epochs <= start_epoch:
        return 0
    every = epochs // val_every - start_epoch // val_every
    return every + (1 if epochs % val_every else 0)


def schedule_estimate(
    timing: StepTiming,
    seconds_per_validation: float,
    *,
    epochs: int,
    iterations_per_epoch: int,
    val_every: int,
    start_epoch: int = 0,
    start_iteration: int = 0,
) -> ScheduleEstimate:
    """The remaining schedule from ``start_epoch``/``start_iteration`` (0 for a new run)."""
    rounds = validation_rounds(epochs, val_every, start_epoch) if seconds_per_validation > 0 else 0
    return ScheduleEstimate(
        seconds_per_iteration=timing.step_seconds,
        iterations=max(epochs * iterations_per_epoch - start_iteration, 0),
        validation_rounds=rounds,
        seconds_per_validation=seconds_per_validation,
        epochs=epochs,
        iterations_per_epoch=iterations_per_epoch,
        measured_seconds=timing.measured_seconds,
    )


def schedule_seconds(epochs: int, iterations_per_epoch: int, step: float, val_every: int, val_seconds: float) -> float:
    """Estimated seconds of a whole ``epochs``-epoch schedule."""
    return epochs * iterations_per_epoch * step + validation_rounds(epochs, val_every) * val_seconds


def epochs_for_budget(
    minutes: float, iterations_per_epoch: int, step: float, val_every: int, val_seconds: float
) -> int:
    """The most epochs (at least 1) whose whole schedule is estimated to fit in ``minutes``."""
    budget = 60.0 * minutes
    step = max(step, 1e-9)

    def fits(epochs: int) -> bool:
        return schedule_seconds(epochs, iterations_per_epoch, step, val_every, val_seconds) <= budget

    low, high = 1, int(budget // (iterations_per_epoch * step)) + 1  # high never fits
    if not fits(low):
        return 1
    while high - low > 1:  # invariant: fits(low), not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def resolve_schedule(
    config: TrainingConfig,
    timing: StepTiming,
    seconds_per_validation: float,
    *,
    device_type: str,
    resumed: bool = False,
    start_epoch: int = 0,
    start_iteration: int = 0,
    cpu_limit_hours: float | None = CPU_LIMIT_HOURS,
) -> tuple[TrainingConfig, ScheduleEstimate]:
    """The recipe to run and its estimate: a new run's ``time_budget_minutes`` becomes ``epochs``.

    A resumed run keeps its saved schedule. A new CPU run without a time budget is refused when its
    estimate exceeds ``cpu_limit_hours`` (``None``: never).

    Raises:
        ConfigError: the refusal, naming the options that make the run finish (:func:`cpu_refusal_message`).
    """
    if not resumed and config.time_budget_minutes is not None:
        epochs = epochs_for_budget(
            config.time_budget_minutes,
            config.iterations_per_epoch,
            timing.step_seconds,
            config.val_every,
            seconds_per_validation,
        )
        config = config.replace(epochs=epochs)
    estimate = schedule_estimate(
        timing,
        seconds_per_validation,
        epochs=config.epochs,
        iterations_per_epoch=config.iterations_per_epoch,
        val_every=config.val_every,
        start_epoch=start_epoch,
        start_iteration=start_iteration,
    )
    refusable = not resumed and device_type == "cpu" and config.time_budget_minutes is None
    if refusable and cpu_limit_hours is not None and estimate.total_seconds > 3600 * cpu_limit_hours:
        raise ConfigError(
            cpu_refusal_message(
                estimate, limit_hours=cpu_limit_hours, val_every=config.val_every, configuration=config.configuration
            )
        )
    return config, estimate


def cpu_refusal_message(estimate: ScheduleEstimate, *, limit_hours: float, val_every: int, configuration: str) -> str:
    """One line: the estimate, and the options (with numbers) that make the run finish."""
    step, ipe = estimate.seconds_per_iteration, estimate.iterations_per_epoch
    val = estimate.seconds_per_validation
    hour_epochs = epochs_for_budget(60, ipe, step, val_every, val)
    hour_seconds = schedule_seconds(hour_epochs, ipe, step, val_every, val)
    options = [
        f"--time-budget 60 (sets {hour_epochs} epoch(s) of {ipe} iterations, the whole LR schedule)",
        f"--epochs {hour_epochs} (about {format_duration(hour_seconds)})",
    ]
    if configuration == "3d_fullres":
        options.append("--configuration 3d_cpu (the plan's CPU-sized patch)")
    options.append("--device cuda on a machine with an NVIDIA GPU")
    message = (
        f"training on the CPU is estimated to take {format_duration(estimate.total_seconds)} "
        f"({estimate.iterations:,} iterations at {step:.3g} s each, validation included), more than the "
        f"{limit_hours:g} h a CPU run may take without --epochs or --time-budget; to make it finish, add "
        + ", or ".join(options)
    )
    if hour_seconds > 1.1 * 3600:
        per_hour = max(1, int(3600 // step))
        message += (
            f"; one epoch of {ipe} iterations alone takes about {format_duration(ipe * step)}, "
            f"so also lower --iterations-per-epoch (e.g. {per_hour} for 1 h)"
        )
    return message


def format_duration(seconds: float) -> str:
    """``0.52 s``, ``45 s``, ``12 min``, ``3.4 h`` or ``46.2 days``."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
