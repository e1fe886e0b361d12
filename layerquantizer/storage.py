"""Open, probe and remove Zarr stores on local disk, in memory and on Google Cloud Storage.

The stores are zarr-python 3 stores, so xarray and zarr take them as they are::

    from layerquantizer.storage import open_store, store_errors
    import xarray as xr

    source = open_store("gs://gcp-public-data-arco-era5/ar/full_37-1h-0p25deg-chunk-1.zarr-v3")
    destination = open_store("gs://my-bucket/era5-lq.zarr", mode="w")
    with store_errors("gs://my-bucket/era5-lq.zarr"):
        xr.open_zarr(source).to_zarr(destination, mode="w")

``gs://`` sources are read anonymously unless ``token`` is given, so public buckets never
wait for a credential probe; writes use the standard Google credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, the metadata
server) unless ``token`` is given. With ``STORAGE_EMULATOR_HOST`` set, every ``gs://`` URL goes
to that emulator without credentials, as the Google client libraries do, and the endpoint is
pinned into the filesystem so that dask workers, which unpickle it, reach the same emulator.

Transient failures are retried by gcsfs itself: every JSON-API request is tried up to six
times with exponential back-off (about 30 s in all) on HTTP 408, 429, 500-504, connection
errors and expired tokens; 401, 403 and 404 fail at once. A stalled connection is not a
connection error to aiohttp unless a socket read timeout is set, so :func:`open_store` sets
one (:data:`SOCKET_READ_TIMEOUT`) rather than waiting out aiohttp's 5-minute total timeout,
which gcsfs does not retry.

Failures that a user can act on become a :class:`StoreError`: :class:`StoreNotFound`,
:class:`StorePermissionDenied` or :class:`StoreUnreachable`, each a one-line message naming the
URL and the way out. Importing this module imports neither fsspec, gcsfs nor zarr.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import fsspec
    from zarr.abc.store import Store

Mode = Literal["r", "r+", "w"]

#: Metadata keys, one of which sits at the root of every Zarr v3 or v2 group or array.
ZARR_METADATA_KEYS = ("zarr.json", ".zgroup", ".zarray")

#: Seconds a ``gs://`` read may stall before aiohttp gives up and gcsfs retries it.
SOCKET_READ_TIMEOUT = 60.0

#: Seconds to wait for a TCP connection to the GCS endpoint before gcsfs retries.
SOCKET_CONNECT_TIMEOUT = 30.0

_MODES = ("r", "r+", "w")
_GCS_CREDENTIALS_HINT = "pass --gcs-token FILE (token=) or set GOOGLE_APPLICATION_CREDENTIALS"


class StoreError(Exception):
    """A store cannot be used; the message names the URL and the way out.

    Parameters
    ----------
    url : str
        The store's path or URL as the user gave it.
    reason : str
        What went wrong and what to do, without the URL.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason

    def __reduce__(self):
        # Exceptions travel between dask processes by pickle, which would otherwise call
        # the class with the formatted message alone.
        return type(self), (self.url, self.reason)

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


class StoreNotFound(StoreError, FileNotFoundError):
    """The bucket, the directory or the Zarr store at the URL does not exist."""


class StorePermissionDenied(StoreError, PermissionError):
    """The credentials in use (or anonymous access) may not read or write the store."""


class StoreUnreachable(StoreError, ConnectionError):
    """The storage endpoint did not answer, after gcsfs's retries."""


class StoreURLError(StoreError, ValueError):
    """The URL cannot name a store here: an unsupported scheme, or no bucket."""


