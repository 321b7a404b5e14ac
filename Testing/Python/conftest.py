"""Shared fixtures: seeded generators, the real-data folder (skips cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config) -> None:
    """Stop at once, with the cause, if ``import MaskMedCore`` does not reach the real package.

    Plain ``pytest`` puts this folder (``Testing/Python``) first on ``sys.path`` (rootdir-based
    "prepend" import mode). A test folder named like a package (it used to be ``MaskMedCore/``, with
    no ``__init__.py``) then becomes a namespace package that shadows the editable install, whose
    finder runs after the path finder, and every test fails at collection with a misleading
    ImportError. Test folders are therefore named ``core_tests/``, ``slicer_tests/``,
    ``benchmark_tests/``; this check keeps a future rename from bringing the problem back.
    """
    import MaskMedCore

    found = getattr(MaskMedCore, "__file__", None)
    expected = REPO_ROOT / "MaskMedCore" / "__init__.py"
    if found is None or Path(found).resolve() != expected:
        where = list(getattr(MaskMedCore, "__path__", [])) if found is None else found
        raise pytest.UsageError(
            f"'import MaskMedCore' found {where}, expected the package at {expected}. A folder on sys.path "
            "named 'MaskMedCore' without __init__.py shadows it: rename that folder, and install the project "
            'with pip install -e ".[test]"'
        )


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


# ---------------------------------------------------------------- pipeline fixtures (small, CPU)
from pipeline_helpers import PHANTOM_PATCH, PHANTOM_SHAPE, quick_training_config  # noqa: E402


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory) -> Path:
    """A 4-case nnU-Net phantom dataset made by the project's own generator."""
    from MaskMedCore.data.phantom import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "ds", 4, seed=0, shape=PHANTOM_SHAPE)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, phantom_dataset) -> Path:
    """A run folder trained for a few iterations (weights are barely trained: for plumbing tests)."""
    from MaskMedCore.engine.trainer import train

    root = tmp_path_factory.mktemp("quick_run")
    train(
        phantom_dataset,
        root / "run",
        quick_training_config(),
        preprocessed_dir=root / "prep",
        patch_size=PHANTOM_PATCH,
        progress="none",
    )
    return root / "run"
