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
import math
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_harness  # noqa: E402

SCRIPT = Path(__file__).resolve()
NAME = "accuracy"
TASKS = ("brats", "totalseg")


# ------------------------------------------------------------------------------------------ rows
# (key, label, kind, model_overrides or alias target). Order = the issue's (and the paper's tables').
ROWS: list[tuple[str, str, str, Any]] = [
    ("pointwise", "point-wise head (nnU-Net-style)", "maskmed", {"head": "pointwise", "masked_attention": False}),
    ("mlp_cls", "MLP class embedding", "maskmed", {"head": "mlp_cls", "masked_attention": False}),
    ("attn_cls", "attention class embedding", "maskmed", {"head": "attn_cls", "masked_attention": False}),
    (
        "attn_cls_mask",
        "attention class + mask embedding",
        "maskmed",
        {"head": "attn_cls_mask", "masked_attention": False},
    ),
    ("decoupled", "decoupled (full MaskMed: shared queries, masked attention, FSAD)", "maskmed", {}),
    (
        "per_stage",
        "per-stage queries (decoupled, no masked attention)",
        "maskmed",
        {"queries": "per_stage", "masked_attention": False},
    ),
    ("shared", "shared queries, no masked attention", "maskmed", {"masked_attention": False}),
    ("shared_masked", "shared queries + masked attention (= decoupled)", "alias", "decoupled"),
    ("bridge_none", "bridge: none", "maskmed", {"bridge": "none"}),
    ("bridge_standard", "bridge: standard (dense) attention", "maskmed", {"bridge": "standard"}),
    ("bridge_deformable", "bridge: deformable (coarse stages only)", "maskmed", {"bridge": "deformable"}),
    ("bridge_fsad", "bridge: FSAD (= decoupled)", "alias", "decoupled"),
    ("nnunet", "nnU-Net v2 (nnunetv2), same optimiser/LR as the MaskMed rows", "nnunet", "same"),
    ("nnunet_own", "nnU-Net v2 (nnunetv2), its own SGD 1e-2 poly recipe", "nnunet", "own"),
]
ROW_KEYS = [r[0] for r in ROWS]
ROW_BY_KEY = {r[0]: r for r in ROWS}
QUICK_DEFAULT_ROWS = [k for k in ROW_KEYS if k != "nnunet_own"]
"""Quick mode leaves out nnU-Net's own SGD recipe: it costs as much as two MaskMed rows and, at a few
iterations, only shows that SGD has not started to learn (run it with ``--rows ... nnunet_own``)."""
PAPER_TABLE3 = "the paper's Table 3 reports mean Dice 0.878 (point-wise head) -> 0.903 (decoupled)"


