"""Run by torchrun in test_ddp.py: trains on phantoms and records this rank's final parameter digest.

Arguments: dataset, run folder, preprocessed folder, output folder, and optionally a JSON object of
TrainingConfig fields to change (e.g. ``init_from`` and ``freeze_backbone_iterations``)."""

import json
import os
import sys
from pathlib import Path

from MaskMedCore.config import TrainingConfig
from MaskMedCore.engine.trainer import train


def main() -> None:
    dataset, run, prep, out = (Path(a) for a in sys.argv[1:5])
    config = TrainingConfig(
        preset="tiny",
        epochs=2,
        iterations_per_epoch=3,
        val_iterations=2,
        val_every=1,
        device="cpu",
        num_workers=0,
        initial_lr=1e-2,
    )
    if len(sys.argv) > 5:
        config = config.replace(**json.loads(sys.argv[5]))
    result = train(dataset, run, config, preprocessed_dir=prep, patch_size=(16, 32, 32), progress="none")
    rank = os.environ["RANK"]
    (out / f"rank{rank}.json").write_text(
        json.dumps({"digest": result.parameter_digest, "iterations": result.iterations_done, "rank": rank})
    )


# Guarded: the data layer starts worker processes with "spawn", which re-imports this file.
if __name__ == "__main__":
    main()
