"""Bookkeeping of the accuracy benchmark's resumable runs: what a resumed run reports as its training
time, and when a cached task dataset counts as built from the same sources."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "Benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import accuracy_datasets  # noqa: E402
import accuracy_report  # noqa: E402
import bench_accuracy  # noqa: E402


def _log(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_resumed_run_time_adds_up_its_pieces(tmp_path):
    log = _log(
        tmp_path / "train.log",
        [
            {"event": "start", "total_iterations": 800, "start_iteration": 0},
            {"event": "epoch", "iteration": 50, "elapsed_seconds": 90.0},
            {"event": "epoch", "iteration": 650, "elapsed_seconds": 1208.5},
            # interrupted after 650; the resumed piece's clock starts again at 0
            {"event": "start", "total_iterations": 800, "start_iteration": 650},
            {"event": "epoch", "iteration": 750, "elapsed_seconds": 167.3},
            {"event": "epoch", "iteration": 800, "elapsed_seconds": 256.0},
            {"event": "done", "iterations_done": 800},
        ],
    )
    assert bench_accuracy.logged_train_seconds(log) == pytest.approx(1208.5 + 256.0)
    one_piece = _log(tmp_path / "one.log", [{"event": "start"}, {"event": "epoch", "elapsed_seconds": 42.0}])
    assert bench_accuracy.logged_train_seconds(one_piece) == pytest.approx(42.0)


def test_summary_cpu_time_leaves_out_resumed_runs():
    base = {"dice": {"a": 0.8}, "mean_dice": 0.8, "predict_s": 1.0}
    runs = [{**base, "train_s": 100.0, "train_cpu_s": 180.0}, {**base, "train_s": 120.0, "train_cpu_s": None}]
    s = accuracy_report.summarise(runs, ["a"])
    assert s["train_s"][0] == pytest.approx(110.0) and s["train_s"][2] == 2
    assert s["train_cpu_s"][0] == pytest.approx(180.0) and s["train_cpu_s"][2] == 1


def test_dataset_cache_key_follows_content_not_mtime(tmp_path):
    a = tmp_path / "case.nii.gz"
    a.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    before = accuracy_datasets._source_signature([a])
    os.utime(a, (1_000_000, 1_000_000))  # a re-copied data folder: same bytes, new mtime
    assert accuracy_datasets._source_signature([a]) == before
    a.write_bytes(b"\x1f\x8b" + bytes(range(1, 201)))  # same size, other content
    assert accuracy_datasets._source_signature([a]) != before
