"""Parameter counts per part and an optional forward/backward timing of one training step."""

from __future__ import annotations

import time
from typing import Any

import torch

from MaskMedCore.config.model_config import ModelConfig


def count_parameters(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def describe_model(
    cfg: ModelConfig, patch: tuple[int, ...] | None = None, batch: int = 2, device: str = "cpu", repeats: int = 3
) -> dict[str, Any]:
    """Config summary, parameters per part and (with ``patch``) median forward+backward seconds.

    The timed step is forward + the real MaskMed loss + backward on random input and a random
    label map, so the matcher and criterion are included. ``patch`` is (D, H, W), or (H, W) for a 2D
    network (``cfg.spatial_dims``).
    """
    from MaskMedCore.losses import build_criterion
    from MaskMedCore.models.build import build_model

    model = build_model(cfg)
    report: dict[str, Any] = {
        "head": cfg.head,
        "queries": cfg.queries,
        "masked_attention": cfg.masked_attention,
        "bridge": cfg.bridge,
        "spatial_dims": cfg.spatial_dims,
        "features_per_stage": list(cfg.features_per_stage),
        "strides": [list(s) for s in cfg.strides],
        "parameters": {
            "total": count_parameters(model),
            "encoder": count_parameters(model.encoder),
            "bridge": count_parameters(model.bridge),
            "decoder": count_parameters(model.decoder),
            "head": count_parameters(model.head),
        },
    }
    if patch is None:
        return report
    cfg.check_input_shape(patch)
    dev = torch.device(device)
    model.to(dev).train()
    criterion = build_criterion(cfg)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn((batch, cfg.in_channels, *patch), generator=gen).to(dev)
    labels = torch.randint(0, cfg.num_classes, (batch, *patch), generator=gen).to(dev)
    times = []
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss = criterion(model(x), labels).total
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    report["step"] = {
        "patch": list(patch),
        "batch": batch,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "forward_backward_seconds_median": sorted(times[1:])[len(times[1:]) // 2],
    }
    return report
