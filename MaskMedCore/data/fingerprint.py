"""Dataset fingerprint: spacings, shapes after cropping and foreground intensities (nnU-Net v2 §2.3).

Per case: crop to the non-zero bounding box, record the (D, H, W) spacing and the cropped shape,
and sample intensities of every channel inside the label foreground (``label > 0``), with
replacement, from a generator seeded by ``(seed, case index)`` (reproducible whatever the worker
count). The pooled samples give the dataset-wide statistics per channel that ``ct`` normalisation
uses.

Departure from nnU-Net: ``num_samples`` voxels in total (default 10^6, spread evenly over the
cases) instead of 10^7, which keeps memory small; the 0.5/99.5 percentiles are stable at this size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import SimpleITK as sitk

from MaskMedCore.data.dataset import RawCase, RawDataset, map_cases
from MaskMedCore.data.image_io import shape_dhw, spacing_dhw
from MaskMedCore.data.preprocessing import bounding_box, nonzero_mask
from MaskMedCore.data.validate import read_case

FINGERPRINT_FORMAT_VERSION = 1
STAT_KEYS = ("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5")


def compute_fingerprint(
    dataset: RawDataset, workers: int = 1, seed: int = 0, num_samples: int = 1_000_000
) -> dict[str, Any]:
    """Fingerprint ``dataset`` (a JSON-serialisable dict).

    Args:
        dataset: a validated dataset (a bad case raises DataError naming it).
        workers: worker processes.
        seed: seed of the foreground intensity sampling.
        num_samples: foreground voxels sampled per channel over the whole dataset.

    Returns:
        ``{"format_version", "dataset_name", "channel_names", "labels", "seed", "cases": [{"case_id",
        "spacing", "shape_before_crop", "shape_after_crop"}], "median_relative_size_after_cropping",
        "foreground_intensity_properties_per_channel": {"0": {mean, median, std, min, max,
        percentile_00_5, percentile_99_5}}}``; spacings and shapes in (D, H, W) order. A channel
        statistic is None when no case has a foreground voxel.
    """
    per_case = max(1, math.ceil(num_samples / len(dataset.cases)))
    slim = dataclasses.replace(dataset, cases=[])
    items = [(slim, case, per_case, (seed, i)) for i, case in enumerate(dataset.cases)]
    cases, samples = [], [[] for _ in dataset.channel_names]
    for record, case_samples in map_cases(_case_fingerprint, items, workers):
        cases.append(record)
        for c, values in enumerate(case_samples):
            samples[c].append(values)
    relative = [float(np.prod(r["shape_after_crop"]) / np.prod(r["shape_before_crop"])) for r in cases]
    return {
        "format_version": FINGERPRINT_FORMAT_VERSION,
        "dataset_name": dataset.name,
        "channel_names": list(dataset.channel_names),
        "labels": dict(dataset.labels),
        "seed": seed,
        "num_samples": num_samples,
        "cases": cases,
        "median_relative_size_after_cropping": float(np.median(relative)),
        "foreground_intensity_properties_per_channel": {
            str(c): intensity_stats(np.concatenate(s)) for c, s in enumerate(samples)
        },
    }


def _case_fingerprint(item: tuple[RawDataset, RawCase, int, tuple[int, int]]) -> tuple[dict, list[np.ndarray]]:
    dataset, case, n_samples, seed = item
    images, label = read_case(dataset, case)
    data = np.stack([sitk.GetArrayViewFromImage(im) for im in images])  # (C, D, H, W)
    seg = sitk.GetArrayViewFromImage(label)
    box = tuple(slice(a, b) for a, b in bounding_box(nonzero_mask(data)))
    data, seg = data[(slice(None), *box)], seg[box]
    foreground = seg > 0
    rng = np.random.default_rng(list(seed))
    samples = []
    for c in range(data.shape[0]):
        values = data[c][foreground]
        samples.append(rng.choice(values, n_samples, replace=True).astype(np.float64) if values.size else np.zeros(0))
    record = {
        "case_id": case.case_id,
        "spacing": list(spacing_dhw(images[0])),
        "shape_before_crop": list(shape_dhw(images[0])),
        "shape_after_crop": [int(s) for s in data.shape[1:]],
    }
    return record, samples


def intensity_stats(values: np.ndarray) -> dict[str, float | None]:
    """nnU-Net's per-channel foreground statistics of pooled samples (None for an empty pool)."""
    if values.size == 0:
        return {k: None for k in STAT_KEYS}
    p005, median, p995 = np.percentile(values, [0.5, 50.0, 99.5])
    return {
        "mean": float(values.mean()),
        "median": float(median),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "percentile_00_5": float(p005),
        "percentile_99_5": float(p995),
    }