def open_store(url_or_path: str | os.PathLike, mode: Mode = "r", *, token: Any = None) -> Store:
    """A zarr-python 3 store for a local path, ``file://``, ``memory://`` or ``gs://`` URL.

    Parameters
    ----------
    url_or_path : str or path-like
        Where the store is: a local path (``~`` is expanded), ``file://``, ``memory://`` or
        ``gs://bucket/path``.
    mode : {"r", "r+", "w"}
        ``"r"``: a read-only store that must hold Zarr metadata. ``"r+"``: writable, must
        hold Zarr metadata (resuming a write). ``"w"``: writable; the store need not exist,
        but a ``gs://`` bucket must. Removing what is there is :func:`remove_store`'s job.
    token : optional
        gcsfs credentials for ``gs://``: a service-account JSON file, a dict, a
        ``google.auth`` credentials object, ``"anon"`` or ``"google_default"``. By default
        ``"anon"`` for ``mode="r"`` and ``"google_default"`` otherwise; ``"anon"`` always when
        ``STORAGE_EMULATOR_HOST`` is set.

    Returns
    -------
    zarr.abc.store.Store
        A :class:`zarr.storage.LocalStore` for local paths, else a
        :class:`zarr.storage.FsspecStore`.

    Raises
    ------
    StoreNotFound
        The bucket does not exist, or (``"r"``, ``"r+"``) no Zarr store is at the URL.
    StorePermissionDenied
        The credentials may not read the store or its bucket, or none were found.
    StoreUnreachable
        The endpoint did not answer.
    ValueError
        ``mode`` or the URL's scheme is not supported.

    Examples
    --------
    >>> import zarr
    >>> store = open_store("memory://doc/open_store.zarr", mode="w")
    >>> _ = zarr.create_group(store, zarr_format=3)
    >>> open_store("memory://doc/open_store.zarr").read_only
    True
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
    url = os.fspath(url_or_path)
    protocol, path = _split_url(url)
    read_only = mode == "r"
    must_exist = mode in ("r", "r+")

    if protocol == "file":
        import zarr.storage

        _check_local(url, path, must_exist=must_exist, writable=not read_only)
        return zarr.storage.LocalStore(path, read_only=read_only)

    with store_errors(url):
        fs = _filesystem(protocol, mode, token)
        if must_exist:
            _check_zarr_metadata(fs, url, path)
        elif protocol == "gs":
            _check_bucket(fs, url, path)
        return _fsspec_store(protocol, path, mode, token, read_only)


def store_exists(url_or_path: str | os.PathLike, *, token: Any = None) -> bool:
    """Whether anything is at the URL: a Zarr store or any other file or object under it.

    A missing ``gs://`` bucket holds nothing, so the answer is then ``False``.

    Examples
    --------
    >>> store_exists("memory://doc/store_exists.zarr")
    False
    """
    url = os.fspath(url_or_path)
    protocol, path = _split_url(url)
    if protocol == "file":
        return os.path.lexists(path)
    with store_errors(url):
        fs = _filesystem(protocol, "r", token)
        return _exists(fs, path)


def remove_store(
    url_or_path: str | os.PathLike, *, token: Any = None, markers: tuple[str, ...] = ()
) -> bool:
    """Remove the Zarr store at the URL (for ``--overwrite``); nothing there is no error.

    Only a Zarr store (metadata at its root, or one of the keys in ``markers``, such as the
    manifest of an ``lq compress`` run interrupted before it wrote any metadata) or an empty
    directory is removed, never a bucket or a directory of other files, so a mistyped output
    path cannot wipe out data.

    Returns
    -------
    bool
        Whether something was removed.

    Raises
    ------
    ValueError
        The URL names a whole bucket, a filesystem root, or something that is not a Zarr store.

    Examples
    --------
    >>> import zarr
    >>> _ = zarr.create_group(open_store("memory://doc/remove.zarr", mode="w"), zarr_format=2)
    >>> remove_store("memory://doc/remove.zarr"), store_exists("memory://doc/remove.zarr")
    (True, False)
    """
    url = os.fspath(url_or_path)
    protocol, path = _split_url(url)
    if protocol == "gs" and "/" not in path:
        raise ValueError(
            f"{url}: refusing to remove a whole bucket; name the store inside it, "
            f"e.g. gs://{path}/output.zarr"
        )
    if protocol == "file" and Path(path) in (
        Path(Path(path).anchor),
        Path(os.path.realpath(Path.home())),
    ):
        raise ValueError(f"{url}: refusing to remove a filesystem root or home directory")
    with store_errors(url):
        fs = _filesystem(protocol, "w", token)
        if not _exists(fs, path):
            return False
        if not _has_zarr_metadata(fs, path, markers) and fs.find(path, withdirs=False):
            raise ValueError(
                f"{url}: not a Zarr store (no {', '.join(ZARR_METADATA_KEYS)} at its root), "
                "refusing to remove it; remove it yourself or choose another output"
            )
        fs.rm(path, recursive=True)
        return True


def stored_bytes(url_or_path: str | os.PathLike, prefix: str = "", *, token: Any = None) -> int:
    """The bytes stored under the URL, optionally under ``prefix`` inside it (e.g. a variable).

    Sizes come from one listing, as the object store reports them: compressed chunks plus
    metadata, what the storage bill counts.

    Raises
    ------
    StoreNotFound
        Nothing is at the URL (a missing ``prefix`` inside an existing store counts 0).

    Examples
    --------
    >>> import numpy as np, zarr
    >>> store = open_store("memory://doc/stored_bytes.zarr", mode="w")
    >>> z = zarr.create_array(store, name="t", shape=(8,), dtype="uint8", compressors=None)
    >>> z[:] = np.arange(8, dtype="uint8")
    >>> stored_bytes("memory://doc/stored_bytes.zarr", "t/c")
    8
    """
    url = os.fspath(url_or_path)
    protocol, path = _split_url(url)
    with store_errors(url):
        fs = _filesystem(protocol, "r", token)
        if not _exists(fs, path):
            raise StoreNotFound(url, "nothing is there; check the path")
        root = f"{path.rstrip('/')}/{prefix.strip('/')}" if prefix.strip("/") else path
        found = fs.find(root, withdirs=False, detail=True)
        return sum(int(info.get("size") or 0) for info in found.values())


def filesystem(url_or_path: str | os.PathLike, mode: Mode = "r", *, token: Any = None):
    """``(fs, path)``: a fresh synchronous fsspec filesystem for the URL and the store's path
    on it, with the same credentials and endpoint rules as :func:`open_store`.

    For listing objects, reading small documents and removing what a run left, where a
    Zarr store is not the right tool.

    Examples
    --------
    >>> fs, path = filesystem("memory://doc/filesystem.zarr")
    >>> path
    '/doc/filesystem.zarr'
    """
    url = os.fspath(url_or_path)
    protocol, path = _split_url(url)
    return _filesystem(protocol, mode, token), path


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turn storage failures raised inside the block into :class:`StoreError` for ``url``.

    Errors this module cannot classify propagate unchanged; the original error is kept as
    ``__cause__``. Wrap reads and writes that happen after :func:`open_store` (``to_zarr``,
    ``compute``) in it, since a permission or network problem often shows only there.

    Examples
    --------
    >>> try:
    ...     with store_errors("gs://bucket/x.zarr"):
    ...         raise FileNotFoundError("b/bucket/o/x.zarr%2Fzarr.json")
    ... except StoreNotFound as error:
    ...     print(error)
    gs://bucket/x.zarr: not found (b/bucket/o/x.zarr%2Fzarr.json); check the path
    """
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        error = classify_store_error(exc, url)
        if error is None:
            raise
        raise error from exc


