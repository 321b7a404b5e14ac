"""2D image files as single-slice volumes: PNG, BMP, JPEG, TIFF and DICOM frames (issue 13; nnU-Net v2's
``NaturalImage2DIO``).

:mod:`MaskMedCore.data.image_io` reads every file; this module holds what is specific to 2D formats:
which endings they have, how a 2D image becomes a volume, how colour becomes channels, and how a
label map or probability map is written back into a 2D format. The conventions:

- **Single slice.** A file that SimpleITK reads as 2D (every PNG, BMP and JPEG, a one-page TIFF, and a
  2D NIfTI/NRRD/MHA) becomes a volume with one slice: arrays ``(1, H, W)`` per channel, spacing
  ``(999, sy, sx)`` in (D, H, W) order, origin ``(ox, oy, 0)``, the 2x2 direction embedded in 3x3.
  The through-plane spacing is nnU-Net's ``NaturalImage2DIO`` value, so a MaskMed plan of 2D images
  matches nnU-Net's: the planner's rules never pool or convolve (kernel 1) along an axis 999x
  coarser than the others, and an nnU-Net model trained on natural images sees the spacing it was
  planned with. Volumes computed from it (``class_volumes_ml``) mean nothing for a 2D input, so
  ``maskmed predict`` adds ``class_areas_mm2`` for those.
- **In-plane spacing.** PNG, BMP and JPEG: 1 mm. Their resolution fields (PNG ``pHYs``, JPEG/BMP dots
  per inch) are print settings that tools fill with 72, 96 or 300 dpi; taking them as pixel sizes
  would make images and masks from different tools disagree. TIFF: its resolution tags, as SimpleITK
  reads them (microscopy and scanner TIFFs carry real pixel sizes). A 2D NIfTI/NRRD/MHA: its header.
- **DICOM.** SimpleITK reads a single frame as a 3D volume with one slice: in-plane spacing from
  PixelSpacing (or ImagerPixelSpacing), origin and direction from ImagePositionPatient and
  ImageOrientationPatient, through-plane spacing as SimpleITK reports it (1 mm for a lone frame). It is
  kept as read, like any 3D file with one slice (``.nii.gz``, ``.nrrd``, ``.mha``), which carries its own.
- **Colour.** One file holds every channel of a colour image (nnU-Net's convention: ``<case>_0000.png``
  with RGB pixels and dataset.json ``channel_names`` ``{"0": "R", "1": "G", "2": "B"}``). RGB is 3
  channels; RGBA is 3 (the alpha channel is transparency, not signal, and is dropped); grey + alpha is
  1 (a PNG of grey + alpha is refused with its fix: SimpleITK cannot read it). A palette image whose
  palette is grey is 1 channel (SimpleITK expands palettes to RGB; an 8-bit BMP, as SimpleITK writes a
  grey one, is always a palette image). A grey image stored as RGB (three identical channels, no
  palette) is kept as stored: 3 channels. Vector pixels of other formats (a 2D NRRD) are all channels.
- **Labels** hold one integer per pixel: colour label images are refused, and so is JPEG, whose lossy
  compression changes values near every border. A dataset whose images are JPEG keeps its labels as
  PNG (``labelsTr/<case>.png``).
- **Writing** (:func:`for_writing`): PNG holds uint8 or uint16, BMP uint8, TIFF integers or float32;
  JPEG is never written. An integer map goes out in the smallest of uint8/uint16 that holds it.
  ``maskmed predict`` writes the outputs of a PNG, BMP or TIFF input in the input's format, those of a
  JPEG input as PNG (lossless) and those of a DICOM input as ``.nii.gz`` (which keeps the frame's
  spacing, origin and orientation; a PNG would lose them); probability maps of PNG/BMP/JPEG inputs as
  float32 TIFF (:func:`output_endings`). The summary says so when the ending changes.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from MaskMedCore.errors import DataError

THROUGH_PLANE_SPACING = 999.0
"""Spacing (mm) along D of a volume made from a 2D image (nnU-Net's NaturalImage2DIO)."""

NATURAL_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
UNIT_SPACING_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg")
"""Formats whose stored resolution is a print setting: read with 1 mm pixels."""
LOSSY_ENDINGS = (".jpg", ".jpeg")
DICOM_ENDINGS = (".dcm", ".dicom")
PACKED_CHANNEL_ENDINGS = NATURAL_ENDINGS + DICOM_ENDINGS
"""Formats where one file may hold every channel of a case (colour pixels)."""
LABEL_ENDING_FOR_LOSSY = ".png"
MAP_ENDING_FOR_INTEGER_FORMATS = ".tif"
"""Probability maps of PNG/BMP/JPEG inputs: those formats hold no floating-point values."""
_INTEGER_ONLY_ENDINGS = (".png", ".bmp")
_MAX_VALUE = {".png": 65535, ".bmp": 255}


def lower_ending(path: str | os.PathLike) -> str:
    """The last suffix, lower-cased: ``.png`` for ``a/B.PNG`` (2D formats have no compound endings)."""
    return Path(path).suffix.lower()


def is_lossy(path: str | os.PathLike) -> bool:
    return lower_ending(path) in LOSSY_ENDINGS


def packs_channels(ending: str) -> bool:
    """True when a file with this ending may hold several channels as colour pixels."""
    return ending.lower() in PACKED_CHANNEL_ENDINGS


def label_endings(file_ending: str) -> tuple[str, ...]:
    """Endings under which a dataset with image ending ``file_ending`` keeps its label maps, preferred first.

    JPEG datasets keep labels as PNG; a ``.jpg`` label is still listed so validation can refuse it by name.
    """
    if file_ending.lower() in LOSSY_ENDINGS:
        return (LABEL_ENDING_FOR_LOSSY, file_ending)
    return (file_ending,)


# ---------------------------------------------------------------------------------------------- colour
class ColourLayout(NamedTuple):
    """How the components of a 2D file become channels.

    Attributes:
        keep: component indices kept as channels, in order.
        kind: what the file is, for messages (``"an RGB colour image"``).
        note: what was dropped or merged, or ``""``.
    """

    keep: tuple[int, ...]
    kind: str
    note: str = ""


def colour_layout(num_components: int, palette: bool = False, grey: bool = False) -> ColourLayout:
    """The channels of a 2D image with ``num_components`` components per pixel.

    Args:
        num_components: SimpleITK's components per pixel.
        palette: the file is a palette image (SimpleITK expanded it to RGB).
        grey: with ``palette``: its three channels are identical, so it is read as one grey channel.
    """
    if palette and grey:
        return ColourLayout((0,), "a grey palette image", "its palette is grey: read as one grey channel")
    if num_components == 1:
        return ColourLayout((0,), "a grey-value image")
    if num_components == 2:
        return ColourLayout((0,), "a grey image with an alpha channel", "alpha (transparency) channel dropped")
    if num_components == 3:
        return ColourLayout((0, 1, 2), "a colour-palette image (read as RGB)" if palette else "an RGB colour image")
    if num_components == 4:
        return ColourLayout((0, 1, 2), "an RGBA colour image", "alpha (transparency) channel dropped")
    return ColourLayout(tuple(range(num_components)), f"an image with {num_components} components per pixel")


def unreadable_reason(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(reason, fix)`` for 2D files SimpleITK cannot read at all (a PNG of grey + alpha), else None."""
    if lower_ending(path) != ".png":
        return None
    try:
        with open(path, "rb") as fh:
            header = fh.read(26)
    except OSError:
        return None
    if len(header) >= 26 and header[12:16] == b"IHDR" and header[25] == 4:  # colour type 4: grey + alpha
        return (
            "is a grey PNG with an alpha (transparency) channel, which SimpleITK cannot read",
            "save it without the alpha channel (an 8- or 16-bit grey PNG)",
        )
    return None


def is_palette_file(path: str | os.PathLike) -> bool:
    """True for a PNG of colour type 3 (palette) or a BMP of 8 bits or fewer per pixel (always a palette).

    SimpleITK expands both into RGB pixels, so a grey palette image would otherwise read as colour.
    """
    ending = lower_ending(path)
    if ending not in (".png", ".bmp"):
        return False
    try:
        with open(path, "rb") as fh:
            header = fh.read(30)
    except OSError:
        return False
    if ending == ".png":
        # 8-byte signature, then the IHDR chunk: length, "IHDR", width, height, bit depth, colour type.
        return len(header) >= 26 and header[12:16] == b"IHDR" and header[25] == 3
    # BITMAPFILEHEADER (14 bytes), then the info header; biBitCount at byte 28 (BITMAPCOREHEADER: 24).
    if len(header) < 30 or header[:2] != b"BM":
        return False
    info_size = struct.unpack("<I", header[14:18])[0]
    bits = struct.unpack("<H", header[24:26] if info_size == 12 else header[28:30])[0]
    return bits <= 8


def split_colour(image: sitk.Image, path: str | os.PathLike) -> tuple[list[sitk.Image], ColourLayout]:
    """A 2D (or single-slice) image's channels, scalar images in order.

    Files of a colour format (PNG, BMP, JPEG, TIFF, DICOM) follow :func:`colour_layout` (alpha dropped,
    grey palettes merged); other formats (a 2D NRRD, say) keep every component as a channel.
    """
    comps = image.GetNumberOfComponentsPerPixel()
    if comps == 1:
        return [image], colour_layout(1)
    parts = [sitk.VectorIndexSelectionCast(image, c) for c in range(comps)]
    if not packs_channels(lower_ending(path)):
        return parts, ColourLayout(tuple(range(comps)), f"a vector image with {comps} components per pixel")
    palette = comps == 3 and is_palette_file(path)
    grey = False
    if palette:
        first = sitk.GetArrayViewFromImage(parts[0])
        grey = all(np.array_equal(first, sitk.GetArrayViewFromImage(p)) for p in parts[1:])
    layout = colour_layout(comps, palette, grey)
    return [parts[c] for c in layout.keep], layout


# ---------------------------------------------------------------------------------------------- geometry
def as_single_slice(image: sitk.Image, path: str | os.PathLike) -> sitk.Image:
    """A 2D scalar image -> a 3D volume with one slice, by the conventions of this module.

    The in-plane spacing is 1 mm for PNG/BMP/JPEG, the header's otherwise; D spacing is
    :data:`THROUGH_PLANE_SPACING`.
    """
    assert image.GetDimension() == 2, image.GetDimension()
    sx, sy = (1.0, 1.0) if lower_ending(path) in UNIT_SPACING_ENDINGS else image.GetSpacing()
    ox, oy = image.GetOrigin()
    d = image.GetDirection()
    volume = sitk.JoinSeries([image])
    volume.SetSpacing((float(sx), float(sy), THROUGH_PLANE_SPACING))
    volume.SetOrigin((float(ox), float(oy), 0.0))
    volume.SetDirection((d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0))
    return volume


class Geometry2D(NamedTuple):
    """The stored geometry of a 2D file, in SimpleITK's (x, y) order (used to write outputs like it)."""

    size: tuple[int, int]
    spacing: tuple[float, float]
    origin: tuple[float, float]
    direction: tuple[float, float, float, float]


def to_2d(image: sitk.Image, geometry: Geometry2D | None = None) -> sitk.Image:
    """A single-slice 3D image (or a 2D one) -> a 2D image.

    Args:
        image: 3D with one slice, or 2D (returned as is unless ``geometry`` is given).
        geometry: the 2D file's own geometry, set on the result (its size must match); default: the
            in-plane part of ``image``'s geometry (direction: the in-plane 2x2 block when it is a
            rotation, else identity).

    Raises:
        DataError: the image has more than one slice, or its size is not ``geometry.size``.
    """
    if image.GetDimension() == 3:
        x, y, z = image.GetSize()
        if z != 1:
            raise DataError(f"a volume of {z} slices (size {x}x{y}x{z}) cannot be stored as a 2D image")
        flat = _first_slice(image)
    else:
        flat = image
    if geometry is not None:
        if tuple(flat.GetSize()) != tuple(geometry.size):
            raise DataError(f"2D image of size {flat.GetSize()} does not match the input's size {geometry.size}")
        flat.SetSpacing(geometry.spacing)
        flat.SetOrigin(geometry.origin)
        flat.SetDirection(geometry.direction)
    return flat


def _first_slice(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)[0]  # (1, H, W[, C]) -> (H, W[, C])
    flat = sitk.GetImageFromArray(array, isVector=image.GetNumberOfComponentsPerPixel() > 1)
    flat.SetSpacing(image.GetSpacing()[:2])
    flat.SetOrigin(image.GetOrigin()[:2])
    d = np.reshape(image.GetDirection(), (3, 3))[:2, :2]
    rotation = np.allclose(d @ d.T, np.eye(2), atol=1e-6)
    flat.SetDirection(tuple(float(v) for v in (d.ravel() if rotation else np.eye(2).ravel())))
    return flat


# ---------------------------------------------------------------------------------------------- writing
def for_writing(image: sitk.Image, path: str | os.PathLike) -> sitk.Image:
    """``image`` prepared for a PNG, BMP or TIFF file: 2D, and a pixel type the format holds.

    Integer maps become the smallest of uint8/uint16 that holds their values (BMP: uint8 only);
    float maps go to TIFF as float32. Other endings: ``image`` unchanged.

    Raises:
        DataError: naming the file: a JPEG target (lossy), several slices, values out of the format's
            range, or floating-point values for PNG/BMP; each with the format to use instead.
    """
    ending = lower_ending(path)
    if ending in LOSSY_ENDINGS:
        raise DataError(
            f"cannot write {path}: JPEG compression is lossy and would change label values; write .png instead"
        )
    if ending not in NATURAL_ENDINGS:
        return image
    try:
        flat = to_2d(image)
    except DataError as exc:
        raise DataError(f"cannot write {path}: {exc}; use .nii.gz or .nrrd for volumes") from None
    if flat.GetNumberOfComponentsPerPixel() > 1:
        return flat  # colour images go out as they are
    array = sitk.GetArrayViewFromImage(flat)
    if array.dtype.kind == "f":
        if ending in _INTEGER_ONLY_ENDINGS:
            raise DataError(
                f"cannot write {path}: it holds floating-point values, which {ending} cannot store; "
                f"use {MAP_ENDING_FOR_INTEGER_FORMATS} or .nii.gz"
            )
        return sitk.Cast(flat, sitk.sitkFloat32) if array.dtype != np.float32 else flat
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    limit = _MAX_VALUE.get(ending, 65535)
    if lo < 0 or hi > limit:
        if ending in _INTEGER_ONLY_ENDINGS:
            instead = ".png (up to 65535) or .tif" if ending == ".bmp" else ".tif or .nii.gz"
            raise DataError(f"cannot write {path}: values {lo}..{hi} do not fit {ending} (0..{limit}); use {instead}")
        return flat  # TIFF keeps wider and signed integer types
    return sitk.Cast(flat, sitk.sitkUInt8 if hi <= 255 else sitk.sitkUInt16)


class OutputEndings(NamedTuple):
    """Endings of ``maskmed predict``'s outputs for one input, and why they differ from the input's.

    Attributes:
        labels: ending of the label map (and instance map).
        maps: ending of the per-query probability maps.
        labels_reason: why ``labels`` is not the input's ending (``""`` when it is).
        maps_reason: why ``maps`` is not the input's ending (``""`` when it is).
    """

    labels: str
    maps: str
    labels_reason: str = ""
    maps_reason: str = ""


def output_endings(input_ending: str) -> OutputEndings:
    """The endings ``maskmed predict`` writes for an input with ``input_ending`` (rules in the module docstring).

    Inputs that are not 2D formats keep their ending, except ``.seg.nrrd`` (label maps go to ``.nii.gz``).
    """
    ending = input_ending.lower()
    if ending == ".seg.nrrd":
        why = "a Slicer .seg.nrrd input: outputs are written as .nii.gz"
        return OutputEndings(".nii.gz", ".nii.gz", why, why)
    if ending in LOSSY_ENDINGS:
        return OutputEndings(
            LABEL_ENDING_FOR_LOSSY,
            MAP_ENDING_FOR_INTEGER_FORMATS,
            "JPEG input: JPEG is lossy, so label maps are written as PNG (lossless)",
            "JPEG input: probability maps are written as float32 TIFF",
        )
    if ending in DICOM_ENDINGS:
        why = "DICOM input: outputs are written as .nii.gz, which keeps the frame's spacing, origin and orientation"
        return OutputEndings(".nii.gz", ".nii.gz", why, why)
    if ending in _INTEGER_ONLY_ENDINGS:
        why = f"{ending} holds no floating-point values: probability maps are written as float32 TIFF"
        return OutputEndings(input_ending, MAP_ENDING_FOR_INTEGER_FORMATS, "", why)
    return OutputEndings(input_ending, input_ending)
