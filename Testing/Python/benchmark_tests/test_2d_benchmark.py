"""Issue 13's 2d vs 3d_fullres benchmark: the equal-voxels batch rule and the table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parents[2] / "Benchmarks"
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core_tests" / "data"))

import bench_2d  # noqa: E402
from raw_dataset_builders import nnunet_dataset  # noqa: E402


def test_2d_rows_get_the_slices_holding_the_3d_rows_voxels(tmp_path):
    raw = nnunet_dataset(tmp_path / "raw", num_cases=3, shape=(20, 24, 28))
    work = tmp_path / "work"
    assert bench_2d.batch_size(raw, work, "task", "3d_fullres") == bench_2d.BATCH_3D
    slices = bench_2d.batch_size(raw, work, "task", "2d")
    from MaskMedCore.config.plan_config import PlanConfig

    fullres = PlanConfig.from_json((work / "preprocessed" / "task" / "plan.json").read_text())
    flat = PlanConfig.from_json((work / "preprocessed" / "task" / "plan_2d.json").read_text())
    assert flat.patch_size[0] == 1 and fullres.patch_size[0] > 1
    voxels_3d = bench_2d.BATCH_3D * np.prod(fullres.patch_size)
    assert abs(slices * np.prod(flat.patch_size) - voxels_3d) <= np.prod(flat.patch_size) / 2  # nearest count


def test_markdown_table_has_one_row_per_run_and_the_mean_dice():
    row = {
        "configuration": "2d",
        "head": "qtseg",
        "patch": [1, 56, 40],
        "batch": 80,
        "parameters": 1234,
        "seconds_per_iteration": 1.25,
        "step_seconds": 0.5,
        "predict_seconds": 3.5,
        "iterations": 400,
        "test_cases": 40,
        "per_class": {"anterior": {"dice": 0.8}, "posterior": {"dice": 0.6}},
        "mean_dice": 0.7,
    }
    table = bench_2d.markdown({"hippocampus/2d_qtseg": row})
    line = "| 2d, QTSeg-style token decoder | 1x56x40 x 80 | 1,234 | 0.50 | 1.25 | 3.5 | 0.800 | 0.600 | **0.700** |"
    assert line in table
    assert "**brats**" not in table and "400 iterations per row, 40 test cases" in table