# ---------------------------------------------------------------------------------------- budget
def make_budget(quick: bool, device: str, iterations: int | None) -> dict[str, Any]:
    """The one budget every row of a task gets (nnU-Net rows included).

    Quick (CPU): the tiny preset, a 32^3 patch (the tiny topology: 4 stages, strides 1,2,2,2), batch 2,
    AdamW 3e-3 with one LR for CNN and Transformer (the paper's SGD 1e-3 learns nothing in a handful of
    iterations; the bundled demo model was trained the same way), 2 epochs x 3 iterations, one
    validation batch per epoch, no sliding-window overlap. Why so few iterations: quick mode trains 66
    runs (10 MaskMed rows + nnU-Net, 2 tasks, 3 seeds) in 26 children on 2 cores, and a run has
    seconds of fixed cost on one core before it learns anything (a child's imports of torch and
    ``torch._dynamo`` ~6 s, trainer set-up and test-case prediction a few s; nnU-Net children ~15 s),
    against ~0.45 s per training iteration. The result exercises every code path; it
    cannot rank the rows.

    Full (GPU): the paper preset on the planner's topology and patch, the paper's SGD 1e-3 with the 0.1
    Transformer ratio, 100 x 100 iterations (1/25 of the paper's 1000 x 250), 10 validation batches per
    epoch, 50 % overlap, and as many data workers for MaskMed as augmentation processes for nnU-Net
    (half the cores, at most 8).
    """
    if quick:
        b = dict(
            mode="quick",
            preset="tiny",
            epochs=2,
            iterations_per_epoch=3,
            val_iterations=1,
            patch=[32, 32, 32],
            batch=2,
            max_stages=4,
            optimizer="adamw",
            lr=3e-3,
            transformer_lr_ratio=1.0,
            weight_decay=3e-5,
            overlap=0.0,
            num_workers=0,
        )
    else:
        b = dict(
            mode="full",
            preset="paper",
            epochs=100,
            iterations_per_epoch=100,
            val_iterations=10,
            patch=None,
            batch=2,
            max_stages=6,
            optimizer="sgd",
            lr=1e-3,
            transformer_lr_ratio=0.1,
            weight_decay=3e-5,
            overlap=0.5,
            num_workers=min(8, max(1, (os.cpu_count() or 2) // 2)) if device.startswith("cuda") else 0,
        )
    if iterations is not None:
        if iterations < 1:
            raise SystemExit(f"--iterations must be >= 1, got {iterations}")
        b["epochs"] = min(b["epochs"], iterations)
        b["iterations_per_epoch"] = max(1, iterations // b["epochs"])
    b["iterations"] = b["epochs"] * b["iterations_per_epoch"]
    b["device"] = device
    return b


def nnunet_budget(budget: dict, variant: str, mirror: bool) -> dict:
    """nnU-Net's trainer settings: the same budget; ``own`` swaps in nnU-Net's SGD 1e-2 recipe."""
    b = dict(budget, mirror=mirror)
    if variant == "own":
        b.update(optimizer="sgd", lr=1e-2)
    return b


def mirror_for(task: str) -> bool:
    """No mirroring for the CT organs (left/right anatomy: spleen vs liver, as TotalSegmentator trains)."""
    return task != "totalseg"


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
    """Train one MaskMed row with one seed, predict the test cases, score them."""
    import accuracy_datasets as ad
    import numpy as np
    import SimpleITK as sitk
    import torch

    from MaskMedCore.config import TrainingConfig
    from MaskMedCore.engine.trainer import train
    from MaskMedCore.inference.predictor import Predictor

    data = ad.TaskData(**task)
    run_dir = Path(data.root) / "runs" / budget["mode"] / row / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if data.val:  # the trainer reads (or would create) <run>/splits.json; ours holds the DeepMedic split
        (run_dir / "splits.json").write_text(json.dumps([{"train": sorted(data.train), "val": sorted(data.val)}]))
    config = TrainingConfig(
        preset=budget["preset"],
        epochs=budget["epochs"],
        iterations_per_epoch=budget["iterations_per_epoch"],
        val_iterations=budget["val_iterations"],
        val_every=1,  # nnU-Net validates every epoch
        initial_lr=budget["lr"],
        transformer_lr_ratio=budget["transformer_lr_ratio"],
        weight_decay=budget["weight_decay"],
        batch_size=budget["batch"],
        fold=0 if data.val else -1,
        num_folds=1,
        seed=seed,
        num_workers=budget["num_workers"],
        device=budget["device"],
        optimizer=budget["optimizer"],
        mirror_axes=(0, 1, 2) if mirror_for(data.task) else (),
    )
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(
        data.raw_dir,
        run_dir,
        config,
        preprocessed_dir=preprocessed_dir,
        model_overrides=ROW_BY_KEY[row][3],
        progress="none",
    )
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    predictor = Predictor.from_checkpoint(run_dir, device=budget["device"], overlap=budget["overlap"])
    t1 = time.perf_counter()
    preds = {c: sitk.GetArrayFromImage(predictor.predict(data.test_images(c)).labels) for c in data.test}
    predict_s = time.perf_counter() - t1
    refs = {c: sitk.GetArrayFromImage(sitk.ReadImage(data.test_label(c))) for c in data.test}
    scores = ad.score_predictions(preds, refs, data.labels)
    return {
        **scores,
        "iterations": result.iterations_done,
        "train_s": round(train_s, 2),
        "train_cpu_s": round(train_cpu_s, 2),
        "predict_s": round(predict_s, 2),
        "checkpoint": "checkpoint_best.pt" + (" (best validation EMA)" if data.val else " (= last; no validation)"),
        "parameter_digest": result.parameter_digest[:16],
        "parameters": int(sum(p.numel() for p in predictor.model.parameters())),
        "threads": torch.get_num_threads(),
        "final_train_loss": float(np.round(result.history[-1]["train_loss"], 4)) if result.history else None,
    }


def child_nnunet(task: dict, mode: str, seed: int, budget: dict, threads: int) -> dict:
    import accuracy_nnunet

    accuracy_nnunet.cleanup_env_check()
    return accuracy_nnunet.train_and_predict(task, mode, seed, budget, budget["device"], threads)


HANDLERS = {
    "prepare_maskmed": child_prepare_maskmed,
    "prepare_nnunet": child_prepare_nnunet,
    "maskmed": child_maskmed,
    "nnunet": child_nnunet,
}


# ---------------------------------------------------------------------------------------- report
def _fmt(m: float, sd: float, n: int) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}"


def summarise(runs: list[dict], classes: list[str]) -> dict:
    """Mean ± sd over seeds of each class's Dice, the mean Dice and the train time (errors left out)."""
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"n_ok": len(ok), "n_error": len(runs) - len(ok)}
    for name in classes:
        vals = [r["dice"][name] for r in ok if r["dice"].get(name) is not None]
        out[name] = [*bench_harness.mean_sd(vals), len(vals)]
    vals = [r["mean_dice"] for r in ok if r["mean_dice"] is not None]
    out["mean_dice"] = [*bench_harness.mean_sd(vals), len(vals)]
    out["train_s"] = [*bench_harness.mean_sd([r["train_s"] for r in ok]), len(ok)]
    out["train_cpu_s"] = [*bench_harness.mean_sd([r["train_cpu_s"] for r in ok]), len(ok)]
    digests = {r.get("parameter_digest") or json.dumps(r["dice"], sort_keys=True) for r in ok}
    out["seeds_differ"] = len(digests) == len(ok) if len(ok) > 1 else None
    return out


def task_markdown(task: str, info: dict, rows: list[str]) -> str:
    classes = info["classes"]
    header = ["row", *classes, "mean Dice", "train s / run (CPU s)"]
    lines = []
    for key in rows:
        _, label, kind, target = ROW_BY_KEY[key]
        src = target if kind == "alias" else key
        s = info["summary"].get(src)
        if s is None:
            continue
        if s["n_ok"] == 0:
            err = next((r["error"] for r in info["runs"][src] if "error" in r), "error")
            lines.append([label, *(["error"] * len(classes)), f"error: {err[:120]}", "–"])
            continue
        cells = [_fmt(*s[c]) for c in classes]
        note = f" ({s['n_error']} of {s['n_ok'] + s['n_error']} runs failed)" if s["n_error"] else ""
        secs = f"{s['train_s'][0]:.1f} ({s['train_cpu_s'][0]:.1f})"
        lines.append([label + note, *cells, _fmt(*s["mean_dice"]), secs])
    return bench_harness.table(header, lines)


def markdown(payload: dict, info: dict, started: float, rows: list[str]) -> str:
    b = payload["budget"]
    quick = b["mode"] == "quick"
    parts = [f"## Accuracy ablations ({b['mode']})\n", bench_harness.stamp(info, started), ""]
    if quick:
        parts.append(
            "**Quick mode: a CPU smoke budget, far too small for conclusions.** Each run trains "
            f"{b['iterations']} iterations; the paper trains 250,000. Differences between rows below are "
            "noise plus initialisation luck, not evidence for or against any component.\n"
        )
    parts.append(
        f"Budget (identical for every row, nnU-Net included): {b['epochs']} epochs x {b['iterations_per_epoch']} "
        f"iterations = {b['iterations']} iterations, batch {b['batch']}, patch "
        f"{payload['tasks_patch']}, preset `{b['preset']}` (nnU-Net: the same UNet topology), optimiser "
        f"{'AdamW' if b['optimizer'] == 'adamw' else 'SGD (Nesterov 0.99)'} LR {b['lr']:g} (Transformer ratio "
        f"{b['transformer_lr_ratio']:g}), weight decay {b['weight_decay']:g}, poly decay per epoch, gradient clip 12, "
        f"{b['val_iterations']} validation batch(es) per epoch, sliding-window overlap {b['overlap']:g}, "
        f"seeds {payload['seeds']}, device {b['device']}"
        + (
            f", {payload['jobs']} runs in parallel with {payload['threads']} torch thread(s) each"
            if payload["jobs"] > 1
            else ""
        )
        + ".\n"
    )
    if quick:
        parts.append(
            "The paper's SGD at LR 1e-3 (Transformer ratio 0.1) learns nothing in a handful of iterations, so quick "
            "mode uses AdamW 3e-3 with one LR for both groups (as the bundled demo model was trained); the row "
            "`nnU-Net v2 ... its own SGD 1e-2` keeps nnU-Net's own recipe. Full mode uses the paper's recipe.\n"
        )
    parts.append(
        "Dice per foreground class on the test cases (mean ± sd over seeds of each run's mean over test cases); a "
        "class absent from both prediction and reference of a case is skipped, not scored 1. Mean Dice = mean over "
        "classes. Checkpoint: best validation-EMA pseudo-Dice where the task has a validation split (BraTS), the "
        "last one otherwise (TotalSeg), for MaskMed and nnU-Net alike. Rows marked (= decoupled) repeat the "
        "decoupled row (it already is shared queries + masked attention + FSAD) and are not trained twice. "
        "Train time: wall seconds from building the trainer to the last checkpoint (model, data loading, iterations, "
        "validation batches, checkpoints; MaskMed: `train()`, nnU-Net: trainer construction + `run_training()`; "
        "imports excluded), "
        "with its CPU seconds in brackets (less sensitive to other processes on the machine).\n"
    )
    if "nnunet_own" not in rows:
        parts.append(
            "Not run here: nnU-Net with its own SGD 1e-2 recipe (`--rows ... nnunet_own`; in full mode by default).\n"
        )
    parts.append(
        "nnU-Net rows: plans from nnU-Net's `ExperimentPlanner`, with the 3d_fullres spacing, patch, batch and UNet "
        "topology set to the MaskMed plan's; nnU-Net's own preprocessing, sampling, augmentation, loss and "
        "sliding-window predictor (Gaussian, no mirroring at test time, one tile per forward pass as nnU-Net does); "
        "fingerprint with 10^6 foreground samples like MaskMed's (nnU-Net: 10^8). Without a validation case "
        "(TotalSeg) nnU-Net trains with fold `all`, i.e. its per-epoch pseudo-Dice is on the training case; only "
        "its final checkpoint is used.\n"
    )
    for task, t in payload["tasks"].items():
        if "skipped" in t:
            parts.append(f"### {task}\n\nskipped: {t['skipped']}\n")
            continue
        d = t["data"]
        parts.append(f"### {task}: {d['dataset_name']}\n")
        parts.append(
            f"Train {', '.join(d['train'])}; validation {', '.join(d['val']) or 'none'}; test {', '.join(d['test'])}. "
            f"Spacing: {d['spacing_note']}; plan target spacing {t['plan']['topology']['target_spacing']} mm, "
            f"patch {t['plan']['topology']['patch_size']}, stages {len(t['plan']['topology']['strides'])}, "
            f"features {t['plan']['topology']['features_per_stage']}. Labels: {d['label_note']}.\n"
        )
        parts.append(task_markdown(task, {**t, "classes": [c for c in t["classes"]]}, rows))
        checked = [k for k, s in t["summary"].items() if s.get("seeds_differ") is not None]
        differ = [k for k in checked if t["summary"][k]["seeds_differ"]]
        parts.append(
            f"\nSeed check: different seeds gave different trained parameters in {len(differ)} of "
            f"{len(checked)} rows.\n"
        )
    parts.append(
        f"\nWall time of the whole benchmark {payload['total_s'] / 60:.1f} min (children's CPU time "
        f"{payload['children_cpu_s'] / 60:.1f} min); per-task preparation (dataset build, MaskMed and nnU-Net "
        "planning/preprocessing) is cached under ~/.cache/maskmed-bench and reused by later runs.\n"
    )
    parts.append(
        f"\nContext only (different data, budget and model size): {PAPER_TABLE3}. The BraTS task has 2 training "
        "cases (manual labels); the TotalSeg labels are TotalSegmentator pseudo-labels (model outputs, not manual "
        "ground truth) with a single training case.\n"
    )
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_harness.add_common_args(p, default_timeout=1800)
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument(
        "--rows", nargs="+", choices=ROW_KEYS, default=None, help="rows (default: all; --quick leaves out nnunet_own)"
    )
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
        help="runs in parallel (default: 2 on a CPU in quick mode, else 1); torch threads are split",
    )
    p.add_argument("--data", type=Path, default=bench_harness.SHARED_DATA, help="the shared data folder")
    return p.parse_args(argv)


