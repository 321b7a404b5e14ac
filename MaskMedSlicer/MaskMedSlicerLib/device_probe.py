"""Which devices PyTorch sees, asked of a child process (torch is never imported in Slicer's process)."""

from __future__ import annotations

import json
import os
import sys

from MaskMedSlicerLib.process import MaskMedProcess, subprocess_env
from MaskMedSlicerLib.task_state import DONE, IDLE, RUNNING, TaskUpdate

PROBE_SCRIPT = (
    "import json\n"
    "try:\n"
    "    import torch\n"
    "    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] "
    "if torch.cuda.is_available() else []\n"
    "    info = {'torch': torch.__version__, 'gpus': gpus}\n"
    "except Exception as exc:\n"
    "    info = {'error': str(exc)}\n"
    "print(json.dumps({'event': 'message', 'text': json.dumps(info)}), flush=True)\n"
)


def describe_devices(text: str) -> str:
    """One line for the panel from the probe's JSON (``{torch, gpus}`` or ``{error}``)."""
    try:
        info = json.loads(text)
    except ValueError:
        info = {"error": text}
    if not isinstance(info, dict) or not ("error" in info or "gpus" in info):
        info = {"error": text}
    if "error" in info:
        return f"PyTorch cannot be loaded: {info['error']}"
    if info["gpus"]:
        return f"GPU found: {', '.join(info['gpus'])} (PyTorch {info['torch']})"
    return f"no CUDA GPU found: auto uses the CPU (PyTorch {info['torch']})"


class DeviceProbe:
    """Start the probe once; :attr:`status` holds its answer after the poll that returns ``finished``."""

    def __init__(self, python_executable: str | os.PathLike | None = None) -> None:
        self.python_executable = python_executable
        self.state, self.status, self.process = IDLE, "", None

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def start(self) -> None:
        command = [str(self.python_executable or sys.executable), "-c", PROBE_SCRIPT]
        self.process = MaskMedProcess(command, subprocess_env()).start()
        self.state, self.status = RUNNING, "checking…"

    def poll(self) -> TaskUpdate:
        if not self.running:
            return TaskUpdate()
        events, ended = self.process.poll_events()
        for event in events:
            if event.kind == "message":
                self.status = describe_devices(event.message)
        if not ended:
            return TaskUpdate()
        if self.status == "checking…":
            self.status = f"PyTorch cannot be loaded: {self.process.error_line() or 'the probe printed nothing'}"
        self.state = DONE
        return TaskUpdate(finished=True)

    def cancel(self) -> None:
        if self.running:
            self.process.cancel()
            self.state = DONE
