"""Planning a compression: which variables, subset, chunks and encodings, and the write
units (:class:`Plan`, :func:`plan_compress`); writes nothing, and reads no data but a few
sampled chunks of the variables with ``precision: source`` (to find their packing grid).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from layerquantizer.config import PRECISION_SOURCE, Config
from layerquantizer.dataset._codec_metadata import (
    _ATTR_PREFIX,
    ATTR_BOUND,
    ATTR_CODEC,
    ATTR_DROPPED,
    ATTR_MODE,
    ATTR_NBITS,
    ATTR_SOURCE_DTYPE,
    ATTR_SOURCE_STEP,
    ATTR_TOLERANCE,
    MODE_SOURCE,
    MODE_TOLERANCE,
    full_scale_bound,
)
from layerquantizer.dataset._errors import RequestError, _one_line
from layerquantizer.dataset._requests import parse_time_range

#: Bits per value when neither the caller nor the config says.
DEFAULT_NBITS = 16
#: Pairs of dimension names recognised as the horizontal grid, in (y, x) order.
GRID_DIMS: tuple[tuple[str, str], ...] = (
    ("latitude", "longitude"),
    ("lat", "lon"),
    ("y", "x"),
    ("rlat", "rlon"),
)
#: Largest region one task reads and writes when grouping output chunks (see Plan.tasks).
MAX_UNIT_BYTES = 1 << 30
#: Kinds of numpy dtypes written (bool, integers, floats; dates and durations too when the
#: source stores them as numbers); others (complex, text, objects) are refused before
#: anything is written rather than failing or changing later.
SUPPORTED_KINDS = "biuf"


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """A region of one variable to write: one or more whole Zarr chunks (of a sharded
    variable: one or more whole shards).

    ``index`` is the chunk-grid index of its first chunk and ``chunks`` how many it holds;
    of a sharded variable, the shard-grid index of its first shard and how many shards:
    the objects it stores.
    """

    variable: str
    index: tuple[int, ...]
    region: Mapping[str, slice]
    nbytes: int
    chunks: int = 1


@dataclasses.dataclass(frozen=True)
class UnitGrid:
    """The write units of one variable, dimension by dimension: along ``dims[d]`` unit
    ``i`` covers positions ``edges[d][i][0]`` to ``edges[d][i][1]`` (exclusive), whole
    output chunks of ``chunks[d]``. A unit's ordinal is its C-order position in the grid
    (how the progress markers number units, see resume.py)."""

    variable: str
    dims: tuple[str, ...]
    edges: tuple[tuple[tuple[int, int], ...], ...]
    chunks: tuple[int, ...]
    itemsize: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(edges) for edges in self.edges)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass
class Plan:
    """Everything :func:`write_plan` needs; built by :func:`plan_compress`, touches no store.

    Attributes
    ----------
    source : xarray.Dataset
        The selected, subset source: lazily indexed, not dask, coordinates loaded; a
        variable copied in its stored form (see ``raw_read``) is described by its stored
        dtype and attributes over lazy zeros, since the workers copy its stored values.
    template : xarray.Dataset
        The same with every data variable as a dask array chunked like the output (and
        float32 for a quantized float64 variable).
    encoding : dict
        The explicit Zarr encoding of every data variable (source encodings are dropped).
    quantized : dict
        Variable -> nbits of the variables LayerQuantizer encodes (None for those in
        ``tolerances``).
    tolerances : dict
        Variable -> absolute tolerance of the quantized variables encoded with one.
    source_steps : dict
        Variable -> the packing grid step found in its sampled chunks, for the variables
        with ``precision: source`` (their tolerance is half of it).
    copied, dropped, skipped : tuple of str
        Data variables copied losslessly, left out on purpose, and named in the config
        but missing from the source (with ``on_missing: skip``).
    chunks : dict
        Output chunk size per dimension.
    own_chunks : dict
        Variable -> its chunks where they are not those of ``chunks``: one chunk for a
        variable of one dimension. Follows from the dims, shapes and ``chunks``.
    shards : dict
        Zarr v3 shard size per sharded dimension (a multiple of its chunk size); empty
        without sharding. See :meth:`variable_shards`.
    source_chunk_ids : dict
        Variable -> dim -> the source chunk each position along ``dim`` comes from (only
        for variables whose source chunking is known); see :meth:`tasks`.
    source_positions : dict
        Dim -> the position in the source of each kept position along it.
    raw_read : frozenset of str
        Variables whose stored values workers read from Zarr directly: copies (kept in
        their stored form: dtype, fill value, ``scale_factor``/``add_offset`` and the other
        CF attributes, raw values, so that they decode as the source does) and quantized
        variables that need no CF decoding.
    location, token
        Where the source is and its credentials, for workers to open it again.
    """

    source: xr.Dataset
    template: xr.Dataset
    encoding: dict[str, dict]
    quantized: dict[str, int | None]
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
    tolerances: dict[str, float] = dataclasses.field(default_factory=dict)
    own_chunks: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    shards: dict[str, int] = dataclasses.field(default_factory=dict)
    source_steps: dict[str, float] = dataclasses.field(default_factory=dict)
    source_chunk_sizes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def unit_memory(self, name: str, _along: dict | None = None) -> int:
        """Bytes one write unit of ``name`` holds at once, for its largest unit (see
        :func:`unit_memory_bytes`): what each worker thread may hold at the same time."""
        itemsize = self.source[name].dtype.itemsize
        largest = math.prod(self._largest_unit(name, {} if _along is None else _along)) * itemsize
        source = self.source_chunk_sizes.get(name)
        return unit_memory_bytes(largest, math.prod(source) * itemsize if source else 0)

    def _largest_unit(self, name: str, along: dict) -> tuple[int, ...]:
        """The largest extent of a unit of ``name`` along each dim: what :meth:`_units`
        gives, worked out with numpy once per dim, output chunk and source chunk (kept in
        ``along``): the units of a whole store one by one in Python took seconds."""
        var = self.source[name]
        out = self.variable_objects(name)
        plain = tuple(min(c, n) for n, c in zip(var.shape, out, strict=True))
        ids = self.source_chunk_ids.get(name)
        if not ids:
            return plain
        grouped = []
        for axis, (dim, n, c) in enumerate(zip(var.dims, var.shape, out, strict=True)):
            key = (dim, c, self.source_chunk_sizes[name][axis])
            if key not in along:
                stops = np.minimum(np.arange(c, n + c, c), n)
                source_chunk = ids[dim]
                # A unit ends where an output chunk ends at the end of a source chunk.
                ends = stops[(stops == n) | (source_chunk[stops - 1] != source_chunk[stops % n])]
                along[key] = int(np.diff(ends, prepend=0).max())
            grouped.append(along[key])
        if math.prod(grouped) * var.dtype.itemsize <= MAX_UNIT_BYTES:
            return tuple(grouped)
        return plain

    def variable_chunks(self, name: str) -> tuple[int, ...]:
        own = self.own_chunks.get(name)
        if own is not None:
            return own
        return tuple(self.chunks[dim] for dim in self.source[name].dims)

    def variable_shards(self, name: str) -> tuple[int, ...] | None:
        """The shard shape of ``name``, None if it is not sharded: a variable without a
        sharded dimension (a static field) or written as one chunk keeps its chunks, as
        a shard of one chunk would only add an index to it."""
        dims = [str(dim) for dim in self.source[name].dims]
        if name in self.own_chunks or not any(dim in self.shards for dim in dims):
            return None
        chunks = self.variable_chunks(name)
        return tuple(self.shards.get(dim, c) for dim, c in zip(dims, chunks, strict=True))

    def variable_objects(self, name: str) -> tuple[int, ...]:
        """The shape of the objects ``name`` is stored as: its shards, else its chunks."""
        shards = self.variable_shards(name)
        return shards if shards is not None else self.variable_chunks(name)

    def _units(self, name: str) -> list[list[tuple[int, int]]]:
        """Per dim of ``name``: the (start, stop) of each write unit, in whole output chunks
        (whole shards of a sharded variable: a shard is written whole, by one unit).

        A unit is cut only where a source chunk also ends, so each source chunk is read
        and decoded once even when the output chunks are smaller; if that makes a unit
        larger than :data:`MAX_UNIT_BYTES`, every output chunk (shard) is its own unit.
        """
        var = self.source[name]
        out = self.variable_objects(name)
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

    def unit_grid(self, name: str) -> UnitGrid:
        """The write units of variable ``name`` (see :meth:`_units`)."""
        var = self.source[name]
        return UnitGrid(
            str(name),
            tuple(str(dim) for dim in var.dims),
            tuple(tuple(edges) for edges in self._units(str(name))),
            self.variable_objects(str(name)),
            var.dtype.itemsize,
        )

    def tasks(self, variables: Sequence[str] | None = None) -> Iterator[ChunkTask]:
        """Every write unit, variable by variable, in C order of the unit grid.

        The per-unit work is tuple products of what is worked out once per dimension: a
        whole store has millions of units.
        """
        for name in variables if variables is not None else self.source.data_vars:
            grid = self.unit_grid(str(name))
            pairs = list(zip(grid.edges, grid.chunks, strict=True))
            regions = [[slice(a, b) for a, b in edges] for edges in grid.edges]
            firsts = [[a // c for a, _ in edges] for edges, c in pairs]
            counts = [[-(-(b - a) // c) for a, b in edges] for edges, c in pairs]
            lengths = [[b - a for a, b in edges] for edges in grid.edges]
            for region, index, count, length in zip(
                itertools.product(*regions),
                itertools.product(*firsts),
                itertools.product(*counts),
                itertools.product(*lengths),
                strict=True,
            ):
                yield ChunkTask(
                    grid.variable,
                    index,
                    dict(zip(grid.dims, region, strict=True)),
                    math.prod(length) * grid.itemsize,
                    math.prod(count),
                )

    @property
    def total_chunks(self) -> int:
        """The objects a run stores at most: chunks, or shards of a sharded variable."""
        return sum(self.variable_object_count(str(name)) for name in self.source.data_vars)

    def variable_object_count(self, name: str) -> int:
        """The chunk objects (shards of a sharded variable) ``name`` is stored as, at most
        (Zarr stores none for a chunk or shard of fill values only)."""
        shape, objects = self.source[name].shape, self.variable_objects(name)
        return math.prod(math.ceil(n / c) for n, c in zip(shape, objects, strict=True))

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
        repeated = sorted({lev for lev in levels if list(levels).count(lev) > 1})
        if repeated:
            raise RequestError(f"level(s) {', '.join(map(str, repeated))} listed twice")
        # The source's order, whatever the order asked: levels are a coordinate, not a list.
        ds = ds.sel(level=[lev for lev in available.tolist() if np.isin(lev, levels)])
    return ds


def memory_bytes(cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Memory this process may use: the machine's physical memory, or less where its
    control group (a container, a Kubernetes pod, a batch job) sets a limit; None where the
    system says neither."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not on Linux
        physical = None
    limits = [x for x in (physical, _cgroup_limit(cgroup_root)) if x is not None]
    return min(limits) if limits else None


def _cgroup_limit(root: str, groups: str = "/proc/self/cgroup") -> int | None:
    """The memory limit of this process's control group (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), None where there is none or it cannot be read."""
    candidates = []
    try:
        with open(groups) as lines:
            for line in lines:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                path = path.rstrip("/")
                if not controllers:  # v2: one unified hierarchy
                    candidates.append(f"{root}{path}/memory.max")
                elif "memory" in controllers.split(","):
                    candidates.append(f"{root}/memory{path}/memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    limits = []
    for candidate in candidates:
        try:
            with open(candidate) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit():  # v2 says "max" where there is no limit
            limits.append(int(text))
    return min(limits) if limits else None


def unit_memory_bytes(out_bytes: int, in_bytes: int) -> int:
    """Bytes a write unit holds at once: its output region (a chunk, a shard, or whole
    chunks grouped) decoded from the source, the source chunks it is read from, the
    encoded region.

    >>> unit_memory_bytes(4 * 2**30, 150 * 2**20) / 2**30  # a shard of 4 GiB
    8.146484375
    """
    return 2 * out_bytes + in_bytes


def _resolve_shards(
    requested: Mapping[str, int], sizes: Mapping, chunks: Mapping[str, int]
) -> dict[str, int]:
    """The shard size per dimension from ``--shards`` (-1: the whole dimension), checked
    against the dimensions and the chunk sizes: a shard holds whole chunks."""
    unknown = sorted(set(requested) - {str(dim) for dim in sizes})
    if unknown:
        raise RequestError(
            f"--shards names unknown dimension(s) {', '.join(unknown)}; dimensions: "
            f"{', '.join(map(str, sizes))}"
        )
    resolved = {}
    for dim, value in requested.items():
        size, chunk = int(sizes[dim]), chunks[dim]
        whole = math.ceil(size / chunk) * chunk  # the dimension in whole chunks
        if value != -1 and value % chunk:
            raise RequestError(
                f"--shards {dim}={value} is not a multiple of the chunks {dim}={chunk}: a "
                f"shard holds whole chunks; pass a multiple of {chunk} (e.g. {dim}="
                f"{max(chunk, value - value % chunk)}) or -1 for the whole dimension"
            )
        resolved[dim] = whole if value == -1 else min(value, whole)
    return resolved


def _check_unit_memory(
    name: str,
    var: xr.DataArray,
    out_chunks: tuple[int, ...],
    source_chunks: Any,
    option: str = "--chunks",
) -> None:
    """Refuse a variable whose smallest write unit cannot fit in memory: a unit holds one
    output chunk (shard, ``option`` ``--shards``), the source chunks it is read from
    (decoded whole) and the encoded chunk. One unit: a run holds one per worker thread,
    and starts fewer at once where that many do not fit (see
    :func:`layerquantizer.dataset._parallel.run_jobs`)."""
    memory = memory_bytes()
    if memory is None:
        return
    itemsize = var.dtype.itemsize
    out_bytes = math.prod(out_chunks) * itemsize
    in_bytes = math.prod(source_chunks) * itemsize if source_chunks else 0
    if unit_memory_bytes(out_bytes, in_bytes) <= memory:
        return
    if in_bytes > memory // 2:
        raise RequestError(
            f"cannot read {name!r}: its source chunks {tuple(source_chunks)} hold "
            f"{in_bytes / 2**30:.1f} GiB each, more than half of this machine's "
            f"{memory / 2**30:.1f} GiB of memory; rechunk the source first"
        )
    dims = ", ".join(f"{dim}={size}" for dim, size in zip(var.dims, out_chunks, strict=True))
    what = "output chunk" if option == "--chunks" else "shard"
    raise RequestError(
        f"cannot write {name!r}: one {what} ({dims}) holds {out_bytes / 2**30:.1f} GiB, "
        f"more than this machine's {memory / 2**30:.1f} GiB of memory can encode; pass "
        f"smaller {option} (e.g. DIM=1 on a leading dimension)"
    )


def _build_codec(
    nbits: int | None, zarr_format: int, tolerance: float | None = None
) -> dict[str, Any]:
    """The xarray encoding entries that make Zarr write ``name`` with LayerQuantizer, with
    ``nbits`` or (``nbits`` None) an absolute ``tolerance``."""
    if zarr_format == 2:
        from layerquantizer.codec import LayerQuantizer

        codec = LayerQuantizer(nbits=nbits, tolerance=tolerance)
        return {"compressors": (codec,), "filters": None}
    from layerquantizer.zarr3 import LayerQuantizerCodec

    codec = LayerQuantizerCodec(nbits=nbits, tolerance=tolerance)
    return {"serializer": codec, "compressors": None, "filters": None}


def _check_codec(name: str, nbits: int | None, zarr_format: int, tolerance: float | None) -> None:
    """Refuse settings the codec refuses, naming the variable."""
    try:
        _build_codec(nbits, zarr_format, tolerance)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"{name}: {exc}") from exc


