"""The Slicer module file, checked without Slicer: it compiles, has Slicer's class layout and metadata,
keeps heavy imports and dialogs where they belong, never blocks the GUI on the network, and uses
Slicer's camelCase. The icons are 128x128 PNGs.

``MaskMedSlicer.py`` imports ``qt``, ``ctk`` and the Slicer application, so it cannot be imported
here; it is parsed with ``ast`` instead. Its behaviour inside Slicer is covered by its own
``MaskMedSlicerTest`` (registered with CTest by ``slicer_add_python_unittest``).
"""

from __future__ import annotations

import ast
import py_compile
import re
from pathlib import Path

import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[3]
MODULE_FILE = REPO / "MaskMedSlicer" / "MaskMedSlicer.py"
ICONS = (REPO / "Resources" / "MaskMed.png", REPO / "MaskMedSlicer" / "Resources" / "Icons" / "MaskMedSlicer.png")
PAPER_TITLE = "MaskMed: Decoupled Mask and Class Prediction for Medical Image Segmentation"

# Imports allowed at file scope (ExtensionsIndex review: nothing else, and nothing heavy, at import time).
TOP_LEVEL_IMPORTS = {"logging", "os", "sys", "tempfile", "typing", "ctk", "qt", "slicer", "vtk"}
TOP_LEVEL_IMPORTS |= {"slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.util"}

CAMEL = re.compile(r"^_{0,2}[a-z][a-zA-Z0-9]*$")
CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*$")
SLICER_TEST_METHOD = re.compile(r"^test_[A-Za-z0-9]+$")  # Slicer's self-test naming: test_<Module><N>


def _tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), filename=str(MODULE_FILE))


def _classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in _tree().body if isinstance(n, ast.ClassDef)}


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _base_names(cls: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in cls.bases]


def _string_constants(node: ast.AST) -> str:
    return " ".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def test_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "MaskMedSlicer.pyc"), doraise=True)


def test_slicer_classes_and_bases():
    classes = _classes()
    expected = {
        "MaskMedSlicer": ["ScriptedLoadableModule"],
        "MaskMedSlicerWidget": ["ScriptedLoadableModuleWidget", "VTKObservationMixin"],
        "MaskMedSlicerLogic": ["ScriptedLoadableModuleLogic"],
        "MaskMedSlicerTest": ["ScriptedLoadableModuleTest"],
    }
    for name, bases in expected.items():
        assert name in classes, f"{MODULE_FILE.name} does not define {name}"
        assert _base_names(classes[name]) == bases, name
    decorators = [ast.unparse(d) for d in classes["MaskMedSlicerParameterNode"].decorator_list]
    assert decorators == ["parameterNodeWrapper"]


@pytest.mark.parametrize(
    ("cls", "methods"),
    [
        ("MaskMedSlicer", {"__init__"}),
        (
            "MaskMedSlicerWidget",
            {
                "setup",
                "cleanup",
                "enter",
                "exit",
                "onReload",
                "onSceneStartClose",
                "onSceneEndClose",
                "initializeParameterNode",
                "setParameterNode",
                "onApplyButton",
                "onPollTimer",
                "onQuerySelected",
                "onDatasetPathChanged",
                "onTrainButton",
                "ensureDependencies",
            },
        ),
        (
            "MaskMedSlicerLogic",
            {
                "getParameterNode",
                "segment",
                "queries",
                "showQuery",
                "startSegmentation",
                "finishSegmentation",
                "cancelSegmentation",
                "installDependencies",
                "startTraining",
                "startDatasetValidation",
                "loadDemoPhantom",
            },
        ),
        ("MaskMedSlicerTest", {"setUp", "runTest"}),
    ],
)
def test_expected_methods(cls, methods):
    missing = methods - set(_methods(_classes()[cls]))
    assert not missing, f"{cls} lacks {sorted(missing)}"


