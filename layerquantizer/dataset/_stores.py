"""Opening sources lazily, credentials and paths of stores, and the library settings
around reading and writing them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any

import xarray as xr

from layerquantizer.dataset._errors import RequestError, SourceError, _one_line

_CONSOLIDATED_WARNING = r"(?s).*[Cc]onsolidated metadata"


def _token(token: Any, storage_options: Mapping | None, what: str = "storage_options") -> Any:
    """The gcsfs credentials from ``token`` or, for older callers, ``{"token": ...}``."""
    if token is not None or not storage_options:
        return token
    unknown = sorted(set(storage_options) - {"token"})
    if unknown:
        raise RequestError(
            f"{what}: only 'token' is supported (got {', '.join(unknown)}); pass gcs "
            "credentials as token=FILE, 'anon', 'google_default' or 'cloud'"
        )
    return storage_options.get("token")


@contextlib.contextmanager
def _quiet_consolidated():
    # Consolidated metadata is what makes a store of hundreds of arrays open in one read;
    # zarr warns that it is not in the v3 spec yet, which we know and accept.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING, category=RuntimeWarning)
        # The progress folder of an unfinished run (resume.py) and the marker of a store
        # lq wrote (destination.py) are no Zarr nodes, on purpose.
        warnings.filterwarnings(
            "ignore",
            message=r"Object at \.lq-(progress|store\.json) is not recognized",
            category=UserWarning,
        )
        yield


def open_dataset(
    location: str,
    *,
    token: Any = None,
    storage_options: Mapping | None = None,
    chunks: Any = None,
) -> xr.Dataset:
    """Open a Zarr store (v2 or v3, consolidated or not) lazily and read-only.

    Parameters
    ----------
    location : str
        A path or URL (``file://``, ``memory://``, ``gs://``); ``gs://`` is read
        anonymously unless ``token`` says otherwise.
    token : optional
        gcsfs credentials (see :func:`layerquantizer.storage.open_store`).
    storage_options : mapping, optional
        ``{"token": ...}``, the older spelling of ``token``.
    chunks : None or dict
        ``None`` for lazily indexed arrays without dask, ``{}`` for dask arrays with the
        store's chunks.

    Raises
    ------
    SourceError
        If there is no readable Zarr dataset at ``location``.
    layerquantizer.storage.StoreError
        If the store's bucket is missing, access is denied or the endpoint does not answer.
    """
    from layerquantizer.storage import StoreError, StoreNotFound, open_store, store_errors

    token = _token(token, storage_options)
    try:
        store = open_store(location, "r", token=token)
    except StoreNotFound as exc:
        raise SourceError(f"cannot open {location} as a Zarr dataset: {exc.reason}") from exc
    except StoreError:
        raise
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot open {location} as a Zarr dataset: {_one_line(exc)}") from exc
    try:
        with _quiet_consolidated(), store_errors(location):
            ds = xr.open_zarr(store, consolidated=None, chunks=chunks, decode_timedelta=True)
    except StoreError:
        raise
    except Exception as exc:  # the zarr/fsspec/xarray error types differ by backend
        raise SourceError(f"cannot open {location} as a Zarr dataset: {_one_line(exc)}") from exc
    # Where the workers of a write find the source again (see write_plan).
    ds.encoding["lq_location"] = location
    ds.encoding["lq_token"] = token
    return ds


@contextlib.contextmanager
def _single_threaded_blosc():
    # Dask already runs one task per core; Blosc's own thread pool would oversubscribe.
    import numcodecs.blosc

    previous = numcodecs.blosc.set_nthreads(1)
    try:
        yield
    finally:
        numcodecs.blosc.set_nthreads(previous)
