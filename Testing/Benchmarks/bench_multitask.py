"""Benchmark: one multi-task MaskMed vs single-task models (issue 12, MTMed3D's claim checked on ours).

SYNTHETIC DATA: every number comes from MaskMed's CT phantom with drawn lesions (``maskmed phantom
--lesions 3``): organs (liver, spleen, kidneys, aorta) plus 0-3 liver/kidney lesions per case, one lesion
type per case, and case labels derived from what was drawn (``lesion_count``: none/one/several,
``lesion_type``: none/hypodense/hyperdense). Training cases use seeds 0..N-1, test cases seeds from 5000.

Rows (same tiny network, same patch, same iterations, same optimiser; only the outputs and losses differ):

- **multi-task**: organs as semantic classes, lesions as instances (each lesion its own query), box head,
  case head (``lesion_count``, ``lesion_type``): the dataset's declarations + ``--box-head``.
- **segmentation only**: every class semantic, no boxes, no case head (``--set instance_classes=[]
  --set case_tasks=[]``): MaskMed as it was before issue 12.
- **detection only**: the same images with the lesions as the only foreground (organs are background),
  lesions as instances with the box head, no case head.
- **classification only**: the case head alone (class/mask/semantic loss weights 0, case weight 1) on the
  same network; its queries are trained only through the case loss.

Per row: parameters, training-step time (median of timed steps after warm-up, one process, the same batch
stream), inference time per test case (median; sliding window, no TTA), and each task's metric
(``maskmed evaluate``): organ mean Dice and lesion voxel Dice; lesion AP at IoU 0.1/0.25/0.5, FROC
sensitivity at 1 FP/case, lesion-wise Dice and box IoU of head vs mask boxes; case accuracy / ROC AUC.

Resumable: each run folder is resumed when interrupted (a ``done.json`` marks a finished run) and each
prediction folder is reused when complete.

    python Testing/Benchmarks/bench_multitask.py [--work DIR] [--iterations N] [--train-cases N] [--test-cases N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

RESULTS = Path(__file__).resolve().parent / "results" / "multitask.json"
PATCH = (32, 64, 64)
TEST_SEED = 5000
ROWS = ("multi_task", "segmentation_only", "detection_only", "classification_only")
ROW_LABELS = {
    "multi_task": "multi-task (seg + instances + boxes + case)",
    "segmentation_only": "segmentation only",
    "detection_only": "detection only (lesion instances + boxes)",
    "classification_only": "classification only (case head)",
}
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "aorta")


def make_datasets(work: Path, train_cases: int, test_cases: int) -> dict[str, Path]:
    """Train/test lesion phantoms and the lesion-only (detection) copy of each; reused when present."""
    from MaskMedCore.data.phantom import write_phantom_dataset

    out = {}
    for split, n, seed in (("train", train_cases, 0), ("test", test_cases, TEST_SEED)):
        folder = work / f"phantom_lesions_{split}"
        if not (folder / "dataset.json").is_file():
            if folder.exists():
                for p in sorted(folder.rglob("*"), reverse=True):
                    p.unlink() if p.is_file() else p.rmdir()
            write_phantom_dataset(folder, n, seed=seed, max_lesions=3)
        out[split] = folder
        out[f"{split}_lesions_only"] = lesion_only_copy(folder, work / f"phantom_lesions_only_{split}")
    return out


def lesion_only_copy(source: Path, target: Path) -> Path:
    """The dataset with lesions as the only foreground (label 1), images linked, no case labels."""
    if (target / "dataset.json").is_file():
        return target
    meta = json.loads((source / "dataset.json").read_text())
    lesion = meta["labels"]["lesion"]
    (target / "imagesTr").mkdir(parents=True, exist_ok=True)
    (target / "labelsTr").mkdir(exist_ok=True)
    for image in sorted((source / "imagesTr").iterdir()):
        link = target / "imagesTr" / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
    for label in sorted((source / "labelsTr").iterdir()):
        ref = sitk.ReadImage(str(label))
        array = (sitk.GetArrayFromImage(ref) == lesion).astype(np.uint8)
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(ref)
        sitk.WriteImage(out, str(target / "labelsTr" / label.name))
    meta = {
        **{k: v for k, v in meta.items() if k not in ("case_labels", "labels", "instance_classes")},
        "labels": {"background": 0, "lesion": 1},
        "instance_classes": ["lesion"],
        "description": meta.get("description", "") + " (lesions only: organs are background)",
    }
    (target / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


def row_setup(row: str, datasets: dict[str, Path]):
    """(train dataset, test dataset, model overrides, loss config) of a row."""
    from MaskMedCore.config.loss_config import LossConfig

    semantic = LossConfig(semantic_weight=2.0)  # the maskmed recipe's loss
    if row == "multi_task":
        return datasets["train"], datasets["test"], {"box_head": True}, semantic
    if row == "segmentation_only":
        return datasets["train"], datasets["test"], {"instance_classes": [], "case_tasks": []}, semantic
    if row == "detection_only":
        return datasets["train_lesions_only"], datasets["test_lesions_only"], {"box_head": True}, semantic
    cls_only = LossConfig(class_weight=0.0, bce_weight=0.0, dice_weight=0.0, semantic_weight=0.0, case_weight=1.0)
    return datasets["train"], datasets["test"], {"instance_classes": []}, cls_only


def training_config(iterations: int, seed: int = 0):
    from MaskMedCore.config.training_config import TrainingConfig

    per_epoch = 50
    return TrainingConfig(
        preset="tiny",
        fold=-1,
        epochs=max(1, iterations // per_epoch),
        iterations_per_epoch=per_epoch,
        optimizer="adamw",
        initial_lr=3e-3,
        transformer_lr_ratio=1.0,
        mirror_axes=(),  # left/right organ labels
        device="cpu",
        num_workers=0,  # 2 cores: sampling in-process measured faster than a worker competing with the step
        seed=seed,
    )


def train_row(row: str, datasets: dict[str, Path], work: Path, iterations: int) -> Path:
    from MaskMedCore.engine.trainer import train

    run = work / "runs" / row
    if (run / "done.json").is_file():
        return run
    train_dir, _, overrides, loss = row_setup(row, datasets)
    resume = (run / "checkpoint_latest.pt").is_file()
    t0 = time.perf_counter()
    result = train(
        train_dir,
        run,
        training_config(iterations),
        preprocessed_dir=work / "preprocessed" / train_dir.name,
        patch_size=PATCH,
        model_overrides=overrides,
        loss_config=loss,
        progress="bar",
        resume=resume,
        cpu_limit_hours=None,
    )
    if result.stopped_early:
        raise SystemExit(f"{row}: training stopped early ({result.stop_reason}); run again to resume")
    (run / "done.json").write_text(
        json.dumps({"iterations": result.iterations_done, "seconds": training_seconds(run, time.perf_counter() - t0)})
    )
    return run


def training_seconds(run: Path, fallback: float) -> float:
    """Wall seconds of the training iterations from ``train.log`` (its last ``elapsed_seconds``; a resumed
    run's log continues the count), else ``fallback``."""
    elapsed = None
    for line in (run / "train.log").read_text().splitlines():
        try:
            elapsed = json.loads(line).get("elapsed_seconds", elapsed)
        except json.JSONDecodeError:
            continue
    return float(elapsed) if elapsed is not None else fallback


def step_seconds(row: str, datasets: dict[str, Path], work: Path, steps: int = 8, warmup: int = 3) -> float:
    """Median wall time of one training step (batch sampled beforehand, augmentation on)."""
    import torch

    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.loader import batch_tensors
    from MaskMedCore.data.preprocessed_store import list_cases
    from MaskMedCore.engine.checkpoint import load_checkpoint
    from MaskMedCore.engine.multitask_setup import case_targets_for
    from MaskMedCore.engine.train_setup import load_cases
    from MaskMedCore.engine.train_step import make_patch_pipeline, train_step
    from MaskMedCore.losses.build import build_criterion
    from MaskMedCore.models.build import build_model

    train_dir, _, _, loss = row_setup(row, datasets)
    ckpt = load_checkpoint(work / "runs" / row / "checkpoint_latest.pt")
    folder = next((work / "preprocessed" / train_dir.name).glob("**/plan*.json")).parent
    ids = list_cases(folder)
    cases = load_cases(folder, ids)
    targets = case_targets_for(ckpt.model_config, load_dataset(train_dir).multitask, ids, train_dir)
    config = training_config(100)
    sampler, augmenter = make_patch_pipeline(cases, ckpt.plan, config, ckpt.plan.batch_size, targets)
    torch.manual_seed(0)
    model = build_model(ckpt.model_config)
    criterion = build_criterion(ckpt.model_config, loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    rng = np.random.default_rng(0)
    batches = iter([batch_tensors(sampler.training_batch(rng)) for _ in range(steps + warmup)])
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        train_step(
            model,
            criterion,
            optimizer,
            scaler,
            augmenter,
            batches,
            torch.device("cpu"),
            False,
            torch.float32,
            12.0,
            gen,
        )
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def predict_row(row: str, datasets: dict[str, Path], work: Path, retime: bool = False) -> tuple[Path, float]:
    """Predict every test case; returns the folder and the median seconds per case.

    With ``retime`` the cases are predicted again (same outputs) only to re-measure the time."""
    from MaskMedCore.inference.predictor import Predictor

    _, test_dir, _, _ = row_setup(row, datasets)
    out = work / "predictions" / row
    timing = out / "timing.json"
    if timing.is_file() and not retime:
        return out, json.loads(timing.read_text())["median_seconds_per_case"]
    predictor = Predictor.from_checkpoint(work / "runs" / row / "checkpoint_latest.pt", device="cpu")
    seconds = []
    for image in sorted((test_dir / "imagesTr").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        t0 = time.perf_counter()
        prediction = predictor.predict(image)
        seconds.append(time.perf_counter() - t0)
        prediction.write(out, case)
    median = statistics.median(seconds)
    timing.write_text(json.dumps({"median_seconds_per_case": median, "seconds": seconds}))
    return out, median


def evaluate_row(row: str, datasets: dict[str, Path], predictions: Path) -> dict:
    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.metrics.evaluate import evaluate_folders, read_dataset_labels

    _, test_dir, _, _ = row_setup(row, datasets)
    labels = read_dataset_labels(test_dir / "dataset.json")
    spec = load_dataset(datasets["test"]).multitask
    result = evaluate_folders(
        predictions,
        test_dir / "labelsTr",
        labels,
        lesion_classes=["lesion"],
        lesion_dilation=1,  # small CT lesions: BraTS-MET's 1-voxel dilation
        min_lesion_volume_mm3=0.0,
        case_labels=(spec.case_tasks, spec.case_labels) if row in ("multi_task", "classification_only") else None,
    )
    metrics: dict = {}
    if row != "detection_only" and row != "classification_only":
        metrics["organ_dice"] = float(np.mean([result["per_class"][o]["dice"] for o in ORGANS]))
        metrics["lesion_voxel_dice"] = result["per_class"]["lesion"]["dice"]
    if row in ("multi_task", "detection_only"):
        lesion = result["lesions"]["classes"]["lesion"]
        metrics.update(
            {f"ap@{t}": lesion["detection"][t]["ap"] for t in ("0.1", "0.25", "0.5")},
            froc_1fp=lesion["froc"]["1"],
            lesion_wise_dice=lesion["lesion_dice"],
            ref_lesions=lesion["ref_lesions"],
            pred_lesions=lesion["pred_lesions"],
            boxes=lesion.get("boxes"),
        )
    if "case_classification" in result:
        metrics["case"] = result["case_classification"]
    return metrics


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "maskmed-bench" / "multitask")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--train-cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=12)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON to update (default {RESULTS})")
    parser.add_argument(
        "--retime",
        action="store_true",
        help="re-measure the step and inference times of trained rows (run it on a quiet machine: the first "
        "pass shares the CPU with whatever else ran while training)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    datasets = make_datasets(args.work, args.train_cases, args.test_cases)
    results = args.results
    report = json.loads(results.read_text()) if results.is_file() else {"rows": {}}
    report.update(
        synthetic=True,
        iterations=args.iterations,
        train_cases=args.train_cases,
        test_cases=args.test_cases,
        patch=list(PATCH),
        command="python Testing/Benchmarks/bench_multitask.py " + " ".join(argv or sys.argv[1:]),
    )
    for row in args.rows:
        run = train_row(row, datasets, args.work, args.iterations)
        from MaskMedCore.engine.checkpoint import load_checkpoint

        ckpt = load_checkpoint(run / "checkpoint_latest.pt")
        params = sum(v.numel() for v in ckpt.model_state.values() if v.is_floating_point())
        predictions, infer = predict_row(row, datasets, args.work, retime=args.retime)
        report["rows"][row] = {
            "label": ROW_LABELS[row],
            "parameters": int(params),
            "train_step_seconds": step_seconds(row, datasets, args.work),
            "inference_seconds_per_case": infer,
            "train_seconds": json.loads((run / "done.json").read_text())["seconds"],
            "metrics": evaluate_row(row, datasets, predictions),
        }
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(json.dumps({row: report["rows"][row]}, indent=2, default=float), flush=True)
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
