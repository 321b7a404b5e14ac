"""Shared fixtures: seeded generators, the real-data folder (skips cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or $MASKMED_SHARED_DATA."""
    env = os.environ.get("MASKMED_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path} (set MASKMED_SHARED_DATA to its folder)")
    return path
