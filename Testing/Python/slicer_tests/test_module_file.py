"""The Slicer module file, checked without Slicer: it compiles, has Slicer's class layout and metadata,
keeps heavy imports and dialogs where they belong, never blocks the GUI on the network, and uses
Slicer's camelCase. The icons are 128x128 PNGs.

``MaskMedSlicer.py`` imports ``qt``, ``ctk`` and the Slicer application, so it cannot be imported
here; it is parsed with ``ast`` instead, and small pure parts (the Python version check, the self-test's
switch) are compiled from its source and run. Its behaviour inside Slicer is covered by its own
``MaskMedSlicerTest`` (registered with CTest by ``slicer_add_python_unittest``).
"""

from __future__ import annotations

import ast
import logging
import os
import py_compile
import re
import sys
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
                "clearInspection",
                "cleanup",
                "installDependencies",
                "loadDemoPhantom",
            },
        ),
        ("MaskMedSlicerTest", {"setUp", "runTest", "heavyTestsEnabled"}),
    ],
)
def test_expected_methods(cls, methods):
    missing = methods - set(_methods(_classes()[cls]))
    assert not missing, f"{cls} lacks {sorted(missing)}"


def test_self_test_runs_its_test_methods():
    test = _classes()["MaskMedSlicerTest"]
    tests = {name for name in _methods(test) if name.startswith("test_")}
    assert {"test_MaskMedSlicerModuleLoads", "test_MaskMedSlicerLibrary", "test_MaskMedSlicerSegment"} <= tests
    called = {
        n.func.attr
        for n in ast.walk(_methods(test)["runTest"])
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    assert tests <= called, f"runTest does not call {sorted(tests - called)}"
    body = ast.unparse(test)
    for needed in ("check_library_on_scene", "check_segmentation", "loadDemoPhantom", "logic.segment("):
        assert needed in body, f"the self-test does not use {needed}"


class _RecordingTest:
    """Stands in for Slicer's test harness around ``MaskMedSlicerTest.runTest`` (run from the module's source):
    records which test methods run."""

    def __init__(self, heavy_enabled) -> None:
        self.calls = []
        self.heavyTestsEnabled = heavy_enabled

    def __getattr__(self, name):
        if name == "setUp" or name.startswith("test_"):
            return lambda: self.calls.append(name)
        raise AttributeError(name)


def _self_test_functions() -> dict:
    """``runTest`` and ``heavyTestsEnabled`` of MaskMedSlicerTest, compiled from the module file."""
    methods = _methods(_classes()["MaskMedSlicerTest"])
    constants = [
        n for n in _tree().body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "HEAVY_SELF_TEST_VARIABLE"
    ]
    functions = []
    for name in ("runTest", "heavyTestsEnabled"):
        function = methods[name]
        function.decorator_list = []
        functions.append(function)
    namespace = {"os": os, "logging": logging}
    exec(compile(ast.Module(body=[*constants, *functions], type_ignores=[]), str(MODULE_FILE), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("value", [None, "", "0", "1"])
def test_self_test_segments_and_downloads_only_when_enabled(monkeypatch, value):
    """Issue 15, defect 5: by default the self-test needs no PyTorch and downloads nothing (TotalSegmentator and
    MONAIAuto3DSeg keep their logic tests off the same way); MASKMED_SELF_TEST_SEGMENT=1 enables the rest."""
    namespace = _self_test_functions()
    variable = namespace["HEAVY_SELF_TEST_VARIABLE"]
    assert variable == "MASKMED_SELF_TEST_SEGMENT"
    if value is None:
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, value)
    recorder = _RecordingTest(namespace["heavyTestsEnabled"])
    namespace["runTest"](recorder)
    ran = [c for c in recorder.calls if c.startswith("test_")]
    light = ["test_MaskMedSlicerModuleLoads", "test_MaskMedSlicerLibrary"]
    assert ran == (light + ["test_MaskMedSlicerSegment"] if value == "1" else light)


def test_only_the_enabled_self_test_installs_downloads_or_segments():
    methods = _methods(_classes()["MaskMedSlicerTest"])
    for name in ("test_MaskMedSlicerModuleLoads", "test_MaskMedSlicerLibrary"):
        text = ast.unparse(methods[name])
        for heavy in ("installDependencies", "SampleData", "downloadSample", ".segment(", "torch"):
            assert heavy not in text, f"{name} (always run) uses {heavy}"
    assert "installDependencies(confirm=None)" in ast.unparse(methods["test_MaskMedSlicerSegment"])


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
    installer = (MODULE_FILE.parent / "MaskMedSlicerLib" / "installer.py").read_text(encoding="utf-8")
    assert not re.search(r"pip_install\([^)]*torch", source + installer), "never pip_install torch: use PyTorchUtils"
    assert "PyTorchUtils.PyTorchUtilsLogic()" in installer and "installTorch(" in installer
    assert "torchInstalled()" in installer
    install = next(n for n in ast.parse(installer).body if isinstance(n, ast.FunctionDef) and n.name == "install_torch")
    calls = [ast.unparse(n) for n in ast.walk(install) if isinstance(n, ast.Call)]
    assert any(c.startswith("confirm(") for c in calls), "torch is installed without asking"
    widget = ast.unparse(_classes()["MaskMedSlicerWidget"])
    assert "confirmOkCancelDisplay" in widget and "installDependencies(confirm=self.confirmInstall" in widget


def test_logic_opens_no_dialogs():
    logic = ast.unparse(_classes()["MaskMedSlicerLogic"])
    for dialog in ("confirmOkCancelDisplay", "errorDisplay", "infoDisplay", "QMessageBox", "QFileDialog"):
        assert dialog not in logic, f"MaskMedSlicerLogic uses {dialog}; dialogs belong in the widget"


def test_widget_never_waits_for_the_network():
    """The widget starts work and polls it with a QTimer; it never calls a blocking segment or wait."""
    widget = _classes()["MaskMedSlicerWidget"]
    calls = [n for n in ast.walk(widget) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    names = {n.func.attr for n in calls}
    assert not names & {"segment", "run", "wait"}, "the widget calls a blocking method"
    source = ast.unparse(widget)
    assert "qt.QTimer()" in source and re.search(r"connect\(['\"]timeout\(\)['\"]", source)
    for task in ("segmentTask", "trainingTask", "datasetCheck", "deviceProbe"):
        assert f"logic.{task}.poll()" in ast.unparse(_methods(widget)["onPollTimer"]), task


def test_one_segmentation_code_path():
    """Issue 15, defect 7: the module file has no segmentation path of its own; panel and console both go
    through MaskMedSlicerLib's SegmentTask (MaskMedLogic.start/finish_segmentation with their input checks)."""
    source = MODULE_FILE.read_text(encoding="utf-8")
    for own_path in (
        "build_predict_command",
        "export_volume",
        "MaskMedProcess",
        "import_result",
        "start_segmentation",
        "finish_segmentation",
        "mkdtemp",
        "rmtree",
    ):
        assert own_path not in source, f"{MODULE_FILE.name} uses {own_path}: segment through MaskMedSlicerLib"
    logic = _methods(_classes()["MaskMedSlicerLogic"])
    assert not {"startSegmentation", "finishSegmentation", "cancelSegmentation"} & set(logic)
    widget = _methods(_classes()["MaskMedSlicerWidget"])
    assert "task.start(" in ast.unparse(widget["onApplyButton"]) and "segmentTask" in ast.unparse(
        widget["onApplyButton"]
    )
    assert "self.segmentTask.run(" in ast.unparse(logic["segment"])
    assert "SegmentTask(" in ast.unparse(logic["__init__"])


def _self_calls(method: ast.FunctionDef) -> set[str]:
    return {
        n.func.attr
        for n in ast.walk(method)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and ast.unparse(n.func.value) == "self"
    }


def _unguarded_parameter_node_uses(node: ast.AST, guarded: bool = False) -> list[str]:
    """``self._parameterNode.x`` uses outside an ``if self._parameterNode`` (or ``if ... and self._parameterNode``)."""
    found = []
    if isinstance(node, ast.If) and "self._parameterNode" in ast.unparse(node.test):
        for child in node.body:
            found += _unguarded_parameter_node_uses(child, True)
        for child in node.orelse:
            found += _unguarded_parameter_node_uses(child, guarded)
        return found
    if isinstance(node, ast.IfExp) and "self._parameterNode" in ast.unparse(node.test):
        return found
    if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self._parameterNode" and not guarded:
        found.append(ast.unparse(node))
    for child in ast.iter_child_nodes(node):
        found += _unguarded_parameter_node_uses(child, guarded)
    return found


def test_timer_path_never_needs_the_parameter_node():
    """Issue 15, defect 6: exit() (module hidden) sets the parameter node to None while the timer keeps polling;
    nothing the timer reaches may use it without checking it is there (the AttributeError of the issue)."""
    widget = _methods(_classes()["MaskMedSlicerWidget"])
    reached, todo = set(), ["onPollTimer"]
    while todo:
        name = todo.pop()
        if name in reached or name not in widget:
            continue
        reached.add(name)
        if name != "updateGuiState":  # returns at once without a parameter node (checked below)
            todo += sorted(_self_calls(widget[name]))
    bad = {name: _unguarded_parameter_node_uses(widget[name]) for name in reached - {"updateGuiState"}}
    bad = {name: uses for name, uses in bad.items() if uses}
    assert not bad, f"used by the timer without a parameter node check: {bad}"
    assert {"onTrainingFinished", "onSegmentationFinished", "populateModelSelector"} <= reached
    first = (
        widget["updateGuiState"].body[1]
        if ast.get_docstring(widget["updateGuiState"])
        else widget["updateGuiState"].body[0]
    )
    assert ast.unparse(first) == "if not self._parameterNode:\n    return"


def test_python_version_is_checked_when_the_module_loads():
    """Issue 15, defect 9: an old Slicer (Python < 3.10) gets one clear message, and the file parses there."""
    ast.parse(MODULE_FILE.read_text(encoding="utf-8"), feature_version=(3, 9))  # Slicer 5.8's Python 3.9 parses it
    tree = _tree()
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "checkPythonVersion")
    constants = [
        n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) in ("MIN_PYTHON", "MIN_SLICER")
    ]
    namespace = {"sys": sys}
    exec(compile(ast.Module(body=[*constants, function], type_ignores=[]), str(MODULE_FILE), "exec"), namespace)
    check = namespace["checkPythonVersion"]
    check((3, 10, 0))
    check((3, 12, 10, "final", 0))
    with pytest.raises(
        RuntimeError,
        match=r"needs Python 3\.10 or newer, but this Slicer runs Python 3\.9\.10:"
        r" install 3D Slicer 5\.10 or newer",
    ):
        check((3, 9, 10, "final", 0))
    init = _methods(_classes()["MaskMedSlicer"])["__init__"]
    assert ast.unparse(init.body[0]) == "checkPythonVersion()", "the check must run first when Slicer loads the module"


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
