"""``maskmed plan``: validate, fingerprint, plan and preprocess in one command; reuse on a second run."""

import json

import numpy as np
from raw_dataset_builders import nnunet_dataset, write

from MaskMedCore.cli import main
from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.data.preprocessed_store import default_preprocessed_dir, list_cases, load_case, preprocessing_key


def test_plan_writes_fingerprint_plan_and_cache_then_reuses_them(tmp_path, capsys):
    raw = nnunet_dataset(tmp_path / "raw", num_cases=2, channel_names=("CT", "MR"), spacing=(2.0, 1.0, 1.0))
    out = tmp_path / "out"
    args = ["plan", str(raw), "--out", str(out), "--patch-size", "8", "16", "16", "--workers", "2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"fingerprint: {out / 'fingerprint.json'}" in text and "2 computed, 0 reused" in text
    plan = PlanConfig.from_json((out / "plan.json").read_text())
    assert plan.patch_size == (8, 16, 16) and [n.scheme for n in plan.normalization] == ["ct", "zscore"]
    cpu = PlanConfig.from_json((out / "plan_cpu.json").read_text())  # an explicit patch holds for both
    assert cpu.patch_size == plan.patch_size and preprocessing_key(cpu) == preprocessing_key(plan)
    assert f"CPU plan: {out / 'plan_cpu.json'} (patch [8, 16, 16]" in text
    assert json.loads((out / "fingerprint.json").read_text())["cases"][0]["spacing"] == [2.0, 1.0, 1.0]
    assert list_cases(out) == ["case_000", "case_001"]
    assert load_case(out, "case_001").image.shape[0] == 2

    assert main(args) == 0
    text = capsys.readouterr().out
    assert "reusing its validation and fingerprint" in text and "0 computed, 2 reused" in text


def test_plan_stops_on_problems_and_writes_nothing(tmp_path, capsys):
    raw = nnunet_dataset(tmp_path / "raw", num_cases=2)
    write(np.full((20, 24, 28), 9, np.uint8), raw / "labelsTr" / "case_001.nii.gz")
    assert main(["plan", str(raw), "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("case case_001: label value(s) 9 in labelsTr/case_001.nii.gz")
    assert lines[-1].startswith("stopping: 1 problem(s)")
    assert not (tmp_path / "out").exists()


def test_plan_default_folder_no_preprocess_and_refused_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MASKMED_PREPROCESSED", str(tmp_path / "cache"))
    raw = nnunet_dataset(tmp_path / "raw", num_cases=1)
    assert main(["plan", str(raw), "--no-preprocess", "--patch-size", "8", "8", "8"]) == 0
    out = default_preprocessed_dir(raw)
    assert sorted(p.name for p in out.iterdir()) == ["fingerprint.json", "plan.json", "plan_2d.json", "plan_cpu.json"]
    capsys.readouterr()
    assert main(["plan", str(raw), "--out", str(raw / "pre")]) == 2
    assert "inside the dataset folder" in capsys.readouterr().err
    assert not (raw / "pre").exists()
