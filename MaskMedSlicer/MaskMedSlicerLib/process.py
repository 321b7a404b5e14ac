"""Run ``python -m MaskMedCore ...`` in a child process: command lines, environment, and a runner.

Inference and training never run inside Slicer's process (GPU/host memory is freed when the child
exits, a crash cannot take Slicer down, and the user can cancel). In Slicer the interpreter is
``PythonSlicer`` (:func:`find_python_slicer`); elsewhere ``sys.executable``.

:class:`MaskMedProcess` starts the child in its own process group/session, reads stdout and stderr on
two daemon threads into a queue of :class:`~MaskMedSlicerLib.progress.ProgressEvent` (drained without
blocking by :meth:`MaskMedProcess.events`, e.g. from a Qt timer), and can kill the whole process tree.

``PythonSlicer`` is not the interpreter but CTK's AppLauncher (commontk/AppLauncher,
``ctkAppLauncher.cpp``): it sets up the environment and runs the real ``python-real`` as *its* child
through a ``QProcess`` with forwarded output channels, waits for it and exits with its code. It installs
no signal handlers and forwards no signals, so a SIGTERM sent to its pid kills the launcher alone and
leaves the interpreter running as an orphan that still holds our output pipes. Hence:

- **Stop** (:meth:`MaskMedProcess.request_stop`) of a training child creates the *stop file* that
  ``maskmed train --stop-file PATH`` polls after every iteration (:class:`MaskMedProcess` adds
  ``--stop-file RUN/stop_requested`` to a ``maskmed train`` command that has none); the trainer saves a
  resumable checkpoint and exits with 130, and the launcher exits with that code. A file works on every
  OS and through any launcher. Children without a stop file get SIGTERM on their whole process group
  (POSIX), which reaches the real interpreter.
- **Cancel** (:meth:`MaskMedProcess.cancel`) kills the whole tree: SIGKILL to the process group on POSIX
  (the launcher, the interpreter and any worker it started share the group the child was started in,
  ``start_new_session=True``); ``taskkill /T /F`` on Windows, which walks the tree from the launcher
  (CTK's launcher waits for its child, so the tree is intact while the job runs). The child is started
  with ``CREATE_NEW_PROCESS_GROUP`` there; a Windows job object would also catch processes whose parent
  already died, and is not used.
- :meth:`MaskMedProcess.wait` joins the reader threads for at most :data:`READER_JOIN_SECONDS`, so a
  stray process that keeps the pipes open cannot block the GUI.
"""

from __future__ import annotations

import collections
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.progress import ProgressEvent, ProgressParser

DEVICES = ("auto", "cuda", "cpu")
PRESETS = ("paper", "tiny")
#: Name of the stop file :class:`MaskMedProcess` gives a ``maskmed train`` child, in its run folder.
STOP_FILE_NAME = "stop_requested"
#: Longest time :meth:`MaskMedProcess.wait` waits for the output readers after the child has ended.
READER_JOIN_SECONDS = 1.0
_IS_WINDOWS = os.name == "nt"


def find_python_slicer() -> str | None:
    """Path of Slicer's ``PythonSlicer`` interpreter if it is on PATH (inside Slicer it is), else None."""
    return shutil.which("PythonSlicer")


def maskmed_core_folder() -> Path | None:
    """The folder that contains the ``MaskMedCore`` package: a copy bundled beside this package (the
    installed extension), the source checkout, or wherever the current interpreter imports it from."""
    here = Path(__file__).resolve().parent  # .../MaskMedSlicerLib
    for folder in (here.parent, here.parent.parent):
        if (folder / "MaskMedCore" / "__init__.py").is_file():
            return folder
    import importlib.util

    spec = importlib.util.find_spec("MaskMedCore")  # top-level: locates without importing
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    return None


def subprocess_env(base: Mapping[str, str] | None = None, core_folder: str | os.PathLike | None = None) -> dict:
    """Environment for the child: ``base`` (default ``os.environ``) with ``PYTHONPATH`` starting with the
    folder that holds ``MaskMedCore`` and unbuffered UTF-8 output."""
    env = dict(os.environ if base is None else base)
    folder = Path(core_folder) if core_folder is not None else maskmed_core_folder()
    if folder is not None:
        parts = [str(folder)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(folder)]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise MaskMedSlicerError(f"device is {device!r}; expected one of {DEVICES}")
    return device


def build_predict_command(
    python: str | os.PathLike,
    model: str | os.PathLike,
    input_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    device: str = "auto",
    save_queries: bool = True,
    save_embeddings: bool = True,
    output_format: str | None = ".nii.gz",
) -> list[str]:
    """``python -m MaskMedCore predict -m MODEL -i FILES... -o OUT --device D --progress json [...]``.

    Args:
        input_files: the channel files of one case in channel order, or one folder of cases.
        output_format: ending of the written files (None: the input's).
    """
    if not input_files:
        raise MaskMedSlicerError("build_predict_command: no input files")
    command = [str(python), "-m", "MaskMedCore", "predict", "-m", str(model), "-i", *map(str, input_files)]
    command += ["-o", str(out_dir), "--device", _check_device(device), "--progress", "json"]
    if save_queries:
        command.append("--save-queries")
    if save_embeddings:
        command.append("--save-embeddings")
    if output_format:
        command += ["--output-format", output_format]
    return command


