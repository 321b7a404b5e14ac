"""The embedded default job: segment a freshly generated CT phantom with the bundled demo model.

The demo model ships in ``Resources/DemoModel/`` and was produced by the project's own commands
on its own synthetic phantoms (see ``DEMO_TRAINING_COMMANDS``); it never saw the demo's phantom,
which is generated from a seed outside the training seeds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from MaskMedCore.errors import CheckpointError
from MaskMedCore.io_utils import atomic_write_text

DEMO_MODEL_ENV = "MASKMED_DEMO_MODEL"
DEMO_MODEL_RELATIVE = Path("Resources") / "DemoModel" / "maskmed_demo_phantom.pt"
DEMO_SEED = 9001  # outside the training seeds 0..N-1
DEMO_TRAIN_CASES = 12
DEMO_PATCH = (32, 64, 64)
DEMO_TRAINING_COMMANDS = (
    "maskmed phantom --out PHANTOMS --cases 12 --seed 0",
    "maskmed train PHANTOMS --out RUN --preset tiny --fold -1 --patch-size 32 64 64 --epochs 30 "
    "--iterations-per-epoch 25 --optimizer adamw --lr 3e-3 --transformer-lr-ratio 1.0 --no-mirroring --device cpu",
)


def find_demo_model() -> Path:
    """The bundled demo checkpoint: ``$MASKMED_DEMO_MODEL``, else ``Resources/DemoModel/`` beside the package."""
    env = os.environ.get(DEMO_MODEL_ENV)
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here.parent / DEMO_MODEL_RELATIVE, here / "resources" / DEMO_MODEL_RELATIVE.name]
    for path in candidates:
        if path.is_file():
            return path
    raise CheckpointError(
        f"the bundled demo model was not found (looked at {', '.join(str(c) for c in candidates)}); "
        f"set {DEMO_MODEL_ENV} or run 'maskmed demo --train'"
    )


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
    from MaskMedCore.inference.predictor import Predictor
    from MaskMedCore.metrics.overlap import dice_per_class
    from MaskMedCore.visual.png import heatmap_png, overlay_png

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

    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(model_path, device=device)
    prediction = predictor.predict(image, save_queries=True)
    predict_seconds = time.perf_counter() - t0
    prediction.write(out, "phantom", ".nii.gz", save_queries=True, save_embeddings=True)

    names = prediction.label_names
    pred = sitk.GetArrayFromImage(prediction.labels)
    ref = sitk.GetArrayFromImage(reference)
    dice = dice_per_class(pred, ref, range(1, len(names)))
    dice_named = {names[k]: float(v) for k, v in dice.items()}
    heatmap_png(
        prediction.class_probabilities,
        out / "class_probabilities.png",
        vmin=0.0,
        vmax=1.0,
        row_labels=[f"Q{q.index}" for q in prediction.queries],
        col_labels=[*names, "none"],
    )
    ct = sitk.GetArrayFromImage(image).astype(np.float32)
    mid = int(np.argmax((ref > 0).sum(axis=(1, 2))))  # the slice with the most organ voxels
    overlay_png(ct[mid], pred[mid], out / "overlay_prediction.png", scale=3)
    overlay_png(ct[mid], ref[mid], out / "overlay_reference.png", scale=3)
    report = {
        "model": str(model_path),
        "phantom_seed": seed,
        "device": str(predictor.device),
        "dice": dice_named,
        "mean_dice": float(np.mean(list(dice_named.values()))),
        "predict_seconds": predict_seconds,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "class_volumes_ml": prediction.class_volumes_ml,
        "queries": [q.to_dict() for q in prediction.queries],
        "outputs": sorted(p.name for p in out.iterdir()),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report
