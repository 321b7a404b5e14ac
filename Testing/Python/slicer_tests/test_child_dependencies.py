"""What the Slicer module's children need: every third-party import of MaskMedCore is either checked by
the module (``REQUIRED_PACKAGES``) or optional (``OPTIONAL_PACKAGES``) and then never imported at a
module's top level, so a package Slicer lacks (tqdm, matplotlib) cannot break a child at import time.
``core_tests/test_child_processes.py`` runs the real children without tqdm."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import slicer_test_helpers  # noqa: E402, F401  (puts MaskMedSlicer on sys.path)
from MaskMedSlicerLib.dependencies import OPTIONAL_PACKAGES, REQUIRED_PACKAGES, missing_packages  # noqa: E402

CORE = Path(__file__).resolve().parents[3] / "MaskMedCore"


def _imports(tree: ast.AST):
    """(top-level package name, the import node) for each absolute import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name.split(".")[0], node


def _module_level(tree: ast.Module) -> set[int]:
    """ids of the import nodes that run when the module is imported (not inside a function)."""
    found: set[int] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.add(id(node))
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])
            elif isinstance(node, ast.ExceptHandler):
                visit(node.body)

    visit(tree.body)
    return found


def test_required_and_optional_packages_cover_maskmedcore_imports():
    third_party: dict[str, list[str]] = {}
    top_level_optional = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        at_import = _module_level(tree)
        for name, node in _imports(tree):
            if name in sys.stdlib_module_names or name in ("__future__", "MaskMedCore"):
                continue
            third_party.setdefault(name, []).append(path.relative_to(CORE.parent).as_posix())
            if name in OPTIONAL_PACKAGES and id(node) in at_import:
                top_level_optional.append(f"{path.relative_to(CORE.parent)}:{node.lineno} imports {name}")
    unknown = {n: files for n, files in third_party.items() if n not in REQUIRED_PACKAGES + OPTIONAL_PACKAGES}
    assert not unknown, f"add these to REQUIRED_PACKAGES or OPTIONAL_PACKAGES (dependencies.py): {unknown}"
    assert not top_level_optional, top_level_optional
    assert {"tqdm", "matplotlib"} <= set(third_party)  # the scan sees the lazy imports it must allow
    assert not set(REQUIRED_PACKAGES) & set(OPTIONAL_PACKAGES)


def test_missing_packages_checks_only_what_the_children_need():
    assert missing_packages() == []  # this test environment has them all
    assert "tqdm" not in REQUIRED_PACKAGES and "matplotlib" not in REQUIRED_PACKAGES
