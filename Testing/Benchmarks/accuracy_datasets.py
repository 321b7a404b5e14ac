"""The two task datasets of the accuracy benchmark, built as nnU-Net v2 raw datasets in a cache folder.

Why a builder at all: both MaskMed and nnU-Net v2 must read *the same files*, so the only fair input
is one raw dataset (``imagesTr/<case>_0000.nii.gz``, ``labelsTr/``, ``dataset.json``) that both
pipelines plan and preprocess themselves. The test cases go to ``imagesTs/`` and ``labelsTs/``, which
neither pipeline plans on.

Why outside the repository: BraTS is CC BY-NC-SA (non-commercial) and must never be copied into the
repo, so everything lives under ``$MASKMED_BENCH_CACHE`` (default ``~/.cache/maskmed-bench``).

Why atomic: a dataset is written into a hidden temporary folder, gets a ``.complete`` marker holding
its build key, and is renamed into place. A killed build leaves only the temporary folder (deleted
next time); a finished one is re-used as long as its key (source files, spacing, builder version)
matches.

Tasks:

- ``brats``: BRATS 2015 cases of the DeepMedic example data, FLAIR + T1c (already z-scored inside
  the brain), labels 0 background, 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing. DeepMedic's
  split: train pat0005/pat0006, validation pat0003/pat0004 (both in ``imagesTr``; the split file
  holds them apart), test pat0001/pat0002. Voxels outside the provided brain mask are set to 0 (the
  source fills them with a constant -3.62): standard BraTS releases have 0 there, and it lets both
  pipelines crop to the brain (their crop-to-non-zero step). Optionally resampled to a coarser
  isotropic spacing (quick mode: 3 mm; images anti-aliased + linear, labels nearest neighbour).
- ``totalseg``: TotalSegmentator test fixtures. Train on ``ct3mm_full`` (3 mm, unchanged), test on
  ``ct_dicom20`` (a different subject, 0.98 x 0.98 x 2 mm; unchanged in full mode, resampled to
  3 mm in quick mode, see ``build_task``). The labels are
  TotalSegmentator *model outputs* (pseudo-labels), remapped to the 7 organs present in both:
  spleen, liver, stomach, pancreas, aorta, inferior vena cava, portal + splenic vein -> 1..7.
  Both CTs (and labels) are reoriented to LPS by lossless axis flips: the two files are stored with
  different direction matrices (``ct3mm_full`` has x and y flipped), and neither nnU-Net nor MaskMed
  reorients, so a network would otherwise see the test patient mirrored left-right and front-back
  (found when every row, nnU-Net included, scored ~0 on the test case while fitting the training case).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

BUILD_VERSION = 4
"""Bump when the builder's output changes, so cached datasets are rebuilt."""

BRATS_SPLIT = {
    "train": ["brats_2013_pat0005_1", "brats_2013_pat0006_1"],
    "val": ["brats_2013_pat0003_1", "brats_2013_pat0004_1"],
    "test": ["brats_2013_pat0001_1", "brats_2013_pat0002_1"],
}
BRATS_CHANNELS = ("flair", "t1c")
BRATS_LABELS = {"background": 0, "necrosis": 1, "edema": 2, "non_enhancing": 3, "enhancing": 4}

TOTALSEG_TRAIN, TOTALSEG_TEST = "ct3mm_full", "ct_dicom20"
TOTALSEG_ORGANS = {  # name -> TotalSegmentator 'total' id; remapped to 1..7 in this order
    "spleen": 1,
    "liver": 5,
    "stomach": 6,
    "pancreas": 7,
    "aorta": 52,
    "inferior_vena_cava": 63,
    "portal_vein_and_splenic_vein": 64,
}

QUICK_BRATS_SPACING_MM = 3.0
CT_ORIENTATION = "LPS"
"""Both CTs are stored in this orientation (identity direction matrix; SimpleITK's native order)."""
QUICK_TOTALSEG_TEST_SPACING_MM = 3.0
TASK_FOLDERS = {"brats": "brats2015_deepmedic", "totalseg": "totalseg_examples", "hippocampus": "msd_hippocampus"}
DATASET_IDS = {"brats": 901, "totalseg": 902, "hippocampus": 903}
HIPPOCAMPUS_SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "msd_hippocampus.json"
"""The committed 140 / 20 / 40 split of the 200 MSD hippocampus cases (see its ``description``)."""
HIPPOCAMPUS_LABELS = {"background": 0, "anterior": 1, "posterior": 2}


