"""The extension's build files, index entry and .ui, checked without Slicer.

A Slicer extension ships only what its CMake lists name: a ``.py`` file missing from
``MODULE_PYTHON_SCRIPTS`` is silently missing from the installed package, and a listed file that does
not exist stops the build. The ExtensionsIndex entry must satisfy the index's JSON schema and agree
with ``EXTENSION_DEPENDS``. Widget names used by the module file must exist in its ``.ui``.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MODULE_DIR = REPO / "MaskMedSlicer"
MODULE_FILE = MODULE_DIR / "MaskMedSlicer.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MaskMedSlicer.ui"
TOP_CMAKE = REPO / "CMakeLists.txt"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
INDEX_ENTRY = REPO / "MaskMed.json"
DEMO_MODEL = "Resources/DemoModel/maskmed_demo_phantom.pt"

# ExtensionsIndex schemas/slicer-extension-catalog-entry-schema-v1.0.x.json: required keys, then every
# allowed key with its JSON type (additionalProperties is false).
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
SCHEMA_PROPERTIES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
    "dicom_support_rule": str,
}
# Categories used by the extensions in the index (scripts/check_description_files.py accepts these and more).
KNOWN_CATEGORIES = {"Segmentation", "Utilities", "Active Learning", "Registration", "Quantification", "Examples"}


# ----------------------------------------------------------------------------------------- CMake parsing


def _parse_cmake(path: Path) -> list[tuple[str, list[str]]]:
    """Every command call of a CMake file, in order: (name lower-cased, arguments with quotes removed).

    Handles quoted arguments (which may hold parentheses and ``#``), nested parentheses and comments.
    """
    text = path.read_text(encoding="utf-8")
    calls, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            i = text.find("\n", i) if "\n" in text[i:] else n
            continue
        match = re.match(r"([A-Za-z_]\w*)\s*\(", text[i:])
        if not match or (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            i += 1
            continue
        name, i, depth, args, token = match.group(1).lower(), i + match.end(), 1, [], None
        while depth:
            c = text[i]
            if c == '"':
                end = i + 1
                while text[end] != '"':
                    end += 2 if text[end] == "\\" else 1
                args.append(text[i + 1 : end])
                i = end + 1
                continue
            if c == "#":
                i = text.index("\n", i)
                continue
            if c in "()" or c.isspace():
                if token is not None:
                    args.append(token)
                    token = None
                depth += {"(": 1, ")": -1}.get(c, 0)
                if c in "()" and depth:
                    args.append(c)
            else:
                token = (token or "") + c
            i += 1
        calls.append((name, args))
    return calls


def _cmake_sets(path: Path) -> dict[str, list[str]]:
    """``set(NAME v1 v2 ...)`` commands: name -> values (the last command wins)."""
    return {args[0]: args[1:] for name, args in _parse_cmake(path) if name == "set" and args}


def _strip_comments(text: str) -> str:
    """Drop ``#`` comments (whole-line and trailing ones outside quotes) for the regex checks below."""
    return "\n".join(re.sub(r'^((?:[^"#]|"[^"]*")*)#.*$', r"\1", line) for line in text.splitlines())


def _module_sets() -> dict[str, list[str]]:
    sets = _cmake_sets(MODULE_CMAKE)
    name = sets["MODULE_NAME"][0]
    return {k: [v.replace("${MODULE_NAME}", name) for v in vals] for k, vals in sets.items()}


def _py_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.py") if "__pycache__" not in p.parts}


# -------------------------------------------------------------------------------------- module CMakeLists


def test_module_name_matches_module_file():
    assert _module_sets()["MODULE_NAME"] == ["MaskMedSlicer"]
    assert MODULE_FILE.is_file()


def test_every_module_and_lib_file_is_listed():
    listed = set(_module_sets()["MODULE_PYTHON_SCRIPTS"])
    shipped = {p for p in _py_files(MODULE_DIR) if not p.startswith("Testing/")}
    assert "MaskMedSlicer.py" in shipped
    assert any(p.startswith("MaskMedSlicerLib/") for p in shipped), "MaskMedSlicerLib/ holds no .py file"
    missing = sorted(shipped - listed)
    assert not missing, f"add to MODULE_PYTHON_SCRIPTS in {MODULE_CMAKE}: {missing}"


def test_every_maskmedcore_file_is_bundled():
    listed = set(_module_sets()["MASKMEDCORE_PYTHON_SCRIPTS"])
    shipped = {f"MaskMedCore/{p}" for p in _py_files(REPO / "MaskMedCore")}
    assert "MaskMedCore/__init__.py" in shipped
    missing = sorted(shipped - listed)
    assert not missing, f"add to MASKMEDCORE_PYTHON_SCRIPTS in {MODULE_CMAKE}: {missing}"


def test_listed_scripts_exist():
    sets = _module_sets()
    gone = [p for p in sets["MODULE_PYTHON_SCRIPTS"] if not (MODULE_DIR / p).is_file()]
    gone += [p for p in sets["MASKMEDCORE_PYTHON_SCRIPTS"] if not (REPO / p).is_file()]
    assert not gone, f"{MODULE_CMAKE} lists files that do not exist: {gone}"
    for name in ("MODULE_PYTHON_SCRIPTS", "MASKMEDCORE_PYTHON_SCRIPTS"):
        values = sets[name]
        assert len(values) == len(set(values)), f"{name} lists a file twice"


def test_bundled_package_is_staged_into_the_module_build_tree():
    """MaskMedCore files are copied beside the module and appended to MODULE_PYTHON_SCRIPTS."""
    text = _strip_comments(MODULE_CMAKE.read_text(encoding="utf-8"))
    loop = re.search(r"foreach\(\s*(\w+)\s+\$\{MASKMEDCORE_PYTHON_SCRIPTS\}\s*\)(.*?)endforeach\(\)", text, re.S)
    assert loop, "no foreach over MASKMEDCORE_PYTHON_SCRIPTS"
    var, body = loop.group(1), loop.group(2)
    assert re.search(rf"configure_file\(\s*\$\{{CMAKE_CURRENT_SOURCE_DIR\}}/\.\./\$\{{{var}\}}", body)
    assert re.search(rf"\$\{{CMAKE_CURRENT_BINARY_DIR\}}/\$\{{{var}\}}\s+COPYONLY", body)
    assert re.search(rf"list\(\s*APPEND\s+MODULE_PYTHON_SCRIPTS\s+\$\{{CMAKE_CURRENT_BINARY_DIR\}}/\$\{{{var}\}}", body)


def test_resources_are_listed_and_exist():
    sets = _module_sets()
    resources = sets["MODULE_PYTHON_RESOURCES"]
    for needed in ("Resources/UI/MaskMedSlicer.ui", "Resources/Icons/MaskMedSlicer.png"):
        assert needed in resources, f"{needed} missing from MODULE_PYTHON_RESOURCES"
    gone = [p for p in resources if not (MODULE_DIR / p).is_file()]
    assert not gone, f"MODULE_PYTHON_RESOURCES lists files that do not exist: {gone}"
    ui_files = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*.ui")}
    assert ui_files <= set(resources), f"unlisted .ui files: {sorted(ui_files - set(resources))}"


def test_demo_model_is_shipped():
    bundled = _module_sets()["MODULE_BUNDLED_RESOURCES"]
    assert DEMO_MODEL in bundled, f"{DEMO_MODEL} missing from MODULE_BUNDLED_RESOURCES"
    text = _strip_comments(MODULE_CMAKE.read_text(encoding="utf-8"))
    assert re.search(
        r"foreach\(\s*(\w+)\s+\$\{MODULE_BUNDLED_RESOURCES\}\s*\).*?configure_file\(.*?"
        r"\$\{CMAKE_BINARY_DIR\}/\$\{Slicer_QTSCRIPTEDMODULES_LIB_DIR\}/\$\{\1\}\s+COPYONLY",
        text,
        re.S,
    ), "MODULE_BUNDLED_RESOURCES must be copied into the module's build output"
    assert (REPO / DEMO_MODEL).is_file(), (
        f"{DEMO_MODEL} is listed for packaging but does not exist: CMake's configure step fails without it"
    )


def test_build_macro_and_self_test_registration():
    build = [args for name, args in _parse_cmake(MODULE_CMAKE) if name == "slicermacrobuildscriptedmodule"]
    assert len(build) == 1
    args = build[0]
    for key, value in (
        ("NAME", "${MODULE_NAME}"),
        ("SCRIPTS", "${MODULE_PYTHON_SCRIPTS}"),
        ("RESOURCES", "${MODULE_PYTHON_RESOURCES}"),
    ):
        assert key in args and args[args.index(key) + 1] == value, f"slicerMacroBuildScriptedModule needs {key} {value}"
    text = _strip_comments(MODULE_CMAKE.read_text(encoding="utf-8"))
    assert re.search(
        r"if\(\s*BUILD_TESTING\s*\)\s*slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text
    )


# ----------------------------------------------------------------------------------- top-level CMakeLists


def test_extension_cmake_has_template_structure():
    sets = _cmake_sets(TOP_CMAKE)
    calls = _parse_cmake(TOP_CMAKE)
    assert calls[0][0] == "cmake_minimum_required"
    project = [args for name, args in calls if name == "project"]
    assert project == [["MaskMed"]]
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert sets.get(key) and all(sets[key]), f"{key} is not set in {TOP_CMAKE}"
    assert sets["EXTENSION_CATEGORY"] == ["Segmentation"]
    text = _strip_comments(TOP_CMAKE.read_text(encoding="utf-8"))
    order = [
        r"find_package\(\s*Slicer\s+\$\{MASKMED_MINIMUM_SLICER_VERSION\}\s+REQUIRED\s*\)",
        r"include\(\s*\$\{Slicer_USE_FILE\}\s*\)",
        r"add_subdirectory\(\s*MaskMedSlicer\s*\)",
        r"include\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)",
        r"include\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)",
    ]
    positions = [re.search(p, text) for p in order]
    assert all(positions), [p for p, m in zip(order, positions) if not m]
    assert [m.start() for m in positions] == sorted(m.start() for m in positions)


def _repo_path_of_raw_url(url: str) -> Path:
    match = re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(.+)$", url)
    assert match, f"{url} is not a raw.githubusercontent.com URL"
    return REPO / match.group(1)


def test_icon_and_screenshot_urls_point_at_files_in_this_repository():
    sets = _cmake_sets(TOP_CMAKE)
    icon = _repo_path_of_raw_url(sets["EXTENSION_ICONURL"][0])
    assert icon.is_file() and icon.suffix == ".png", icon
    shots = " ".join(sets["EXTENSION_SCREENSHOTURLS"]).split()
    assert shots
    for url in shots:
        assert _repo_path_of_raw_url(url).is_file(), url
    homepage = sets["EXTENSION_HOMEPAGE"][0]
    owner_repo = re.match(r"https://github\.com/([^/]+/[^/]+)$", homepage)
    assert owner_repo, f"EXTENSION_HOMEPAGE {homepage} is not a GitHub repository URL"
    assert all(f"/{owner_repo.group(1)}/" in u for u in [sets["EXTENSION_ICONURL"][0], *shots])


# --------------------------------------------------------------------------------------- ExtensionsIndex


def _index_entry() -> dict:
    return json.loads(INDEX_ENTRY.read_text(encoding="utf-8"))


def test_index_entry_satisfies_the_schema():
    entry = _index_entry()
    for key in SCHEMA_REQUIRED:
        assert key in entry, f"{INDEX_ENTRY.name} lacks required {key!r}"
    unknown = sorted(set(entry) - set(SCHEMA_PROPERTIES))
    assert not unknown, f"{INDEX_ENTRY.name} has keys the schema rejects (additionalProperties false): {unknown}"
    for key, value in entry.items():
        kind = SCHEMA_PROPERTIES[key]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), f"{key} must be {kind}"
    assert re.search(r"slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#?$", entry["$schema"])
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry.get("tier", 1) in (1, 3, 5)
    assert entry.get("scm_type", "git") in ("git", "local")
    assert entry["category"] in KNOWN_CATEGORIES


