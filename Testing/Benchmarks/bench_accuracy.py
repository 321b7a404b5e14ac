"""Accuracy benchmark: the paper's ablations (MaskMed Tables 3 and 4) in small, on real data.

    python Testing/Benchmarks/bench_accuracy.py --quick            # 2 CPU cores, minutes; says so
    python Testing/Benchmarks/bench_accuracy.py --device cuda      # full mode: paper preset, GPU budget

Why it is built this way:

- *Same everything but the ablated part.* Every row of a task trains on the same raw dataset
  (``accuracy_datasets``), the same MaskMed plan and preprocessed cache (made once per task), the
  same split, patch, batch, iterations, optimiser and LR, and is scored by the same Dice on the same
  test cases. Only ``model_overrides`` differ between MaskMed rows.
- *nnU-Net v2 itself as the external baseline* (``accuracy_nnunet``): trained by the ``nnunetv2``
  package on the same files with the same spacing, patch, batch, UNet topology and budget, so a gap
  between it and the point-wise row is a pipeline gap, not an architecture gap.
- *One child process per (task, row)* (``bench_harness.run_child``), training its seeds one after
  another (nnU-Net: one per seed): a failing or out-of-memory row becomes an error cell without
  taking the others down, and a failing seed becomes an error cell of its own.
- *Seeds*: ``TrainingConfig.seed`` (initialisation, patch sampling, augmentation) for MaskMed; the
  nnU-Net child seeds Python/NumPy/torch itself. Each result records a digest of the final
  parameters, and the report checks that different seeds really gave different runs.
- *Quick mode* (``--quick``) exists so the whole pipeline is exercised on 2 CPU cores in minutes
  (the tiny preset, BraTS and the CT test case at 3 mm, 6 iterations, two runs in parallel with one
  thread each). Its numbers say nothing about the methods; the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import accuracy_report  # noqa: E402
import bench_harness  # noqa: E402
from accuracy_rows import (  # noqa: E402
    MODE_TASKS,
    ROW_BY_KEY,
    ROW_KEYS,
    default_rows,
    make_budget,
    mirror_for,
    nnunet_budget,
    recipe_for,
    row_key,
    trained_rows,
)

SCRIPT = Path(__file__).resolve()
NAME = "accuracy"
TASKS = ("brats", "totalseg", "hippocampus")


# ---------------------------------------------------------------------------------------- children
def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def child_prepare_maskmed(task: dict, budget: dict, threads: int) -> dict:
    """Plan and preprocess the task once for every MaskMed row (fixed patch, batch and stage count)."""
    _threads(threads)
    from MaskMedCore.config.plan_config import PlanConfig
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.fingerprint import compute_fingerprint
    from MaskMedCore.data.planner import plan_dataset
    from MaskMedCore.data.preprocessed_store import preprocess_dataset

    start = time.perf_counter()
    folder = Path(task["root"]) / "maskmed_preprocessed" / budget["mode"]
    marker = folder / ".bench-prepared.json"
    key = {
        "raw": (Path(task["raw_dir"]) / ".complete").read_text(),
        **{k: budget[k] for k in ("patch", "batch", "max_stages")},
    }
    if marker.is_file() and json.loads(marker.read_text()) == key and (folder / "plan.json").is_file():
        plan = PlanConfig.from_json((folder / "plan.json").read_text(), source=str(folder / "plan.json"))
        computed: list[str] = []  # the trainer still checks every case against the raw files
    else:
        marker.unlink(missing_ok=True)
        dataset = load_dataset(task["raw_dir"])
        fingerprint = compute_fingerprint(dataset, workers=1)
        plan = plan_dataset(
            dataset,
            fingerprint,
            patch_size=budget["patch"],
            batch_size=budget["batch"],
            max_stages=budget["max_stages"],
        )
        computed = list(preprocess_dataset(dataset, plan, folder, workers=1, progress=False).computed)
        marker.write_text(json.dumps(key))
    model = plan.model_config(budget["preset"])
    topology = {
        "patch_size": list(plan.patch_size),
        "target_spacing": list(plan.target_spacing),
        "features_per_stage": list(model.features_per_stage),
        "kernel_sizes": [list(k) for k in model.kernel_sizes],
        "strides": [list(s) for s in model.strides],
        "n_conv_per_stage": model.n_conv_per_stage,
        "n_conv_per_stage_decoder": model.n_conv_per_stage_decoder,
    }
    return {
        "preprocessed_dir": str(folder),
        "topology": topology,
        "batch_size": plan.batch_size,
        "median_shape": list(plan.median_shape),
        "computed": computed,
        "seconds": round(time.perf_counter() - start, 2),
    }


def child_prepare_nnunet(task: dict, mode: str, topology: dict, batch_size: int, threads: int) -> dict:
    _threads(threads)
    import accuracy_nnunet

    accuracy_nnunet.cleanup_env_check()
    return accuracy_nnunet.prepare(task, mode, topology, batch_size)


def child_maskmed(task: dict, row: str, seeds: list[int], budget: dict, preprocessed_dir: str, threads: int) -> dict:
    """Train one MaskMed row once per seed, one after another in this process; ``{"seeds": [...]}``,
    one result (or ``{"error": ...}``) per seed.

    One process per row rather than per run: a child's fixed start-up (torch, torch._dynamo) is
    ~6 s against seconds of quick-mode training. Every run is seeded from scratch by
    ``TrainingConfig.seed``, so a run's parameters do not depend on the runs before it in the
    process (the parameter digests match those of one-process-per-run).
    """
    _threads(threads)
    # Every torch optimiser imports torch._dynamo on construction (~3 s once per process); import it before the
    # clock starts so train_s is the training itself (nnU-Net's trainer module imports it at import time too).
    import torch._dynamo  # noqa: F401

    results = []
    for seed in seeds:
        start = time.perf_counter()
        try:
            result = _train_one_seed(task, row, seed, budget, preprocessed_dir)
        except Exception as exc:  # one failing seed must not hide the others
            result = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        results.append({**result, "wall_s": round(time.perf_counter() - start, 2)})
    return {"seeds": results}


def _train_one_seed(task: dict, row: str, seed: int, budget: dict, preprocessed_dir: str) -> dict:
    """Train one MaskMed row with one seed, predict the test cases, score them.

    Resumable: the result is kept in ``<run>/result.json`` with the key it was made under (task split,
    budget, row) and returned as is when the key matches; an unfinished run with a checkpoint resumes.
    """
    import accuracy_datasets as ad
    import numpy as np
    import SimpleITK as sitk
    import torch

    from MaskMedCore.config import LossConfig, TrainingConfig
    from MaskMedCore.engine.trainer import LATEST, train
    from MaskMedCore.inference.predictor import Predictor

    data = ad.TaskData(**task)
    spec = ROW_BY_KEY[row]
    run_dir = Path(data.root) / "runs" / budget["mode"] / row / f"seed{seed}"
    key = {"task": [data.raw_dir, data.train, data.val, data.test], "budget": budget, "row": row_key(spec)}
    init_from = None
    if spec.init_from:  # the nnU-Net model this row starts from; retraining it invalidates the run
        import accuracy_nnunet

        init_from = accuracy_nnunet.result_folder(task, budget["mode"], spec.init_from, seed)
        weights = init_from / "fold_0" / "checkpoint_final.pth"
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights} does not exist: run the row '{spec.init_from}' with seed {seed} first "
                f"(bench_accuracy.py --standard --rows {spec.init_from} --seeds {seed})"
            )
        key["init_from"] = [str(init_from), ad._content_fingerprint(weights)]
    cached = _cached_result(run_dir, key)
    if cached is not None:
        return {**cached, "cached": True}
    resume = (run_dir / LATEST).is_file() and _read_json(run_dir / "run_key.json") == key
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        bench_harness.write_json_atomic(run_dir / "run_key.json", key)
        if data.val:  # the trainer reads (or would create) <run>/splits.json; ours holds the task's split
            (run_dir / "splits.json").write_text(json.dumps([{"train": sorted(data.train), "val": sorted(data.val)}]))
    fields = dict(
        preset=budget["preset"],
        epochs=budget["epochs"],
        iterations_per_epoch=budget["iterations_per_epoch"],
        val_iterations=budget["val_iterations"],
        val_every=1,  # nnU-Net validates every epoch
        validation=budget["validation"],
        weight_decay=budget["weight_decay"],
        batch_size=budget["batch"],
        fold=0 if data.val else -1,
        num_folds=1,
        seed=seed,
        num_workers=budget["num_workers"],
        device=budget["device"],
        mirror_axes=(0, 1, 2) if mirror_for(data.task, budget) else (),
    )
    fields.update(recipe_for(budget, spec))  # the budget's recipe with the row's changes
    if init_from is not None:
        fields["init_from"] = str(init_from)
    config = TrainingConfig(**fields)
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(
        data.raw_dir,
        run_dir,
        config,
        preprocessed_dir=preprocessed_dir,
        model_overrides=spec.model,
        loss_config=LossConfig(**{"semantic_weight": budget["semantic_weight"], **spec.loss}),
        progress="none",
        resume=resume,
    )
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    checkpoint = run_dir / (LATEST if budget["checkpoint"] == "final" else "checkpoint_best.pt")
    predictor = Predictor.from_checkpoint(checkpoint, device=budget["device"], overlap=budget["overlap"])
    t1 = time.perf_counter()
    preds = {c: sitk.GetArrayFromImage(predictor.predict(data.test_images(c)).labels) for c in data.test}
    predict_s = time.perf_counter() - t1
    ref_images = {c: sitk.ReadImage(data.test_label(c)) for c in data.test}
    refs = {c: sitk.GetArrayFromImage(img) for c, img in ref_images.items()}
    spacings = {c: tuple(reversed(img.GetSpacing())) for c, img in ref_images.items()}
    scores = ad.score_predictions(preds, refs, data.labels, spacings)
    if budget["checkpoint"] == "final":
        which = "checkpoint_latest.pt (final)"
    else:
        which = "checkpoint_best.pt" + (" (best validation EMA)" if data.val else " (= last; no validation)")
    out = {
        **scores,
        "iterations": result.iterations_done,
        # a resumed run's wall time is every piece's, from its train.log; its CPU time is only this piece's
        "train_s": round(logged_train_seconds(run_dir / "train.log") if resume else train_s, 2),
        "train_cpu_s": None if resume else round(train_cpu_s, 2),
        "resumed": resume,
        "predict_s": round(predict_s, 2),
        "checkpoint": which,
        "parameter_digest": result.parameter_digest[:16],
        "parameters": int(sum(p.numel() for p in predictor.model.parameters())),
        "threads": torch.get_num_threads(),
        "final_train_loss": float(np.round(result.history[-1]["train_loss"], 4)) if result.history else None,
        "init": _init_event(run_dir / "train.log"),
        "curve": [
            {"iteration": h["iteration"], "val_dice": h["val_dice"]}
            for h in result.history
            if h.get("val_dice") and "iteration" in h
        ],
    }
    bench_harness.write_json_atomic(run_dir / "result.json", {"key": key, "result": out})
    return out


def logged_train_seconds(log: Path) -> float:
    """Training wall time over every piece of an interrupted and resumed run, from its ``train.log``:
    each ``start`` event begins a piece whose clock restarts, so the pieces' last ``elapsed_seconds``
    add up (the iterations an interruption threw away are not counted)."""
    total, piece = 0.0, 0.0
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "start":
            total, piece = total + piece, 0.0
        elif "elapsed_seconds" in event:
            piece = float(event["elapsed_seconds"])
    return total + piece


def _init_event(log: Path) -> dict | None:
    """The run's ``init`` event (what ``--init-from`` loaded), from its train.log; None when it started from scratch."""
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "init":
            return event
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _cached_result(run_dir: Path, key: dict) -> dict | None:
    """The finished run's result when it was made under ``key`` (JSON round trip compared)."""
    stored = _read_json(run_dir / "result.json")
    if stored and stored.get("key") == json.loads(json.dumps(key)):
        return stored["result"]
    return None


