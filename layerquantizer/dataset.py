"""Compress, verify and inspect whole Zarr datasets: the Python API behind ``lq``.

The same steps as the command line (``lq sample sample.zarr && lq compress sample.zarr
out.zarr --vars temperature,geopotential && lq verify sample.zarr out.zarr``)::

    from layerquantizer import dataset

    dataset.write_sample("sample.zarr", levels=13, grid=(121, 240), times=4)
    report = dataset.compress(
        "sample.zarr", "out.zarr", variables=["temperature", "geopotential"], nbits=16
    )
    print(report.store.total_ratio)
    assert dataset.verify("sample.zarr", "out.zarr").ok
    print(dataset.inspect("out.zarr").to_dict()["total"])

:func:`compress` runs in these steps:

1. :func:`open_dataset` opens the source lazily and read-only (``gs://`` anonymously
   unless a ``token`` is given; see :mod:`layerquantizer.storage`);
2. :func:`plan_compress` selects and subsets the variables, chooses the output chunks,
   builds the encodings and a lazy template, and lists the write units (whole output
   chunks, never cutting a source chunk);
3. :func:`write_plan` records the plan in DST's progress folder, writes the metadata from
   the template (``to_zarr(compute=False)``), then runs every unit on threads, a local
   cluster or a dask scheduler (:mod:`layerquantizer.parallel`; the unit itself is
   :func:`layerquantizer._unit.run_unit`), marking each one done, and finally writes the
   consolidated metadata and removes the progress folder (:mod:`layerquantizer.resume`);
   a failure is re-raised as :class:`ChunkWriteError` naming the variable and the chunk.

With ``resume=True`` step 3 skips the units marked done by an interrupted run.

This module imports xarray, dask, zarr and fsspec; ``import layerquantizer`` does not
import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import time as _time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from layerquantizer.config import Config

__all__ = [
    "ChunkTask",
    "ChunkWriteError",
    "CompressReport",
    "DEFAULT_NBITS",
    "DatasetError",
    "DestinationExistsError",
    "LevelStats",
    "Plan",
    "RequestError",
    "ResumeMismatchError",
    "SourceError",
    "StoreReport",
    "ArrayReport",
    "VariableCheck",
    "VerifyReport",
    "WriteResult",
    "compress",
    "full_scale_bound",
    "inspect",
    "open_dataset",
    "parse_chunks",
    "parse_levels",
    "parse_time_range",
    "parse_variables",
    "plan_compress",
    "select_subset",
    "verify",
    "write_plan",
    "write_sample",
]

#: Bits per value when neither the caller nor the config says.
DEFAULT_NBITS = 16
#: Attribute names written on every quantized variable.
ATTR_CODEC = "layerquantizer_codec"
ATTR_NBITS = "layerquantizer_nbits"
ATTR_BOUND = "layerquantizer_error_bound"
_ATTR_PREFIX = "layerquantizer_"
#: Pairs of dimension names recognised as the horizontal grid, in (y, x) order.
GRID_DIMS: tuple[tuple[str, str], ...] = (
    ("latitude", "longitude"),
    ("lat", "lon"),
    ("y", "x"),
    ("rlat", "rlon"),
)
_LQ_CODEC_IDS = ("layerquantizer1", "layerquantizer", "layerquantizer0.3b")
# Codecs that give back every bit; anything else without a LayerQuantizer codec has an
# unknown error bound.
_LOSSLESS_CODECS = frozenset(
    {"blosc", "zstd", "lz4", "zlib", "gzip", "bz2", "lzma", "crc32c", "bytes", "transpose",
     "shuffle", "delta", "vlen-utf8", "vlen-bytes", "vlen-array", "sharding_indexed", "lzf",
     "zfpy-lossless", "categorize", "json2", "msgpack2", "pickle", "fletcher32", "adler32",
     "crc32", "packbits", "pcodec"}
)  # fmt: skip
#: Largest region one task reads and writes when grouping output chunks (see Plan.tasks).
MAX_UNIT_BYTES = 1 << 30
_CONSOLIDATED_WARNING = r"(?s).*[Cc]onsolidated metadata"


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


# --------------------------------------------------------------------------------------
# Parsing of command-line style arguments (pure, tested on their own)


def parse_variables(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; duplicates and empty names are errors.

    >>> parse_variables("temperature,geopotential")
    ['temperature', 'geopotential']
    """
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not name for name in names):
        raise RequestError(f"expected comma-separated variable names, got {text!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RequestError(f"variable listed twice: {', '.join(duplicates)}")
    return names


def _parses_as_time(text: str) -> bool:
    if not text:
        return True
    try:
        np.datetime64(text)
    except ValueError:
        return False
    return True


def parse_time_range(text: str) -> tuple[str | None, str | None]:
    """``"START:END"`` -> ``(START, END)``, both inclusive and either one may be empty.

    Dates may hold colons themselves (``2020-01-01T06:00``), so the split is the colon
    that leaves a valid date on both sides; ``START..END`` is accepted as well.

    >>> parse_time_range("2020-01-01T06:00:2020-01-02")
    ('2020-01-01T06:00', '2020-01-02')
    >>> parse_time_range("2020-01-03:")
    ('2020-01-03', None)
    """
    text = text.strip()
    if ".." in text:
        candidates = [tuple(text.split("..", 1))]
    else:
        candidates = [(text[:i], text[i + 1 :]) for i, char in enumerate(text) if char == ":"]
    for start, end in candidates:
        start, end = start.strip(), end.strip()
        if _parses_as_time(start) and _parses_as_time(end) and (start or end):
            if start and end and np.datetime64(start) > np.datetime64(end):
                raise RequestError(f"time range {text!r} ends before it starts")
            return (start or None, end or None)
    raise RequestError(
        f"expected a time range START:END of ISO dates (either may be empty), got {text!r}"
    )


def parse_levels(text: str) -> tuple[float, ...]:
    """``"500,850"`` -> ``(500, 850)``; integers stay integers.

    >>> parse_levels("500, 850")
    (500, 850)
    """
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            values.append(int(part))
        except ValueError:
            try:
                values.append(float(part))
            except ValueError:
                raise RequestError(
                    f"expected comma-separated pressure levels such as 500,850, got {text!r}"
                ) from None
    return tuple(values)


def parse_chunks(text: str) -> dict[str, int]:
    """``"time=1,level=-1"`` -> ``{"time": 1, "level": -1}`` (-1: the whole dimension).

    >>> parse_chunks("time=4, latitude=-1")
    {'time': 4, 'latitude': -1}
    """
    chunks: dict[str, int] = {}
    for part in text.split(","):
        dim, sep, size = part.partition("=")
        dim = dim.strip()
        try:
            value = int(size)
        except ValueError:
            value = 0
        if not sep or not dim or value == 0 or value < -1:
            raise RequestError(
                f"expected DIM=SIZE pairs such as time=1,level=37 (SIZE a positive integer "
                f"or -1 for the whole dimension), got {text!r}"
            )
        chunks[dim] = value
    return chunks


def full_scale_bound(nbits: int) -> float:
    """Largest error over a layer's ``max - min`` that the codec allows, ulp aside.

    >>> f"{full_scale_bound(16):.3g}"
    '7.63e-06'
    """
    return 0.5 / (2**nbits - 1)


# --------------------------------------------------------------------------------------
# Stores


def _is_url(location: str) -> bool:
    return "://" in location


def _local_path(location: str) -> str | None:
    """The local path of ``location`` (a plain path or a file:// URL), None for others."""
    if location.startswith("file://"):
        return location[len("file://") :]
    return None if _is_url(location) else location


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


def _same_or_nested(a: str, b: str) -> bool:
    pa, pb = _local_path(a), _local_path(b)
    if pa is not None and pb is not None:
        a, b = os.path.realpath(pa), os.path.realpath(pb)
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


@contextlib.contextmanager
def _quiet_consolidated():
    # Consolidated metadata is what makes a store of hundreds of arrays open in one read;
    # zarr warns that it is not in the v3 spec yet, which we know and accept.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING, category=RuntimeWarning)
        # The progress folder of an unfinished run (resume.py) is no Zarr node, on purpose.
        warnings.filterwarnings(
            "ignore", message=r"Object at \.lq-progress is not recognized", category=UserWarning
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --------------------------------------------------------------------------------------
# Planning


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """A region of one variable to write: one or more whole Zarr chunks.

    ``index`` is the chunk-grid index of its first chunk and ``chunks`` how many it holds.
    """

    variable: str
    index: tuple[int, ...]
    region: Mapping[str, slice]
    nbytes: int
    chunks: int = 1


@dataclasses.dataclass
class Plan:
    """Everything :func:`write_plan` needs; built by :func:`plan_compress`, touches no store.

    Attributes
    ----------
    source : xarray.Dataset
        The selected, subset source: lazily indexed, not dask, coordinates loaded.
    template : xarray.Dataset
        The same with every data variable as a dask array chunked like the output.
    encoding : dict
        The explicit Zarr encoding of every data variable (source encodings are dropped).
    quantized : dict
        Variable -> nbits of the variables LayerQuantizer encodes.
    copied, dropped, skipped : tuple of str
        Data variables copied losslessly, left out on purpose, and named in the config
        but missing from the source (with ``on_missing: skip``).
    chunks : dict
        Output chunk size per dimension.
    source_chunk_ids : dict
        Variable -> dim -> the source chunk each position along ``dim`` comes from (only
        for variables whose source chunking is known); see :meth:`tasks`.
    source_positions : dict
        Dim -> the position in the source of each kept position along it.
    raw_read : frozenset of str
        Variables whose stored values need no CF decoding (no scale, offset or masked fill
        value), so that workers may read them from Zarr directly.
    location, token
        Where the source is and its credentials, for workers to open it again.
    """

    source: xr.Dataset
    template: xr.Dataset
    encoding: dict[str, dict]
    quantized: dict[str, int]
    copied: tuple[str, ...]
    dropped: tuple[str, ...]
    skipped: tuple[str, ...]
    chunks: dict[str, int]
    zarr_format: int
    source_chunk_ids: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    source_positions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    raw_read: frozenset[str] = frozenset()
    location: str | None = None
    token: Any = None

    def variable_chunks(self, name: str) -> tuple[int, ...]:
        return tuple(self.chunks[dim] for dim in self.source[name].dims)

    def _units(self, name: str) -> list[list[tuple[int, int]]]:
        """Per dim of ``name``: the (start, stop) of each write unit, in whole output chunks.

        A unit is cut only where a source chunk also ends, so each source chunk is read
        and decoded once even when the output chunks are smaller; if that makes a unit
        larger than :data:`MAX_UNIT_BYTES`, every output chunk is its own unit.
        """
        var = self.source[name]
        out = self.variable_chunks(name)
        plain = [
            [(start, min(start + c, n)) for start in range(0, n, c)]
            for n, c in zip(var.shape, out, strict=True)
        ]
        ids = self.source_chunk_ids.get(name)
        if not ids:
            return plain
        grouped = []
        for dim, edges in zip(var.dims, plain, strict=True):
            source_chunk = ids[dim]
            units, start = [], 0
            for _, stop in edges:
                if stop == source_chunk.size or source_chunk[stop - 1] != source_chunk[stop]:
                    units.append((start, stop))
                    start = stop
            grouped.append(units)
        largest = math.prod(max(b - a for a, b in units) for units in grouped)
        return grouped if largest * var.dtype.itemsize <= MAX_UNIT_BYTES else plain

    def tasks(self, variables: Sequence[str] | None = None) -> Iterator[ChunkTask]:
        """Every write unit, variable by variable, in C order of the chunk grid."""
        for name in variables if variables is not None else self.source.data_vars:
            var = self.source[name]
            out = self.variable_chunks(name)
            units = self._units(str(name))
            itemsize = var.dtype.itemsize
            for picks in itertools.product(*units):
                region = {dim: slice(a, b) for dim, (a, b) in zip(var.dims, picks, strict=True)}
                index = tuple(a // c for (a, _), c in zip(picks, out, strict=True))
                count = math.prod(
                    math.ceil((b - a) / c) for (a, b), c in zip(picks, out, strict=True)
                )
                size = math.prod(b - a for a, b in picks) * itemsize
                yield ChunkTask(str(name), index, region, size, count)

    @property
    def total_chunks(self) -> int:
        return sum(
            math.prod(
                math.ceil(n / c)
                for n, c in zip(self.source[name].shape, self.variable_chunks(name), strict=True)
            )
            for name in self.source.data_vars
        )

    @property
    def total_bytes(self) -> int:
        return sum(int(self.source[name].nbytes) for name in self.source.data_vars)


def grid_dims(ds: xr.Dataset) -> tuple[str, str] | None:
    """The (y, x) horizontal dimensions of ``ds``, if it uses one of :data:`GRID_DIMS`."""
    for pair in GRID_DIMS:
        if all(dim in ds.dims for dim in pair):
            return pair
    return None


def select_subset(
    ds: xr.Dataset,
    time: tuple[str | None, str | None] | None = None,
    levels: Sequence[float] | None = None,
) -> xr.Dataset:
    """Select a time range (inclusive labels) and a list of levels.

    Raises
    ------
    RequestError
        If the dataset has no such dimension or the selection is empty or incomplete.
    """
    if time is not None:
        if "time" not in ds.dims:
            raise RequestError("cannot select a time range: the source has no 'time' dimension")
        start, end = time
        try:
            subset = ds.sel(time=slice(start, end))
        except (TypeError, ValueError, KeyError) as exc:
            raise RequestError(f"cannot select time {start}:{end}: {_one_line(exc)}") from exc
        if subset.sizes["time"] == 0:
            times = ds["time"].values
            raise RequestError(
                f"time range {start or ''}:{end or ''} selects no time step; the source has "
                f"{times.size} from {times[0]} to {times[-1]}"
                if times.size
                else "the source has no time steps"
            )
        ds = subset
    if levels is not None:
        if "level" not in ds.dims:
            raise RequestError("cannot select levels: the source has no 'level' dimension")
        available = ds["level"].values
        missing = [lev for lev in levels if not np.isin(lev, available)]
        if missing:
            raise RequestError(
                f"level(s) {', '.join(map(str, missing))} not in the source; available: "
                f"{', '.join(str(v) for v in available.tolist())}"
            )
        ds = ds.sel(level=list(levels))
    return ds


def _build_codec(nbits: int, zarr_format: int) -> dict[str, Any]:
    """The xarray encoding entries that make Zarr write ``name`` with LayerQuantizer."""
    if zarr_format == 2:
        from layerquantizer.codec import LayerQuantizer

        return {"compressors": (LayerQuantizer(nbits=nbits),), "filters": None}
    from layerquantizer.zarr3 import LayerQuantizerCodec

    return {"serializer": LayerQuantizerCodec(nbits=nbits), "compressors": None, "filters": None}


def _codec_name(zarr_format: int) -> str:
    return "layerquantizer1" if zarr_format == 2 else "layerquantizer"


def plan_compress(
    ds: xr.Dataset,
    *,
    variables: Sequence[str] | None = None,
    config: Config | None = None,
    nbits: int | None = None,
    time: tuple[str | None, str | None] | None = None,
    levels: Sequence[float] | None = None,
    chunks: Mapping[str, int] | None = None,
    zarr_format: int | None = None,
) -> Plan:
    """Decide what :func:`write_plan` writes; arguments override the config.

    Parameters
    ----------
    ds : xarray.Dataset
        The source, as :func:`open_dataset` returns it.
    variables : sequence of str, optional
        Variables to quantize; default: the config's ``variables``.
    config : Config, optional
        See :mod:`layerquantizer.config`.
    nbits : int, optional
        Bits for every quantized variable; default: per variable from the config, else 16.
    time : (start, end), optional
        Inclusive time labels; either may be None.
    levels : sequence of float, optional
        Levels to keep.
    chunks : mapping, optional
        Output chunk size per dimension (-1: whole). Default: 1 along ``time``, the whole
        extent along every other dimension, so that each chunk-layer holds a full
        level's grid and the error bound is relative to the whole level's range.
    zarr_format : {2, 3}, optional
        Default: the config's, else 2.

    Raises
    ------
    RequestError
        On an unknown variable, a variable the codec cannot take, a bad subset or chunks.
    """
    config = config if config is not None else Config()
    from_config = variables is None
    wanted = list(config.variables) if from_config else list(variables)
    if not wanted:
        candidates = [
            str(name) for name, var in ds.data_vars.items()
            if var.dtype == np.float32 and var.ndim >= 2
        ]  # fmt: skip
        raise RequestError(
            "no variables to quantize: name them with --vars or in a config's 'variables'; "
            f"float32 candidates: {', '.join(candidates) or 'none'}"
        )
    available = [str(name) for name in ds.data_vars]
    quantize: list[str] = []
    skipped: list[str] = []
    for name in wanted:
        if name in ds.data_vars:
            quantize.append(name)
        elif from_config and config.on_missing == "skip":
            skipped.append(name)
        else:
            where = f" (from {config.source})" if from_config else ""
            kind = " is a coordinate, not a data variable" if name in ds.coords else " not found"
            raise RequestError(f"variable {name!r}{where}{kind}; available: {', '.join(available)}")

    zarr_format = zarr_format if zarr_format is not None else (config.zarr_format or 2)
    if zarr_format not in (2, 3):
        raise RequestError(f"zarr format must be 2 or 3, got {zarr_format!r}")

    time = (
        time
        if time is not None
        else (parse_time_range(config.time) if config.time is not None else None)
    )
    levels = levels if levels is not None else config.levels
    # Where each kept position lies in the source, to align the writes with its chunks.
    positions = {f"_lq_position_{dim}": (dim, np.arange(size)) for dim, size in ds.sizes.items()}
    ds = select_subset(ds.assign_coords(positions), time=time, levels=levels)
    source_positions = {str(dim): ds[f"_lq_position_{dim}"].values for dim in ds.dims}
    ds = ds.drop_vars(list(positions))

    grid = grid_dims(ds)
    quantized: dict[str, int] = {}
    for name in quantize:
        var = ds[name]
        if var.dtype != np.float32:
            raise RequestError(
                f"cannot quantize {name!r}: its dtype is {var.dtype}, and the layerquantizer "
                "codec encodes float32 only; leave it out to copy it losslessly"
            )
        if var.ndim < 2 or (grid is not None and var.dims[-2:] != grid):
            expected = f"({', '.join(grid)})" if grid else "a 2-D grid"
            raise RequestError(
                f"cannot quantize {name!r} with dims ({', '.join(map(str, var.dims))}): the "
                f"codec quantizes 2-D layers over the last two dims, which must be {expected}"
            )
        bits = nbits if nbits is not None else (config.nbits_for(name) or DEFAULT_NBITS)
        try:
            _build_codec(bits, zarr_format)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"{name}: {exc}") from exc
        quantized[name] = bits

    dropped = tuple(name for name in config.drop if name in ds.data_vars and name not in quantized)
    copied = tuple(name for name in available if name not in quantized and name not in dropped)
    raw_read = frozenset(name for name in (*quantized, *copied) if _reads_raw(ds[name]))
    location, token = ds.encoding.get("lq_location"), ds.encoding.get("lq_token")
    source_chunk_ids = {}
    for name in (*quantized, *copied):
        source_chunks = ds[name].encoding.get("chunks")
        if source_chunks is not None and len(source_chunks) == ds[name].ndim:
            source_chunk_ids[name] = {
                str(dim): source_positions[str(dim)] // size
                for dim, size in zip(ds[name].dims, source_chunks, strict=True)
            }
    # A shallow copy has its own attribute dicts: the caller's dataset stays as it was.
    ds = ds[[*quantized, *copied]].copy(deep=False).drop_encoding()
    # A source written by lq records its codec in attributes; they are ours to rewrite.
    for name in ds.variables:
        ds[name].attrs = {
            k: v for k, v in ds[name].attrs.items() if not str(k).startswith(_ATTR_PREFIX)
        }

    sizes = dict(ds.sizes)
    for dim, size in sizes.items():
        if size == 0:
            raise RequestError(f"dimension {dim!r} is empty after subsetting")
    requested = {**config.chunks, **(chunks or {})}
    unknown = sorted(set(requested) - set(sizes))
    if unknown:
        raise RequestError(
            f"chunks name unknown dimension(s) {', '.join(unknown)}; dimensions: "
            f"{', '.join(map(str, sizes))}"
        )
    chosen: dict[str, int] = {}
    for dim, size in sizes.items():
        default = 1 if dim == "time" else -1
        value = requested.get(dim, default)
        chosen[str(dim)] = size if value == -1 else min(int(value), size)

    for name in ds.coords:  # small, and written once with the metadata
        ds[name].variable.load()
    encoding: dict[str, dict] = {}
    data_vars = {}
    for name in ds.data_vars:
        var = ds[name].variable
        var_chunks = tuple(chosen[dim] for dim in var.dims)
        encoding[name] = {"chunks": var_chunks}
        if name in quantized:
            bits = quantized[name]
            encoding[name].update(_build_codec(bits, zarr_format))
            var.attrs.update(
                {
                    ATTR_CODEC: _codec_name(zarr_format),
                    ATTR_NBITS: bits,
                    ATTR_BOUND: full_scale_bound(bits),
                }
            )
        # The template is never computed: its dask chunks equal the Zarr chunks, which is
        # what lets xarray check the layout and write the metadata alone.
        data_vars[name] = var.chunk(dict(zip(var.dims, var_chunks, strict=True)))
    template = xr.Dataset(data_vars, coords=ds.coords, attrs=ds.attrs)
    return Plan(
        source=ds,
        template=template,
        encoding=encoding,
        quantized=quantized,
        copied=copied,
        dropped=dropped,
        skipped=tuple(skipped),
        chunks=chosen,
        zarr_format=zarr_format,
        source_chunk_ids=source_chunk_ids,
        source_positions=source_positions,
        raw_read=raw_read,
        location=location,
        token=token,
    )


def _reads_raw(var: xr.DataArray) -> bool:
    """Whether the stored values of ``var`` are its values: xarray applied no CF decoding
    (scale, offset, masking of a fill value other than NaN, time units)."""
    encoding = var.encoding
    stored = encoding.get("dtype")
    if stored is None or np.dtype(stored) != var.dtype or var.dtype.kind not in "fiu":
        return False
    if any(key in encoding for key in ("scale_factor", "add_offset", "units", "calendar")):
        return False
    for key in ("_FillValue", "missing_value"):
        fill = encoding.get(key)
        if fill is not None and not (var.dtype.kind == "f" and np.isnan(fill)):
            return False
    return True


# --------------------------------------------------------------------------------------
# Writing


ProgressCallback = Callable[[int, int, int, int], None]
"""``progress(chunks_done, chunks_total, bytes_done, bytes_total)``, called as units finish."""


def _describe_region(region: Mapping[str, slice], labels: Mapping[str, np.ndarray]) -> str:
    parts = []
    for dim, where in region.items():
        values = labels.get(dim)
        if values is not None and where.stop - where.start < values.size:
            first, last = values[where.start], values[where.stop - 1]
            parts.append(f"{dim}={first}" if first == last else f"{dim}={first}..{last}")
        elif values is None:
            parts.append(f"{dim}[{where.start}:{where.stop}]")
    return ", ".join(parts) or "the whole array"


@contextlib.contextmanager
def _single_threaded_blosc():
    # Dask already runs one task per core; Blosc's own thread pool would oversubscribe.
    import numcodecs.blosc

    previous = numcodecs.blosc.set_nthreads(1)
    try:
        yield
    finally:
        numcodecs.blosc.set_nthreads(previous)


def _source_selection(positions: Mapping[str, np.ndarray], region: Mapping[str, slice]):
    """The unit's region in the source's own positions: slices where the kept positions
    are consecutive (time ranges), index arrays where they are not (a list of levels)."""
    selection = []
    for dim, where in region.items():
        picked = positions[dim][where]
        if picked.size and np.array_equal(picked, np.arange(picked[0], picked[0] + picked.size)):
            selection.append(slice(int(picked[0]), int(picked[0]) + picked.size))
        else:
            selection.append(picked)
    return tuple(selection)


@dataclasses.dataclass
class WriteResult:
    """What :func:`write_plan` did: units and bytes written now, and those found written
    by an earlier, interrupted run."""

    units: int
    units_skipped: int
    chunks_written: int
    bytes_written: int
    bytes_skipped: int
    runner: str
    pids: frozenset[int]


def write_plan(
    plan: Plan,
    dst: str,
    *,
    token: Any = None,
    storage_options: Mapping | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> WriteResult:
    """Write ``plan`` to ``dst``: metadata, then every unit on the chosen scheduler, then the
    consolidated metadata; resumable at every step (see :mod:`layerquantizer.resume`).

    ``dst`` must be new, or (``resume=True``) hold the progress of a run of the same plan;
    :func:`compress` checks which. ``scheduler`` and ``workers`` choose where the units run
    (see :func:`layerquantizer.parallel.open_runner`): by default one thread per core here,
    ``workers=N`` a local cluster of N processes, ``scheduler="tcp://HOST:PORT"`` an
    existing dask cluster.
    """
    import zarr

    from layerquantizer import parallel
    from layerquantizer._unit import UnitJob
    from layerquantizer.resume import PROGRESS_DIR, Progress, describe_plan, differences
    from layerquantizer.storage import open_store, remove_store, store_errors

    if plan.location is None:
        raise RequestError(
            "the plan's source was not opened with open_dataset(), so workers cannot read it"
        )
    token = _token(token, storage_options)
    if scheduler not in (None, "threads", "synchronous") or workers is not None:
        if dst.startswith("memory://") or plan.location.startswith("memory://"):
            raise RequestError(
                "memory:// stores live in one process; with --workers or --scheduler use a "
                "path or a gs:// URL"
            )
    description = describe_plan(plan, plan.location)
    state = Progress(dst, token)
    with store_errors(dst):
        manifest = state.manifest() if resume else None
        if manifest is not None:
            found = differences(manifest.get("description", {}), description)
            if found:
                raise ResumeMismatchError(
                    f"{dst} holds an interrupted run with other options ("
                    f"{'; '.join(found[:4])}{'; ...' if len(found) > 4 else ''}); resume with "
                    "the same source and options, or pass --overwrite to start again"
                )
        if manifest is None or not state.marked("metadata"):
            # Nothing of this run's data is there yet: start from an empty destination.
            if resume:
                remove_store(dst, token=token, markers=(f"{PROGRESS_DIR}/manifest.json",))
            state.start(description)
            with _quiet_consolidated():
                plan.template.to_zarr(
                    open_store(dst, "w", token=token),
                    mode="a",
                    compute=False,
                    encoding=plan.encoding,
                    consolidated=False,
                    zarr_format=plan.zarr_format,
                )
            state.mark("metadata")
            done: set[str] = set()
        else:
            state.remove_partial_files()
            done = state.done_units()
            if state.marked("complete"):
                state.remove()
                return WriteResult(0, len(done), 0, 0, plan.total_bytes, "none", frozenset())

    labels = {
        str(dim): plan.source.indexes[dim].values
        for dim in plan.source.dims
        if dim in plan.source.indexes
    }
    total_chunks, total_bytes = plan.total_chunks, plan.total_bytes
    counts = {"chunks": 0, "bytes": 0, "units": 0, "skipped": 0, "skipped_bytes": 0}
    pids: set[int] = set()
    run = uuid.uuid4().hex

    def jobs() -> Iterator[UnitJob]:
        for task in plan.tasks():
            marker = Progress.marker_key(task.variable, task.index)
            if marker in done:
                counts["skipped"] += 1
                counts["skipped_bytes"] += task.nbytes
                _report(task.chunks, task.nbytes)
                continue
            yield UnitJob(
                run=run, src=plan.location, src_token=plan.token, dst=dst, dst_token=token,
                variable=task.variable, index=task.index,
                region=tuple(task.region.values()),
                source=_source_selection(plan.source_positions, task.region),
                raw_read=task.variable in plan.raw_read, marker=marker,
                nbytes=task.nbytes, chunks=task.chunks,
                label=_describe_region(task.region, labels),
            )  # fmt: skip

    def _report(chunks: int, nbytes: int) -> None:
        counts["chunks"] += chunks
        counts["bytes"] += nbytes
        if progress is not None:
            progress(counts["chunks"], total_chunks, counts["bytes"], total_bytes)

    def on_done(result) -> None:
        counts["units"] += 1
        pids.add(result.pid)
        _report(result.chunks, result.nbytes)

    if progress is not None:
        progress(0, total_chunks, 0, total_bytes)
    try:
        runner_context = parallel.open_runner(scheduler, workers)
        with _single_threaded_blosc(), runner_context as runner:
            parallel.run_jobs(jobs(), runner, on_done)
    except parallel.SchedulerError as exc:
        raise RequestError(str(exc)) from exc
    with store_errors(dst), _quiet_consolidated():
        zarr.consolidate_metadata(open_store(dst, "r+", token=token))
        state.mark("complete")
        state.remove()
    return WriteResult(
        units=counts["units"],
        units_skipped=counts["skipped"],
        chunks_written=counts["chunks"],
        bytes_written=counts["bytes"] - counts["skipped_bytes"],
        bytes_skipped=counts["skipped_bytes"],
        runner=runner.description,
        pids=frozenset(pids),
    )


def _destination_action(
    src: str | None, dst: str, token: Any, overwrite: bool, resume: bool
) -> str:
    """``"new"``, ``"resume"`` or ``"complete"``: what to do with ``dst``, after the checks
    (and the removal of an old ``dst`` for ``overwrite``)."""
    from layerquantizer.resume import PROGRESS_DIR, Progress
    from layerquantizer.storage import remove_store, store_errors, store_exists

    if overwrite and resume:
        raise RequestError("--overwrite and --resume exclude each other")
    if src is not None and _same_or_nested(src, dst):
        raise RequestError(f"destination {dst} is the source or inside it (or contains it)")
    with store_errors(dst):
        if not store_exists(dst, token=token):
            return "new"
        if overwrite:
            try:
                remove_store(dst, token=token, markers=(f"{PROGRESS_DIR}/manifest.json",))
            except ValueError as exc:
                raise DestinationExistsError(str(exc)) from exc
            return "new"
        if not resume:
            raise DestinationExistsError(
                f"destination {dst} already exists; pass --overwrite to replace it, or "
                "--resume to finish an interrupted run"
            )
        if Progress(dst, token).exists():
            return "resume"
        if _is_finished_lq_store(dst, token):
            return "complete"
        raise DestinationExistsError(
            f"{dst} is not an interrupted lq compress run (no {PROGRESS_DIR} inside, no "
            "layerquantizer attributes); nothing to resume: pass --overwrite to replace it, "
            "or choose another destination"
        )


def _is_finished_lq_store(dst: str, token: Any) -> bool:
    try:
        report = inspect(dst, token=token)
    except SourceError:
        return False
    return report.consolidated and any(
        ATTR_CODEC in array.attrs for array in report.variables.values()
    )


def _check_finished(plan: Plan, dst: str, token: Any) -> None:
    """Refuse to call a finished store complete when it was written with other options."""
    report = inspect(dst, token=token)
    problems = []
    for name in plan.source.data_vars:
        name = str(name)
        array = report.variables.get(name)
        if array is None:
            problems.append(f"{name} missing")
            continue
        if array.shape != tuple(plan.source[name].shape):
            problems.append(f"{name} shape {array.shape}")
        if array.chunks != plan.variable_chunks(name):
            problems.append(f"{name} chunks {array.chunks}")
        if array.nbits != plan.quantized.get(name):
            problems.append(f"{name} nbits {array.nbits}")
    extra = sorted(set(report.variables) - {str(n) for n in plan.source.data_vars})
    problems.extend(f"{name} not asked for" for name in extra)
    if problems:
        raise ResumeMismatchError(
            f"{dst} is a finished store written with other options ({'; '.join(problems[:4])}"
            f"{'; ...' if len(problems) > 4 else ''}); pass --overwrite to write it again"
        )


@dataclasses.dataclass
class CompressReport:
    """What :func:`compress` wrote: the destination's :class:`StoreReport` plus timing.

    ``bytes_written`` counts the logical bytes written by this call; with ``resume``,
    ``bytes_resumed`` those an interrupted run had written (``already_complete`` when it
    had finished and there was nothing left to do).
    """

    src: str
    dst: str
    store: StoreReport
    quantized: dict[str, int]
    copied: tuple[str, ...]
    dropped: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float
    bytes_written: int
    bytes_resumed: int = 0
    units_written: int = 0
    units_resumed: int = 0
    already_complete: bool = False
    runner: str = ""
    worker_pids: frozenset[int] = frozenset()

    @property
    def mib_per_s(self) -> float:
        return self.bytes_written / 2**20 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = self.store.to_dict()
        for name, entry in out["variables"].items():
            entry["quantized"] = name in self.quantized
        out.update(
            {
                "src": self.src,
                "dst": self.dst,
                "dropped": list(self.dropped),
                "skipped": list(self.skipped),
                "timing": {
                    "seconds": round(self.seconds, 3),
                    "logical_bytes": self.bytes_written,
                    "mib_per_s": round(self.mib_per_s, 2),
                },
                "resume": {
                    "already_complete": self.already_complete,
                    "units_written": self.units_written,
                    "units_resumed": self.units_resumed,
                    "logical_bytes_resumed": self.bytes_resumed,
                },
                "runner": self.runner,
            }
        )
        return out


def compress(
    src: str,
    dst: str,
    *,
    variables: Sequence[str] | None = None,
    config: Config | None = None,
    nbits: int | None = None,
    time: tuple[str | None, str | None] | None = None,
    levels: Sequence[float] | None = None,
    chunks: Mapping[str, int] | None = None,
    zarr_format: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    token: Any = None,
    storage_options: Mapping | None = None,
    dst_storage_options: Mapping | None = None,
    progress: ProgressCallback | None = None,
) -> CompressReport:
    """Copy the dataset at ``src`` to ``dst``, quantizing the chosen variables.

    The chosen variables are written with LayerQuantizer (Zarr v2: the ``layerquantizer1``
    compressor; v3: the ``layerquantizer`` serializer), every other data variable with
    Zarr's default lossless compressor; coordinates and attributes are kept, and each
    quantized variable records ``layerquantizer_codec``, ``layerquantizer_nbits`` and
    ``layerquantizer_error_bound`` (full scale) in its attributes. Metadata is consolidated.
    The source is only read. See :func:`plan_compress` for the selection arguments.

    Parameters
    ----------
    overwrite : bool
        Replace an existing ``dst``; otherwise an existing ``dst`` is an error.
    resume : bool
        Finish the interrupted run that ``dst`` holds: only units without a completion
        marker are written, and the result is the store an uninterrupted run writes. The
        options must describe the same plan (else :class:`ResumeMismatchError`). A
        finished ``dst`` is left as it is (``already_complete``); a missing one is written.
    workers : int, optional
        Start a local dask cluster of this many single-threaded worker processes.
    scheduler : str, optional
        ``"tcp://HOST:PORT"`` of a dask scheduler whose workers write the units, or
        ``"threads"`` (the default: one thread per core in this process),
        ``"synchronous"``, ``"processes"`` (see :mod:`layerquantizer.parallel`).
    token : optional
        gcsfs credentials (a service-account JSON file, ``"anon"``, ``"google_default"``,
        ``"cloud"``) for a ``gs://`` destination, and the source too when given. By
        default ``gs://`` sources are read anonymously and destinations written with the
        standard Google credentials.
    storage_options, dst_storage_options : mapping, optional
        ``{"token": ...}`` for the source and the destination (the older spelling).
    progress : callable, optional
        ``progress(chunks_done, chunks_total, bytes_done, bytes_total)``.

    Raises
    ------
    DestinationExistsError
        ``dst`` exists and neither ``overwrite`` nor ``resume`` is set, or it is not an
        ``lq compress`` output that ``resume`` could finish.
    ChunkWriteError
        A unit failed; the message names the variable and its coordinates.
    layerquantizer.storage.StoreError
        A bucket is missing, access is denied, or the storage endpoint does not answer.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=1)
    >>> report = compress(f"{tmp}/in.zarr", f"{tmp}/out.zarr", variables=["temperature"])
    >>> report.store.variables["temperature"].ratio > 1
    True
    """
    src_token = _token(token, storage_options)
    dst_token = _token(token, dst_storage_options, "dst_storage_options")
    action = _destination_action(src, dst, dst_token, overwrite, resume)
    ds = open_dataset(src, token=src_token)
    plan = plan_compress(
        ds, variables=variables, config=config, nbits=nbits, time=time, levels=levels,
        chunks=chunks, zarr_format=zarr_format,
    )  # fmt: skip
    started = _time.perf_counter()
    if action == "complete":
        _check_finished(plan, dst, dst_token)
        result = WriteResult(0, 0, 0, 0, plan.total_bytes, "none", frozenset())
    else:
        result = write_plan(
            plan, dst, token=dst_token, workers=workers, scheduler=scheduler,
            progress=progress, resume=action == "resume",
        )  # fmt: skip
    seconds = _time.perf_counter() - started
    return CompressReport(
        src=src,
        dst=dst,
        store=inspect(dst, token=dst_token),
        quantized=plan.quantized,
        copied=plan.copied,
        dropped=plan.dropped,
        skipped=plan.skipped,
        seconds=seconds,
        bytes_written=result.bytes_written,
        bytes_resumed=result.bytes_skipped,
        units_written=result.units,
        units_resumed=result.units_skipped,
        already_complete=action == "complete",
        runner=result.runner,
        worker_pids=result.pids,
    )


def write_sample(
    dst: str,
    *,
    levels: int | Sequence[float] = 13,
    grid: tuple[int, int] = (121, 240),
    times: int = 4,
    zarr_format: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    token: Any = None,
    storage_options: Mapping | None = None,
    workers: int | None = None,
) -> xr.Dataset:
    """Write :func:`layerquantizer.synthetic.sample_dataset` losslessly to ``dst``.

    Chunks are one time step by the whole level x grid, as in WeatherBench2; the data are
    generated chunk by chunk, so memory stays small on full-size grids. Returns the
    (lazy) dataset written. ``workers`` threads generate and write chunks.

    Examples
    --------
    >>> import tempfile
    >>> ds = write_sample(f"{tempfile.mkdtemp()}/sample.zarr", levels=3, grid=(25, 48), times=2)
    >>> dict(ds.temperature.sizes)
    {'time': 2, 'level': 3, 'latitude': 25, 'longitude': 48}
    """
    import dask

    from layerquantizer.storage import open_store, store_errors
    from layerquantizer.synthetic import sample_dataset

    if zarr_format not in (2, 3):
        raise RequestError(f"zarr format must be 2 or 3, got {zarr_format!r}")
    token = _token(token, storage_options)
    _destination_action(None, dst, token, overwrite, resume=False)
    try:
        ds = sample_dataset(levels=levels, grid=grid, times=times, seed=seed, lazy=True)
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    encoding = {name: {"chunks": (1, *var.shape[1:])} for name, var in ds.data_vars.items()}
    with (
        store_errors(dst),
        _single_threaded_blosc(),
        _quiet_consolidated(),
        dask.config.set(scheduler="threads", num_workers=workers or os.cpu_count() or 1),
    ):
        store = open_store(dst, "w", token=token)
        ds.to_zarr(store, mode="w-", encoding=encoding, consolidated=True, zarr_format=zarr_format)
    return ds


# --------------------------------------------------------------------------------------
# Inspecting


@dataclasses.dataclass
class ArrayReport:
    """One array of a store as its metadata and objects describe it."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    codec: str
    settings: dict[str, Any]
    codecs: list[dict[str, Any]]
    logical_bytes: int
    stored_bytes: int
    objects: int
    attrs: dict[str, Any]
    is_coordinate: bool

    @property
    def ratio(self) -> float | None:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else None

    @property
    def nbits(self) -> int | None:
        """Bits of LayerQuantizer, from the codec metadata, else from the attributes."""
        if self.codec in _LQ_CODEC_IDS and "nbits" in self.settings:
            return int(self.settings["nbits"])
        value = self.attrs.get(ATTR_NBITS)
        return int(value) if isinstance(value, int | float) else None

    @property
    def error_bound(self) -> float | None:
        """Full-scale bound: LayerQuantizer's, 0.0 for lossless codecs, None if unknown."""
        if self.nbits is not None:
            return full_scale_bound(self.nbits)
        names = {entry.get("id", entry.get("name")) for entry in self.codecs}
        return 0.0 if names <= _LOSSLESS_CODECS else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": list(self.dims),
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dtype": self.dtype,
            "codec": self.codec,
            "settings": self.settings,
            "codecs": self.codecs,
            "error_bound": self.error_bound,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "objects": self.objects,
        }


@dataclasses.dataclass
class StoreReport:
    """Sizes and codecs of every array in a store; ``variables`` holds the data variables."""

    store: str
    zarr_format: int
    consolidated: bool
    variables: dict[str, ArrayReport]
    coordinates: dict[str, ArrayReport]
    stored_bytes: int
    objects: int

    @property
    def logical_bytes(self) -> int:
        arrays = [*self.variables.values(), *self.coordinates.values()]
        return sum(a.logical_bytes for a in arrays)

    @property
    def total_ratio(self) -> float | None:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "zarr_format": self.zarr_format,
            "consolidated": self.consolidated,
            "variables": {name: a.to_dict() for name, a in self.variables.items()},
            "coordinates": {name: a.to_dict() for name, a in self.coordinates.items()},
            "total": {
                "variables": len(self.variables),
                "logical_bytes": self.logical_bytes,
                "stored_bytes": self.stored_bytes,
                "ratio": None if self.total_ratio is None else round(self.total_ratio, 4),
                "objects": self.objects,
            },
        }


def _summarize_codecs(meta: Mapping, zarr_format: int) -> tuple[str, dict, list[dict]]:
    """(short name, settings, full list) of an array's codecs from its raw metadata."""
    if zarr_format == 2:
        codecs = [dict(f) for f in meta.get("filters") or []]
        if meta.get("compressor"):
            codecs.append(dict(meta["compressor"]))
        names = [c.get("id", "?") for c in codecs]
        main = codecs[-1] if codecs else None
        settings = {k: v for k, v in main.items() if k != "id"} if main else {}
    else:
        codecs = [dict(c) for c in meta.get("codecs", [])]
        names = [c.get("name", "?") for c in codecs]
        # "bytes" is the plain serializer every v3 array has unless another replaces it.
        shown = [c for c in codecs if c.get("name") != "bytes"] or codecs
        main = next(
            (c for c in codecs if c.get("name") in _LQ_CODEC_IDS), shown[-1] if shown else None
        )
        settings = dict(main.get("configuration") or {}) if main else {}
        names = [c.get("name", "?") for c in shown]
    lq = next((n for n in names if n in _LQ_CODEC_IDS), None)
    return (lq or "+".join(names) or "none"), settings, codecs


def inspect(
    location: str, *, token: Any = None, storage_options: Mapping | None = None
) -> StoreReport:
    """Describe every array of a Zarr store from its metadata and object sizes.

    Reads only metadata documents and the object listing (no chunk is decoded, and no
    codec needs to be installed). Logical bytes are ``prod(shape) * itemsize``; stored
    bytes the summed sizes of the array's objects, metadata included. The progress folder
    of an unfinished ``lq compress`` run (``.lq-progress``) is not counted.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=1)
    >>> inspect(f"{tmp}/in.zarr").to_dict()["total"]["objects"] > 0
    True
    """
    import json

    from layerquantizer.resume import PROGRESS_DIR
    from layerquantizer.storage import StoreError, filesystem, store_errors

    token = _token(token, storage_options)
    try:
        with store_errors(location):
            fs, root = filesystem(location, "r", token=token)
            root = root.rstrip("/")
            listing = fs.find(root, detail=True)
    except StoreError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot list {location}: {_one_line(exc)}") from exc
    prefix = root + "/"
    sizes = {
        path[len(prefix) :]: int(info.get("size") or 0)
        for path, info in listing.items()
        if path.startswith(prefix) and not path[len(prefix) :].startswith(PROGRESS_DIR + "/")
    }
    if ".zgroup" in sizes:
        zarr_format = 2
    elif "zarr.json" in sizes:
        zarr_format = 3
    else:
        raise SourceError(f"{location} is not a Zarr store (no .zgroup or zarr.json at its root)")

    def read_json(key: str) -> dict:
        try:
            return json.loads(fs.cat_file(prefix + key))
        except Exception as exc:
            raise SourceError(f"cannot read {location}/{key}: {_one_line(exc)}") from exc

    arrays: dict[str, tuple[dict, dict]] = {}
    if zarr_format == 2:
        consolidated = ".zmetadata" in sizes
        for key in sizes:
            if key.endswith(".zarray"):
                name = key[: -len("/.zarray")]
                attrs_key = f"{name}/.zattrs"
                arrays[name] = (read_json(key), read_json(attrs_key) if attrs_key in sizes else {})
    else:
        consolidated = "consolidated_metadata" in read_json("zarr.json")
        for key in sizes:
            if key.endswith("/zarr.json"):
                meta = read_json(key)
                if meta.get("node_type") == "array":
                    arrays[key[: -len("/zarr.json")]] = (meta, meta.get("attributes", {}))

    coordinate_names: set[str] = set()
    for _, attrs in arrays.values():
        coordinate_names.update(str(attrs.get("coordinates", "")).split())
    variables: dict[str, ArrayReport] = {}
    coordinates: dict[str, ArrayReport] = {}
    for name in sorted(arrays):
        meta, attrs = arrays[name]
        if zarr_format == 2:
            dims = tuple(attrs.get("_ARRAY_DIMENSIONS", ()))
            chunks = tuple(meta["chunks"])
            dtype = np.dtype(meta["dtype"]) if isinstance(meta["dtype"], str) else None
        else:
            dims = tuple(d for d in meta.get("dimension_names") or () if d is not None)
            chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
            try:
                dtype = np.dtype(meta["data_type"])
            except TypeError:
                dtype = None
        shape = tuple(meta["shape"])
        codec, settings, codecs = _summarize_codecs(meta, zarr_format)
        own = {k: v for k, v in sizes.items() if k.startswith(name + "/")}
        report = ArrayReport(
            name=name,
            dims=dims,
            shape=shape,
            chunks=chunks,
            dtype=dtype.name
            if dtype is not None
            else str(meta.get("dtype", meta.get("data_type"))),
            codec=codec,
            settings=settings,
            codecs=codecs,
            logical_bytes=math.prod(shape) * (dtype.itemsize if dtype is not None else 0),
            stored_bytes=sum(own.values()),
            objects=len(own),
            attrs={k: v for k, v in attrs.items() if k != "_ARRAY_DIMENSIONS"},
            is_coordinate=name in coordinate_names or dims == (name,),
        )
        (coordinates if report.is_coordinate else variables)[name] = report
    return StoreReport(
        store=location,
        zarr_format=zarr_format,
        consolidated=consolidated,
        variables=variables,
        coordinates=coordinates,
        stored_bytes=sum(sizes.values()),
        objects=len(sizes),
    )


# --------------------------------------------------------------------------------------
# Verifying

# Columns of the per-layer statistics that _layer_stats returns.
_LO, _HI, _MAX_ERR, _MAX_EXCESS, _SUM_SQ, _COUNT, _BAD = range(7)
# Relative slack on the half step, for the float64 rounding of our own bound arithmetic.
_BOUND_SLACK = 1e-12


def _layer_stats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per 2-D layer (last two axes) of one block: finite min/max of ``a``, max error,
    max of error minus one ulp of ``a``, sum of squared errors, count of finite pairs and
    count of non-finite values that differ; shape ``(..., 1, 1, 7)``, float64.

    Layer by layer, so that the float64 temporaries stay the size of one layer.
    """
    lead = a.shape[:-2]
    layers_a = a.reshape(-1, *a.shape[-2:])
    layers_b = b.reshape(layers_a.shape)
    stats = np.empty((layers_a.shape[0], 7))
    with np.errstate(invalid="ignore", over="ignore"):
        for index, (layer_a, layer_b) in enumerate(zip(layers_a, layers_b, strict=True)):
            if layer_a.dtype == np.float32:
                ulp = np.spacing(np.abs(layer_a)).astype(np.float64)
            elif layer_a.dtype.kind == "f":
                ulp = np.spacing(np.abs(layer_a.astype(np.float64)))
            else:
                ulp = 0.0
            a64 = layer_a.astype(np.float64)
            b64 = layer_b.astype(np.float64)
            finite_a = np.isfinite(a64)
            both = finite_a & np.isfinite(b64)
            diff = np.where(both, np.abs(a64 - b64), 0.0)
            same_nonfinite = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
            stats[index] = (
                np.where(finite_a, a64, np.inf).min(initial=np.inf),
                np.where(finite_a, a64, -np.inf).max(initial=-np.inf),
                diff.max(initial=0.0),
                np.where(both, diff - ulp, -np.inf).max(initial=-np.inf),
                np.square(diff).sum(),
                both.sum(),
                (~both & ~same_nonfinite).sum(),
            )
    return stats.reshape(*lead, 1, 1, 7)


@dataclasses.dataclass
class LevelStats:
    """Errors at one level (or over a whole variable without a level dimension)."""

    level: float | int | None
    vmin: float
    vmax: float
    max_abs_error: float
    max_fs_error: float
    rmse: float
    bound: float | None
    bound_abs: float | None
    nonfinite_mismatches: int
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "min": _json_float(self.vmin),
            "max": _json_float(self.vmax),
            "max_abs_error": _json_float(self.max_abs_error),
            "max_fs_error": _json_float(self.max_fs_error),
            "rmse": _json_float(self.rmse),
            "bound": _json_float(self.bound),
            "bound_abs": _json_float(self.bound_abs),
            "nonfinite_mismatches": self.nonfinite_mismatches,
            "ok": self.ok,
        }


@dataclasses.dataclass
class VariableCheck:
    """Verification of one variable.

    ``codec_bound`` is the codec's full-scale bound (``0.5 / (2**nbits - 1)``, 0 for a
    lossless codec, None if unknown); :attr:`bound` adds the float32 ulp the codec also
    allows, over each layer's range, so that ``max_fs_error <= bound`` whenever ``ok``.
    """

    name: str
    codec: str
    nbits: int | None
    codec_bound: float | None
    levels: list[LevelStats]

    @property
    def bound(self) -> float | None:
        if self.codec_bound is None:
            return None
        return max((lev.bound or 0.0 for lev in self.levels), default=self.codec_bound)

    @property
    def ok(self) -> bool:
        return all(level.ok for level in self.levels)

    @property
    def max_abs_error(self) -> float:
        return max((lev.max_abs_error for lev in self.levels), default=0.0)

    @property
    def max_fs_error(self) -> float:
        return max((lev.max_fs_error for lev in self.levels), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "nbits": self.nbits,
            "bound": _json_float(self.bound),
            "codec_bound": _json_float(self.codec_bound),
            "max_fs_error": _json_float(self.max_fs_error),
            "max_abs_error": _json_float(self.max_abs_error),
            "ok": self.ok,
            "levels": [lev.to_dict() for lev in self.levels],
        }


@dataclasses.dataclass
class VerifyReport:
    """The result of :func:`verify`; ``ok`` is False if any variable misses its bound."""

    src: str
    dst: str
    variables: dict[str, VariableCheck]
    skipped: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.variables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "src": self.src,
            "dst": self.dst,
            "variables": {name: check.to_dict() for name, check in self.variables.items()},
            "skipped": self.skipped,
        }


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _align_to(src_var: xr.DataArray, dst_var: xr.DataArray, name: str) -> xr.DataArray:
    if src_var.dims != dst_var.dims:
        raise RequestError(
            f"{name}: dims differ: ({', '.join(map(str, src_var.dims))}) in the source, "
            f"({', '.join(map(str, dst_var.dims))}) in the destination"
        )
    for dim in dst_var.dims:
        if dim in src_var.indexes and dim in dst_var.indexes:
            if not src_var.indexes[dim].equals(dst_var.indexes[dim]):
                try:
                    src_var = src_var.sel({dim: dst_var.indexes[dim]})
                except (KeyError, ValueError) as exc:
                    raise RequestError(
                        f"{name}: the destination's {dim!r} values are not all in the source"
                    ) from exc
    if src_var.shape != dst_var.shape:
        raise RequestError(
            f"{name}: shapes differ: {src_var.shape} in the source, {dst_var.shape} in the "
            "destination"
        )
    return src_var


def _check_variable(
    name: str,
    src_var: xr.DataArray,
    dst_var: xr.DataArray,
    array: ArrayReport | None,
    stats: np.ndarray,
) -> VariableCheck:
    """Turn per-layer statistics (leading dims x 7) into per-level results."""
    bound = array.error_bound if array is not None else 0.0
    codec = array.codec if array is not None else "?"
    nbits = array.nbits if array is not None else None
    dims = list(src_var.dims[:-2]) if src_var.ndim >= 2 else []
    if "level" in dims:
        axis = dims.index("level")
        per_level = np.moveaxis(stats, axis, 0).reshape(stats.shape[axis], -1, 7)
        level_values = [v.item() for v in src_var["level"].values]
    else:
        per_level = stats.reshape(1, -1, 7)
        level_values = [None]
    levels = []
    for value, layers in zip(level_values, per_level, strict=True):
        lo, hi = layers[:, _LO], layers[:, _HI]
        has_range = np.isfinite(lo) & np.isfinite(hi)
        span = np.where(has_range, hi - lo, 0.0)
        max_err = layers[:, _MAX_ERR]
        with np.errstate(invalid="ignore", divide="ignore"):
            fs = np.where(span > 0, max_err / np.where(span > 0, span, 1.0), 0.0)
        bad = int(layers[:, _BAD].sum())
        if bound is None:
            ok = bad == 0  # no promise to hold the values to
        elif bound == 0.0:
            ok = bad == 0 and bool((max_err == 0).all())
        else:
            allowed = bound * span * (1 + _BOUND_SLACK)
            ok = bad == 0 and bool((layers[:, _MAX_EXCESS] <= allowed).all())
        count = layers[:, _COUNT].sum()
        if bound is None:
            fs_bound = abs_bound = None
        else:
            # The codec also allows one float32 ulp of the value, largest at max |x|.
            ulp = np.spacing(np.maximum(np.abs(lo), np.abs(hi)).astype(np.float32))
            ulp = np.where(has_range, ulp.astype(np.float64), 0.0) if bound else 0.0 * span
            with np.errstate(invalid="ignore", divide="ignore"):
                per_layer = np.where(span > 0, bound + ulp / np.where(span > 0, span, 1), bound)
            fs_bound = float(per_layer.max(initial=bound))
            abs_bound = float((bound * span + ulp).max(initial=0.0))
        levels.append(
            LevelStats(
                level=value,
                vmin=float(lo[has_range].min()) if has_range.any() else math.nan,
                vmax=float(hi[has_range].max()) if has_range.any() else math.nan,
                max_abs_error=float(max_err.max(initial=0.0)),
                max_fs_error=float(fs.max(initial=0.0)),
                rmse=float(math.sqrt(layers[:, _SUM_SQ].sum() / count)) if count else 0.0,
                bound=fs_bound,
                bound_abs=abs_bound,
                nonfinite_mismatches=bad,
                ok=ok,
            )
        )
    return VariableCheck(name=name, codec=codec, nbits=nbits, codec_bound=bound, levels=levels)


def _stats_graph(src_var: xr.DataArray, dst_var: xr.DataArray):
    """A dask array (leading dims x 7) of per-layer statistics, one block pass over both."""
    import dask.array as da

    a, b = src_var.data, dst_var.data
    if not isinstance(a, da.Array):
        a = da.asarray(a)
    if not isinstance(b, da.Array):
        b = da.asarray(b)
    while a.ndim < 2:  # a vector or scalar is one layer
        a, b = a[None], b[None]
    # Whole layers are not needed per block: every statistic combines across blocks.
    b = b.rechunk(a.chunks)
    lead = a.chunks[:-2]
    blocks = da.map_blocks(
        _layer_stats, a, b,
        chunks=(*lead, (1,) * len(a.chunks[-2]), (1,) * len(a.chunks[-1]), (7,)),
        new_axis=a.ndim, dtype=np.float64, meta=np.empty((0,) * (a.ndim + 1)),
    )  # fmt: skip
    axes = (a.ndim - 2, a.ndim - 1)
    lo = blocks[..., _LO].min(axis=axes)
    hi = blocks[..., _HI].max(axis=axes)
    max_err = blocks[..., _MAX_ERR].max(axis=axes)
    excess = blocks[..., _MAX_EXCESS].max(axis=axes)
    sums = blocks[..., _SUM_SQ:].sum(axis=axes)
    return da.concatenate(
        [lo[..., None], hi[..., None], max_err[..., None], excess[..., None], sums],
        axis=-1,
    )


def verify(
    src: str,
    dst: str,
    *,
    variables: Sequence[str] | None = None,
    token: Any = None,
    storage_options: Mapping | None = None,
    dst_storage_options: Mapping | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Compare ``dst`` with ``src`` per variable and level, in float64, through dask.

    For each 2-D layer (one level at one time step) it finds the source's finite range
    ``[min, max]`` and checks every value: ``|x - y| <= bound * (max - min) + ulp32(x)``
    with ``bound`` the full-scale bound of the destination's codec (LayerQuantizer:
    ``0.5 / (2**nbits - 1)``, from the codec metadata or, failing that, the
    ``layerquantizer_nbits`` attribute; a lossless codec: exact equality). NaN and
    infinities must match exactly. ``max_fs_error`` is the largest error over its layer's
    range. Memory stays at a few chunks.

    The destination may hold a subset (times, levels) of the source. ``token``: gcsfs
    credentials for ``gs://`` stores (both; by default ``gs://`` is read anonymously).

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=1)
    >>> _ = compress(f"{tmp}/in.zarr", f"{tmp}/out.zarr", variables=["temperature"], nbits=12)
    >>> verify(f"{tmp}/in.zarr", f"{tmp}/out.zarr").ok
    True
    """
    import dask

    src_token = _token(token, storage_options)
    dst_token = _token(token, dst_storage_options, "dst_storage_options")
    src_ds = open_dataset(src, token=src_token, chunks={})
    dst_ds = open_dataset(dst, token=dst_token, chunks={})
    store = inspect(dst, token=dst_token)
    if variables is None:
        names = [str(n) for n in dst_ds.data_vars if n in src_ds.data_vars]
        if not names:
            raise RequestError(f"{src} and {dst} have no data variable in common")
    else:
        names = list(variables)
        for name in names:
            for ds, where in ((src_ds, src), (dst_ds, dst)):
                if name not in ds.data_vars:
                    raise RequestError(
                        f"variable {name!r} not found in {where}; available: "
                        f"{', '.join(map(str, ds.data_vars))}"
                    )
    skipped: dict[str, str] = {}
    pending = []
    for name in names:
        src_var, dst_var = src_ds[name], dst_ds[name]
        if src_var.dtype.kind not in "fiub" or dst_var.dtype.kind not in "fiub":
            skipped[name] = f"not numeric ({src_var.dtype}, {dst_var.dtype})"
            continue
        src_var = _align_to(src_var, dst_var, name)
        pending.append((name, src_var, dst_var, _stats_graph(src_var, dst_var)))
    with _single_threaded_blosc():
        computed = dask.compute(
            *[graph for *_, graph in pending],
            scheduler="threads",
            num_workers=workers or os.cpu_count() or 1,
        )
    checks = {
        name: _check_variable(name, src_var, dst_var, store.variables.get(name), stats)
        for (name, src_var, dst_var, _), stats in zip(pending, computed, strict=True)
    }
    return VerifyReport(src=src, dst=dst, variables=checks, skipped=skipped)
