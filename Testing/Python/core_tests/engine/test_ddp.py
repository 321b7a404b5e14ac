"""Multi-process training (DDP, gloo on CPU, 2 ranks via torchrun): parameters stay identical across ranks."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from MaskMedCore.engine.checkpoint import load_checkpoint
from MaskMedCore.engine.trainer import parameter_digest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(phantom_dataset, run, prep, out, *extra):
    worker = Path(__file__).with_name("ddp_worker.py")
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(worker),
        str(phantom_dataset),
        str(run),
        str(prep),
        str(out),
        *extra,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_two_rank_ddp_keeps_parameters_identical(tmp_path, phantom_dataset):
    run, prep, out = tmp_path / "run", tmp_path / "prep", tmp_path / "out"
    ranks = _torchrun(phantom_dataset, run, prep, out)
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 6
    assert ranks[0]["digest"] == ranks[1]["digest"], "DDP ranks diverged"
    # Only rank 0 wrote the run, and its checkpoint holds the same parameters.
    ckpt = load_checkpoint(run / "checkpoint_latest.pt")
    assert parameter_digest(ckpt.build_model()) == ranks[0]["digest"]
    assert not list(run.glob("*.tmp"))


@pytest.mark.slow
def test_two_rank_ddp_unfreezes_the_loaded_unet_on_every_rank(tmp_path, phantom_dataset, quick_run):
    """--init-from with --freeze-backbone-iterations under DDP: the wrapper is rebuilt when the UNet unfreezes,
    so its gradients are then averaged like the rest (the ranks' parameters stay identical) and it trains."""
    run, prep, out = tmp_path / "run", tmp_path / "prep", tmp_path / "out"
    extra = json.dumps({"init_from": str(quick_run), "freeze_backbone_iterations": 2})
    ranks = _torchrun(phantom_dataset, run, prep, out, extra)
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 6
    assert ranks[0]["digest"] == ranks[1]["digest"], "DDP ranks diverged after unfreezing"
    source = load_checkpoint(quick_run / "checkpoint_latest.pt").model_state
    final = load_checkpoint(run / "checkpoint_latest.pt").model_state
    unet = [k for k in source if k.startswith(("encoder.", "decoder."))]
    assert unet and all(not torch.equal(final[k], source[k]) for k in unet)
