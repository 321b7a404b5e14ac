"""``maskmed predict``: segment files or a folder with a trained run or checkpoint.

Inputs are 3D volumes or 2D images (PNG, BMP, JPEG, TIFF, DICOM frames), read as volumes with one slice
(:mod:`MaskMedCore.data.natural_images`); a colour 2D image is one file that holds the model's channels.
The outputs of a 2D input are 2D files with the input's exact stored geometry, in the input's format where
it is lossless (PNG, BMP, TIFF); JPEG inputs give PNG label maps, DICOM inputs ``.nii.gz``
(:func:`~MaskMedCore.data.natural_images.output_endings`), and ``<case>_summary.json`` says why in
``output_endings``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from MaskMedCore.errors import DataError, MaskMedError

# 3D formats, then the 2D ones of MaskMedCore.data.natural_images (PACKED_CHANNEL_ENDINGS), listed here so that
# 'maskmed --help' imports no image library.
IMAGE_ENDINGS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")
IMAGE_ENDINGS += (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment images with a trained run folder, checkpoint or bundled model")
    p.add_argument(
        "-m",
        "--model",
        required=True,
        help="run folder (uses its best checkpoint), checkpoint file, a bundled model's name (see 'maskmed models'), "
        "or an nnU-Net v2 result folder (nnUNet_results/DatasetXXX/Trainer__Plans__configuration)",
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        nargs="+",
        help="a folder (nnU-Net naming <case>_0000<ending>, ...), or the channel files of one case in order; 2D "
        "images (PNG, BMP, JPEG, TIFF, DICOM) are single slices, a colour image one file holding every channel",
    )
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument(
        "--tta",
        action="store_true",
        help="mirroring test-time augmentation (8x slower); nnU-Net models mirror over their checkpoint's allowed "
        "axes (nnU-Net's own default is on: pass --tta to match nnUNetv2_predict)",
    )
    p.add_argument(
        "--step-size",
        type=float,
        default=0.5,
        help="sliding-window step as a fraction of the patch (nnU-Net's tile_step_size; default 0.5)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="network arithmetic: auto (bfloat16 on CUDA, float32 on the CPU), fp32, or bf16 (also on CPUs with "
        "native bfloat16, about 2x faster there; Dice cost in BENCHMARKS.md, Fast setting)",
    )
    p.add_argument(
        "--folds",
        nargs="+",
        help="nnU-Net models: folds to ensemble, e.g. 0 1 2 3 4 or all (default: every trained numbered fold)",
    )
    p.add_argument(
        "--checkpoint",
        default="final",
        help="nnU-Net models: final, best, latest or a checkpoint file name in fold_X (default final)",
    )
    p.add_argument(
        "--instance-threshold",
        type=float,
        default=0.5,
        help="models with instance classes: minimum instance score (class probability x mean mask probability) "
        "in (0, 1] (default 0.5); instances go to <case>_instances<ending> and the summary",
    )
    p.add_argument("--save-queries", action="store_true", help="write each query's mask probability map")
    p.add_argument("--save-embeddings", action="store_true", help="write class/mask embeddings (.npz)")
    p.add_argument(
        "--output-format",
        help="file ending of the outputs, e.g. .nii.gz (default: the input's; JPEG inputs give .png, DICOM inputs "
        ".nii.gz, and probability maps of PNG/BMP/JPEG inputs .tif)",
    )
    p.add_argument(
        "--tile-batch",
        type=int,
        default=None,
        help="sliding-window tiles per network call (default: 2 on GPU; 1 on CPU unless the tile is small)",
    )
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.set_defaults(func=run)


def split_ending(path: Path) -> tuple[str, str]:
    """("case_0000", ".nii.gz") for case_0000.nii.gz."""
    name = path.name
    for ending in IMAGE_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)], name[len(name) - len(ending) :]
    return path.stem, path.suffix


def group_cases(inputs: list[str], num_channels: int) -> dict[str, tuple[list[Path], str]]:
    """case id -> (channel files in order, file ending).

    A case of a 2D format (PNG, BMP, JPEG, TIFF, DICOM) with only ``<case>_0000`` (or one file given) may hold
    every channel as colours: its list then has that one file, and reading it checks the channel count.
    """
    from MaskMedCore.data.natural_images import packs_channels

    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise DataError(f"input {p} does not exist")
    if len(paths) == 1 and paths[0].is_dir():
        files = sorted(
            f for f in paths[0].iterdir() if f.is_file() and not f.name.startswith(".") and _is_image_file(f)
        )
        cases: dict[str, dict[int, Path]] = {}
        endings: dict[str, str] = {}
        for f in files:
            stem, ending = split_ending(f)
            match = _CHANNEL.match(stem)
            case, channel = (match["case"], int(match["channel"])) if match else (stem, 0)
            cases.setdefault(case, {})[channel] = f
            endings[case] = ending
        if not cases:
            raise DataError(f"input folder {paths[0]} holds no image files ({', '.join(IMAGE_ENDINGS)})")
        out = {}
        for case, chans in cases.items():
            if sorted(chans) == [0] and num_channels > 1 and packs_channels(endings[case]):
                out[case] = ([chans[0]], endings[case])  # a colour image: its pixels hold the channels
                continue
            if sorted(chans) != list(range(num_channels)):
                raise DataError(
                    f"case {case} in {paths[0]} has channels {sorted(chans)}; the model needs "
                    f"{list(range(num_channels))} (files <case>_0000, <case>_0001, ...; a colour 2D image may hold "
                    "them all in <case>_0000)"
                )
            out[case] = ([chans[c] for c in range(num_channels)], endings[case])
        return out
    if any(p.is_dir() for p in paths):
        raise DataError("give either one input folder or the channel files of one case, not a mix")
    stem, ending = split_ending(paths[0])
    packed = len(paths) == 1 and num_channels > 1 and packs_channels(ending)
    if len(paths) != num_channels and not packed:
        raise DataError(f"the model needs {num_channels} channel file(s), got {len(paths)}: {[str(p) for p in paths]}")
    match = _CHANNEL.match(stem)
    return {match["case"] if match else stem: (paths, ending)}


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_ENDINGS)


def read_case_input(files: list[Path], channel_names) -> list:
    """The model's C channels of one case as 3D SimpleITK images, from one file per channel or one colour file.

    Raises:
        DataError: naming the file, when it cannot be read or holds another number of channels.
    """
    from MaskMedCore.data.image_io import read_image_channels

    expected_by = f"the model (channels {list(channel_names)})"
    if len(files) == 1:
        return read_image_channels(files[0], len(channel_names), expected_by=expected_by)
    return [read_image_channels(f, 1, expected_by=expected_by)[0] for f in files]


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.bundled_models import resolve_model
    from MaskMedCore.engine.progress import ProgressReporter
    from MaskMedCore.inference.predictor import Predictor
    from MaskMedCore.nnunet import is_nnunet_result_folder

    if not 0 < args.step_size <= 1:
        raise DataError(f"--step-size must be in (0, 1], got {args.step_size}")
    if not 0 < args.instance_threshold <= 1:
        raise DataError(f"--instance-threshold must be in (0, 1], got {args.instance_threshold}")
    model = resolve_model(args.model)  # a path, or a bundled model's name such as "hippocampus"
    if is_nnunet_result_folder(model):
        predictor = Predictor.from_nnunet(
            model,
            device=args.device,
            folds=args.folds,
            checkpoint=args.checkpoint,
            tta=args.tta,
            step_size=args.step_size,
            tile_batch_size=args.tile_batch,
            precision=args.precision,
        )
    else:
        if args.folds:
            raise DataError(f"--folds applies to nnU-Net result folders; {model} is a MaskMed model")
        predictor = Predictor.from_checkpoint(
            model,
            device=args.device,
            tta=args.tta,
            tile_batch_size=args.tile_batch,
            overlap=1.0 - args.step_size,
            precision=args.precision,
        )
    cases = group_cases(args.input, len(predictor.channel_names))
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MaskMedError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    reporter = ProgressReporter(args.progress if args.progress != "bar" else "none", total_iterations=len(cases))
    progress = CaseProgress(args.progress, len(cases))
    failed = 0
    try:
        for n, (case, (files, ending)) in enumerate(cases.items(), start=1):
            progress.start_case(case, n)
            try:
                result = predict_case(predictor, files, args, progress.tiles)
                written = write_case(result, out_dir, case, files[0], ending, args)
            except MaskMedError as exc:
                failed += 1
                progress.write(f"maskmed predict: case {case}: error: {exc}")
                progress.end_case()
                continue
            text = f"{case}: wrote {written['labels']} ({n}/{len(cases)}){case_outputs_text(result)}"
            if args.progress == "bar":
                progress.write(f"{text}, {progress.case_summary()}")
            else:
                reporter.message(text)
            progress.end_case()
    finally:
        progress.close()
    reporter.done(cases=len(cases), failed=failed)
    reporter.close()
    return 1 if failed else 0


def predict_case(predictor, files: list[Path], args: argparse.Namespace, progress):
    """One case; the instance threshold goes to MaskMed models (nnU-Net models have no queries)."""
    from MaskMedCore.inference.predictor import Predictor

    channels = read_case_input(files, predictor.channel_names)
    kwargs = {"save_queries": args.save_queries, "progress": progress}
    if isinstance(predictor, Predictor):
        kwargs["instance_threshold"] = args.instance_threshold
    return predictor.predict(channels, **kwargs)


def write_case(result, out_dir: Path, case: str, first_file: Path, input_ending: str, args: argparse.Namespace) -> dict:
    """Write one case's outputs; a 2D input's outputs are 2D with its stored geometry.

    Endings: ``--output-format`` for every output, else
    :func:`~MaskMedCore.data.natural_images.output_endings`. The summary gets ``output_endings`` when an
    ending differs from the input's (with the reason), and ``class_areas_mm2`` for a 2D input.

    Returns:
        What was written: ``labels``, ``summary`` and, when written, ``instances``, ``queries``, ``embeddings``.
    """
    from MaskMedCore.data.image_io import input_geometry_2d
    from MaskMedCore.data.natural_images import OutputEndings, output_endings

    endings = OutputEndings(args.output_format, args.output_format) if args.output_format else None
    endings = endings or output_endings(input_ending)
    geometry = input_geometry_2d(first_file)
    if geometry is not None:
        restore_2d(result, geometry)
    notes = {}
    if endings.labels != input_ending:
        notes["labels"] = {"ending": endings.labels, "reason": endings.labels_reason or "--output-format"}
    maps_written = args.save_queries and result.query_probabilities is not None
    if maps_written and endings.maps != input_ending:
        notes["query_maps"] = {"ending": endings.maps, "reason": endings.maps_reason or "--output-format"}
    if notes:
        result.extra["output_endings"] = {"input": input_ending, **notes}
    together = endings.maps == endings.labels
    written = result.write(out_dir, case, endings.labels, args.save_queries and together, args.save_embeddings)
    if maps_written and not together:
        written["queries"] = write_query_maps(result, out_dir, case, endings.maps)
    return written


def restore_2d(result, geometry) -> None:
    """Make a prediction's images 2D with ``geometry`` (the 2D input's stored one), and add ``class_areas_mm2``.

    Volumes (``class_volumes_ml``) stay as computed, with the single slice's 999 mm spacing; areas are what
    a 2D image has.
    """
    import numpy as np
    import SimpleITK as sitk

    from MaskMedCore.data.natural_images import to_2d

    result.labels = to_2d(result.labels, geometry)
    if result.instance_map is not None:
        result.instance_map = to_2d(result.instance_map, geometry)
    if result.query_probabilities is not None:
        result.query_probabilities = [to_2d(m, geometry) for m in result.query_probabilities]
    pixel_mm2 = float(np.prod(geometry.spacing))
    counts = np.bincount(sitk.GetArrayViewFromImage(result.labels).ravel(), minlength=len(result.label_names))
    result.extra["class_areas_mm2"] = {
        name: round(float(counts[k]) * pixel_mm2, 6) for k, name in enumerate(result.label_names) if k > 0
    }


def write_query_maps(result, out_dir: Path, case: str, ending: str) -> Path:
    """Per-query probability maps in ``<case>_queries/`` (as ``Prediction.write`` names them) with ``ending``."""
    from MaskMedCore.data.image_io import write_image

    folder = out_dir / f"{case}_queries"
    folder.mkdir(exist_ok=True)
    for info, image in zip(result.queries, result.query_probabilities, strict=True):
        write_image(image, folder / f"query_{info.index:02d}_{info.class_name}{ending}")
    return folder


def case_outputs_text(result) -> str:
    """``, 2 instances, lesion_count: one (0.80)`` for the models that predict them, else ``""``."""
    parts = []
    instances = getattr(result, "instances", None)
    if instances is not None:
        parts.append(f"{len(instances)} instance{'s' if len(instances) != 1 else ''}")
    for task, pred in (getattr(result, "case_classification", None) or {}).items():
        parts.append(f"{task}: {pred.predicted} ({pred.probabilities[pred.predicted]:.2f})")
    return "".join(f", {p}" for p in parts)


class CaseProgress:
    """Progress of ``maskmed predict`` over its cases.

    ``bar``: one bar over the *cases* on stderr (tqdm's, or plain text lines without tqdm), started
    before the first case so its rate is the true time per case (reading, preprocessing, every
    sliding-window tile, writing); the current case and its tiles (``tile 3/8``) are shown beside it,
    and each finished case gets a line with its tile count and seconds. A per-case tile bar would show
    absurd rates (a one-tile case "runs at 155344 tile/s", timed from the tile's end).

    ``json``: one ``tiles`` line per tile batch on stdout for the Slicer module:
    ``{"event": "tiles", "case", "done", "total", "case_index", "cases", "case_seconds"}``
    (``case_index`` counts from 1; ``case_seconds`` since the case started).

    Args:
        mode: ``bar``, ``json`` or ``none``.
        num_cases: cases of the whole run.
    """

    def __init__(self, mode: str, num_cases: int) -> None:
        from MaskMedCore.engine.progress import make_bar

        self.mode = mode
        self.num_cases = num_cases
        self.case = ""
        self.index = 0
        self.tiles_done = 0
        self.tiles_total = 0
        self._case_t0 = time.monotonic()
        self._last_draw = 0.0
        self.bar = make_bar(num_cases, desc="predict", unit="case") if mode == "bar" else None

    def start_case(self, case: str, index: int) -> None:
        self.case, self.index = case, index
        self.tiles_done = self.tiles_total = 0
        self._case_t0 = time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix_str(f"{case}: reading")

    def tiles(self, done: int, total: int) -> None:
        """``progress(done, total)`` callback of the sliding window: tiles of the current case."""
        self.tiles_done, self.tiles_total = done, total
        if self.mode == "json":
            event = {
                "event": "tiles",
                "case": self.case,
                "done": done,
                "total": total,
                "case_index": self.index,
                "cases": self.num_cases,
                "case_seconds": round(self.case_seconds(), 3),
            }
            print(json.dumps(event), flush=True)
        elif self.bar is not None:
            now = time.monotonic()  # redraw at most twice a second (a case can have thousands of tiles)
            refresh = done == total or now - self._last_draw >= 0.5
            self._last_draw = now if refresh else self._last_draw
            self.bar.set_postfix_str(f"{self.case}: tile {done}/{total}", refresh=refresh)

    def case_seconds(self) -> float:
        return time.monotonic() - self._case_t0

    def case_summary(self) -> str:
        """``8 tiles in 2.3 s`` for the current case."""
        tiles = f"{self.tiles_total} tile{'s' if self.tiles_total != 1 else ''}"
        return f"{tiles} in {self.case_seconds():.1f} s"

    def write(self, text: str) -> None:
        """A line on stderr that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)  # tqdm's write goes to stdout unless told
        else:
            print(text, file=sys.stderr, flush=True)

    def end_case(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str("")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
