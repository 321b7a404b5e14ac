"""Per-group poly LR keeps the CNN : Transformer ratio; progress JSON lines; split files; RNG state."""

import io
import json

import numpy as np
import pytest
import torch

from MaskMedCore.engine.lr_schedule import PerGroupPolyLR
from MaskMedCore.engine.progress import ProgressReporter
from MaskMedCore.engine.rng_state import capture_rng, restore_rng
from MaskMedCore.engine.splits import load_or_create_splits, make_splits
from MaskMedCore.errors import DataError


def test_poly_lr_is_per_group_and_keeps_the_ratio():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(
        [{"params": a.parameters(), "lr_scale": 1.0}, {"params": b.parameters(), "lr_scale": 0.1}], lr=1
    )
    sched = PerGroupPolyLR(opt, initial_lr=1e-3, max_epochs=1000)
    for epoch in (0, 1, 500, 999):
        sched.step(epoch)
        cnn, trans = (g["lr"] for g in opt.param_groups)
        assert cnn == pytest.approx(1e-3 * (1 - epoch / 1000) ** 0.9)
        assert trans == pytest.approx(0.1 * cnn)
    state = sched.state_dict()
    other = PerGroupPolyLR(opt, initial_lr=5.0, max_epochs=3)
    other.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 999 / 1000) ** 0.9)


def test_progress_json_lines(tmp_path):
    stream = io.StringIO()
    rep = ProgressReporter("json", total_iterations=4, log_path=tmp_path / "log", stream=stream, json_interval=0)
    rep.iteration(0, 1, 1.5, {"total": 1.5, "class": 0.2, "stage0/class": 0.1}, 1e-3)
    rep.epoch(0, 2, 1.2, 1e-3, {"liver": 0.5, "spleen": 0.7})
    rep.done(epochs_done=1)
    rep.close()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["start", "iteration", "epoch", "done"]
    assert events[1]["terms"] == {"total": 1.5, "class": 0.2}
    assert events[2]["val_mean_dice"] == pytest.approx(0.6)
    logged = [json.loads(line)["event"] for line in (tmp_path / "log").read_text().splitlines()]
    assert logged == ["start", "epoch", "done"]


def test_splits_are_disjoint_cover_everything_and_persist(tmp_path):
    ids = [f"c{i}" for i in range(12)]
    folds = make_splits(ids, 5, seed=12345)
    vals = [c for f in folds for c in f["val"]]
    assert sorted(vals) == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
    path = tmp_path / "splits.json"
    first = load_or_create_splits(path, ids, 5, 12345)
    assert load_or_create_splits(path, ids, 5, 999) == first  # read back, not recreated
    with pytest.raises(DataError, match="unknown cases"):
        load_or_create_splits(path, ids[:3], 5, 12345)
    assert len(make_splits(ids[:3], 5)) == 5  # fewer cases than folds still works


def test_rng_state_round_trip_is_plain_data(tmp_path):
    gen, rng = torch.Generator().manual_seed(3), np.random.default_rng(4)
    saved = capture_rng(gen, rng)
    torch.save(saved, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    a = (torch.rand(3, generator=gen), rng.random(3))
    restore_rng(loaded, gen, rng)
    b = (torch.rand(3, generator=gen), rng.random(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
