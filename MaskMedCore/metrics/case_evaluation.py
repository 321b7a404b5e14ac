"""Case-level classification in ``maskmed evaluate --case-labels``: the predictions of
``<case>_summary.json`` (``case_classification``) against the dataset's ``case_labels``.

Per task: accuracy over the cases with a reference label and ROC AUC from the predicted class
probabilities (``metrics/classification.py``; one-vs-rest macro for more than two classes). AUC is
reported as nan when undefined (a class with no positive or no negative case among the labelled ones),
with the reason, rather than failing the whole evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from MaskMedCore.errors import DataError
from MaskMedCore.metrics.classification import accuracy, roc_auc


def case_classification_metrics(
    tasks: Sequence[tuple[str, Sequence[str]]],
    truth: Mapping[str, Mapping[str, str]],
    predictions: Mapping[str, Mapping[str, Mapping]],
) -> dict:
    """Accuracy and ROC AUC per task.

    Args:
        tasks: ``((task, (class, ...)), ...)`` of the dataset.
        truth: case id -> {task: class name} (missing = unknown).
        predictions: case id -> the summary's ``case_classification`` ({task: {"predicted", "probabilities"}}).

    Returns:
        ``{task: {"n_cases", "n_labelled", "accuracy", "roc_auc", "auc_note"}}``.

    Raises:
        DataError: a prediction names a class the task does not have, or lacks probabilities for its classes.
    """
    out = {}
    cases = sorted(predictions)
    for task, classes in tasks:
        index = {c: i for i, c in enumerate(classes)}
        y_true, y_pred, scores = [], [], []
        for case in cases:
            entry = predictions[case].get(task)
            if entry is None:
                raise DataError(f"the prediction of case {case} has no case_classification for task {task!r}")
            try:
                y_pred.append(index[entry["predicted"]])
                scores.append([float(entry["probabilities"][c]) for c in classes])
            except KeyError as exc:
                raise DataError(
                    f"the prediction of case {case}, task {task!r}: {exc} is not a class of {list(classes)} "
                    "or a class probability is missing; were the model and the dataset's case_labels made together?"
                ) from None
            label = truth.get(case, {}).get(task)
            y_true.append(None if label is None else index[label])
        labelled = sum(y is not None for y in y_true)
        result = {"n_cases": len(cases), "n_labelled": labelled, "accuracy": float("nan"), "roc_auc": float("nan")}
        note = ""
        if labelled:
            result["accuracy"] = accuracy(y_true, y_pred)
            probs = np.asarray(scores)
            try:
                result["roc_auc"] = roc_auc(y_true, probs[:, 1] if len(classes) == 2 else probs)
            except DataError as exc:
                note = str(exc)
        result["auc_note"] = note
        out[task] = result
    return out
