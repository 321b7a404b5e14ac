"""The child-process runner on real processes: command lines, environment, failure messages, cancel."""

import os
import sys
import time
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

from MaskMedSlicerLib import (  # noqa: E402
    MaskMedProcess,
    MaskMedSlicerError,
    build_predict_command,
    build_train_command,
    maskmed_core_folder,
    missing_packages,
    subprocess_env,
)
from slicer_test_helpers import REPO_ROOT  # noqa: E402


def test_predict_command():
    command = build_predict_command("py", "m.pt", ["a_0000.nii.gz", "a_0001.nii.gz"], "out", device="cpu")
    assert command[:4] == ["py", "-m", "MaskMedCore", "predict"]
    assert command[command.index("-i") + 1 : command.index("-o")] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert command[command.index("--progress") + 1] == "json"
    assert {"--save-queries", "--save-embeddings"} <= set(command)
    bare = build_predict_command("py", "m.pt", ["a.nii"], "out", save_queries=False, save_embeddings=False)
    assert "--save-queries" not in bare and "--save-embeddings" not in bare
    with pytest.raises(MaskMedSlicerError, match="device is 'gpu'"):
        build_predict_command("py", "m.pt", ["a.nii"], "out", device="gpu")


def test_train_command_and_bad_options():
    command = build_train_command("py", "ds", "run", "tiny", 3, -1, "cpu", extra=("--resume",))
    assert command == [
        "py", "-m", "MaskMedCore", "train", "ds", "--out", "run", "--preset", "tiny", "--epochs", "3",
        "--fold", "-1", "--device", "cpu", "--progress", "json", "--resume",
    ]  # fmt: skip
    with pytest.raises(MaskMedSlicerError, match="preset"):
        build_train_command("py", "ds", "run", "huge", 3, 0, "cpu")
    with pytest.raises(MaskMedSlicerError, match="epochs"):
        build_train_command("py", "ds", "run", "tiny", 0, 0, "cpu")
    with pytest.raises(MaskMedSlicerError, match="fold"):
        build_train_command("py", "ds", "run", "tiny", 1, 5, "cpu")


def test_env_puts_the_core_folder_first():
    assert maskmed_core_folder() == REPO_ROOT
    env = subprocess_env({"PYTHONPATH": os.pathsep.join(["/x", str(REPO_ROOT)]), "KEEP": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/x"]
    assert env["KEEP"] == "1" and env["PYTHONUNBUFFERED"] == "1"


def test_missing_packages_does_not_import():
    assert missing_packages(("numpy", "SimpleITK", "maskmed_no_such_package")) == ["maskmed_no_such_package"]
    assert "scipy" not in missing_packages()


def test_failure_reports_the_child_error_line(tmp_path):
    command = build_predict_command(sys.executable, tmp_path / "nope.pt", [tmp_path / "x.nii.gz"], tmp_path / "o")
    process = MaskMedProcess(command, subprocess_env()).start()
    assert process.wait(timeout=120) == 2
    message = process.describe_failure("MaskMed prediction")
    assert message.startswith("MaskMed prediction failed (exit code 2): maskmed predict: error:")
    assert "nope.pt" in message
    logs = [e for e in process.events() if e.kind == "log"]
    assert logs and all(e.data == {"stream": "stderr"} for e in logs)


def test_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(MaskMedSlicerError, match="cannot start"):
        MaskMedProcess([str(tmp_path / "no-python"), "-c", "pass"], subprocess_env()).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_kills_the_whole_process_group(tmp_path):
    """The child starts a grandchild (like a data-loader worker); cancel() must kill both."""
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time, json\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "print(json.dumps({'event': 'start', 'total_iterations': 1, 'start_iteration': 0}), flush=True)\n"
        "time.sleep(120)\n"
    )
    process = MaskMedProcess([sys.executable, "-c", script], subprocess_env()).start()
    deadline = time.monotonic() + 60
    events = []
    while not events and time.monotonic() < deadline:
        events = process.events()
        time.sleep(0.05)
    assert events and events[0].kind == "start"
    grandchild = int(pid_file.read_text())
    assert _alive(process.pid) and _alive(grandchild)

    process.cancel()
    assert process.cancelled and process.returncode == -9
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild survived cancel()"


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_request_stop_lets_the_child_finish_cleanly():
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('saving', flush=True), sys.exit(130)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    process = MaskMedProcess([sys.executable, "-c", script], subprocess_env()).start()
    deadline = time.monotonic() + 60
    seen = []
    while not seen and time.monotonic() < deadline:
        seen = process.events()
        time.sleep(0.05)
    process.request_stop()
    assert process.wait(timeout=30) == 130
    assert [e.message for e in process.events()] == ["saving"]
    assert not process.cancelled
