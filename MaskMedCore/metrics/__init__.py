"""Segmentation metrics on label maps: Dice, HD95 and normalised surface Dice, plus folder evaluation.

Also lesion metrics (``lesions``: 26-connected components, the BraTS 2023 lesion-wise Dice; ``detection``:
IoU matching, AP, FROC) and case classification metrics (``classification``: accuracy, ROC AUC).

Conventions shared by every metric here:

- Inputs are numpy label maps or binary masks of shape (D, H, W) and a voxel spacing (D, H, W) in mm
  (SimpleITK's ``GetSpacing()`` reversed).
- Results are plain Python floats, computed per class.
- Empty cases: a class absent from both prediction and reference scores Dice 1, HD95 0 mm, NSD 1;
  a class present in exactly one of them scores Dice 0, HD95 nan (undefined; the folder evaluation
  counts these per class as ``n_hd95_undefined`` and leaves them out of the HD95 mean), NSD 0.
"""

from MaskMedCore.metrics.classification import accuracy, roc_auc
from MaskMedCore.metrics.detection import (
    CaseDetections,
    ScoredInstances,
    average_precision,
    detection_counts,
    detections_from_instances,
    detections_from_masks,
    froc_sensitivities,
    instances_from_label_map,
    match_detections,
)
from MaskMedCore.metrics.evaluate import evaluate_folders, read_dataset_labels, write_report
from MaskMedCore.metrics.lesions import LesionWiseDice, lesion_components, lesion_wise_dice, merged_reference_lesions
from MaskMedCore.metrics.overlap import class_mask, dice_per_class, dice_score
from MaskMedCore.metrics.surface import (
    SurfaceMetrics,
    hausdorff_distance_95,
    normalized_surface_dice,
    surface_distances,
    surface_metrics,
    surface_voxels,
)

__all__ = [
    "CaseDetections",
    "LesionWiseDice",
    "ScoredInstances",
    "SurfaceMetrics",
    "accuracy",
    "average_precision",
    "class_mask",
    "detection_counts",
    "detections_from_instances",
    "detections_from_masks",
    "dice_per_class",
    "dice_score",
    "evaluate_folders",
    "froc_sensitivities",
    "hausdorff_distance_95",
    "instances_from_label_map",
    "lesion_components",
    "lesion_wise_dice",
    "match_detections",
    "merged_reference_lesions",
    "normalized_surface_dice",
    "read_dataset_labels",
    "roc_auc",
    "surface_distances",
    "surface_metrics",
    "surface_voxels",
    "write_report",
]
