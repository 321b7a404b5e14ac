"""The embedded default job: segment a real held-out case with a bundled model and score it.

``maskmed demo`` (default) segments the bundled hippocampus sample case, ``hippocampus_003``, a T1 MRI
from the *test* split of ``Testing/Benchmarks/splits/msd_hippocampus.json`` that the bundled hippocampus
model never saw, and reports the Dice per class against its manual labels (MSD Task04, CC-BY-SA 4.0).

``maskmed demo --phantom`` segments a freshly generated CT phantom with the bundled phantom model. That
model was produced by the project's own commands on its own synthetic phantoms (see
``DEMO_TRAINING_COMMANDS``); it never saw the demo's phantom, which is generated from a seed outside the
training seeds. ``--train`` retrains it first.

The figures (``class_probabilities.png``, ``overlay_*.png``) are drawn with matplotlib
(:mod:`MaskMedCore.visual.figures`), an optional dependency: without it the demo writes every other
output, no PNGs, and says so once on stderr (and in the report's ``figures`` field).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from MaskMedCore.bundled_models import PHANTOM_TRAINING_COMMANDS, bundled_model
from MaskMedCore.errors import DataError
from MaskMedCore.io_utils import atomic_write_text

DEMO_SEED = 9001  # outside the training seeds 0..N-1
DEMO_TRAIN_CASES = 12
DEMO_PATCH = (32, 64, 64)
DEMO_TRAINING_COMMANDS = PHANTOM_TRAINING_COMMANDS[:2]
HIPPOCAMPUS_MODEL = "hippocampus"


def find_demo_model() -> Path:
    """The bundled phantom demo checkpoint: ``$MASKMED_DEMO_MODEL``, else ``Resources/DemoModel/``.

    Raises:
        CheckpointError: not found (the message lists where it looked and what to do).
    """
    return bundled_model("phantom").require_checkpoint()


def train_demo_model(
    work_dir: Path, epochs: int = 40, iterations: int = 25, progress: str = "bar", device: str = "cpu"
) -> Path:
    """Retrain the demo model from scratch with the project's own commands' library calls."""
    from MaskMedCore.config.training_config import TrainingConfig
    from MaskMedCore.data.phantom import write_phantom_dataset
    from MaskMedCore.engine.trainer import train

    dataset = write_phantom_dataset(work_dir / "phantoms", DEMO_TRAIN_CASES, seed=0)
    # The bundled model's recipe (DEMO_TRAINING_COMMANDS), shorter: AdamW converges in few CPU
    # iterations, and no mirroring because the phantom has left/right labels (kidney_left/right).
    config = TrainingConfig(
        preset="tiny",
        fold=-1,
        epochs=epochs,
        iterations_per_epoch=iterations,
        optimizer="adamw",
        initial_lr=3e-3,
        transformer_lr_ratio=1.0,
        mirror_axes=(),
        device=device,
        num_workers=2,
    )
    run = work_dir / "run"
    train(dataset, run, config, preprocessed_dir=work_dir / "preprocessed", patch_size=DEMO_PATCH, progress=progress)
    return run / "checkpoint_best.pt"


def run_demo(
    out_dir: str | os.PathLike,
    *,
    phantom: bool = False,
    retrain: bool = False,
    device: str = "auto",
    seed: int = DEMO_SEED,
    progress: str = "bar",
) -> dict[str, Any]:
    """The demo: the bundled hippocampus sample case (default) or, with ``phantom``, a fresh CT phantom.

    Args:
        out_dir: output folder (created).
        phantom: segment a synthetic CT phantom with the phantom demo model instead.
        retrain: retrain the phantom demo model first (implies ``phantom``).
        device: ``auto``, ``cuda`` or ``cpu``.
        seed: the phantom's seed (phantom demo only).
        progress: ``bar``, ``json`` or ``none`` (retraining only).

    Returns:
        The report, also written to ``report.json``: Dice per class, wall times, paths.
    """
    if phantom or retrain:
        return run_phantom_demo(out_dir, retrain=retrain, device=device, seed=seed, progress=progress)
    return run_hippocampus_demo(out_dir, device=device)


def _segment_and_score(
    model_path: Path, image: sitk.Image, reference: sitk.Image, case: str, out: Path, device: str, draw: bool
):
    """Predict ``image``, write the outputs (the class-probability heatmap when ``draw``), and score them
    against ``reference``.

    Returns:
        ``(prediction, predictor, predict_seconds, dice per class name, pred (D, H, W), ref (D, H, W))``.
    """
    from MaskMedCore.inference.predictor import Predictor
    from MaskMedCore.metrics.overlap import dice_per_class

    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(model_path, device=device)
    prediction = predictor.predict(image, save_queries=True)
    predict_seconds = time.perf_counter() - t0
    prediction.write(out, case, ".nii.gz", save_queries=True, save_embeddings=True)

    names = prediction.label_names
    pred = sitk.GetArrayFromImage(prediction.labels).astype(np.int64)
    ref = np.rint(sitk.GetArrayFromImage(reference)).astype(np.int64)  # MSD labels may be stored as float
    if pred.shape != ref.shape:
        raise DataError(f"the reference labels of {case} are {ref.shape[::-1]} voxels, the image {pred.shape[::-1]}")
    dice = dice_per_class(pred, ref, range(1, len(names)))
    if draw:
        from MaskMedCore.visual.figures import heatmap_figure

        heatmap_figure(
            prediction.class_probabilities,
            out / "class_probabilities.png",
            vmin=0.0,
            vmax=1.0,
            row_labels=[f"Q{q.index}" for q in prediction.queries],
            col_labels=[*names, "none"],
            title=f"{case}: class probabilities of each query",
            xlabel="class (none = no object)",
            ylabel="query",
            colorbar_label="probability",
        )
    return prediction, predictor, predict_seconds, {names[k]: float(v) for k, v in dice.items()}, pred, ref


def run_hippocampus_demo(out_dir: str | os.PathLike, *, device: str = "auto") -> dict[str, Any]:
    """Segment the bundled hippocampus sample case (a held-out MSD Task04 test case) with the bundled
    hippocampus model; write the prediction, per-query maps, overlays and a report with Dice per class
    against the case's manual labels.

    Raises:
        CheckpointError: the hippocampus model is not installed.
        DataError: its sample case is missing.
    """
    from MaskMedCore.data.image_io import read_image

    start = time.perf_counter()
    model = bundled_model(HIPPOCAMPUS_MODEL)
    model_path = model.require_checkpoint()
    sample = model.card.sample
    if sample is None or not sample.image.is_file() or not sample.label.is_file():
        where = f"{sample.image} and {sample.label}" if sample is not None else f"a 'sample' in {model.card.source}"
        raise DataError(f"the hippocampus sample case is missing (expected {where}); reinstall or re-clone MaskMed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, reference = read_image(sample.image), read_image(sample.label)
    shutil.copyfile(sample.image, out / f"{sample.case}_mri.nii.gz")
    shutil.copyfile(sample.label, out / f"{sample.case}_reference.nii.gz")

    draw = can_draw_figures()
    prediction, predictor, predict_seconds, dice, pred, ref = _segment_and_score(
        model_path, image, reference, sample.case, out, device, draw
    )
    # Sagittal slice (fixed x) with the most labelled voxels: the head (anterior) and the body/tail
    # (posterior) side by side. (D, H, W) = (z, y, x); rows flipped so that superior (+z) is up.
    x = int(np.argmax((ref > 0).sum(axis=(0, 1))))
    mri = sitk.GetArrayFromImage(image).astype(np.float32)
    window = tuple(float(v) for v in np.percentile(mri, (1.0, 99.5)))
    _, sy, sz = image.GetSpacing()
    if draw:
        _overlays(
            mri[::-1, :, x],
            ((pred[::-1, :, x], "prediction"), (ref[::-1, :, x], "manual reference")),
            out,
            f"{sample.case}, sagittal slice x={x}",
            prediction.label_names,
            dice,
            window=window,
            pixel_spacing=(sz, sy),
            intensity_label="MRI intensity",
        )
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    names = prediction.label_names
    report = {
        "demo": "hippocampus",
        "model": str(model_path),
        "model_name": model.name,
        "model_status": model.card.status,
        "case": sample.case,
        "case_split": sample.split,
        "case_licence": f"{model.card.licence}; {model.card.attribution}",
        "device": str(predictor.device),
        "dice": dice,
        "mean_dice": float(np.mean(list(dice.values()))),
        "model_card_test_dice": model.card.test_dice,
        "predict_seconds": predict_seconds,
        "train_seconds": None,
        "total_seconds": time.perf_counter() - start,
        "class_volumes_ml": prediction.class_volumes_ml,
        "reference_volumes_ml": {names[k]: float((ref == k).sum() * voxel_ml) for k in range(1, len(names))},
        "queries": [q.to_dict() for q in prediction.queries],
        "figures": _figures_note(draw),
        "outputs": sorted(p.name for p in out.iterdir()) + ["report.json"],
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def run_phantom_demo(
    out_dir: str | os.PathLike,
    *,
    retrain: bool = False,
    device: str = "auto",
    seed: int = DEMO_SEED,
    progress: str = "bar",
) -> dict[str, Any]:
    """Segment a fresh phantom; write labels, per-query masks, heatmap and overlay PNGs and a report.

    Returns the report (also written to ``report.json``): Dice per organ, wall times, paths.
    """
    from MaskMedCore.data.image_io import write_image
    from MaskMedCore.data.phantom import generate_phantom

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_seconds = None
    if retrain:
        t0 = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix="maskmed-demo-train-", dir=out))
        model_path = train_demo_model(work, progress=progress, device="cpu" if device == "auto" else device)
        train_seconds = time.perf_counter() - t0
    else:
        model_path = find_demo_model()
    image, reference = generate_phantom(seed)
    write_image(image, out / "phantom_ct.nii.gz")
    write_image(reference, out / "phantom_reference.nii.gz")

    draw = can_draw_figures()
    prediction, predictor, predict_seconds, dice, pred, ref = _segment_and_score(
        model_path, image, reference, "phantom", out, device, draw
    )
    ct = sitk.GetArrayFromImage(image).astype(np.float32)
    mid = int(np.argmax((ref > 0).sum(axis=(1, 2))))  # the slice with the most organ voxels
    sx, sy, _ = image.GetSpacing()
    if draw:
        _overlays(
            ct[mid],
            ((pred[mid], "prediction"), (ref[mid], "reference")),
            out,
            f"phantom (seed {seed}), axial slice z={mid}",
            prediction.label_names,
            dice,
            window=(-150.0, 250.0),
            pixel_spacing=(sy, sx),
            intensity_label="HU",
        )
    report = {
        "demo": "phantom",
        "model": str(model_path),
        "phantom_seed": seed,
        "device": str(predictor.device),
        "dice": dice,
        "mean_dice": float(np.mean(list(dice.values()))),
        "predict_seconds": predict_seconds,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "class_volumes_ml": prediction.class_volumes_ml,
        "queries": [q.to_dict() for q in prediction.queries],
        "figures": _figures_note(draw),
        "outputs": sorted(p.name for p in out.iterdir()),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


# ---------------------------------------------------------------------------------------- figures
def can_draw_figures() -> bool:
    """Whether the demo can draw its figures (matplotlib installed); when not, says so on stderr.

    Each demo run calls this once and passes the answer on, so the note appears once per run.
    """
    from MaskMedCore.visual import figures

    if figures.available():
        return True
    print(
        f"maskmed demo: matplotlib is not installed, so no PNG figures are written ({figures.INSTALL_HINT})",
        file=sys.stderr,
    )
    return False


def _figures_note(draw: bool) -> str:
    """The report's ``figures`` field."""
    from MaskMedCore.visual import figures

    return "matplotlib" if draw else f"none (matplotlib is not installed; {figures.INSTALL_HINT})"


def _overlays(image_slice, labelled, out: Path, where: str, names, dice, **style) -> None:
    """``overlay_<kind>.png`` for each ``(labels (H, W), kind)`` in ``labelled``; the prediction's title
    carries its Dice per class."""
    from MaskMedCore.visual.figures import overlay_figure

    for labels, kind in labelled:
        title = f"{where}: {kind}"
        if kind == "prediction":
            scores = "Dice " + ", ".join(f"{name} {d:.2f}" for name, d in dice.items())
            title += "\n" + textwrap.fill(scores, 64)  # several organs: wrapped, not clipped
        name = "overlay_prediction.png" if kind == "prediction" else "overlay_reference.png"
        overlay_figure(image_slice, labels, out / name, label_names=names, title=title, **style)
