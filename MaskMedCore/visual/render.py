"""Off-screen 3D render of a label map: one smooth surface per label, as Slicer's 3D view shows it.

Used for the README's picture of the demo segmentation and available for any result::

    python -m MaskMedCore.visual.render --out Resources/Screenshots/maskmed_demo_render.png

renders the demo phantom (``MaskMedCore.demo.DEMO_SEED``, the case ``maskmed demo`` segments) as
predicted by the bundled demo model, or its reference labels when the model file is absent
(``--reference`` forces that).

VTK is imported when a render is made (it is not a dependency of MaskMedCore: ``pip install vtk``; Slicer
ships it). Headless machines need no X server: the EGL window is used where VTK was built with it
(the PyPI wheel is), otherwise VTK's default window in off-screen mode (OSMesa or a hidden window).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MaskMedCore.errors import ConfigError, DataError, MaskMedError
from MaskMedCore.visual.png import write_png

#: Background gradient of Slicer's 3D view (bottom, top), RGB in [0, 1].
SLICER_3D_BACKGROUND = ((0.76, 0.76, 0.90), (1.0, 1.0, 1.0))
DEFAULT_OUTPUT = Path("Resources/Screenshots/maskmed_demo_render.png")


def render_segmentation_png(
    label_image: sitk.Image,
    path: str | os.PathLike,
    colors: Mapping[int, Sequence[int]] | np.ndarray,
    size: tuple[int, int] = (800, 600),
    names: Mapping[int, str] | None = None,
    smoothing_iterations: int = 20,
    azimuth: float = 150.0,
    elevation: float = 20.0,
) -> Path:
    """Render every non-zero label of ``label_image`` as a surface and write the view as a PNG.

    Surfaces come from VTK's discrete marching cubes on the label map (in physical space: spacing,
    origin and direction applied), smoothed with a windowed-sinc filter. The camera starts at the
    patient's front (anterior, head up: Slicer's default 3D view) and is turned by ``azimuth`` about the
    head-foot axis and raised by ``elevation``; the default (150, 20) looks from behind the patient's
    left side, so that the kidneys, which the liver hides from the front, are in view.

    Args:
        label_image: a 3D integer SimpleITK image; 0 is background.
        path: the PNG to write (atomically).
        colors: RGB 0-255 per label value, as ``{value: (r, g, b)}`` or a (K, 3) table indexed by value.
        size: (width, height) of the picture in pixels.
        names: optional ``{value: name}``; when given, a legend is drawn in the top-left corner.
        smoothing_iterations: windowed-sinc iterations (0 shows the raw voxel surfaces).
        azimuth, elevation: camera turn in degrees.

    Returns:
        ``path``.

    Raises:
        DataError: the image is not 3D integer labels or has no foreground.
        ConfigError: a bad size, or a label without a colour.
        MaskMedError: VTK is missing or cannot render here.
    """
    labels = _label_array(label_image)
    width, height = _check_size(size)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise DataError("label_image has no foreground label to render")
    table = _color_table(colors, values)
    vtk = _import_vtk()

    image = _vtk_image(vtk, label_image, labels)
    renderer = vtk.vtkRenderer()
    renderer.GradientBackgroundOn()
    renderer.SetBackground(*SLICER_3D_BACKGROUND[0])
    renderer.SetBackground2(*SLICER_3D_BACKGROUND[1])
    for value in values:
        renderer.AddActor(_surface_actor(vtk, image, label_image, value, table[value], smoothing_iterations))
    if names:
        _add_legend(vtk, renderer, [(names.get(v, str(v)), table[v]) for v in values], height)

    _place_camera(renderer, label_image, azimuth, elevation)
    window = _offscreen_window(vtk)
    window.AddRenderer(renderer)
    window.SetSize(width, height)
    window.SetMultiSamples(8)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    out = grab.GetOutput()
    w, h, _ = out.GetDimensions()
    from vtkmodules.util.numpy_support import vtk_to_numpy

    rgb = vtk_to_numpy(out.GetPointData().GetScalars()).reshape(h, w, -1)[::-1, :, :3]  # VTK rows go bottom-up
    window.Finalize()
    if rgb.size == 0 or int(rgb.max()) == int(rgb.min()):
        raise MaskMedError("VTK rendered an empty picture: off-screen OpenGL does not work on this machine")
    return write_png(np.ascontiguousarray(rgb, np.uint8), path)


def _label_array(label_image: sitk.Image) -> np.ndarray:
    if not isinstance(label_image, sitk.Image) or label_image.GetDimension() != 3:
        raise DataError(f"label_image must be a 3D SimpleITK image, got {type(label_image).__name__}")
    labels = sitk.GetArrayViewFromImage(label_image)  # (D, H, W)
    if not np.issubdtype(labels.dtype, np.integer) or label_image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"label_image must hold one integer label per voxel, got {label_image.GetPixelIDTypeAsString()}"
        )
    return labels


def _check_size(size) -> tuple[int, int]:
    try:
        width, height = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be (width, height) in pixels, got {size!r}") from None
    if width < 16 or height < 16 or width > 8192 or height > 8192:
        raise ConfigError(f"size must be between 16 and 8192 pixels per side, got {size!r}")
    return width, height


def _color_table(colors, values: list[int]) -> dict[int, tuple[float, float, float]]:
    if isinstance(colors, Mapping):
        lookup = {int(k): v for k, v in colors.items()}
    else:
        arr = np.asarray(colors)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ConfigError(f"colors must be {{value: (r, g, b)}} or a (K, 3) table, got shape {arr.shape}")
        lookup = {k: arr[k] for k in range(len(arr))}
    missing = [v for v in values if v not in lookup]
    if missing:
        raise ConfigError(f"colors has no entry for label value(s) {missing}")
    return {v: tuple(float(c) / 255.0 for c in lookup[v]) for v in values}


def _import_vtk():
    try:
        import vtkmodules.all as vtk
    except ImportError:
        raise MaskMedError("rendering needs VTK: pip install vtk (3D Slicer ships it)") from None
    return vtk


def _vtk_image(vtk, label_image: sitk.Image, labels: np.ndarray):
    """vtkImageData of the labels in index space (spacing 1, origin 0); physical space is applied per actor."""
    from vtkmodules.util.numpy_support import numpy_to_vtk

    D, H, W = labels.shape
    image = vtk.vtkImageData()
    image.SetDimensions(W, H, D)  # VTK's x, y, z = array W, H, D
    scalars = numpy_to_vtk(np.ascontiguousarray(labels, np.int32).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _index_to_physical(label_image: sitk.Image) -> np.ndarray:
    """4x4 matrix from continuous index (x, y, z) to physical LPS millimetres."""
    direction = np.array(label_image.GetDirection(), np.float64).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(label_image.GetSpacing())
    matrix[:3, 3] = label_image.GetOrigin()
    return matrix


def _surface_actor(vtk, image, label_image: sitk.Image, value: int, color, smoothing_iterations: int):
    cubes = vtk.vtkDiscreteMarchingCubes()
    cubes.SetInputData(image)
    cubes.SetValue(0, value)
    transform = vtk.vtkTransform()
    transform.SetMatrix(_index_to_physical(label_image).ravel().tolist())
    to_physical = vtk.vtkTransformPolyDataFilter()
    to_physical.SetTransform(transform)
    to_physical.SetInputConnection(cubes.GetOutputPort())
    last = to_physical
    if smoothing_iterations > 0:
        smooth = vtk.vtkWindowedSincPolyDataFilter()
        smooth.SetInputConnection(to_physical.GetOutputPort())
        smooth.SetNumberOfIterations(int(smoothing_iterations))
        smooth.SetPassBand(0.05)
        smooth.BoundarySmoothingOff()
        smooth.FeatureEdgeSmoothingOff()
        smooth.NonManifoldSmoothingOn()
        smooth.NormalizeCoordinatesOn()
        last = smooth
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(last.GetOutputPort())
    normals.SetFeatureAngle(60.0)
    normals.ConsistencyOn()
    normals.SplittingOff()
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    prop.SetColor(*color)
    prop.SetDiffuse(0.8)
    prop.SetAmbient(0.15)
    prop.SetSpecular(0.25)
    prop.SetSpecularPower(20.0)
    return actor


def _place_camera(renderer, label_image: sitk.Image, azimuth: float, elevation: float) -> None:
    """Anterior view in LPS: the camera sits at -y (the patient's front) with +z (head) up."""
    camera = renderer.GetActiveCamera()
    renderer.ResetCamera()
    focal = np.array(camera.GetFocalPoint())
    distance = camera.GetDistance()
    camera.SetPosition(*(focal + np.array((0.0, -distance, 0.0))))
    camera.SetViewUp(0.0, 0.0, 1.0)
    camera.Azimuth(azimuth)
    camera.Elevation(elevation)
    camera.OrthogonalizeViewUp()
    renderer.ResetCamera()
    camera.Zoom(1.25)
    renderer.ResetCameraClippingRange()


def _add_legend(vtk, renderer, entries: list[tuple[str, tuple]], height: int) -> None:
    font = max(12, height // 32)
    for i, (name, color) in enumerate(entries):
        text = vtk.vtkTextActor()
        text.SetInput(f" {name.replace('_', ' ')} ")
        props = text.GetTextProperty()
        props.SetFontSize(font)
        props.SetColor(0.05, 0.05, 0.08)
        props.BoldOn()
        props.SetBackgroundColor(*color)  # a colour chip per label, dark text on it
        props.SetBackgroundOpacity(1.0)
        text.SetDisplayPosition(12, height - 12 - (i + 1) * int(font * 1.4))
        renderer.AddViewProp(text)


def _offscreen_window(vtk):
    """An off-screen render window that needs no X server where VTK allows it."""
    window_class = getattr(vtk, "vtkEGLRenderWindow", None) or getattr(vtk, "vtkOSMesaRenderWindow", None)
    if window_class is not None:
        try:
            window = window_class()
            window.SetOffScreenRendering(1)
            return window
        except Exception:  # noqa: BLE001 - a VTK build without that backend: use the default window
            pass
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    return window


# ------------------------------------------------------------------------------------------ demo picture


def demo_labels(model: str | os.PathLike | None, reference: bool = False) -> tuple[sitk.Image, dict[int, str], str]:
    """Labels of the demo phantom (seed ``MaskMedCore.demo.DEMO_SEED``): ``(label image, {value: name}, what)``.

    The phantom is segmented with ``model`` (a checkpoint or run folder; None: the bundled demo model) on
    the CPU; with ``reference``, or when there is no model file, its reference labels are returned instead.
    """
    from MaskMedCore.data.phantom import PHANTOM_LABELS, generate_phantom
    from MaskMedCore.demo import DEMO_SEED, find_demo_model

    image, ref = generate_phantom(DEMO_SEED)
    if model is None and not reference:
        try:
            model = find_demo_model()
        except MaskMedError:
            model = None
    if reference or model is None or not Path(model).exists():
        return ref, {v: k for k, v in PHANTOM_LABELS.items()}, f"reference labels of phantom seed {DEMO_SEED}"
    from MaskMedCore.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(model, device="cpu")
    result = predictor.predict(image)
    names = dict(enumerate(predictor.label_names))
    return result.labels, names, f"prediction of {Path(model).name} on phantom seed {DEMO_SEED}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m MaskMedCore.visual.render", description="render the demo segmentation in 3D to a PNG"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUTPUT), help=f"PNG to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--model", help="checkpoint or run folder (default: the bundled demo model)")
    parser.add_argument("--reference", action="store_true", help="render the phantom's reference labels instead")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 600), metavar=("W", "H"))
    args = parser.parse_args(argv)
    from MaskMedCore.visual.png import label_colors

    try:
        labels, names, what = demo_labels(args.model, args.reference)
        table = label_colors(max(names) + 1, [names.get(v, "") for v in range(max(names) + 1)])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        render_segmentation_png(labels, args.out, table, tuple(args.size), names={k: v for k, v in names.items() if k})
    except MaskMedError as exc:
        print(f"render: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
