"""The Inspect section's nodes for one result: the selected query's overlay, mask segment and class chart.

:class:`Inspection` adds at most one overlay volume, one ``query_XX`` segment and one plot (a bar chart of
the query's class probabilities, shown in Slicer's plot view, with its table and series nodes), replaces
them when another query is selected, and removes them (and the result's four table nodes) in
:meth:`Inspection.clear` — called on a new run, on "Clear inspection data", on scene close and on module
cleanup. A result of a model without queries (nnU-Net, point-wise head) has nothing to show per query:
:attr:`Inspection.message` says so and :meth:`Inspection.show_query` refuses with the same words.
"""

from __future__ import annotations

import slicer
import vtk

from MaskMedSlicerLib.query_views import NO_QUERIES_MESSAGE
from MaskMedSlicerLib.results import SegmentationResult
from MaskMedSlicerLib.scene_setup import remove_nodes


def query_class_chart(result: SegmentationResult, index: int, scene, table_node=None, chart_node=None):
    """A bar chart of query ``index``'s class probabilities (K labels and ``no object``).

    Returns:
        (table node, chart node); pass them back to refill them for another query.
    """
    query = result.queries.query(index)
    distribution = [float(p) for p in query.get("class_distribution", [])]
    labels = [*result.queries.label_names, "no object"][: len(distribution)]
    table = vtk.vtkTable()
    columns = (vtk.vtkDoubleArray(), vtk.vtkDoubleArray(), vtk.vtkStringArray())
    for array, title in zip(columns, ("class index", "probability", "class")):
        array.SetName(title)
        table.AddColumn(array)
    for k, (label, p) in enumerate(zip(labels, distribution)):
        columns[0].InsertNextValue(k)
        columns[1].InsertNextValue(p)
        columns[2].InsertNextValue(label)
    if table_node is None or table_node.GetScene() is not scene:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", "MaskMed query classes")
    table_node.SetAndObserveTable(table)
    title = f"Query {index} ({query['class_name']}): class probabilities"
    if chart_node is None or chart_node.GetScene() is not scene:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "MaskMed query classes")
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", "MaskMed query classes")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetXColumnName("class index")
        series.SetYColumnName("probability")
        series.SetLabelColumnName("class")
        series.SetColor(0.13, 0.57, 0.55)
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        chart_node.SetXAxisTitle("class")
        chart_node.SetYAxisTitle("probability")
        chart_node.SetYAxisRange(0.0, 1.0)
        chart_node.SetYAxisRangeAuto(False)
    for i in range(chart_node.GetNumberOfPlotSeriesNodes()):
        chart_node.GetNthPlotSeriesNode(i).SetAndObserveTableNodeID(table_node.GetID())
    chart_node.SetTitle(title)
    return table_node, chart_node


class Inspection:
    """The inspected result and the nodes showing its selected query.

    Args:
        logic: the ``MaskMedLogic`` that made ``result``.
        result: a segmentation result (run with ``save_queries`` to show query maps).
    """

    def __init__(self, logic, result: SegmentationResult) -> None:
        self.logic = logic
        self.result = result
        self.overlay_node = None
        self.query_segment_id: str | None = None
        self.chart_table_node = None
        self.chart_node = None

    @property
    def scene(self):
        return self.result.segmentation_node.GetScene()

    @property
    def has_queries(self) -> bool:
        return self.result.has_queries

    @property
    def message(self) -> str:
        """What the Inspect section says above its table: the query count, or that there are no queries."""
        if not self.has_queries:
            return NO_QUERIES_MESSAGE
        count = len(self.result.queries.queries)
        return f"{count} queries of '{self.result.segmentation_node.GetName()}'. Select a row to see its map."

    def show_query(self, index: int, threshold: float = 0.5):
        """Show query ``index``: overlay volume, ``query_XX`` segment (p >= threshold) and class chart.

        Returns:
            (overlay volume node, segment ID, chart node).
        """
        scene = self.scene
        self.remove_query_segment()
        self.overlay_node = self.logic.show_query(self.result, index, scene, volume_node=self.overlay_node)
        self.query_segment_id = self.logic.add_query_segment(self.result, index, threshold, scene)
        self.chart_table_node, self.chart_node = query_class_chart(
            self.result, index, scene, self.chart_table_node, self.chart_node
        )
        return self.overlay_node, self.query_segment_id, self.chart_node

    def remove_query_segment(self) -> None:
        segmentation_node = self.result.segmentation_node
        if self.query_segment_id and segmentation_node.GetScene() is not None:
            segmentation_node.GetSegmentation().RemoveSegment(self.query_segment_id)
        self.query_segment_id = None

    def nodes(self) -> list:
        """The nodes this inspection added besides the result's tables (present ones)."""
        series = []
        if self.chart_node is not None:
            series = [
                self.chart_node.GetNthPlotSeriesNode(i) for i in range(self.chart_node.GetNumberOfPlotSeriesNodes())
            ]
        return [n for n in (self.overlay_node, self.chart_node, *series, self.chart_table_node) if n is not None]

    def clear(self) -> None:
        """Remove the query segment, overlay, chart and the result's table nodes; drop the query maps."""
        scene = self.scene
        self.remove_query_segment()
        if scene is not None:
            remove_nodes(scene, self.nodes())
        self.result.remove_tables()
        self.overlay_node = self.chart_node = self.chart_table_node = None
