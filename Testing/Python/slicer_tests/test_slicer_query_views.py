"""Per-query overlay volumes and heatmap tables from a real prediction folder, on slicer-core MRML."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)
pytestmark = pytest.mark.slicer

import SimpleITK as sitk  # noqa: E402
from MaskMedSlicerLib import (  # noqa: E402
    MaskMedSlicerError,
    QueryResults,
    query_probability_volume,
    query_summary_table,
    table_from_matrix,
    volume_node_from_file,
)
from MaskMedSlicerLib.query_views import SUMMARY_COLUMNS  # noqa: E402
from MaskMedSlicerLib.volume_io import ijk_to_ras  # noqa: E402
from slicer_test_helpers import node_count  # noqa: E402


def _column(table_node, name) -> list:
    column = table_node.GetTable().GetColumnByName(name)
    assert column is not None, f"no column {name!r}"
    return [column.GetValue(r) for r in range(column.GetNumberOfValues())]


def test_table_from_matrix_values_equal_the_matrix(scene):
    rng = np.random.default_rng(1)
    matrix = rng.random((4, 3)).astype(np.float32)
    table = table_from_matrix(matrix, ["Q0", "Q1", "Q2", "Q3"], ["a", "b", "c"], scene, "probs")
    assert table.GetName() == "probs" and table.GetScene() is scene
    assert table.GetNumberOfRows() == 4 and table.GetNumberOfColumns() == 4
    assert _column(table, "query") == ["Q0", "Q1", "Q2", "Q3"]
    got = np.stack([_column(table, c) for c in "abc"], axis=1)
    np.testing.assert_array_equal(got, matrix.astype(np.float64))
    with pytest.raises(MaskMedSlicerError, match="4 x 3 but got 4 row and 2 column names"):
        table_from_matrix(matrix, ["Q0", "Q1", "Q2", "Q3"], ["a", "b"], scene, "bad")
    with pytest.raises(MaskMedSlicerError, match="unique"):
        table_from_matrix(matrix, list("wxyz"), ["a", "a", "query"], scene, "bad")


def test_query_results_from_real_prediction(predicted_case, scene):
    out, _, _ = predicted_case
    results = QueryResults.load(out)
    assert results.case == "phantom"
    names = results.label_names
    assert names[0] == "background" and "liver" in names
    Q, K = len(results.queries), len(names)
    assert results.class_probabilities.shape == (Q, K + 1)
    assert results.class_embeddings.shape[0] == Q and results.mask_embeddings.shape[0] == Q
    assert sorted(results.query_maps) == list(range(Q))

    summary = results.summary_table(scene)
    assert [summary.GetColumnName(i) for i in range(summary.GetNumberOfColumns())] == list(SUMMARY_COLUMNS)
    assert _column(summary, "index") == [q["index"] for q in results.queries]
    assert _column(summary, "class") == [q["class_name"] for q in results.queries]
    np.testing.assert_allclose(_column(summary, "score"), [q["score"] for q in results.queries])
    np.testing.assert_allclose(_column(summary, "volume (mL)"), [q["volume_ml"] for q in results.queries])

    probs = results.class_probability_table(scene)
    got = np.stack([_column(probs, c) for c in [*names, "no object"]], axis=1)
    np.testing.assert_allclose(got, results.class_probabilities, rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-4)
    emb = results.class_embedding_table(scene)
    assert emb.GetNumberOfColumns() == 1 + results.class_embeddings.shape[1]
    np.testing.assert_allclose(_column(emb, "e0"), results.class_embeddings[:, 0], rtol=1e-6)
    mask = results.mask_embedding_table(scene)
    np.testing.assert_allclose(_column(mask, "c1"), results.mask_embeddings[:, 1], rtol=1e-6)
    assert _column(mask, "query") == results.row_names()


def test_query_overlay_volume(predicted_case, small_phantom, scene):
    out, _, _ = predicted_case
    results = QueryResults.load(out, "phantom")
    reference = volume_node_from_file(small_phantom[0], scene, "CT")
    index = max(results.queries, key=lambda q: q["score"])["index"]
    path = results.query_map_path(index)
    node = query_probability_volume(path, reference, scene, f"query {index}")

    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), expected)
    assert 0.0 <= expected.min() and expected.max() <= 1.0
    np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(reference), atol=1e-4)
    display = node.GetDisplayNode()
    assert display.GetAutoWindowLevel() == 0
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    color = display.GetColorNode()
    assert color.GetName() == "MaskMed probability" and color.GetNumberOfColors() == 256
    rgba = [0.0] * 4
    color.GetColor(0, rgba)
    assert rgba[3] == 0.0  # probability 0 is transparent

    # reusing the node and the colour table adds nothing
    before = node_count(scene)
    again = query_probability_volume(results.query_map_path(0), reference, scene, "query 0", volume_node=node)
    assert again is node and node_count(scene) == before and node.GetName() == "query 0"


def test_query_results_errors(tmp_path, predicted_case):
    with pytest.raises(MaskMedSlicerError, match="holds 0"):
        QueryResults.load(tmp_path)
    out, _, _ = predicted_case
    results = QueryResults.load(out)
    with pytest.raises(MaskMedSlicerError, match="no query 999"):
        results.query_map_path(999)
    results.class_embeddings = None
    with pytest.raises(MaskMedSlicerError, match="no embeddings"):
        results.class_embedding_table(None)


def test_summary_table_rejects_bad_summary(scene):
    with pytest.raises(MaskMedSlicerError, match="bad field"):
        query_summary_table({"queries": [{"index": 0}]}, scene, "x")
