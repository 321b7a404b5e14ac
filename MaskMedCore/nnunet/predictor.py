"""Run an nnU-Net v2 result folder as nnU-Net's ``nnUNetPredictor`` does, on MaskMed's network code.

    predictor = NnUNetModelPredictor("nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres",
                                     folds=("0",), tta=True)        # or Predictor.from_nnunet(...)
    result = predictor.predict("case_0000.nii.gz")                  # a MaskMedCore Prediction
    result.write("out/", "case")

What matches nnU-Net (``nnunetv2.inference.predict_from_raw_data``): preprocessing and export of the
configuration (``MaskMedCore.nnunet.preprocessing``); the PlainConvUNet or ResidualEncoderUNet as MaskMed's point-wise
network with the checkpoint's weights (``MaskMedCore.nnunet.weights``); sliding window with
``tile_step_size`` (``step_size`` here), centred zero padding of inputs smaller than the patch,
nnU-Net's Gaussian importance map (``compute_gaussian``: a filtered delta, scaled, in float16),
mirroring over the checkpoint's ``inference_allowed_mirroring_axes`` averaged in logit space, folds
averaged in logit space, ``autocast`` (float16) on CUDA by default (``precision``: bfloat16 on request,
also on the CPU).

Deliberate differences: the accumulators are float32 (nnU-Net: float16), and on the CPU small tiles
are sent two at a time where a batch-1 convolution would fall off oneDNN (identical outputs,
``MaskMedCore.inference.cpu_batching``). A point-wise network has no queries, so the prediction's
``queries`` is empty and its summary says what the model is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from MaskMedCore.engine.trainer import resolve_device
from MaskMedCore.inference.cpu_batching import default_tile_batch, needs_batch_padding, network_forward, tile_counts
from MaskMedCore.inference.precision import check_precision, forward_autocast
from MaskMedCore.inference.predictor import ImageInput, Prediction, read_case_channels
from MaskMedCore.inference.query_summary import class_volumes_ml
from MaskMedCore.nnunet.checkpoint import load_nnunet_checkpoint
from MaskMedCore.nnunet.network import model_config
from MaskMedCore.nnunet.preprocessing import NnUNetPreprocessing, export_labels, preprocess
from MaskMedCore.nnunet.result_folder import NnUNetModelError, NnUNetResultFolder, read_result_folder
from MaskMedCore.nnunet.weights import nnunet_to_maskmed_state

CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth", "latest": "checkpoint_latest.pth"}


def nnunet_gaussian(
    patch: Sequence[int], sigma_scale: float = 1.0 / 8, value_scaling_factor: float = 10.0
) -> torch.Tensor:
    """nnU-Net's ``compute_gaussian``: a delta at ``p // 2`` filtered with σ = patch x ``sigma_scale``
    (truncated at 4σ), scaled to max ``value_scaling_factor``, rounded to float16 (as nnU-Net keeps it), zeros
    replaced by the smallest non-zero weight. Returned as float32."""
    delta = np.zeros(tuple(patch))
    delta[tuple(p // 2 for p in patch)] = 1
    g = gaussian_filter(delta, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    g = torch.from_numpy(g / (g.max() / value_scaling_factor)).to(torch.float16)
    zero = g == 0
    if zero.any():
        g[zero] = g[~zero].min()
    return g.float()


def resolve_folds(
    folder: NnUNetResultFolder, folds: Sequence[str | int] | str | None, checkpoint: str
) -> tuple[str, ...]:
    """``None``: every numbered fold with ``checkpoint`` (nnU-Net's auto-detection, which skips ``fold_all``),
    else ``all`` if only that exists; otherwise the given folds, each checked to exist."""
    if folds is None:
        numbered = [f for f in folder.folds if f != "all" and (folder.path / f"fold_{f}" / checkpoint).is_file()]
        folds = numbered or ["all"]
    elif isinstance(folds, (str, int)):
        folds = [folds]
    out = tuple(str(f) for f in folds)
    for fold in out:
        folder.checkpoint_path(fold, checkpoint)  # raises, listing what exists
    return out


class NnUNetModelPredictor:
    """Args:
    folder: the result folder (``Trainer__Plans__configuration``) or an already read one.
    folds: folds to ensemble (``"all"`` for fold_all); default: every trained numbered fold.
    checkpoint: ``final``, ``best``, ``latest`` or a file name in the fold folders.
    device: ``auto``, ``cuda``, ``cpu`` or a torch device.
    tta: mirroring over the checkpoint's allowed axes (nnU-Net's default is on; MaskMed's CLI default off).
    step_size: nnU-Net's ``tile_step_size`` (0.5 = half-patch overlap).
    tile_batch_size: tiles per network call (default as MaskMed's predictor).
    precision: ``auto`` (float16 autocast on CUDA as nnU-Net, float32 on the CPU), ``fp32`` or ``bf16``
        (``MaskMedCore.inference.precision``).
    reuse_constant_tiles: run the network once per distinct constant tile and reuse its output (exact; see
        ``MaskMedCore.inference.constant_tiles``); ``tile_counts`` then says how many were computed/reused.
    """

    def __init__(
        self,
        folder: str | os.PathLike | NnUNetResultFolder,
        folds: Sequence[str | int] | str | None = None,
        checkpoint: str = "final",
        device: str | torch.device = "auto",
        tta: bool = False,
        step_size: float = 0.5,
        tile_batch_size: int | None = None,
        reuse_constant_tiles: bool = True,
        precision: str = "auto",
    ) -> None:
        self.reuse_constant_tiles = reuse_constant_tiles
        self.tile_counts = {"computed": 0, "reused": 0}
        self.folder = folder if isinstance(folder, NnUNetResultFolder) else read_result_folder(folder)
        if not 0 < step_size <= 1:
            raise NnUNetModelError(f"step_size must be in (0, 1] (nnU-Net's tile_step_size), got {step_size}")
        name = CHECKPOINTS.get(checkpoint, checkpoint)
        self.folds = resolve_folds(self.folder, folds, name)
        self.preprocessing = NnUNetPreprocessing.from_folder(self.folder)
        self.model_config = model_config(self.folder)
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.precision = check_precision(precision, self.device)
        checkpoints = [load_nnunet_checkpoint(self.folder.checkpoint_path(f, name)) for f in self.folds]
        source = str(self.folder.path)
        self.states = [nnunet_to_maskmed_state(c.network_weights, source=str(c.path)) for c in checkpoints]
        # nnU-Net takes the mirror axes from the first fold's checkpoint.
        self.mirror_axes = tuple(checkpoints[0].mirror_axes or ()) if tta else ()
        self.model = self._build(source)
        patch = self.folder.patch_size
        features = self.model_config.features_per_stage[0]
        self.tile_batch_size = tile_batch_size or default_tile_batch(self.device, features, patch)
        self.min_batch = 2 if needs_batch_padding(self.device, features, patch) else 1
        self.overlap = 1.0 - step_size
        self.importance_map = nnunet_gaussian(patch)

    def _build(self, source: str) -> torch.nn.Module:
        from MaskMedCore.models.build import build_model

        model = build_model(self.model_config)
        for state in self.states:
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise NnUNetModelError(
                    f"{source}: checkpoint weights do not fit the network in plans.json ({str(exc).splitlines()[0]}); "
                    "the plans and the checkpoint come from different trainings"
                ) from None
        return model.to(self.device).eval()

    @property
    def label_names(self) -> list[str]:
        return list(self.folder.label_names)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self.folder.channel_names

    def model_summary(self) -> dict:
        """What ``<case>_summary.json`` says about the model (a point-wise network: no queries)."""
        return {
            "model": {
                "kind": "nnunet",
                "head": "pointwise",
                "encoder": self.model_config.encoder,  # plain: PlainConvUNet, residual: ResidualEncoderUNet
                "folder": str(self.folder.path),
                "configuration": self.folder.configuration,
                "trainer": self.folder.trainer,
                "folds": list(self.folds),
                "mirror_axes": list(self.mirror_axes),
                "note": "nnU-Net model (point-wise head): no queries, masks or embeddings to inspect",
            }
        }

    def logits(self, data: np.ndarray, progress: Callable[[int, int], None] | None = None, cancel=None) -> torch.Tensor:
        """``(C, d, h, w)`` preprocessed input -> ``(K, d, h, w)`` fold-averaged logits (float32, CPU)."""
        from MaskMedCore.inference.sliding_window import sliding_window_predict

        image = torch.from_numpy(np.ascontiguousarray(data))
        total = None
        counts = {"computed": 0, "reused": 0}
        for i, state in enumerate(self.states):
            if len(self.states) > 1:
                self.model.load_state_dict(state)
            # A new forward per fold: stored constant-tile outputs belong to one set of weights.
            forward = network_forward(self.model, self.min_batch, self.reuse_constant_tiles)

            def fold_progress(done: int, tiles: int, i=i) -> None:
                if progress is not None:
                    progress(i * tiles + done, tiles * len(self.states))

            out = sliding_window_predict(
                image,
                lambda tiles, forward=forward: self._predict_tiles(tiles, forward),
                self.folder.patch_size,
                overlap=self.overlap,
                tile_batch_size=self.tile_batch_size,
                mirror_axes=self.mirror_axes,
                device=self.device,
                progress=fold_progress,
                cancel=cancel,
                importance_map=self.importance_map,
                center_padding=True,
            )
            total = out if total is None else total.add_(out)
            counts = {k: v + tile_counts(forward)[k] for k, v in counts.items()}
        self.tile_counts = counts
        if len(self.states) > 1:
            total /= len(self.states)
        return total

    def _predict_tiles(self, tiles: torch.Tensor, forward) -> torch.Tensor:
        """(B, C, d, h, w) -> (B, K, d, h, w) logits of the point-wise network (``forward``: ``network_forward``)."""
        if next(self.model.parameters()).device != tiles.device:  # CPU fallback after CUDA OOM
            self.model.to(tiles.device)
        with torch.no_grad(), forward_autocast(tiles.device, self.precision, torch.float16):
            out = forward(tiles)
        return out.mask_logits[-1].float()

    def predict(
        self,
        image: ImageInput | Sequence[ImageInput],
        *,
        save_queries: bool = False,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Prediction:
        """Segment one case (a SimpleITK image, a path, or one per channel). ``save_queries`` is accepted for
        the CLI's sake and has no effect: a point-wise network has no queries."""
        from MaskMedCore.data.image_io import image_from_array

        del save_queries
        channels = read_case_channels(image, self.channel_names)
        data, properties = preprocess(channels, self.preprocessing)
        logits = self.logits(data, progress, cancel)
        labels = export_labels(logits, properties, self.preprocessing)
        ref = channels[0]
        label_image = image_from_array(labels, ref.GetSpacing()[::-1], ref.GetOrigin(), ref.GetDirection())
        voxel_ml = float(np.prod(ref.GetSpacing())) / 1000.0
        K = len(self.label_names)
        return Prediction(
            labels=label_image,
            label_names=self.label_names,
            queries=[],
            class_volumes_ml=class_volumes_ml(labels, self.label_names, voxel_ml),
            class_embeddings=np.zeros((0, K), dtype=np.float32),
            mask_embeddings=np.zeros((0, self.model_config.features_per_stage[0]), dtype=np.float32),
            class_probabilities=np.zeros((0, K + 1), dtype=np.float32),
            extra=self.model_summary(),
        )
