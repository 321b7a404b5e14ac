"""Benchmark: an nnU-Net v2 model run as-is by ``maskmed predict`` vs by nnU-Net's own ``nnUNetPredictor``.

Issue 11: "``maskmed predict`` agrees with ``nnUNetPredictor`` on >= 99.9 % of voxels with the same
folds/mirroring/step size, and its wall time and peak RAM are in BENCHMARKS.md beside nnU-Net's, as
ratios from one run."

For each ``--model FOLDER --images DIR`` pair (an nnU-Net result folder trained by ``nnunetv2`` and a
folder of ``<case>_0000<ending>`` images), two rows run in fresh child processes, each twice in
alternating order (the faster run of each is reported: other jobs on a shared machine slow single runs):

1. ``nnUNetPredictor`` (``initialize_from_trained_model_folder`` + ``predict_single_npy_array`` per case,
   images read with its ``SimpleITKIO``), CPU, ``perform_everything_on_device=False``.
2. ``NnUNetModelPredictor`` (what ``maskmed predict -m FOLDER`` runs), same folds, step size and mirroring.

Timed: building the predictor (``load s``) and predicting every case from its file to an in-memory label
map (``predict s``); ``peak RAM`` is the resident-set peak over the predict phase above the state before
it (``bench_harness.PeakMemory``). The label maps are compared voxel by voxel (``agreement``).

    python Testing/Benchmarks/bench_nnunet_models.py --model FOLDER --images DIR [--model F2 --images D2]
        [--folds 0] [--tta] [--step-size 0.5] [--cases N] [--no-markdown]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_harness as bh  # noqa: E402

SCRIPT = Path(__file__).resolve()
NAME = "nnunet-models"
SECTION = "nnunet-run-as-is"


def _cases(images: str, limit: int) -> list[str]:
    files = sorted(p for p in Path(images).iterdir() if p.name.endswith("_0000.nii.gz"))
    return [str(p) for p in files[:limit]]


def child_predict(
    kind: str,
    model: str,
    images: list[str],
    folds: list[str],
    tta: bool,
    step_size: float,
    out: str,
    mirror_axes: list[int] | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """One row in this process: build the predictor, predict every case, save the labels to ``out`` (.npz).

    ``mirror_axes`` (with ``tta``) replaces the checkpoint's allowed mirror axes: a model trained without
    mirroring stores none, and nnU-Net then mirrors nothing even when asked to."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    t0 = time.perf_counter()
    if kind == "nnunet":
        import nnunetv2.inference.predict_from_raw_data as predict_module
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        # nnU-Net's trainer look-up by name imports every trainer module (its Primus trainers need timm, which
        # the CPU install leaves out); the trainer only provides build_network_architecture, nnUNetTrainer's.
        predict_module.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer
        predictor = predict_module.nnUNetPredictor(
            tile_step_size=step_size,
            use_gaussian=True,
            use_mirroring=tta,
            perform_everything_on_device=False,
            device=torch.device("cpu"),
            allow_tqdm=False,
        )
        folds_arg = tuple(f if f == "all" else int(f) for f in folds)
        predictor.initialize_from_trained_model_folder(
            model, use_folds=folds_arg, checkpoint_name="checkpoint_final.pth"
        )
        if tta and mirror_axes is not None:
            predictor.allowed_mirroring_axes = tuple(mirror_axes)
        io = SimpleITKIO()

        def predict(path: str):
            data, props = io.read_images([path])
            return np.asarray(predictor.predict_single_npy_array(data, props))
    else:
        from MaskMedCore.nnunet.predictor import NnUNetModelPredictor

        ours = NnUNetModelPredictor(model, folds=folds, device="cpu", tta=tta, step_size=step_size, precision=precision)
        if tta and mirror_axes is not None:
            ours.mirror_axes = tuple(mirror_axes)

        def predict(path: str):
            return sitk.GetArrayFromImage(ours.predict(path).labels)

    return time_cases(predict, images, out, time.perf_counter() - t0)


