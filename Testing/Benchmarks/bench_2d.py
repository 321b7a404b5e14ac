"""Benchmark: nnU-Net's 2d configuration vs 3d_fullres, and the 2D heads (decoupled, point-wise, QTSeg-style).

REAL DATA: MSD Task04 hippocampus (committed split: the 160 train + validation cases train, the 40 test cases
score) and BraTS 2015 (DeepMedic example cases at 3 mm: 4 train, 2 test; non-commercial, benchmark only).

Rows (same tiny preset, same optimiser recipe, same number of iterations per task; only the configuration
or the head differ):

- ``3d``: the ``3d_fullres`` plan (3D patches; on hippocampus identical to ``3d_cpu``), decoupled head.
- ``2d``: the ``2d`` plan (nnU-Net's 2D patch and batch rule on slices along D), decoupled head.
- ``2d_pointwise``: the same with the point-wise (nnU-Net) head.
- ``2d_qtseg``: the same with the QTSeg-style query-token decoder (``head="qtseg"``).

Per row: parameters, seconds per training iteration (wall time of the run / iterations, data sampling and
augmentation included, one process), prediction seconds for the test set (sliding window, no TTA), and per
class Dice and HD95 on the test cases (``maskmed evaluate``'s ``evaluate_folders``).

Resumable: a run is resumed when interrupted (``done.json`` marks a finished one) and a complete prediction
folder is reused; results go to ``Testing/Benchmarks/results/configurations_2d.json``.

    python Testing/Benchmarks/bench_2d.py [--rows hippocampus/2d ...] [--work DIR] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RESULTS = HERE / "results" / "configurations_2d.json"
ITERATIONS = {"hippocampus": 400, "brats": 800}
"""Per-task budget, identical for every row of the task."""
BATCH_3D = 2
"""CPU budget: the 3D rows train at batch 2 (nnU-Net's minimum) and the 2D rows at as many slices as give the
same voxels per batch (hippocampus: 2 x 40x56x40 = 80 slices of 56x40), so every row of a task sees the same
voxels per iteration. nnU-Net's own batches (hippocampus 6 and 225) measured 6.4 s per 2D iteration on the 2
shared cores, 85 min per 800-iteration row: too slow for this machine."""
ROWS = {
    "hippocampus/3d": ("hippocampus", "3d_fullres", "decoupled"),
    "hippocampus/2d": ("hippocampus", "2d", "decoupled"),
    "hippocampus/2d_pointwise": ("hippocampus", "2d", "pointwise"),
    "hippocampus/2d_qtseg": ("hippocampus", "2d", "qtseg"),
    "brats/3d": ("brats", "3d_fullres", "decoupled"),
    "brats/2d": ("brats", "2d", "decoupled"),
    "hippocampus/2d_800": ("hippocampus", "2d", "decoupled"),
    "hippocampus/2d_pointwise_800": ("hippocampus", "2d", "pointwise"),
    "hippocampus/2d_qtseg_800": ("hippocampus", "2d", "qtseg"),
    "hippocampus/3d_800": ("hippocampus", "3d_fullres", "decoupled"),
}
"""row -> (task, configuration, head)."""
ROW_ITERATIONS = {row: 800 for row in ROWS if row.endswith("_800")}
"""Rows outside their task's budget: the hippocampus rows again at twice the iterations (the 2d decoupled row
was still improving at 400)."""
HEAD_LABELS = {
    "decoupled": "decoupled MaskMed head",
    "pointwise": "point-wise head (nnU-Net)",
    "qtseg": "QTSeg-style token decoder",
}


def task_dir(task: str, data_root: Path) -> Path:
    """The raw nnU-Net-layout dataset (imagesTr/labelsTr train, imagesTs/labelsTs test), built once and cached."""
    from accuracy_datasets import build_brats, build_hippocampus

    data = build_hippocampus(data_root) if task == "hippocampus" else build_brats(data_root, 3.0)
    return Path(data.raw_dir)


def batch_size(raw: Path, work: Path, task: str, configuration: str) -> int:
    """``BATCH_3D`` for 3D rows; for 2D rows the slices holding the same voxels as ``BATCH_3D`` 3D patches."""
    from MaskMedCore.data.planner import PLAN_FILES
    from MaskMedCore.engine.distributed import DistributedContext
    from MaskMedCore.engine.train_setup import prepare_plan

    if configuration != "2d":
        return BATCH_3D
    fullres, _, _ = prepare_plan(raw, work / "preprocessed" / task, DistributedContext(), progress=False)
    flat, _, _ = prepare_plan(
        raw, work / "preprocessed" / task, DistributedContext(), configuration="2d", progress=False
    )
    assert (work / "preprocessed" / task / PLAN_FILES["2d"]).is_file()
    return max(2, round(BATCH_3D * np.prod(fullres.patch_size) / np.prod(flat.patch_size)))


def training_config(task: str, configuration: str, iterations: int, batch: int):
    from MaskMedCore.config.training_config import TrainingConfig

    per_epoch = 50
    return TrainingConfig(
        preset="tiny",
        fold=-1,  # every training case; the test cases score
        epochs=max(1, iterations // per_epoch),
        iterations_per_epoch=per_epoch,
        optimizer="adamw",
        initial_lr=3e-3,
        transformer_lr_ratio=1.0,
        mirror_axes=(),  # hippocampus crops are not symmetric (the shipped model's recipe); same for every row
        device="cpu",
        num_workers=0,
        configuration=configuration,
        batch_size=batch,
        seed=0,
    )


def train_row(row: str, raw: Path, work: Path, iterations: int) -> Path:
    from bench_multitask import training_seconds

    from MaskMedCore.config.loss_config import LossConfig
    from MaskMedCore.engine.trainer import train

    task, configuration, head = ROWS[row]
    iterations = ROW_ITERATIONS.get(row, iterations)
    run = work / "runs" / row
    if (run / "done.json").is_file():
        return run
    resume = (run / "checkpoint_latest.pt").is_file()
    t0 = time.perf_counter()
    result = train(
        raw,
        run,
        training_config(task, configuration, iterations, batch_size(raw, work, task, configuration)),
        preprocessed_dir=work / "preprocessed" / task,
        model_overrides={"head": head},
        loss_config=LossConfig(semantic_weight=2.0),  # the maskmed recipe's loss (decoupled head only)
        progress="bar",
        resume=resume,
        cpu_limit_hours=None,
    )
    if result.stopped_early:
        raise SystemExit(f"{row}: training stopped early ({result.stop_reason}); run again to resume")
    seconds = training_seconds(run, time.perf_counter() - t0)
    batch = batch_size(raw, work, task, configuration)
    (run / "done.json").write_text(
        json.dumps({"iterations": result.iterations_done, "seconds": seconds, "batch": batch})
    )
    return run


def step_seconds(row: str, work: Path, steps: int = 10, warmup: int = 3) -> float:
    """Median wall time of one training step of a finished row's network (fresh weights, its batch and plan,
    augmentation on, batches sampled beforehand), measured in this process."""
    import statistics

    import torch

    from MaskMedCore.config.loss_config import LossConfig
    from MaskMedCore.data.loader import batch_tensors
    from MaskMedCore.data.preprocessed_store import list_cases
    from MaskMedCore.engine.checkpoint import load_checkpoint
    from MaskMedCore.engine.train_setup import load_cases
    from MaskMedCore.engine.train_step import make_patch_pipeline, train_step
    from MaskMedCore.losses.build import build_criterion
    from MaskMedCore.models.build import build_model

    task, configuration, _ = ROWS[row]
    run = work / "runs" / row
    ckpt = load_checkpoint(run / "checkpoint_latest.pt")
    batch = json.loads((run / "done.json").read_text())["batch"]
    folder = work / "preprocessed" / task
    cases = load_cases(folder, list_cases(folder))
    config = training_config(task, configuration, 100, batch)
    sampler, augmenter = make_patch_pipeline(cases, ckpt.plan, config, batch)
    torch.manual_seed(0)
    model = build_model(ckpt.model_config)
    criterion = build_criterion(ckpt.model_config, LossConfig(semantic_weight=2.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    rng = np.random.default_rng(0)
    batches = iter([batch_tensors(sampler.training_batch(rng)) for _ in range(steps + warmup)])
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        train_step(model, criterion, optimizer, scaler, augmenter, batches, torch.device("cpu"), False, None, 12.0, gen)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def predict_row(row: str, raw: Path, work: Path, retime: bool = False) -> tuple[Path, float]:
    """Predict every test case (no TTA); returns the folder and the total seconds (``retime``: predict again,
    only to measure the time on a quiet machine)."""
    from MaskMedCore.inference.predictor import Predictor

    out = work / "predictions" / row
    timing = out / "timing.json"
    if timing.is_file() and not retime:
        return out, json.loads(timing.read_text())["seconds"]
    predictor = Predictor.from_checkpoint(work / "runs" / row / "checkpoint_latest.pt", device="cpu", tta=False)
    t0 = time.perf_counter()
    for image in sorted((raw / "imagesTs").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        channels = sorted((raw / "imagesTs").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"))
        predictor.predict(channels if len(channels) > 1 else image).write(out, case)
    seconds = time.perf_counter() - t0
    timing.write_text(json.dumps({"seconds": seconds}))
    return out, seconds


def row_result(row: str, raw: Path, work: Path, retime: bool = False) -> dict:
    from MaskMedCore.engine.checkpoint import load_checkpoint
    from MaskMedCore.metrics.evaluate import evaluate_folders, read_dataset_labels

    run = work / "runs" / row
    done = json.loads((run / "done.json").read_text())
    ckpt = load_checkpoint(run / "checkpoint_latest.pt")
    params = sum(v.numel() for v in ckpt.model_state.values() if v.is_floating_point())
    predictions, predict_seconds = predict_row(row, raw, work, retime)
    labels = read_dataset_labels(raw / "dataset.json")
    scores = evaluate_folders(predictions, raw / "labelsTs", labels)
    per_class = {name: {"dice": c["dice"], "hd95": c.get("hd95")} for name, c in scores["per_class"].items()}
    plan = ckpt.plan
    return {
        "row": row,
        "configuration": ROWS[row][1],
        "head": ROWS[row][2],
        "patch": list(plan.patch_size),
        "batch": done.get("batch", plan.batch_size),
        "plan_batch": plan.batch_size,
        "stages": len(plan.strides),
        "parameters": int(params),
        "iterations": done["iterations"],
        "train_seconds": done["seconds"],
        "seconds_per_iteration": done["seconds"] / max(1, done["iterations"]),
        "step_seconds": step_seconds(row, work) if retime else None,
        "predict_seconds": predict_seconds,
        "test_cases": len(list((raw / "labelsTs").glob("*.nii.gz"))),
        "per_class": per_class,
        "mean_dice": float(np.mean([c["dice"] for c in per_class.values()])),
    }


def markdown(results: dict) -> str:
    lines = []
    for task in ("hippocampus", "brats"):
        rows = [r for key, r in results.items() if key.startswith(task + "/")]
        if not rows:
            continue
        classes = list(rows[0]["per_class"])
        lines.append(f"\n**{task}** ({rows[0]['iterations']} iterations per row, {rows[0]['test_cases']} test cases)\n")
        head = ["row", "patch x batch", "params", "step s", "run s / iteration", "predict s"]
        head += [f"Dice {c}" for c in classes]
        lines.append("| " + " | ".join(head + ["mean Dice"]) + " |")
        lines.append("|" + "---|" * (len(head) + 1))
        for r in rows:
            label = f"{r['configuration']}, {HEAD_LABELS[r['head']]}"
            if r["iterations"] != rows[0]["iterations"]:
                label += f", {r['iterations']} iterations"
            patch = "x".join(str(p) for p in r["patch"]) + f" x {r['batch']}"
            step = "–" if r.get("step_seconds") is None else f"{r['step_seconds']:.2f}"
            cells = [label, patch, f"{r['parameters']:,}", step, f"{r['seconds_per_iteration']:.2f}"]
            cells += [f"{r['predict_seconds']:.1f}"] + [f"{r['per_class'][c]['dice']:.3f}" for c in classes]
            lines.append("| " + " | ".join(cells + [f"**{r['mean_dice']:.3f}**"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "maskmed-bench" / "configurations_2d")
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--retime",
        action="store_true",
        help="re-measure the finished rows' step time (median of 10 steps) and prediction time, one after another "
        "on a quiet machine (the runs' own times depend on what shared the cores)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for row in args.rows:
        task = ROWS[row][0]
        raw = task_dir(task, args.data)
        train_row(row, raw, args.work, ITERATIONS[task])  # ROW_ITERATIONS overrides
        old_step = results.get(row, {}).get("step_seconds")
        results[row] = row_result(row, raw, args.work, args.retime)
        if not args.retime and old_step is not None:
            results[row]["step_seconds"] = old_step
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{row}: mean Dice {results[row]['mean_dice']:.3f}", flush=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