def build_train_command(
    python: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: str = "paper",
    epochs: int = 1000,
    fold: int = 0,
    device: str = "auto",
    extra: Sequence[str] = (),
    stop_file: str | os.PathLike | None = None,
) -> list[str]:
    """``python -m MaskMedCore train DATASET --out OUT --preset P --epochs N --fold F --device D --progress json``.

    Args:
        fold: held-out fold 0..4, or -1 to train on all cases.
        extra: further ``maskmed train`` options, e.g. ``("--iterations-per-epoch", "50", "--resume")``.
        stop_file: the file whose appearance stops training with a resumable checkpoint
            (``--stop-file``); None leaves it to :class:`MaskMedProcess`, which adds
            ``OUT/stop_requested``. The process finds it in the command and creates it on
            :meth:`~MaskMedProcess.request_stop`.
    """
    if preset not in PRESETS:
        raise MaskMedSlicerError(f"preset is {preset!r}; expected one of {PRESETS}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise MaskMedSlicerError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not -1 <= fold <= 4:
        raise MaskMedSlicerError(f"fold must be -1 (all cases) or 0..4, got {fold!r}")
    command = [str(python), "-m", "MaskMedCore", "train", str(dataset_dir), "--out", str(out_dir)]
    command += ["--preset", preset, "--epochs", str(epochs), "--fold", str(fold), "--device", _check_device(device)]
    command += ["--progress", "json"]
    if stop_file is not None:
        command += ["--stop-file", str(stop_file)]
    return [*command, *map(str, extra)]


def _option(items: Sequence[str], name: str) -> str | None:
    """The value of option ``name`` (``NAME VALUE`` or ``NAME=VALUE``; the last one) in ``items``, or None."""
    found = None
    for i, item in enumerate(items):
        if item == name and i + 1 < len(items):
            found = items[i + 1]
        elif item.startswith(name + "="):
            found = item.split("=", 1)[1]
    return found


def is_train_command(command: Sequence[str]) -> bool:
    """Whether ``command`` runs ``python -m MaskMedCore train`` (through any interpreter or launcher)."""
    items = [str(c) for c in command]
    return any(items[i : i + 3] == ["-m", "MaskMedCore", "train"] for i in range(len(items) - 2))


def with_stop_file(command: Sequence[str]) -> tuple[list[str], Path | None]:
    """``(command, stop file)``: a ``maskmed train`` command keeps its ``--stop-file`` or gets
    ``--stop-file OUT/stop_requested`` appended (OUT from ``--out``); other commands have none."""
    items = [str(c) for c in command]
    if not is_train_command(items):
        return items, None
    given = _option(items, "--stop-file")
    if given is not None:
        return items, Path(given)
    out = _option(items, "--out")
    if out is None:
        return items, None
    stop = Path(out) / STOP_FILE_NAME
    return [*items, "--stop-file", str(stop)], stop


class MaskMedProcess:
    """A MaskMed child process with non-blocking progress.

    Args:
        command: argument list (see :func:`build_predict_command`, :func:`build_train_command`).
        env: environment (default :func:`subprocess_env`).
        cwd: working folder of the child.
        stderr_lines: how many trailing stderr lines to keep for error messages.
        stop_file: the file :meth:`request_stop` creates. Default: for a ``maskmed train`` command, its
            ``--stop-file`` value, or ``OUT/stop_requested``, which is then appended to the command
            (:func:`with_stop_file`); other commands have none, and Stop signals their process group.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        stderr_lines: int = 50,
        stop_file: str | os.PathLike | None = None,
    ) -> None:
        if stop_file is None:
            self.command, self.stop_file = with_stop_file(command)
        else:
            self.command, self.stop_file = [str(c) for c in command], Path(stop_file)
        if self.stop_file is not None and cwd is not None and not self.stop_file.is_absolute():
            self.stop_file = Path(cwd) / self.stop_file  # where the child, which runs in cwd, looks
        self.stop_requested = False
        self.env = dict(env) if env is not None else subprocess_env()
        self.cwd = cwd
        self.cancelled = False
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._queue: queue.Queue[ProgressEvent] = queue.Queue()
        self._parser = ProgressParser()
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> MaskMedProcess:
        """Start the child; raises MaskMedSlicerError when the interpreter cannot be run."""
        if self._proc is not None:
            raise MaskMedSlicerError("this MaskMed process was already started")
        if self.stop_file is not None:  # a stop file left by an earlier run would stop this one at once
            try:
                self.stop_file.unlink(missing_ok=True)
            except OSError as exc:
                raise MaskMedSlicerError(f"cannot remove the old stop file {self.stop_file}: {exc.strerror}") from None
        kwargs = {}
        if _IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            # Own session and process group (its id is the child's pid): the group holds the launcher,
            # the real interpreter behind it and every worker, and nothing of Slicer.
            kwargs["start_new_session"] = True
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                **kwargs,
            )
        except OSError as exc:
            raise MaskMedSlicerError(f"cannot start {self.command[0]}: {exc.strerror or exc}") from None
        for stream, handler in ((self._proc.stdout, self._on_stdout), (self._proc.stderr, self._on_stderr)):
            thread = threading.Thread(target=self._read, args=(stream, handler), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, stream, handler) -> None:
        with stream:
            for line in stream:
                handler(line)

    def _on_stdout(self, line: str) -> None:
        event = self._parser.parse(line)
        if event is not None:
            self._queue.put(event)

    def _on_stderr(self, line: str) -> None:
        text = line.rstrip()
        if text:
            self.stderr_tail.append(text)
            self._queue.put(ProgressEvent("log", None, text, {"stream": "stderr"}))

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has ended (negative: killed by that signal on POSIX), else None."""
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def events(self) -> list[ProgressEvent]:
        """All events read since the last call, oldest first; never blocks."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def poll_events(self) -> tuple[list[ProgressEvent], bool]:
        """``(events, ended)`` for one GUI poll: the events read so far, and whether the child has ended.

        ``ended`` is read first and an ended child is waited for before draining, so that the events of a
        poll that reports the end include the child's last lines.
        """
        ended = not self.running
        if ended:
            self.wait()
        return self.events(), ended

    @property
    def output_complete(self) -> bool:
        """Whether both output streams have been read to their end (every event is in the queue)."""
        return self._proc is not None and not any(t.is_alive() for t in self._threads)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end; returns the exit status, or None on timeout.

        Once the child has ended, the reader threads get at most :data:`READER_JOIN_SECONDS` (together)
        to queue its last lines; they normally finish at once. A process that inherited the pipes and
        outlives the child (an orphan of a launcher) cannot block the caller; lines read later still
        arrive through :meth:`events`, and :attr:`output_complete` tells when all were read.
        """
        if self._proc is None:
            raise MaskMedSlicerError("this MaskMed process was not started")
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        deadline = time.monotonic() + READER_JOIN_SECONDS
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return code

    # ------------------------------------------------------------------------------------ stopping
    def request_stop(self) -> None:
        """Ask the child to stop cleanly; returns at once (poll :attr:`running`).

        With a stop file (every ``maskmed train`` child, see :func:`with_stop_file`): create it; the trainer
        notices it after the current iteration, saves a resumable checkpoint and exits with 130, on
        every OS and behind ``PythonSlicer``'s launcher. Without one: SIGTERM to the child's whole
        process group on POSIX (the real interpreter behind a launcher gets it too); on Windows, where
        a console-less child has no such signal, this cancels (kills the tree).
        """
        if not self.running:
            return
        self.stop_requested = True
        if self.stop_file is not None:
            try:
                self.stop_file.parent.mkdir(parents=True, exist_ok=True)
                self.stop_file.write_text("stop requested by the MaskMed Slicer module\n", encoding="utf-8")
            except OSError as exc:
                raise MaskMedSlicerError(f"cannot write the stop file {self.stop_file}: {exc.strerror}") from None
        elif _IS_WINDOWS:
            self.cancel()
        else:
            self._signal_group(signal.SIGTERM)

    def _signal_group(self, sig: int) -> None:
        try:  # the group id is the child's pid (start_new_session); it outlives the launcher's exit
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self, timeout: float = 10.0) -> None:
        """Kill the child and every process it started (its process group / tree) and wait for them."""
        if self._proc is None:
            return
        self.cancelled = True
        if _IS_WINDOWS:
            if self._proc.poll() is None:
                subprocess.run(
                    ["taskkill", "/F", "/T", "/PID", str(self._proc.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
                if self._proc.poll() is None:
                    self._proc.kill()
        else:
            self._signal_group(signal.SIGKILL)  # launcher, interpreter, workers, and orphans of the group
        self.wait(timeout)

    def __enter__(self) -> MaskMedProcess:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.cancel()

    # ------------------------------------------------------------------------------------ errors
    def error_line(self) -> str:
        """The child's most telling stderr line: the last one with ``error`` in it, else the last one."""
        lines = list(self.stderr_tail)
        for line in reversed(lines):
            if "error" in line.lower():
                return line
        return lines[-1] if lines else ""

    def describe_failure(self, what: str = "MaskMed") -> str:
        """One line for the user, e.g. ``MaskMed prediction failed (exit code 2): maskmed predict: error: ...``."""
        line = self.error_line() or "no error message (see the log)"
        return f"{what} failed (exit code {self.returncode}): {line}"


def default_python() -> str:
    """The interpreter used when none is given: ``sys.executable`` (in Slicer pass :func:`find_python_slicer`)."""
    return sys.executable
