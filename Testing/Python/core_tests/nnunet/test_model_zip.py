"""Installing zipped nnU-Net result folders: a good zip installs whole; every unsafe or unusable zip is
refused with a message that says why, and leaves the install folder exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from nnunet_result_builders import DATASET, write_result_folder, zip_results

from MaskMedCore.cli import main
from MaskMedCore.nnunet.model_zip import TEMP_PREFIX, install_nnunet_zip, verify_nnunet_zip
from MaskMedCore.nnunet.result_folder import NnUNetModelError, read_result_folder
from MaskMedCore.nnunet.safe_zip import NnUNetZipError, ZipLimits

RESULT = f"{DATASET}/nnUNetTrainer__nnUNetPlans__3d_fullres"


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` -> a digest of its content ("dir" for folders)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def good_zip(tmp_path) -> Path:
    write_result_folder(tmp_path / "export" / "nnUNet_results")
    return zip_results(tmp_path / "export" / "nnUNet_results", tmp_path / "model.zip")


@pytest.fixture
def install_root(tmp_path) -> Path:
    """An install folder that already holds another model (it must survive every refused install)."""
    root = tmp_path / "root" / "models"
    write_result_folder(root, dataset="Dataset001_Other")
    return root


def add_members(source: Path, target: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    """Copy ``source`` zip to ``target`` with extra raw members appended."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for info, data in members:
            dst.writestr(info, data)
    return target


def mark_encrypted(zip_path: Path, name: str) -> None:
    """Set the "encrypted" flag of member ``name`` in the central directory (zipfile cannot write encrypted
    members, and clears the flag of a ZipInfo it writes)."""
    data = bytearray(zip_path.read_bytes())
    header = data.find(b"PK\x01\x02")  # central directory file header: flags at +8, name length at +28
    while header >= 0:
        name_length = int.from_bytes(data[header + 28 : header + 30], "little")
        if data[header + 46 : header + 46 + name_length] == name.encode():
            data[header + 8] |= 0x1
            zip_path.write_bytes(bytes(data))
            assert zipfile.ZipFile(zip_path).getinfo(name).flag_bits & 0x1
            return
        header = data.find(b"PK\x01\x02", header + 4)
    raise AssertionError(f"{name} not in {zip_path}")


def assert_refused(zip_path, root: Path, match: str, exc=NnUNetZipError, **kwargs) -> str:
    """Install must raise ``exc`` matching ``match`` and leave ``root`` (and its parent) unchanged."""
    before = snapshot(root.parent)
    with pytest.raises(exc, match=match) as info:
        install_nnunet_zip(zip_path, root, **kwargs)
    assert snapshot(root.parent) == before
    assert not list(root.parent.rglob(f"{TEMP_PREFIX}*")), "a temporary folder was left behind"
    return str(info.value)


def test_a_good_zip_installs_whole(good_zip, install_root, tmp_path):
    digest = hashlib.sha256(good_zip.read_bytes()).hexdigest()
    installed = install_nnunet_zip(good_zip, install_root, sha256=digest.upper())  # any case
    assert installed == [install_root / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres"]
    model = read_result_folder(installed[0])
    assert model.label_names == ("background", "anterior", "posterior") and model.folds == ("0",)
    exported = tmp_path / "export" / "nnUNet_results" / RESULT
    assert snapshot(installed[0]) == snapshot(exported), "installed files differ from the exported ones"
    assert not list(install_root.rglob(f"{TEMP_PREFIX}*"))
    assert read_result_folder(install_root / "Dataset001_Other" / "nnUNetTrainer__nnUNetPlans__3d_fullres")


def test_members_outside_result_folders_are_checked_but_not_installed(good_zip, tmp_path):
    extra = add_members(good_zip, tmp_path / "extra.zip", [(f"{DATASET}/inference_information.json", b"{}")])
    verified = verify_nnunet_zip(extra)
    assert [str(f) for f in verified.result_folders] == [RESULT]
    install_nnunet_zip(extra, tmp_path / "new" / "models")  # creates the install folder
    assert sorted(p.name for p in (tmp_path / "new" / "models" / DATASET).iterdir()) == [RESULT.split("/")[1]]


def test_crossval_results_travel_with_their_result_folder(tmp_path):
    """nnU-Net copies plans.json and dataset.json into crossval_results_folds_*; that folder is not a model."""
    folder = write_result_folder(tmp_path / "export")
    crossval = folder / "crossval_results_folds_0"
    crossval.mkdir()
    for name in ("plans.json", "dataset.json"):
        (crossval / name).write_bytes((folder / name).read_bytes())
    zipped = zip_results(tmp_path / "export", tmp_path / "crossval.zip")
    installed = install_nnunet_zip(zipped, tmp_path / "models")
    assert installed == [tmp_path / "models" / RESULT] and (installed[0] / "crossval_results_folds_0").is_dir()


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil.txt", r"member '\.\./evil\.txt' has a '\.\.'"),
        (f"{RESULT}/../../../evil.txt", r"'\.\.', '\.' or empty path component"),
        ("/abs/evil.txt", r"member '/abs/evil\.txt' has an absolute path"),
        ("C:/evil.txt", "drive letter"),
        ("..\\evil.txt", "backslash"),
        (f"{RESULT}//evil.txt", "empty path component"),
    ],
)
def test_path_traversal_is_refused(good_zip, install_root, tmp_path, name, match):
    bad = add_members(good_zip, tmp_path / "bad.zip", [(name, b"owned")])
    message = assert_refused(bad, install_root, match)
    assert str(bad) in message
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "root" / "evil.txt").exists()


