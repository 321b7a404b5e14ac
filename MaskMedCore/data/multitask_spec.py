"""Multi-task annotations of a raw dataset (issue 12): instance classes and case-level labels.

MaskMed's own keys in an nnU-Net v2 or MSD ``dataset.json`` (nnU-Net ignores unknown keys)::

    "instance_classes": ["lesion"],
    "case_labels": {
      "tasks": {"lesion_count": ["none", "one", "several"], "lesion_type": ["none", "hypodense", "hyperdense"]},
      "cases": {"phantom_000": {"lesion_count": "one", "lesion_type": "hypodense"},
                "phantom_001": {"lesion_count": "none"}}
    }

``instance_classes`` names labels (of ``labels``) whose 26-connected components are separate instances.
``case_labels.tasks`` lists each case-level classification task with its classes (at least two, in the
order of the class indices); ``case_labels.cases`` gives a case's class per task. A case or task missing
there has an unknown label (target -1). Case ids that are not cases of the dataset are not a read error:
:func:`MaskMedCore.data.validate.validate_dataset` reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from MaskMedCore.errors import DataError

INSTANCE_CLASSES_FIELD = "instance_classes"
CASE_LABELS_FIELD = "case_labels"
_CASE_LABELS_KEYS = ("tasks", "cases")
_EXAMPLE_TASKS = '{"lesion_count": ["none", "one", "several"]}'

CaseTasks = tuple[tuple[str, tuple[str, ...]], ...]


def _frozen_labels(case_labels: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({str(case): MappingProxyType(dict(tasks)) for case, tasks in case_labels.items()})


@dataclass(frozen=True)
class MultiTaskSpec:
    """What a dataset declares beyond semantic labels: instance classes and case-level labels.

    Attributes:
        instance_classes: label names whose 26-connected components are instances, in file order.
        case_tasks: ``((task, (class, ...)), ...)`` in file order, the shape of ``ModelConfig.case_tasks``.
        case_labels: case id -> {task: class name}, read-only; tasks missing for a case are unknown.
    """

    instance_classes: tuple[str, ...] = ()
    case_tasks: CaseTasks = ()
    case_labels: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "instance_classes", tuple(str(name) for name in self.instance_classes))
        tasks = tuple((str(name), tuple(str(c) for c in classes)) for name, classes in self.case_tasks)
        object.__setattr__(self, "case_tasks", tasks)
        object.__setattr__(self, "case_labels", _frozen_labels(self.case_labels))
        # Direct construction (not from dataset.json): the reader has checked all this with file context.
        classes_of = dict(tasks)
        if len(classes_of) != len(tasks) or any(len(set(c)) != len(c) or len(c) < 2 for c in classes_of.values()):
            raise DataError(f"MultiTaskSpec.case_tasks {tasks} needs distinct task names with >= 2 distinct classes")
        for case, labels in self.case_labels.items():
            for task, name in labels.items():
                if name not in classes_of.get(task, ()):
                    raise DataError(
                        f"MultiTaskSpec.case_labels[{case!r}]: {task}={name!r} is not a class of a task in "
                        f"{dict(classes_of)}"
                    )

    def __reduce__(self):
        # MappingProxyType does not pickle; rebuild from plain dicts (datasets travel to worker processes).
        labels = {case: dict(tasks) for case, tasks in self.case_labels.items()}
        return (type(self), (self.instance_classes, self.case_tasks, labels))

    @property
    def empty(self) -> bool:
        """True when the dataset declares neither instance classes nor case-level tasks."""
        return not self.instance_classes and not self.case_tasks

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.case_tasks)

    def instance_values(self, labels: Mapping[str, int]) -> tuple[int, ...]:
        """Label values of :attr:`instance_classes` in ``labels`` (name -> value), in increasing value order.

        Raises:
            DataError: an instance class is not in ``labels``.
        """
        missing = [name for name in self.instance_classes if name not in labels]
        if missing:
            raise DataError(f"instance class(es) {missing} are not in the dataset labels {dict(labels)}")
        return tuple(sorted(int(labels[name]) for name in self.instance_classes))

    def case_targets(self, case_ids: Sequence[str]) -> np.ndarray:
        """Class index of every case for every task.

        Args:
            case_ids: N case ids (need not be cases of ``case_labels``).

        Returns:
            targets: (N, T) int64, T = ``len(case_tasks)``; the index into the task's classes, -1 where
            the label is unknown (case or task not given).
        """
        out = np.full((len(case_ids), len(self.case_tasks)), -1, np.int64)
        for i, case in enumerate(case_ids):
            given = self.case_labels.get(case, {})
            for t, (task, classes) in enumerate(self.case_tasks):
                if task in given:
                    out[i, t] = classes.index(given[task])
        return out

    def to_meta(self) -> dict[str, Any]:
        """The dataset.json fields (``instance_classes``, ``case_labels``) that :func:`read_multitask_spec`
        reads back to this spec; empty parts are left out."""
        meta: dict[str, Any] = {}
        if self.instance_classes:
            meta[INSTANCE_CLASSES_FIELD] = list(self.instance_classes)
        if self.case_tasks:
            meta[CASE_LABELS_FIELD] = {
                "tasks": {task: list(classes) for task, classes in self.case_tasks},
                "cases": {case: dict(tasks) for case, tasks in self.case_labels.items()},
            }
        return meta


def read_multitask_spec(meta: Mapping[str, Any], labels: Mapping[str, int], meta_path: Path) -> MultiTaskSpec:
    """Read ``instance_classes`` and ``case_labels`` from a parsed dataset.json (both optional).

    Args:
        meta: the dataset.json object.
        labels: label name -> value as read from its ``labels`` (background 0).
        meta_path: the dataset.json path, for messages.

    Raises:
        DataError: naming the field, what was found and what was expected.
    """
    instance_classes = _read_instance_classes(meta.get(INSTANCE_CLASSES_FIELD), labels, meta_path)
    case_tasks, case_labels = _read_case_labels(meta.get(CASE_LABELS_FIELD), meta_path)
    return MultiTaskSpec(instance_classes, case_tasks, case_labels)


def _read_instance_classes(raw: Any, labels: Mapping[str, int], meta_path: Path) -> tuple[str, ...]:
    where = f"{meta_path}: field '{INSTANCE_CLASSES_FIELD}'"
    if raw is None:
        return ()
    foreground = [name for name, value in labels.items() if value != 0]
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise DataError(f"{where} is {raw!r}; expected a list of label names, e.g. {foreground[:1]}")
    for name in raw:
        if name not in labels:
            raise DataError(f"{where} names {name!r}, which is not in 'labels'; expected one of {foreground}")
        if labels[name] == 0:
            raise DataError(f"{where} names {name!r}, the background (value 0); list foreground labels only")
    dupes = sorted({name for name in raw if raw.count(name) > 1})
    if dupes:
        raise DataError(f"{where} lists {dupes} more than once; list each instance class once")
    return tuple(raw)


def _read_case_labels(raw: Any, meta_path: Path) -> tuple[CaseTasks, dict[str, dict[str, str]]]:
    where = f"{meta_path}: field '{CASE_LABELS_FIELD}'"
    if raw is None:
        return (), {}
    if not isinstance(raw, dict):
        raise DataError(
            f'{where} is {type(raw).__name__}; expected an object {{"tasks": {_EXAMPLE_TASKS}, "cases": {{...}}}}'
        )
    unknown = sorted(set(raw) - set(_CASE_LABELS_KEYS))
    if unknown:
        raise DataError(f"{where} has unknown key(s) {unknown}; expected only {list(_CASE_LABELS_KEYS)}")
    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, dict) or not tasks_raw:
        raise DataError(f"{where}.tasks is {tasks_raw!r}; expected task -> class names, e.g. {_EXAMPLE_TASKS}")
    tasks = []
    for task, classes in tasks_raw.items():
        at = f"{where}.tasks.{task}"
        if not task:
            raise DataError(f"{where}.tasks has an empty task name; name every task")
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise DataError(f'{at} is {classes!r}; expected a list of class names, e.g. ["none", "one"]')
        if len(classes) < 2:
            raise DataError(f"{at} has {len(classes)} class(es) {classes}; a task needs at least 2 classes")
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        if dupes:
            raise DataError(f"{at} lists class(es) {dupes} more than once; list each class once")
        tasks.append((task, tuple(classes)))
    classes_of = dict(tasks)

    cases_raw = raw.get("cases", {})
    if not isinstance(cases_raw, dict):
        raise DataError(f"{where}.cases is {type(cases_raw).__name__}; expected case id -> {{task: class}}")
    cases: dict[str, dict[str, str]] = {}
    for case, entry in cases_raw.items():
        at = f"{where}.cases.{case}"
        if not isinstance(entry, dict):
            raise DataError(
                f'{at} is {entry!r}; expected {{task: class}}, e.g. {{"{tasks[0][0]}": "{tasks[0][1][0]}"}}'
            )
        for task, name in entry.items():
            if task not in classes_of:
                raise DataError(f"{at} names task {task!r}, which is not in {where}.tasks {list(classes_of)}")
            if name not in classes_of[task]:
                raise DataError(
                    f"{at}.{task} is {name!r}, not a class of task {task!r}; expected one of "
                    f"{list(classes_of[task])} (leave the task out when the label is unknown)"
                )
        cases[case] = dict(entry)
    return tuple(tasks), cases
