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
    """The first line of an error's message, for a one-line error naming what failed.

    The message of an error of the system or of a library says what is wrong; the name of
    its class adds nothing for a user, so it is shown only when there is no message, or
    when the message alone is a bare value (a ``KeyError``'s key).

    >>> _one_line(ValueError("Expected all values to be non-negative. Got [-1]"))
    'Expected all values to be non-negative. Got [-1]'
    >>> _one_line(NotADirectoryError(20, "Not a directory", "/data/file/x.zarr"))
    '/data/file/x.zarr: not a directory'
    >>> _one_line(KeyError("level"))
    "KeyError: 'level'"
    """
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror.lower()}"
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if not message or isinstance(exc, KeyError | IndexError | AttributeError):
        return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return message
