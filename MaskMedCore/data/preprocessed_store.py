"""The preprocessed-data cache (nnU-Net v2 §2.5 "Storage", with NumPy files instead of Blosc2).

Folder layout (``default_preprocessed_dir``, never inside the raw dataset folder)::

    plan.json                 the PlanConfig the cases were made with
    manifest.json             preprocessing settings + each case's input files (path, size, mtime)
    <case>.npy                (C, D, H, W) float32 image
    <case>_seg.npy            (D, H, W) int16 labels
    <case>.json               properties (see preprocessing.PROPERTY_KEYS) + "class_locations"

``class_locations`` maps each label value present (background excluded) to up to 10,000 voxel
coordinates (D, H, W) of that class, drawn without replacement with a fixed seed; the sampler uses
them for foreground oversampling. Departure from nnU-Net: at most 10,000 per class (nnU-Net also
keeps at least 1 % of a large class).

Every file is written atomically; ``<case>.json`` is written last, so a case is complete when its
JSON exists and the manifest lists it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.data.dataset import RawCase, RawDataset, map_cases
from MaskMedCore.data.image_io import atomic_output
from MaskMedCore.data.preprocessing import preprocess_case
from MaskMedCore.data.validate import read_case
from MaskMedCore.errors import ConfigError, DataError
from MaskMedCore.io_utils import atomic_write_text

STORE_FORMAT_VERSION = 1
MAX_CLASS_LOCATIONS = 10_000
CLASS_LOCATIONS_SEED = 1234
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"


class PreprocessedCase(NamedTuple):
    """One cached case.

    Attributes:
        case_id: the case identifier.
        image: ``(C, D, H, W)`` float32 (memory-mapped when loaded with ``mmap=True``).
        labels: ``(D, H, W)`` int16, or None when the case was stored without labels.
        properties: the properties from preprocessing (JSON types).
        class_locations: label value -> ``(N, 3)`` int64 voxel coordinates (D, H, W), N <= 10,000.
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray | None
    properties: dict[str, Any]
    class_locations: dict[int, np.ndarray]


class PreprocessSummary(NamedTuple):
    """What :func:`preprocess_dataset` did: all case ids, those computed now and those reused."""

    folder: Path
    case_ids: tuple[str, ...]
    computed: tuple[str, ...]
    reused: tuple[str, ...]


# ---------------------------------------------------------------------------------------------- paths
def default_preprocessed_dir(dataset_folder: str | os.PathLike) -> Path:
    """``$MASKMED_PREPROCESSED/<folder name>-<hash8>``, else ``~/.cache/maskmed/preprocessed/<...>``.

    ``hash8`` is the first 8 hex digits of the SHA-256 of the absolute dataset path, so two datasets
    with the same folder name do not share a cache.
    """
    folder = Path(dataset_folder).expanduser().resolve()
    digest = hashlib.sha256(str(folder).encode("utf-8")).hexdigest()[:8]
    env = os.environ.get("MASKMED_PREPROCESSED")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "maskmed" / "preprocessed"
    return root / f"{folder.name}-{digest}"


def check_output_folder(dataset: RawDataset, out_folder: str | os.PathLike) -> Path:
    """The absolute output folder; ConfigError if it lies inside the raw dataset folder."""
    out = Path(out_folder).expanduser().resolve()
    if out == dataset.folder or dataset.folder in out.parents:
        raise ConfigError(
            f"output folder {out} is inside the dataset folder {dataset.folder}; MaskMed never writes into a raw "
            "dataset (it may be read-only). Choose another --out or leave it out for the default cache folder"
        )
    return out


def _case_paths(folder: Path, case_id: str) -> tuple[Path, Path, Path]:
    return folder / f"{case_id}.npy", folder / f"{case_id}_seg.npy", folder / f"{case_id}.json"


# ---------------------------------------------------------------------------------------------- one case
def class_locations(
    labels: np.ndarray, max_per_class: int = MAX_CLASS_LOCATIONS, seed: int = CLASS_LOCATIONS_SEED
) -> dict[int, np.ndarray]:
    """Up to ``max_per_class`` random ``(D, H, W)`` coordinates of every non-zero label value.

    Args:
        labels: ``(D, H, W)`` integer labels.

    Returns:
        value -> ``(N, 3)`` int64 coordinates, sorted in memory order.
    """
    rng = np.random.default_rng(seed)
    flat = labels.ravel()
    out = {}
    for value in np.unique(flat):
        if value == 0:
            continue
        index = np.flatnonzero(flat == value)
        if index.size > max_per_class:
            index = np.sort(rng.choice(index, max_per_class, replace=False))
        out[int(value)] = np.stack(np.unravel_index(index, labels.shape), axis=1).astype(np.int64)
    return out


