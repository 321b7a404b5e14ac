"""Smoke tests of the benchmark harness (Testing/Benchmarks): the quick mode's smallest case runs in
a child process, and the measuring/reporting helpers compute what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "Benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_fsad_vs_dense  # noqa: E402
import bench_harness as bh  # noqa: E402


def test_power_law_fit_recovers_exponent_and_scale():
    xs = [1e3, 1e4, 1e5, 1e6]
    k, a = bh.fit_power_law(xs, [3.0 * x**1.7 for x in xs])
    assert k == pytest.approx(1.7, abs=1e-9)
    assert a == pytest.approx(3.0, rel=1e-9)
    assert np.isnan(bh.fit_power_law([10.0], [1.0])[0])  # one point: no fit


def test_mean_sd_and_median_skip_missing_values():
    m, sd = bh.mean_sd([0.5, None, 0.7, float("nan")])
    assert m == pytest.approx(0.6) and sd == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert bh.median([3.0, 1.0, 2.0, 10.0]) == 2.5


def test_markdown_section_is_appended_then_replaced_in_place(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro text\n")
    bh.update_markdown("train-step-quick", "first table", md)
    bh.update_markdown("other-quick", "other table", md)
    bh.update_markdown("train-step-quick", "second table", md)
    text = md.read_text()
    assert "intro text" in text and "other table" in text and "second table" in text
    assert "first table" not in text
    assert text.index("second table") < text.index("other table")  # replaced where it was


def test_peak_memory_sees_an_allocation_and_not_its_absence():
    with bh.PeakMemory("cpu") as idle:
        pass
    with bh.PeakMemory("cpu") as busy:
        block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
        del block
    assert idle.peak_mib < 32
    assert 240 < busy.peak_mib < 400


def test_query_tokens_of_the_paper_bridge():
    # 3 coarsest of 6 stride-2 stages at 64^3: 8^3 + 4^3 + 2^3.
    assert bench_fsad_vs_dense.tokens(64) == 584


def test_smallest_quick_case_runs_in_a_child_process():
    script = BENCH_DIR / "bench_fsad_vs_dense.py"
    kwargs = {"bridge": "fsad", "edge": 32, "batch": 1, "device": "cpu", "warmup": 0, "repeats": 1}
    result = bh.run_child(script, "bridge", kwargs, timeout=300)
    assert "error" not in result, result
    assert result["tokens"] == 4**3 + 2**3 + 1
    assert result["step_s"] > 0 and result["peak_mib"] > 0 and result["wall_s"] >= result["step_s"]


def test_a_failing_child_becomes_an_error_row():
    result = bh.run_child(BENCH_DIR / "bench_fsad_vs_dense.py", "no-such-row", {}, timeout=120)
    assert "error" in result and "exit 1" in result["error"] and "no-such-row" in result["error"]


def test_train_step_rounds_combine_to_median_spread_and_per_round_ratios():
    import bench_train_step as ts

    row = [
        {"step_s": 2.0, "step_times_s": [2.0, 2.2], "step_peak_mib": 10.0, "params": 5},
        {"error": "timed out"},
        {"step_s": 3.0, "step_times_s": [3.0, 2.8], "step_peak_mib": 12.0, "params": 5},
    ]
    nnunet = [
        {"step_s": 1.0, "step_times_s": [1.0]},
        {"step_s": 1.5, "step_times_s": [1.5]},
        {"step_s": 2.0, "step_times_s": [2.0]},
    ]
    out = ts.combine_rounds(row, nnunet)
    assert out["step_times_s"] == [2.0, 2.2, 2.8, 3.0] and out["step_s"] == 2.5
    assert out["ratio_rounds"] == [2.0, 1.5]  # the failed round is left out, each ratio within its own round
    assert out["step_peak_mib"] == 12.0 and out["rounds_ok"] == 2
    assert ts.combine_rounds([{"error": "x"}], nnunet) == {"error": "x"}
