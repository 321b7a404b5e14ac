"""MaskMed for 3D Slicer: segment volumes, inspect every query, and train models.

MaskMed (Xie and Agam, "MaskMed: Decoupled Mask and Class Prediction for Medical Image Segmentation",
arXiv:2511.15603, 2025) predicts a set of binary masks and, separately, the class of each mask. This file
holds what needs Slicer's application, in the layout of Slicer's scripted-module template: the module
description, the panel (Qt wiring to a parameter node), a thin logic for the Python console, and the
self-test. The work is in the Qt-free ``MaskMedSlicerLib`` package: the background tasks that the panel's
timer polls (``SegmentTask``, ``TrainingTask``, ``DatasetCheck``, ``DeviceProbe``), the result and
temporary-file lifetime, the model list and ROI cropping; the network runs in a ``PythonSlicer`` child
process (``MaskMedCore``). The panel never waits for the network.

Needs Slicer 5.10 or newer (Python >= 3.10; Slicer 5.8 and older embed Python 3.9). This file parses on
older Pythons so that loading it can say so.
"""

import logging
import os
import sys
from typing import Annotated

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MIN_PYTHON = (3, 10)
MIN_SLICER = "5.10"
MAX_INPUT_CHANNELS = 4  # input selectors in the panel; models with more channels are run from the console
DEVICE_CHOICES = ["auto", "cuda", "cpu"]
PRESET_CHOICES = ["tiny", "paper"]
POLL_INTERVAL_MS = 250
HEAVY_SELF_TEST_VARIABLE = "MASKMED_SELF_TEST_SEGMENT"  # "1": the self-test installs PyTorch and segments
README_URL = "https://github.com/maskmed/SlicerMaskMed#3d-slicer-extension"
PAPER_URL = "https://arxiv.org/abs/2511.15603"
PAPER_CITATION = (
    'Bin Xie and Gady Agam, "MaskMed: Decoupled Mask and Class Prediction for Medical Image Segmentation", '
    "arXiv:2511.15603, 2025."
)
INSPECT_TABLES = ("summary_table", "class_probability_table", "class_embedding_table", "mask_embedding_table")


def checkPythonVersion(versionInfo=sys.version_info) -> None:
    """Refuse to load on a Python older than MIN_PYTHON with a message that says what to install."""
    if tuple(versionInfo[:2]) < MIN_PYTHON:
        found = ".".join(str(v) for v in versionInfo[:3])
        raise RuntimeError(
            f"MaskMed needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer, but this Slicer runs Python {found}:"
            f" install 3D Slicer {MIN_SLICER} or newer (https://download.slicer.org) to use MaskMed."
        )


#
# Module
#


class MaskMedSlicer(ScriptedLoadableModule):
    """The module's description for Slicer's module list and Help & Acknowledgement panel."""

    def __init__(self, parent):
        checkPythonVersion()
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MaskMed")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []  # the PyTorch extension is checked when first needed, with a clear message
        self.parent.contributors = ["MaskMed contributors (independent implementation of Xie and Agam's method)"]
        self.parent.helpText = _(
            "Segment organs and lesions with MaskMed, which predicts a set of binary masks and, separately,"
            " the class of each mask. <b>Segment</b>: pick a model (the bundled demo model segments the"
            " liver, spleen, kidneys and aorta of MaskMed's synthetic CT phantom; the bundled hippocampus model"
            " segments the hippocampus in a T1 MRI crop, try it on the MaskMed sample in the Sample Data module;"
            " add your own checkpoints or training runs, nnU-Net v2 result folders or nnU-Net model zips), one"
            " volume per model channel, optionally an ROI to segment inside, and press Segment. <b>Inspect</b>:"
            " every query's class, score and volume, its probability map over the image, its class probabilities,"
            " and the query tables (nnU-Net models have no queries). <b>Train</b>:"
            " train a new model on an nnU-Net-style dataset folder and watch its loss and validation Dice.<br>"
            f'See the <a href="{README_URL}">documentation</a> and the paper'
            f' <a href="{PAPER_URL}">arXiv:2511.15603</a>.'
        )
        self.parent.acknowledgementText = _(
            "MaskMed is an independent implementation of the method of " + PAPER_CITATION + " If you use it,"
            " please cite that paper. Its network follows nnU-Net v2, Mask2Former and Deformable DETR."
            " PyTorch is installed through the PyTorch extension (SlicerPyTorch). The bundled hippocampus model"
            " and its sample case come from the Medical Segmentation Decathlon (Task04, Vanderbilt University"
            " Medical Center; CC-BY-SA 4.0)."
        )
        # Sample Data module: the bundled real sample case (category MaskMed), once the application is up.
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Register the bundled models' sample cases with the Sample Data module (local files, offline)."""
    try:
        import SampleData
        from MaskMedSlicerLib.sample_data import register_sample_data

        register_sample_data(SampleData.SampleDataLogic.registerCustomSampleDataSource)
    except Exception as exc:  # noqa: BLE001 - a missing sample must never stop Slicer's startup
        logging.warning("MaskMed: sample data not registered: %s", exc)


