"""MaskMedSlicerLib: the Qt-free logic of the MaskMed Slicer module.

Runs inside 3D Slicer and on plain Python with the ``slicer-core`` package (real MRML, no application).
Nothing here imports Qt, and torch is imported only inside :func:`checkpoint_info`; every function
that touches MRML takes the ``vtkMRMLScene`` (or a node in it) explicitly.
"""

from MaskMedSlicerLib.dependencies import REQUIRED_PACKAGES, missing_packages
from MaskMedSlicerLib.errors import MaskMedSlicerError, SegmentationCancelled
from MaskMedSlicerLib.logic import MaskMedLogic, SegmentationJob, SegmentationResult
from MaskMedSlicerLib.models import ModelInfo, bundled_demo_model, checkpoint_info, find_models
from MaskMedSlicerLib.process import (
    MaskMedProcess,
    build_predict_command,
    build_train_command,
    find_python_slicer,
    maskmed_core_folder,
    subprocess_env,
)
from MaskMedSlicerLib.progress import ProgressEvent, ProgressParser, TrainingCurve, parse_progress_line
from MaskMedSlicerLib.query_views import (
    QueryResults,
    probability_color_node,
    query_probability_volume,
    query_summary_table,
    table_from_matrix,
)
from MaskMedSlicerLib.scene_setup import ensure_segmentation_converters, remove_nodes
from MaskMedSlicerLib.segmentation_io import add_binary_segment, default_label_colors, labelmap_file_to_segmentation
from MaskMedSlicerLib.terminology import ORGAN_TERMINOLOGY, terminology_entry
from MaskMedSlicerLib.training_views import training_curve_chart, training_curve_table
from MaskMedSlicerLib.volume_io import export_volume, image_from_volume_node, volume_node_from_file

__all__ = [
    "MaskMedLogic",
    "SegmentationResult",
    "SegmentationJob",
    "MaskMedSlicerError",
    "SegmentationCancelled",
    "ModelInfo",
    "bundled_demo_model",
    "checkpoint_info",
    "find_models",
    "MaskMedProcess",
    "build_predict_command",
    "build_train_command",
    "find_python_slicer",
    "maskmed_core_folder",
    "subprocess_env",
    "ProgressEvent",
    "ProgressParser",
    "TrainingCurve",
    "parse_progress_line",
    "QueryResults",
    "probability_color_node",
    "query_probability_volume",
    "query_summary_table",
    "table_from_matrix",
    "ensure_segmentation_converters",
    "remove_nodes",
    "add_binary_segment",
    "default_label_colors",
    "labelmap_file_to_segmentation",
    "ORGAN_TERMINOLOGY",
    "terminology_entry",
    "training_curve_chart",
    "training_curve_table",
    "export_volume",
    "image_from_volume_node",
    "volume_node_from_file",
    "REQUIRED_PACKAGES",
    "missing_packages",
]