def hippocampus_split() -> dict[str, list[str]]:
    """``{"train": [...140], "val": [...20], "test": [...40]}`` from the committed split file."""
    split = json.loads(HIPPOCAMPUS_SPLIT_FILE.read_text())
    return {k: list(split[k]) for k in ("train", "val", "test")}


@dataclass
class TaskData:
    """A built task: where its raw dataset is and which cases play which role (JSON-serialisable).

    ``raw_dir`` sits inside ``<root>/nnUNet_raw`` so nnU-Net finds it by ``dataset_id``; ``root``
    also holds the MaskMed preprocessed cache, the nnU-Net folders and the training runs.
    """

    task: str
    root: str
    raw_dir: str
    dataset_id: int
    dataset_name: str
    channel_names: list[str]
    labels: dict[str, int]
    train: list[str]
    val: list[str]
    test: list[str]
    spacing_note: str
    label_note: str

    @property
    def class_names(self) -> list[str]:
        """Foreground class names in label order."""
        return [n for n, v in sorted(self.labels.items(), key=lambda kv: kv[1]) if v != 0]

    def test_images(self, case: str) -> list[str]:
        return [str(Path(self.raw_dir) / "imagesTs" / f"{case}_{c:04d}.nii.gz") for c in range(len(self.channel_names))]

    def test_label(self, case: str) -> str:
        return str(Path(self.raw_dir) / "labelsTs" / f"{case}.nii.gz")

    def to_dict(self) -> dict:
        return asdict(self)


def cache_root() -> Path:
    """``$MASKMED_BENCH_CACHE`` or ``~/.cache/maskmed-bench`` (never inside the repository)."""
    return Path(os.environ.get("MASKMED_BENCH_CACHE", Path.home() / ".cache" / "maskmed-bench")).expanduser()


def task_available(task: str, data_root: Path) -> str | None:
    """None when the task's source folder is complete, else the reason it is not."""
    folder = data_root / TASK_FOLDERS[task]
    if not folder.is_dir():
        return f"{folder} does not exist"
    if task == "brats":
        cases = [c for v in BRATS_SPLIT.values() for c in v]
        needed = [folder / f"{c}_{s}.nii.gz" for c in cases for s in (*BRATS_CHANNELS, "label", "brainmask")]
    elif task == "hippocampus":
        cases = [c for v in hippocampus_split().values() for c in v]
        needed = [folder / sub / f"{c}.nii.gz" for c in cases for sub in ("imagesTr", "labelsTr")]
    else:
        needed = [folder / f"{c}_{s}.nii.gz" for c in (TOTALSEG_TRAIN, TOTALSEG_TEST) for s in ("image", "label")]
    missing = [p.name for p in needed if not p.is_file()]
    return f"{folder} lacks {', '.join(missing[:3])}" if missing else None


_FINGERPRINT_CHUNK = 4 << 20  # bytes read from each end of a large source file


