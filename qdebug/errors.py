"""The project's own errors: one line saying what is wrong, and a hint saying what to do."""

from __future__ import annotations


class QdebugError(Exception):
    """An error the user can act on. The CLI prints ``message`` and ``hint`` on one line, exit 2."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        """The message and hint as the single line the CLI prints."""
        text = self.message.rstrip(".")
        if self.hint:
            hint = self.hint.rstrip(".")
            text += f". {hint[:1].upper()}{hint[1:]}"
        return " ".join((text + ".").split())


class TraceFileError(QdebugError):
    """A trace file is missing, corrupt, not a trace, or of an unsupported schema version."""


class ModelLoadError(QdebugError):
    """A model could not be loaded or is not a Keras model."""


class DataError(QdebugError):
    """Input data is missing, empty, of the wrong dtype or shape, or not finite."""


class ConversionError(QdebugError):
    """The TFLite converter refused the model."""


class TfliteModelError(QdebugError):
    """A given ``.tflite`` cannot be used with the model."""


class ShardMismatchError(QdebugError):
    """Shard traces that cannot be merged: another model or conversion, overlapping slices, a
    missing slice, or a trace that is not a shard."""