def save_case(
    folder: str | os.PathLike,
    case_id: str,
    image: np.ndarray,
    labels: np.ndarray | None,
    properties: dict[str, Any],
) -> None:
    """Write one preprocessed case atomically (image, labels, then the JSON).

    Args:
        image: ``(C, D, H, W)`` float32.
        labels: ``(D, H, W)`` integer labels (stored as int16), or None.
        properties: JSON-serialisable properties from preprocessing.
    """
    folder = Path(folder)
    if image.ndim != 4:
        raise DataError(f"image must be (C, D, H, W), got shape {image.shape}")
    if labels is not None and tuple(labels.shape) != tuple(image.shape[1:]):
        raise DataError(f"labels shape {labels.shape} does not match image spatial shape {image.shape[1:]}")
    image_path, seg_path, json_path = _case_paths(folder, case_id)
    _save_npy(image_path, np.asarray(image, dtype=np.float32))
    if labels is None:
        locations: dict[int, np.ndarray] = {}
        seg_path.unlink(missing_ok=True)
    else:
        labels = np.asarray(labels, dtype=np.int16)
        _save_npy(seg_path, labels)
        locations = class_locations(labels)
    record = dict(properties)
    record["class_locations"] = {str(k): v.tolist() for k, v in locations.items()}
    atomic_write_text(json_path, json.dumps(record, separators=(",", ":")))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def load_case(folder: str | os.PathLike, case_id: str, mmap: bool = True) -> PreprocessedCase:
    """Read one cached case (arrays memory-mapped, read-only, when ``mmap``).

    Raises:
        DataError: a file of the case is missing or unreadable.
    """
    folder = Path(folder)
    image_path, seg_path, json_path = _case_paths(folder, case_id)
    for path in (image_path, json_path):
        if not path.is_file():
            raise DataError(
                f"preprocessed file {path} not found; run 'maskmed plan DATASET --out {folder}' to (re)create the cache"
            )
    mode = "r" if mmap else None
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        image = np.load(image_path, mmap_mode=mode, allow_pickle=False)
        labels = np.load(seg_path, mmap_mode=mode, allow_pickle=False) if seg_path.is_file() else None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"preprocessed case {case_id} in {folder} is unreadable ({exc}); delete the folder and run 'maskmed plan'"
        ) from None
    raw_locations = record.pop("class_locations", {})
    locations = {int(k): np.asarray(v, dtype=np.int64).reshape(-1, 3) for k, v in raw_locations.items()}
    return PreprocessedCase(case_id, image, labels, record, locations)


def load_plan(folder: str | os.PathLike) -> PlanConfig:
    """The plan a preprocessed folder was made with."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; run 'maskmed plan DATASET' first")
    return PlanConfig.from_json(path.read_text(encoding="utf-8"), source=str(path))


def list_cases(folder: str | os.PathLike) -> list[str]:
    """Case ids of a complete preprocessed folder (from its manifest), in dataset order."""
    manifest = _read_manifest(Path(folder))
    if manifest is None:
        raise DataError(f"{Path(folder) / MANIFEST_FILE} not found or invalid; run 'maskmed plan DATASET' first")
    return list(manifest["cases"])


# ---------------------------------------------------------------------------------------------- dataset
def input_signature(case: RawCase) -> list[list[Any]]:
    """``[[path, size, mtime_ns], ...]`` of the case's input files (None for a missing file)."""
    out = []
    for path in (*case.image_paths, *([case.label_path] if case.label_path else [])):
        try:
            st = os.stat(path)
            out.append([str(path), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(path), None, None])
    return out


def dataset_signature(dataset: RawDataset) -> str:
    """SHA-256 over dataset.json and every case's input signature (changes when any input changes)."""
    st = os.stat(dataset.folder / "dataset.json")
    payload = [[st.st_size, st.st_mtime_ns], [[c.case_id, input_signature(c)] for c in dataset.cases]]
    return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()


