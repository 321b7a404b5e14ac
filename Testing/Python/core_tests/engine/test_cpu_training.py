"""Training a CPU user can finish: the duration estimate, --time-budget, the refusal of an unsized run
that would not finish, the CPU-sized plan, and user-given split files (real trainer, phantom data)."""

import json
import shutil

import pytest
import torch
from pipeline_helpers import PHANTOM_PATCH, quick_training_config

from MaskMedCore.config import PlanConfig, TrainingConfig
from MaskMedCore.engine.checkpoint import load_checkpoint
from MaskMedCore.engine.distributed import DistributedContext
from MaskMedCore.engine.time_estimate import epochs_for_budget, schedule_seconds
from MaskMedCore.engine.train_setup import prepare_plan
from MaskMedCore.engine.trainer import resolve_configuration, train
from MaskMedCore.errors import ConfigError, DataError

# A network small enough that a step on a 12 x 128 x 128 patch takes a fraction of a second.
LEAN = dict(
    features_per_stage=(2, 4, 4, 4, 4, 4),
    n_conv_per_stage=1,
    n_conv_per_stage_decoder=1,
    head="pointwise",
    bridge="none",
    masked_attention=False,
    head_dim=16,
    head_heads=2,
    head_ffn_dim=16,
)


@pytest.fixture(scope="module")
def thick_slices(tmp_path_factory):
    """Two anisotropic phantoms (4 x 0.8 x 0.8 mm, 16 x 160 x 160): 3d_fullres plans a patch over the CPU budget."""
    from MaskMedCore.data.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("thick")
    return write_phantom_dataset(root / "ds", 2, seed=0, shape=(16, 160, 160), spacing=(4.0, 0.8, 0.8))


@pytest.fixture(scope="module")
def thick_prep(tmp_path_factory, thick_slices):
    """Their preprocessed cache, planned automatically (plan.json and plan_cpu.json differ)."""
    prep = tmp_path_factory.mktemp("thick_prep")
    prepare_plan(thick_slices, prep, DistributedContext(), progress=False, configuration="3d_cpu")
    return prep


@pytest.fixture(scope="module")
def phantom_prep(tmp_path_factory, phantom_dataset):
    """The phantoms' preprocessed cache, shared by this module's runs (all with PHANTOM_PATCH)."""
    prep = tmp_path_factory.mktemp("phantom_prep")
    prepare_plan(phantom_dataset, prep, DistributedContext(), PHANTOM_PATCH, progress=False, configuration="3d_cpu")
    return prep


def test_fold_all_is_nnunets_spelling_of_minus_one():
    assert TrainingConfig(fold="all").fold == -1 == TrainingConfig(fold="ALL").fold
    assert TrainingConfig.from_json(TrainingConfig(fold="all").to_json()).fold == -1
    with pytest.raises(ConfigError, match=r"fold is 7; expected 'all' or -1 \(train on every case.*0\.\.4"):
        TrainingConfig(fold=7)


def test_estimate_is_reported_before_the_first_step(quick_run):
    events = [json.loads(line) for line in (quick_run / "train.log").read_text().splitlines()]
    assert [e["event"] for e in events[:3]] == ["start", "estimate", "epoch"]
    estimate = events[1]
    assert estimate["iterations"] == 6 and estimate["epochs"] == 2 and estimate["validation_rounds"] == 2
    assert estimate["seconds_per_iteration"] > 0 and estimate["device"] == "cpu"
    assert estimate["estimated_seconds"] == pytest.approx(
        6 * estimate["seconds_per_iteration"] + 2 * estimate["seconds_per_validation"]
    )
    assert estimate["configuration"] == "3d_cpu"  # auto on the CPU