def classify_store_error(exc: BaseException, url: str) -> StoreError | None:
    """The :class:`StoreError` that ``exc`` (or an error it was raised from) amounts to.

    Knows what the standard library, aiohttp, google-auth and gcsfs raise; returns ``None``
    for anything else. gcsfs reports HTTP 403 as ``OSError("Forbidden: ...")``, 401 and
    exhausted 5xx retries as ``gcsfs.retry.HttpError``, 404 as ``FileNotFoundError``, and
    lets aiohttp's connection errors through once its retries are spent.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        classified = _classify_one(error, url)
        if classified is not None:
            return classified
        error = error.__cause__ or error.__context__
    return None


def _classify_one(exc: BaseException, url: str) -> StoreError | None:
    if isinstance(exc, StoreError):
        return exc
    is_gcs = url.lower().startswith(("gs://", "gcs://"))
    # The types of optional libraries can only be raised once they are imported, so look
    # them up without importing anything.
    gcsfs_retry = sys.modules.get("gcsfs.retry")
    aiohttp = sys.modules.get("aiohttp")
    google_auth_exceptions = sys.modules.get("google.auth.exceptions")
    requests_exceptions = sys.modules.get("requests.exceptions")
    fsspec_exceptions = sys.modules.get("fsspec.exceptions")

    if google_auth_exceptions is not None:
        if isinstance(exc, google_auth_exceptions.DefaultCredentialsError):
            return StorePermissionDenied(
                url, f"no Google credentials found for writing; {_GCS_CREDENTIALS_HINT}"
            )
        if isinstance(exc, google_auth_exceptions.RefreshError):
            return StorePermissionDenied(
                url, f"the Google credentials were refused ({exc}); {_GCS_CREDENTIALS_HINT}"
            )
    if gcsfs_retry is not None and isinstance(exc, gcsfs_retry.HttpError):
        if exc.code in (401, 403):
            return StorePermissionDenied(
                url, f"permission denied (HTTP {exc.code}); {_GCS_CREDENTIALS_HINT}"
            )
        if exc.code in (408, 429) or (isinstance(exc.code, int) and exc.code >= 500):
            return StoreUnreachable(
                url,
                f"the storage service kept failing (HTTP {exc.code}) through gcsfs's retries; "
                "try again later",
            )
        return None
    if isinstance(exc, PermissionError) or (
        is_gcs and isinstance(exc, OSError) and str(exc).startswith("Forbidden")
    ):
        hint = _GCS_CREDENTIALS_HINT if is_gcs else "check the permissions or choose another path"
        return StorePermissionDenied(url, f"permission denied; {hint}")
    if isinstance(exc, FileNotFoundError):
        detail = str(exc) or "no such file or object"
        return StoreNotFound(url, f"not found ({detail}); check the path")
    if isinstance(exc, NotADirectoryError):
        return StoreNotFound(url, f"{_file_in_the_way(exc.filename)}; choose another path")
    if isinstance(exc, IsADirectoryError):
        where = f" ({exc.filename})" if exc.filename else ""
        return StoreNotFound(url, f"a directory is where a file should be{where}; check the path")

    unreachable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, socket.gaierror)
    if aiohttp is not None:
        unreachable += (aiohttp.ClientConnectionError,)
    if requests_exceptions is not None:
        unreachable += (requests_exceptions.ConnectionError, requests_exceptions.Timeout)
    if fsspec_exceptions is not None:
        unreachable += (fsspec_exceptions.FSTimeoutError,)
    if isinstance(exc, unreachable):
        where = os.environ.get("STORAGE_EMULATOR_HOST") or "the storage endpoint"
        return StoreUnreachable(
            url,
            f"cannot reach {where} ({type(exc).__name__}: {exc}); check the network"
            + (" or STORAGE_EMULATOR_HOST" if is_gcs else ""),
        )
    return None


def _file_in_the_way(path: str | None) -> str:
    """``"/data/x is a file, not a directory"``: the file that a path runs into."""
    if path:
        for parent in Path(path).parents:
            if parent.is_file():
                return f"{parent} is a file, not a directory"
    return "a part of the path is a file, not a directory"


def gcs_token(mode: Mode, token: Any = None) -> Any:
    """The gcsfs ``token`` to use: ``token`` if given, else by mode and emulator.

    Examples
    --------
    >>> gcs_token("r")
    'anon'
    >>> gcs_token("w", "/keys/writer.json")
    '/keys/writer.json'
    """
    if token is not None:
        return token
    if mode == "r" or os.environ.get("STORAGE_EMULATOR_HOST"):
        return "anon"
    return "google_default"


def normalize_location(url_or_path: str | os.PathLike) -> str:
    """The one spelling of a store's location, by which two locations are compared.

    Every check and every removal goes through :func:`_split_url`, which this spells out,
    so that what is compared is what is removed: the scheme's case and ``gcs://`` do not
    matter, ``~`` is expanded, ``file://`` dropped, local paths made absolute with every
    symbolic link resolved, and repeated or trailing slashes collapsed.

    Returns
    -------
    str
        A local path (``/data/era5.zarr``), ``gs://bucket/path`` or ``memory://path``.

    Examples
    --------
    >>> normalize_location("GCS://bucket//era5.zarr/")
    'gs://bucket/era5.zarr'
    >>> here = os.path.realpath(".")
    >>> normalize_location(f"FILE://{here}//a.zarr/") == f"{here}/a.zarr"
    True
    >>> normalize_location("./a.zarr") == f"{here}/a.zarr"
    True
    """
    protocol, path = _split_url(os.fspath(url_or_path))
    if protocol == "file":
        return path
    return f"{protocol}://{path.lstrip('/')}"


def locations_overlap(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether the stores at ``a`` and ``b`` are the same or one lies inside the other.

    Compares :func:`normalize_location`; local paths are also compared by device and inode
    along their existing ancestors, which catches bind mounts and hard-linked directories.

    Examples
    --------
    >>> locations_overlap("gs://b/era5.zarr", "GS://b//era5.zarr/t2m")
    True
    >>> locations_overlap("gs://b/era5.zarr", "gs://b/era5.zarr-lq")
    False
    """
    (pa, a_path), (pb, b_path) = _split_url(os.fspath(a)), _split_url(os.fspath(b))
    if pa != pb:
        return False
    a_dir, b_dir = a_path.rstrip("/") + "/", b_path.rstrip("/") + "/"
    if a_dir.startswith(b_dir) or b_dir.startswith(a_dir):
        return True
    if pa == "file":
        return _same_file_on_path(a_path, b_path) or _same_file_on_path(b_path, a_path)
    return False


