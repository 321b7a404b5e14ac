"""The Train panel's live plot: a :class:`~MaskMedSlicerLib.progress.TrainingCurve` as a table and chart."""

from __future__ import annotations

import slicer
import vtk

from MaskMedSlicerLib.progress import TrainingCurve

LOSS_COLUMN = "train loss"
DICE_COLUMN = "val mean Dice"


def training_curve_table(curve: TrainingCurve, scene, table_node=None, name: str = "MaskMed training"):
    """Columns ``epoch``, ``train loss``, ``val mean Dice`` and ``val Dice <class>`` per class (NaN where
    not validated); fills ``table_node`` in place when given (call again after each epoch event)."""
    table = vtk.vtkTable()
    columns = [("epoch", curve.epochs), (LOSS_COLUMN, curve.train_loss), (DICE_COLUMN, curve.val_mean_dice)]
    columns += [(f"val Dice {n}", v) for n, v in curve.val_dice.items()]
    for title, values in columns:
        array = vtk.vtkDoubleArray()
        array.SetName(title)
        array.SetNumberOfValues(len(values))
        for i, v in enumerate(values):
            array.SetValue(i, float(v))
        table.AddColumn(array)
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table_node.SetAndObserveTable(table)
    table_node.SetUseColumnTitleAsColumnHeader(True)
    return table_node


def training_curve_chart(table_node, scene, name: str = "MaskMed training"):
    """A plot chart with two line series over ``epoch``: train loss and val mean Dice (show it in a plot view)."""
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetXAxisTitle("epoch")
    chart.SetTitle(name)
    for column, color in ((LOSS_COLUMN, (0.85, 0.33, 0.1)), (DICE_COLUMN, (0.0, 0.45, 0.74))):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("epoch")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart
