"""Error hierarchy shown to users by the CLI and the Slicer module without a traceback.

Every public boundary raises one of these with a message that names the file or field, what was
found, what was expected and, where possible, what to do.
"""


class MaskMedError(Exception):
    """Base class of every error MaskMed raises on bad input."""


class ConfigError(MaskMedError, ValueError):
    """A configuration field has an invalid value or an unknown key."""


class DataError(MaskMedError, ValueError):
    """An image, label map or dataset does not satisfy what MaskMed needs."""


class CheckpointError(MaskMedError):
    """A checkpoint is missing, truncated, unsafe, or made for another model."""