def _rows_to_train(rows: list[str]) -> list[str]:
    out: list[str] = []
    for key in rows:
        kind, target = ROW_BY_KEY[key][2], ROW_BY_KEY[key][3]
        real = target if kind == "alias" else key
        if real not in out:
            out.append(real)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import accuracy_datasets as ad
    import accuracy_nnunet as an

    device = bench_harness.resolve_device(args.device)
    mode = "quick" if args.quick else "full"
    budget = make_budget(args.quick, device, args.iterations)
    rows = sorted(set(args.rows), key=ROW_KEYS.index) if args.rows else (QUICK_DEFAULT_ROWS if args.quick else ROW_KEYS)
    train_rows = _rows_to_train(rows)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = args.jobs or (2 if args.quick and device == "cpu" and cores >= 2 else 1)
    threads = max(1, cores // jobs) if device == "cpu" else max(1, min(4, cores))
    child_env = {"OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    info = bench_harness.machine_info(device)
    payload: dict[str, Any] = {
        "name": NAME,
        "mode": mode,
        "machine": info,
        "budget": budget,
        "rows": rows,
        "seeds": args.seeds,
        "jobs": jobs,
        "threads": threads,
        "tasks": {},
    }

    # 1. datasets and the once-per-task planning/preprocessing (MaskMed, then nnU-Net with the same topology)
    jobs_list: list[tuple[str, str, int]] = []
    prepared: dict[str, dict] = {}
    for task in args.tasks:
        why = ad.task_available(task, args.data)
        if why:
            print(f"[accuracy] skipping task {task}: {why}", flush=True)
            payload["tasks"][task] = {"skipped": why}
            continue
        t0 = time.perf_counter()
        try:
            data = ad.build_task(task, args.data, args.quick)
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
        if any(ROW_BY_KEY[r][2] == "nnunet" for r in train_rows):
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
            if ROW_BY_KEY[row][2] == "nnunet":  # nnU-Net's trainer owns process-wide state: one child per seed
                jobs_list.extend((task, row, (seed,)) for seed in args.seeds)
            else:
                jobs_list.append((task, row, tuple(args.seeds)))

    # 2. every MaskMed (task, row) and every nnU-Net (task, row, seed) in its own child, `jobs` at a time
    def run_one(job: tuple[str, str, tuple[int, ...]]) -> tuple[tuple[str, str, tuple[int, ...]], list[dict]]:
        task, row, seeds = job
        data, plan = prepared[task]["data"], prepared[task]["plan"]
        kind, target = ROW_BY_KEY[row][2], ROW_BY_KEY[row][3]
        if kind == "nnunet":
            (seed,) = seeds
            prep = payload["tasks"][task].get("nnunet_prepare", {})
            if "error" in prep:
                return job, [{"error": "nnU-Net preprocessing failed: " + prep["error"]}]
            b = nnunet_budget(budget, target, mirror_for(task))
            # one results folder per (variant, seed) so parallel nnU-Net runs never share an output folder
            env = {
                **child_env,
                **an.nnunet_env(data.root, f"{mode}-{row}-seed{seed}", threads, budget["num_workers"]),
            }
            # the plans identifier is per mode, not per results folder
            kwargs = {"task": data.to_dict(), "mode": mode, "seed": seed, "budget": b, "threads": threads}
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
    jobs_list.sort(key=lambda job: ROW_BY_KEY[job[1]][2] != "nnunet")
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
                )
                print(f"[accuracy] {done}/{total} {task} {row} seed {seed}: {what}", flush=True)

    # 3. summaries, JSON, markdown
    patches = set()
    for entry in payload["tasks"].values():
        if "runs" not in entry or "plan" not in entry:
            continue
        patches.add(str(entry["plan"]["topology"]["patch_size"]))
        entry["summary"] = {row: summarise(runs, entry["classes"]) for row, runs in entry["runs"].items()}
    payload["tasks_patch"] = " / ".join(sorted(patches)) or "–"
    payload["total_s"] = round(time.perf_counter() - started, 1)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of every child: unlike wall time, barely affected by other processes sharing the CPU
    payload["children_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    path = bench_harness.write_result(NAME, mode, payload)
    print(f"[accuracy] wrote {path} in {payload['total_s'] / 60:.1f} min", flush=True)
    md = markdown(payload, info, started, rows)
    if not args.no_markdown:
        bench_harness.update_markdown(f"{NAME}-{mode}", md)
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    if not bench_harness.child_main(HANDLERS):
        raise SystemExit(main())