def _lossless_codec(zarr_format: int) -> dict[str, Any]:
    """The xarray encoding entries of a copy: Blosc zstd, clevel 3, byte shuffle.

    Measured by benchmarks/bench_lossless.py on real ERA5 fields: +26% ratio over Blosc
    lz4 (the WeatherBench2 store's and numcodecs' default) and 2.7x on categorical fields,
    at a speed the workers keep up with. Lossless: the dtype and values are the stored ones.
    Blosc runs one thread inside workers (see ``_unit.configure_process``).
    """
    if zarr_format == 2:
        from numcodecs import Blosc

        return {
            "compressors": (Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE),),
            "filters": None,
        }
    from zarr.codecs import BloscCodec

    return {
        "compressors": (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),),
        "filters": None,
    }


def _codec_name(zarr_format: int) -> str:
    return "layerquantizer1" if zarr_format == 2 else "layerquantizer"


def plan_compress(
    ds: xr.Dataset,
    *,
    variables: Sequence[str] | None = None,
    config: Config | None = None,
    nbits: int | None = None,
    tolerance: float | None = None,
    precision: str | None = None,
    time: tuple[str | None, str | None] | None = None,
    levels: Sequence[float] | None = None,
    chunks: Mapping[str, int] | None = None,
    zarr_format: int | None = None,
    shards: Mapping[str, int] | None = None,
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
    tolerance : float, optional
        Instead of ``nbits``: the absolute error allowed in every quantized variable, in
        its units (each value within it plus one float32 ulp); exclusive with ``nbits``.
    precision : {"source"}, optional
        Instead of either: keep the packing grid of each quantized variable's source
        values. A few of its chunks are read (:func:`find_source_grid`) to find the grid
        step ``g``, and it is quantized with the tolerance ``g / 2``: values on the grid
        come back exactly, any value within ``g / 2`` (+ one float32 ulp). Per variable
        from the config when not given.
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
    shards : mapping, optional
        Zarr v3 only: shard size per dimension (-1: whole), a multiple of the chunk size
        there, e.g. ``{"time": 28}``: each variable with that dimension is stored as one
        object per 28 chunks of one step (a ``sharding_indexed`` codec around the chunks'
        codecs); the other dimensions of a shard are those of a chunk. Default: the
        config's, else none.

    Raises
    ------
    RequestError
        On an unknown variable, a variable the codec cannot take, a bad subset, chunks or
        shards, two of ``nbits``, ``tolerance`` and ``precision`` together, or a variable
        with ``precision: source`` whose sampled chunks sit on no packing grid.
    """
    config = config if config is not None else Config()
    given = [
        f"--{key}"
        for key, value in (("nbits", nbits), ("tolerance", tolerance), ("precision", precision))
        if value is not None
    ]
    if len(given) > 1:
        raise RequestError(
            f"{' and '.join(given)} are exclusive: give one (nbits bounds the error relative "
            "to each layer's range, tolerance in each variable's units, precision source "
            "keeps the source's packing grid)"
        )
    if precision is not None and precision != PRECISION_SOURCE:
        raise RequestError(
            f"--precision must be {PRECISION_SOURCE!r} (keep the source's packing grid), got "
            f"{precision!r}; for a bound of your own give --nbits or --tolerance"
        )
    from_config = variables is None
    wanted = list(config.variables) if from_config else list(variables)
    if not wanted:
        candidates = [
            str(name) for name, var in ds.data_vars.items()
            if var.dtype in (np.float32, np.float64) and var.ndim >= 2
        ]  # fmt: skip
        raise RequestError(
            "no variables to quantize: name them with --vars or in a config's 'variables'; "
            f"floating-point candidates: {', '.join(candidates) or 'none'}"
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
    requested_shards = {**config.shards, **(shards or {})}
    if requested_shards and zarr_format != 3:
        where = "" if shards else f" (from {config.source})"
        raise RequestError(
            f"--shards{where} needs --zarr-format 3: Zarr v2 has no shards; add --zarr-format "
            "3 (zarr_format: 3 in a config), or leave out --shards"
        )

    time = (
        time
        if time is not None
        else (parse_time_range(config.time) if config.time is not None else None)
    )
    levels = levels if levels is not None else config.levels
    # Where each kept position lies in the source, to align the writes with its chunks.
    positions = {f"_lq_position_{dim}": (dim, np.arange(size)) for dim, size in ds.sizes.items()}
    full_sizes = {str(dim): int(size) for dim, size in ds.sizes.items()}
    ds = select_subset(ds.assign_coords(positions), time=time, levels=levels)
    source_positions = {str(dim): ds[f"_lq_position_{dim}"].values for dim in ds.dims}
    ds = ds.drop_vars(list(positions))

    grid = grid_dims(ds)
    quantized: dict[str, int | None] = {}
    tolerances: dict[str, float] = {}
    keep_source: list[str] = []
    for name in quantize:
        var = ds[name]
        if var.dtype not in (np.float32, np.float64):
            raise RequestError(
                f"cannot quantize {name!r}: its dtype is {var.dtype}, and the layerquantizer "
                "codec encodes float32 (and float64 through float32) only; leave it out to "
                "copy it losslessly"
            )
        # A layer is the whole horizontal grid whichever way round it is stored, so that
        # the bound is relative to the range of one level (or one static field).
        if var.ndim < 2 or (grid is not None and set(var.dims[-2:]) != set(grid)):
            expected = f"({', '.join(grid)}) in either order" if grid else "a 2-D grid"
            raise RequestError(
                f"cannot quantize {name!r} with dims ({', '.join(map(str, var.dims))}): the "
                f"codec quantizes 2-D layers over the last two dims, which must be {expected}; "
                "leave it out of the variables to quantize to copy it losslessly (or "
                "transpose it in the source)"
            )
        if nbits is not None or tolerance is not None or precision is not None:
            bits, tol, keep = nbits, tolerance, precision
        else:
            (bits, tol), keep = config.setting_for(name), config.precision_for(name)
        quantized[name] = bits
        if keep == PRECISION_SOURCE:
            keep_source.append(name)  # its tolerance, from its packing grid, below
            continue
        if bits is None and tol is None:
            quantized[name] = bits = DEFAULT_NBITS
        _check_codec(name, bits, zarr_format, tol)
        if tol is not None:
            tolerances[name] = float(tol)
    # The packing grids of all those variables at once: their sampled chunks are read
    # concurrently (one after another, over GCS, took minutes for 50 variables).
    source_steps = _source_steps({name: ds[name] for name in keep_source})
    for name in keep_source:
        tolerances[name] = source_steps[name] / 2
        _check_codec(name, quantized[name], zarr_format, tolerances[name])

    listed = [("drop", name) for name in config.drop]
    listed += [("copy", name) for name in config.copy]
    for key, name in listed:
        if name in ds.data_vars:
            continue
        if config.on_missing == "skip":
            skipped.append(name)
            continue
        kind = "a coordinate, not a data variable" if name in ds.coords else "not in the source"
        raise RequestError(
            f"{config.source}: '{key}' lists {name!r}, {kind}; available: "
            f"{', '.join(available)} (or set on_missing: skip)"
        )
    dropped = tuple(name for name in config.drop if name in ds.data_vars and name not in quantized)
    copied = tuple(name for name in available if name not in quantized and name not in dropped)
    # Copies keep their stored form: the raw values, dtype, fill value and CF attributes.
    stored_forms = {name: form for name in copied if (form := _stored_form(ds[name])) is not None}
    for name in copied:
        if name not in stored_forms and ds[name].dtype.kind not in SUPPORTED_KINDS:
            raise RequestError(
                f"cannot copy {name!r}: its dtype {ds[name].dtype} is not a number "
                "(lq writes booleans, integers and floats, and dates stored as numbers); "
                f"leave it out with a config's 'drop: [{name}]'"
            )
    raw_read = frozenset(
        name for name in (*quantized, *copied) if name in stored_forms or _reads_raw(ds[name])
    )
    location, token = ds.encoding.get("lq_location"), ds.encoding.get("lq_token")
    source_chunk_ids = {}
    source_chunk_sizes = {}
    # One array of chunk ids per dim and chunk size, shared by the variables chunked
    # alike: one per variable took 46 MB for the 93,544 steps of the WB2 store's 62.
    shared_ids: dict[tuple[str, int], np.ndarray] = {}

    def chunk_ids(dim: str, size: int) -> np.ndarray:
        if (dim, size) not in shared_ids:
            shared_ids[dim, size] = source_positions[dim] // size
        return shared_ids[dim, size]

    for name in (*quantized, *copied):
        source_chunks = ds[name].encoding.get("chunks")
        if source_chunks is not None and any(int(size) < 1 for size in source_chunks):
            raise RequestError(
                f"the source's metadata gives {name!r} chunks {tuple(source_chunks)}: chunk "
                "sizes must be positive; the source store is damaged, repair its metadata"
            )
        if source_chunks is not None and len(source_chunks) == ds[name].ndim:
            # What a read decodes: whole source chunks, no larger than the source's dims.
            source_chunk_sizes[name] = tuple(
                min(int(size), full_sizes[str(dim)])
                for dim, size in zip(ds[name].dims, source_chunks, strict=True)
            )
            source_chunk_ids[name] = {
                str(dim): chunk_ids(str(dim), int(size))
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
            users = ", ".join(repr(name) for name in ds.data_vars if dim in ds[name].dims)
            raise RequestError(
                f"dimension {dim!r}{f' of {users}' if users else ''} has no elements: "
                "nothing to write; leave those variables out (a config's 'drop:') or check "
                "the source"
            )
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
    chosen_shards = _resolve_shards(requested_shards, sizes, chosen)

    for name in ds.coords:  # small, and written once with the metadata
        ds[name].variable.load()
    # A variable of one dimension (a series in time, a profile over levels) is written as
    # one chunk: chunked like the fields, it would be one object of a few bytes per step.
    own_chunks = {
        str(name): tuple(var.shape)
        for name, var in ds.data_vars.items()
        if var.ndim == 1 and var.nbytes <= MAX_UNIT_BYTES
    }
    encoding: dict[str, dict] = {}
    data_vars = {}
    for name in list(ds.data_vars):
        var = ds[name].variable
        var_chunks = own_chunks.get(str(name), tuple(chosen[dim] for dim in var.dims))
        var_shards = None
        if str(name) not in own_chunks and any(dim in chosen_shards for dim in var.dims):
            var_shards = tuple(
                chosen_shards.get(str(dim), c) for dim, c in zip(var.dims, var_chunks, strict=True)
            )
        _check_unit_memory(
            str(name), ds[name], var_shards or var_chunks, source_chunk_sizes.get(name),
            option="--chunks" if var_shards is None else "--shards",
        )  # fmt: skip
        encoding[name] = {"chunks": var_chunks}
        if var_shards is not None:
            # A unit holds whole shards (Plan._units): zarr encodes each with its
            # ShardingCodec and stores it as one object, never a part of one.
            encoding[name]["shards"] = var_shards
        if name in copied:
            encoding[name].update(_lossless_codec(zarr_format))
        if name in stored_forms:
            var, zarr_fill = _stored_variable(var, stored_forms[name])
            ds[name] = var  # what the workers read and write: the stored values
            if zarr_fill is not None and zarr_format == 3:
                encoding[name]["fill_value"] = zarr_fill
            data_vars[name] = var
            continue
        dtype = var.dtype
        if name in quantized:
            bits, tol = quantized[name], tolerances.get(name)
            encoding[name].update(_build_codec(bits, zarr_format, tol))
            if tol is None:  # the attributes of before, unchanged
                settings = {ATTR_NBITS: bits, ATTR_BOUND: full_scale_bound(bits)}
            elif name in source_steps:
                settings = {
                    ATTR_MODE: MODE_SOURCE,
                    ATTR_SOURCE_STEP: source_steps[name],
                    ATTR_TOLERANCE: tol,
                }
            else:
                settings = {ATTR_MODE: MODE_TOLERANCE, ATTR_TOLERANCE: tol}
            var.attrs.update({ATTR_CODEC: _codec_name(zarr_format), **settings})
            if var.dtype != np.float32:
                # Decoded (packed int16 is float64 once decoded) values, quantized through
                # float32 within the bound of the float64 values (see _unit.float64_chunk).
                # Only the template's dtype: a cast of the variable would read it whole.
                var.attrs[ATTR_SOURCE_DTYPE] = str(var.dtype)
                dtype = np.dtype(np.float32)
        data_vars[name] = _lazy_variable(var, dtype, var.attrs)
    # lq verify tells a variable dropped on purpose from one lost (see ATTR_DROPPED).
    attrs = {k: v for k, v in ds.attrs.items() if k != ATTR_DROPPED}
    if dropped:
        attrs[ATTR_DROPPED] = list(dropped)
    template = xr.Dataset(data_vars, coords=ds.coords, attrs=attrs)
    return Plan(
        source=ds,
        template=template,
        encoding=encoding,
        quantized=quantized,
        copied=copied,
        dropped=dropped,
        skipped=tuple(skipped),
        chunks=chosen,
        own_chunks=own_chunks,
        shards=chosen_shards,
        zarr_format=zarr_format,
        source_chunk_ids=source_chunk_ids,
        source_positions=source_positions,
        raw_read=raw_read,
        location=location,
        token=token,
        tolerances=tolerances,
        source_steps=source_steps,
        source_chunk_sizes=source_chunk_sizes,
    )


def _source_steps(variables: Mapping[str, xr.DataArray]) -> dict[str, float]:
    """The packing grid step of each variable in a few sampled chunks, for ``precision:
    source``; a variable whose sample sits on no grid is a bad request (the first such one
    named). The chunks of all of them are read concurrently, by as many threads as
    :data:`~layerquantizer.dataset._source_grid.SOURCE_READS` and the memory allow."""
    import layerquantizer.dataset._parallel as _parallel
    from layerquantizer.dataset._source_grid import (
        SOURCE_READS,
        find_source_grids,
        sample_block_bytes,
    )

    if not variables:
        return {}
    # A read holds its chunk as float32 and a few layer-sized copies: four chunks each.
    largest = max(sample_block_bytes(var) for var in variables.values())
    threads = _parallel.threads_that_fit(SOURCE_READS, 4 * largest, memory_bytes())
    steps = {}
    for name, found in find_source_grids(variables, threads=threads).items():
        if found.step is None:
            raise _no_source_grid(name, found)
        steps[name] = found.step
    return steps


def _no_source_grid(name: str, found) -> RequestError:
    """The error of a variable whose sampled chunks sit on no packing grid."""
    sampled = f"{_plural(len(found.chunks), 'sampled chunk')}"
    if found.layers == 0:
        what = f"no layer in {sampled} has finite values that vary"
    else:
        off = found.layers - found.layers_on_grid
        what = f"{off} of the {found.layers} layers in {sampled} sit on no packing grid"
    return RequestError(
        f"cannot keep the source precision of {name!r}: {what} (no grid coarser than "
        "float32's spacing); give it a bound of its own (tolerance: X or nbits: N in the "
        f"config, or --tolerance/--nbits) or copy it losslessly (copy: [{name}])"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


#: Encoding entries that xarray's CF decoding takes out of a variable's stored attributes.
_CF_ATTRIBUTES = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned")
_TIME_ATTRIBUTES = ("units", "calendar")


@dataclasses.dataclass(frozen=True)
class _StoredForm:
    """A variable as its store holds it: the stored dtype, the attributes in the store
    (the CF ones included), and the Zarr v3 ``fill_value`` where the source says."""

    dtype: np.dtype
    attrs: dict[str, Any]
    zarr_fill: Any = None


def _stored_form(var: xr.DataArray) -> _StoredForm | None:
    """How ``var`` is stored, from what xarray's decoding moved into its encoding, or None
    when that cannot be told (strings, objects, an opened-in-memory dataset)."""
    encoding = var.encoding
    stored = encoding.get("dtype")
    if stored is None:
        return None
    attrs = dict(var.attrs)
    if isinstance(stored, str) and stored == "bool" and var.dtype == bool:
        # xarray's own spelling of a boolean stored as int8 with the attribute dtype: bool.
        stored, attrs["dtype"] = np.dtype("int8"), "bool"
    stored = np.dtype(stored)
    if stored.kind not in "biuf" or var.dtype.kind not in "biufmM":
        return None
    keys = _CF_ATTRIBUTES + (_TIME_ATTRIBUTES if var.dtype.kind in "mM" else ())
    attrs.update({key: encoding[key] for key in keys if encoding.get(key) is not None})
    if var.dtype.kind == "m":
        # xarray writes a timedelta's unit as this attribute and consumes it on decoding.
        attrs.setdefault("dtype", str(var.dtype))
    return _StoredForm(stored, attrs, encoding.get("fill_value"))


def _stored_variable(var: xr.Variable, form: _StoredForm) -> tuple[xr.Variable, Any]:
    """The template variable of a copy: the stored dtype and attributes over lazy zeros
    (a template is never computed; the workers copy the stored values themselves)."""
    attrs = {k: v for k, v in form.attrs.items() if not str(k).startswith(_ATTR_PREFIX)}
    return _lazy_variable(var, form.dtype, attrs), form.zarr_fill


def _lazy_variable(var: xr.Variable, dtype: Any, attrs: Mapping) -> xr.Variable:
    """A template variable: ``var``'s dims and shape over lazy zeros of ``dtype`` in ONE
    dask chunk, as xarray-beam's templates are. The template is never computed; its Zarr
    chunks come from the encoding. A dask chunk per Zarr chunk instead made
    ``to_zarr(compute=False)`` build a task per chunk: 4.6 million on the WeatherBench2
    store, minutes and gigabytes before the first chunk."""
    import dask.array as da

    data = da.zeros(var.shape, dtype=dtype, chunks=var.shape or ())
    return xr.Variable(var.dims, data, attrs=dict(attrs))


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
