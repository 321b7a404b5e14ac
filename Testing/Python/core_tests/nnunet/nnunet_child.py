"""Train a small nnU-Net v2 model with the real ``nnunetv2`` package (run as a child process).

    python nnunet_child.py SPEC.json

SPEC: ``root`` (gets nnUNet_raw / nnUNet_preprocessed / nnUNet_results), ``dataset_id``,
``dataset_name`` (raw data already in ``root/nnUNet_raw/<dataset_name>``), ``trainer`` (a stock nnU-Net
trainer, e.g. ``nnUNetTrainer_1epoch``), ``fold``, ``iterations`` (per epoch), and ``arch``: the
3d_fullres edits (``patch_size``, ``batch_size``, ``features_per_stage``, optional ``spacing``) that
make the network small enough for a CPU test, and optionally ``network: "resenc"`` with
``n_blocks_per_stage``: the configuration's network becomes the ``ResidualEncoderUNet`` that nnU-Net's
ResEnc presets (``nnUNetResEncUNet{M,L,XL}Plans``) write, with their arch_kwargs, on the same small
topology (1 conv per decoder stage, as those presets). Everything else -- fingerprint, planning (incl. the
axis transpose and normalisation choice), preprocessing, training, the checkpoint -- is nnU-Net's
own code. nnunetv2 reads its folder variables at import time, hence the child process. Prints the
result folder as the last line.
"""

import json
import os
import sys
from pathlib import Path


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    os.environ.update(
        {
            "nnUNet_raw": str(root / "nnUNet_raw"),
            "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
            "nnUNet_results": str(root / "nnUNet_results"),
            "nnUNet_n_proc_DA": "1",  # the planner calls torch.set_num_threads with it: must be >= 1 here
            "nnUNet_def_n_proc": "1",
            "nnUNet_compile": "false",
        }
    )
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs

    did, name = int(spec["dataset_id"]), spec["dataset_name"]
    extract_fingerprint_dataset(did, num_processes=1, clean=True, verbose=False)
    plan_experiment_dataset(did)
    plans_path = root / "nnUNet_preprocessed" / name / "nnUNetPlans.json"
    plans = json.loads(plans_path.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    arch, edits = cfg["architecture"]["arch_kwargs"], spec["arch"]
    n = len(edits["features_per_stage"])
    cfg["patch_size"] = edits["patch_size"]
    cfg["batch_size"] = edits["batch_size"]
    if "spacing" in edits:
        cfg["spacing"] = edits["spacing"]
    arch["n_stages"] = n
    arch["features_per_stage"] = edits["features_per_stage"]
    arch["kernel_sizes"] = arch["kernel_sizes"][:n]
    arch["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    if edits.get("network") == "resenc":
        cfg["architecture"]["network_class_name"] = (
            "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
        )
        arch.pop("n_conv_per_stage")
        arch["n_blocks_per_stage"] = edits["n_blocks_per_stage"]
        arch["n_conv_per_stage_decoder"] = [1] * (n - 1)
    else:
        arch["n_conv_per_stage"] = [2] * n
        arch["n_conv_per_stage_decoder"] = [2] * (n - 1)
    plans["configurations"] = {"3d_fullres": cfg}
    plans_path.write_text(json.dumps(plans, indent=2))
    preprocess_dataset(did, configurations=("3d_fullres",), num_processes=(1,), verbose=False)

    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process (no worker processes)
    # nnU-Net's look-up by name imports every trainer module, and its Primus trainers need timm, which the
    # CPU install leaves out (timm -> torchvision would replace torch); the stock class is imported directly.
    base = getattr(nnUNetTrainer_Xepochs, spec["trainer"])

    class nnUNetTrainerAdamW(base):
        """The stock trainer with AdamW 3e-3: nnU-Net's SGD 1e-2 leaves an 8-feature network at Dice 0 for
        hundreds of iterations (BENCHMARKS.md), and a model that predicts only background would make the
        equivalence tests trivially pass."""

        def configure_optimizers(self):
            from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

            optimizer = torch.optim.AdamW(self.network.parameters(), 3e-3, weight_decay=3e-5)
            return optimizer, PolyLRScheduler(optimizer, 3e-3, self.num_epochs)

    trainer_class = nnUNetTrainerAdamW
    dataset_json = json.loads((root / "nnUNet_preprocessed" / name / "dataset.json").read_text())
    plans["continue_training"] = False  # nnU-Net's run_training sets this key before building a trainer
    trainer = trainer_class(plans, "3d_fullres", spec["fold"], dataset_json, device=torch.device("cpu"))
    trainer.num_iterations_per_epoch = int(spec["iterations"])
    trainer.num_val_iterations_per_epoch = 2
    trainer.run_training()
    print(trainer.output_folder_base)


if __name__ == "__main__":
    main(sys.argv[1])