def _same_file_on_path(path: str, other: str) -> bool:
    """Whether ``other`` (if it exists) is ``path`` or one of its existing ancestors."""
    try:
        target = os.stat(other)
    except OSError:
        return False
    current = Path(path)
    for candidate in (current, *current.parents):
        try:
            found = os.stat(candidate)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def _split_url(url: str) -> tuple[str, str]:
    """``(protocol, path)``: ``"file"`` with an absolute local path whose symbolic links are
    resolved, or ``"memory"``/``"gs"`` with the path after ``://`` (the bucket first for
    ``gs``), repeated and trailing slashes removed. See :func:`normalize_location`."""
    if "://" not in url:
        return "file", os.path.realpath(os.path.expanduser(url))
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        return "file", os.path.realpath(os.path.expanduser(rest))
    # gcsfs itself collapses "//" inside a path, so "gs://b//x.zarr" writes into gs://b/x.zarr.
    rest = "/".join(part for part in rest.split("/") if part)
    if scheme in ("gs", "gcs"):
        if not rest:
            raise StoreURLError(url, "no bucket named; write gs://BUCKET/PATH")
        return "gs", rest
    if scheme == "memory":
        return "memory", "/" + rest
    raise StoreURLError(
        url,
        f"unsupported scheme {scheme!r}; use a local path, file://, memory:// or gs:// "
        "(copy the store to one of those first)",
    )


