"""The plain-text progress bar used where tqdm is not installed (3D Slicer), and its honest rates."""

from __future__ import annotations

import io
import sys
import time

import pytest

from MaskMedCore.engine.progress import ProgressReporter, TextBar, format_duration, format_rate, make_bar


@pytest.mark.parametrize(
    "seconds, text", [(0.04, "0.0s"), (4.26, "4.3s"), (42.4, "42s"), (185, "3m05s"), (7620, "2h07m")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "done, seconds, text",
    [(10, 2.0, "5 it/s"), (2, 6.2, "3.1 s/case"), (1, 0.0, "? s/case"), (0, 3.0, "? s/it"), (1, 1.0, "1 it/s")],
)
def test_format_rate_says_seconds_per_unit_below_one_per_second(done, seconds, text):
    unit = "case" if "case" in text else "it"
    assert format_rate(done, seconds, unit) == text


def test_text_bar_rate_counts_only_its_own_work_and_lines_are_throttled():
    out = io.StringIO()
    bar = TextBar(total=100, desc="train", unit="it", initial=90, stream=out, interval=3600)
    time.sleep(0.2)
    bar.update(2)  # the first update prints at once
    bar.set_postfix(loss="0.5", refresh=False)
    bar.update(2)  # within the interval: no line
    bar.write("epoch 0: train loss 0.5")
    bar.close()
    bar.close()  # a second close prints nothing
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("train: 92/100 it (92%), ") and lines[1] == "epoch 0: train loss 0.5"
    assert lines[2].startswith("train: 94/100 it (94%), ") and lines[2].endswith("loss=0.5")
    # 4 iterations done in ~0.2 s: about 20 it/s, not (94 - 0)/0.2; the time left is 6 of them.
    rate = float(lines[2].split(" elapsed, ")[1].split()[0])
    assert 5 < rate < 25, lines[2]
    assert "left" in lines[2]


def test_disabled_text_bar_prints_nothing():
    out = io.StringIO()
    bar = TextBar(total=3, stream=out, disable=True)
    bar.update()
    bar.write("x")
    bar.close()
    assert out.getvalue() == ""


def test_without_tqdm_the_bar_and_the_reporter_fall_back_to_text(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # ``import tqdm`` now raises ImportError
    assert isinstance(make_bar(5, desc="d"), TextBar)
    reporter = ProgressReporter("bar", total_iterations=2)
    reporter.iteration(0, 1, 0.7, {}, 1e-3)
    reporter.epoch(0, 2, 0.6, 1e-3)
    reporter.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("train: 1/2 it (50%)") and "loss=0.7000" in err[0]
    assert err[1] == "epoch 0: train loss 0.6000, lr 1.00e-03"
    assert len(err) == 2  # the count did not move after the first line: close() adds none
