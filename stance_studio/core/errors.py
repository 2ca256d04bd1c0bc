"""Specific exceptions with messages a researcher can act on.

Every error a user can cause derives from :class:`StanceStudioError`; the CLI turns
them into one line on stderr and exit code 2, the GUI into a dialog.
"""


class StanceStudioError(Exception):
    """Base class for every error caused by input, files or settings (not by bugs)."""


class ModelLoadError(StanceStudioError):
    """A base model could not be found or loaded."""


class CheckpointError(StanceStudioError):
    """A checkpoint file is missing, corrupt, truncated, a pickle, or malformed."""


class IncompatibleBaseError(CheckpointError):
    """A checkpoint was made from a different base model than the one loaded."""


class ShapeMismatchError(CheckpointError):
    """A checkpoint's delta does not fit the shape of the loaded model's parameter."""


class LibraryError(StanceStudioError):
    """A library operation failed (name taken, unknown checkpoint, bad name)."""


class VariantSpecError(StanceStudioError):
    """A variant spec such as ``curious=0.7,confident=-0.3`` could not be parsed."""


class SweepRangeError(VariantSpecError):
    """A sweep's weights (``-1:2:0.25``) or its stances could not be used."""


class DatasetError(StanceStudioError):
    """A stance dataset is missing, empty, malformed or too long for the model."""


class UnknownModuleError(StanceStudioError):
    """A module pattern matched no parameter of the loaded model."""


class TrainingDivergedError(StanceStudioError):
    """Training produced non-finite values for too many consecutive steps."""


class PolicyError(StanceStudioError):
    """An extraction policy string such as ``top:60+rank:16`` could not be parsed."""


class DeviceError(StanceStudioError):
    """A device or dtype that this machine or torch build does not have."""


class OutOfMemoryError(StanceStudioError):
    """The machine ran out of memory for the requested job."""


class Cancelled(StanceStudioError):
    """The user cancelled a long job; nothing was written."""


class ExportError(StanceStudioError):
    """A model, adapter or GGUF export could not be written where asked."""


class AdapterImportError(StanceStudioError):
    """An adapter folder made elsewhere does not fit the loaded base model."""


class StorageError(StanceStudioError):
    """A file or folder could not be read or written: missing, a file where a folder is
    needed, no permission, a read-only or full disk."""


class SettingsError(StanceStudioError):
    """A setting (generation, blend, limits) is outside the range it can take."""


class TextError(StanceStudioError):
    """A text (a prompt) holds characters that are not valid Unicode, such as lone surrogates."""