def test_time_budget_sets_the_epochs_of_a_complete_schedule_that_resume_keeps(tmp_path, phantom_dataset, phantom_prep):
    run, prep = tmp_path / "run", phantom_prep
    cfg = quick_training_config(epochs=1000, iterations_per_epoch=2, time_budget_minutes=0.03, augment=False)
    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return calls["n"] >= 3

    first = train(
        phantom_dataset,
        run,
        cfg,
        preprocessed_dir=prep,
        patch_size=PHANTOM_PATCH,
        progress="none",
        cancel=stop_after_three,
    )
    est, epochs = first.estimate, first.config.epochs
    assert epochs == epochs_for_budget(0.03, 2, est.seconds_per_iteration, 1, est.seconds_per_validation) >= 1
    assert epochs < 1000 and est.epochs == epochs and est.iterations == 2 * epochs
    assert epochs == 1 or schedule_seconds(epochs, 2, est.seconds_per_iteration, 1, est.seconds_per_validation) <= 1.8
    saved = TrainingConfig.from_json((run / "training_config.json").read_text())
    assert saved.epochs == epochs and saved.time_budget_minutes == 0.03
    ckpt = load_checkpoint(run / "checkpoint_latest.pt")
    assert TrainingConfig.from_json(ckpt.training_config_json).epochs == epochs
    assert ckpt.training_state["scheduler"]["max_epochs"] == epochs  # the poly decay ends with the run

    second = train(phantom_dataset, run, cfg, preprocessed_dir=prep, progress="none", resume=True)
    assert (second.epochs_done, second.iterations_done) == (epochs, 2 * epochs)
    assert second.config.epochs == epochs


def test_unsized_cpu_run_is_refused_and_leaves_nothing_behind(tmp_path, phantom_dataset, phantom_prep):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for run in (tmp_path / "new" / "run", existing):
        with pytest.raises(ConfigError) as info:
            train(
                phantom_dataset,
                run,
                quick_training_config(),
                preprocessed_dir=phantom_prep,
                patch_size=PHANTOM_PATCH,
                progress="none",
                cpu_limit_hours=1e-6,  # the 12 h limit, lowered so that a 6-step run exceeds it
            )
        message = str(info.value)
        assert "training on the CPU is estimated to take" in message and "--time-budget 60 (sets" in message
        assert "--epochs" in message and "--device cuda" in message
    assert not (tmp_path / "new").exists()
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]
    # A run whose length was chosen is not refused.
    sized = quick_training_config(epochs=1, iterations_per_epoch=1, time_budget_minutes=0.01)
    train(
        phantom_dataset,
        tmp_path / "sized",
        sized,
        preprocessed_dir=phantom_prep,
        progress="none",
        cpu_limit_hours=1e-6,
    )


def test_cpu_plan_is_chosen_on_the_cpu_and_3d_fullres_on_request(tmp_path, thick_slices, thick_prep):
    assert resolve_configuration("auto", torch.device("cpu")) == "3d_cpu"
    assert resolve_configuration("auto", torch.device("cuda")) == "3d_fullres"
    assert resolve_configuration("auto", torch.device("cuda"), single_slice=True) == "2d"
    assert resolve_configuration("3d_cpu", torch.device("cpu"), single_slice=True) == "3d_cpu"
    prep = thick_prep
    plans = {}
    for configuration in ("auto", "3d_fullres"):
        cfg = quick_training_config(
            epochs=1, iterations_per_epoch=1, fold="all", batch_size=1, augment=False, configuration=configuration
        )
        result = train(
            thick_slices, tmp_path / configuration, cfg, preprocessed_dir=prep, progress="none", model_overrides=LEAN
        )
        plans[result.config.configuration] = PlanConfig.from_json((tmp_path / configuration / "plan.json").read_text())
        assert (
            load_checkpoint(tmp_path / configuration / "checkpoint_latest.pt").plan
            == plans[result.config.configuration]
        )
        saved = json.loads((tmp_path / configuration / "training_config.json").read_text())
        assert saved["configuration"] == result.config.configuration
    assert plans["3d_fullres"].patch_size == (16, 160, 160)
    assert plans["3d_cpu"].patch_size == (12, 128, 128)  # 3d_fullres's patch shrunk by nnU-Net's rule
    assert plans["3d_cpu"].target_spacing == plans["3d_fullres"].target_spacing  # one preprocessed cache
    assert PlanConfig.from_json((prep / "plan.json").read_text()) == plans["3d_fullres"]
    assert PlanConfig.from_json((prep / "plan_cpu.json").read_text()) == plans["3d_cpu"]


