"""The external baseline of the accuracy benchmark: nnU-Net v2 itself, trained by the ``nnunetv2`` package.

Why this file: the point-wise MaskMed row re-implements nnU-Net's head, but only the real package
shows whether our pipeline (planning, preprocessing, sampling, augmentation, loss, inference) is on
par. To isolate the *pipeline*, nnU-Net gets the same raw dataset, split, target spacing, patch,
batch, UNet topology (features, kernels, strides, convs per stage) and iteration budget as the
MaskMed rows; only nnU-Net's own code runs.

How (everything in a child process of ``bench_accuracy.py``; nnunetv2 reads its folder variables
at import time, so they are set in the child's environment, see :func:`nnunet_env`):

- :func:`prepare`: fingerprint -> ``ExperimentPlanner`` plans (Python API of
  ``nnunetv2.experiment_planning.plan_and_preprocess_api``) -> the 3d_fullres configuration is edited
  to MaskMed's plan (patch, batch, spacing, ``arch_kwargs``; axis transpose set to identity) ->
  preprocessing of 3d_fullres only -> ``splits_final.json`` with the benchmark's split.
- :func:`train_and_predict`: ``BenchTrainer`` (a small ``nnUNetTrainer`` subclass) runs the same
  epochs x iterations, validation batches, optimiser (see ``variant``), mirroring choice, on the chosen
  device; the progress plot and network drawing are skipped (slow, irrelevant), and nnU-Net's final
  full-volume validation is not run (we evaluate on the test cases instead). The test cases are
  predicted with ``nnUNetPredictor.initialize_from_trained_model_folder`` +
  ``predict_single_npy_array`` and scored with the same MaskMedCore Dice as the MaskMed rows.

nnU-Net's trainer does not seed anything; for a seeded run the child seeds Python, NumPy and torch
before the trainer is built (its data loader and batchgeneratorsv2 transforms draw from those).
nnU-Net's CLI and predictor look trainer classes up by name inside the nnunetv2 package, so the
trainer is instantiated directly and the predictor's look-up is pointed at ``BenchTrainer``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

PLANS_PREFIX = "benchPlans"
CONFIGURATION = "3d_fullres"


def plans_name(mode: str) -> str:
    """One plans identifier per benchmark mode, so quick and full plans never overwrite each other."""
    return f"{PLANS_PREFIX}_{mode}"


def nnunet_env(task_root: str, mode: str, threads: int, data_workers: int = 0) -> dict[str, str]:
    """Environment of an nnU-Net child: its three folders inside the task's cache, ``data_workers``
    augmentation processes (``nnUNet_n_proc_DA``; 0 = batchgenerators' single-threaded augmenter in
    the training process, as on the CPU; on a GPU the same count as MaskMed's ``num_workers``), one
    preprocessing process, no ``torch.compile`` (not useful on CPU, and its warm-up would dominate short runs)."""
    root = Path(task_root)
    return {
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results" / mode),
        "nnUNet_n_proc_DA": str(data_workers),
        "nnUNet_def_n_proc": "1",
        "nnUNet_compile": "false",
        "OMP_NUM_THREADS": str(threads),
    }


def result_folder(task: dict, mode: str, row: str, seed: int) -> Path:
    """The ``Trainer__Plans__3d_fullres`` folder an nnU-Net row's run of ``seed`` trained into (the layout
    :func:`nnunet_env` and :func:`train_and_predict` make), e.g. for ``maskmed train --init-from``."""
    results = Path(nnunet_env(task["root"], f"{mode}-{row}-seed{seed}", 1)["nnUNet_results"])
    return results / task["dataset_name"] / f"BenchTrainer__{plans_name(mode)}__{CONFIGURATION}"


def _edit_plans(plans: dict, mm_plan: dict, batch_size: int) -> dict:
    """Make nnU-Net's 3d_fullres configuration use MaskMed's spacing, patch, batch and UNet topology."""
    cfg = plans["configurations"][CONFIGURATION]
    n = len(mm_plan["strides"])
    cfg["patch_size"] = list(mm_plan["patch_size"])
    cfg["batch_size"] = int(batch_size)
    cfg["spacing"] = list(mm_plan["target_spacing"])
    arch = cfg["architecture"]["arch_kwargs"]
    arch["n_stages"] = n
    arch["features_per_stage"] = list(mm_plan["features_per_stage"])
    arch["kernel_sizes"] = [list(k) for k in mm_plan["kernel_sizes"]]
    arch["strides"] = [list(s) for s in mm_plan["strides"]]
    arch["n_conv_per_stage"] = [mm_plan["n_conv_per_stage"]] * n
    arch["n_conv_per_stage_decoder"] = [mm_plan["n_conv_per_stage_decoder"]] * (n - 1)
    # MaskMed's arrays are (D, H, W) as read; keep nnU-Net on the same axis order.
    plans["transpose_forward"] = [0, 1, 2]
    plans["transpose_backward"] = [0, 1, 2]
    # Only 3d_fullres is trained; dropping the others keeps the plans file unambiguous.
    plans["configurations"] = {CONFIGURATION: cfg}
    return plans


def prepare(task: dict, mode: str, mm_plan: dict, batch_size: int) -> dict:
    """Plan and preprocess the task's raw dataset with nnunetv2 (re-used when already done with the
    same settings). ``mm_plan``: the MaskMed plan's spacing, patch and topology (``model_topology``)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunetv2.paths import nnUNet_preprocessed

    start = time.perf_counter()
    name = plans_name(mode)
    prep_base = Path(nnUNet_preprocessed) / task["dataset_name"]
    marker = prep_base / f".{name}.complete"
    key = {"mm_plan": mm_plan, "batch_size": batch_size, "train": task["train"], "val": task["val"]}
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return {"seconds": round(time.perf_counter() - start, 2), "reused": True}
    marker.unlink(missing_ok=True)
    shutil.rmtree(prep_base / f"{name}_{CONFIGURATION}", ignore_errors=True)

    class Fingerprint(DatasetFingerprintExtractor):
        """nnU-Net's fingerprint with 10^6 sampled foreground voxels in total (MaskMed's fingerprint
        samples 10^6 too) instead of 10^8: with one training case nnU-Net would draw 10^8 samples from
        it, ~20 s and ~1 GB for CT percentiles that change in the third digit."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 1e6

    extract_fingerprint_dataset(
        task["dataset_id"], Fingerprint, num_processes=1, clean=True, verbose=False, show_progress_bar=False
    )
    plan_experiment_dataset(task["dataset_id"], overwrite_plans_name=name)
    plans_path = prep_base / f"{name}.json"
    plans = _edit_plans(json.loads(plans_path.read_text()), mm_plan, batch_size)
    plans_path.write_text(json.dumps(plans, indent=2))
    preprocess_dataset(
        task["dataset_id"], name, configurations=(CONFIGURATION,), num_processes=(1,), show_progress_bar=False
    )
    if task["val"]:
        split = [{"train": sorted(task["train"]), "val": sorted(task["val"])}]
        (prep_base / "splits_final.json").write_text(json.dumps(split, indent=2))
    marker.write_text(json.dumps(key))
    return {"seconds": round(time.perf_counter() - start, 2), "reused": False}


_TRAINER = None


class _Case(NamedTuple):
    """What ``validate_cases`` reads of a case: ``image`` (C, D, H, W) and ``labels`` (D, H, W)."""

    image: Any
    labels: Any


def trainer_class():
    """``BenchTrainer``, built lazily because importing nnunetv2 needs the environment of the child."""
    global _TRAINER
    if _TRAINER is not None:
        return _TRAINER
    import torch
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class BenchTrainer(nnUNetTrainer):
        """nnU-Net's trainer with the benchmark's budget (``BenchTrainer.budget``, set before use)."""

        budget: dict = {}

        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            super().__init__(plans, configuration, fold, dataset_json, device or torch.device("cuda"))
            b = self.budget
            self.num_epochs = int(b["epochs"])
            self.num_iterations_per_epoch = int(b["iterations_per_epoch"])
            self.num_val_iterations_per_epoch = int(b["val_iterations"])
            self.initial_lr = float(b["lr"])
            self.weight_decay = float(b["weight_decay"])
            self.save_every = 10**9  # no intermediate checkpoint_latest (final and best are still written)
            self.logger.plot_progress_png = lambda *args, **kwargs: None  # matplotlib per epoch: seconds each

        def configure_optimizers(self):
            b = self.budget
            if b["optimizer"] == "adamw":
                optimizer = torch.optim.AdamW(
                    self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay
                )
            else:
                optimizer = torch.optim.SGD(
                    self.network.parameters(),
                    self.initial_lr,
                    weight_decay=self.weight_decay,
                    momentum=0.99,
                    nesterov=True,
                )
            return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

        def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
            rot, dummy_2d, initial, mirror = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            if not self.budget["mirror"]:
                mirror = None
                self.inference_allowed_mirroring_axes = None
            return rot, dummy_2d, initial, mirror

        def plot_network_architecture(self):
            pass  # needs hiddenlayer/graphviz and costs seconds; irrelevant to accuracy

        def on_epoch_end(self):
            """With ``validation="cases"``: the learning-curve point MaskMed's trainer records, computed the
            same way (every validation case predicted whole by sliding window, per-case Dice, mean over cases)
            on nnU-Net's own network and preprocessed cases, before nnU-Net's own epoch bookkeeping."""
            if self.budget.get("validation") == "cases":
                self.case_curve.append(
                    {
                        "iteration": (self.current_epoch + 1) * self.num_iterations_per_epoch,
                        "val_dice": self._case_validation(),
                    }
                )
            super().on_epoch_end()

        case_curve: list = []

        def _case_validation(self) -> dict:
            from MaskMedCore.engine.case_validation import validate_cases
            from MaskMedCore.engine.distributed import DistributedContext

            _, val_keys = self.do_split()
            _, dataset_val = self.get_tr_and_val_datasets()
            cases = []
            for key in val_keys:
                data, seg, _, _ = dataset_val.load_case(key)
                # nnU-Net marks voxels outside the non-zero region with -1 in seg: background for scoring
                cases.append(_Case(np.asarray(data[:], dtype=np.float32), np.maximum(np.asarray(seg[0]), 0)))
            network = self.network
            self.set_deep_supervision_enabled(False)
            network.eval()
            try:
                dice = validate_cases(
                    lambda x: torch.softmax(network(x).float(), 1),
                    cases,
                    self.configuration_manager.patch_size,
                    len(self.label_manager.all_labels),
                    self.device,
                    DistributedContext(),
                )
            finally:
                self.set_deep_supervision_enabled(True)
                network.train()
            names = [n for n, v in sorted(self.dataset_json["labels"].items(), key=lambda kv: kv[1]) if v != 0]
            return {n: d for n, d in zip(names, dice) if d is not None}

    _TRAINER = BenchTrainer
    return BenchTrainer


def train_and_predict(task: dict, mode: str, seed: int, budget: dict, device: str, threads: int) -> dict:
    """Train one seeded nnU-Net run and score it on the task's test cases (child process)."""
    import random

    import accuracy_datasets as ad
    import numpy as np
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    import nnunetv2.inference.predict_from_raw_data as predict_module
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results

    Trainer = trainer_class()
    Trainer.budget = budget
    Trainer.case_curve = []
    prep_base = Path(nnUNet_preprocessed) / task["dataset_name"]
    plans = json.loads((prep_base / f"{plans_name(mode)}.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((prep_base / "dataset.json").read_text())
    fold = 0 if task["val"] else "all"  # no validation case (TotalSeg): nnU-Net's "all" validates on the training case
    out_base = Path(nnUNet_results) / task["dataset_name"] / f"{Trainer.__name__}__{plans_name(mode)}__{CONFIGURATION}"
    shutil.rmtree(out_base, ignore_errors=True)  # a previous run of this mode/seed slot is replaced

    t0, c0 = time.perf_counter(), time.process_time()  # from trainer construction on, like MaskMed's train()
    trainer = Trainer(
        plans=plans, configuration=CONFIGURATION, fold=fold, dataset_json=dataset_json, device=torch.device(device)
    )
    trainer.run_training()
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    iterations = trainer.num_epochs * trainer.num_iterations_per_epoch
    digest = hashlib.sha256()
    for name, p in sorted(trainer.network.named_parameters()):  # same digest as MaskMed's trainer reports
        digest.update(name.encode())
        digest.update(p.detach().cpu().float().numpy().tobytes())
    del trainer

    # Same checkpoint rule as the MaskMed rows: the final one, or (quick/full) the best validation EMA where there
    # is a validation split, else the last.
    final = budget.get("checkpoint") == "final" or not task["val"]
    checkpoint = "checkpoint_final.pth" if final else "checkpoint_best.pth"
    predict_module.recursive_find_trainer_class_by_name = lambda name: Trainer  # class lives outside nnunetv2
    predictor = predict_module.nnUNetPredictor(
        tile_step_size=1.0 - budget["overlap"],
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=device.startswith("cuda"),
        device=torch.device(device),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(out_base), use_folds=(fold,), checkpoint_name=checkpoint)
    t1 = time.perf_counter()
    io = SimpleITKIO()
    preds = {}
    for case in task["test"]:
        images, props = io.read_images(ad.TaskData(**task).test_images(case))
        seg = predictor.predict_single_npy_array(images, props)
        preds[case] = np.asarray(seg)
    predict_s = time.perf_counter() - t1
    ref_images = {c: sitk.ReadImage(ad.TaskData(**task).test_label(c)) for c in task["test"]}
    refs = {c: sitk.GetArrayFromImage(img) for c, img in ref_images.items()}
    spacings = {c: tuple(reversed(img.GetSpacing())) for c, img in ref_images.items()}
    scores = ad.score_predictions(preds, refs, task["labels"], spacings)
    return {
        **scores,
        "iterations": iterations,
        "train_s": round(train_s, 2),
        "train_cpu_s": round(train_cpu_s, 2),
        "predict_s": round(predict_s, 2),
        "checkpoint": checkpoint,
        "curve": list(Trainer.case_curve),
        "parameter_digest": digest.hexdigest()[:16],
        "threads": torch.get_num_threads(),
    }


def cleanup_env_check() -> None:
    """Fail early (with the variable's name) when the child was started without its nnU-Net folders."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if not os.environ.get(var):
            raise RuntimeError(f"{var} is not set; nnU-Net children must be started with nnunet_env()")