#
# Parameter node
#


@parameterNodeWrapper
class MaskMedSlicerParameterNode:
    """The panel's state, saved with the scene.

    inputVolume0..3: one volume per model channel, in channel order (the panel shows as many as the model has).
    inputROI: segment only inside this markups ROI (None: the whole volume).
    modelPath: checkpoint file, run folder or nnU-Net result folder ("" = the first bundled model).
    device: auto (GPU when found), cuda or cpu.
    useTerminology: standard (SNOMED CT) names, colours and tags where known.
    saveQueries: keep per-query maps for the Inspect section.
    outputSegmentation: segmentation to write into; None creates a new one per run.
    overlayOpacity: opacity of the selected query's probability overlay.
    train*: the Train section's dataset folder, run folder, preset, epochs, fold and device.
    """

    inputVolume0: vtkMRMLScalarVolumeNode
    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    inputROI: vtkMRMLMarkupsROINode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    useTerminology: bool = False
    saveQueries: bool = True
    outputSegmentation: vtkMRMLSegmentationNode
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    trainDatasetDir: str = ""
    trainOutputDir: str = ""
    trainPreset: Annotated[str, Choice(PRESET_CHOICES)] = "tiny"
    trainEpochs: Annotated[int, WithinRange(1, 100000)] = 50
    trainFold: Annotated[int, WithinRange(-1, 4)] = 0
    trainDevice: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"


#
# Widget
#


class MaskMedSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wires the .ui to the parameter node and shows the logic's background tasks.

    A QTimer calls each running task's ``poll()``; the tasks keep all their state, so hiding the module
    (which disconnects the parameter node) changes nothing for them.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._modelChannels = 1
        self._plotWidgets = {}
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollTimer)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MaskMedSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MaskMedSlicerLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        addModelMenu = qt.QMenu(self.ui.addModelButton)
        addModelMenu.addAction(_("Checkpoint file (.pt)…")).connect("triggered()", self.onAddCheckpointFile)
        addModelMenu.addAction(_("Training run folder…")).connect("triggered()", self.onAddRunFolder)
        addModelMenu.addAction(_("nnU-Net result folder…")).connect("triggered()", self.onAddNnunetFolder)
        addModelMenu.addAction(_("nnU-Net model zip…")).connect("triggered()", self.onAddNnunetZip)
        addModelMenu.addAction(_("Remove from list")).connect("triggered()", self.onRemoveModel)
        self.ui.addModelButton.setMenu(addModelMenu)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.loadDemoPhantomButton.connect("clicked(bool)", self.onLoadDemoPhantom)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.ui.queriesTable.horizontalHeader().setSectionResizeMode(qt.QHeaderView.Stretch)
        self.ui.queriesTable.verticalHeader().hide()
        self.ui.queriesTable.connect("itemSelectionChanged()", self.onQuerySelected)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onOverlayOpacityChanged)
        self.ui.showTableButton.connect("clicked(bool)", self.onShowTable)
        self.ui.clearResultButton.connect("clicked(bool)", self.onClearResult)

        for pathEdit, settingKey in (
            (self.ui.datasetPathLineEdit, "MaskMed/TrainDatasetDir"),
            (self.ui.trainOutputPathLineEdit, "MaskMed/TrainOutputDir"),
        ):
            pathEdit.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Drives | ctk.ctkPathLineEdit.NoDot
            pathEdit.settingKey = settingKey
        self.ui.datasetPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetPathChanged)
        self.ui.trainOutputPathLineEdit.connect("currentPathChanged(QString)", self.onTrainOutputPathChanged)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.showPlotInLayoutButton.connect("clicked(bool)", self.onShowPlotInLayout)
        for frame in (self.ui.trainPlotFrame, self.ui.queryPlotFrame):
            self._plotWidgets[frame.objectName] = plotWidget = slicer.qMRMLPlotWidget()
            plotWidget.setMRMLScene(slicer.mrmlScene)
            frame.layout().addWidget(plotWidget)
        self.updateSegmentGui()
        self.updateTrainGui()
        self.clearInspectGui()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Module closed or Slicer exiting: stop polling, end every child, remove the inspection data."""
        self.removeObservers()
        self._pollTimer.stop()
        self.logic.cleanup()
        self.disconnectParameterNode()

    def enter(self) -> None:
        self.initializeParameterNode()
        if self.logic.deviceProbe.state == "idle":
            self.startDeviceProbe()

    def exit(self) -> None:
        self.disconnectParameterNode()

    def onReload(self) -> None:
        """Developer reload: forget MaskMedSlicerLib's modules too, so edits to them take effect."""
        for name in [m for m in sys.modules if m == "MaskMedSlicerLib" or m.startswith("MaskMedSlicerLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event) -> None:
        self.disconnectParameterNode()  # the logic's SegmentTask cancels its run and drops its result itself

    def onSceneEndClose(self, caller, event) -> None:
        self.updateSegmentGui()
        self.clearInspectGui()
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume0:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume0 = firstVolume

    def setParameterNode(self, inputParameterNode) -> None:
        self.disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
            self.ui.datasetPathLineEdit.currentPath = self._parameterNode.trainDatasetDir
            self.ui.trainOutputPathLineEdit.currentPath = self._parameterNode.trainOutputDir
            self.populateModelSelector()  # selects the parameter node's model (e.g. from a loaded scene)

    def disconnectParameterNode(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def selectedInputVolumes(self) -> list:
        """One volume per model channel, or a colour (vector) volume alone when it holds every channel."""
        from MaskMedSlicerLib.inputs import nodes_for_model

        selected = [getattr(self._parameterNode, f"inputVolume{c}") for c in range(self._modelChannels)]
        return nodes_for_model(selected, self._modelChannels)

    def updateGuiState(self, caller=None, event=None) -> None:
        """Enable the Segment and Train buttons from the parameter node and the running tasks."""
        if not self._parameterNode:
            return
        segmenting = self.logic.segmentTask.running
        ready = self._modelChannels <= MAX_INPUT_CHANNELS and all(self.selectedInputVolumes())
        ready = ready and self.ui.modelSelector.count > 0
        self.ui.applyButton.enabled = segmenting or ready
        self.ui.applyButton.toolTip = (
            _("Cancel the running segmentation")
            if segmenting
            else _("Segment the selected volume(s)")
            if ready
            else _("Select a model and one input volume per channel")
        )
        parameters = self._parameterNode
        self.ui.trainButton.enabled = self.logic.trainingTask.running or bool(
            parameters.trainDatasetDir and parameters.trainOutputDir
        )

    # ------------------------------------------------------------------------------------ models
    def populateModelSelector(self) -> None:
        """Bundled models, then the models added or trained (remembered in the application settings)."""
        current = self._parameterNode.modelPath if self._parameterNode else self.selectedModelPath()
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        for entry in self.logic.models.entries(current):
            self.ui.modelSelector.addItem(entry.label, entry.path)
            self.ui.modelSelector.setItemData(self.ui.modelSelector.count - 1, entry.tooltip, qt.Qt.ToolTipRole)
        self.ui.modelSelector.setCurrentIndex(max(self.ui.modelSelector.findData(current), 0))
        self.ui.modelSelector.blockSignals(wasBlocked)
        if self.ui.modelSelector.count == 0:
            self.ui.modelInfoLabel.text = _("No model: add a checkpoint, run folder or nnU-Net model (Add model…).")
        self.onModelSelected(self.ui.modelSelector.currentIndex)

    def selectedModelPath(self) -> str:
        return self.ui.modelSelector.currentData or ""

    def onModelSelected(self, index) -> None:
        path = self.selectedModelPath()
        if self._parameterNode and path and self._parameterNode.modelPath != path:
            self._parameterNode.modelPath = path
        self.updateModelInfo()

    def updateModelInfo(self) -> None:
        """Show the model's channels and classes, and one input selector per channel."""
        path = self.selectedModelPath()
        summary = self.logic.models.summary(self.logic.coreLogic, path) if path else None
        names = summary.channel_names if summary else ("channel 1",)
        self._modelChannels = len(names)
        for c in range(MAX_INPUT_CHANNELS):
            getattr(self.ui, f"inputVolumeLabel{c}").setVisible(c < len(names))
            getattr(self.ui, f"inputVolumeSelector{c}").setVisible(c < len(names))
            if c < len(names):
                getattr(self.ui, f"inputVolumeLabel{c}").text = f"{names[c]}:"
        text = summary.text if summary else ""
        if len(names) > MAX_INPUT_CHANNELS:
            text += " " + _("Segment this model from the Python console (logic.segment([...])).")
        self.ui.modelInfoLabel.text = text
        cardText = summary.tooltip if summary else ""
        if cardText:  # the card read with the model (e.g. a checkpoint's classes): show it in the selector too
            self.ui.modelSelector.setItemData(self.ui.modelSelector.currentIndex, cardText, qt.Qt.ToolTipRole)
        self.ui.modelInfoLabel.toolTip = (
            cardText or self.ui.modelSelector.itemData(self.ui.modelSelector.currentIndex, qt.Qt.ToolTipRole) or ""
        )
        self.updateGuiState()

    def onAddCheckpointFile(self) -> None:
        fileFilter = _("MaskMed checkpoint (*.pt)")
        self.addModel(qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Add a checkpoint"), "", fileFilter))

    def onAddRunFolder(self) -> None:
        self.addModel(qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Add a training run folder")))

    def onAddNnunetFolder(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Add an nnU-Net result folder (Trainer__Plans__configuration)")
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("This is not a usable nnU-Net result folder."), waitCursor=True):
            self.selectModel(self.logic.addNnunetFolder(path))  # no PyTorch needed to read it

    def onAddNnunetZip(self) -> None:
        mainWindow = slicer.util.mainWindow()
        zipPath = qt.QFileDialog.getOpenFileName(
            mainWindow, _("Install an nnU-Net model zip"), "", _("nnU-Net model zip (*.zip)")
        )
        if not zipPath:
            return
        dialog = qt.QInputDialog(mainWindow)
        dialog.setWindowTitle(_("Install an nnU-Net model zip"))
        dialog.setLabelText(
            _("SHA-256 checksum of the zip, if its publisher gives one (leave empty to install without the check):")
        )
        if not dialog.exec_():
            return
        with slicer.util.tryWithErrorDisplay(_("The nnU-Net model zip was not installed."), waitCursor=True):
            installed = self.logic.installNnunetZip(zipPath, dialog.textValue().strip() or None)
            self.selectModel(installed[0])
            self.addLog([_("Installed nnU-Net model {path}").format(path=path) for path in installed])

    def addModel(self, path: str) -> None:
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("This is not a usable MaskMed model."), waitCursor=True):
            self.ensureDependencies()
            self.logic.coreLogic.model_info(path)  # refuses files that are not MaskMed checkpoints
            self.logic.models.remember(path)
            self.selectModel(path)

    def selectModel(self, path: str) -> None:
        """Select a model that was just added (and list it)."""
        if self._parameterNode:
            self._parameterNode.modelPath = path
        self.populateModelSelector()

    def onRemoveModel(self) -> None:
        path = self.selectedModelPath()
        if path in self.logic.models.remembered():
            self.logic.models.forget(path)
            if self._parameterNode:
                self._parameterNode.modelPath = ""
            self.populateModelSelector()

    # ------------------------------------------------------------------------------------ background tasks
    def ensureDependencies(self) -> None:
        """Install what is missing, after asking (torch through the PyTorch extension)."""
        missingBefore = self.logic.missingDependencies()
        self.logic.installDependencies(confirm=self.confirmInstall, log=self.addLog)
        if "torch" in missingBefore:  # now the model details and the GPU can be read
            self.updateModelInfo()
            self.startDeviceProbe()

    @staticmethod
    def confirmInstall(message: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(message, _("MaskMed needs Python packages"))

    def startDeviceProbe(self) -> None:
        if "torch" in self.logic.missingDependencies():
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet (installed on the first Segment)")
            return
        self.logic.deviceProbe.start()
        self.ui.deviceInfoLabel.text = self.logic.deviceProbe.status
        self._pollTimer.start()

    def onPollTimer(self) -> None:
        """Poll every running task (never blocks) and show what changed; stop when none runs."""
        logic = self.logic
        if logic.segmentTask.running:
            update = logic.segmentTask.poll()
            self.addLog(update.log)
            if update.finished:
                self.onSegmentationFinished()
            else:
                self.updateSegmentGui()
        if logic.trainingTask.running:
            update = logic.trainingTask.poll()
            for line in update.log:
                self.ui.trainLogTextEdit.appendPlainText(line)
            if update.finished:
                self.onTrainingFinished()
            else:
                self.updateTrainGui()
        if logic.datasetCheck.running and logic.datasetCheck.poll().finished:
            self.showDatasetCheck()
        if logic.deviceProbe.running and logic.deviceProbe.poll().finished:
            self.ui.deviceInfoLabel.text = logic.deviceProbe.status
        tasks = (logic.segmentTask, logic.trainingTask, logic.datasetCheck, logic.deviceProbe)
        if not any(task.running for task in tasks):
            self._pollTimer.stop()

    def addLog(self, lines) -> None:
        for line in [lines] if isinstance(lines, str) else lines:
            logging.info("MaskMed: %s", line)
            self.ui.logTextEdit.appendPlainText(line)

    # ------------------------------------------------------------------------------------ segment
    def onLoadDemoPhantom(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to generate the demo phantom."), waitCursor=True):
            volumeNode, _labels = self.logic.loadDemoPhantom()
            if self._parameterNode:
                self._parameterNode.inputVolume0 = volumeNode
            slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)

    def onApplyButton(self) -> None:
        task = self.logic.segmentTask
        if task.running:
            task.cancel()
            self.updateSegmentGui()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            parameters = self._parameterNode
            outputNode = parameters.outputSegmentation
            if outputNode is not None and not self.confirmReplaceSegments(outputNode):
                return
            self.ensureDependencies()  # may reveal the model's channel count (read with torch)
            self.ui.logTextEdit.clear()
            self.clearInspectGui()
            self.addLog(
                task.start(
                    self.selectedInputVolumes(),
                    model=self.selectedModelPath() or None,
                    device=parameters.device,
                    roi=parameters.inputROI,
                    save_queries=parameters.saveQueries,
                    segmentation_node=outputNode,
                    use_terminology=parameters.useTerminology,
                )
            )
            self._pollTimer.start()
        self.updateSegmentGui()

    def confirmReplaceSegments(self, segmentationNode) -> bool:
        """Never overwrite a segmentation silently: an existing, non-empty one is only updated after asking."""
        if segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
            return True
        message = _(
            "Segments of '{name}' that are named like the model's classes will be replaced by the new result; its"
            " other segments are kept. Choose 'Create new segmentation' as output to keep '{name}' unchanged."
            "\n\nReplace them?"
        )
        return slicer.util.confirmOkCancelDisplay(message.format(name=segmentationNode.GetName()), _("Replace?"))

    def updateSegmentGui(self) -> None:
        task = self.logic.segmentTask
        self.ui.applyButton.text = _("Cancel") if task.running else _("Segment")
        self.ui.progressBar.setVisible(task.running)
        self.ui.progressBar.value = int(100 * (task.fraction or 0.0))
        self.ui.statusLabel.text = task.status
        for widget in (self.ui.modelSelector, self.ui.addModelButton, self.ui.outputSegmentationSelector):
            widget.enabled = not task.running
        self.updateGuiState()

    def onSegmentationFinished(self) -> None:
        task = self.logic.segmentTask
        self.updateSegmentGui()
        if task.state == "failed":
            slicer.util.errorDisplay(task.error, windowTitle=_("MaskMed segmentation failed"))
        elif task.result is not None:
            self.ui.segmentationShow3DButton.setSegmentationNode(task.result.segmentation_node)
            slicer.util.setSliceViewerLayers(background=task.result.reference_volume_node)
            self.populateInspectGui(task.result)

    # ------------------------------------------------------------------------------------ inspect
    def populateInspectGui(self, result) -> None:
        self.ui.clearResultButton.enabled = True
        if not result.has_queries:  # nnU-Net / point-wise head: say so instead of showing empty tables
            self.ui.resultLabel.text = self.logic.segmentTask.inspection.message
            self.setQueryWidgetsVisible(False)
            return
        queries = result.queries.queries
        self.ui.resultLabel.text = _("{n} queries of '{name}'. Select a row to see its map.").format(
            n=len(queries), name=result.segmentation_node.GetName()
        )
        table = self.ui.queriesTable
        table.setSortingEnabled(False)
        table.setRowCount(len(queries))
        for row, query in enumerate(queries):
            values = (query["index"], query["class_name"], round(query["score"], 3), round(query["volume_ml"], 2))
            for column, value in enumerate(values):
                item = qt.QTableWidgetItem()
                item.setData(qt.Qt.DisplayRole, value)  # numbers sort as numbers
                table.setItem(row, column, item)
        table.setSortingEnabled(True)
        self.ui.showTableButton.enabled = self.ui.clearResultButton.enabled = True

    def onQuerySelected(self) -> None:
        rows = self.ui.queriesTable.selectionModel().selectedRows()
        if not rows or self.logic.segmentTask.inspection is None:
            return
        index = int(self.ui.queriesTable.item(rows[0].row(), 0).data(qt.Qt.DisplayRole))
        with slicer.util.tryWithErrorDisplay(_("Cannot show this query."), waitCursor=True):
            overlayNode, _segmentId, chartNode = self.logic.segmentTask.inspection.show_query(index)
            opacity = self.ui.overlayOpacitySlider.value
            slicer.util.setSliceViewerLayers(foreground=overlayNode, foregroundOpacity=opacity)
            self.showChart(self.ui.queryPlotFrame, chartNode)

    def showChart(self, frame, chartNode) -> None:
        """Show a plot chart node in the plot widget of ``frame`` (one plot view node per widget)."""
        plotWidget = self._plotWidgets[frame.objectName]
        viewNode = plotWidget.mrmlPlotViewNode()
        if viewNode is None or viewNode.GetScene() is None:
            viewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode", f"MaskMed {frame.objectName}")
            plotWidget.setMRMLPlotViewNode(viewNode)
        viewNode.SetPlotChartNodeID(chartNode.GetID())

    def onOverlayOpacityChanged(self, value: float) -> None:
        if self.logic.segmentTask.inspection and self.logic.segmentTask.inspection.overlay_node:
            slicer.util.setSliceViewerLayers(foregroundOpacity=value)

    def onShowTable(self) -> None:
        result = self.logic.segmentTask.result
        if result is None:
            return
        tableNode = getattr(result, INSPECT_TABLES[self.ui.inspectTableSelector.currentIndex]) or result.summary_table
        if tableNode is None:  # a model without queries has no tables
            return
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(tableNode.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def onClearResult(self) -> None:
        self.logic.segmentTask.clear_result()
        self.clearInspectGui()

    def clearInspectGui(self) -> None:
        self.ui.queriesTable.setRowCount(0)
        self.ui.resultLabel.text = _("Segment a volume to inspect its queries.")
        self.ui.showTableButton.enabled = self.ui.clearResultButton.enabled = False
        self.setQueryWidgetsVisible(True)

    def setQueryWidgetsVisible(self, visible: bool) -> None:
        """The per-query parts of the Inspect section (hidden for a model without queries)."""
        for widget in (
            self.ui.queriesTable,
            self.ui.overlayOpacityLabel,
            self.ui.overlayOpacitySlider,
            self.ui.queryPlotFrame,
            self.ui.inspectTableSelector,
            self.ui.showTableButton,
        ):
            widget.setVisible(visible)

    # ------------------------------------------------------------------------------------ train
    def onDatasetPathChanged(self, path: str) -> None:
        if self._parameterNode and self._parameterNode.trainDatasetDir != path:
            self._parameterNode.trainDatasetDir = path
        if path != self.logic.datasetCheck.path:
            self.logic.datasetCheck.start(path)
            self.showDatasetCheck()
            self._pollTimer.start()

    def showDatasetCheck(self) -> None:
        check = self.logic.datasetCheck
        self.ui.datasetStatusLabel.text = check.status
        self.ui.datasetProblemsList.clear()
        for problem in check.problems:
            self.ui.datasetProblemsList.addItem(problem)
        self.ui.datasetProblemsList.setVisible(bool(check.problems))

    def onTrainOutputPathChanged(self, path: str) -> None:
        if self._parameterNode and self._parameterNode.trainOutputDir != path:
            self._parameterNode.trainOutputDir = path

    def onTrainButton(self) -> None:
        task = self.logic.trainingTask
        if task.running:
            task.stop()  # first click: stop with a resumable checkpoint; second click: kill
            self.updateTrainGui()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            self.ensureDependencies()
            p = self._parameterNode
            task.start(p.trainDatasetDir, p.trainOutputDir, p.trainPreset, p.trainEpochs, p.trainFold, p.trainDevice)
            self.ui.trainLogTextEdit.clear()
            self._pollTimer.start()
        self.updateTrainGui()

    def updateTrainGui(self) -> None:
        task = self.logic.trainingTask
        self.ui.trainButton.text = {"running": _("Stop"), "stopping": _("Kill now")}.get(
            task.state, _("Start training")
        )
        self.ui.trainProgressBar.setVisible(task.running)
        self.ui.trainProgressBar.value = int(100 * (task.fraction or 0.0))
        self.ui.trainStatusLabel.text = task.status
        if task.chart_node is not None:
            self.showChart(self.ui.trainPlotFrame, task.chart_node)
        self.updateGuiState()

    def onTrainingFinished(self) -> None:
        self.updateTrainGui()
        if self.logic.trainingTask.model_path:  # remembered by the task; list it (and select it if shown)
            if self._parameterNode:
                self._parameterNode.modelPath = self.logic.trainingTask.model_path
            self.populateModelSelector()

    def onShowPlotInLayout(self) -> None:
        if self.logic.trainingTask.chart_node is None:
            slicer.util.infoDisplay(_("The curves appear after the first training epoch."))
            return
        slicer.modules.plots.logic().ShowChartInLayout(self.logic.trainingTask.chart_node)


#
# Logic
#


class MaskMedSlicerLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer-side logic over ``MaskMedSlicerLib``, usable from the Python console::

        logic = slicer.util.getModuleLogic("MaskMedSlicer")
        segmentationNode = logic.segment(volumeNode)                       # bundled demo model, blocking
        segmentationNode = logic.segment(volumeNode, "hippocampus", roi=roiNode)   # a bundled model, in an ROI
        queries = logic.queries()                                          # per-query class, score, volume
        instances = logic.instances()                                      # lesions, boxes, case classification
        overlayNode, segmentId = logic.showQuery(3)                        # query 3's map and mask

    The panel and the console share ``segmentTask``: a new run replaces the previous run's inspection
    data, and closing the scene cancels a run. It opens no dialogs (``installDependencies`` takes a
    ``confirm`` callback; None installs without asking).
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from MaskMedSlicerLib import DatasetCheck, DeviceProbe, MaskMedLogic, ModelList, SegmentTask, TrainingTask

        python = self.pythonExecutable()
        self.coreLogic = MaskMedLogic()
        self.models = ModelList(slicer.app.settings())
        self.segmentTask = SegmentTask(self.coreLogic, slicer.mrmlScene, python)
        self.trainingTask = TrainingTask(self.coreLogic, slicer.mrmlScene, self.models, python)
        self.datasetCheck = DatasetCheck(python)
        self.deviceProbe = DeviceProbe(python)

    def getParameterNode(self):
        return MaskMedSlicerParameterNode(super().getParameterNode())

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's PythonSlicer (same packages as Slicer, torch included); sys.executable outside Slicer."""
        from MaskMedSlicerLib import find_python_slicer

        return find_python_slicer() or sys.executable

    def cleanup(self) -> None:
        """End every child process and remove the last result's inspection data (module cleanup)."""
        self.segmentTask.close()
        self.trainingTask.close()
        self.datasetCheck.cancel()
        self.deviceProbe.cancel()

    # ------------------------------------------------------------------------------------ dependencies
    @staticmethod
    def missingDependencies() -> list:
        from MaskMedSlicerLib import missing_packages

        return missing_packages()

    @staticmethod
    def installDependencies(confirm=None, log=None) -> None:
        """Install missing packages after ``confirm(message)`` says yes (torch through the PyTorch extension's
        PyTorchUtils); ``confirm=None`` installs without asking (scripts, the opt-in self-test)."""
        from MaskMedSlicerLib.installer import install_dependencies

        install_dependencies(confirm, log)

    # ------------------------------------------------------------------------------------ console API
    def segment(self, volumeNode, model=None, roi=None, device="auto", useTerminology=False, saveQueries=True,
                segmentationNode=None, progress=None):  # fmt: skip
        """Segment a volume (or a list, one per model channel) and return the segmentation node. Blocks.

        Args:
            volumeNode: a scalar volume node, or one per model channel.
            model: checkpoint file, run folder, nnU-Net result folder or bundled model name ("phantom",
                "hippocampus"); None: demo.
            roi: a markups ROI node to segment inside (clipped to the volume), or None.
            device, useTerminology, saveQueries, segmentationNode: as in the panel.
            progress: called with each log line.

        The whole result is ``lastResult`` (see ``queries`` and ``showQuery``). Raises MaskMedSlicerError
        with a one-line message on failure.
        """
        options = {"save_queries": saveQueries, "segmentation_node": segmentationNode}
        options["use_terminology"] = useTerminology
        result = self.segmentTask.run(volumeNode, model=model, device=device, roi=roi, progress=progress, **options)
        return result.segmentation_node

    @property
    def lastResult(self):
        return self.segmentTask.result

    def queries(self) -> list:
        """Per-query dicts (index, class_name, score, volume_ml, class_distribution, ...) of the last result."""
        return self.lastResult.queries.queries

    def instances(self) -> dict:
        """Instances, boxes and case classification of the last result as plain data (empty lists / dict for a
        model without them); the nodes are "<volume> instances", "lesion 1 (mask box)", ... (see instance_views)."""
        return self.coreLogic.instances(self.lastResult)

    def showQuery(self, index: int, threshold: float = 0.5):
        """Show query ``index``'s probability map and mask; returns (overlay volume node, segment ID)."""
        overlayNode, segmentId, _chartNode = self.segmentTask.inspection.show_query(index, threshold)
        return overlayNode, segmentId

    def clearInspection(self) -> None:
        """Remove the last result's tables, overlay and query segment (its segmentation stays)."""
        self.segmentTask.clear_result()

    def addNnunetFolder(self, path) -> str:
        """Remember an nnU-Net v2 result folder (or the only one inside ``path``) as a model; returns its path."""
        from MaskMedSlicerLib.nnunet_models import add_nnunet_folder

        return add_nnunet_folder(path, self.models)

    def installNnunetZip(self, zipPath, sha256=None) -> list:
        """Verify and install an nnU-Net model zip into ``modelsFolder()``, remember its models; returns their paths.

        Nothing is written unless every check passes (``sha256``: the zip's expected SHA-256, or None)."""
        from MaskMedSlicerLib.nnunet_models import install_nnunet_zip_model

        return install_nnunet_zip_model(zipPath, self.modelsFolder(), self.models, sha256)

    @staticmethod
    def modelsFolder() -> str:
        """Where installed nnU-Net zips go: ``MaskMed/nnUNet_results`` beside Slicer's user settings file."""
        from MaskMedSlicerLib.nnunet_models import user_models_folder

        return str(user_models_folder(os.path.dirname(slicer.app.slicerUserSettingsFilePath)))

    @staticmethod
    def loadDemoPhantom(seed=None):
        """Generate MaskMed's synthetic CT phantom and load it; returns (volume node, reference labels image)."""
        from MaskMedSlicerLib.sample_data import load_demo_phantom

        return load_demo_phantom(slicer.mrmlScene, seed)


#
# Test
#


class MaskMedSlicerTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer. By default it downloads nothing and needs no PyTorch (as the TotalSegmentator
    and MONAIAuto3DSeg self-tests keep their logic test off): the module and its logic load, and the library
    works on Slicer's scene (``MaskMedSlicerLib.self_test``). With the environment variable
    MASKMED_SELF_TEST_SEGMENT=1 it also installs PyTorch (no prompt in testing mode) and segments the demo
    phantom and the bundled hippocampus sample on the CPU (a few minutes).
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    @staticmethod
    def heavyTestsEnabled(environ=os.environ) -> bool:
        return environ.get(HEAVY_SELF_TEST_VARIABLE, "") == "1"

    def runTest(self) -> None:
        self.setUp()
        self.test_MaskMedSlicerModuleLoads()
        self.setUp()
        self.test_MaskMedSlicerLibrary()
        if not self.heavyTestsEnabled():
            logging.info("MaskMed self-test: segmentation skipped (set %s=1 to run it)", HEAVY_SELF_TEST_VARIABLE)
            return
        self.setUp()
        self.test_MaskMedSlicerSegment()

    def test_MaskMedSlicerModuleLoads(self) -> None:
        self.assertEqual(slicer.modules.maskmedslicer.title, "MaskMed")
        logic = MaskMedSlicerLogic()
        self.assertEqual(logic.getParameterNode().device, "auto")
        self.assertTrue(any(e.bundled for e in logic.models.entries()), "no bundled model found")
        logic.cleanup()

    def test_MaskMedSlicerLibrary(self) -> None:
        from MaskMedSlicerLib.self_test import check_library_on_scene

        self.delayDisplay("Label map under a transform, terminology, ROI crop (no PyTorch)")
        check_library_on_scene(slicer.mrmlScene)

    def test_MaskMedSlicerSegment(self) -> None:
        import SampleData
        import SimpleITK as sitk
        from MaskMedSlicerLib.sample_data import sample_case
        from MaskMedSlicerLib.self_test import check_segmentation

        logic = MaskMedSlicerLogic()
        logic.installDependencies(confirm=None)
        phantom, phantomLabels = logic.loadDemoPhantom()
        sample = sample_case("hippocampus")
        registerSampleData()
        mri, _labelsNode = SampleData.downloadSamples(sample.sample_name)
        sampleLabels = sitk.Cast(sitk.ReadImage(str(sample.label)), sitk.sitkUInt8)
        for volumeNode, model, labels, minimumDice in (
            (phantom, "phantom", phantomLabels, 0.8),
            (mri, "hippocampus", sampleLabels, 0.7),
        ):
            self.delayDisplay(f"Segmenting {volumeNode.GetName()} with the bundled {model} model (CPU)")
            logic.segment(volumeNode, model, device="cpu", useTerminology=True)
            check_segmentation(logic.segmentTask, labels, minimumDice)  # the bundled models: 0.92-0.98, ~0.88
        logic.cleanup()