def preprocessing_key(plan: PlanConfig) -> dict[str, Any]:
    """The plan fields preprocessing depends on; a new patch, batch size or topology keeps the cache."""
    d = plan.to_dict()
    key = {k: d[k] for k in ("channel_names", "normalization", "target_spacing", "crop_to_nonzero", "format_version")}
    return json.loads(json.dumps(key))  # JSON types, comparable with a manifest read back


def preprocess_dataset(
    dataset: RawDataset,
    plan: PlanConfig,
    out_folder: str | os.PathLike,
    workers: int = 1,
    progress: bool = True,
) -> PreprocessSummary:
    """Preprocess every case of ``dataset`` into ``out_folder`` (plan.json, manifest.json, cases).

    A case is reused when the manifest was made with the same preprocessing settings (channels,
    normalisation, target spacing, cropping; see :func:`preprocessing_key`) and the case's input files
    have the same size and modification time; otherwise it is recomputed. Cases that left the dataset
    are deleted from the cache.

    Raises:
        ConfigError: ``out_folder`` is inside the dataset folder.
        DataError: a case is invalid (run validation first for the full list).
    """
    out = check_output_folder(dataset, out_folder)
    out.mkdir(parents=True, exist_ok=True)
    key = preprocessing_key(plan)
    old = _read_manifest(out)
    old_cases = old["cases"] if old is not None and old.get("preprocessing") == key else {}
    plan_path = out / PLAN_FILE
    if not plan_path.is_file() or plan_path.read_text(encoding="utf-8") != plan.to_json() + "\n":
        atomic_write_text(plan_path, plan.to_json() + "\n")

    entries: dict[str, dict] = {}
    todo: list[RawCase] = []
    for case in dataset.cases:
        signature = input_signature(case)
        previous = old_cases.get(case.case_id)
        if previous is not None and previous.get("inputs") == signature and _complete(out, case):
            entries[case.case_id] = previous
        else:
            todo.append(case)
    reused = tuple(entries)
    ids = {c.case_id for c in dataset.cases}
    for stale in set(old["cases"] if old else ()) - ids:
        for path in _case_paths(out, stale):
            path.unlink(missing_ok=True)
    _write_manifest(out, key, dataset, entries)  # before computing: nothing half-done is listed

    slim = dataclasses.replace(dataset, cases=[])
    items = [(slim, case, plan, out) for case in todo]
    bar = _progress(len(todo), progress)
    try:
        for case_id, signature in map_cases(_preprocess_one, items, workers):
            entries[case_id] = {"inputs": signature}
            _write_manifest(out, key, dataset, entries)
            bar.update(1)
    finally:
        bar.close()
    return PreprocessSummary(out, tuple(c.case_id for c in dataset.cases), tuple(c.case_id for c in todo), reused)


def _preprocess_one(item: tuple[RawDataset, RawCase, PlanConfig, Path]) -> tuple[str, list[list[Any]]]:
    dataset, case, plan, out = item
    signature = input_signature(case)  # before reading: a file changed meanwhile is redone next time
    images, label = read_case(dataset, case)
    data, seg, properties = preprocess_case(images, label, plan)
    save_case(out, case.case_id, data, seg, properties)
    return case.case_id, signature


def _complete(out: Path, case: RawCase) -> bool:
    image_path, seg_path, json_path = _case_paths(out, case.case_id)
    return image_path.is_file() and json_path.is_file() and (case.label_path is None or seg_path.is_file())


def _read_manifest(out: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and manifest.get("format_version") == STORE_FORMAT_VERSION:
            if isinstance(manifest.get("cases"), dict):
                return manifest
    return None


def _write_manifest(out: Path, key: dict, dataset: RawDataset, entries: dict[str, dict]) -> None:
    ordered = {c.case_id: entries[c.case_id] for c in dataset.cases if c.case_id in entries}
    manifest = {
        "format_version": STORE_FORMAT_VERSION,
        "dataset_folder": str(dataset.folder),
        "preprocessing": key,
        "cases": ordered,
    }
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1))


def _progress(total: int, enabled: bool):
    """A terminal bar on stderr (tqdm's, or plain text lines where tqdm is not installed, as in Slicer)."""
    from MaskMedCore.engine.progress import make_bar

    return make_bar(total, desc="preprocessing", unit="case", disable=not enabled or total == 0)
