"""Stop and Cancel of a real ``maskmed train`` child behind a launcher that forwards no signals.

In Slicer the child is started through ``PythonSlicer``, CTK's AppLauncher, which runs the real
interpreter as *its* child and forwards no signals. ``ctk_launcher_standin.py`` (beside this file) is a
stand-in that reproduces that behaviour (see its docstring): a SIGTERM to it kills it alone (or, in the
``ignores`` variant, nothing), and the trainer runs on. Stop must still reach the trainer (a resumable
checkpoint, within seconds, no orphan), Cancel must kill the whole tree, and ``wait()`` must not block
the GUI on reader threads when a stray process holds the output pipes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
if os.name == "nt":
    pytest.skip("the stand-in launcher and the orphan checks use POSIX signals and /proc", allow_module_level=True)
pytestmark = pytest.mark.slicer

import slicer_test_helpers  # noqa: E402, F401  (puts MaskMedSlicer on sys.path)
from MaskMedSlicerLib.process import (  # noqa: E402
    READER_JOIN_SECONDS,
    STOP_FILE_NAME,
    MaskMedProcess,
    build_train_command,
    subprocess_env,
    with_stop_file,
)

from MaskMedCore.engine.checkpoint import load_checkpoint  # noqa: E402

STANDIN = Path(__file__).resolve().parent / "ctk_launcher_standin.py"
EPOCHS, ITERATIONS = 20, 25  # 500 iterations: far more than the test waits for


def _state(pid: int) -> str | None:
    """The process state letter from /proc (``Z`` zombie), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")  # a zombie is dead for our purpose


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _wait_until(predicate, seconds: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, phantom_dataset):
    """The phantom dataset planned and preprocessed once for this module (the children reuse the cache)."""
    from pipeline_helpers import PHANTOM_PATCH

    from MaskMedCore.engine.distributed import DistributedContext
    from MaskMedCore.engine.train_setup import prepare_plan

    prep = tmp_path_factory.mktemp("launcher_prep")
    prepare_plan(phantom_dataset, prep, DistributedContext(), PHANTOM_PATCH, progress=False, configuration="3d_cpu")
    return phantom_dataset, prep


def _train_options(prep: Path) -> list[str]:
    options = ["--iterations-per-epoch", str(ITERATIONS), "--workers", "0", "--preprocessed", str(prep)]
    return options + ["--patch-size", "16", "32", "32", "--seed", "0", "--configuration", "3d_cpu"]


def _through_launcher(command: list[str], pid_file: Path, ignore_signals: bool = False) -> list[str]:
    """``command`` (``[python, -m, MaskMedCore, ...]``) as Slicer runs it: ``PythonSlicer -m MaskMedCore ...``."""
    launcher = [sys.executable, str(STANDIN), "--child-pid-file", str(pid_file)]
    return launcher + (["--ignore-signals"] if ignore_signals else []) + command[1:]


def _start_training(tmp_path: Path, prepared, ignore_signals: bool = False) -> tuple[MaskMedProcess, Path, int]:
    """Start training through the stand-in; return (process, run folder, the real trainer's pid) once the
    trainer has reported its first iteration."""
    dataset, prep = prepared
    run = tmp_path / "run"
    command = build_train_command(sys.executable, dataset, run, "tiny", EPOCHS, -1, "cpu", _train_options(prep))
    pid_file = tmp_path / "trainer.pid"
    process = MaskMedProcess(_through_launcher(command, pid_file, ignore_signals), subprocess_env()).start()
    seen = []
    deadline = time.monotonic() + 300
    while not any(e.kind == "iteration" for e in seen) and process.running and time.monotonic() < deadline:
        seen += process.events()
        time.sleep(0.1)
    if not any(e.kind == "iteration" for e in seen):
        process.cancel()
        pytest.fail(f"training never iterated: {process.describe_failure('training')}")
    trainer = int(pid_file.read_text())
    assert trainer != process.pid and _alive(trainer) and _alive(process.pid)
    return process, run, trainer


def test_a_train_command_gets_a_stop_file_in_its_run_folder(tmp_path):
    command = build_train_command("py", "ds", tmp_path / "run", "tiny", 3, -1, "cpu")
    process = MaskMedProcess(_through_launcher(command, tmp_path / "pid"), {})
    assert process.stop_file == tmp_path / "run" / STOP_FILE_NAME
    assert process.command[-2:] == ["--stop-file", str(process.stop_file)]
    explicit = build_train_command("py", "ds", "run", "tiny", 3, -1, "cpu", stop_file=tmp_path / "s")
    assert with_stop_file(explicit) == (explicit, tmp_path / "s")
    other = ["py", "-m", "MaskMedCore", "predict", "-m", "x", "-i", "a", "-o", "out"]
    assert with_stop_file(other) == (other, None)


