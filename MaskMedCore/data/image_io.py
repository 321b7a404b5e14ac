"""Reading and writing medical images with clear errors (nnU-Net v2 §2.2: SimpleITK-readable files).

Every reader error is an :class:`ImageFileError` (a ``DataError``) that names the file, says what was
found and what was expected, and carries a suggested fix, so ``maskmed validate-dataset`` can list it.

Axis conventions: SimpleITK reports size, spacing and origin in (x, y, z) order; the NumPy array
from :func:`image_to_array` is ``(D, H, W)`` = (z, y, x). The helpers below return per-axis values in
``(D, H, W)`` order; origin and direction stay in SimpleITK's physical (x, y, z) order.

Supported files: anything SimpleITK reads (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ...),
Slicer's ``.seg.nrrd`` segmentation files with a single layer (read as a label map), and 2D images
(PNG, BMP, JPEG, TIFF, DICOM frames), read as volumes with one slice and their colours as channels
by the conventions of :mod:`MaskMedCore.data.natural_images`. Label maps are read with
:func:`read_label`, which refuses lossy (JPEG) and colour files.
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

from MaskMedCore.data.natural_images import (
    ColourLayout,
    Geometry2D,
    as_single_slice,
    for_writing,
    is_lossy,
    packs_channels,
    split_colour,
    unreadable_reason,
)
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
    """Read one scalar image as a 3D volume (a 4D file with a single volume is squeezed; a 2D file becomes
    one slice, see :mod:`~MaskMedCore.data.natural_images`).

    Raises:
        ImageFileError: the file is missing, corrupt or truncated, 4D with several volumes, has several
            components per voxel (colour and vector images, multi-layer ``.seg.nrrd``), or holds NaN/Inf
            values (ITK would silently turn those into 0 in NIfTI files).
    """
    return read_image_channels(path, 1)[0]


def read_image_channels(
    path: str | os.PathLike, num_channels: int, expected_by: str = "dataset.json"
) -> list[sitk.Image]:
    """Read a file that holds ``num_channels`` channels, each as a 3D scalar image.

    The channels are the volumes along the 4th axis of an MSD multi-modal image, the components of a
    vector image, or the colours of a 2D image (RGB: 3; alpha dropped); a scalar file holds one.

    Args:
        path: the image file.
        num_channels: the channels expected in it.
        expected_by: who expects them, for the error (``"dataset.json"`` or ``"the model"``).

    Raises:
        ImageFileError: as :func:`read_image`, or when the file does not hold ``num_channels`` channels.
    """
    reader, dim, size, comps = _open(path)
    if _is_single_slice_image(path, dim, size, comps):
        channels, layout = _read_single_slice(reader, path, dim)
        if len(channels) != num_channels:
            raise _channel_mismatch(path, layout, num_channels, expected_by)
        return channels
    if num_channels == 1:
        return [_read_scalar_volume(reader, path, dim, size, comps)]
    found = size[3] if dim == 4 else comps if dim == 3 else 1
    if dim not in (3, 4) or (dim == 4 and comps != 1) or found != num_channels:
        raise ImageFileError(
            path,
            f"holds {found} volume(s) (dimension {dim}, size {'x'.join(map(str, size))}, {comps} component(s)) "
            f"but {expected_by} declares {num_channels} channels",
            "make dataset.json 'modality' list one entry per volume of the 4D image",
        )
    image = _execute(reader, path)
    if dim == 4:
        return [image[:, :, :, c] for c in range(num_channels)]
    return [sitk.VectorIndexSelectionCast(image, c) for c in range(num_channels)]


def read_label(path: str | os.PathLike) -> sitk.Image:
    """Read a label map (one integer label per voxel) as :func:`read_image` does.

    Raises:
        ImageFileError: as :func:`read_image`; also for a JPEG file (lossy compression changes label
            values near every border) and a colour 2D image (it holds colours, not label values).
    """
    if is_lossy(path):
        raise ImageFileError(
            path,
            "is a JPEG file: JPEG compression is lossy and changes label values near every region border",
            f"save the label map losslessly as PNG ({Path(path).with_suffix('.png').name})",
        )
    reader, dim, size, comps = _open(path)
    if _is_single_slice_image(path, dim, size, comps):
        channels, layout = _read_single_slice(reader, path, dim)
        if len(channels) != 1:
            raise ImageFileError(
                path,
                f"is {layout.kind}; a label map holds one integer label value per pixel, not colours",
                "save the label values (0, 1, 2, ...) as a grey-value image (8- or 16-bit PNG); a colour-palette "
                "PNG must be saved as its palette indices",
            )
        return channels[0]
    return _read_scalar_volume(reader, path, dim, size, comps)


def input_geometry_2d(path: str | os.PathLike) -> Geometry2D | None:
    """The stored (x, y) geometry of a file SimpleITK reads as 2D; None for anything else.

    Outputs of a 2D input are written with it, so they have the input's exact header (e.g. a PNG's
    ``pHYs``, which reading ignores).
    """
    reader, dim, size, _ = _open(path)
    if dim != 2:
        return None
    return Geometry2D(tuple(size), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def _is_single_slice_image(path: str | os.PathLike, dim: int, size: tuple[int, ...], comps: int) -> bool:
    """A 2D file, or a colour file of a 2D format read as one slice (an RGB DICOM frame): colours become channels."""
    if dim == 2:
        return True
    return dim == 3 and size[2] == 1 and comps > 1 and packs_channels(Path(path).suffix)


def _read_single_slice(
    reader: sitk.ImageFileReader, path: str | os.PathLike, dim: int
) -> tuple[list[sitk.Image], ColourLayout]:
    image = _execute(reader, path)
    channels, layout = split_colour(image, path)
    if dim == 2:
        channels = [as_single_slice(c, path) for c in channels]
    return channels, layout


def _channel_mismatch(path: str | os.PathLike, layout: ColourLayout, expected: int, expected_by: str) -> ImageFileError:
    found = len(layout.keep)
    note = f"; {layout.note}" if layout.note else ""
    reason = (
        f"is {layout.kind} ({found} channel{'s' if found != 1 else ''}{note}) but {expected_by} expects "
        f"{expected} channel{'s' if expected != 1 else ''} in this file"
    )
    model = expected_by != "dataset.json"
    if found > expected:
        fix = (
            "use a model trained on colour images, or convert the image to grey-value (one channel)"
            if model
            else 'if the images are colour, list one channel per colour in dataset.json channel_names (e.g. {"0": '
            '"R", "1": "G", "2": "B"}) with one file per image (<case>_0000); otherwise save it as a grey-value image'
        )
    else:
        fix = (
            f"save it as a colour image with {expected} channels, or give each channel its own grey-value file "
            "(<case>_0000, <case>_0001, ...)"
        )
    return ImageFileError(path, reason, fix)


def _read_scalar_volume(
    reader: sitk.ImageFileReader, path: str | os.PathLike, dim: int, size: tuple[int, ...], comps: int
) -> sitk.Image:
    """The one 3D scalar volume of a 3D (or single-volume 4D) file."""
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
        known = unreadable_reason(path)
        if known:
            raise ImageFileError(path, *known) from None
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
    largest voxel size (an origin has no natural scale of its own) along the axes with more than one
    voxel (a 2D image's 999 mm through-plane spacing would loosen the check 1000x); direction cosines to ``rtol``.
    """
    out = []
    if a.shape != b.shape:
        out.append(f"size (D, H, W) {_fmt(a.shape)} vs {_fmt(b.shape)}")
    if not np.allclose(a.spacing, b.spacing, rtol=rtol, atol=0.0):
        out.append(f"spacing (D, H, W) {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm")
    if np.max(np.abs(np.subtract(a.origin, b.origin))) > rtol * max(_origin_scale(a), _origin_scale(b)):
        out.append(f"origin (x, y, z) {_fmt(a.origin)} vs {_fmt(b.origin)} mm")
    if np.max(np.abs(np.subtract(a.direction, b.direction))) > rtol:
        out.append(f"direction {_fmt(a.direction)} vs {_fmt(b.direction)}")
    return out


def _origin_scale(g: Geometry) -> float:
    extended = [s for s, n in zip(g.spacing, g.shape) if n > 1]
    return max(extended or g.spacing)


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

    A single-slice volume written to a PNG, BMP or TIFF file becomes a 2D image in a pixel type the format
    holds (:func:`~MaskMedCore.data.natural_images.for_writing`); JPEG is refused (lossy).

    Raises:
        DataError: the folder does not exist, or the format/ending cannot hold the image.
    """
    path = Path(path)
    image = for_writing(image, path)
    try:
        with atomic_output(path) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
    except RuntimeError as exc:
        raise DataError(f"cannot write {path}: {_sitk_reason(exc)}") from None
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
