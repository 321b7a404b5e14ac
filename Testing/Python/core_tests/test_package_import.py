"""The tests import the package from this checkout, never a namespace package made of test folders."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_maskmedcore_is_the_regular_package_of_this_checkout():
    import MaskMedCore

    assert MaskMedCore.__file__ is not None, f"namespace package from {list(MaskMedCore.__path__)}"
    assert Path(MaskMedCore.__file__).resolve() == REPO / "MaskMedCore" / "__init__.py"


def test_no_test_folder_is_named_like_an_importable_package():
    """A test folder on sys.path named like a package hides it under plain ``pytest`` (issue 10)."""
    shadowing = {"MaskMedCore", "MaskMedSlicer", "MaskMedSlicerLib", "slicer", "torch", "monai", "vtk"}
    test_root = REPO / "Testing" / "Python"
    clashes = [p for p in test_root.rglob("*") if p.is_dir() and p.name in shadowing]
    assert not clashes, f"rename these test folders: {clashes}"