def _filesystem(protocol: str, mode: Mode, token: Any, *, asynchronous: bool = False):
    """A fresh fsspec filesystem: never fsspec's cached instance, whose listings may be stale
    after another process wrote, and no listings cache of its own for the same reason."""
    if protocol == "file":
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()
    if protocol == "memory":
        from fsspec.implementations.memory import MemoryFileSystem

        return MemoryFileSystem()
    import aiohttp

    # The plain JSON-API filesystem, not the experimental class that `import gcsfs` picks
    # unless GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: that one asks a gRPC endpoint for every
    # new bucket's layout (a 60 s wait against an emulator) and, for anonymous readers who
    # may not see the layout, asks again on every read since it does not cache the failure.
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(
        token=gcs_token(mode, token),
        endpoint_url=os.environ.get("STORAGE_EMULATOR_HOST") or None,
        requests_timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=SOCKET_CONNECT_TIMEOUT, sock_read=SOCKET_READ_TIMEOUT
        ),
        asynchronous=asynchronous,
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def _fsspec_store(protocol: str, path: str, mode: Mode, token: Any, read_only: bool) -> Store:
    import zarr.storage

    if protocol == "memory":
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        fs = AsyncFileSystemWrapper(_filesystem(protocol, mode, token), asynchronous=True)
    else:
        fs = _filesystem(protocol, mode, token, asynchronous=True)
    return zarr.storage.FsspecStore(fs, path=path, read_only=read_only)


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        fs.info(path)
    except FileNotFoundError:
        return False
    return True


