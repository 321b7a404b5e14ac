"""Which Python packages MaskMed needs are missing, checked without importing any of them."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

#: What the module and its children (``python -m MaskMedCore predict|train|validate-dataset`` run by
#: ``PythonSlicer``) import: import names, equal to their pip names. torch comes from Slicer's PyTorch
#: extension, never a bare pip install. Every other third-party import of MaskMedCore is optional
#: (:data:`OPTIONAL_PACKAGES`); a test checks both lists against MaskMedCore's imports.
REQUIRED_PACKAGES = ("torch", "numpy", "scipy", "SimpleITK")

#: Packages MaskMedCore uses only where they are installed, and which the module therefore never checks
#: or installs: ``tqdm`` (terminal progress bars; the children print JSON progress, and without tqdm a
#: terminal gets plain text lines), ``matplotlib`` (the CLI demo's figures; Slicer shows results in its
#: own views) and ``vtkmodules`` (3D renders of the CLI; Slicer ships VTK).
OPTIONAL_PACKAGES = ("tqdm", "matplotlib", "vtkmodules")


def missing_packages(required: Sequence[str] = REQUIRED_PACKAGES) -> list[str]:
    """Import names in ``required`` that the current interpreter cannot find (``importlib.util.find_spec``)."""
    missing = []
    for name in required:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-installed package
            found = False
        if not found:
            missing.append(name)
    return missing