def _content_fingerprint(path: Path) -> str:
    """sha256 of a file's content (its first and last 4 MiB when larger than 8 MiB).

    Content, not mtime: copying the shared data again (a re-provisioned machine) changes every
    mtime and would otherwise throw away hours of cached training runs for identical data.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size <= 2 * _FINGERPRINT_CHUNK:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_FINGERPRINT_CHUNK))
            handle.seek(size - _FINGERPRINT_CHUNK)
            digest.update(handle.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()[:16]


def _source_signature(paths: list[Path]) -> list[list]:
    return [[p.name, p.stat().st_size, _content_fingerprint(p)] for p in sorted(paths)]


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _build_atomically(final: Path, key: dict, write) -> None:
    """Run ``write(tmp_folder)`` unless ``final`` is complete with the same key; then rename into place."""
    marker = final / ".complete"
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / ".complete").write_text(json.dumps(key))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def _resample(image, spacing_mm: float, nearest: bool, background: float | None = None):
    """Resample onto an isotropic grid covering the same field of view (voxel centres re-centred).

    Images are Gaussian-smoothed first (target FWHM = the new spacing) so that downsampling does not
    alias, then interpolated linearly; label maps are taken by nearest neighbour. Both keep their pixel
    type (CT stays integer HU); outside the old grid images get ``background`` (default: their minimum,
    i.e. air for CT), labels 0.
    """
    import math

    import SimpleITK as sitk

    old_sp = image.GetSpacing()
    size = [max(1, round(n * s / spacing_mm)) for n, s in zip(image.GetSize(), old_sp)]
    direction = image.GetDirection()
    shift = [(spacing_mm - s) / 2 for s in old_sp]  # keep the first voxel's outer edge in place
    origin = [o + sum(direction[3 * r + c] * shift[c] for c in range(3)) for r, o in enumerate(image.GetOrigin())]
    if nearest:
        return sitk.Resample(
            image,
            size,
            sitk.Transform(),
            sitk.sitkNearestNeighbor,
            origin,
            (spacing_mm,) * 3,
            direction,
            0.0,
            image.GetPixelID(),
        )
    pixel = image.GetPixelID()
    smooth = sitk.Cast(image, sitk.sitkFloat32)
    for axis, s in enumerate(old_sp):
        sigma = math.sqrt(max(spacing_mm**2 - s**2, 0.0)) / 2.355
        if sigma > 1e-3:
            smooth = sitk.RecursiveGaussian(smooth, sigma, direction=axis)
    if background is None:
        background = float(sitk.GetArrayViewFromImage(image).min())
    out = sitk.Resample(
        smooth,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        origin,
        (spacing_mm,) * 3,
        direction,
        background,
        sitk.sitkFloat32,
    )
    if pixel != sitk.sitkFloat32:
        out = sitk.Cast(sitk.Round(out), pixel)
    return out


def _dataset_json(name: str, channels: list[str], labels: dict[str, int], n_train: int, description: str) -> str:
    return (
        json.dumps(
            {
                "name": name,
                "description": description,
                "channel_names": {str(i): c for i, c in enumerate(channels)},
                "labels": labels,
                "numTraining": n_train,
                "file_ending": ".nii.gz",
            },
            indent=2,
        )
        + "\n"
    )


def build_brats(data_root: Path, spacing_mm: float | None) -> TaskData:
    """The BraTS task (see module docstring); ``spacing_mm=None`` keeps the native 1 mm."""
    import numpy as np
    import SimpleITK as sitk

    src = data_root / TASK_FOLDERS["brats"]
    cases = [c for v in BRATS_SPLIT.values() for c in v]
    sources = [src / f"{c}_{s}.nii.gz" for c in cases for s in (*BRATS_CHANNELS, "label", "brainmask")]
    variant = "native1mm" if spacing_mm is None else f"{spacing_mm:g}mm"
    key = {"builder": BUILD_VERSION, "task": "brats", "spacing_mm": spacing_mm, "sources": _source_signature(sources)}
    root = cache_root() / f"brats-{variant}-{_key_digest(key)}"
    name = f"Dataset{DATASET_IDS['brats']:03d}_BraTS{variant}"
    final = root / "nnUNet_raw" / name

    def write(tmp: Path) -> None:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for case in cases:
            split = "Ts" if case in BRATS_SPLIT["test"] else "Tr"
            mask = sitk.ReadImage(str(src / f"{case}_brainmask.nii.gz"))
            inside = sitk.GetArrayFromImage(mask) > 0
            if spacing_mm is not None:  # smoothing spreads the brain edge: re-mask on the new grid
                inside_new = sitk.GetArrayFromImage(_resample(sitk.Cast(mask, sitk.sitkUInt8), spacing_mm, True)) > 0
            for c, channel in enumerate(BRATS_CHANNELS):
                img = sitk.ReadImage(str(src / f"{case}_{channel}.nii.gz"), sitk.sitkFloat32)
                arr = np.where(inside, sitk.GetArrayFromImage(img), 0).astype(np.float32)
                out = sitk.GetImageFromArray(arr)
                out.CopyInformation(img)
                if spacing_mm is not None:
                    resampled = _resample(out, spacing_mm, nearest=False, background=0.0)
                    out = sitk.GetImageFromArray(np.where(inside_new, sitk.GetArrayFromImage(resampled), 0))
                    out.CopyInformation(resampled)
                sitk.WriteImage(out, str(tmp / f"images{split}" / f"{case}_{c:04d}.nii.gz"), useCompression=True)
            lab = sitk.Cast(sitk.ReadImage(str(src / f"{case}_label.nii.gz")), sitk.sitkUInt8)
            if spacing_mm is not None:
                lab = _resample(lab, spacing_mm, nearest=True)
            sitk.WriteImage(lab, str(tmp / f"labels{split}" / f"{case}.nii.gz"), useCompression=True)
        n_train = len(BRATS_SPLIT["train"]) + len(BRATS_SPLIT["val"])
        desc = "BRATS 2015 (DeepMedic example data), CC BY-NC-SA 3.0 CH: non-commercial, never redistribute"
        (tmp / "dataset.json").write_text(_dataset_json(name, ["FLAIR", "T1c"], BRATS_LABELS, n_train, desc))

    _build_atomically(final, key, write)
    return TaskData(
        task="brats",
        root=str(root),
        raw_dir=str(final),
        dataset_id=DATASET_IDS["brats"],
        dataset_name=name,
        channel_names=["FLAIR", "T1c"],
        labels=dict(BRATS_LABELS),
        train=list(BRATS_SPLIT["train"]),
        val=list(BRATS_SPLIT["val"]),
        test=list(BRATS_SPLIT["test"]),
        spacing_note=(
            "native 1 mm" if spacing_mm is None else f"resampled at build time from 1 mm to {spacing_mm:g} mm isotropic"
        )
        + "; outside the brain mask set to 0",
        label_note="manual BRATS labels; only 2 training cases (DeepMedic split: train 5,6 / val 3,4 / test 1,2)",
    )


def build_totalseg(data_root: Path, test_spacing_mm: float | None = None) -> TaskData:
    """The abdominal CT task (see module docstring); ``test_spacing_mm`` resamples the test CT and its
    labels at build time (quick mode: 3 mm, the training spacing), else the test case is left as it is."""
    import numpy as np
    import SimpleITK as sitk

    src = data_root / TASK_FOLDERS["totalseg"]
    sources = [src / f"{c}_{s}.nii.gz" for c in (TOTALSEG_TRAIN, TOTALSEG_TEST) for s in ("image", "label")]
    key = {
        "builder": BUILD_VERSION,
        "task": "totalseg",
        "organs": TOTALSEG_ORGANS,
        "test_spacing_mm": test_spacing_mm,
        "sources": _source_signature(sources),
    }
    variant = "native" if test_spacing_mm is None else f"test{test_spacing_mm:g}mm"
    root = cache_root() / f"totalseg-{variant}-{_key_digest(key)}"
    name = f"Dataset{DATASET_IDS['totalseg']:03d}_TotalSegAbdomen"
    final = root / "nnUNet_raw" / name
    labels = {"background": 0, **{organ: i + 1 for i, organ in enumerate(TOTALSEG_ORGANS)}}

    def write(tmp: Path) -> None:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        lut = np.zeros(256, dtype=np.uint8)
        for i, total_id in enumerate(TOTALSEG_ORGANS.values()):
            lut[total_id] = i + 1
        for case, split in ((TOTALSEG_TRAIN, "Tr"), (TOTALSEG_TEST, "Ts")):
            # Lossless axis flips to one orientation (see module docstring): neither pipeline reorients.
            img = sitk.DICOMOrient(sitk.ReadImage(str(src / f"{case}_image.nii.gz")), CT_ORIENTATION)
            if split == "Ts" and test_spacing_mm is not None:
                img = _resample(img, test_spacing_mm, nearest=False)
            sitk.WriteImage(img, str(tmp / f"images{split}" / f"{case}_0000.nii.gz"), useCompression=True)
            lab = sitk.ReadImage(str(src / f"{case}_label.nii.gz"))
            arr = lut[sitk.GetArrayFromImage(lab).astype(np.int64)]
            out = sitk.GetImageFromArray(arr)
            out.CopyInformation(lab)
            out = sitk.DICOMOrient(out, CT_ORIENTATION)
            if split == "Ts" and test_spacing_mm is not None:
                out = _resample(out, test_spacing_mm, nearest=True)
            sitk.WriteImage(out, str(tmp / f"labels{split}" / f"{case}.nii.gz"), useCompression=True)
        desc = "TotalSegmentator test fixtures; labels are TotalSegmentator model outputs (pseudo-labels)"
        (tmp / "dataset.json").write_text(_dataset_json(name, ["CT"], labels, 1, desc))

    _build_atomically(final, key, write)
    return TaskData(
        task="totalseg",
        root=str(root),
        raw_dir=str(final),
        dataset_id=DATASET_IDS["totalseg"],
        dataset_name=name,
        channel_names=["CT"],
        labels=labels,
        train=[TOTALSEG_TRAIN],
        val=[],
        test=[TOTALSEG_TEST],
        spacing_note="both CTs reoriented to LPS (lossless flips); train CT otherwise unchanged (3 mm isotropic); "
        "test CT "
        + (
            "unchanged (0.98 x 0.98 x 2 mm; each pipeline resamples it and restores its prediction to it)"
            if test_spacing_mm is None
            else f"resampled at build time from 0.98 x 0.98 x 2 mm to {test_spacing_mm:g} mm isotropic, scored there"
        ),
        label_note=(
            "TotalSegmentator pseudo-labels (model outputs, not manual ground truth); one training case "
            f"({TOTALSEG_TRAIN}), tested on another subject ({TOTALSEG_TEST})"
        ),
    )


def build_hippocampus(data_root: Path) -> TaskData:
    """MSD Task04 hippocampus with the committed split: 160 training + validation cases in ``imagesTr``
    (the split file keeps the 20 validation cases apart), the 40 test cases in ``imagesTs``. Files are
    copied unchanged (MSD layout -> nnU-Net v2 names); labels keep MSD's values, with lower-case names."""
    src = data_root / TASK_FOLDERS["hippocampus"]
    split = hippocampus_split()
    cases = [c for v in split.values() for c in v]
    sources = [src / sub / f"{c}.nii.gz" for c in cases for sub in ("imagesTr", "labelsTr")]
    key = {"builder": BUILD_VERSION, "task": "hippocampus", "split": split, "sources": _source_signature(sources)}
    root = cache_root() / f"hippocampus-{_key_digest(key)}"
    name = f"Dataset{DATASET_IDS['hippocampus']:03d}_Hippocampus"
    final = root / "nnUNet_raw" / name

    def write(tmp: Path) -> None:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for case in cases:
            part = "Ts" if case in split["test"] else "Tr"
            shutil.copyfile(src / "imagesTr" / f"{case}.nii.gz", tmp / f"images{part}" / f"{case}_0000.nii.gz")
            shutil.copyfile(src / "labelsTr" / f"{case}.nii.gz", tmp / f"labels{part}" / f"{case}.nii.gz")
        desc = "MSD Task04 hippocampus (Vanderbilt University Medical Center), CC-BY-SA 4.0"
        n_train = len(split["train"]) + len(split["val"])
        (tmp / "dataset.json").write_text(_dataset_json(name, ["MRI"], HIPPOCAMPUS_LABELS, n_train, desc))

    _build_atomically(final, key, write)
    return TaskData(
        task="hippocampus",
        root=str(root),
        raw_dir=str(final),
        dataset_id=DATASET_IDS["hippocampus"],
        dataset_name=name,
        channel_names=["MRI"],
        labels=dict(HIPPOCAMPUS_LABELS),
        train=split["train"],
        val=split["val"],
        test=split["test"],
        spacing_note="native 1 mm isotropic MRI crops (unchanged)",
        label_note="manual MSD labels (anterior = hippocampus head, posterior = body + tail); committed split "
        "140 train / 20 validation / 40 test (Testing/Benchmarks/splits/msd_hippocampus.json)",
    )


