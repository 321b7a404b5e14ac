"""Benchmark: MaskMed's documented fast setting vs nnU-Net's default prediction, on the hippocampus test split.

Issue 14: "a documented fast setting that is >= 2x faster than nnU-Net's defaults at a measured Dice cost
<= 0.01 on the hippocampus test split".

- **nnU-Net defaults**: ``nnUNetPredictor`` as ``nnUNetv2_predict`` runs it (tile step 0.5, Gaussian
  weighting, mirroring over the checkpoint's axes), CPU, on the benchmark's standard nnU-Net model of the
  hippocampus task (``bench_accuracy.py --standard``, row ``nnunet``, seed 0, fold 0).
- **MaskMed fast setting** (README, *Fast prediction*): ``maskmed predict`` defaults with ``--step-size 0.8``
  (TotalSegmentator's speed setting): no mirroring, tile step 0.8, constant tiles reused; and the same with
  ``--precision bf16`` (bfloat16 autocast on a CPU with native bfloat16). Run on
  (a) the same nnU-Net model (``maskmed predict -m <nnU-Net folder> --step-size 0.8``), which isolates the
  setting's cost, and (b) the shipped MaskMed hippocampus model (``-m hippocampus --step-size 0.8``).

Every row predicts the 40 test cases from their files in a fresh child process, twice in alternating
order (the faster run is shown); Dice per foreground class against ``labelsTs``, averaged over classes
and cases (``maskmed evaluate``'s mean). Dice cost = nnU-Net defaults' mean Dice minus the row's.

    python Testing/Benchmarks/bench_fast_setting.py [--dataset DIR] [--nnunet-model FOLDER] [--no-markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_harness as bh  # noqa: E402
import bench_nnunet_models  # noqa: E402

SCRIPT = Path(__file__).resolve()
NAME = "fast-setting"
FAST_STEP = 0.8  # TotalSegmentator's tile step for speed
TIME_TARGET = 0.5  # >= 2x faster
DICE_COST_TARGET = 0.01
CACHE = Path.home() / ".cache" / "maskmed-bench"
DATASET_GLOB = "hippocampus-*/nnUNet_raw/Dataset903_Hippocampus"
MODEL_GLOB = "hippocampus-*/nnUNet_results/standard-nnunet-seed0/Dataset903_Hippocampus/*__3d_fullres"

# (key, label, child kind, tile step, mirroring, mirror axes forced on the model or None for its own).
# The benchmark's nnU-Net model was trained without mirroring augmentation, so its checkpoint allows no
# mirror axes and nnU-Net's default (mirroring on) runs one pass per tile; the second row is what the
# default costs for a model trained with nnU-Net's default augmentation (all three axes: 8 passes).
ROWS = (
    ("nnunet_defaults", "nnU-Net defaults (step 0.5, mirroring on: this model allows none)", "nnunet", 0.5, True, None),
    ("nnunet_defaults_mirrored", "nnU-Net defaults, mirroring over all 3 axes", "nnunet", 0.5, True, [0, 1, 2]),
    ("fast_nnunet_model", "MaskMed fast setting, same nnU-Net model", "maskmed", FAST_STEP, False, None),
    ("fast_maskmed_model", "MaskMed fast setting, shipped MaskMed model", "bundled", FAST_STEP, False, None),
    ("fast_bf16_nnunet_model", "MaskMed fast setting + bf16, same nnU-Net model", "maskmed", FAST_STEP, False, None),
    (
        "fast_bf16_maskmed_model",
        "MaskMed fast setting + bf16, shipped MaskMed model",
        "bundled",
        FAST_STEP,
        False,
        None,
    ),
)


def _precision(key: str) -> str:
    """The rows named ``*_bf16_*`` run with ``--precision bf16``, the others with the default."""
    return "bf16" if "_bf16_" in key else "auto"


def child_bundled(images: list[str], step_size: float, out: str, precision: str = "auto", **_: Any) -> dict[str, Any]:
    """The shipped hippocampus model through ``Predictor`` (what ``maskmed predict -m hippocampus`` runs)."""
    import SimpleITK as sitk

    from MaskMedCore.bundled_models import resolve_model
    from MaskMedCore.inference.predictor import Predictor

    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(
        resolve_model("hippocampus"), device="cpu", overlap=1 - step_size, precision=precision
    )
    return bench_nnunet_models.time_cases(
        lambda path: sitk.GetArrayFromImage(predictor.predict(path).labels), images, out, time.perf_counter() - t0
    )


def mean_dice(labels_npz: str, labels_dir: Path, classes: list[int]) -> dict[str, Any]:
    """Mean Dice per class and over classes and cases of the saved predictions against the reference files."""
    import numpy as np
    import SimpleITK as sitk

    from MaskMedCore.metrics.overlap import dice_per_class

    pred = np.load(labels_npz)
    per_class: dict[int, list[float]] = {c: [] for c in classes}
    for name in pred.files:
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_dir / name.replace("_0000", ""))))
        for c, d in dice_per_class(pred[name], ref, classes).items():
            per_class[c].append(d)
    means = {c: float(np.mean(v)) for c, v in per_class.items()}
    return {"per_class": means, "mean": float(np.mean(list(means.values()))), "cases": len(pred.files)}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    images = bench_nnunet_models._cases(str(args.dataset / "imagesTs"), 1000)
    runs: dict[str, list[dict]] = {key: [] for key, *_ in ROWS}
    for order in (ROWS, ROWS[::-1]):
        for key, _, kind, step, tta, axes in order:
            out = tmp / f"{key}-{len(runs[key])}.npz"
            if kind == "bundled":
                kwargs = {"images": images, "step_size": step, "out": str(out), "precision": _precision(key)}
                result = bh.run_child(SCRIPT, "bundled", kwargs, args.timeout)
            else:
                kwargs = dict(
                    kind=kind,
                    model=str(args.nnunet_model),
                    images=images,
                    folds=["0"],
                    tta=tta,
                    step_size=step,
                    out=str(out),
                    mirror_axes=axes,
                    precision=_precision(key),
                )
                result = bh.run_child(SCRIPT, "predict", kwargs, args.timeout)
            result["labels"] = str(out)
            runs[key].append(result)
            print(f"[{NAME}] {key}: {result.get('error') or result['predict_s']} s", flush=True)
    rows = []
    for key, label, _kind, step, tta, axes in ROWS:
        ok = [r for r in runs[key] if "error" not in r]
        best = min(ok, key=lambda r: r["predict_s"]) if ok else runs[key][-1]
        dice = mean_dice(best["labels"], args.dataset / "labelsTs", [1, 2]) if ok else None
        rows.append(
            {
                "key": key,
                "row": label,
                "step_size": step,
                "mirroring": tta,
                "forced_mirror_axes": axes,
                **best,
                "dice": dice,
                "runs": [r.get("error") or r["predict_s"] for r in runs[key]],
            }
        )
    return {"rows": rows, "cases": len(images)}


def _mirroring(row: dict[str, Any]) -> str:
    if not row["mirroring"]:
        return "off"
    if row["forced_mirror_axes"] is None:
        return "on; the model allows none (1 pass)"
    return f"axes {row['forced_mirror_axes']} ({2 ** len(row['forced_mirror_axes'])} passes)"


def markdown(payload: dict[str, Any], info: dict, started: float) -> str:
    rows = payload["rows"]
    refs = [r for r in rows if r["key"].startswith("nnunet")]
    table, verdicts = [], []
    for r in rows:
        if "error" in r or any("error" in ref for ref in refs):
            table.append([r["row"], r.get("error", "–"), "", "", "", "", "", "", ""])
            continue
        ratios = [r["predict_s"] / ref["predict_s"] for ref in refs]
        costs = [ref["dice"]["mean"] - r["dice"]["mean"] for ref in refs]
        table.append(
            [
                r["row"],
                r["step_size"],
                _mirroring(r),
                f"{r['predict_s']:.1f}",
                " / ".join(f"{x:.2f}×" for x in ratios),
                " / ".join(f"{v:.3f}" for _, v in sorted((int(k), v) for k, v in r["dice"]["per_class"].items())),
                f"{r['dice']['mean']:.4f}",
                " / ".join(f"{c:+.4f}" for c in costs),
            ]
        )
        if r not in refs:
            # The target is judged against row 1, this model's own default; row 2 is a time reference only.
            ok = ratios[0] <= TIME_TARGET and costs[0] <= DICE_COST_TARGET
            verdicts.append(
                f"- {r['row']}: {1 / ratios[0]:.1f}× faster than nnU-Net's defaults on this model "
                f"({1 / ratios[1]:.1f}× than 8 mirrored passes), Dice cost {costs[0]:+.4f} — {bh.met(ok)}"
            )
    header = [
        "row",
        "tile step",
        "mirroring",
        "predict s",
        "× nnU-Net rows 1 / 2",
        "Dice anterior / posterior",
        "mean Dice",
        "Dice cost vs rows 1 / 2",
    ]
    return "\n".join(
        [
            "## Fast setting vs nnU-Net's defaults (hippocampus test split, CPU)\n",
            # The command of the run measured (a --from-json re-render keeps it).
            bh.stamp(info, started).replace(bh.command_line(), payload.get("command", bh.command_line())),
            f"{payload['cases']} test cases of the committed split, predicted from their files; each row ran twice in "
            "alternating order in fresh processes, the faster run shown. nnU-Net model: the standard `nnunet` row of "
            "*Accuracy on real anatomy* (seed 0, fold 0), trained without mirroring augmentation, so its checkpoint "
            "allows no mirror axes and nnU-Net's default mirroring does nothing (row 1); row 2 forces the 3 axes a "
            "model trained with nnU-Net's default augmentation allows, as a time reference only: this model never "
            "saw mirrored images, so its mirrored passes ruin the Dice (MSD hippocampus crops are not symmetric). "
            "Shipped MaskMed model: "
            "`Resources/HippocampusModel`. Fast setting = `maskmed predict` defaults + `--step-size 0.8`. "
            "Targets: >= 2x faster than nnU-Net's defaults at a Dice cost <= 0.01.\n",
            bh.table(header, table),
            "",
            *verdicts,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", type=Path, help="nnU-Net raw dataset with imagesTs/labelsTs (default: bench cache)"
    )
    parser.add_argument("--nnunet-model", type=Path, help="nnU-Net result folder (default: the standard nnunet row)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--from-json", type=Path, help="re-render BENCHMARKS.md from a saved result (no run)")
    args = parser.parse_args()
    for attr, pattern in (("dataset", DATASET_GLOB), ("nnunet_model", MODEL_GLOB)):
        if getattr(args, attr) is None:
            found = sorted(CACHE.glob(pattern))
            if not found:
                raise SystemExit(
                    f"no {pattern} under {CACHE}: run bench_accuracy.py --standard first, or pass "
                    f"--{attr.replace('_', '-')}"
                )
            setattr(args, attr, found[-1])
    started = time.perf_counter()
    info = bh.machine_info("cpu")
    if args.from_json:  # re-render the table of a finished run
        payload = json.loads(args.from_json.read_text())
        info, started = payload["machine"], started - payload["total_s"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            payload = run(args, Path(tmp))
        payload.update(machine=info, command=bh.command_line(), dataset=str(args.dataset), model=str(args.nnunet_model))
        payload["total_s"] = round(time.perf_counter() - started, 1)
        bh.write_result(NAME, "cpu", payload)
    text = markdown(payload, info, started)
    print(text)
    if not args.no_markdown:
        bh.update_markdown(NAME, text)


if __name__ == "__main__":
    if not bh.child_main({"predict": bench_nnunet_models.child_predict, "bundled": child_bundled}):
        main()
