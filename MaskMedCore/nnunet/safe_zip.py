"""Read an untrusted zip file's member list and extract chosen members, refusing anything unsafe first.

A model zip comes from the internet, so every member is checked before a byte is written: no absolute
path, drive letter, backslash, ``..``/``.``/empty component or NUL; no symlink or device entry (the
Unix file type in ``external_attr``); no duplicate name (compared case-insensitively, as macOS and
Windows file systems do); no file that is also a folder of another member; no encrypted member and no
compression method ``zipfile`` cannot read; the total uncompressed size within a limit and no member
that expands more than a sane ratio (a zip bomb). ``zipfile.extractall`` only sanitises names
silently (it drops ``..`` and leading slashes and writes symlinks as files), so nothing here uses it.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from MaskMedCore.nnunet.result_folder import NnUNetModelError

READABLE_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
_DATA_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error)
try:
    import lzma

    _DATA_ERRORS += (lzma.LZMAError,)
except ImportError:  # a Python built without lzma reads stored/deflate/bzip2 zips only
    pass


class NnUNetZipError(NnUNetModelError):
    """A model zip that was refused: unreadable, an unsafe member, a wrong checksum, an incomplete result
    folder, or a model that is already installed (the message says which)."""


@dataclass(frozen=True)
class ZipLimits:
    """What a model zip may expand to.

    Attributes:
        max_total_bytes: total uncompressed size of all members (nnU-Net's 5 folds of a large 3D model
            are a few GB).
        max_members: number of members.
        max_ratio: largest uncompressed/compressed size of a member of at least ``ratio_min_bytes``
            (checkpoints deflate about 1.1x, JSON about 10x; a zip bomb 1000x and more).
        ratio_min_bytes: members smaller than this are not ratio-checked (a small file of zeros is harmless).
    """

    max_total_bytes: int = 32 << 30
    max_members: int = 100_000
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_members", "max_ratio", "ratio_min_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"ZipLimits.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class ZipMember:
    """One checked member: ``path`` is its relative POSIX path without a trailing slash."""

    path: PurePosixPath
    info: zipfile.ZipInfo

    @property
    def is_dir(self) -> bool:
        return self.info.is_dir()

    @property
    def size(self) -> int:
        return self.info.file_size


def checked_members(archive: zipfile.ZipFile, source: Path, limits: ZipLimits) -> list[ZipMember]:
    """Every member of ``archive``, each checked as the module docstring says; nothing is extracted.

    Raises:
        NnUNetZipError: naming ``source``, the member and what is wrong with it.
    """
    infos = archive.infolist()
    if not infos:
        raise NnUNetZipError(f"{source} is an empty zip file")
    if len(infos) > limits.max_members:
        raise NnUNetZipError(f"{source} holds {len(infos)} members; at most {limits.max_members} are accepted")
    members, seen, total = [], {}, 0
    for info in infos:
        path = _checked_path(info, source)
        _check_entry(info, source)
        key = str(path).casefold()
        if key in seen:
            raise NnUNetZipError(
                f"{source}: member {info.filename!r} appears twice (also as {seen[key]!r}); a zip with duplicate "
                "names could install one file in place of another, so it is refused"
            )
        seen[key] = info.filename
        if not info.is_dir():
            total += info.file_size
            if info.file_size >= limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                raise NnUNetZipError(
                    f"{source}: member {info.filename!r} expands from {info.compress_size} to {info.file_size} bytes "
                    f"(more than {limits.max_ratio:g}x); refusing a possible zip bomb"
                )
        members.append(ZipMember(path, info))
    if total > limits.max_total_bytes:
        raise NnUNetZipError(
            f"{source} expands to {total} bytes, more than the limit of {limits.max_total_bytes} bytes; "
            "refusing a possible zip bomb (raise the limit only for a zip you trust)"
        )
    files = {str(m.path).casefold(): m for m in members if not m.is_dir}
    for member in members:
        for parent in member.path.parents:
            clash = files.get(str(parent).casefold())
            if clash is not None:
                raise NnUNetZipError(
                    f"{source}: {clash.info.filename!r} is a file but member {member.info.filename!r} puts it in a "
                    "folder of that name"
                )
    return members


def _checked_path(info: zipfile.ZipInfo, source: Path) -> PurePosixPath:
    raw = info.orig_filename  # zipfile cuts a name at a NUL byte in .filename; the original shows it
    where = f"{source}: member {raw!r}"
    if "\x00" in raw or not raw.strip("/"):
        raise NnUNetZipError(f"{where} has an empty name or a NUL byte")
    if "\\" in raw:
        raise NnUNetZipError(f"{where} contains a backslash; zip paths use '/' only (it could escape on Windows)")
    if raw.startswith("/"):
        raise NnUNetZipError(f"{where} has an absolute path; members must be relative, e.g. Dataset001_X/...")
    if _DRIVE.match(raw) or ":" in raw:
        raise NnUNetZipError(f"{where} contains a drive letter or ':'; members must be plain relative paths")
    parts = raw.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise NnUNetZipError(
            f"{where} has a '..', '.' or empty path component; it could write outside the install folder"
        )
    return PurePosixPath(*parts)


def _check_entry(info: zipfile.ZipInfo, source: Path) -> None:
    where = f"{source}: member {info.filename!r}"
    kind = stat.S_IFMT(info.external_attr >> 16)  # the Unix file type, when the zip was made on Unix
    if kind == stat.S_IFLNK:
        raise NnUNetZipError(f"{where} is a symbolic link; links are refused (they can point outside the folder)")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise NnUNetZipError(f"{where} is a special file (Unix type {oct(kind)}); only files and folders are accepted")
    if info.flag_bits & 0x1:
        raise NnUNetZipError(f"{where} is encrypted; model zips must not be encrypted")
    if info.compress_type not in READABLE_METHODS:
        raise NnUNetZipError(
            f"{where} uses compression method {info.compress_type}; readable: "
            f"{', '.join(READABLE_METHODS.values())} (re-create the zip with deflate)"
        )


def extract_member(archive: zipfile.ZipFile, member: ZipMember, root: Path, source: Path) -> Path:
    """Write one checked member under ``root`` (a new file; never follows or overwrites anything).

    Raises:
        NnUNetZipError: the member's data is corrupt (CRC), larger than its header says, or cannot be written.
    """
    target = root.joinpath(*member.path.parts)
    assert root.resolve() in target.resolve().parents, f"{member.path} escapes {root}"  # names were checked
    try:
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with archive.open(member.info) as src, open(target, "xb") as dst:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > member.size:
                    raise NnUNetZipError(
                        f"{source}: member {member.info.filename!r} holds more data than the {member.size} bytes its "
                        "header says; refusing it"
                    )
                dst.write(chunk)
    except NnUNetZipError:
        raise
    except _DATA_ERRORS as exc:
        raise NnUNetZipError(f"{source}: cannot extract member {member.info.filename!r}: {exc}") from None
    return target
