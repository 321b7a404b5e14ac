"""The ``maskmed`` CLI skeleton, run in-process and as a real console script; ``maskmed train``'s CPU path."""

import json
import re
import subprocess
import sys

import pytest

from MaskMedCore import __version__
from MaskMedCore.cli import main


def test_model_command_reports_parameters(capsys, tmp_path):
    out_json = tmp_path / "model.json"
    rc = main(["model", "--preset", "tiny", "--in-channels", "2", "--num-classes", "5", "--json-out", str(out_json)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    parts = report["parameters"]
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total") > 0
    assert json.loads(out_json.read_text())["num_classes"] == 5


def test_model_command_times_a_step(capsys):
    assert main(["model", "--preset", "tiny", "--patch", "16", "16", "16", "--batch", "1"]) == 0
    step = json.loads(capsys.readouterr().out)["step"]
    assert step["forward_backward_seconds_median"] > 0


def test_bad_override_exits_nonzero_with_one_line(capsys):
    assert main(["model", "--preset", "tiny", "--set", "head=conv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "head" in err[0] and "decoupled" in err[0]


def test_missing_config_file(capsys, tmp_path):
    assert main(["model", "--config", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_version():
    res = subprocess.run([sys.executable, "-m", "MaskMedCore", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"maskmed {__version__}"


# ---------------------------------------------------------------- maskmed train: the CPU path
@pytest.fixture(scope="module")
def train_args(tmp_path_factory, phantom_dataset):
    """``maskmed train`` options for the phantoms with a preprocessed cache shared by this module."""
    from pipeline_helpers import PHANTOM_PATCH

    from MaskMedCore.engine.distributed import DistributedContext
    from MaskMedCore.engine.train_setup import prepare_plan

    prep = tmp_path_factory.mktemp("cli_prep")
    prepare_plan(phantom_dataset, prep, DistributedContext(), PHANTOM_PATCH, progress=False, configuration="3d_cpu")
    return [str(phantom_dataset), "--preset", "tiny", "--device", "cpu", "--workers", "0", "--preprocessed", str(prep)]


def test_train_fold_all_reports_the_estimate_as_json(tmp_path, capsys, train_args):
    run = tmp_path / "run"
    argv = ["train", *train_args, "--out", str(run), "--fold", "all", "--epochs", "1", "--iterations-per-epoch", "2"]
    assert main([*argv, "--progress", "json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events[:2]] == ["start", "estimate"] and events[-1]["event"] == "done"
    estimate = events[1]
    assert (estimate["iterations"], estimate["epochs"], estimate["validation_rounds"]) == (2, 1, 0)  # no validation
    assert estimate["estimated_seconds"] == pytest.approx(2 * estimate["seconds_per_iteration"])
    assert json.loads((run / "training_config.json").read_text())["fold"] == -1
    assert not (run / "splits.json").exists()
    assert '"event": "estimate"' in (run / "train.log").read_text()


def test_train_refuses_an_unsized_cpu_run_that_would_not_finish(tmp_path, capsys, train_args):
    run = tmp_path / "new" / "run"
    # No --epochs: 1000 epochs x 5000 iterations, far over the 12 h a CPU run may take unasked.
    argv = ["train", *train_args, "--out", str(run), "--iterations-per-epoch", "5000", "--progress", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskmed train: error: training on the CPU is estimated to take")
    assert re.search(r"5,000,000 iterations at [\d.]+ s each", err[0])
    assert re.search(r"--time-budget 60 \(sets \d+ epoch\(s\) of 5000 iterations", err[0])
    assert re.search(r"--epochs \d+ \(about", err[0]) and "--device cuda" in err[0]
    assert not (tmp_path / "new").exists()
    # The same run with an explicit --epochs starts (and here stops at once with a resumable checkpoint).
    assert main([*argv, "--epochs", "1000", "--max-minutes", "0.001"]) == 0
    assert (run / "checkpoint_latest.pt").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "5", "--time-budget", "30"], "--epochs 5 and --time-budget 30 both set the schedule's length"),
        (["--fold", "first"], "--fold is 'first'; expected 'all' or -1"),
        (
            ["--fold", "5"],
            "fold is 5; expected 'all' or -1 (train on every case, no validation) or a held-out fold 0..4",
        ),
        (["--splits", "SPLITS", "--fold", "1"], "fold is 1 but split file SPLITS has 1 fold(s); use --fold 0..0"),
    ],
)
def test_train_option_errors_are_one_line(tmp_path, capsys, train_args, extra, message):
    splits = tmp_path / "splits_final.json"
    splits.write_text(json.dumps([{"train": ["phantom_000", "phantom_001"], "val": ["phantom_002"]}]))
    extra = [str(splits) if e == "SPLITS" else e for e in extra]
    assert main(["train", *train_args, "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("SPLITS", str(splits)) in err[0]
    assert not (tmp_path / "run").exists()
