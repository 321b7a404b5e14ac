"""Verify and install a zip of nnU-Net v2 result folders, as nnU-Net's ``export_pretrained_model`` writes it.

nnU-Net exports a model as a zip whose members are relative to ``nnUNet_results``::

    Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/plans.json
    Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/dataset.json
    Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth
    ...  (dataset_fingerprint.json, fold_X/progress.png, fold_X/validation/summary.json, crossval_results_*)
    Dataset004_Hippocampus/inference_information.json, Dataset004_Hippocampus/ensembles/...  (optional)

and ``install_model_from_zip_file`` extracts it into ``nnUNet_results`` with ``extractall``, trusting it.
:func:`install_nnunet_zip` checks everything first -- the SHA-256 if given, every member
(:mod:`.safe_zip`), at least one complete result folder -- then extracts the result folders into a
temporary folder inside the install folder, reads each with :func:`read_result_folder`, and only then
renames them into place (a rename on one file system: a model appears whole or not at all). An
installed folder is never overwritten, and on any failure nothing is left behind. Members outside the
result folders (``ensembles/``, ``inference_information.json``) are checked but not installed:
MaskMed runs one result folder at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from MaskMedCore.nnunet.result_folder import (
    CHECKPOINT_NAMES,
    REQUIRED_FILES,
    NnUNetModelError,
    NnUNetResultFolder,
    read_result_folder,
)
from MaskMedCore.nnunet.safe_zip import NnUNetZipError, ZipLimits, ZipMember, checked_members, extract_member

TEMP_PREFIX = ".maskmed-install-"
DEFAULT_LIMITS = ZipLimits()
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class NnUNetZip:
    """A verified model zip (nothing extracted yet).

    Attributes:
        path: the zip file.
        sha256: its SHA-256 (lower-case hex).
        result_folders: each result folder's path inside the zip, e.g.
            ``Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres``.
        members: every checked member.
        total_bytes: uncompressed size of all members.
    """

    path: Path
    sha256: str
    result_folders: tuple[PurePosixPath, ...]
    members: tuple[ZipMember, ...]
    total_bytes: int

    def members_of(self, folder: PurePosixPath) -> list[ZipMember]:
        return [m for m in self.members if folder in m.path.parents]


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, lower-case hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_nnunet_zip(
    zip_path: str | os.PathLike, sha256: str | None = None, limits: ZipLimits = DEFAULT_LIMITS
) -> NnUNetZip:
    """Check a model zip without writing anything: checksum, members, result-folder layout.

    Args:
        zip_path: the zip file.
        sha256: expected SHA-256 (64 hex digits, any case); None skips the check.
        limits: size limits against zip bombs.

    Raises:
        NnUNetZipError: the message names the file or member, what was found and what was expected.
    """
    path = Path(zip_path)
    expected = _expected_sha256(sha256)
    if not path.is_file():
        raise NnUNetZipError(f"model zip {path} does not exist (or is not a file)")
    with open(path, "rb") as fh:
        verified, archive = _verify(fh, path, expected, limits)
        archive.close()
    return verified


def install_nnunet_zip(
    zip_path: str | os.PathLike,
    target_root: str | os.PathLike,
    sha256: str | None = None,
    limits: ZipLimits = DEFAULT_LIMITS,
) -> list[Path]:
    """Install the nnU-Net result folders of a model zip under ``target_root`` (an ``nnUNet_results`` folder).

    Args:
        zip_path: the zip (``nnUNetv2_export_model_to_zip`` output).
        target_root: the folder to install into (created if missing); each result folder goes to
            ``target_root/<its path in the zip>``.
        sha256: expected SHA-256 of the zip (64 hex digits, any case); None skips the check.
        limits: size limits against zip bombs.

    Returns:
        The installed result folders (each one ``maskmed predict -m`` accepts).

    Raises:
        NnUNetZipError: anything refused; nothing is left in ``target_root`` (no temporary folder, no
            partly installed model, not even ``target_root`` if this call created it).
        NnUNetModelError: a result folder MaskMed cannot run (e.g. region-based labels); nothing is left.
    """
    path, root = Path(zip_path), Path(target_root).absolute()
    expected = _expected_sha256(sha256)
    if not path.is_file():
        raise NnUNetZipError(f"model zip {path} does not exist (or is not a file)")
    if root.exists() and not root.is_dir():
        raise NnUNetZipError(f"install folder {root} is a file, not a folder; choose a folder with --to")
    with open(path, "rb") as fh:
        verified, archive = _verify(fh, path, expected, limits)
        with archive:
            _refuse_installed(verified, root)
            _check_free_space(root, verified.total_bytes)
            return _install(archive, verified, root)


def _expected_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    text = sha256.strip()
    if not _SHA256.match(text):
        raise NnUNetZipError(f"--sha256 {sha256!r} is not a SHA-256 checksum (64 hexadecimal digits)")
    return text.lower()


def _verify(fh, path: Path, expected: str | None, limits: ZipLimits) -> tuple[NnUNetZip, zipfile.ZipFile]:
    """Hash the open file, then read its member list from the same handle (the bytes hashed are the bytes read)."""
    digest = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        digest.update(chunk)
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        raise NnUNetZipError(
            f"{path}: SHA-256 is {actual}, expected {expected}; the download is damaged or is not the published "
            "file -- download it again, or check the checksum you were given"
        )
    fh.seek(0)
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise NnUNetZipError(f"{path} is not a readable zip file ({exc})") from None
    try:
        members = checked_members(archive, path, limits)
        folders = _result_folders(members, path)
    except BaseException:
        archive.close()
        raise
    total = sum(m.size for m in members if not m.is_dir)
    return NnUNetZip(path, actual, folders, tuple(members), total), archive


def _result_folders(members: list[ZipMember], source: Path) -> tuple[PurePosixPath, ...]:
    """Folders with plans.json, dataset.json and fold_X/checkpoint_*.pth.

    A folder with a fold checkpoint but without plans.json or dataset.json is refused, naming what it lacks.
    Folders with plans.json and dataset.json but no fold (nnU-Net's ``crossval_results_folds_*`` and
    ensembles copy both files there) are not models and travel with the result folder that holds them.
    """
    files = {m.path for m in members if not m.is_dir}
    trained = sorted(
        {p.parent.parent for p in files if p.name in CHECKPOINT_NAMES and p.parent.name.startswith("fold_")}
    )
    problems = [
        f"{folder}/ lacks {' and '.join(missing)}"
        for folder in trained
        if (missing := [n for n in REQUIRED_FILES if folder / n not in files])
    ]
    if problems:
        raise NnUNetZipError(
            f"{source}: not a complete nnU-Net result folder: {'; '.join(problems)} (a result folder holds "
            "plans.json, dataset.json and fold_X/checkpoint_final.pth, as nnUNetv2_export_model_to_zip writes them)"
        )
    if not trained:
        configs = sorted({p.parent for p in files if p.name == "plans.json"})
        found = (
            f"; {', '.join(f'{c}/' for c in configs)} has plans.json but no fold_X/checkpoint_*.pth" if configs else ""
        )
        raise NnUNetZipError(
            f"{source} holds no nnU-Net result folder{found} (expected members like "
            "DatasetXXX_Name/Trainer__Plans__3d_fullres/plans.json, dataset.json, fold_0/checkpoint_final.pth)"
        )
    for folder in trained:
        inner = [other for other in trained if folder in other.parents]
        if inner:
            raise NnUNetZipError(f"{source}: result folder {inner[0]}/ lies inside result folder {folder}/")
    return tuple(trained)


def _refuse_installed(verified: NnUNetZip, root: Path) -> None:
    for folder in verified.result_folders:
        target = root.joinpath(*folder.parts)
        if os.path.lexists(target):
            raise NnUNetZipError(
                f"{target} already exists; {verified.path} would replace it. Nothing was installed: remove or "
                "rename that folder first, or install into another folder"
            )


def _check_free_space(root: Path, needed: int) -> None:
    existing = next(p for p in (root, *root.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise NnUNetZipError(f"{existing} has {free} bytes free; installing the zip needs {needed} bytes")


def _install(archive: zipfile.ZipFile, verified: NnUNetZip, root: Path) -> list[Path]:
    """Extract into a temporary folder inside ``root``, read every result folder, then rename them into place."""
    created = _missing_folders(root)
    installed: list[Path] = []
    temp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
        for folder in verified.result_folders:
            for member in verified.members_of(folder):
                extract_member(archive, member, temp, verified.path)
            _read_extracted(temp, folder, verified.path)
        _refuse_installed(verified, root)  # again: another install may have finished meanwhile
        for folder in verified.result_folders:
            target = root.joinpath(*folder.parts)
            created += [p for p in _missing_folders(target.parent) if p not in created]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(temp.joinpath(*folder.parts), target)
            installed.append(target)
    except BaseException as exc:
        for target in installed:
            shutil.rmtree(target, ignore_errors=True)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        for folder in sorted(created, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only folders this call made, and only when empty
            except OSError:
                pass
        if isinstance(exc, OSError):
            message = f"installing {verified.path} into {root} failed: {exc}; nothing was installed"
            raise NnUNetZipError(message) from None
        raise
    shutil.rmtree(temp, ignore_errors=True)
    return installed


def _read_extracted(temp: Path, folder: PurePosixPath, source: Path) -> NnUNetResultFolder:
    """``read_result_folder`` on the extracted copy; its messages name the zip member, not the temporary path."""
    try:
        return read_result_folder(temp.joinpath(*folder.parts))
    except NnUNetModelError as exc:
        message = str(exc).replace(str(temp) + os.sep, "").replace(str(temp), "")
        raise NnUNetModelError(f"{source}: result folder {folder}/ cannot be used: {message}") from None


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    return [p for p in (path, *path.parents) if not p.exists()]