def time_cases(predict, images: list[str], out: str, load_s: float) -> dict[str, Any]:
    """Predict every case with ``predict(path) -> label array``, timed and RAM-measured; labels saved to ``out``."""
    import numpy as np
    import torch

    labels = {}
    with bh.PeakMemory("cpu") as peak:
        t1 = time.perf_counter()
        for path in images:
            labels[Path(path).name] = predict(path)
        predict_s = time.perf_counter() - t1
    np.savez_compressed(out, **labels)
    return {
        "load_s": round(load_s, 3),
        "predict_s": round(predict_s, 3),
        "peak_mib": round(peak.peak_mib, 1),
        "threads": torch.get_num_threads(),
    }


def run_model(model: str, images: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import numpy as np

    results: dict[str, list[dict]] = {"nnunet": [], "maskmed": []}
    for order in (("nnunet", "maskmed"), ("maskmed", "nnunet")):
        for kind in order:
            out = tmp / f"{kind}-{len(results[kind])}.npz"
            kwargs = dict(
                kind=kind,
                model=model,
                images=images,
                folds=args.folds,
                tta=args.tta,
                step_size=args.step_size,
                out=str(out),
            )
            result = bh.run_child(SCRIPT, "predict", kwargs, args.timeout)
            result["labels"] = str(out)
            results[kind].append(result)
    best = {
        k: min((r for r in v if "error" not in r), key=lambda r: r["predict_s"], default=v[0])
        for k, v in results.items()
    }
    agreement = None
    if all("error" not in b for b in best.values()):
        a, b = np.load(best["nnunet"]["labels"]), np.load(best["maskmed"]["labels"])
        equal = sum(int((a[k] == b[k]).sum()) for k in a.files)
        agreement = equal / sum(a[k].size for k in a.files)
    return {"model": model, "cases": len(images), "runs": results, "best": best, "agreement": agreement}


def markdown(rows: list[dict], info: dict, started: float, args: argparse.Namespace) -> str:
    body = [
        bh.stamp(info, started),
        f"Settings: folds {' '.join(args.folds)}, step size {args.step_size}, mirroring "
        f"{'on (checkpoint axes)' if args.tta else 'off'}, CPU. Each row ran twice in alternating order; the faster "
        "run is shown. Target: agreement >= 99.9 % of voxels.\n",
    ]
    table = []
    for row in rows:
        n, m = row["best"]["nnunet"], row["best"]["maskmed"]
        name = Path(row["model"]).parent.name + "/" + Path(row["model"]).name
        if "error" in n or "error" in m:
            table.append([name, row["cases"], n.get("error", "–"), m.get("error", "–"), "", "", "", "", ""])
            continue
        agree = row["agreement"]
        table.append(
            [
                name,
                row["cases"],
                f"{n['predict_s']:.1f}",
                f"{m['predict_s']:.1f}",
                f"{m['predict_s'] / n['predict_s']:.2f}x",
                f"{n['peak_mib']:.0f}",
                f"{m['peak_mib']:.0f}",
                f"{m['peak_mib'] / n['peak_mib']:.2f}x" if n["peak_mib"] > 0 else "–",
                f"{100 * agree:.4f} % {bh.met(agree >= 0.999)}",
            ]
        )
    header = [
        "model",
        "cases",
        "nnU-Net predict s",
        "MaskMed predict s",
        "time ratio",
        "nnU-Net peak MiB",
        "MaskMed peak MiB",
        "RAM ratio",
        "voxel agreement",
    ]
    body.append(bh.table(header, table))
    return "\n".join(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="nnU-Net result folder (repeatable)")
    parser.add_argument("--images", action="append", required=True, help="its images folder (one per --model)")
    parser.add_argument("--folds", nargs="+", default=["0"])
    parser.add_argument("--tta", action="store_true", help="mirroring over the checkpoint's axes (both rows)")
    parser.add_argument("--step-size", type=float, default=0.5)
    parser.add_argument("--cases", type=int, default=40, help="at most this many cases per model")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args()
    if len(args.model) != len(args.images):
        raise SystemExit("give one --images folder per --model")
    started = time.perf_counter()
    info = bh.machine_info("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, images in zip(args.model, args.images):
            rows.append(run_model(model, _cases(images, args.cases), args, Path(tmp)))
    bh.write_result(NAME, "cpu", {"machine": info, "rows": rows, "command": bh.command_line()})
    text = markdown(rows, info, started, args)
    print(text)
    if not args.no_markdown:
        bh.update_markdown(SECTION, text)


if __name__ == "__main__":
    if not bh.child_main({"predict": child_predict}):
        main()
