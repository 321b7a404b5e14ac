"""Which Python packages MaskMed needs are missing, checked without importing any of them."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

#: Import names (equal to their pip names). torch comes from Slicer's PyTorch extension, never a bare pip install.
REQUIRED_PACKAGES = ("torch", "numpy", "scipy", "SimpleITK")


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
