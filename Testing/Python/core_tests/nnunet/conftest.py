"""Fixtures of the nnU-Net model tests: nnU-Net v2 models trained here by the real ``nnunetv2`` package.

Training runs in a child process (``nnunet_child.py``) because nnunetv2 reads its folder variables at
import time. Tests that need nnunetv2 skip with a message where it is not installed
(``bash Testing/Benchmarks/install_peers.sh`` installs it; ``.ci/run`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("nnunet_child.py")


def require_nnunetv2() -> None:
    """Skip unless nnunetv2 and dynamic-network-architectures can be imported."""
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (bash Testing/Benchmarks/install_peers.sh)")
    pytest.importorskip(
        "dynamic_network_architectures", reason="dynamic-network-architectures is not installed (install_peers.sh)"
    )


def train_nnunet(root: Path, dataset_id: int, dataset_name: str, arch: dict, iterations: int, fold=0) -> Path:
    """Train nnU-Net on ``root/nnUNet_raw/<dataset_name>`` (one epoch, AdamW); returns the result folder."""
    spec = {
        "root": str(root),
        "dataset_id": dataset_id,
        "dataset_name": dataset_name,
        "trainer": "nnUNetTrainer_1epoch",
        "fold": fold,
        "iterations": iterations,
        "arch": arch,
    }
    spec_file = root / "spec.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(CHILD), str(spec_file)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"nnunetv2 training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


PHANTOM_CT_ARCH = {
    "patch_size": [16, 48, 48],
    "batch_size": 2,
    "features_per_stage": [8, 16, 32, 64],
    "spacing": [3.0, 1.5, 1.5],
}
"""The 3d_fullres edits of the phantom CT models: a small 4-stage network at an edited 3 x 1.5 x 1.5 mm spacing."""


def train_phantom_ct(root: Path, dataset_id: int, name: str, **arch) -> Path:
    """nnU-Net on 6 phantom CTs with 5 mm slices along the *last* array axis, so nnU-Net plans a transpose
    ([2, 0, 1]), CT normalisation from its fingerprint and separate-z resampling; ``arch`` adds edits."""
    from MaskMedCore.data.phantom import write_phantom_dataset

    write_phantom_dataset(root / "nnUNet_raw" / name, 6, seed=0, shape=(64, 64, 24), spacing=(1.2, 1.2, 5.0), name=name)
    return train_nnunet(root, dataset_id, name, {**PHANTOM_CT_ARCH, **arch}, iterations=120)


def phantom_test_image(root: Path, seed: int, shape, spacing) -> list[Path]:
    from MaskMedCore.data.phantom import write_phantom_dataset

    ds = write_phantom_dataset(root / f"test{seed}", 1, seed=seed, shape=shape, spacing=spacing)
    return sorted((ds / "imagesTr").glob("*.nii.gz"))


@pytest.fixture(scope="session")
def nnunet_ct_model(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A CT model (see :func:`train_phantom_ct`). Returns (result folder, test images at two spacings: the
    training one and 0.9 x 1.1 x 6 mm, which both predictors resample)."""
    require_nnunetv2()
    root = tmp_path_factory.mktemp("nnunet_ct")
    folder = train_phantom_ct(root, 991, "Dataset991_PhantomCT")
    tests = phantom_test_image(root, 100, (64, 64, 24), (1.2, 1.2, 5.0))
    tests += phantom_test_image(root, 200, (80, 70, 20), (0.9, 1.1, 6.0))
    return folder, tests


@pytest.fixture(scope="session")
def nnunet_mri_model(tmp_path_factory) -> tuple[Path, list[Path]]:
    """An MRI model (z-score normalisation) on 8 real MSD hippocampus cases (CC-BY-SA 4.0, ../shared/data);
    returns (result folder, 4 held-out images)."""
    require_nnunetv2()
    env = os.environ.get("MASKMED_SHARED_DATA")  # as the root conftest's shared_data_dir()
    source = (Path(env) if env else Path(__file__).resolve().parents[4].parent / "shared" / "data") / "msd_hippocampus"
    if not source.is_dir():
        pytest.skip(f"MSD hippocampus not found at {source} (set MASKMED_SHARED_DATA)")
    root = tmp_path_factory.mktemp("nnunet_mri")
    name = "Dataset992_Hippocampus"
    raw = root / "nnUNet_raw" / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    # MSD v1 layout (hippocampus_003.nii.gz, "modality", labels value -> name) -> nnU-Net v2 raw layout.
    cases = sorted(p.name[: -len(".nii.gz")] for p in (source / "imagesTr").glob("*.nii.gz"))
    for case in cases[:8]:
        shutil.copy(source / "imagesTr" / f"{case}.nii.gz", raw / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(source / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr" / f"{case}.nii.gz")
    dataset = {
        "name": name,
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "anterior": 1, "posterior": 2},
        "numTraining": 8,
        "file_ending": ".nii.gz",
        "licence": "CC-BY-SA 4.0",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset))
    arch = {"patch_size": [40, 56, 40], "batch_size": 2, "features_per_stage": [8, 16, 32, 64]}
    folder = train_nnunet(root, 992, name, arch, iterations=100, fold="all")
    return folder, [source / "imagesTr" / f"{c}.nii.gz" for c in cases[8:12]]


@pytest.fixture(scope="session")
def nnunet_resenc_model(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A ResEnc model: nnU-Net's ResidualEncoderUNet (the network of its ResEnc M/L/XL presets) with blocks
    per stage (1, 2, 2, 2), trained like ``nnunet_ct_model`` (transpose, CT normalisation).
    Returns (result folder, one test image at another spacing)."""
    require_nnunetv2()
    root = tmp_path_factory.mktemp("nnunet_resenc")
    folder = train_phantom_ct(
        root, 993, "Dataset993_PhantomCTResEnc", network="resenc", n_blocks_per_stage=[1, 2, 2, 2]
    )
    return folder, phantom_test_image(root, 200, (80, 70, 20), (0.9, 1.1, 6.0))