def test_explicit_patch_is_planned_for_both_configurations(phantom_prep, thick_slices, thick_prep):
    fullres = PlanConfig.from_json((phantom_prep / "plan.json").read_text())
    cpu = PlanConfig.from_json((phantom_prep / "plan_cpu.json").read_text())
    assert cpu.patch_size == fullres.patch_size == PHANTOM_PATCH
    ctx, auto = DistributedContext(), thick_prep  # planned automatically: plan_cpu.json's patch is smaller
    with pytest.raises(
        ConfigError, match=r"plan_cpu.json was planned with patch \(12, 128, 128\), not \(16, 160, 160\)"
    ):
        prepare_plan(thick_slices, auto, ctx, (16, 160, 160), progress=False, configuration="3d_cpu")


def test_a_cpu_plan_that_would_not_match_the_cached_cases_is_refused(tmp_path, phantom_dataset, phantom_prep):
    prep = tmp_path / "prep"
    shutil.copytree(phantom_prep, prep)
    plan = PlanConfig.from_json((prep / "plan_cpu.json").read_text())
    (prep / "plan_cpu.json").write_text(plan.replace(target_spacing=(2.0, 2.0, 2.0)).to_json())
    with pytest.raises(
        ConfigError, match="plan_cpu.json differs from .*plan.json in spacing, normalisation or cropping"
    ):
        prepare_plan(phantom_dataset, prep, DistributedContext(), PHANTOM_PATCH, progress=False, configuration="3d_cpu")


def _write(path, folds):
    path.write_text(json.dumps(folds))
    return path


def test_a_user_split_file_is_checked_copied_and_indexed(tmp_path, phantom_dataset, phantom_prep):
    ids = [f"phantom_{i:03d}" for i in range(4)]
    splits = _write(tmp_path / "splits_final.json", [{"train": ids[:3], "val": ids[3:]}])
    cfg = quick_training_config(epochs=1, iterations_per_epoch=1, augment=False)
    result = train(
        phantom_dataset,
        tmp_path / "run",
        cfg,
        preprocessed_dir=phantom_prep,
        patch_size=PHANTOM_PATCH,
        progress="none",
        splits_file=splits,
    )
    assert json.loads((tmp_path / "run" / "splits.json").read_text()) == json.loads(splits.read_text())
    assert result.config.num_folds == 1 and result.history[0]["val_dice"] is not None

    other = _write(tmp_path / "other.json", [{"train": ids[1:], "val": ids[:1]}])
    with pytest.raises(ConfigError, match="differs from .*splits.json, the split this run started with"):
        train(
            phantom_dataset,
            tmp_path / "run",
            cfg,
            preprocessed_dir=phantom_prep,
            progress="none",
            resume=True,
            splits_file=other,
        )


@pytest.mark.parametrize(
    ("folds", "match"),
    [
        ([{"train": ["phantom_000", "case_9"], "val": ["phantom_001"]}], r"fold 0 names 1 unknown cases .*: case_9"),
        (
            [{"train": ["phantom_000", "phantom_001"], "val": ["phantom_001"]}],
            r"in both 'train' and 'val': phantom_001",
        ),
        ([{"train": ["phantom_000"]}], r"fold 0 has \['train'\]; expected a JSON list of"),
        ({"train": [], "val": []}, "holds dict; expected a JSON list"),
    ],
)
def test_a_bad_split_file_is_refused_naming_the_problem(tmp_path, phantom_dataset, phantom_prep, folds, match):
    splits = _write(tmp_path / "splits.json", folds)
    with pytest.raises(DataError, match=match):
        train(
            phantom_dataset,
            tmp_path / "run",
            quick_training_config(),
            preprocessed_dir=phantom_prep,
            patch_size=PHANTOM_PATCH,
            progress="none",
            splits_file=splits,
        )
    assert not (tmp_path / "run").exists()
