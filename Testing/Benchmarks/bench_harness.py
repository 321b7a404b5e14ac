"""Shared plumbing of the benchmarks in ``Testing/Benchmarks/`` (not part of the test suite).

Every benchmark script:

- runs each measured row in a fresh child process (``run_child``), so rows start from the same
  state, one row's allocator caches cannot flatter or hurt the next, and a row that runs out of
  memory or time is reported instead of killing the whole benchmark;
- measures peak memory inside the child over the measured phase only (``PeakMemory``): on CUDA
  ``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident set (Linux VmHWM,
  reset through ``/proc/self/clear_refs`` at the start of the phase) minus the resident set at
  the start, i.e. what the phase added on top of the imported libraries and built model;
- writes ``results/<name>-<mode>.json`` atomically and refreshes its own section of
  ``BENCHMARKS.md`` (between ``<!-- BEGIN name-mode -->`` / ``<!-- END name-mode -->`` markers),
  stamped with the machine, library versions, date and the exact command.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parents[1]
RESULTS_DIR = BENCH_DIR / "results"
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"
RESULT_PREFIX = "BENCH_RESULT "
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    return float("nan")


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU/GPU, cores, RAM, threads and versions of everything a row may use."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {
            name: _version(dist)
            for name, dist in (
                ("MaskMedCore", "MaskMedCore"),
                ("torch", "torch"),
                ("monai", "monai"),
                ("nnunetv2", "nnunetv2"),
                ("dynamic-network-architectures", "dynamic_network_architectures"),
            )
        },
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict[str, Any]) -> str:
    v = info["versions"]
    dev = info.get("gpu") or f"{info['cpu']}, {info['cpu_cores']} cores, {info['torch_threads']} torch threads"
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return f"{dev}; {info['ram_gib']} GiB RAM; Python {info['python']}; {libs}"


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is visible to torch {torch.__version__}")
    return name


# ---------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (peak-memory measurement needs Linux)")


class PeakMemory:
    """Peak memory added during a ``with`` block, in MiB (``.peak_mib``).

    CUDA: peak allocated by torch's caching allocator above what was allocated at entry.
    CPU: peak resident set above the resident set at entry (VmHWM is reset at entry).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mib = float("nan")

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
            self._start = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_kib("VmHWM") * 1024
        self.peak_mib = (peak - self._start) / 2**20


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (device-synchronised)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return float("nan") if n == 0 else (s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2]))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``y = a * x**k`` in log-log space; returns ``(k, a)``."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan"), float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    k = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return k, math.exp(my - k * mx)


# ---------------------------------------------------------------------------------------- children
def child_main(handlers: dict[str, Callable[..., dict[str, Any]]]) -> bool:
    """In a child process (``--child KIND JSON`` on the command line): run the named handler with
    the JSON keyword arguments, print its result after ``RESULT_PREFIX`` and return True.
    Returns False in the parent (no ``--child``) so the script goes on with its own main."""
    if len(sys.argv) < 4 or sys.argv[1] != "--child":
        return False
    kind, kwargs = sys.argv[2], json.loads(sys.argv[3])
    result = handlers[kind](**kwargs)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return True


def run_child(script: Path, kind: str, kwargs: dict[str, Any], timeout: float, env: dict | None = None) -> dict:
    """Run ``script --child kind json`` in a fresh interpreter; its result dict, or
    ``{"error": ...}`` when it failed, ran out of memory or time. Adds ``wall_s`` (process wall
    time including imports) and ``max_rss_mib`` (the child's whole-life peak resident set)."""
    cmd = [sys.executable, str(script), "--child", kind, json.dumps(kwargs)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    # ru_maxrss of RUSAGE_CHILDREN is the largest of all waited-for children so far, so it is only
    # reported from the child's own VmHWM line when present.
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (err or out).strip().splitlines()[-6:]
        reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
        return {"error": f"{reason}: " + " | ".join(tail)[-600:]}
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["wall_s"] = round(wall, 2)
    return result


def whole_life_peak_mib() -> float:
    """This process's peak resident set since start (or the last VmHWM reset), MiB."""
    return _status_kib("VmHWM") / 1024


# ---------------------------------------------------------------------------------------- output
def command_line() -> str:
    rel = os.path.relpath(sys.argv[0], REPO_ROOT)
    return "python " + " ".join(shlex.quote(a) for a in [rel, *sys.argv[1:]])


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (a killed run leaves the old file or none)."""
    from MaskMedCore.io_utils import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return Path(path)


def write_result(name: str, mode: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>-<mode>.json`` atomically and return its path."""
    return write_json_atomic(RESULTS_DIR / f"{name}-{mode}.json", payload)


def update_markdown(section: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section between ``<!-- BEGIN section -->`` and ``<!-- END section -->``."""
    from MaskMedCore.io_utils import atomic_write_text

    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# MaskMed benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, text)


def stamp(info: dict[str, Any], started: float) -> str:
    """The provenance lines every section starts with."""
    today = _dt.date.today().isoformat()
    minutes = (time.perf_counter() - started) / 60
    return f"*Measured {today} in {minutes:.1f} min on: {machine_line(info)}.*  \n*Command:* `{command_line()}`\n"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def met(flag: bool | None) -> str:
    return "not measured" if flag is None else ("**met**" if flag else "**not met**")


@contextlib.contextmanager
def elapsed() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


def add_common_args(parser, default_timeout: float = 1800) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes for 2 CPU cores (the CI-sized run)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--timeout", type=float, default=default_timeout, help="seconds allowed per row")
    parser.add_argument("--no-markdown", action="store_true", help="write the JSON only, leave BENCHMARKS.md")
