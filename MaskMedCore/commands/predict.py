"""``maskmed predict``: segment files or a folder with a trained run or checkpoint."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from MaskMedCore.errors import DataError, MaskMedError

IMAGE_ENDINGS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment images with a trained run folder, checkpoint or bundled model")
    p.add_argument(
        "-m",
        "--model",
        required=True,
        help="run folder (uses its best checkpoint), checkpoint file, or a bundled model's name (see 'maskmed models')",
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        nargs="+",
        help="a folder (nnU-Net naming <case>_0000<ending>, ...), or the channel files of one case in order",
    )
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8x slower)")
    p.add_argument("--save-queries", action="store_true", help="write each query's mask probability map")
    p.add_argument("--save-embeddings", action="store_true", help="write class/mask embeddings (.npz)")
    p.add_argument("--output-format", help="file ending of the outputs (default: the input's), e.g. .nii.gz")
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
    """case id -> (channel files in order, file ending)."""
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise DataError(f"input {p} does not exist")
    if len(paths) == 1 and paths[0].is_dir():
        files = sorted(f for f in paths[0].iterdir() if f.is_file() and split_ending(f)[1] in IMAGE_ENDINGS)
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
            if sorted(chans) != list(range(num_channels)):
                raise DataError(
                    f"case {case} in {paths[0]} has channels {sorted(chans)}; the model needs "
                    f"{list(range(num_channels))} (files <case>_0000, <case>_0001, ...)"
                )
            out[case] = ([chans[c] for c in range(num_channels)], endings[case])
        return out
    if any(p.is_dir() for p in paths):
        raise DataError("give either one input folder or the channel files of one case, not a mix")
    if len(paths) != num_channels:
        raise DataError(f"the model needs {num_channels} channel file(s), got {len(paths)}: {[str(p) for p in paths]}")
    stem, ending = split_ending(paths[0])
    match = _CHANNEL.match(stem)
    return {match["case"] if match else stem: (paths, ending)}


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.bundled_models import resolve_model
    from MaskMedCore.engine.progress import ProgressReporter
    from MaskMedCore.inference.predictor import Predictor

    model = resolve_model(args.model)  # a path, or a bundled model's name such as "hippocampus"
    predictor = Predictor.from_checkpoint(model, device=args.device, tta=args.tta, tile_batch_size=args.tile_batch)
    cases = group_cases(args.input, len(predictor.channel_names))
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MaskMedError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    reporter = ProgressReporter(args.progress if args.progress != "bar" else "none", total_iterations=len(cases))
    failed = 0
    for n, (case, (files, ending)) in enumerate(cases.items(), start=1):
        ending = args.output_format or (".nii.gz" if ending == ".seg.nrrd" else ending)
        try:
            bar = _tile_bar(args.progress, case)
            result = predictor.predict(files, save_queries=args.save_queries, progress=bar)
            written = result.write(out_dir, case, ending, args.save_queries, args.save_embeddings)
        except MaskMedError as exc:
            failed += 1
            print(f"maskmed predict: case {case}: error: {exc}", file=sys.stderr)
            continue
        finally:
            bar.close()
        reporter.message(f"{case}: wrote {written['labels']} ({n}/{len(cases)})")
    reporter.done(cases=len(cases), failed=failed)
    reporter.close()
    return 1 if failed else 0


class _TileBar:
    """Tile progress of one case: a tqdm bar (``bar``) or JSON lines (``json``) for the Slicer launcher."""

    def __init__(self, mode: str, case: str) -> None:
        self.bar = None
        self.mode = mode
        self.case = case

    def __call__(self, done: int, total: int) -> None:
        if self.mode == "json":
            print(json.dumps({"event": "tiles", "case": self.case, "done": done, "total": total}), flush=True)
            return
        if self.mode != "bar":
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.case, unit="tile", leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tile_bar(mode: str, case: str) -> _TileBar:
    return _TileBar(mode, case)
