"""Data layer: raw dataset formats, validation, fingerprint, planning, preprocessing and its cache.

A plain list of re-exports (add yours below); hence the file-wide F401 exemption.
"""

# ruff: noqa: F401

from MaskMedCore.data.dataset import RawCase, RawDataset, load_dataset, read_case_images
from MaskMedCore.data.fingerprint import compute_fingerprint
from MaskMedCore.data.image_io import (
    Geometry,
    ImageFileError,
    check_finite,
    geometry_of,
    image_to_array,
    read_image,
    read_image_channels,
    read_label,
    shape_dhw,
    spacing_dhw,
    write_image,
)
from MaskMedCore.data.natural_images import THROUGH_PLANE_SPACING
from MaskMedCore.data.phantom import (
    DEFAULT_PHANTOM_SHAPE,
    DEFAULT_PHANTOM_SPACING,
    PHANTOM_HU_RANGES,
    PHANTOM_LABELS,
    generate_phantom,
    write_phantom_dataset,
)
from MaskMedCore.data.planner import Topology, network_topology, plan_dataset
from MaskMedCore.data.preprocessed_store import (
    PreprocessedCase,
    PreprocessSummary,
    default_preprocessed_dir,
    list_cases,
    load_case,
    load_plan,
    preprocess_dataset,
    save_case,
)
from MaskMedCore.data.preprocessing import array_to_image, preprocess_case, restore_labels, restore_map
from MaskMedCore.data.sampling import (
    PatchSampler,
    augmentation_sample_size,
    enlarged_patch_size,
    foreground_forced,
)
from MaskMedCore.data.validate import Problem, read_case, validate_dataset

# Augmenter (data.augmentation) and BatchLoader (data.loader) import torch: import them from their modules.
