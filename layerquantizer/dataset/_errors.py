"""The errors of :mod:`layerquantizer.dataset`, and how an error reads on one line."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class of the errors a user of :mod:`layerquantizer.dataset` can act on."""


class RequestError(DatasetError, ValueError):
    """The request does not fit the data: unknown variable, unsupported dtype, bad subset."""


class SourceError(DatasetError):
    """A store cannot be opened or read."""


class DestinationExistsError(DatasetError, FileExistsError):
    """The destination exists and neither overwriting nor resuming was asked for."""


class ChunkWriteError(DatasetError):
    """Writing one chunk failed; the message names the variable and the chunk."""


class ResumeMismatchError(RequestError):
    """``--resume`` asked for a plan other than the one the destination was written with."""


# Tracebacks and pickles name the errors where they are imported from, as before the split.
for _error in (
    DatasetError,
    RequestError,
    SourceError,
    DestinationExistsError,
    ChunkWriteError,
    ResumeMismatchError,
):
    _error.__module__ = "layerquantizer.dataset"
del _error


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
