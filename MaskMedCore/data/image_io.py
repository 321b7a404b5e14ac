"""Reading and writing 3D medical images with clear errors (nnU-Net v2 §2.2: SimpleITK-readable files).

Every reader error is an :class:`ImageFileError` (a ``DataError``) that names the file, says what was
found and what was expected, and carries a suggested fix, so ``maskmed validate-dataset`` can list it.

Axis conventions: SimpleITK reports size, spacing and origin in (x, y, z) order; the NumPy array
from :func:`image_to_array` is ``(D, H, W)`` = (z, y, x). The helpers below return per-axis values in
``(D, H, W)`` order; origin and direction stay in SimpleITK's physical (x, y, z) order.

Supported files: anything SimpleITK reads (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ...) and
Slicer's ``.seg.nrrd`` segmentation files with a single layer (read as a label map).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import secrets
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from MaskMedCore.errors import DataError

COMPOUND_ENDINGS = (".seg.nrrd", ".nii.gz", ".nrrd.gz", ".mha.gz")
_FIX_REEXPORT = "re-export or re-download the file; it cannot be read as an image"


class ImageFileError(DataError):
    """A file that cannot be used as a 3D image. ``reason`` says what is wrong, ``fix`` what to do."""

    def __init__(self, path: str | os.PathLike, reason: str, fix: str) -> None:
        self.path = Path(path)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{self.path}: {reason}; {fix}")


class Geometry(NamedTuple):
    """Where an image lies in space.

    Attributes:
        shape: (D, H, W) voxels.
        spacing: (D, H, W) voxel size in mm.
        origin: (x, y, z) physical position of voxel (0, 0, 0), in mm.
        direction: 9 floats, SimpleITK's row-major 3x3 direction matrix.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]


def file_ending(path: str | os.PathLike) -> str:
    """The full file ending: ``.nii.gz`` and ``.seg.nrrd`` count as one ending."""
    name = Path(path).name.lower()
    for ending in COMPOUND_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return Path(path).name[-len(ending) :]
    return Path(path).suffix


