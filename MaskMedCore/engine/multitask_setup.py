"""What a training run takes from the dataset's multi-task declarations (issue 12).

A dataset.json may declare instance classes and case-level labels (``data/multitask_spec.py``). Unless
the user overrides them (``--set instance_classes=[]``, ``--set case_tasks=[]``: the single-task
baselines), a new run's model predicts what the dataset declares; every run, resumed ones included,
feeds the case-level labels of its training cases to the criterion through the patch sampler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MaskMedCore.config.model_config import ModelConfig
from MaskMedCore.errors import DataError


def multitask_overrides(spec: Any, label_names: Sequence[str], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Model-config overrides with the dataset's instance classes and case tasks added where not given.

    Args:
        spec: the dataset's ``MultiTaskSpec``.
        label_names: the plan's label names (index = label value).
        overrides: the user's ModelConfig overrides (they win).
    """
    out = dict(overrides or {})
    values = {name: v for v, name in enumerate(label_names)}
    if "instance_classes" not in out and spec.instance_classes:
        out["instance_classes"] = spec.instance_values(values)
    elif isinstance(out.get("instance_classes"), (list, tuple)):  # names (--instance-classes) or values (--set)
        out["instance_classes"] = tuple(_label_value(c, values) for c in out["instance_classes"])
    if "case_tasks" not in out and spec.case_tasks:
        out["case_tasks"] = spec.case_tasks
    return out


def case_targets_for(
    model_cfg: ModelConfig, spec: Any, case_ids: Sequence[str], dataset_dir: Path
) -> np.ndarray | None:
    """(N, T) int64 case-level class index per task of ``case_ids`` (-1 = unknown), or None without case tasks.

    Raises:
        DataError: the model predicts case tasks the dataset's ``case_labels`` do not declare (with the
            same classes in the same order), e.g. a resumed run whose dataset.json changed.
    """
    if not model_cfg.case_tasks:
        return None
    if tuple(spec.case_tasks) != tuple(model_cfg.case_tasks):
        raise DataError(
            f"{dataset_dir / 'dataset.json'}: case_labels tasks are {_describe(spec.case_tasks)} but the model "
            f"predicts {_describe(model_cfg.case_tasks)}; declare the same tasks and classes in dataset.json "
            "(or train without the case head: --set case_tasks=[])"
        )
    targets = spec.case_targets(case_ids)
    if (targets < 0).all():
        raise DataError(
            f"{dataset_dir / 'dataset.json'}: none of the {len(case_ids)} training cases has a case label; "
            "add labels under case_labels.cases or train without the case head (--set case_tasks=[])"
        )
    return targets


def _label_value(item: Any, values: Mapping[str, int]) -> Any:
    if not isinstance(item, str):
        return item  # a label value; ModelConfig checks its range
    if item not in values:
        raise DataError(f"instance class {item!r} is not a label of the dataset; its labels are {list(values)}")
    return values[item]


def _describe(tasks: Sequence[tuple[str, Sequence[str]]]) -> str:
    return "{" + ", ".join(f"{name}: {list(classes)}" for name, classes in tasks) + "}" if tasks else "none"
