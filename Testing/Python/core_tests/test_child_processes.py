"""The real ``maskmed train`` / ``maskmed predict`` children without tqdm, and what their progress says.

3D Slicer does not ship tqdm, and the Slicer module runs these commands in ``PythonSlicer``. Here they
run as real child processes with a ``tqdm`` package first on ``PYTHONPATH`` that raises
``ModuleNotFoundError`` on import, exactly what a missing package does: they must succeed, the terminal
mode (``bar``) must fall back to plain, honest text lines and the JSON mode must not need tqdm at all.
``maskmed predict``'s terminal progress counts cases (with the tiles of the current case), timed from
before the first case, so its rate is the true time per case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from MaskMedCore.cli import main

REPO = Path(__file__).resolve().parents[3]
TEXT_BAR = re.compile(
    r"(?P<desc>\w+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\), (?P<elapsed>[\dhms.]+) elapsed, "
    r"(?P<rate>[\d.e+]+ \w+/s|[\d.e+]+ s/\w+)"
)


def _seconds(text: str) -> float:
    """``6.2s``, ``1m05s``, ``2h07m`` -> seconds."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)([hms])", text):
        total += float(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


@pytest.fixture(scope="module")
def env_without_tqdm(tmp_path_factory) -> dict[str, str]:
    """An environment in which ``import tqdm`` fails in the child (a blocking package first on the path)."""
    blocker = tmp_path_factory.mktemp("no_tqdm")
    (blocker / "tqdm").mkdir()
    (blocker / "tqdm" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tqdm' (hidden by the MaskMed test)\", name='tqdm')\n"
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    probe = subprocess.run([sys.executable, "-c", "import tqdm"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "hidden by the MaskMed test" in probe.stderr, probe.stderr
    return env


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory, phantom_dataset) -> Path:
    """A folder with two phantom cases in nnU-Net naming (``<case>_0000.nii.gz``)."""
    folder = tmp_path_factory.mktemp("two_cases")
    for image in sorted((phantom_dataset / "imagesTr").iterdir())[:2]:
        shutil.copyfile(image, folder / image.name)
    return folder


def _maskmed(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "MaskMedCore", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def _train_args(dataset: Path, run: Path, prep: Path, progress: str) -> list[str]:
    return [
        *("train", str(dataset), "--out", str(run), "--preset", "tiny", "--epochs", "1"),
        *("--iterations-per-epoch", "2", "--fold", "all", "--workers", "0", "--device", "cpu"),
        *("--patch-size", "16", "32", "32", "--preprocessed", str(prep), "--progress", progress),
    ]


@pytest.mark.slow
def test_train_children_run_without_tqdm(tmp_path, phantom_dataset, env_without_tqdm):
    # JSON progress, as the Slicer module runs it; a fresh cache, so preprocessing's progress runs too.
    prep = tmp_path / "prep"
    done = _maskmed(_train_args(phantom_dataset, tmp_path / "json_run", prep, "json"), env_without_tqdm)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and "iteration" in kinds and kinds[-1] == "done", kinds
    assert [e["iteration"] for e in events if e["event"] == "iteration"][-1] == 2
    assert re.search(r"^preprocessing: 4/4 case \(100%\)", done.stderr, re.M), done.stderr
    assert (tmp_path / "json_run" / "checkpoint_latest.pt").is_file()

    # The terminal bar falls back to plain lines on stderr.
    done = _maskmed(_train_args(phantom_dataset, tmp_path / "bar_run", prep, "bar"), env_without_tqdm)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [m for m in map(TEXT_BAR.match, done.stderr.splitlines()) if m and m["desc"] == "train"]
    assert lines and lines[-1]["n"] == lines[-1]["total"] == "2" and lines[-1]["unit"] == "it", done.stderr
    assert "epoch 0: train loss" in done.stderr


@pytest.mark.slow
def test_predict_children_run_without_tqdm(tmp_path, quick_run, two_cases, env_without_tqdm):
    common = ["predict", "-m", str(quick_run), "-i", str(two_cases), "--device", "cpu"]
    done = _maskmed([*common, "-o", str(tmp_path / "bar"), "--progress", "bar"], env_without_tqdm)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "bar").glob("*.nii.gz"))) == 2
    bars = [m for m in map(TEXT_BAR.match, done.stderr.splitlines()) if m and m["desc"] == "predict"]
    assert bars and bars[-1]["n"] == bars[-1]["total"] == "2" and bars[-1]["unit"] == "case", done.stderr
    # The rate is honest: cases over the wall time since before the first case.
    elapsed, (value, unit) = _seconds(bars[-1]["elapsed"]), bars[-1]["rate"].split()
    seconds_per_case = float(value) if unit == "s/case" else 1 / float(value)
    assert seconds_per_case * 2 == pytest.approx(elapsed, rel=0.1, abs=0.2), bars[-1].group(0)
    per_case = re.findall(r": wrote .* \((\d)/2\), (\d+) tiles? in ([\d.]+) s$", done.stderr, re.M)
    assert [c for c, _, _ in per_case] == ["1", "2"], done.stderr
    assert sum(float(s) for _, _, s in per_case) <= elapsed + 0.2
    assert "tile/s" not in done.stderr

    # JSON progress for the Slicer module: the tiles events keep their fields and gain the case count.
    done = _maskmed([*common, "-o", str(tmp_path / "json"), "--progress", "json"], env_without_tqdm)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    tiles = [e for e in events if e["event"] == "tiles"]
    assert tiles and {"case", "done", "total", "case_index", "cases", "case_seconds"} <= set(tiles[0])
    assert {(e["case_index"], e["cases"]) for e in tiles} == {(1, 2), (2, 2)}
    assert all(e["done"] <= e["total"] for e in tiles) and tiles[-1]["done"] == tiles[-1]["total"]
    messages = [e["text"] for e in events if e["event"] == "message"]
    assert len(messages) == 2 and messages[1].endswith("(2/2)")
    assert events[-1] == {"event": "done", "cases": 2, "failed": 0}


def test_predict_bar_counts_cases_with_tiles_per_case(tmp_path, quick_run, two_cases, capsys):
    """With tqdm (the terminal's bar): one bar over the cases with a true per-case rate, a line per case
    with its tile count and seconds, and no per-tile rate (a one-tile case used to show "155344 tile/s")."""
    args = ["predict", "-m", str(quick_run), "-i", str(two_cases), "-o", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    final = re.findall(r"predict: 100%.*?2/2 \[([\d:]+)<[\d:?]+, +([\d.]+) ?(s/case|case/s)", err)
    assert final, err
    per_case = re.findall(r": wrote .* \((\d)/2\), (\d+) tiles? in ([\d.]+) s", err)
    assert [c for c, _, _ in per_case] == ["1", "2"] and all(int(t) >= 1 for _, t, _ in per_case), err
    assert "tile/s" not in err and "s/tile" not in err
