"""Scene plumbing shared by the readers: converter rules, and removing nodes we created.

``slicer-core`` (MRML without the application) registers no segmentation converter rules, so a
segmentation node cannot hold a binary labelmap or build a closed surface until
:func:`ensure_segmentation_converters` has run; inside Slicer the Segmentations module has already
registered them and the call does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import slicer

_RULE_CLASSES = ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule")


def ensure_segmentation_converters() -> list[str]:
    """Register the binary-labelmap <-> closed-surface converter rules that are missing.

    Returns:
        Names of the rules registered by this call (empty when all were present, as in Slicer).
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {(r.GetSourceRepresentationName(), r.GetTargetRepresentationName()) for r in factory.GetConverterRules()}
    added = []
    for class_name in _RULE_CLASSES:
        rule = getattr(slicer, class_name)()
        key = (rule.GetSourceRepresentationName(), rule.GetTargetRepresentationName())
        if key not in present:
            factory.RegisterConverterRule(rule)
            present.add(key)
            added.append(rule.GetName())
    return added


def remove_nodes(scene, nodes: Iterable) -> None:
    """Remove ``nodes`` and their display and storage nodes from ``scene`` (MRML leaves those behind).

    ``None`` entries and nodes no longer in the scene are skipped.
    """
    for node in nodes:
        if node is None or node.GetScene() is not scene:
            continue
        dependents = []
        if hasattr(node, "GetNumberOfDisplayNodes"):
            dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if hasattr(node, "GetNumberOfStorageNodes"):
            dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for dependent in dependents:
            if dependent is not None and dependent.GetScene() is scene:
                scene.RemoveNode(dependent)


def node_ids(scene) -> set[str]:
    """IDs of all nodes now in ``scene``."""
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


@contextlib.contextmanager
def removed_on_error(scene) -> Iterator[None]:
    """Undo node creation on failure: nodes added inside the block are removed if it raises.

    Singleton nodes (e.g. the subject hierarchy, created on first use) are kept. Only use around code
    that does not process GUI events, so that no node the user creates meanwhile is mistaken for ours.
    """
    before = node_ids(scene)
    try:
        yield
    except BaseException:
        new = [scene.GetNodeByID(i) for i in node_ids(scene) - before]
        remove_nodes(scene, [n for n in new if n is not None and not n.GetSingletonTag()])
        raise