def test_a_symlink_member_is_refused(good_zip, install_root, tmp_path):
    link = zipfile.ZipInfo(f"{RESULT}/fold_0/link.pth")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    bad = add_members(good_zip, tmp_path / "link.zip", [(link, b"/etc/passwd")])
    assert_refused(bad, install_root, r"member '.*/fold_0/link\.pth' is a symbolic link")


def test_duplicate_and_encrypted_members_are_refused(good_zip, install_root, tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = add_members(good_zip, tmp_path / "dup.zip", [(f"{RESULT}/plans.json", b"{}")])
    assert_refused(dup, install_root, r"appears twice")
    case = add_members(good_zip, tmp_path / "case.zip", [(f"{RESULT}/PLANS.json", b"{}")])
    assert_refused(case, install_root, r"appears twice")
    enc = add_members(good_zip, tmp_path / "enc.zip", [(f"{RESULT}/notes.txt", b"x")])
    mark_encrypted(enc, f"{RESULT}/notes.txt")
    assert_refused(enc, install_root, "is encrypted")


def test_zip_bombs_are_refused(good_zip, install_root, tmp_path):
    bomb = add_members(good_zip, tmp_path / "bomb.zip", [(f"{RESULT}/zeros.bin", bytes(4 << 20))])
    assert_refused(bomb, install_root, r"expands from \d+ to 4194304 bytes \(more than 200x\)")
    assert_refused(good_zip, install_root, r"more than the limit of 1000 bytes", limits=ZipLimits(max_total_bytes=1000))


def test_a_wrong_sha256_names_both_digests(good_zip, install_root):
    actual = hashlib.sha256(good_zip.read_bytes()).hexdigest()
    wrong = "0" * 64
    message = assert_refused(good_zip, install_root, "SHA-256 is", sha256=wrong)
    assert actual in message and wrong in message
    assert_refused(good_zip, install_root, "not a SHA-256 checksum", sha256="abc")


def test_a_result_folder_without_dataset_json_is_refused(tmp_path, install_root):
    folder = write_result_folder(tmp_path / "export")
    (folder / "dataset.json").unlink()
    bad = zip_results(tmp_path / "export", tmp_path / "nodataset.zip")
    assert_refused(bad, install_root, rf"{RESULT}/ lacks dataset\.json")


def test_unsupported_plans_are_refused_after_reading_the_extracted_copy(tmp_path, install_root):
    regions = {"background": 0, "whole": [1, 2], "core": 2}
    write_result_folder(tmp_path / "export", labels=regions, dataset_fields={"regions_class_order": [1, 2]})
    bad = zip_results(tmp_path / "export", tmp_path / "regions.zip")
    message = assert_refused(bad, install_root, "region-based training", exc=NnUNetModelError)
    assert f"result folder {RESULT}/ cannot be used: {RESULT}/dataset.json" in message, message
    assert TEMP_PREFIX not in message


def test_an_installed_model_is_never_replaced(good_zip, install_root):
    install_nnunet_zip(good_zip, install_root)
    message = assert_refused(good_zip, install_root, "already exists")
    assert str(install_root / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres") in message
    assert "remove or rename that folder first" in message


def test_not_a_zip_and_no_result_folder(tmp_path, install_root):
    text = tmp_path / "model.zip"
    text.write_text("not a zip")
    assert_refused(text, install_root, "is not a readable zip file")
    assert_refused(tmp_path / "missing.zip", install_root, "does not exist")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("README.txt", "hello")
    assert_refused(other, install_root, "holds no nnU-Net result folder")
    folder = write_result_folder(tmp_path / "untrained")
    for fold in folder.glob("fold_*/checkpoint_final.pth"):
        fold.unlink()
    untrained = zip_results(tmp_path / "untrained", tmp_path / "untrained.zip")
    assert_refused(untrained, install_root, rf"{RESULT}/ has plans.json but no fold_X/checkpoint_\*\.pth")


def test_a_failed_rename_rolls_back_what_was_moved(tmp_path, install_root, monkeypatch):
    write_result_folder(tmp_path / "export", trainer="TrainerA")
    write_result_folder(tmp_path / "export", dataset="Dataset904_Spleen", trainer="TrainerB")
    two = zip_results(tmp_path / "export", tmp_path / "two.zip")
    real_rename, calls = os.rename, []

    def rename_fails_second_time(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_fails_second_time)
    assert_refused(two, install_root, "No space left on device; nothing was installed")
    assert len(calls) == 2


def test_cli_installs_and_reports_errors_in_one_line(good_zip, tmp_path, capsys):
    target = tmp_path / "cli-models"
    assert main(["install-nnunet", str(good_zip), "--to", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"installed {target / DATASET / 'nnUNetTrainer__nnUNetPlans__3d_fullres'}" in out
    assert "anterior, posterior" in out and "maskmed predict -m" in out
    assert main(["install-nnunet", str(good_zip), "--to", str(target), "--sha256", "f" * 64]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskmed install-nnunet: error:") and "SHA-256 is" in err[0]
    summary = json.loads((target / RESULT / "dataset.json").read_text())
    assert summary["name"] == DATASET