def child_nnunet(task: dict, row: str, mode: str, seed: int, budget: dict, threads: int) -> dict:
    """Train and score one nnU-Net seed; kept in ``<runs>/<mode>/<row>/seed<k>/result.json`` like MaskMed's
    (an interrupted nnU-Net run starts again: its trainer keeps no per-epoch checkpoint here)."""
    import accuracy_nnunet

    accuracy_nnunet.cleanup_env_check()
    run_dir = Path(task["root"]) / "runs" / mode / row / f"seed{seed}"
    key = {"task": [task["raw_dir"], task["train"], task["val"], task["test"]], "budget": budget, "row": row}
    cached = _cached_result(run_dir, key)
    if cached is not None:
        return {**cached, "cached": True}
    out = accuracy_nnunet.train_and_predict(task, mode, seed, budget, budget["device"], threads)
    bench_harness.write_json_atomic(run_dir / "result.json", {"key": key, "result": out})
    return out


HANDLERS = {
    "prepare_maskmed": child_prepare_maskmed,
    "prepare_nnunet": child_prepare_nnunet,
    "maskmed": child_maskmed,
    "nnunet": child_nnunet,
}


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_harness.add_common_args(p, default_timeout=1800)
    p.add_argument(
        "--standard",
        action="store_true",
        help="the benchmark that counts on 2 CPU cores: MSD hippocampus, ~2 h, resumable (see accuracy_rows)",
    )
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=None, help="tasks (default by mode)")
    p.add_argument("--rows", nargs="+", choices=ROW_KEYS, default=None, help="rows (default by mode)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="total training iterations per run (epochs x iterations per epoch; default by mode)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs in parallel (default: 2 on a CPU in quick and standard mode, else 1); torch threads are split",
    )
    p.add_argument("--data", type=Path, default=bench_harness.SHARED_DATA, help="the shared data folder")
    p.add_argument(
        "--section",
        default=None,
        help="BENCHMARKS.md section name (default accuracy-<mode>; e.g. accuracy-recipes for a recipe sweep)",
    )
    return p.parse_args(argv)


