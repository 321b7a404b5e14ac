"""Progress lines of real ``python -m MaskMedCore`` children (predict and train) and the parser."""

import json
import math

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import ProgressParser, TrainingCurve, parse_progress_line, training_curve_table  # noqa: E402
from MaskMedSlicerLib.training_views import training_curve_chart  # noqa: E402


@pytest.mark.parametrize(
    ("line", "kind", "fraction"),
    [
        ("", None, None),
        ("   \n", None, None),
        ("Traceback (most recent call last):", "log", None),
        ("[1, 2]", "log", None),
        ('{"no_event": 1}', "log", None),
        ('{"event": "start", "total_iterations": 4, "start_iteration": 1}', "start", 0.25),
        ('{"event": "tiles", "case": "c", "done": 3, "total": 12}', "tiles", 0.25),
        ('{"event": "tiles", "case": "c", "done": 0, "total": 0}', "tiles", None),
        ('{"event": "message", "text": "hello"}', "message", None),
        ('{"event": "done", "cases": 1, "failed": 0}', "done", 1.0),
    ],
)
def test_parse_single_lines(line, kind, fraction):
    event = parse_progress_line(line)
    if kind is None:
        assert event is None
        return
    assert event.kind == kind
    assert event.fraction == fraction
    assert event.message


def test_iteration_fraction_needs_the_start_total():
    line = json.dumps({"event": "iteration", "epoch": 0, "iteration": 30, "loss": 0.5, "terms": {}, "lr": 1e-3})
    assert parse_progress_line(line).fraction is None
    parser = ProgressParser()
    parser.parse(json.dumps({"event": "start", "total_iterations": 120, "start_iteration": 0}))
    event = parser.parse(line)
    assert event.kind == "iteration" and event.fraction == pytest.approx(0.25)
    assert "iteration 30/120" in event.message and "loss 0.5000" in event.message


def test_training_curve_pads_missing_validation():
    curve = TrainingCurve()
    lines = [
        {"event": "epoch", "epoch": 0, "iteration": 5, "train_loss": 3.0, "val_dice": None, "val_mean_dice": None},
        {
            "event": "epoch",
            "epoch": 1,
            "iteration": 10,
            "train_loss": 2.0,
            "val_dice": {"liver": 0.5, "aorta": 0.3},
            "val_mean_dice": 0.4,
        },
        {"event": "message", "text": "not an epoch"},
    ]
    added = [curve.add(parse_progress_line(json.dumps(d))) for d in lines]
    assert added == [True, True, False]
    assert curve.epochs == [0, 1] and curve.train_loss == [3.0, 2.0]
    assert math.isnan(curve.val_mean_dice[0]) and curve.val_mean_dice[1] == 0.4
    assert curve.class_names == ["liver", "aorta"]
    assert math.isnan(curve.val_dice["liver"][0]) and curve.val_dice["liver"][1] == 0.5
    assert curve.best_val_mean_dice() == 0.4


def test_real_predict_progress(predicted_case):
    """Events of a real ``maskmed predict --progress json`` child, in the order the CLI prints them."""
    _, events, code = predicted_case
    assert code == 0
    stdout = [e for e in events if e.data.get("stream") != "stderr"]
    kinds = [e.kind for e in stdout]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert "tiles" in kinds and "message" in kinds
    assert kinds.index("message") > max(i for i, k in enumerate(kinds) if k == "tiles")
    tiles = [e for e in stdout if e.kind == "tiles"]
    fractions = [e.fraction for e in tiles]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len({e.data["total"] for e in tiles}) == 1 and tiles[-1].data["done"] == tiles[-1].data["total"]
    assert stdout[-1].fraction == 1.0 and stdout[-1].data["failed"] == 0


def test_real_training_progress_and_curve(training_run, scene):
    """A real ``maskmed train`` child (1 epoch): start -> iterations -> epoch (with val Dice) -> done."""
    _, events, code = training_run
    assert code == 0
    stdout = [e for e in events if e.data.get("stream") != "stderr"]
    kinds = [e.kind for e in stdout]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert stdout[0].data["total_iterations"] == 2
    iterations = [e for e in stdout if e.kind == "iteration"]
    assert iterations and [e.fraction for e in iterations] == sorted(e.fraction for e in iterations)
    assert iterations[-1].fraction == 1.0
    assert kinds.index("epoch") > kinds.index("iteration")

    curve = TrainingCurve()
    for event in events:
        curve.add(event)
    assert curve.epochs == [0]
    assert curve.class_names == ["liver", "spleen", "kidney_left", "kidney_right", "aorta"]
    assert all(0.0 <= curve.val_dice[n][0] <= 1.0 for n in curve.class_names)

    table = training_curve_table(curve, scene)
    assert table.GetNumberOfRows() == 1
    assert table.GetTable().GetColumnByName("train loss").GetValue(0) == pytest.approx(curve.train_loss[0])
    assert table.GetTable().GetColumnByName("val Dice liver").GetValue(0) == pytest.approx(curve.val_dice["liver"][0])
    chart = training_curve_chart(table, scene)
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    assert chart.GetNthPlotSeriesNode(0).GetTableNode() is table