def test_self_test_runs_its_test_methods():
    test = _classes()["MaskMedSlicerTest"]
    tests = {name for name in _methods(test) if name.startswith("test_")}
    assert "test_MaskMedSlicerSegmentPhantom" in tests
    called = {
        n.func.attr
        for n in ast.walk(_methods(test)["runTest"])
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    assert tests <= called, f"runTest does not call {sorted(tests - called)}"
    body = _string_constants(test) + ast.unparse(test)
    for needed in ("loadDemoPhantom", "logic.segment(", "arrayFromSegmentBinaryLabelmap", "class_probability_table"):
        assert needed in body, f"the self-test does not use {needed}"


def _module_assignments() -> dict[str, ast.AST]:
    init = _methods(_classes()["MaskMedSlicer"])["__init__"]
    out = {}
    for node in ast.walk(init):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                text = ast.unparse(target)
                if text.startswith("self.parent."):
                    out[text.removeprefix("self.parent.")] = node.value
    return out


def test_module_metadata():
    values = _module_assignments()
    for key in ("title", "categories", "dependencies", "contributors", "helpText", "acknowledgementText"):
        assert key in values, f"MaskMedSlicer.__init__ does not set self.parent.{key}"
    assert "Segmentation" in ast.unparse(values["categories"])
    assert _string_constants(values["title"]).strip()
    assert _string_constants(values["contributors"]).strip()
    source = MODULE_FILE.read_text(encoding="utf-8")
    help_text = ast.unparse(values["helpText"])
    assert "README_URL" in help_text and "PAPER_URL" in help_text
    assert re.search(r'PAPER_URL = "https://arxiv\.org/abs/2511\.15603"', source)
    assert re.search(r'README_URL = "https://github\.com/[^"]+"', source)
    acknowledgement = ast.unparse(values["acknowledgementText"])
    assert "PAPER_CITATION" in acknowledgement
    citation = _string_constants(
        next(n for n in _tree().body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "PAPER_CITATION")
    )
    for needed in ("Xie", "Agam", PAPER_TITLE, "2025", "2511.15603"):
        assert needed in citation, needed


def test_only_light_imports_at_file_scope():
    heavy = []
    for node in _tree().body:
        if isinstance(node, ast.Import):
            heavy += [a.name for a in node.names if a.name not in TOP_LEVEL_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            if node.module not in TOP_LEVEL_IMPORTS:
                heavy.append(node.module)
    assert not heavy, f"imported at module load (import them where used): {heavy}"
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(import torch|from torch)", source, re.M), (
        "torch must never be imported in Slicer's process here"
    )


def test_torch_comes_from_the_pytorch_extension_with_consent():
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert not re.search(r"pip_install\([^)]*torch", source), "never pip_install torch: use PyTorchUtils"
    assert "PyTorchUtils.PyTorchUtilsLogic()" in source and "installTorch(" in source
    assert "torchInstalled()" in source
    install = _methods(_classes()["MaskMedSlicerLogic"])["installTorch"]
    calls = [ast.unparse(n) for n in ast.walk(install) if isinstance(n, ast.Call)]
    assert any(c.startswith("confirm(") for c in calls), "torch is installed without asking"
    assert "confirmOkCancelDisplay" in ast.unparse(_classes()["MaskMedSlicerWidget"])


def test_logic_opens_no_dialogs():
    logic = ast.unparse(_classes()["MaskMedSlicerLogic"])
    for dialog in ("confirmOkCancelDisplay", "errorDisplay", "infoDisplay", "QMessageBox", "QFileDialog"):
        assert dialog not in logic, f"MaskMedSlicerLogic uses {dialog}; dialogs belong in the widget"


def test_widget_never_waits_for_the_network():
    """The widget starts work and polls it with a QTimer; it never calls the blocking segment or wait-forever calls."""
    widget = _classes()["MaskMedSlicerWidget"]
    calls = [n for n in ast.walk(widget) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    names = {n.func.attr for n in calls}
    assert "segment" not in names, "the widget calls the blocking segment(); use startSegmentation + polling"
    assert "startSegmentation" in names and "finishSegmentation" in names and "startTraining" in names
    source = ast.unparse(widget)
    assert "qt.QTimer()" in source and re.search(r"connect\(['\"]timeout\(\)['\"]", source)
    for call in calls:
        if call.func.attr == "wait":  # only allowed on a process that already ended (no timeout needed)
            assert not call.args and not call.keywords, ast.unparse(call)
    for name, method in _methods(widget).items():
        text = ast.unparse(method)
        if ".wait()" in text:  # a process is only waited for once it is known to have ended
            assert ".running" in text and text.index(".running") < text.index(".wait()"), name


def _defined_names(tree: ast.AST):
    """(kind, name) of every name this file defines: functions, arguments, assigned locals and attributes."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield "function", node.name
            for arg in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                yield "argument", arg.arg
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            yield "variable", node.id
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and ast.unparse(node.value) == "self":
            yield "attribute", node.attr


def test_camel_case_only():
    tree = _tree()
    module_constants = {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    bad = []
    for kind, name in _defined_names(tree):
        if name in ("self", "_") or name in module_constants and CONSTANT.match(name):
            continue
        if kind == "function" and (SLICER_TEST_METHOD.match(name) or name.startswith("__")):
            continue
        if not CAMEL.match(name):
            bad.append(f"{kind} {name}")
    assert not bad, f"snake_case names in {MODULE_FILE.name} (Slicer's camelCase there): {sorted(set(bad))}"


@pytest.mark.parametrize("path", ICONS, ids=lambda p: p.name)
def test_icons_are_128_pixel_pngs(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (128, 128)
    assert image.GetNumberOfComponentsPerPixel() in (3, 4)
    pixels = sitk.GetArrayFromImage(image).reshape(-1, image.GetNumberOfComponentsPerPixel())
    assert len({tuple(p) for p in pixels[:, :3]}) > 50, "the icon is (nearly) blank"


def test_validation_warnings_of_a_valid_dataset_are_listed():
    """describeValidation is pure: run its source (the module itself needs Slicer's Qt) on CLI-shaped lines."""
    method = _methods(_classes()["MaskMedSlicerLogic"])["describeValidation"]
    method.decorator_list = []
    namespace = {"_": lambda text: text}
    exec(compile(ast.Module(body=[method], type_ignores=[]), "MaskMedSlicer.py", "exec"), namespace)
    describe = namespace["describeValidation"]
    warning = "warning: cases are stored in different orientations: 2 LPS (a, b); 1 RAS (c). ..."
    status, listed = describe(0, [warning, "dataset X is valid: 3 case(s)"], "")
    assert status == "dataset X is valid: 3 case(s)" and listed == [warning]
    status, listed = describe(1, ["case a: bad; fix: this", "1 problem(s) in 1 of 3 case(s)"], "")
    assert listed == ["case a: bad; fix: this"] and status.startswith("1 problem(s)")
