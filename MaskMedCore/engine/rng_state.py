"""Capture and restore every random generator a training run uses, as checkpoint-safe plain data
(tensors and ints only, so ``torch.load(weights_only=True)`` accepts them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def capture_rng(torch_generator: torch.Generator, numpy_generator: np.random.Generator) -> dict[str, Any]:
    state = numpy_generator.bit_generator.state
    return {
        "torch_generator": torch_generator.get_state(),
        "torch_global": torch.get_rng_state(),
        "numpy_bit_generator": state["bit_generator"],
        # PCG64's 128-bit state and increment, as decimal strings (plain data of any size).
        "numpy_state": str(state["state"]["state"]),
        "numpy_inc": str(state["state"]["inc"]),
        "numpy_has_uint32": int(state["has_uint32"]),
        "numpy_uinteger": int(state["uinteger"]),
    }


def restore_rng(saved: dict[str, Any], torch_generator: torch.Generator, numpy_generator: np.random.Generator) -> None:
    torch_generator.set_state(saved["torch_generator"])
    torch.set_rng_state(saved["torch_global"])
    numpy_generator.bit_generator.state = {
        "bit_generator": saved["numpy_bit_generator"],
        "state": {"state": int(saved["numpy_state"]), "inc": int(saved["numpy_inc"])},
        "has_uint32": int(saved["numpy_has_uint32"]),
        "uinteger": int(saved["numpy_uinteger"]),
    }
