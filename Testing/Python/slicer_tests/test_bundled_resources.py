"""Every file of a bundled model's folder ships with the extension: the weights only together with their
licence, model card and sample case (MSD Task04 is CC-BY-SA 4.0: the attribution must travel with them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MODULE_CMAKE = REPO / "MaskMedSlicer" / "CMakeLists.txt"
BUNDLED_FOLDERS = ("Resources/DemoModel", "Resources/HippocampusModel")


def _bundled_resources() -> list[str]:
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    match = re.search(r"set\(\s*MODULE_BUNDLED_RESOURCES\s+(.*?)\)", text, re.S)
    assert match, f"{MODULE_CMAKE} has no set(MODULE_BUNDLED_RESOURCES ...)"
    return [line.split("#")[0].strip() for line in match.group(1).splitlines() if line.split("#")[0].strip()]


@pytest.mark.parametrize("folder", BUNDLED_FOLDERS)
def test_every_file_of_a_bundled_model_folder_is_listed(folder):
    listed = set(_bundled_resources())
    present = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*") if p.is_file()}
    assert present, f"{folder} is empty"
    missing = sorted(present - listed)
    assert not missing, f"add to MODULE_BUNDLED_RESOURCES in {MODULE_CMAKE}: {missing}"


def test_listed_bundled_resources_exist_once():
    listed = _bundled_resources()
    assert len(listed) == len(set(listed)), "MODULE_BUNDLED_RESOURCES lists a file twice"
    gone = [p for p in listed if not (REPO / p).is_file()]
    assert not gone, f"{MODULE_CMAKE} lists bundled files that do not exist (CMake's configure fails): {gone}"
    for needed in ("maskmed_hippocampus.pt", "LICENSE.txt", "model_card.json", "MODEL_CARD.md", "sample/README.md"):
        assert f"Resources/HippocampusModel/{needed}" in listed, needed
