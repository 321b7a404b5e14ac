"""Checkpoints: atomic, plain data only, clear errors for every kind of bad file."""

import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from MaskMedCore.engine.checkpoint import load_checkpoint, save_checkpoint
from MaskMedCore.errors import CheckpointError
from MaskMedCore.models.build import build_model


def _save(path, plan, **kw):
    cfg = plan.model_config("tiny")
    model = build_model(cfg)
    save_checkpoint(path, model=model, model_config=cfg, plan=plan, **kw)
    return model


def test_round_trip_restores_identical_weights(tmp_path, small_plan):
    model = _save(tmp_path / "c.pt", small_plan, training_state={"epoch": 3, "rng": torch.get_rng_state()})
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.plan == small_plan and ckpt.label_names == ["background", "liver", "spleen"]
    assert ckpt.training_state["epoch"] == 3
    rebuilt = ckpt.build_model()
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


def test_run_folder_resolves_to_best_then_latest(tmp_path, small_plan):
    _save(tmp_path / "checkpoint_latest.pt", small_plan)
    assert load_checkpoint(tmp_path).path.name == "checkpoint_latest.pt"
    _save(tmp_path / "checkpoint_best.pt", small_plan)
    assert load_checkpoint(tmp_path).path.name == "checkpoint_best.pt"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint_best.pt"):
        load_checkpoint(tmp_path / "empty_run")


def test_truncated_checkpoint_is_a_clear_error(tmp_path, small_plan):
    _save(tmp_path / "c.pt", small_plan)
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    torch.save({"format": "maskmed-checkpoint", "payload": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pkl")


def test_checkpoint_from_another_version_or_config(tmp_path, small_plan):
    torch.save(
        {
            "format": "maskmed-checkpoint",
            "format_version": 99,
            "model_config": "",
            "plan": "",
            "label_names": [],
            "model_state": {},
        },
        tmp_path / "future.pt",
    )
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a MaskMed checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    # Weights of one config under another config's name: refused when building the model.
    cfg = small_plan.model_config("tiny")
    save_checkpoint(
        tmp_path / "mixed.pt",
        model=build_model(cfg.replace(head="pointwise", masked_attention=False)),
        model_config=cfg,
        plan=small_plan,
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "mixed.pt").build_model()


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, small_plan):
    """A real write failure (file-size limit, as on a full disk) in a child process."""
    target = tmp_path / "checkpoint_latest.pt"
    _save(target, small_plan)
    before = target.read_bytes()
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        from MaskMedCore.config import PlanConfig
        from MaskMedCore.engine.checkpoint import save_checkpoint
        from MaskMedCore.errors import CheckpointError
        from MaskMedCore.models.build import build_model
        plan = PlanConfig.from_json(open({str(tmp_path / "plan.json")!r}).read())
        cfg = plan.model_config("paper")
        try:
            save_checkpoint({str(target)!r}, model=build_model(cfg), model_config=cfg, plan=plan)
        except CheckpointError as exc:
            print("ERROR", exc)
            sys.exit(3)
        """
    )
    (tmp_path / "plan.json").write_text(small_plan.to_json())
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 3, res.stderr
    assert "previous checkpoint is kept" in res.stdout
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pt", "plan.json"]