def _has_zarr_metadata(
    fs: fsspec.AbstractFileSystem, path: str, markers: tuple[str, ...] = ()
) -> bool:
    # fsspec's exists() turns every error into False, which would report a permission
    # problem as a missing store; info() lets it through.
    for key in (*ZARR_METADATA_KEYS, *markers):
        try:
            fs.info(f"{path.rstrip('/')}/{key}")
        except FileNotFoundError:
            continue
        return True
    return False


def _check_zarr_metadata(fs: fsspec.AbstractFileSystem, url: str, path: str) -> None:
    if _has_zarr_metadata(fs, path):
        return
    if path.startswith("/"):  # memory://
        raise StoreNotFound(url, _no_zarr_reason())
    _check_bucket(fs, url, path)
    raise StoreNotFound(url, _no_zarr_reason())


def _check_bucket(fs: fsspec.AbstractFileSystem, url: str, path: str) -> None:
    bucket = path.split("/", 1)[0]
    try:
        # One object listing: public readers may list objects but not read bucket metadata.
        fs.call("GET", "b/{}/o", bucket, maxResults=1, json_out=True)
    except FileNotFoundError:
        raise StoreNotFound(
            url,
            f"bucket {bucket!r} does not exist; check its name "
            f"(a new one: gcloud storage buckets create gs://{bucket})",
        ) from None


def _no_zarr_reason() -> str:
    return f"no Zarr store there (no {', '.join(ZARR_METADATA_KEYS)}); check the path"


#: Leading bytes and name endings of the files users mistake for stores, with how to convert.
_OTHER_FORMATS = (
    ("a netCDF file", (b"CDF\x01", b"CDF\x02", b"CDF\x05"), (".nc", ".nc3", ".cdf"), ""),
    ("a HDF5 or netCDF4 file", (b"\x89HDF\r\n\x1a\n",), (".nc4", ".h5", ".hdf5"), ""),
    ("a GRIB file", (b"GRIB",), (".grib", ".grib2", ".grb", ".grb2"), ", engine='cfgrib'"),
)


def local_file_reason(url_or_path: str | os.PathLike) -> str | None:
    """Why a local file is no Zarr store (see :func:`open_store`), None if it is no file.

    >>> local_file_reason("/")
    """
    url = os.fspath(url_or_path)
    try:
        protocol, path = _split_url(url)
    except StoreURLError:
        return None
    if protocol != "file" or not os.path.isfile(path):
        return None
    return _not_zarr_file_reason(url, path)


def _not_zarr_file_reason(url: str, path: str) -> str:
    """Why the file at ``path`` is no store: its format if it is a netCDF, HDF5 or GRIB
    file (with the xarray call that converts it), else that a Zarr store is a directory."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError:
        head = b""
    name = os.path.basename(path.rstrip("/")) or "x"
    for kind, magics, suffixes, engine in _OTHER_FORMATS:
        if head.startswith(magics) or name.lower().endswith(suffixes):
            target = os.path.splitext(name)[0] + ".zarr"
            return (
                f"it is {kind}, and lq reads Zarr stores only; convert it with "
                f"xr.open_dataset({url!r}{engine}).to_zarr({target!r}) and pass that"
            )
    return "it is a file, not a Zarr store (a directory); check the path"


def _check_local(url: str, path: str, *, must_exist: bool, writable: bool) -> None:
    if must_exist:
        if not os.path.exists(path):
            raise StoreNotFound(url, "no such file or directory; check the path")
        if os.path.isfile(path):
            raise StoreNotFound(url, _not_zarr_file_reason(url, path))
        if not any(os.path.exists(os.path.join(path, key)) for key in ZARR_METADATA_KEYS):
            raise StoreNotFound(url, _no_zarr_reason())
    # The nearest existing ancestor decides whether the store can be created or written.
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    access = os.R_OK | (os.W_OK if writable else 0)
    if not os.access(existing, access):
        raise StorePermissionDenied(
            url, f"permission denied on {existing}; check the permissions or choose another path"
        )
