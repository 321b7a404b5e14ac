"""Run every benchmark one after another (never concurrently: they share the CPU/GPU) and report
how long each took. ``--quick`` is the 2-CPU-core mode that must finish in under 15 minutes.

    python Testing/Benchmarks/run_all.py --quick          # CPU, CI-sized, ~15 min
    python Testing/Benchmarks/run_all.py --device cuda    # full mode on a GPU

Each benchmark writes ``results/<name>-<mode>.json`` and refreshes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHMARKS = ("bench_train_step", "bench_fsad_vs_dense", "bench_inference", "bench_accuracy")
QUICK_LIMIT_MIN = 15.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args(argv)
    common = (["--quick"] if args.quick else []) + ["--device", args.device]
    common += ["--no-markdown"] if args.no_markdown else []
    durations, failures = {}, []
    start = time.perf_counter()
    for name in args.only or BENCHMARKS:
        print(f"== {name} {' '.join(common)}", flush=True)
        t0 = time.perf_counter()
        module = importlib.import_module(name)
        saved = sys.argv
        sys.argv = [str(Path(module.__file__)), *common]  # so each section records its own command
        try:
            rc = module.main(common)
        except SystemExit as exc:  # a benchmark refusing its arguments or its device
            rc = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.argv = saved
        durations[name] = (time.perf_counter() - t0) / 60
        if rc:
            failures.append(name)
        print(f"== {name}: {durations[name]:.1f} min, exit {rc}", flush=True)
    total = (time.perf_counter() - start) / 60
    for name, minutes in durations.items():
        print(f"{name:24s} {minutes:5.1f} min")
    print(f"{'total':24s} {total:5.1f} min")
    if args.quick and total > QUICK_LIMIT_MIN:
        print(f"quick mode took {total:.1f} min, over its {QUICK_LIMIT_MIN:.0f}-minute budget", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
