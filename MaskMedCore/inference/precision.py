"""Arithmetic precision of the network's forward passes at inference: ``auto``, ``fp32`` or ``bf16``.

- ``auto``: mixed precision on CUDA (bfloat16 for MaskMed networks; float16 for nnU-Net models, as
  nnU-Net's predictor runs them), float32 on the CPU.
- ``fp32``: float32 everywhere.
- ``bf16``: ``torch.autocast`` with bfloat16 on the CPU too. Only on CPUs with native bfloat16
  arithmetic (AVX512-BF16 or AMX, which oneDNN's bf16 convolutions use); elsewhere PyTorch would emulate
  it, slower than float32, so it is refused. On 2 cores of an AVX512-BF16 EPYC the paper network's
  forward pass took about half the float32 time; its Dice cost is measured in BENCHMARKS.md
  (*Fast setting*), and the deformable sampling and the class probabilities stay float32 either way.

The blending accumulators are float32 whatever the precision (``sliding_window``).
"""

from __future__ import annotations

import contextlib

import torch

from MaskMedCore.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device``; returns it.

    Raises:
        ConfigError: an unknown value, or ``bf16`` on a CPU without native bfloat16.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision is {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError(
            "precision bf16 on this CPU: it has no native bfloat16 arithmetic (AVX512-BF16 or AMX), so bf16 "
            "would be slower than float32; use --precision fp32 (the CPU default)"
        )
    return precision


def forward_autocast(device: torch.device, precision: str, cuda_auto_dtype: torch.dtype):
    """The autocast context for a forward pass on ``device`` (a no-op context for float32).

    Args:
        device: where the tiles are (after a CUDA out-of-memory fallback, the CPU).
        precision: one of ``PRECISIONS``.
        cuda_auto_dtype: the reduced dtype ``auto`` uses on CUDA.
    """
    if precision == "bf16" and (device.type != "cpu" or cpu_has_native_bf16()):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "auto" and device.type == "cuda":
        return torch.autocast("cuda", dtype=cuda_auto_dtype)
    return contextlib.nullcontext()


__all__ = ["PRECISIONS", "check_precision", "cpu_has_native_bf16", "forward_autocast"]
