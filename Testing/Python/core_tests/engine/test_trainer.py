"""Training end to end on phantoms: checkpoints, resume after a kill, stop/resume mid-epoch, bad runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from pipeline_helpers import PHANTOM_PATCH, quick_training_config

from MaskMedCore.engine.checkpoint import load_checkpoint
from MaskMedCore.engine.trainer import read_history, train
from MaskMedCore.errors import CheckpointError, ConfigError


def test_quick_run_writes_a_complete_run_folder(quick_run):
    names = {p.name for p in quick_run.iterdir()}
    assert {
        "checkpoint_latest.pt",
        "checkpoint_best.pt",
        "plan.json",
        "model_config.json",
        "splits.json",
        "training_config.json",
        "train.log",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    ckpt = load_checkpoint(quick_run / "checkpoint_latest.pt")
    ts = ckpt.training_state
    assert (ts["epoch"], ts["epoch_iteration"], ts["iteration"]) == (2, 0, 6)
    groups = ts["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["cnn", "transformer"]
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])  # the ratio survives the poly decay
    epochs = read_history(quick_run)
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert set(epochs[-1]["val_dice"]) <= {"liver", "spleen", "kidney_left", "kidney_right", "aorta"}


def test_existing_run_is_never_overwritten(quick_run, phantom_dataset):
    before = (quick_run / "checkpoint_latest.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(phantom_dataset, quick_run, quick_training_config(), progress="none")
    assert (quick_run / "checkpoint_latest.pt").read_bytes() == before


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, phantom_dataset):
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(phantom_dataset, tmp_path / "new", quick_training_config(), resume=True, progress="none")


def test_cancel_mid_epoch_then_resume_finishes_the_same_schedule(tmp_path, phantom_dataset):
    calls = {"n": 0}

    def cancel_after_four():
        calls["n"] += 1
        return calls["n"] >= 4

    cfg = quick_training_config(epochs=3)
    prep = tmp_path / "prep"
    first = train(
        phantom_dataset,
        tmp_path / "run",
        cfg,
        preprocessed_dir=prep,
        patch_size=PHANTOM_PATCH,
        progress="none",
        cancel=cancel_after_four,
    )
    assert first.stopped_early and first.iterations_done == 4 and first.epochs_done == 1
    ts = load_checkpoint(tmp_path / "run" / "checkpoint_latest.pt").training_state
    assert (ts["epoch"], ts["epoch_iteration"]) == (1, 1)
    second = train(phantom_dataset, tmp_path / "run", cfg, preprocessed_dir=prep, progress="none", resume=True)
    assert not second.stopped_early
    assert (second.epochs_done, second.iterations_done) == (3, 9)
    assert [h["epoch"] for h in second.history] == [0, 1, 2]


def test_killed_training_resumes_from_the_last_checkpoint(tmp_path, phantom_dataset):
    """SIGKILL (no chance to save) in the middle of training; --resume continues from the last epoch."""
    run, prep = tmp_path / "run", tmp_path / "prep"
    cmd = [
        sys.executable,
        "-m",
        "MaskMedCore",
        "train",
        str(phantom_dataset),
        "--out",
        str(run),
        "--preset",
        "tiny",
        "--patch-size",
        *map(str, PHANTOM_PATCH),
        "--epochs",
        "12",
        "--iterations-per-epoch",
        "3",
        "--val-every",
        "100",
        "--val-iterations",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--preprocessed",
        str(prep),
        "--progress",
        "none",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "checkpoint_latest.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    saved = load_checkpoint(run / "checkpoint_latest.pt").training_state  # intact despite the kill
    assert saved["epoch_iteration"] == 0 and saved["epoch"] >= 1
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    final = load_checkpoint(run / "checkpoint_latest.pt").training_state
    assert (final["epoch"], final["iteration"]) == (12, 36)
    assert [h["epoch"] for h in final["history"]] == list(range(12))


def test_sigterm_saves_a_resumable_mid_epoch_checkpoint(tmp_path, phantom_dataset):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "MaskMedCore",
        "train",
        str(phantom_dataset),
        "--out",
        str(run),
        "--preset",
        "tiny",
        "--patch-size",
        *map(str, PHANTOM_PATCH),
        "--epochs",
        "50",
        "--iterations-per-epoch",
        "50",
        "--val-every",
        "100",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--preprocessed",
        str(tmp_path / "prep"),
        "--progress",
        "json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training really iterates
        if json.loads(line).get("event") == "iteration":
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    ts = load_checkpoint(run / "checkpoint_latest.pt").training_state
    assert ts["iteration"] >= 1 and ts["epoch"] == 0 and 0 < ts["epoch_iteration"] < 50


def test_checkpoint_weights_are_plain_data(quick_run):
    data = torch.load(quick_run / "checkpoint_best.pt", weights_only=True)
    assert isinstance(data["model_state"], dict)
    assert os.path.getsize(quick_run / "checkpoint_best.pt") < 20_000_000


def test_train_command_bad_dataset_exits_2(tmp_path, capsys):
    from MaskMedCore.cli import main

    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert not (tmp_path / "run").exists()
