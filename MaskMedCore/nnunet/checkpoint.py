"""Load an nnU-Net v2 checkpoint (``fold_X/checkpoint_*.pth``) without running any code from it.

nnU-Net saves a pickled dict (``nnUNetTrainer.save_checkpoint``): ``network_weights``,
``optimizer_state``, ``grad_scaler_state``, ``logging`` (lists of NumPy float32 scalars),
``_best_ema`` (a NumPy scalar), ``current_epoch``, ``init_args`` (plans and dataset.json dicts, fold,
configuration name, and in older versions the ``torch.device``), ``trainer_name`` and
``inference_allowed_mirroring_axes``. nnU-Net itself reads it with ``weights_only=False``; here it is
read with ``torch.load(weights_only=True)`` plus exactly the globals those fields need
(:data:`ALLOWED_GLOBALS`: NumPy's scalar reconstructor and dtypes, ``torch.device``). Anything else
in the file -- a class, a function, ``os.system`` -- stops the load before it is called, and the
error names the global that was refused.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from MaskMedCore.nnunet.result_folder import NnUNetModelError


def _numpy_globals() -> list:
    """NumPy's scalar reconstructor (under numpy._core in NumPy 2, numpy.core in 1) and dtype classes."""
    found = [np.dtype]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            found.append(__import__(module, fromlist=["scalar"]).scalar)
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25: one class per dtype (Float32DType, ...)
    if dtypes is not None:
        found += [
            getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and isinstance(getattr(dtypes, n), type)
        ]
    return found


ALLOWED_GLOBALS = (*_numpy_globals(), torch.device)
"""What an nnU-Net checkpoint may reference besides tensors and plain containers."""


@dataclass(frozen=True)
class NnUNetCheckpoint:
    """The parts of an nnU-Net checkpoint MaskMed uses.

    Attributes:
        path: the file.
        network_weights: PlainConvUNet or ResidualEncoderUNet state dict (nnU-Net's names).
        trainer_name: the trainer class that wrote it.
        mirror_axes: ``inference_allowed_mirroring_axes`` (spatial axes, nnU-Net's transposed order), or
            None when the trainer trained without mirroring.
        epoch: ``current_epoch``.
    """

    path: Path
    network_weights: dict[str, torch.Tensor]
    trainer_name: str
    mirror_axes: tuple[int, ...] | None
    epoch: int


def load_nnunet_checkpoint(path: str | Path) -> NnUNetCheckpoint:
    """Read an nnU-Net checkpoint on the CPU, safely.

    Raises:
        NnUNetModelError: the file is missing, not a PyTorch archive, holds a global outside
            :data:`ALLOWED_GLOBALS` (named in the message), or lacks ``network_weights``.
    """
    path = Path(path)
    if not path.is_file():
        raise NnUNetModelError(f"nnU-Net checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise NnUNetModelError(
            f"cannot read nnU-Net checkpoint {path}: not a PyTorch zip archive (truncated or corrupt)"
        )
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # torch words it "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is blocked".
        match = re.search(r"GLOBAL ([\w.]+)", text)
        what = match.group(1) if match else "an object that is not plain data"
        raise NnUNetModelError(
            f"refused to load nnU-Net checkpoint {path}: it references '{what}', which is not among the types an "
            "nnU-Net checkpoint holds (tensors, NumPy scalars, torch.device); loading it could run code. "
            "Re-export the model from a trusted nnU-Net installation"
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        raise NnUNetModelError(
            f"cannot read nnU-Net checkpoint {path}: truncated or corrupt ({str(exc).splitlines()[0][:200]})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("network_weights"), dict):
        raise NnUNetModelError(f"{path} is not an nnU-Net v2 checkpoint (no 'network_weights' dict)")
    weights = data["network_weights"]
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise NnUNetModelError(f"{path}: network_weights entry '{bad[0]}' is not a tensor")
    axes = data.get("inference_allowed_mirroring_axes")
    return NnUNetCheckpoint(
        path=path,
        network_weights={k.removeprefix("_orig_mod."): v for k, v in weights.items()},  # torch.compile'd trainers
        trainer_name=str(data.get("trainer_name", "unknown")),
        mirror_axes=None if axes is None else tuple(int(a) for a in axes),
        epoch=int(data.get("current_epoch", 0) or 0),
    )
