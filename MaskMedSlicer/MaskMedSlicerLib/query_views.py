"""What the Inspect panel shows about MaskMed's queries: probability overlays and heatmap tables.

A prediction folder written by ``maskmed predict --save-queries --save-embeddings`` holds, for case
``<case>``:

- ``<case>_summary.json``: ``label_names`` (K), ``class_volumes_ml`` and ``queries``, one dict per query
  with ``index``, ``class_index``, ``class_name``, ``score``, ``no_object_probability``,
  ``class_distribution`` (K+1), ``volume_ml`` and ``bbox``;
- ``<case>_embeddings.npz``: ``class_probabilities`` (Q, K+1), ``class_embeddings`` (Q, E),
  ``mask_embeddings`` (Q, C), ``label_names`` (K);
- ``<case>_queries/query_XX_<class><ending>``: each query's mask probability map (float32 in 0..1,
  the input's geometry); the module keeps them compactly in memory (:mod:`.query_maps`) and shows one
  with :func:`query_overlay_volume`.

A point-wise model (an nnU-Net v2 result folder, or a MaskMed model with the point-wise head) has no
queries: its summary says ``"queries": []`` and there are no query maps or embeddings to show
(:data:`NO_QUERIES_MESSAGE`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import vtk

from MaskMedSlicerLib.colors import viridis
from MaskMedSlicerLib.errors import MaskMedSlicerError
from MaskMedSlicerLib.scene_setup import removed_on_error
from MaskMedSlicerLib.volume_io import read_image, update_volume_node_from_image

PROBABILITY_COLOR_NODE_NAME = "MaskMed probability"
_COLOR_NODE_ATTRIBUTE = "MaskMed.ColorTable"
_QUERY_FILE = re.compile(r"^query_(?P<index>\d+)_")
NO_QUERIES_MESSAGE = (
    "This model (nnU-Net / point-wise head) has no queries: there are no per-query masks or embeddings to inspect."
)


def probability_color_node(scene):
    """The scene's viridis colour table for probabilities in 0..1 (created on first use, then reused).

    Entry 0 is fully transparent, so a probability overlay hides nothing where the query is absent.
    """
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(_COLOR_NODE_ATTRIBUTE) == "probability":
            return node
    rgb = viridis(np.linspace(0.0, 1.0, 256))  # (256, 3)
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", PROBABILITY_COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(rgb))
    node.SetNamesInitialised(True)
    for i, (r, g, b) in enumerate(rgb):
        node.SetColor(i, f"{i / (len(rgb) - 1):.3f}", r, g, b, 0.0 if i == 0 else 1.0)
    node.SetAttribute(_COLOR_NODE_ATTRIBUTE, "probability")
    return node


def query_probability_volume(path: str | os.PathLike, reference_volume_node, scene, name: str, volume_node=None):
    """Load one query's probability map file as an overlay volume (see :func:`query_overlay_volume`)."""
    return query_overlay_volume(read_image(path), reference_volume_node, scene, name, volume_node=volume_node)