def test_index_entry_agrees_with_cmake():
    entry, sets = _index_entry(), _cmake_sets(TOP_CMAKE)
    depends = " ".join(sets["EXTENSION_DEPENDS"]).split()
    depends = [] if depends == ["NA"] else depends
    assert entry.get("build_dependencies", []) == depends == ["PyTorch"]
    assert entry["category"] == sets["EXTENSION_CATEGORY"][0]
    # The index entry is named after the extension (the CMake project), which must not start with "Slicer";
    # the repository must (checks of ExtensionsIndex scripts/check_description_files.py).
    assert INDEX_ENTRY.stem == "MaskMed" and not INDEX_ENTRY.stem.startswith("Slicer")
    url = entry["scm_url"]
    assert url.startswith("https://")
    repo_name = url.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
    assert repo_name.startswith("Slicer"), repo_name
    assert url.removesuffix(".git") == sets["EXTENSION_HOMEPAGE"][0]


# --------------------------------------------------------------------------------------------------- .ui


def _ui_tree() -> ET.ElementTree:
    return ET.parse(UI_FILE)


def _ui_widgets() -> dict[str, str]:
    """objectName -> class of every widget of the .ui."""
    return {w.get("name"): w.get("class") for w in _ui_tree().iter("widget")}


def _parameter_fields() -> set[str]:
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MaskMedSlicerParameterNode")
    return {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}