def build_task(task: str, data_root: Path, quick: bool) -> TaskData:
    """Build (or re-use) a task's raw dataset: BraTS at 3 mm in quick mode, 1 mm in full mode.

    Why 3 mm: on 2 CPU cores the quick mode's time goes mostly into fixed per-run costs, of which
    sliding-window prediction of the test cases is the largest; at 3 mm a BraTS brain is ~47 x 53 x 48
    voxels (8 tiles of 32^3) instead of ~70 x 80 x 72 at 2 mm (27 tiles), and a 32^3 patch sees most
    of the brain. The TotalSeg test CT (512 x 512 x 20 at 0.98 mm) is likewise brought to the training
    spacing of 3 mm in quick mode: restoring 8 class maps to 5 million voxels cost more than training.
    """
    if task == "brats":
        return build_brats(data_root, QUICK_BRATS_SPACING_MM if quick else None)
    if task == "totalseg":
        return build_totalseg(data_root, QUICK_TOTALSEG_TEST_SPACING_MM if quick else None)
    if task == "hippocampus":
        return build_hippocampus(data_root)
    raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_FOLDERS)}")


def score_predictions(preds: dict, refs: dict, labels: dict[str, int], spacings: dict | None = None) -> dict:
    """Dice (and with ``spacings`` HD95) per foreground class on the test cases, the same function for every
    row (nnU-Net included).

    Per case and class: ``MaskMedCore.metrics.dice_score`` on the label maps in the reference's grid, and
    ``hausdorff_distance_95`` in mm with the case's (D, H, W) spacing. A class absent from both the
    prediction and the reference of a case is *skipped* (``None``) rather than scored 1.0 as
    MaskMedCore's folder evaluation does: with two test cases a free 1.0 would swamp the average. A class
    present in only one of them scores Dice 0 and has no HD95 (counted in ``hd95_missing``). Per class:
    the mean (and ``*_case_sd`` the standard deviation) over the cases where it is defined; ``mean_dice``:
    the mean over the classes (nnU-Net's foreground mean).
    """
    import math

    import numpy as np

    from MaskMedCore.metrics import dice_score
    from MaskMedCore.metrics.surface import hausdorff_distance_95

    classes = [(n, v) for n, v in sorted(labels.items(), key=lambda kv: kv[1]) if v != 0]
    per_case: dict[str, dict[str, float | None]] = {}
    per_case_hd: dict[str, dict[str, float | None]] = {}
    for case, ref in refs.items():
        pred = np.asarray(preds[case])
        if pred.shape != ref.shape:
            raise ValueError(f"prediction of {case} has shape {pred.shape}, reference {ref.shape}")
        per_case[case], per_case_hd[case] = {}, {}
        for name, value in classes:
            p, r = pred == value, ref == value
            defined = bool(p.any() or r.any())
            per_case[case][name] = dice_score(p, r) if defined else None
            if spacings is not None:
                hd = hausdorff_distance_95(p, r, spacings[case]) if defined else None
                per_case_hd[case][name] = None if hd is None or math.isnan(hd) else hd

    def stats(table: dict) -> tuple[dict, dict]:
        mean, sd = {}, {}
        for name, _ in classes:
            vals = [d[name] for d in table.values() if d[name] is not None]
            mean[name] = float(np.mean(vals)) if vals else None
            sd[name] = float(np.std(vals)) if vals else None
        return mean, sd

    per_class, per_class_sd = stats(per_case)
    defined = [v for v in per_class.values() if v is not None and not math.isnan(v)]
    out = {
        "dice": per_class,
        "dice_case_sd": per_class_sd,
        "mean_dice": sum(defined) / len(defined) if defined else None,
        "per_case": per_case,
    }
    if spacings is not None:
        out["hd95"], out["hd95_case_sd"] = stats(per_case_hd)
        out["hd95_missing"] = {
            name: sum(1 for c in refs if per_case[c][name] is not None and per_case_hd[c][name] is None)
            for name, _ in classes
        }
        out["per_case_hd95"] = per_case_hd
    return out