def query_overlay_volume(image, reference_volume_node, scene, name: str, volume_node=None):
    """Show a probability image (0..1) as a scalar volume with viridis, window/level 0..1.

    Args:
        image: SimpleITK image in the reference volume's local coordinates, e.g. ``QueryMap.image()``
            (a crop of the grid is enough: the slice views resample it).
        reference_volume_node: the segmented volume (its parent transform is copied; may be None).
        scene: the ``vtkMRMLScene``.
        name: node name.
        volume_node: reuse this node (e.g. the overlay of the previously shown query).

    Returns:
        The ``vtkMRMLScalarVolumeNode`` (show it as the slice foreground layer).
    """
    with removed_on_error(scene):
        color_node = probability_color_node(scene)
        if volume_node is None or volume_node.GetScene() is not scene:
            volume_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        volume_node.SetName(name)
        update_volume_node_from_image(volume_node, image)
        if volume_node.GetDisplayNode() is None:
            volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
        display.SetAndObserveColorNodeID(color_node.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetInterpolate(True)
        if reference_volume_node is not None:
            volume_node.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
    return volume_node


def table_from_matrix(
    matrix,
    row_names: Sequence[str],
    col_names: Sequence[str],
    scene,
    name: str,
    row_header: str = "query",
    table_node=None,
):
    """A table node with a text column ``row_header`` (row names) and one number column per matrix column.

    Args:
        matrix: (R, C) numbers, e.g. class probabilities (Q, K+1) or embeddings (Q, E).
        row_names: R row labels.
        col_names: C column names (unique, and not ``row_header``).
        scene: the ``vtkMRMLScene``.
        name: node name.
        row_header: name of the first (text) column.
        table_node: fill this node instead of adding one.

    Returns:
        The ``vtkMRMLTableNode``; cell (r, c + 1) equals ``matrix[r, c]`` (stored as double).
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2:
        raise MaskMedSlicerError(f"table '{name}': matrix must be 2D (R, C), got shape {values.shape}")
    R, C = values.shape
    if len(row_names) != R or len(col_names) != C:
        raise MaskMedSlicerError(
            f"table '{name}': matrix is {R} x {C} but got {len(row_names)} row and {len(col_names)} column names"
        )
    headers = [row_header, *map(str, col_names)]
    if len(set(headers)) != len(headers):
        raise MaskMedSlicerError(f"table '{name}': column names must be unique, got {headers}")
    table = vtk.vtkTable()
    rows = vtk.vtkStringArray()
    rows.SetName(row_header)
    for row in row_names:
        rows.InsertNextValue(str(row))
    table.AddColumn(rows)
    for c, col in enumerate(headers[1:]):
        column = vtk.vtkDoubleArray()
        column.SetName(col)
        column.SetNumberOfValues(R)
        for r in range(R):
            column.SetValue(r, values[r, c])
        table.AddColumn(column)
    return _store_table(table, scene, name, table_node)


def _store_table(table, scene, name: str, table_node=None):
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table_node.SetAndObserveTable(table)
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.SetLocked(True)  # results, not for editing
    return table_node


SUMMARY_COLUMNS = ("index", "class", "score", "volume (mL)", "no object")


def query_summary_table(summary: dict, scene, name: str, table_node=None):
    """One row per query with columns :data:`SUMMARY_COLUMNS`.

    ``index`` is an integer, ``class`` the query's most likely real class, ``score`` class probability x
    mean mask probability, ``volume (mL)`` the volume of its mask (probability >= 0.5), ``no object``
    the no-object probability.
    """
    try:
        queries = summary["queries"]
        rows = [
            (int(q["index"]), str(q["class_name"]), float(q["score"]), float(q["volume_ml"]))
            + (float(q.get("no_object_probability", float("nan"))),)
            for q in queries
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise MaskMedSlicerError(f"query summary is missing or has a bad field ({exc!r})") from None
    table = vtk.vtkTable()
    index, klass = vtk.vtkIntArray(), vtk.vtkStringArray()
    numbers = [vtk.vtkDoubleArray() for _ in SUMMARY_COLUMNS[2:]]
    for array, col in zip([index, klass, *numbers], SUMMARY_COLUMNS):
        array.SetName(col)
        table.AddColumn(array)
    for row in rows:
        index.InsertNextValue(row[0])
        klass.InsertNextValue(row[1])
        for array, value in zip(numbers, row[2:]):
            array.InsertNextValue(value)
    return _store_table(table, scene, name, table_node)


@dataclass
class QueryResults:
    """The per-query outputs of one predicted case (see the module docstring for the files).

    Attributes:
        output_dir: prediction folder.
        case: case id (file stem).
        summary: the parsed ``<case>_summary.json``.
        class_probabilities: (Q, K+1) or None without embeddings.
        class_embeddings: (Q, E) or None.
        mask_embeddings: (Q, C) or None.
        query_maps: query index -> probability map file (empty without ``--save-queries``).
    """

    output_dir: Path
    case: str
    summary: dict
    class_probabilities: np.ndarray | None = None
    class_embeddings: np.ndarray | None = None
    mask_embeddings: np.ndarray | None = None
    query_maps: dict[int, Path] = field(default_factory=dict)

    @classmethod
    def load(cls, output_dir: str | os.PathLike, case: str | None = None) -> QueryResults:
        """Read a prediction folder; ``case`` may be omitted when the folder holds exactly one case."""
        out = Path(output_dir)
        if case is None:
            summaries = sorted(out.glob("*_summary.json"))
            if len(summaries) != 1:
                raise MaskMedSlicerError(
                    f"prediction folder {out} holds {len(summaries)} *_summary.json files; name the case"
                )
            case = summaries[0].name[: -len("_summary.json")]
        summary_path = out / f"{case}_summary.json"
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MaskMedSlicerError(f"cannot read query summary {summary_path}: {exc}") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("queries", []), list):
            raise MaskMedSlicerError(f"query summary {summary_path}: expected an object with a 'queries' list")
        result = cls(output_dir=out, case=case, summary=summary)
        if not result.has_queries:  # a point-wise model: nothing per query, whatever else the folder holds
            return result
        npz = out / f"{case}_embeddings.npz"
        if npz.is_file():
            try:
                with np.load(npz, allow_pickle=False) as data:
                    result.class_probabilities = np.asarray(data["class_probabilities"], np.float32)
                    result.class_embeddings = np.asarray(data["class_embeddings"], np.float32)
                    result.mask_embeddings = np.asarray(data["mask_embeddings"], np.float32)
            except (OSError, KeyError, ValueError) as exc:
                raise MaskMedSlicerError(f"cannot read embeddings {npz}: {exc}") from None
        queries_dir = out / f"{case}_queries"
        if queries_dir.is_dir():
            for f in sorted(queries_dir.iterdir()):
                match = _QUERY_FILE.match(f.name)
                if match and f.is_file():
                    result.query_maps[int(match["index"])] = f
        return result

    @property
    def label_names(self) -> list[str]:
        return list(self.summary.get("label_names", []))

    @property
    def queries(self) -> list[dict]:
        return list(self.summary.get("queries") or [])

    @property
    def has_queries(self) -> bool:
        """False for a point-wise model (nnU-Net, MaskMed's point-wise head): ``"queries": []``."""
        return bool(self.queries)

    def query(self, index: int) -> dict:
        """The summary entry of query ``index``."""
        if not self.has_queries:
            raise MaskMedSlicerError(NO_QUERIES_MESSAGE)
        for q in self.queries:
            if q.get("index") == index:
                return q
        raise MaskMedSlicerError(f"case {self.case} has no query {index} (queries 0..{len(self.queries) - 1})")

    def query_map_path(self, index: int) -> Path:
        """Probability map file of query ``index``."""
        self.query(index)
        if index not in self.query_maps:
            raise MaskMedSlicerError(
                f"no probability map for query {index} in {self.output_dir}; segment with save_queries=True"
            )
        return self.query_maps[index]

    def row_names(self) -> list[str]:
        """``Q3 liver`` style labels, one per query."""
        return [f"Q{q['index']} {q['class_name']}" for q in self.queries]

    def _matrix(self, attribute: str):
        matrix = getattr(self, attribute)
        if matrix is None:
            raise MaskMedSlicerError(
                f"no embeddings were saved in {self.output_dir} ({self.case}_embeddings.npz); "
                "segment with save_embeddings=True"
            )
        return matrix

    def summary_table(self, scene, name: str = "MaskMed queries"):
        return query_summary_table(self.summary, scene, name)

    def class_probability_table(self, scene, name: str = "MaskMed query class probabilities"):
        """(Q, K+1) table: rows queries, columns the K labels and ``no object``."""
        matrix = self._matrix("class_probabilities")
        return table_from_matrix(matrix, self.row_names(), [*self.label_names, "no object"], scene, name)

    def class_embedding_table(self, scene, name: str = "MaskMed query class embeddings"):
        """(Q, E) table: rows queries, columns ``e0 .. e{E-1}``."""
        matrix = self._matrix("class_embeddings")
        return table_from_matrix(matrix, self.row_names(), [f"e{i}" for i in range(matrix.shape[1])], scene, name)

    def mask_embedding_table(self, scene, name: str = "MaskMed query mask embeddings"):
        """(Q, C) table: rows queries, columns ``c0 .. c{C-1}``."""
        matrix = self._matrix("mask_embeddings")
        return table_from_matrix(matrix, self.row_names(), [f"c{i}" for i in range(matrix.shape[1])], scene, name)
