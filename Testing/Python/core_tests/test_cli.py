"""The ``maskmed`` CLI skeleton, run in-process and as a real console script."""

import json
import subprocess
import sys

from MaskMedCore import __version__
from MaskMedCore.cli import main


def test_model_command_reports_parameters(capsys, tmp_path):
    out_json = tmp_path / "model.json"
    rc = main(["model", "--preset", "tiny", "--in-channels", "2", "--num-classes", "5", "--json-out", str(out_json)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    parts = report["parameters"]
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total") > 0
    assert json.loads(out_json.read_text())["num_classes"] == 5


def test_model_command_times_a_step(capsys):
    assert main(["model", "--preset", "tiny", "--patch", "16", "16", "16", "--batch", "1"]) == 0
    step = json.loads(capsys.readouterr().out)["step"]
    assert step["forward_backward_seconds_median"] > 0


def test_bad_override_exits_nonzero_with_one_line(capsys):
    assert main(["model", "--preset", "tiny", "--set", "head=conv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "head" in err[0] and "decoupled" in err[0]


def test_missing_config_file(capsys, tmp_path):
    assert main(["model", "--config", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_version():
    res = subprocess.run([sys.executable, "-m", "MaskMedCore", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"maskmed {__version__}"
