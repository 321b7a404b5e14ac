"""One training iteration and the patch pipeline that feeds it (nnU-Net v2's ``train_step`` and data
loader), shared by the training loop and the time estimate made before it (``time_estimate.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from MaskMedCore.config.training_config import TrainingConfig


def make_patch_pipeline(train_cases, plan, config: TrainingConfig, batch_size: int, case_targets=None):
    """The patch sampler (enlarged crops, foreground oversampling) and the device-side augmenter.

    ``case_targets``: optional (N_cases, T) int64 case-level labels, one row per training case (-1 = unknown).

    Returns:
        (sampler, augmenter): a ``PatchSampler``, and an ``Augmenter`` or None when augmentation is off
        (the sampler then delivers final-size patches).
    """
    from MaskMedCore.config.augmentation_config import AugmentationConfig, needs_dummy_2d
    from MaskMedCore.data.augmentation import Augmenter
    from MaskMedCore.data.sampling import PatchSampler, augmentation_sample_size

    patch = plan.patch_size
    # A 2D plan's patches are single slices: never mirror along D (a no-op on one slice, nnU-Net's 2d
    # configuration has only the in-plane axes), always augment in-plane (dummy 2D).
    mirror_axes = tuple(a for a in config.mirror_axes if a in plan.mirror_axes)
    aug_cfg = AugmentationConfig(
        dummy_2d=plan.spatial_dims == 2 or needs_dummy_2d(patch), enabled=config.augment, mirror_axes=mirror_axes
    )
    # nnU-Net's per-axis enlargement: far cheaper crops than covering composed rotations.
    sample_size = augmentation_sample_size(aug_cfg, patch, composed_rotations=False)
    sampler = PatchSampler(train_cases, patch, sample_size, batch_size, config.oversample_foreground, case_targets)
    augmenter = Augmenter(aug_cfg, patch) if config.augment else None
    return sampler, augmenter


def train_step(
    net,
    criterion,
    optimizer,
    scaler,
    augmenter,
    batches: Iterator,
    device,
    use_amp,
    amp_dtype,
    grad_clip,
    gen,
    memory_format=torch.contiguous_format,
) -> tuple[float, dict[str, float]]:
    """Augment one batch on ``device``, forward, loss, backward (scaled under fp16 AMP), clip, step.

    ``batches`` yields ``images: (B, C, D', H', W')`` float32 and ``labels: (B, D', H', W')`` int64
    (enlarged crops when ``augmenter`` is given), and for a model with case-level tasks a third tensor
    ``case_targets: (B, T)`` int64 (-1 = unknown). Returns the total loss and the loss terms.
    """
    images, labels, *rest = next(batches)
    extra = {"case_targets": rest[0].to(device, non_blocking=True)} if rest else {}
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if augmenter is not None:  # without augmentation the sampler already delivers final-size patches
        images, labels = augmenter(images, labels, generator=gen)
    if getattr(net, "module", net).spatial_dims == 2:
        # 2d configuration: the (B, C, 1, H, W) slice patches enter the 2D network and its 2D losses as
        # (B, C, H, W) images with (B, H, W) labels.
        images, labels = images[:, :, 0], labels[:, 0]
    images = images.contiguous(memory_format=memory_format)
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext()
    with autocast:
        out = net(images)
    result = criterion(out, labels.long(), generator=gen, **extra)
    if scaler.is_enabled():
        scaler.scale(result.total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        result.total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
    return result.terms["total"], result.terms
