"""The duration estimate made before training: schedule arithmetic, the time budget, the CPU refusal,
and a measurement that leaves the model, the RNG and the patch stream as they were."""

import numpy as np
import pytest
import torch

from MaskMedCore.config import ModelConfig, TrainingConfig
from MaskMedCore.data.preprocessed_store import PreprocessedCase
from MaskMedCore.data.sampling import PatchSampler
from MaskMedCore.engine.step_timing import StepTiming, measure_step_time
from MaskMedCore.engine.time_estimate import (
    cpu_refusal_message,
    epochs_for_budget,
    format_duration,
    resolve_schedule,
    schedule_estimate,
    schedule_seconds,
    validation_rounds,
)
from MaskMedCore.engine.trainer import build_optimizer
from MaskMedCore.errors import ConfigError
from MaskMedCore.losses.build import build_criterion
from MaskMedCore.models.build import build_model


def _timing(step: float, forward: float = 0.0) -> StepTiming:
    return StepTiming(step, step, 0.0, forward, 1.0, 3)


@pytest.mark.parametrize(
    ("epochs", "val_every", "start"),
    [(1, 1, 0), (10, 5, 0), (11, 5, 0), (12, 5, 3), (12, 5, 10), (12, 5, 12), (1000, 5, 0), (7, 50, 0)],
)
def test_validation_rounds_match_the_training_loop(epochs, val_every, start):
    loop = sum(1 for e in range(start, epochs) if (e + 1) % val_every == 0 or e + 1 == epochs)
    assert validation_rounds(epochs, val_every, start) == loop


@pytest.mark.parametrize(
    ("minutes", "ipe", "step", "val_every", "val_s", "expected"),
    [
        (60, 250, 1.0, 5, 0.0, 14),  # 14 x 250 s = 58.3 min; 15 epochs would be 62.5 min
        (60, 250, 1.0, 1, 30.0, 12),  # each epoch also validates: 280 s per epoch
        (60, 250, 15.0, 5, 0.0, 1),  # one epoch alone is over budget: still 1, never 0
        (0.5, 4, 0.125, 1, 0.0, 60),  # exactly on the budget
    ],
)
def test_epochs_for_budget_is_the_largest_schedule_that_fits(minutes, ipe, step, val_every, val_s, expected):
    epochs = epochs_for_budget(minutes, ipe, step, val_every, val_s)
    assert epochs == expected
    if epochs > 1:
        assert schedule_seconds(epochs, ipe, step, val_every, val_s) <= 60 * minutes
    assert schedule_seconds(epochs + 1, ipe, step, val_every, val_s) > 60 * minutes


def test_time_budget_sets_epochs_and_keeps_the_rest_of_the_recipe():
    config = TrainingConfig(time_budget_minutes=60, iterations_per_epoch=250, val_every=5)
    resolved, estimate = resolve_schedule(config, _timing(1.0), 0.0, device_type="cpu")
    assert resolved == config.replace(epochs=14)
    assert (estimate.epochs, estimate.iterations, estimate.total_seconds) == (14, 3500, 3500.0)
    # A resumed run keeps the epochs it was saved with.
    kept, _ = resolve_schedule(resolved, _timing(2.0), 0.0, device_type="cpu", resumed=True, start_iteration=250)
    assert kept.epochs == 14


def test_unsized_cpu_run_over_the_limit_is_refused_with_the_options_that_finish():
    config = TrainingConfig(configuration="3d_cpu")  # 1000 x 250 iterations
    with pytest.raises(ConfigError) as info:
        resolve_schedule(config, _timing(30.0), 100.0, device_type="cpu")  # 200 validation rounds of 100 s
    message = str(info.value)
    assert "\n" not in message and "87.0 days (250,000 iterations at 30 s each" in message
    assert "--time-budget 60 (sets 1 epoch(s) of 250 iterations" in message and "--epochs 1 (about 2.1 h)" in message
    assert "--device cuda" in message
    assert "lower --iterations-per-epoch (e.g. 120 for 1 h)" in message  # one epoch alone is over 2 h
    assert "--configuration 3d_cpu" not in message  # already the CPU plan
    fullres = cpu_refusal_message(
        schedule_estimate(_timing(0.5), 0.0, epochs=1000, iterations_per_epoch=250, val_every=5),
        limit_hours=12,
        val_every=5,
        configuration="3d_fullres",
    )
    assert "--time-budget 60 (sets 28 epoch(s) of 250 iterations, the whole LR schedule)" in fullres
    assert "--epochs 28 (about 58 min)" in fullres and "--configuration 3d_cpu" in fullres
    assert "iterations-per-epoch" not in fullres


@pytest.mark.parametrize(
    ("changes", "device", "kwargs"),
    [
        ({}, "cuda", {}),  # a GPU run is never refused
        ({"time_budget_minutes": 30}, "cpu", {}),  # sized by its budget
        ({}, "cpu", {"cpu_limit_hours": None}),  # sized by explicit --epochs
        ({}, "cpu", {"resumed": True}),  # already accepted when it started
        ({"epochs": 10}, "cpu", {}),  # short enough
    ],
)
def test_runs_that_are_not_refused(changes, device, kwargs):
    resolve_schedule(TrainingConfig(**changes), _timing(1.0), 0.0, device_type=device, **kwargs)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.52, "0.52 s"), (45, "45 s"), (720, "12 min"), (3.4 * 3600, "3.4 h"), (46.2 * 86400, "46.2 days")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_measurement_leaves_the_model_the_rng_and_the_patch_stream_unchanged():
    torch.manual_seed(0)
    cfg = ModelConfig.preset(
        "tiny",
        1,
        3,
        features_per_stage=(4, 8, 16),
        kernel_sizes=((3, 3, 3),) * 3,
        strides=((1, 1, 1),) + ((2, 2, 2),) * 2,
    )
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    cases = [
        PreprocessedCase(
            f"c{i}",
            rng.normal(size=(1, 20, 20, 20)).astype(np.float32),
            rng.integers(0, 3, (20, 20, 20)).astype(np.int16),
            {},
            {},
        )
        for i in range(2)
    ]
    sampler = PatchSampler(cases, (16, 16, 16), (16, 16, 16), 2, 0.0)
    cpu_state = torch.get_rng_state()

    timing = measure_step_time(
        model,
        lambda m: build_optimizer(m, TrainingConfig()),
        build_criterion(cfg),
        sampler,
        None,
        device=torch.device("cpu"),
        use_amp=False,
        amp_dtype=torch.float16,
        grad_clip=12.0,
        memory_format=torch.contiguous_format,
        num_workers=0,
        seed=0,
    )
    assert timing.step_seconds == pytest.approx(timing.compute_seconds + timing.sample_seconds)
    assert timing.forward_seconds > 0 and timing.measured_seconds > 3 * timing.compute_seconds
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and model.deep_supervision
    with pytest.raises(ValueError, match="timed_steps"):
        measure_step_time(
            model,
            None,
            None,
            sampler,
            None,
            device=torch.device("cpu"),
            use_amp=False,
            amp_dtype=None,
            grad_clip=1.0,
            memory_format=None,
            num_workers=0,
            seed=0,
            timed_steps=0,
        )
