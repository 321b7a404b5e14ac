"""MaskMedSlicerLib: the Qt-free logic of the MaskMed Slicer module.

Runs inside 3D Slicer and on plain Python with the ``slicer-core`` package (real MRML, no application).
Nothing here imports Qt, and torch is imported only inside :func:`checkpoint_info`; every function
that touches MRML takes the ``vtkMRMLScene`` (or a node in it) explicitly.

One concept per module: ``logic`` (segment, training start), ``segment_task`` / ``training_task`` /
``dataset_check`` / ``device_probe`` (the panel's background tasks), ``results`` and ``query_maps`` (what a
run leaves), ``inspection`` (the Inspect section's nodes), ``roi`` (segmenting inside an ROI),
``model_list`` (the model selector), ``model_info`` / ``models`` / ``nnunet_models`` (reading, finding and
installing MaskMed checkpoints and nnU-Net v2 result folders), ``model_cards`` (what each listed model is),
``segmentation_io`` / ``volume_io`` / ``query_views`` /
``training_views`` (MRML in and out), ``instance_results`` / ``instance_views`` (instances, boxes and case
predictions of a multi-task model), ``terminology`` and ``colors``, ``process`` (child processes).
"""

from MaskMedSlicerLib.colors import default_label_colors
from MaskMedSlicerLib.dataset_check import DatasetCheck, describe_validation
from MaskMedSlicerLib.dependencies import REQUIRED_PACKAGES, missing_packages
from MaskMedSlicerLib.device_probe import DeviceProbe
from MaskMedSlicerLib.errors import MaskMedSlicerError, SegmentationCancelled
from MaskMedSlicerLib.inputs import nodes_for_model
from MaskMedSlicerLib.inspection import Inspection
from MaskMedSlicerLib.instance_results import InstanceOutputs, read_instance_outputs
from MaskMedSlicerLib.instance_views import InstanceNodes, add_instance_nodes, instance_result_nodes
from MaskMedSlicerLib.logic import MaskMedLogic
from MaskMedSlicerLib.model_cards import ModelCardInfo, model_card_info
from MaskMedSlicerLib.model_list import ModelList
from MaskMedSlicerLib.models import ModelInfo, bundled_demo_model, checkpoint_info, find_models, read_model_info
from MaskMedSlicerLib.nnunet_models import (
    install_nnunet_zip_model,
    nnunet_info,
    resolve_nnunet_folder,
    user_models_folder,
)
from MaskMedSlicerLib.process import (
    MaskMedProcess,
    build_predict_command,
    build_train_command,
    find_python_slicer,
    maskmed_core_folder,
    subprocess_env,
)
from MaskMedSlicerLib.progress import ProgressEvent, ProgressParser, TrainingCurve, parse_progress_line
from MaskMedSlicerLib.query_maps import QueryMap, compact_query_map
from MaskMedSlicerLib.query_views import (
    NO_QUERIES_MESSAGE,
    QueryResults,
    probability_color_node,
    query_overlay_volume,
    query_probability_volume,
    query_summary_table,
    table_from_matrix,
)
from MaskMedSlicerLib.results import SegmentationJob, SegmentationResult
from MaskMedSlicerLib.roi import RoiCrop, roi_crop
from MaskMedSlicerLib.scene_setup import ensure_segmentation_converters, remove_nodes
from MaskMedSlicerLib.segment_task import SegmentTask
from MaskMedSlicerLib.segmentation_io import add_binary_segment, labelmap_file_to_segmentation, labelmap_to_segmentation
from MaskMedSlicerLib.terminology import ORGAN_TERMINOLOGY, apply_standard_terminology, terminology_entry
from MaskMedSlicerLib.training_task import TrainingTask
from MaskMedSlicerLib.training_views import training_curve_chart, training_curve_table
from MaskMedSlicerLib.volume_io import (
    channel_images_from_volume_node,
    export_volume,
    image_from_volume_node,
    volume_node_from_file,
)

__all__ = [
    "MaskMedLogic",
    "SegmentationResult",
    "SegmentationJob",
    "SegmentTask",
    "TrainingTask",
    "DatasetCheck",
    "describe_validation",
    "DeviceProbe",
    "Inspection",
    "InstanceOutputs",
    "read_instance_outputs",
    "InstanceNodes",
    "add_instance_nodes",
    "instance_result_nodes",
    "ModelList",
    "MaskMedSlicerError",
    "SegmentationCancelled",
    "ModelInfo",
    "ModelCardInfo",
    "model_card_info",
    "bundled_demo_model",
    "checkpoint_info",
    "read_model_info",
    "find_models",
    "nnunet_info",
    "resolve_nnunet_folder",
    "install_nnunet_zip_model",
    "user_models_folder",
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
    "QueryMap",
    "compact_query_map",
    "QueryResults",
    "NO_QUERIES_MESSAGE",
    "probability_color_node",
    "query_overlay_volume",
    "query_probability_volume",
    "query_summary_table",
    "table_from_matrix",
    "RoiCrop",
    "roi_crop",
    "ensure_segmentation_converters",
    "remove_nodes",
    "add_binary_segment",
    "default_label_colors",
    "labelmap_file_to_segmentation",
    "labelmap_to_segmentation",
    "ORGAN_TERMINOLOGY",
    "apply_standard_terminology",
    "terminology_entry",
    "training_curve_chart",
    "training_curve_table",
    "export_volume",
    "image_from_volume_node",
    "channel_images_from_volume_node",
    "nodes_for_model",
    "volume_node_from_file",
    "REQUIRED_PACKAGES",
    "missing_packages",
]
