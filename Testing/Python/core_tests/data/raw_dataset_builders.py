"""Builders of small synthetic raw datasets (nnU-Net v2 and MSD layouts) written with SimpleITK.

Each case is a zero background with a non-zero "body" box (so cropping to non-zero matters) and
labelled ellipsoids inside it; intensities differ per label so normalisation statistics are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

OBLIQUE = tuple(float(v) for v in Rotation.from_euler("xyz", [20, -10, 30], degrees=True).as_matrix().ravel())
"""An oblique direction matrix (a proper rotation), SimpleITK row-major order."""


def write(array, path, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    """Write a (D, H, W) array with (D, H, W) spacing; returns the path."""
    image = sitk.GetImageFromArray(np.asarray(array))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def case_arrays(shape=(20, 24, 28), num_labels=3, num_channels=1, seed=0, margin=3):
    """(channels: list of (D, H, W) float32, labels: (D, H, W) uint8) for one synthetic case."""
    rng = np.random.default_rng(seed)
    D, H, W = shape
    labels = np.zeros(shape, np.uint8)
    zz, yy, xx = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    body = np.zeros(shape, bool)
    body[margin : D - margin, margin + 1 : H - margin, margin : W - margin - 2] = True
    for k in range(1, num_labels):
        c = [rng.uniform(margin + 4, s - margin - 5) for s in shape]
        r = [rng.uniform(2.5, 4.5) for _ in shape]
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        labels[inside & body] = k
    channels = []
    for c in range(num_channels):
        x = rng.normal(100.0 * (c + 1), 10.0, shape).astype(np.float32)
        x += (labels * 50.0 * (c + 1)).astype(np.float32)
        x[~body] = 0.0
        channels.append(x)
    return channels, labels


def nnunet_dataset(
    root,
    num_cases=3,
    channel_names=("CT",),
    num_labels=3,
    ending=".nii.gz",
    shape=(20, 24, 28),
    spacing=(1.0, 1.0, 1.0),
    direction=None,
    seed=0,
) -> Path:
    """An nnU-Net v2 raw dataset in ``root``; returns ``root``."""
    root = Path(root)
    for i in range(num_cases):
        channels, labels = case_arrays(shape, num_labels, len(channel_names), seed=seed + i)
        cid = f"case_{i:03d}"
        for c, x in enumerate(channels):
            write(x, root / "imagesTr" / f"{cid}_{c:04d}{ending}", spacing, direction=direction)
        write(labels, root / "labelsTr" / f"{cid}{ending}", spacing, direction=direction)
    labels_json = {"background": 0, **{f"organ{k}": k for k in range(1, num_labels)}}
    meta = {
        "name": "Synthetic",
        "channel_names": {str(i): n for i, n in enumerate(channel_names)},
        "labels": labels_json,
        "numTraining": num_cases,
        "file_ending": ending,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def msd_dataset(root, num_cases=2, modalities=("T1", "T2"), num_labels=3, shape=(20, 24, 28), seed=0) -> Path:
    """An MSD dataset in ``root``: 4D images (last axis = modality) when several modalities."""
    root = Path(root)
    training = []
    for i in range(num_cases):
        channels, labels = case_arrays(shape, num_labels, len(modalities), seed=seed + i)
        cid = f"mri_{i}"
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        if len(modalities) == 1:
            write(channels[0], root / "imagesTr" / f"{cid}.nii.gz")
        else:
            image = sitk.JoinSeries([sitk.GetImageFromArray(x) for x in channels])  # (x, y, z, modality)
            sitk.WriteImage(image, str(root / "imagesTr" / f"{cid}.nii.gz"), True)
        write(labels, root / "labelsTr" / f"{cid}.nii.gz")
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    meta = {
        "name": "MSDSynthetic",
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "labels": {"0": "background", **{str(k): f"region{k}" for k in range(1, num_labels)}},
        "numTraining": num_cases,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def link_brats(shared_data: Path, root: Path, cases=("brats_2013_pat0001_1", "brats_2013_pat0002_1")) -> Path:
    """Two BraTS cases (flair -> _0000, t1c -> _0001) as an nnU-Net dataset of symlinks."""
    src = shared_data / "brats2015_deepmedic"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for cid in cases:
        (root / "imagesTr" / f"{cid}_0000.nii.gz").symlink_to(src / f"{cid}_flair.nii.gz")
        (root / "imagesTr" / f"{cid}_0001.nii.gz").symlink_to(src / f"{cid}_t1c.nii.gz")
        (root / "labelsTr" / f"{cid}.nii.gz").symlink_to(src / f"{cid}_label.nii.gz")
    labels = json.loads((src / "labels.json").read_text())
    meta = {
        "name": "BraTS2015_2cases",
        "channel_names": {"0": "FLAIR", "1": "T1c"},
        "labels": {name: int(value) for value, name in labels.items()},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def link_spleen_msd(shared_data: Path, root: Path) -> Path:
    """The cropped MSD spleen CT case as an MSD-layout dataset of symlinks."""
    src = shared_data / "msd_spleen_case2_crop"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTr" / "spleen_2.nii.gz").symlink_to(src / "spleen_2_crop_image.nii.gz")
    (root / "labelsTr" / "spleen_2.nii.gz").symlink_to(src / "spleen_2_crop_label.nii.gz")
    meta = {
        "name": "Spleen",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": 1,
        "training": [{"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))
