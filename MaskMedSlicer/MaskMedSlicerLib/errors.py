"""Errors the Slicer module shows to the user as one line, without a traceback.

Kept separate from ``MaskMedCore.errors`` so that importing this package never needs MaskMedCore (or
torch); errors raised by MaskMedCore inside Slicer's process are re-raised as ``MaskMedSlicerError``
with the same message.
"""


class MaskMedSlicerError(Exception):
    """Base class of everything MaskMedSlicerLib raises on bad input or a failed run."""


class SegmentationCancelled(MaskMedSlicerError):
    """The user cancelled a segmentation; the scene was left as it was before the run."""
