"""Builders of real ``MaskMedOutput`` objects and label maps for the loss tests (plain tensors, no mocks)."""

from __future__ import annotations

import pytest
import torch

from MaskMedCore.models.outputs import MaskMedOutput

STAGE_SIZES = [(4, 4, 4), (8, 8, 8), (16, 16, 16)]
"""Three decoder stages, coarsest first; the last is the input resolution."""


def make_output(class_logits: list[torch.Tensor], mask_logits: list[torch.Tensor], decoupled: bool) -> MaskMedOutput:
    """A network output from per-stage tensors (coarsest first)."""
    B, Q = class_logits[-1].shape[:2]
    return MaskMedOutput(
        class_logits=class_logits[-1],
        mask_logits=mask_logits,
        stage_class_logits=class_logits,
        class_embeddings=torch.zeros(B, Q, 4),
        mask_embeddings=torch.zeros(B, Q, 4),
        decoupled=decoupled,
    )


def random_output(B: int, Q: int, K: int, sizes=STAGE_SIZES, decoupled: bool = True, seed: int = 0) -> MaskMedOutput:
    """Random logits with gradients enabled (leaf tensors)."""
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(B, Q, K + 1, generator=g) for _ in sizes]
    if not decoupled:
        for c in cls:
            c[..., K] = 0.0
    masks = [torch.randn(B, Q, *s, generator=g) for s in sizes]
    return make_output([c.requires_grad_() for c in cls], [m.requires_grad_() for m in masks], decoupled)


def blob_labels(B: int, K: int, size=(16, 16, 16), seed: int = 0) -> torch.Tensor:
    """Label maps made of axis-aligned boxes of classes 1..K-1 on background 0 (every class present)."""
    g = torch.Generator().manual_seed(seed)
    D, H, W = size
    labels = torch.zeros(B, D, H, W, dtype=torch.long)
    for b in range(B):
        for k in range(1, K):
            d, h, w = (int(torch.randint(0, n - n // 2, (1,), generator=g)) for n in size)
            labels[b, d : d + D // 2, h : h + H // 2, w : w + W // 2] = k
    return labels


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# Helpers are served as fixtures: test modules cannot import a conftest by name reliably.
@pytest.fixture(name="make_output")
def _make_output_fixture():
    return make_output


@pytest.fixture(name="random_output")
def _random_output_fixture():
    return random_output


@pytest.fixture(name="blob_labels")
def _blob_labels_fixture():
    return blob_labels