def test_request_stop_writes_the_stop_file_and_start_clears_an_old_one(tmp_path):
    """A stand-in child that polls the stop file (as the trainer does): Stop reaches it through the
    launcher; a stop file left from an earlier run does not stop the next one."""
    stop = tmp_path / "stop"
    stop.write_text("left over")
    script = (
        "import os, sys, time\n"
        f"stop = {str(stop)!r}\n"
        "print('polling', flush=True)\n"
        "while not os.path.exists(stop):\n"
        "    time.sleep(0.05)\n"
        "print('stopping', flush=True)\n"
        "sys.exit(130)\n"
    )
    command = _through_launcher([sys.executable, "-c", script], tmp_path / "pid")
    process = MaskMedProcess(command, subprocess_env(), stop_file=stop).start()
    assert not stop.exists()
    assert _wait_until(lambda: any(e.message == "polling" for e in process.events()), 60)
    assert process.wait(timeout=0.5) is None  # the old stop file did not stop it
    process.request_stop()
    assert process.stop_requested and stop.exists()
    assert process.wait(timeout=30) == 130
    assert [e.message for e in process.events()] == ["stopping"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["dies on SIGTERM (CTK)", "ignores SIGTERM"])
def test_stop_through_the_launcher_saves_a_resumable_checkpoint(tmp_path, prepared, launcher):
    process, run, trainer = _start_training(tmp_path, prepared, ignore_signals=launcher.startswith("ignores"))
    assert process.stop_file == run / STOP_FILE_NAME
    t0 = time.monotonic()
    process.request_stop()
    code = process.wait(timeout=120)
    seconds = time.monotonic() - t0
    if code is None:
        process.cancel()
        pytest.fail("Stop did not end training within 120 s")
    assert code == 130, process.describe_failure("training")  # the launcher passes the trainer's code on
    assert seconds < 60, f"Stop took {seconds:.0f} s"
    assert not _alive(trainer), "the trainer survived its launcher (orphan)"
    assert _group_members(process.pid) == []
    messages = [e.message for e in process.events() if e.kind == "message"]
    assert any("stop file" in m and "checkpoint saved" in m for m in messages), messages
    assert not process.stop_file.exists()  # the trainer consumed it

    state = load_checkpoint(run / "checkpoint_latest.pt").training_state
    stopped_at = state["iteration"]
    assert 1 <= stopped_at < EPOCHS * ITERATIONS
    # --resume continues from there: with the stop file already present it trains exactly one more iteration.
    process.stop_file.write_text("stop")
    dataset, prep = prepared
    resume = build_train_command(sys.executable, dataset, run, "tiny", EPOCHS, -1, "cpu", _train_options(prep))
    resume = with_stop_file([*resume, "--resume"])[0]
    done = subprocess.run(resume, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, done.stderr[-2000:]
    resumed = load_checkpoint(run / "checkpoint_latest.pt").training_state
    assert resumed["iteration"] == stopped_at + 1
    assert resumed["epoch"] * ITERATIONS + resumed["epoch_iteration"] == stopped_at + 1
    assert json.loads((run / "training_config.json").read_text())["epochs"] == EPOCHS


@pytest.mark.slow
def test_cancel_through_the_launcher_kills_the_whole_tree(tmp_path, prepared):
    process, _, trainer = _start_training(tmp_path, prepared)
    t0 = time.monotonic()
    process.cancel()
    assert time.monotonic() - t0 < 5
    assert process.cancelled and process.returncode == -signal.SIGKILL
    assert _wait_until(lambda: not _alive(trainer), 5), "the trainer survived cancel()"
    assert _wait_until(lambda: _group_members(process.pid) == [], 5), _group_members(process.pid)


def test_wait_does_not_block_on_an_orphan_that_holds_the_pipes(tmp_path):
    """What a SIGTERM to CTK's launcher leaves behind: the launcher is gone, its child runs on with our
    pipes. ``wait()`` must return at once (it used to join each reader thread for 5 s), and cancel()
    must still kill the orphan, which stayed in the group."""
    pid_file = tmp_path / "child.pid"
    script = "print('up', flush=True); import time; time.sleep(120)"
    command = _through_launcher([sys.executable, "-c", script], pid_file)
    process = MaskMedProcess(command, subprocess_env()).start()
    assert _wait_until(lambda: pid_file.exists() and any(e.message == "up" for e in process.events()), 60)
    orphan = int(pid_file.read_text())
    os.kill(process.pid, signal.SIGTERM)  # the launcher dies; it forwards nothing
    t0 = time.monotonic()
    assert process.wait(timeout=30) == -signal.SIGTERM
    assert time.monotonic() - t0 < READER_JOIN_SECONDS + 1.0
    assert _alive(orphan) and not process.output_complete  # the orphan still holds the pipes
    process.cancel()
    assert _wait_until(lambda: not _alive(orphan), 5), "cancel() did not reach the orphan"
    assert _wait_until(lambda: process.output_complete, 5)


def test_the_stand_in_launcher_forwards_nothing(tmp_path):
    """The stand-in behaves as described: SIGTERM kills the launcher, not its child (the orphan the fix
    is about), and a normal exit code is passed on."""
    pid_file = tmp_path / "child.pid"
    launcher = subprocess.Popen(_through_launcher([sys.executable, "-c", "import time; time.sleep(60)"], pid_file))
    try:
        assert _wait_until(pid_file.exists, 60)
        child = int(pid_file.read_text())
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=10) == -signal.SIGTERM
        assert _alive(child)
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    exits = subprocess.run(_through_launcher([sys.executable, "-c", "raise SystemExit(7)"], tmp_path / "p"), timeout=60)
    assert exits.returncode == 7