def is_slicer_segmentation(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(".seg.nrrd")


# ---------------------------------------------------------------------------------------------- reading
def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read one 3D scalar image (a 4D file with a single volume is accepted and squeezed).

    Raises:
        ImageFileError: the file is missing, corrupt or truncated, 2D, 4D with several volumes,
            has several components per voxel (vector/RGB images, multi-layer ``.seg.nrrd``), or
            holds NaN/Inf values (ITK would silently turn those into 0 in NIfTI files).
    """
    reader, dim, size, comps = _open(path)
    if dim == 2:
        raise ImageFileError(
            path,
            f"is a 2D image (size {size[0]}x{size[1]}); expected a 3D volume",
            "store each case as one 3D volume (stack the slices into a 3D file)",
        )
    if dim == 4 and size[3] != 1:
        raise ImageFileError(
            path,
            f"is a 4D image with {size[3]} volumes (size {'x'.join(map(str, size))}); expected a single 3D volume",
            "split it into one 3D file per channel (<case>_0000, <case>_0001, ...), or use the MSD layout "
            "where dataset.json 'modality' lists one entry per volume",
        )
    if dim not in (3, 4):
        raise ImageFileError(path, f"has {dim} dimensions; expected a 3D volume", "convert it to a 3D image")
    if comps != 1:
        _raise_multi_component(path, comps, expected=1)
    image = _execute(reader, path)
    return image[:, :, :, 0] if dim == 4 else image


def read_image_channels(path: str | os.PathLike, num_channels: int) -> list[sitk.Image]:
    """Read a file that holds ``num_channels`` channels (an MSD multi-modal image).

    The channels are the volumes along the 4th axis (or the components of a vector image); a 3D
    scalar file is accepted when ``num_channels == 1``.

    Raises:
        ImageFileError: as :func:`read_image`, or when the number of volumes is not ``num_channels``.
    """
    if num_channels == 1:
        return [read_image(path)]
    reader, dim, size, comps = _open(path)
    found = size[3] if dim == 4 else comps if dim == 3 else 1
    if dim not in (3, 4) or (dim == 4 and comps != 1) or found != num_channels:
        raise ImageFileError(
            path,
            f"holds {found} volume(s) (dimension {dim}, size {'x'.join(map(str, size))}, {comps} component(s)) "
            f"but dataset.json declares {num_channels} channels",
            "make dataset.json 'modality' list one entry per volume of the 4D image",
        )
    image = _execute(reader, path)
    if dim == 4:
        return [image[:, :, :, c] for c in range(num_channels)]
    return [sitk.VectorIndexSelectionCast(image, c) for c in range(num_channels)]


def _open(path: str | os.PathLike) -> tuple[sitk.ImageFileReader, int, tuple[int, ...], int]:
    path = Path(path)
    if not path.exists():
        raise ImageFileError(path, "file not found", "add the file or fix its name")
    if not path.is_file():
        raise ImageFileError(path, "is not a file", "point to an image file")
    problem = _nifti_problem(path)
    if problem:
        raise ImageFileError(path, *problem)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageFileError(path, f"is not a readable image ({_sitk_reason(exc)})", _FIX_REEXPORT) from None
    return reader, reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents()


def _execute(reader: sitk.ImageFileReader, path: str | os.PathLike) -> sitk.Image:
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageFileError(path, f"is corrupt or truncated ({_sitk_reason(exc)})", _FIX_REEXPORT) from None
    if not str(path).lower().endswith((".nii", ".nii.gz")):  # NIfTI was scanned before ITK zero-filled NaN/Inf
        check_finite(sitk.GetArrayViewFromImage(image), path)
    return image


def _raise_multi_component(path: str | os.PathLike, comps: int, expected: int) -> None:
    if is_slicer_segmentation(path):
        raise ImageFileError(
            path,
            f"is a Slicer segmentation with {comps} layers (overlapping segments); expected a single-layer label map",
            "in Slicer, make the segments non-overlapping (or 'Export to label map') and save again",
        )
    raise ImageFileError(
        path,
        f"has {comps} components per voxel (a vector or RGB image); expected {expected}",
        "convert it to a scalar (grey-value) image, or save each component as its own channel file",
    )


def _sitk_reason(exc: RuntimeError) -> str:
    """SimpleITK's messages start with C++ source locations; keep the last meaningful line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # "Reason: <errno text>" is a stale errno (e.g. "No such file or directory" for a short file).
    lines = [ln for ln in lines if not ln.startswith(("Exception thrown in", "Reason:"))] or lines
    reason = lines[-1] if lines else "unknown error"
    return re.sub(r"^(sitk::ERROR|ITK ERROR): (\w+\(0x[0-9a-f]+\): )?", "", reason)


class _NiftiLayout(NamedTuple):
    vox_offset: int
    nbytes: int
    float_dtype: np.dtype | None  # element type scanned for NaN/Inf (complex types as their float parts)


_NIFTI_FLOAT_CODES = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}  # float32, float64, complex64, complex128


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:  # NIfTI-1
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            dims = struct.unpack(endian + "8h", header[40:56])
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:  # NIfTI-2
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or any(d <= 0 for d in dims[1 : ndim + 1]):
        return None
    nbytes = int(np.prod(dims[1 : ndim + 1], dtype=np.int64)) * bitpix // 8
    code = _NIFTI_FLOAT_CODES.get(datatype)
    return _NiftiLayout(vox_offset, nbytes, np.dtype(endian + code) if code else None)


def _nifti_problem(path: Path) -> tuple[str, str] | None:
    """(reason, fix) when a NIfTI file is truncated or holds NaN/Inf.

    ITK's NIfTI reader silently zero-fills both (missing bytes, and NaN/Inf values), so they are
    detected here from the raw bytes: the header gives the payload size and the element type.
    """
    name = path.name.lower()
    gz = name.endswith(".nii.gz")
    if not (gz or name.endswith(".nii")):
        return None
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
            header = fh.read(544)
    except (OSError, EOFError, zlib.error):
        return ("is not a valid gzip-compressed NIfTI file", _FIX_REEXPORT) if gz else None
    layout = _nifti_layout(header)
    if layout is None:
        return None  # not a header we understand: let ITK judge
    end = layout.vox_offset + layout.nbytes
    if not gz and layout.float_dtype is None:
        size = path.stat().st_size
        return (
            (f"is truncated: it holds {size} bytes but its NIfTI header needs {end}", _FIX_REEXPORT)
            if size < end
            else None
        )
    pos, rest, n_nan, n_bad = 0, b"", 0, 0
    chunks = _FileChunks(path, gz)
    for chunk in chunks:
        lo, hi = max(layout.vox_offset - pos, 0), min(end - pos, len(chunk))
        if layout.float_dtype is not None and hi > lo:
            buf = rest + chunk[lo:hi]
            n = len(buf) // layout.float_dtype.itemsize * layout.float_dtype.itemsize
            values = np.frombuffer(buf[:n], layout.float_dtype)
            finite = np.isfinite(values)
            if not finite.all():
                n_nan += int(np.isnan(values).sum())
                n_bad += int(finite.size - finite.sum())
            rest = buf[n:]
        pos += len(chunk)
    if gz and not chunks.complete:
        return "is truncated (the gzip stream ends before its end marker)", _FIX_REEXPORT
    if pos < end:
        return f"is truncated: it holds {pos} bytes but its NIfTI header needs {end}", _FIX_REEXPORT
    if n_bad:
        return _non_finite_reason(n_nan, n_bad - n_nan)
    return None


