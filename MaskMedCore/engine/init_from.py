"""Where a run's weights start when it does not start from scratch (``maskmed train --init-from``).

MaskMed's point-wise head without a bridge is nnU-Net's ``PlainConvUNet`` (MaskMed §3.1), so a trained
nnU-Net v2 model already holds a MaskMed encoder and decoder. Upgrading it means: build a MaskMed
network (decoupled head, optional FSAD bridge) on *the source's* UNet topology, copy in the source's
encoder and decoder, and train. The source is either

- an nnU-Net v2 result folder (``Trainer__Plans__configuration``, read by ``nnunet.result_folder``,
  weights by ``nnunet.checkpoint`` and renamed by ``nnunet.weights``), or
- a MaskMed run folder or checkpoint file (``engine.checkpoint``).

The weights only mean something at the resolution, intensities and classes they were trained on, so
:func:`plan_for_source` checks the dataset's labels, channels, normalisation and target spacing against
the source and takes the source's patch, batch and topology into the run's plan; :func:`model_config_for_source`
puts the topology into the new network's config. Anything the user asked for that contradicts the
source (``--patch-size``, ``--set features_per_stage=...``) is refused naming the field. Which tensors
were copied is decided and reported by ``engine.init_weights``.

All per-axis values here are in MaskMed's array order (D, H, W). nnU-Net plans may be transposed
(``transpose_forward``); their patch, kernels, strides and conv weights are put back into array order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.config.plan_config import PlanConfig
from MaskMedCore.config.validation import check_triplets
from MaskMedCore.errors import CheckpointError, ConfigError

TOPOLOGY_FIELDS = (
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "encoder",
    "n_conv_per_stage",
    "n_blocks_per_stage",
    "n_conv_per_stage_decoder",
)
"""ModelConfig fields of the UNet itself: they come from the source and must not be overridden."""
PLAN_TOPOLOGY_FIELDS = ("patch_size", "batch_size", "features_per_stage", "kernel_sizes", "strides")
"""PlanConfig fields taken from the source."""
NNUNET_CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
MASKMED_CHECKPOINTS = {"final": "checkpoint_latest.pt", "best": "checkpoint_best.pt"}
_NNUNET_NORMALIZATION = {"ZScoreNormalization": "zscore", "CTNormalization": "ct", "NoNormalization": "none"}
"""nnU-Net's normalisation classes -> MaskMed's scheme names (``config.plan_config.NORMALIZATION_SCHEMES``)."""


@dataclass(frozen=True)
class InitSource:
    """A pretrained model, read and put into MaskMed's terms (no network built yet).

    Attributes:
        kind: ``nnunet`` or ``maskmed``.
        given: the path as the user gave it (recorded in the run's config).
        weights_path: the file the weights came from.
        description: one line for reports, e.g. ``nnU-Net model .../Trainer__Plans__3d_fullres (fold 0, ...)``.
        label_names: class names, background first, in label order.
        channel_names: input channel names.
        normalization: MaskMed normalisation scheme per channel.
        target_spacing: (D, H, W) mm the model was trained at.
        patch_size: (D, H, W) training patch.
        batch_size: training batch size.
        topology: ``TOPOLOGY_FIELDS`` -> value, as ModelConfig takes them.
        state: MaskMed-named weights (``encoder.*``, ``decoder.*``, and the source's head/bridge).
        head: the source's head (nnU-Net: ``pointwise``).
        fold: the nnU-Net fold the weights came from (MaskMed: None).
    """

    kind: str
    given: str
    weights_path: Path
    description: str
    label_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    normalization: tuple[str, ...]
    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    batch_size: int
    topology: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    head: str = "pointwise"
    fold: str | None = None


def read_init_source(path: str | Path, fold: str | None = None, checkpoint: str = "final") -> InitSource:
    """Read ``--init-from``: an nnU-Net v2 result folder, or a MaskMed run folder / checkpoint file.

    Args:
        path: the source.
        fold: nnU-Net fold (``0``..``4`` or ``all``); ``None``: the folder's first fold (MaskMed: must be None).
        checkpoint: ``final`` or ``best`` (nnU-Net ``checkpoint_final/best.pth``; MaskMed run folder
            ``checkpoint_latest/best.pt``; a checkpoint file is used as it is).

    Raises:
        ConfigError: the path does not exist or is neither kind of model.
        NnUNetModelError / CheckpointError: the model cannot be read (the message says which file and why).
    """
    from MaskMedCore.nnunet.result_folder import is_nnunet_result_folder

    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(
            f"--init-from {path}: no such file or folder; give an nnU-Net v2 result folder "
            "(Trainer__Plans__configuration with plans.json) or a MaskMed run folder / checkpoint"
        )
    if p.is_dir() and ((p / "plans.json").is_file() or is_nnunet_result_folder(p)):
        return _read_nnunet(p, str(path), fold, checkpoint)
    if fold is not None:
        raise ConfigError(f"--init-fold {fold}: {path} is a MaskMed model, not an nnU-Net result folder with folds")
    return _read_maskmed(p, str(path), checkpoint)


def _read_nnunet(folder_path: Path, given: str, fold: str | None, checkpoint: str) -> InitSource:
    from MaskMedCore.nnunet.checkpoint import load_nnunet_checkpoint
    from MaskMedCore.nnunet.network import model_config
    from MaskMedCore.nnunet.result_folder import NnUNetModelError, read_result_folder
    from MaskMedCore.nnunet.weights import nnunet_to_maskmed_state

    folder = read_result_folder(folder_path)
    fold = str(fold) if fold is not None else folder.folds[0]
    if fold not in folder.folds:
        raise ConfigError(f"--init-fold {fold}: {folder.path} has fold(s) {', '.join(folder.folds)}")
    ckpt = load_nnunet_checkpoint(folder.checkpoint_path(fold, NNUNET_CHECKPOINTS[checkpoint]))
    net = model_config(folder)
    # nnU-Net plans and weights are in its transposed axis order; MaskMed never transposes.
    back = [int(a) for a in folder.plans.get("transpose_backward", [0, 1, 2])]
    renamed = nnunet_to_maskmed_state(ckpt.network_weights, str(ckpt.path))
    state = {k: _untranspose_weight(v, back) for k, v in renamed.items()}
    schemes = []
    for c, name in enumerate(folder.config.get("normalization_schemes", [])):
        if name not in _NNUNET_NORMALIZATION:
            raise NnUNetModelError(
                f"{folder.path / 'plans.json'}: normalization_schemes[{c}] is {name!r}; MaskMed trains with "
                f"{', '.join(_NNUNET_NORMALIZATION)} only"
            )
        schemes.append(_NNUNET_NORMALIZATION[name])
    return InitSource(
        kind="nnunet",
        given=given,
        weights_path=ckpt.path,
        description=(
            f"nnU-Net model {folder.path} (fold {fold}, {ckpt.path.name}, {ckpt.trainer_name}, epoch {ckpt.epoch})"
        ),
        label_names=tuple(folder.label_names),
        channel_names=tuple(folder.channel_names),
        normalization=tuple(schemes),
        target_spacing=tuple(folder.spacing_dhw),
        patch_size=tuple(folder.patch_size[i] for i in back),
        batch_size=int(folder.config.get("batch_size", 2)),
        topology={
            "features_per_stage": tuple(net.features_per_stage),
            "kernel_sizes": tuple(tuple(k[i] for i in back) for k in net.kernel_sizes),
            "strides": tuple(tuple(s[i] for i in back) for s in net.strides),
            "encoder": net.encoder,
            "n_conv_per_stage": net.n_conv_per_stage,
            "n_blocks_per_stage": net.n_blocks_per_stage,
            "n_conv_per_stage_decoder": net.n_conv_per_stage_decoder,
        },
        state=state,
        head="pointwise",
        fold=fold,
    )


def _untranspose_weight(value: torch.Tensor, back: list[int]) -> torch.Tensor:
    """A (transposed) conv weight ``(O, I, k0, k1, k2)`` with its kernel axes put back into (D, H, W) order."""
    if back == [0, 1, 2] or value.dim() != 5:
        return value
    return value.permute(0, 1, *(2 + a for a in back)).contiguous()


def _read_maskmed(path: Path, given: str, checkpoint: str) -> InitSource:
    from MaskMedCore.engine.checkpoint import load_checkpoint

    if path.is_dir():
        chosen = path / MASKMED_CHECKPOINTS[checkpoint]
        if not chosen.is_file():
            have = sorted(p.name for p in path.glob("checkpoint_*.pt"))
            if not have:
                raise ConfigError(
                    f"--init-from {given}: the folder is neither an nnU-Net v2 result folder (no plans.json) nor a "
                    "MaskMed run folder (no checkpoint_latest.pt / checkpoint_best.pt)"
                )
            raise CheckpointError(
                f"--init-from {given}: run folder has no {chosen.name} (--init-checkpoint {checkpoint}); "
                f"it has {', '.join(have)}"
            )
        path = chosen
    ckpt = load_checkpoint(path)
    cfg, plan = ckpt.model_config, ckpt.plan
    return InitSource(
        kind="maskmed",
        given=given,
        weights_path=Path(path),
        description=f"MaskMed checkpoint {path} (head {cfg.head}, bridge {cfg.bridge})",
        label_names=tuple(ckpt.label_names),
        channel_names=tuple(plan.channel_names),
        normalization=tuple(n.scheme for n in plan.normalization),
        target_spacing=tuple(plan.target_spacing),
        patch_size=tuple(plan.patch_size),
        batch_size=plan.batch_size,
        topology={name: getattr(cfg, name) for name in TOPOLOGY_FIELDS},
        state=dict(ckpt.model_state),
        head=cfg.head,
    )


def check_patch_option(source: InitSource, patch_size: tuple[int, int, int] | None) -> None:
    """Refuse ``--patch-size`` when it is not the source's patch (the source's topology is built for it)."""
    if patch_size is not None and tuple(int(p) for p in patch_size) != source.patch_size:
        raise ConfigError(
            f"--patch-size {' '.join(map(str, patch_size))} conflicts with --init-from {source.given}: its network "
            f"was trained on patch {list(source.patch_size)} (D, H, W), which the run takes with its topology; "
            "drop --patch-size"
        )


def plan_for_source(plan: PlanConfig, source: InitSource, plan_path: Path) -> PlanConfig:
    """The dataset's plan with the source's patch, batch and UNet topology, after checking that the
    dataset is what the source was trained on (labels, channels, normalisation, target spacing).

    Raises:
        ConfigError: a mismatch, naming the field, both values and what to do.
    """
    if tuple(plan.label_names) != source.label_names:
        raise ConfigError(
            f"--init-from {source.given}: its labels {list(source.label_names)} differ from the dataset's "
            f"{plan.label_names} (dataset.json 'labels', in value order); a pretrained model can only start a run "
            "on the same classes in the same order: relabel the dataset or train from scratch"
        )
    if len(plan.channel_names) != len(source.channel_names) or any(
        a.lower() != b.lower() for a, b in zip(plan.channel_names, source.channel_names)
    ):
        raise ConfigError(
            f"--init-from {source.given}: its input channels {list(source.channel_names)} differ from the "
            f"dataset's {list(plan.channel_names)} (dataset.json 'channel_names')"
        )
    schemes = tuple(n.scheme for n in plan.normalization)
    if schemes != source.normalization:
        raise ConfigError(
            f"{plan_path}: normalization {list(schemes)} differs from the --init-from model's "
            f"{list(source.normalization)}; its weights expect intensities normalised that way"
        )
    if not all(math.isclose(a, b, rel_tol=1e-3) for a, b in zip(plan.target_spacing, source.target_spacing)):
        raise ConfigError(
            f"{plan_path}: target_spacing {list(plan.target_spacing)} mm (D, H, W) differs from the --init-from "
            f"model's {list(source.target_spacing)} mm; its weights expect images at that spacing. Train with "
            "another --preprocessed folder: a new one is planned and preprocessed at the model's spacing"
        )
    return with_topology_of(
        plan,
        patch_size=source.patch_size,
        batch_size=source.batch_size,
        features_per_stage=source.topology["features_per_stage"],
        kernel_sizes=source.topology["kernel_sizes"],
        strides=source.topology["strides"],
    )


def with_topology_of(plan: PlanConfig, other: PlanConfig | None = None, **fields: Any) -> PlanConfig:
    """``plan`` with the patch, batch and topology of ``other`` (or of ``fields``). A resumed ``--init-from``
    run takes them from its checkpoint's plan, so it never needs the source again."""
    if other is not None:
        fields = {
            k: getattr(other, k) for k in ("patch_size", "batch_size", "features_per_stage", "kernel_sizes", "strides")
        }
    return plan.replace(**fields)


def model_config_for_source(
    plan: PlanConfig, preset: str, overrides: dict[str, Any] | None, source: InitSource
) -> ModelConfig:
    """The new network: the preset's head and bridge (with ``overrides``) on the source's UNet topology.

    Raises:
        ConfigError: an override of a topology field that differs from the source's.
    """
    overrides = dict(overrides or {})
    for name in TOPOLOGY_FIELDS:
        if name in overrides and _normalised(name, overrides[name]) != source.topology[name]:
            raise ConfigError(
                f"--set {name}={overrides[name]} conflicts with --init-from {source.given}: the pretrained UNet has "
                f"{name} {_plain(source.topology[name])}; the run takes the source's topology, drop the --set"
            )
    return plan.model_config(preset, **{**overrides, **source.topology})


def _normalised(name: str, value: Any) -> Any:
    """An override as ModelConfig stores it (tuples of ints), for comparison; unparsable values compare unequal."""
    try:
        if name in ("kernel_sizes", "strides"):
            return check_triplets(name, value)
        if name == "features_per_stage" or (name == "n_blocks_per_stage" and value is not None):
            return tuple(int(v) for v in value)
        if name in ("encoder", "n_blocks_per_stage"):
            return value
        return int(value)
    except (TypeError, ValueError, ConfigError):
        return value


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value
