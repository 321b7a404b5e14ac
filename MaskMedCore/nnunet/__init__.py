"""Run nnU-Net v2 models as they are, and start MaskMed models from their weights (issue 11).

- ``result_folder``: read and check a ``Trainer__Plans__configuration`` folder (no torch).
- ``checkpoint``: load ``fold_X/checkpoint_*.pth`` with ``weights_only=True`` and an allow-list.
- ``network``: the plans' ``PlainConvUNet`` or ``ResidualEncoderUNet`` as a MaskMed ``ModelConfig`` (point-wise head,
  no bridge).
- ``weights``: state-dict names nnU-Net <-> MaskMed.
- ``preprocessing``: nnU-Net's preprocessing and export for a configuration, reproduced.
- ``predictor``: ``NnUNetModelPredictor`` (``Predictor.from_nnunet``), what ``maskmed predict -m FOLDER`` runs.
- ``model_zip``: verify and install a zipped result folder (nnU-Net's ``export_pretrained_model`` layout);
  ``safe_zip``: the per-member checks (paths, links, sizes) it relies on.
"""

from MaskMedCore.nnunet.result_folder import (
    NnUNetModelError,
    NnUNetResultFolder,
    is_nnunet_result_folder,
    read_result_folder,
)

__all__ = ["NnUNetModelError", "NnUNetResultFolder", "is_nnunet_result_folder", "read_result_folder"]