class _FileChunks:
    """Iterate the (decompressed) bytes of a file; ``complete`` tells whether every gzip member ended."""

    def __init__(self, path: Path, gz: bool) -> None:
        self.path, self.gz, self.complete = path, gz, True

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            if not self.gz:
                while chunk := fh.read(1 << 22):
                    yield chunk
                return
            decomp = zlib.decompressobj(wbits=31)
            try:
                while chunk := fh.read(1 << 20):
                    while chunk:
                        # Bounded output: 1 MB of a zero-filled label map can inflate to gigabytes.
                        yield decomp.decompress(chunk, 1 << 24)
                        if not decomp.eof:
                            chunk = decomp.unconsumed_tail
                        elif chunk := decomp.unused_data:  # another gzip member follows
                            decomp = zlib.decompressobj(wbits=31)
            except zlib.error:
                self.complete = False
                return
            self.complete = decomp.eof


def _non_finite_reason(n_nan: int, n_inf: int) -> tuple[str, str]:
    return (
        f"has {n_nan} NaN and {n_inf} infinite voxel value(s)",
        "replace them with a valid intensity (e.g. the background value) and save the file again",
    )


# ---------------------------------------------------------------------------------------------- arrays
def image_to_array(image: sitk.Image) -> np.ndarray:
    """Voxel values as a ``(D, H, W)`` array (a copy)."""
    return sitk.GetArrayFromImage(image)


def check_finite(array: np.ndarray, path: str | os.PathLike) -> None:
    """Raise ImageFileError naming ``path`` when ``array`` holds NaN or infinite values."""
    if array.dtype.kind not in "fc":
        return  # integer images are always finite
    finite = np.isfinite(array)
    if finite.all():
        return
    n_nan = int(np.isnan(array).sum())
    raise ImageFileError(path, *_non_finite_reason(n_nan, int(finite.size - finite.sum()) - n_nan))


def spacing_dhw(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel size in mm in ``(D, H, W)`` order."""
    sx, sy, sz = image.GetSpacing()
    return (float(sz), float(sy), float(sx))


def shape_dhw(image: sitk.Image) -> tuple[int, int, int]:
    """Image size in voxels in ``(D, H, W)`` order."""
    x, y, z = image.GetSize()
    return (int(z), int(y), int(x))


def geometry_of(image: sitk.Image) -> Geometry:
    return Geometry(
        shape=shape_dhw(image),
        spacing=spacing_dhw(image),
        origin=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
    )


def geometry_differences(a: Geometry, b: Geometry, rtol: float = 1e-3) -> list[str]:
    """Human-readable differences between two geometries; empty when they match.

    Sizes must be equal. Spacings must agree to ``rtol`` relative; origins to ``rtol`` times the
    largest voxel size (an origin has no natural scale of its own); direction cosines to ``rtol``.
    """
    out = []
    if a.shape != b.shape:
        out.append(f"size (D, H, W) {_fmt(a.shape)} vs {_fmt(b.shape)}")
    if not np.allclose(a.spacing, b.spacing, rtol=rtol, atol=0.0):
        out.append(f"spacing (D, H, W) {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm")
    if np.max(np.abs(np.subtract(a.origin, b.origin))) > rtol * max(max(a.spacing), max(b.spacing)):
        out.append(f"origin (x, y, z) {_fmt(a.origin)} vs {_fmt(b.origin)} mm")
    if np.max(np.abs(np.subtract(a.direction, b.direction))) > rtol:
        out.append(f"direction {_fmt(a.direction)} vs {_fmt(b.direction)}")
    return out


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + ")"


def image_from_array(
    array: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    direction: tuple[float, ...],
) -> sitk.Image:
    """A SimpleITK image from a ``(D, H, W)`` array, ``(D, H, W)`` spacing and (x, y, z) origin/direction."""
    if array.ndim != 3:
        raise DataError(f"expected a 3D (D, H, W) array, got shape {array.shape}")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path`` with the same file ending; on success it replaces ``path``.

    On any error the temp file is removed, so a partial file never appears under ``path``.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"cannot write {path}: folder {folder} does not exist")
    ending = file_ending(path)
    stem = path.name[: len(path.name) - len(ending)] if ending else path.name
    # Not tempfile.mkstemp: its files are mode 0600; this one gets the usual umask-based mode.
    tmp = folder / f".{stem}.{secrets.token_hex(6)}.tmp{ending}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_image(image: sitk.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` atomically (lossless compression where the format has it).

    Raises:
        DataError: the folder does not exist, or the format/ending cannot be written.
    """
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
    except RuntimeError as exc:
        raise DataError(f"cannot write {path}: {_sitk_reason(exc)}") from None
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