def _mode(args: argparse.Namespace) -> str:
    if args.quick and args.standard:
        raise SystemExit("--quick and --standard exclude each other")
    return "quick" if args.quick else "standard" if args.standard else "full"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import accuracy_datasets as ad
    import accuracy_nnunet as an

    device = bench_harness.resolve_device(args.device)
    mode = _mode(args)
    budget = make_budget(mode, device, args.iterations)
    rows = sorted(set(args.rows), key=ROW_KEYS.index) if args.rows else default_rows(mode)
    tasks = args.tasks or list(MODE_TASKS[mode])
    train_rows = trained_rows(rows)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = args.jobs or (2 if mode != "full" and device == "cpu" and cores >= 2 else 1)
    threads = max(1, cores // jobs) if device == "cpu" else max(1, min(4, cores))
    child_env = {"OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    info = bench_harness.machine_info(device)
    payload: dict[str, Any] = {
        "name": NAME,
        "mode": mode,
        "machine": info,
        "budget": budget,
        "rows": rows,
        "row_specs": {r: asdict(ROW_BY_KEY[r]) for r in rows},
        "seeds": args.seeds,
        "jobs": jobs,
        "threads": threads,
        "tasks": {},
    }

    # 1. datasets and the once-per-task planning/preprocessing (MaskMed, then nnU-Net with the same topology)
    jobs_list: list[tuple[str, str, tuple[int, ...]]] = []
    prepared: dict[str, dict] = {}
    for task in tasks:
        why = ad.task_available(task, args.data)
        if why:
            print(f"[accuracy] skipping task {task}: {why}", flush=True)
            payload["tasks"][task] = {"skipped": why}
            continue
        t0 = time.perf_counter()
        try:
            data = ad.build_task(task, args.data, mode == "quick")
        except Exception as exc:  # a broken source file must not take the other task down
            why = f"building the dataset failed: {type(exc).__name__}: {exc}"
            print(f"[accuracy] skipping task {task}: {why}", flush=True)
            payload["tasks"][task] = {"skipped": why}
            continue
        build_s = time.perf_counter() - t0
        print(f"[accuracy] {task}: dataset {data.raw_dir} ({build_s:.1f} s)", flush=True)
        entry: dict[str, Any] = {
            "data": data.to_dict(),
            "classes": data.class_names,
            "build_s": round(build_s, 2),
            "runs": {},
        }
        payload["tasks"][task] = entry
        plan = bench_harness.run_child(
            SCRIPT,
            "prepare_maskmed",
            {"task": data.to_dict(), "budget": budget, "threads": max(1, cores)},
            args.timeout,
            env=child_env,
        )
        if "error" in plan:
            entry["skipped"] = f"MaskMed planning/preprocessing failed: {plan['error']}"
            print(f"[accuracy] {task}: {entry['skipped']}", flush=True)
            continue
        entry["plan"] = plan
        print(f"[accuracy] {task}: MaskMed plan+preprocess {plan['wall_s']:.1f} s", flush=True)
        if any(ROW_BY_KEY[r].kind == "nnunet" for r in train_rows):
            # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects the 0 used for training
            env = {**child_env, **an.nnunet_env(data.root, mode, max(1, cores)), "nnUNet_n_proc_DA": "1"}
            nn = bench_harness.run_child(
                SCRIPT,
                "prepare_nnunet",
                {
                    "task": data.to_dict(),
                    "mode": mode,
                    "topology": plan["topology"],
                    "batch_size": plan["batch_size"],
                    "threads": max(1, cores),
                },
                args.timeout,
                env=env,
            )
            entry["nnunet_prepare"] = nn
            print(
                f"[accuracy] {task}: nnU-Net plan+preprocess {nn.get('wall_s', float('nan')):.1f} s"
                + (f" ERROR {nn['error']}" if "error" in nn else ""),
                flush=True,
            )
        prepared[task] = {"data": data, "plan": plan}
        for row in train_rows:
            entry["runs"][row] = []
            if ROW_BY_KEY[row].kind == "nnunet":  # nnU-Net's trainer owns process-wide state: one child per seed
                jobs_list.extend((task, row, (seed,)) for seed in args.seeds)
            elif mode == "standard":  # minutes per run: one child per seed balances the parallel jobs
                jobs_list.extend((task, row, (seed,)) for seed in args.seeds)
            else:
                jobs_list.append((task, row, tuple(args.seeds)))

    # 2. every MaskMed (task, row) and every nnU-Net (task, row, seed) in its own child, `jobs` at a time
    def run_one(job: tuple[str, str, tuple[int, ...]]) -> tuple[tuple[str, str, tuple[int, ...]], list[dict]]:
        task, row, seeds = job
        data, plan = prepared[task]["data"], prepared[task]["plan"]
        spec = ROW_BY_KEY[row]
        if spec.kind == "nnunet":
            (seed,) = seeds
            prep = payload["tasks"][task].get("nnunet_prepare", {})
            if "error" in prep:
                return job, [{"error": "nnU-Net preprocessing failed: " + prep["error"]}]
            b = nnunet_budget(budget, spec, mirror_for(task, budget))
            # one results folder per (variant, seed) so parallel nnU-Net runs never share an output folder
            env = {
                **child_env,
                **an.nnunet_env(data.root, f"{mode}-{row}-seed{seed}", threads, budget["num_workers"]),
            }
            # the plans identifier is per mode, not per results folder
            kwargs = {"task": data.to_dict(), "row": row, "mode": mode, "seed": seed, "budget": b, "threads": threads}
            return job, [bench_harness.run_child(SCRIPT, "nnunet", kwargs, args.timeout, env=env)]
        kwargs = {
            "task": data.to_dict(),
            "row": row,
            "seeds": list(seeds),
            "budget": budget,
            "preprocessed_dir": plan["preprocessed_dir"],
            "threads": threads,
        }
        child = bench_harness.run_child(SCRIPT, "maskmed", kwargs, args.timeout * len(seeds), env=child_env)
        return job, child.get("seeds") or [{"error": child.get("error", "no result")}] * len(seeds)

    # nnU-Net runs are the longest: start them first so the pool does not end on one long run alone
    jobs_list.sort(key=lambda job: ROW_BY_KEY[job[1]].kind != "nnunet")
    done, total = 0, sum(len(job[2]) for job in jobs_list)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for (task, row, seeds), results in pool.map(run_one, jobs_list):
            for seed, res in zip(seeds, results, strict=True):
                done += 1
                res = {"row": row, "seed": seed, **res}
                payload["tasks"][task]["runs"][row].append(res)
                what = (
                    f"error {res['error'][:200]}"
                    if "error" in res
                    else f"mean Dice {res['mean_dice'] if res['mean_dice'] is not None else float('nan'):.3f} "
                    f"train {res['train_s']:.1f} s wall {res['wall_s']:.1f} s"
                    + (" (cached)" if res.get("cached") else "")
                )
                print(f"[accuracy] {done}/{total} {task} {row} seed {seed}: {what}", flush=True)

    # 3. summaries, JSON, markdown (+ learning curves in standard mode)
    patches = set()
    for entry in payload["tasks"].values():
        if "runs" not in entry or "plan" not in entry:
            continue
        patches.add(str(entry["plan"]["topology"]["patch_size"]))
        entry["summary"] = {
            row: accuracy_report.summarise(runs, entry["classes"]) for row, runs in entry["runs"].items()
        }
    payload["tasks_patch"] = " / ".join(sorted(patches)) or "–"
    payload["total_s"] = round(time.perf_counter() - started, 1)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of every child: unlike wall time, barely affected by other processes sharing the CPU
    payload["children_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    section = args.section or f"{NAME}-{mode}"
    if mode == "standard":
        payload["curves_png"] = accuracy_report.plot_curves(
            payload, bench_harness.RESULTS_DIR / f"{section}-curves.png"
        )
    path = bench_harness.write_result(NAME, section.removeprefix(f"{NAME}-"), payload)
    print(f"[accuracy] wrote {path} in {payload['total_s'] / 60:.1f} min", flush=True)
    md = accuracy_report.markdown(payload, info, started, rows)
    if not args.no_markdown:
        bench_harness.update_markdown(section, md)
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    if not bench_harness.child_main(HANDLERS):
        raise SystemExit(main())
