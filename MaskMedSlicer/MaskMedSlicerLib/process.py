"""Run ``python -m MaskMedCore ...`` in a child process: command lines, environment, and a runner.

Inference and training never run inside Slicer's process (GPU/host memory is freed when the child
exits, a crash cannot take Slicer down, and the user can cancel). In Slicer the interpreter is
``PythonSlicer`` (:func:`find_python_slicer`); elsewhere ``sys.executable``.

:class:`MaskMedProcess` starts the child in its own process group/session, reads stdout and stderr on
two threads into a queue of :class:`~MaskMedSlicerLib.progress.ProgressEvent` (drained without
blocking by :meth:`MaskMedProcess.events`, e.g. from a Qt timer), and can kill the whole process tree.
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
from collections.abc import Mapping, Sequence
from pathlib import Path

from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.progress import ProgressEvent, ProgressParser

DEVICES = ("auto", "cuda", "cpu")
PRESETS = ("paper", "tiny")
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
) -> list[str]:
    """``python -m MaskMedCore train DATASET --out OUT --preset P --epochs N --fold F --device D --progress json``.

    Args:
        fold: held-out fold 0..4, or -1 to train on all cases.
        extra: further ``maskmed train`` options, e.g. ``("--iterations-per-epoch", "50", "--resume")``.
    """
    if preset not in PRESETS:
        raise MaskMedSlicerError(f"preset is {preset!r}; expected one of {PRESETS}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise MaskMedSlicerError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not -1 <= fold <= 4:
        raise MaskMedSlicerError(f"fold must be -1 (all cases) or 0..4, got {fold!r}")
    command = [str(python), "-m", "MaskMedCore", "train", str(dataset_dir), "--out", str(out_dir)]
    command += ["--preset", preset, "--epochs", str(epochs), "--fold", str(fold), "--device", _check_device(device)]
    return [*command, "--progress", "json", *map(str, extra)]


class MaskMedProcess:
    """A MaskMed child process with non-blocking progress.

    Args:
        command: argument list (see :func:`build_predict_command`, :func:`build_train_command`).
        env: environment (default :func:`subprocess_env`).
        cwd: working folder of the child.
        stderr_lines: how many trailing stderr lines to keep for error messages.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        stderr_lines: int = 50,
    ) -> None:
        self.command = [str(c) for c in command]
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
        kwargs = {}
        if _IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # own process group: cancel() reaches data-loader workers too
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

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end (and its output to be read); returns the exit status, or None on timeout."""
        if self._proc is None:
            raise MaskMedSlicerError("this MaskMed process was not started")
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self._threads:
            thread.join(timeout=5.0)
        return code

    # ------------------------------------------------------------------------------------ stopping
    def request_stop(self) -> None:
        """Ask the child to stop cleanly (SIGTERM to the main process: training saves a resumable
        checkpoint first). On Windows there is no such signal for a console child; this kills the tree."""
        if not self.running:
            return
        if _IS_WINDOWS:
            self.cancel()
        else:
            self._proc.send_signal(signal.SIGTERM)

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
            try:  # the group id is the child's pid (start_new_session); also reaches orphaned workers
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
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