def test_ui_root_and_custom_widgets():
    root = _ui_tree().getroot()
    assert root.tag == "ui"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "MaskMedSlicer")
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    standard = {"QWidget", "QLabel", "QComboBox", "QToolButton", "QCheckBox", "QPushButton", "QProgressBar"}
    standard |= {"QPlainTextEdit", "QTableWidget", "QTabWidget", "QListWidget", "QSpinBox", "QFrame"}
    undeclared = sorted(set(_ui_widgets().values()) - declared - standard)
    assert not undeclared, f"widget classes used but not declared in <customwidgets>: {undeclared}"


def test_ui_has_the_three_sections():
    widgets = _ui_widgets()
    for name in ("segmentCollapsibleButton", "inspectCollapsibleButton", "trainCollapsibleButton"):
        assert widgets.get(name) == "ctkCollapsibleButton", name


def test_ui_mrml_selectors_have_node_types_and_scene():
    root = _ui_tree().getroot()
    connected = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    combos = [w for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"]
    assert len(combos) >= 5
    for combo in combos:
        props = {p.get("name"): p for p in combo.findall("property")}
        types = [s.text for s in props["nodeTypes"].iter("string")]
        name = combo.get("name")
        expected = {"output": "vtkMRMLSegmentationNode", "inputROI": "vtkMRMLMarkupsROINode"}.get(
            re.sub(r"(Segmentation|Volume\d|)Selector$", "", name), "vtkMRMLScalarVolumeNode"
        )
        assert types == [expected], (name, types)
        assert name in connected, f"{name} does not get the scene (mrmlSceneChanged -> setMRMLScene)"


def test_ui_parameter_names_are_parameter_node_fields():
    fields = _parameter_fields()
    bound = {
        w.get("name"): p.findtext("string")
        for w in _ui_tree().iter("widget")
        for p in w.findall("property")
        if p.get("name") == "SlicerParameterName"
    }
    assert bound, "no widget is bound to the parameter node"
    unknown = {w: f for w, f in bound.items() if f not in fields}
    assert not unknown, f"SlicerParameterName values that are not MaskMedSlicerParameterNode fields: {unknown}"
    assert len(set(bound.values())) == len(bound), "two widgets bound to one parameter"


def test_widget_names_used_by_the_module_exist_in_the_ui():
    used = set(re.findall(r"\bself\.ui\.([A-Za-z_]\w*)", MODULE_FILE.read_text(encoding="utf-8")))
    assert len(used) > 20
    missing = sorted(used - set(_ui_widgets()))
    assert not missing, f"MaskMedSlicer.py uses self.ui.<name> not defined in {UI_FILE.name}: {missing}"


@pytest.mark.parametrize("channel", range(4))
def test_one_input_selector_per_channel(channel):
    widgets = _ui_widgets()
    assert widgets[f"inputVolumeSelector{channel}"] == "qMRMLNodeComboBox"
    assert widgets[f"inputVolumeLabel{channel}"] == "QLabel"
    assert f"inputVolume{channel}" in _parameter_fields()


# ------------------------------------------------------------------------------------- minimum Slicer version


def test_minimum_slicer_version_is_stated_and_checked():
    """Issue 15, defect 9: the extension says which Slicer it needs, and a too-old Slicer is refused clearly.

    Slicer 5.10 is the first release whose Python is >= 3.10 (3.12.10; 5.8.x has 3.9.10). ``find_package``
    with a version uses Slicer's ``SlicerConfigVersion.cmake``; the index entry's schema has no version field,
    so README says which ExtensionsIndex branches the entry belongs in.
    """
    sets = _cmake_sets(TOP_CMAKE)
    assert sets["MASKMED_MINIMUM_SLICER_VERSION"] == ["5.10"]
    text = _strip_comments(TOP_CMAKE.read_text(encoding="utf-8"))
    assert re.search(
        r'if\(\s*Slicer_REQUIRED_PYTHON_VERSION\s+VERSION_LESS\s+"3\.10"\s*\)\s*message\(\s*FATAL_ERROR', text
    )
    module = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    constants = {
        ast.unparse(n.targets[0]): ast.literal_eval(n.value)
        for n in module.body
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) in ("MIN_SLICER", "MIN_PYTHON")
    }
    assert constants == {"MIN_SLICER": "5.10", "MIN_PYTHON": (3, 10)}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## 3D Slicer extension") :]
    assert "Slicer 5.10 or newer" in section and "Python 3.10" in section
