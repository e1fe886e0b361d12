"""Comparing a destination with its source per variable and level (:func:`verify`)."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from layerquantizer.dataset._codec_metadata import (
    _LQ_CODEC_IDS,
    ABSOLUTE_MODES,
    ATTR_BOUND,
    ATTR_DROPPED,
    ATTR_MODE,
    ATTR_NBITS,
    ATTR_TOLERANCE,
    full_scale_bound,
)
from layerquantizer.dataset._errors import RequestError, SourceError, _one_line
from layerquantizer.dataset._inspect import ArrayReport, _no_metadata_yet, inspect
from layerquantizer.dataset._stores import (
    _quiet_consolidated,
    _single_threaded_blosc,
    _token,
    open_dataset,
)

# Columns of the per-layer statistics that _layer_stats returns.
_LO, _HI, _MAX_ERR, _MAX_EXCESS, _SUM_SQ, _COUNT, _BAD = range(7)
#: The seed of ``--sample`` when none is given: the same chunks on every run.
DEFAULT_SAMPLE_SEED = 0
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
            if layer_a.dtype == np.float32 or layer_b.dtype == np.float32:
                # Stored as float32 (float64 sources too): one float32 ulp of the value.
                ulp = np.spacing(np.abs(layer_a).astype(np.float32)).astype(np.float64)
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
    count: int = 0  # finite pairs compared
    #: The layer of the largest error: a coordinate label (else an index) per leading dim.
    worst_layer: dict[str, Any] | None = None

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


#: The kinds of :class:`Problem`, as ``lq verify --json`` names them.
PROBLEM_KINDS = (
    "bound",  # values beyond the bound the codec (or the user) promises
    "nonfinite",  # NaN or infinities that differ from the source's
    "missing_chunk",  # no object for a chunk whose source values are not all fill values
    "corrupt_chunk",  # an object that cannot be decoded
    "unverifiable",  # values differ under a codec whose bound lq cannot tell
    "metadata_mismatch",  # chunks or metadata looser than the attributes promise
    "incomplete",  # the store's writing did not finish
    "missing_variable",  # a source variable the destination lacks (and did not drop)
)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a destination; ``chunk`` is the chunk-grid index it concerns."""

    kind: str
    message: str
    chunk: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "chunk": None if self.chunk is None else list(self.chunk),
        }


@dataclasses.dataclass
class VariableCheck:
    """Verification of one variable.

    ``codec_bound`` is the codec's full-scale bound (``0.5 / (2**nbits - 1)``, 0 for a
    lossless codec, None if unknown); :attr:`bound` adds the float32 ulp the codec also
    allows, over each layer's range, so that ``max_fs_error <= bound`` whenever ``ok``.
    When the codec's bound is unknown the bounds the user stated are checked instead
    (``bound_from`` ``"user"``); without them, values that differ at all are a problem.

    ``mode`` is ``"nbits"`` or ``"tolerance"`` for LayerQuantizer (None otherwise); with a
    ``tolerance`` the bound is absolute: ``|x - y| <= tolerance + ulp32(x)``, and
    ``codec_bound`` is None. :attr:`abs_bound_max` is the largest absolute error allowed in
    any layer (ulp included), so that ``max_abs_error <= abs_bound_max`` whenever ``ok``.

    ``problems`` lists at most :data:`MAX_PROBLEMS_PER_KIND` of each kind, the first in
    chunk order; ``problems_omitted`` counts the rest by kind.
    """

    name: str
    codec: str
    nbits: int | None
    codec_bound: float | None
    levels: list[LevelStats]
    problems: list[Problem] = dataclasses.field(default_factory=list)
    bound_from: str | None = "codec"
    abs_bound: float | None = None
    mode: str | None = None
    tolerance: float | None = None
    units: str = ""
    #: Problems of each kind beyond the first :data:`MAX_PROBLEMS_PER_KIND`, counted only.
    problems_omitted: dict[str, int] = dataclasses.field(default_factory=dict)
    chunks: int = 0  # in the destination's chunk grid
    chunks_checked: int = 0  # all of them, or those of a sample (see :func:`verify`)
    #: Chunks absent from the store's listing that a sample did not compare with the source.
    chunks_absent_unchecked: int = 0

    @property
    def abs_bound_max(self) -> float | None:
        if self.codec_bound == 0:
            return 0.0
        found = [lev.bound_abs for lev in self.levels if lev.bound_abs is not None]
        return max(found) if found else self.abs_bound

    @property
    def rmse(self) -> float:
        """Over every compared value (from the levels' RMSEs and counts)."""
        total = sum(lev.count for lev in self.levels)
        if not total:
            return 0.0
        return math.sqrt(sum(lev.rmse**2 * lev.count for lev in self.levels) / total)

    @property
    def bound(self) -> float | None:
        if self.bound_from is None or not any(lev.bound is not None for lev in self.levels):
            return self.codec_bound
        return max(lev.bound or 0.0 for lev in self.levels)

    @property
    def ok(self) -> bool:
        return not self.problems and all(level.ok for level in self.levels)

    @property
    def max_abs_error(self) -> float:
        return max((lev.max_abs_error for lev in self.levels), default=0.0)

    @property
    def max_fs_error(self) -> float:
        return max((lev.max_fs_error for lev in self.levels), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "mode": self.mode,
            "nbits": self.nbits,
            "tolerance": _json_float(self.tolerance),
            "abs_bound": _json_float(self.abs_bound_max),
            "units": self.units,
            "bound": _json_float(self.bound),
            "codec_bound": _json_float(self.codec_bound),
            "bound_from": self.bound_from,
            "max_abs_bound": _json_float(self.abs_bound),
            "max_fs_error": _json_float(self.max_fs_error),
            "max_abs_error": _json_float(self.max_abs_error),
            "rmse": _json_float(self.rmse),
            "ok": self.ok,
            "chunks": self.chunks,
            "chunks_checked": self.chunks_checked,
            "chunks_absent_unchecked": self.chunks_absent_unchecked,
            "problems": [problem.to_dict() for problem in self.problems],
            "problems_omitted": dict(self.problems_omitted),
            "levels": [lev.to_dict() for lev in self.levels],
        }


@dataclasses.dataclass
class VerifyReport:
    """The result of :func:`verify`; ``ok`` is False if any variable has a problem, or the
    store itself does (``problems``: an incomplete store).

    ``sample`` is None when every chunk was checked, else ``{"chunks_per_variable": N,
    "seed": S}`` as :func:`verify` was given them.
    """

    src: str
    dst: str
    variables: dict[str, VariableCheck]
    skipped: dict[str, str]
    problems: list[Problem] = dataclasses.field(default_factory=list)
    sample: dict[str, int] | None = None

    @property
    def chunks(self) -> int:
        return sum(check.chunks for check in self.variables.values())

    @property
    def chunks_checked(self) -> int:
        return sum(check.chunks_checked for check in self.variables.values())

    def coverage(self) -> str:
        """What was read, in words: every chunk, or which sample and what it cannot see."""
        if self.sample is None:
            return f"checked all {self.chunks:,} chunks"
        largest = max((check.chunks for check in self.variables.values()), default=0)
        absent = sum(check.chunks_absent_unchecked for check in self.variables.values())
        return (
            f"sampled {self.sample['chunks_per_variable']:,} of {largest:,} chunks per "
            f"variable, seed {self.sample['seed']} ({self.chunks_checked:,} of "
            f"{self.chunks:,} chunks checked): values in the chunks not sampled are not "
            "checked and the statistics are those of the sample; chunks absent from the "
            "store's listing are looked for in all of them"
            + (
                f", and {absent:,} absent ones beyond the sample's size were not compared "
                "with the source (absent is right only where it is all fill values)"
                if absent
                else ""
            )
        )

    @property
    def complete(self) -> bool:
        return not any(problem.kind == "incomplete" for problem in self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems and all(check.ok for check in self.variables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "complete": self.complete,
            "src": self.src,
            "dst": self.dst,
            "problems": [problem.to_dict() for problem in self.problems],
            "sample": None if self.sample is None else dict(self.sample),
            "chunks": self.chunks,
            "chunks_checked": self.chunks_checked,
            "coverage": self.coverage(),
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


class _ChunkReader:
    """Reads the destination chunk by chunk, so that a chunk that is missing, corrupt or
    encoded with fewer bits than promised is named and the others are still checked.

    ``variable`` is the destination variable, lazily indexed (no dask): indexing one chunk's
    region reads and decodes that chunk alone, with xarray's decoding. ``key`` gives a chunk's
    object key (None when it cannot be told), of a sharded array the key of its shard;
    ``present`` the keys the store holds; ``nbits`` the bits the metadata promises (chunk
    headers are then read); ``tolerance`` the absolute tolerance it promises instead, with
    ``chunk_shape`` the shape of a whole chunk (each chunk's layer table is then read, see
    :meth:`_steps`). ``shard`` (a :class:`_ShardLayout`) tells where each chunk lies in its
    shard, from the shard's index: a chunk absent from a shard that is there is as missing
    as a shard that is not.
    """

    def __init__(
        self, name, variable, chunks, key, present, fs, root, nbits, location, pad,
        tolerance=None, chunk_shape=None, shard=None,
    ):  # fmt: skip
        self.name = name
        self.variable = variable
        # Zarr's grid is regular: a chunk size and a length per dim, whatever the length
        # (a reader travels to dask workers with every chunk it checks).
        self.shape = tuple(int(sum(sizes)) for sizes in chunks)
        self.chunk_sizes = tuple(int(sizes[0]) if sizes else 1 for sizes in chunks)
        self.grid = tuple(len(sizes) for sizes in chunks)
        self.key = key
        self.present = present
        self.fs = fs
        self.root = root
        self.nbits = nbits
        self.location = location
        self.pad = pad  # leading axes added to a vector or scalar, absent from chunk indices
        self.tolerance = tolerance
        self.chunk_shape = chunk_shape
        self.shard = shard
        self._indexes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _inner_span(self, key: str, coords: tuple[int, ...]) -> tuple[int, int] | None:
        """(offset, length) of chunk ``coords`` inside shard ``key`` from the shard's index
        (read once per shard, a few recent ones kept), None if the shard holds no such chunk
        (zarr leaves out a chunk of fill values)."""
        with self._lock:
            index = self._indexes.get(key)
        if index is None:
            layout = self.shard
            raw = self.fs.cat_file(f"{self.root}/{key}", start=-layout.index_size)
            count = math.prod(layout.per_shard)
            index = np.frombuffer(raw[: 16 * count], "<u8").reshape(*layout.per_shard, 2)
            with self._lock:
                self._indexes[key] = index
                while len(self._indexes) > 64:
                    self._indexes.popitem(last=False)
        local = tuple(c % n for c, n in zip(coords, self.shard.per_shard, strict=True))
        offset, length = (int(v) for v in index[local])
        return None if offset == _ABSENT and length == _ABSENT else (offset, length)

    def _steps(self, key: str, block_shape: tuple[int, ...], start: int = 0) -> np.ndarray | None:
        """The quantization step of each layer of the block, from its chunk's layer table
        (one small read), or None when the chunk is not one LayerQuantizer wrote in the
        array's chunk shape."""
        from layerquantizer._format import layer_table_end, peek_steps

        if self.chunk_shape is None or len(self.chunk_shape) < 2:
            return None
        end = layer_table_end(self.chunk_shape)
        found = peek_steps(self.fs.cat_file(f"{self.root}/{key}", start=start, end=start + end))
        if found is None or tuple(found[0]) != tuple(self.chunk_shape):
            return None
        steps = found[1].reshape(self.chunk_shape[:-2])
        # An edge chunk's block is the first part of the chunk along each dim.
        return steps[tuple(slice(0, n) for n in block_shape[:-2])]

    def detached(self) -> _ChunkReader:
        """A copy without the destination variable, the listing and the filesystem, to
        send to where the chunks are checked; :meth:`attached` gives them back there."""
        copy = object.__new__(_ChunkReader)
        # The shard indexes read so far and their lock stay here (a lock cannot travel).
        copy.__dict__.update(
            self.__dict__, variable=None, present=None, fs=None, _indexes=None, _lock=None
        )
        return copy

    def attached(self, variable, fs, indexes: OrderedDict, lock: threading.Lock) -> _ChunkReader:
        """A detached reader given back its variable and filesystem, and the shard indexes
        (with their lock) this process has read for it, so a shard's index is read once."""
        copy = object.__new__(_ChunkReader)
        copy.__dict__.update(self.__dict__, variable=variable, fs=fs, _indexes=indexes, _lock=lock)
        return copy

    def region(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        """The slices of the chunk at ``coords`` (without the ``pad`` axes)."""
        return tuple(
            slice(i * size, min((i + 1) * size, length))
            for i, size, length in zip(coords, self.chunk_sizes, self.shape, strict=True)
        )

    def listed(self, coords: tuple[int, ...]) -> bool | None:
        """Whether the store's listing holds the object of the chunk at ``coords``
        (without the ``pad`` axes); None when that cannot be told (no listing, no key)."""
        if self.key is None or self.present is None:
            return None
        return self.key(coords) in self.present

    def check(
        self, a: np.ndarray, coords: tuple[int, ...], listed: bool | None = None
    ) -> tuple[np.ndarray, list[Problem]]:
        """Statistics of the block (as :func:`_layer_stats`) and the problems of its chunk.

        A chunk that cannot be compared counts with its source values only, so that it
        adds to its layers' range but not to their errors. ``listed``: what :meth:`listed`
        said where the listing is (a detached reader has none).
        """
        from layerquantizer._format import PREFIX_SIZE, peek_nbits
        from layerquantizer.storage import classify_store_error

        coords = coords[self.pad :]
        region = self.region(coords)
        key = self.key(coords) if self.key is not None else None
        where = f"chunk {coords}" + (f" ({key})" if key is not None else "")
        if listed is None:
            listed = self.listed(coords)
        present = listed is None or listed
        start = 0  # where the chunk's bytes begin in its object
        if present and key is not None and self.shard is not None:
            span = self._inner_span(key, coords)
            if span is None:
                present, where = False, f"chunk {coords} (absent from its shard {key})"
            else:
                start = span[0]
        problems = []
        if present and key is not None and self.nbits is not None:
            prefix = self.fs.cat_file(f"{self.root}/{key}", start=start, end=start + PREFIX_SIZE)
            nbits = peek_nbits(prefix)
            if nbits is not None and nbits < self.nbits:
                problems.append(Problem(
                    "metadata_mismatch",
                    f"{self.name}: {where} is encoded with {nbits} bits, but the metadata "
                    f"promises {self.nbits} bits; re-run lq compress for this variable",
                    coords,
                ))  # fmt: skip
        steps = None
        if present and key is not None and self.tolerance is not None:
            steps = self._steps(key, a.shape, start)
        try:
            b = np.asarray(self.variable[region].values)
        except Exception as exc:  # the decoders' error types differ by codec
            classified = classify_store_error(exc, self.location)
            if classified is not None:
                raise classified from exc
            problems.append(Problem(
                "corrupt_chunk",
                f"{self.name}: {where} cannot be decoded: {_one_line(exc)}",
                coords,
            ))  # fmt: skip
            return _layer_stats(a, a), problems
        b = b.reshape(a.shape)
        if not present and not _identical(a, b):
            # Zarr reads a missing chunk as the fill value; lq leaves out only chunks that
            # hold nothing else, so any other source value there was lost.
            problems.append(Problem(
                "missing_chunk",
                f"{self.name}: {where} is missing, but the source there is not all fill "
                "values",
                coords,
            ))  # fmt: skip
            return _layer_stats(a, a), problems
        stats = _layer_stats(a, b)
        if steps is not None:
            problems.extend(self._looser_steps(stats, steps, coords, where))
        return stats, problems

    def _looser_steps(self, stats, steps, coords, where) -> list[Problem]:
        """A layer quantized with a step over twice the tolerance whose values miss it:
        the chunk was encoded with a looser setting than the metadata promises.

        A step over ``2 X`` alone proves nothing: the encoder takes a coarser one for a
        layer on a coarse grid, a layer of one sign whose float32 spacing is coarser, and a
        layer too wide for 24 bits, all within ``X`` + ulp; and the layer table does not say
        which. So only a layer whose values also miss ``X`` + ulp is named.
        """
        limit = 2.0 * self.tolerance * (1 + _BOUND_SLACK)
        excess = stats[..., 0, 0, _MAX_EXCESS]
        looser = (steps > limit) & (excess > self.tolerance * (1 + _BOUND_SLACK))
        if not looser.any():
            return []
        step = float(steps[looser].max())
        return [Problem(
            "metadata_mismatch",
            f"{self.name}: {where} is quantized with steps up to {step:.3g}, coarser than "
            f"twice the tolerance {self.tolerance:.3g} the metadata promises; re-run lq "
            "compress for this variable",
            coords,
        )]  # fmt: skip


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


#: An unchecked block's statistics: no range, no error, nothing compared.
_NEUTRAL = np.array([np.inf, -np.inf, 0.0, -np.inf, 0.0, 0.0, 0.0])


def _layers(per_block: np.ndarray) -> np.ndarray:
    """Per-layer statistics (leading dims x 7) from those per layer and y/x block (leading
    dims x nby x nbx x 7; blocks not checked hold :data:`_NEUTRAL`)."""
    yx = (-2, -1)  # the y/x block axes, once the column is taken
    return np.concatenate(
        [
            per_block[..., _LO].min(axis=yx)[..., None],
            per_block[..., _HI].max(axis=yx)[..., None],
            per_block[..., _MAX_ERR].max(axis=yx)[..., None],
            per_block[..., _MAX_EXCESS].max(axis=yx)[..., None],
            per_block[..., _SUM_SQ:].sum(axis=(-3, -2)),
        ],
        axis=-1,
    )


def _failing_chunks(
    mask: np.ndarray, values: np.ndarray, lead_chunks: np.ndarray, pad: int
) -> list[tuple[tuple[int, ...], float]]:
    """The chunks where ``mask`` (layers x nby x nbx) holds, with the largest of ``values``
    in each, in chunk-grid order; ``lead_chunks`` is each layer's chunk index along the
    leading dims (layers x leading dims)."""
    found = np.nonzero(mask)
    if not found[0].size:
        return []
    ids = np.column_stack([lead_chunks[found[0]], found[1], found[2]])
    unique, inverse = np.unique(ids, axis=0, return_inverse=True)
    largest = np.full(len(unique), -np.inf)
    np.maximum.at(largest, inverse.reshape(-1), values[found])
    return [
        (tuple(int(c) for c in row[pad:]), float(value))
        for row, value in zip(unique, largest, strict=True)
    ]


def _check_variable(
    name: str,
    src_var: xr.DataArray,
    array: ArrayReport | None,
    tally: _Tally,
    user_fs: float | None,
    user_abs: float | None,
) -> VariableCheck:
    """Turn the blocks' statistics and problems into per-level results and problems."""
    codec_bound = array.error_bound if array is not None else 0.0
    codec = array.codec if array is not None else "?"
    nbits = array.nbits if array is not None else None
    tolerance = array.tolerance if array is not None else None
    problems = tally.problems
    # Only the layers checked: the others hold no range, no error and nothing compared.
    per_block, layer_index = tally.layers_checked()
    pad = tally.pad
    lead_chunks = layer_index // np.array(tally.sizes[:-2], dtype=np.int64)
    if array is not None:
        for problem in _metadata_problems(name, array):
            problems.add(problem)
    if tolerance is not None:
        bound, abs_bound, bound_from = None, tolerance, "codec"
    elif codec_bound is not None:
        bound, abs_bound, bound_from = codec_bound, None, "codec"
    elif user_fs is not None or user_abs is not None:
        bound, abs_bound, bound_from = user_fs, user_abs, "user"
    else:
        bound = abs_bound = bound_from = None
    stats = _layers(per_block)

    lo, hi = stats[..., _LO], stats[..., _HI]
    has_range = np.isfinite(lo) & np.isfinite(hi)
    span = np.where(has_range, hi - lo, 0.0)
    block_err = per_block[..., _MAX_ERR]
    beyond = np.zeros(block_err.shape, bool)
    if bound == 0.0:
        beyond |= block_err > 0
    elif bound is not None:
        allowed = bound * span * (1 + _BOUND_SLACK)
        beyond |= per_block[..., _MAX_EXCESS] > allowed[..., None, None]
    if tolerance is not None:  # the codec also allows one float32 ulp of the value
        beyond |= per_block[..., _MAX_EXCESS] > tolerance * (1 + _BOUND_SLACK)
    elif abs_bound is not None:
        beyond |= block_err > abs_bound * (1 + _BOUND_SLACK)
    differ = block_err > 0 if bound_from is None else np.zeros_like(beyond)
    bad = per_block[..., _BAD] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        block_fs = np.where(span[..., None, None] > 0, block_err / span[..., None, None], 0.0)
    if tolerance is not None:
        units = f" {array.units}" if array.units else ""
        for coords, err in _failing_chunks(beyond, block_err, lead_chunks, pad):
            problems.add(Problem(
                "bound", f"{name}: chunk {coords}: errors up to {err:.3g}{units}, beyond the "
                f"tolerance ({tolerance:.3g}{units} + one float32 ulp)", coords,
            ))  # fmt: skip
        beyond_fs = np.zeros_like(beyond)
    else:
        beyond_fs = beyond
    for coords, fs in _failing_chunks(beyond_fs, block_fs, lead_chunks, pad):
        limit = f"{bound:.3g} of the layer's range" if bound is not None else ""
        if abs_bound is not None:
            limit += (" and " if limit else "") + f"{abs_bound:.3g} absolute"
        problems.add(Problem(
            "bound", f"{name}: chunk {coords}: errors up to {fs:.3g} of the layer's range, "
            f"beyond the bound ({limit})", coords,
        ))  # fmt: skip
    for coords, count in _failing_chunks(bad, per_block[..., _BAD], lead_chunks, pad):
        problems.add(Problem(
            "nonfinite", f"{name}: chunk {coords}: NaN or infinite values differ from the "
            f"source's ({count:.0f} in one layer)", coords,
        ))  # fmt: skip
    if differ.any():
        problems.add(Problem(
            "unverifiable",
            f"{name}: values differ from the source (max abs error {block_err.max():.3g}) "
            f"under codec {codec}, whose error bound lq cannot tell; state one with "
            "--max-abs-error or --max-fs-error",
        ))  # fmt: skip
    listed, omitted = problems.result()

    failing = (beyond | differ | bad).any(axis=(-2, -1))
    dims = list(src_var.dims[:-2]) if src_var.ndim >= 2 else []
    if "level" in dims:
        level_of = layer_index[:, dims.index("level")]
        level_values = [v.item() for v in src_var["level"].values]
    else:
        level_of = np.zeros(len(layer_index), dtype=np.int64)
        level_values = [None]
    other_axes = [axis for axis, dim in enumerate(dims) if dim != "level"]
    other_dims = [dims[axis] for axis in other_axes]
    has_layers = all(src_var.sizes[dim] for dim in other_dims)
    levels = []
    for position, value in enumerate(level_values):
        rows = level_of == position
        layers, failed = stats[rows], failing[rows]
        lo, hi = layers[:, _LO], layers[:, _HI]
        has_range = np.isfinite(lo) & np.isfinite(hi)
        span = np.where(has_range, hi - lo, 0.0)
        max_err = layers[:, _MAX_ERR]
        with np.errstate(invalid="ignore", divide="ignore"):
            fs = np.where(span > 0, max_err / np.where(span > 0, span, 1.0), 0.0)
        count = layers[:, _COUNT].sum()
        # The first layer of the largest error; the level's first layer if none has any.
        worst = (0,) * len(other_axes)
        if max_err.size and max_err.max() > 0:
            worst = tuple(layer_index[rows][int(max_err.argmax())][other_axes])
        if tolerance is not None:
            fs_bound = None
            largest = np.maximum(np.abs(lo), np.abs(hi))[has_range]
            ulp = np.spacing(largest.astype(np.float32)).astype(np.float64)
            abs_bound_level = tolerance + float(ulp.max(initial=0.0))
        elif bound is None:
            fs_bound = None
        else:
            # The codec also allows one float32 ulp of the value, largest at max |x|.
            ulp = np.spacing(np.maximum(np.abs(lo), np.abs(hi)).astype(np.float32))
            ulp = np.where(has_range, ulp.astype(np.float64), 0.0) if bound else 0.0 * span
            with np.errstate(invalid="ignore", divide="ignore"):
                per_layer = np.where(span > 0, bound + ulp / np.where(span > 0, span, 1), bound)
            fs_bound = float(per_layer.max(initial=bound))
            abs_bound_level = float((bound * span + ulp).max(initial=0.0))
        levels.append(
            LevelStats(
                level=value,
                vmin=float(lo[has_range].min()) if has_range.any() else math.nan,
                vmax=float(hi[has_range].max()) if has_range.any() else math.nan,
                max_abs_error=float(max_err.max(initial=0.0)),
                max_fs_error=float(fs.max(initial=0.0)),
                rmse=float(math.sqrt(layers[:, _SUM_SQ].sum() / count)) if count else 0.0,
                bound=fs_bound,
                bound_abs=(abs_bound if bound is None and tolerance is None else abs_bound_level),
                nonfinite_mismatches=int(layers[:, _BAD].sum()),
                ok=not failed.any(),
                count=int(count),
                worst_layer=_layer_labels(src_var, other_dims, worst) if has_layers else None,
            )
        )
    return VariableCheck(
        name=name, codec=codec, nbits=nbits, codec_bound=codec_bound, levels=levels,
        problems=listed, problems_omitted=omitted, bound_from=bound_from, abs_bound=abs_bound,
        mode=array.mode if array is not None else None, tolerance=tolerance,
        units=array.units if array is not None else _units(src_var),
        chunks=tally.chunks, chunks_checked=tally.checked,
        chunks_absent_unchecked=tally.absent_unchecked,
    )  # fmt: skip


def _layer_labels(var: xr.DataArray, dims: list[str], index: tuple) -> dict[str, Any]:
    return {
        dim: var[dim].values[i] if dim in var.coords else int(i)
        for dim, i in zip(dims, index, strict=True)
    }


def _units(var: xr.DataArray) -> str:
    value = var.attrs.get("units")
    return value if isinstance(value, str) else ""


def _metadata_problems(name: str, array: ArrayReport) -> list[Problem]:
    """The attributes and the codec metadata of a LayerQuantizer array disagree."""
    problems = []
    claimed = array.attrs.get(ATTR_NBITS)
    codec_nbits = array.settings.get("nbits") if array.codec in _LQ_CODEC_IDS else None
    if isinstance(claimed, int | float) and isinstance(codec_nbits, int | float):
        if int(claimed) != int(codec_nbits):
            problems.append(Problem(
                "metadata_mismatch",
                f"{name}: the attribute {ATTR_NBITS} says {int(claimed)} bits, the codec "
                f"metadata {int(codec_nbits)}",
            ))  # fmt: skip
    claimed_tol = array.attrs.get(ATTR_TOLERANCE)
    codec_tol = array.settings.get("tolerance") if array.codec in _LQ_CODEC_IDS else None
    if array.attrs.get(ATTR_MODE) in ABSOLUTE_MODES and isinstance(claimed_tol, int | float):
        if isinstance(codec_nbits, int | float):
            codec_says = f"{int(codec_nbits)} bits"
        elif isinstance(codec_tol, int | float) and not math.isclose(
            float(codec_tol), float(claimed_tol), rel_tol=1e-9
        ):
            codec_says = f"tolerance {codec_tol:.6g}"
        else:
            codec_says = None
        if codec_says is not None:
            problems.append(Problem(
                "metadata_mismatch",
                f"{name}: the attribute {ATTR_TOLERANCE} says {claimed_tol:.6g}, the codec "
                f"metadata {codec_says}",
            ))  # fmt: skip
    elif isinstance(codec_tol, int | float) and isinstance(claimed, int | float):
        problems.append(Problem(
            "metadata_mismatch",
            f"{name}: the attribute {ATTR_NBITS} says {int(claimed)} bits, the codec "
            f"metadata tolerance {codec_tol:.6g}",
        ))  # fmt: skip
    promised = array.attrs.get(ATTR_BOUND)
    if isinstance(promised, int | float) and isinstance(claimed, int | float):
        expected = full_scale_bound(int(claimed))
        if not math.isclose(float(promised), expected, rel_tol=1e-9):
            problems.append(Problem(
                "metadata_mismatch",
                f"{name}: the attribute {ATTR_BOUND} is {promised:.6g}, but {int(claimed)} "
                f"bits give {expected:.6g}",
            ))  # fmt: skip
    return problems


@dataclasses.dataclass(frozen=True)
class _ShardLayout:
    """Chunks per shard along each dim, and the size of the index at the end of a shard."""

    per_shard: tuple[int, ...]
    index_size: int


#: An absent chunk's offset and length in a shard's index.
_ABSENT = 2**64 - 1


def _shard_layout(array: ArrayReport) -> _ShardLayout | None:
    """Where a sharded array's shards keep their index: at the end, as zarr writes it by
    default (little-endian ``uint64`` offset and length per chunk, then a crc32c); None
    for another layout (its chunks are then read without looking into the index)."""
    config = array.codecs[0].get("configuration") or {}
    index_codecs = [
        (entry.get("name"), (entry.get("configuration") or {}).get("endian", "little"))
        for entry in config.get("index_codecs") or []
    ]
    if config.get("index_location", "end") != "end" or index_codecs not in (
        [("bytes", "little"), ("crc32c", "little")],
        [("bytes", "little")],
    ):
        return None
    per_shard = tuple(s // c for s, c in zip(array.shards, array.chunks, strict=True))
    checksum = 4 if len(index_codecs) == 2 else 0
    return _ShardLayout(per_shard, 16 * math.prod(per_shard) + checksum)


def _chunk_reader(name, dst_var, array, group, keys, fs, root, location, pad) -> _ChunkReader:
    """How to read ``name``'s chunks from the destination; ``keys``: the store's objects,
    ``group``: the destination's root Zarr group (consolidated metadata if there is)."""
    from dask.array.core import normalize_chunks

    grid = normalize_chunks(tuple(dst_var.encoding.get("chunks") or dst_var.shape), dst_var.shape)
    key, nbits = None, None
    sharded = array is not None and array.shards is not None
    shard = _shard_layout(array) if sharded else None
    try:
        metadata = group[name].metadata
    except (KeyError, ValueError):
        metadata = None
    if metadata is not None and not sharded:
        # Zarr's own spelling of the key: v2 "0.0" or "0/0", v3 "c/0/0" or the v2 encoding.
        def key(coords: tuple[int, ...]) -> str:
            return f"{name}/{metadata.encode_chunk_key(coords)}"

    elif metadata is not None:
        per_shard = tuple(s // c for s, c in zip(array.shards, array.chunks, strict=True))

        def key(coords: tuple[int, ...]) -> str:  # the shard's key: zarr's grid is of shards
            shard_coords = tuple(c // n for c, n in zip(coords, per_shard, strict=True))
            return f"{name}/{metadata.encode_chunk_key(shard_coords)}"

    tolerance = chunk_shape = None
    if array is not None and array.codec in ("layerquantizer1", "layerquantizer"):
        claimed = array.attrs.get(ATTR_NBITS)
        claimed_tol = array.attrs.get(ATTR_TOLERANCE)
        if array.attrs.get(ATTR_MODE) in ABSOLUTE_MODES and isinstance(claimed_tol, int | float):
            tolerance = float(claimed_tol)
        elif array.tolerance is not None:
            tolerance = array.tolerance
        else:
            nbits = int(claimed) if isinstance(claimed, int | float) else array.nbits
        # Inside a shard the chunks' bytes are read through the shard's index.
        chunk_shape = tuple(array.chunks) if not sharded or shard is not None else None
    if sharded and shard is None:
        nbits = None  # where each chunk lies in its shard is not known: no header is read
    return _ChunkReader(
        name, dst_var.variable, grid, key, keys, fs, root, nbits, location, pad, tolerance,
        chunk_shape, shard if key is not None else None,
    )  # fmt: skip


#: Problems listed per variable and kind; the others are counted (a store with a million
#: bad chunks would print a million problems).
MAX_PROBLEMS_PER_KIND = 100


def _problem_order(problem: Problem) -> tuple:
    return (PROBLEM_KINDS.index(problem.kind), problem.chunk or ())


class _ProblemList:
    """The first :data:`MAX_PROBLEMS_PER_KIND` problems of each kind in chunk order, in
    memory bounded by that number whatever arrives and in which order; the rest counted."""

    def __init__(self, limit: int = MAX_PROBLEMS_PER_KIND) -> None:
        self.limit = limit
        self.kept: dict[str, list[Problem]] = {}
        self.counts: dict[str, int] = {}

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] = self.counts.get(problem.kind, 0) + 1
        kept = self.kept.setdefault(problem.kind, [])
        kept.append(problem)
        if len(kept) >= 2 * self.limit:
            kept.sort(key=_problem_order)
            del kept[self.limit :]

    def result(self) -> tuple[list[Problem], dict[str, int]]:
        """The problems kept, sorted by kind and chunk, and the count of the others by kind."""
        listed, omitted = [], {}
        for kind, kept in self.kept.items():
            kept.sort(key=_problem_order)
            listed.extend(kept[: self.limit])
            if self.counts[kind] > self.limit:
                omitted[kind] = self.counts[kind] - self.limit
        listed.sort(key=_problem_order)
        return listed, omitted


class _Tally:
    """What the chunks of one variable checked so far add up to: the statistics per layer
    and y/x block of the layers checked, the problems, the count.

    The statistics of a sample are kept per leading chunk (the chunk's index but for its
    y/x axes), from its first chunk checked: memory grows with the layers checked, not with
    the variable's (a sample of a few chunks of 93,544 steps x 13 levels holds a few dozen
    layers). Where ``every_chunk`` will be checked, one array holds them all, in layer
    order: an array and a dict entry per leading chunk cost 40 % more (93 MiB, not 65, for
    a pressure-level variable of the full-size store), and putting them back in layer
    order 270 MiB at the end.
    """

    def __init__(self, reader: _ChunkReader, every_chunk: bool = False) -> None:
        pad = reader.pad
        self.pad = pad
        self.sizes = (1,) * pad + reader.chunk_sizes
        self.grid = (1,) * pad + reader.grid
        self.chunks = math.prod(self.grid)
        #: Per leading chunk index: its layers x nby x nbx x 7 (unchecked blocks _NEUTRAL).
        self.blocks: dict[tuple[int, ...], np.ndarray] = {}
        #: With ``every_chunk``: all the layers x nby x nbx x 7, in place of ``blocks``.
        self.every: np.ndarray | None = None
        if every_chunk:
            self.every = np.empty(((1,) * pad + reader.shape)[:-2] + (*self.grid[-2:], 7))
            self.every[...] = _NEUTRAL
        self.problems = _ProblemList()
        self.checked = 0
        self.absent_unchecked = 0  # chunks absent from the listing, outside a sample

    def add(self, coords: tuple[int, ...], stats: np.ndarray, problems: list[Problem]) -> None:
        """Take in the result of the block at ``coords`` (with the pad axes)."""
        lead = stats.shape[:-3]
        if self.every is not None:
            where = tuple(
                slice(c * size, c * size + n)
                for c, size, n in zip(coords[:-2], self.sizes[:-2], lead, strict=True)
            )
            self.every[(*where, coords[-2], coords[-1])] = stats.reshape(*lead, 7)
        else:
            block = self.blocks.get(coords[:-2])
            if block is None:
                block = self.blocks[coords[:-2]] = np.empty((*lead, *self.grid[-2:], 7))
                block[...] = _NEUTRAL
            block[..., coords[-2], coords[-1], :] = stats.reshape(*lead, 7)
        for problem in problems:
            self.problems.add(problem)
        self.checked += 1

    def layers_checked(self) -> tuple[np.ndarray, np.ndarray]:
        """The statistics of the layers checked (layers x nby x nbx x 7) and each layer's
        index along the leading dims (layers x leading dims), in the variable's layer order."""
        ndim = len(self.grid) - 2
        if self.every is not None:  # in layer order already: a view, no copy
            lead = self.every.shape[:-3]
            rows = math.prod(lead)
            index = np.indices(lead, dtype=np.int64).reshape(ndim, rows).T
            return self.every.reshape(rows, *self.every.shape[-3:]), index
        stats = [np.empty((0, *self.grid[-2:], 7))]
        index = [np.empty((0, ndim), dtype=np.int64)]
        for lead_chunk, block in self.blocks.items():
            lead = block.shape[:-3]
            rows = math.prod(lead)
            stats.append(block.reshape(rows, *block.shape[-3:]))
            start = [c * size for c, size in zip(lead_chunk, self.sizes[:-2], strict=True)]
            index.append(np.indices(lead, dtype=np.int64).reshape(ndim, rows).T + start)
        stats, index = np.concatenate(stats), np.concatenate(index)
        if ndim and len(index) > 1:
            order = np.lexsort(index.T[::-1])
            stats, index = stats[order], index[order]
        return stats, index


def _chosen_chunks(
    reader: _ChunkReader, grid: tuple[int, ...], sample: int | None, seed: int
) -> tuple[list[tuple[int, ...]] | None, int]:
    """The chunk coordinates (with the pad axes) a ``sample`` of the variable checks, in
    grid order, and how many chunks absent from the store's listing it leaves unchecked
    (None, 0: every chunk).

    ``sample`` chunks at random, seeded by ``seed`` and the variable's name (a variable
    gets the same chunks whatever else is verified with it); then, since the listing is
    read anyway, up to ``sample`` more among the chunks absent from it, which cost one
    source read each (an absent chunk is right where the source is all fill values, which
    only the source can tell; a store may legitimately lack many, so not all are read)."""
    import zlib

    total = math.prod(grid)
    if sample is None or sample >= total:
        return None, 0
    rng = np.random.default_rng([seed, zlib.crc32(reader.name.encode())])
    picked = {int(i) for i in rng.choice(total, size=sample, replace=False)}
    unchecked = 0
    if reader.key is not None and reader.present is not None:
        pad = reader.pad
        absent = [
            index
            for index, coords in enumerate(np.ndindex(grid))
            if index not in picked and not reader.listed(coords[pad:])
        ]
        if len(absent) > sample:
            unchecked = len(absent) - sample
            absent = [absent[int(i)] for i in rng.choice(len(absent), sample, replace=False)]
        picked.update(absent)
    return [tuple(int(c) for c in np.unravel_index(i, grid)) for i in sorted(picked)], unchecked


@dataclasses.dataclass(frozen=True)
class _Stores:
    """How to open the two stores where chunks are checked (small, picklable); ``run``
    names one verify call, under which a process keeps them open."""

    run: str
    src: str
    dst: str
    src_token: Any
    dst_token: Any


class _OpenStores:
    """The stores of one run, opened once per process: lazily indexed datasets (no dask:
    a chunk reads its own region) and the destination's filesystem."""

    def __init__(self, stores: _Stores, src_ds=None, dst_ds=None) -> None:
        from layerquantizer.storage import filesystem

        self.src_ds = (
            src_ds if src_ds is not None else open_dataset(stores.src, token=stores.src_token)
        )
        self.dst_ds = (
            dst_ds if dst_ds is not None else open_dataset(stores.dst, token=stores.dst_token)
        )
        self.fs, _ = filesystem(stores.dst, "r", token=stores.dst_token)
        self.sources: dict[str, xr.DataArray] = {}
        self.lock = threading.Lock()
        # Per variable, the shard indexes read here (see _ChunkReader._inner_span).
        self.shard_indexes: dict[str, OrderedDict] = {}
        self.shard_lock = threading.Lock()

    def shard_index_cache(self, name: str) -> OrderedDict:
        with self.lock:
            return self.shard_indexes.setdefault(name, OrderedDict())

    def source(self, name: str) -> xr.DataArray:
        """The source variable over the destination's coordinates."""
        with self.lock:
            if name not in self.sources:
                self.sources[name] = _align_to(self.src_ds[name], self.dst_ds[name], name)
            return self.sources[name]


#: The stores opened in this process, by run; a worker keeps the last few.
_OPENED: dict[str, _OpenStores] = {}
_OPENED_LOCK = threading.Lock()
_OPENED_KEPT = 2


def _opened(stores: _Stores) -> _OpenStores:
    with _OPENED_LOCK:
        found = _OPENED.get(stores.run)
        if found is None:
            while len(_OPENED) >= _OPENED_KEPT:
                _OPENED.pop(next(iter(_OPENED)))
            found = _OPENED[stores.run] = _OpenStores(stores)
        return found


@dataclasses.dataclass(frozen=True)
class _ChunkJob:
    """One chunk to check: ``reader`` detached (see :meth:`_ChunkReader.detached`),
    ``coords`` with the pad axes, ``listed`` as :meth:`_ChunkReader.listed` said."""

    stores: _Stores
    reader: _ChunkReader
    coords: tuple[int, ...]
    listed: bool | None


def _check_chunk(job: _ChunkJob, own_process: bool) -> tuple:
    """Read the chunk's source region and the chunk, compare them; ``(name, coords, stats,
    problems)``. ``own_process``: on a dask worker, whose libraries get one thread."""
    if own_process:
        from layerquantizer.dataset._unit import configure_process

        configure_process(zarr_threads=1)
    opened = _opened(job.stores)
    reader = job.reader
    src_var = opened.source(reader.name)
    region = reader.region(job.coords[reader.pad :])
    a = np.asarray(src_var.isel(dict(zip(src_var.dims, region, strict=True))).values)
    for _ in range(reader.pad):  # a vector or scalar is one layer
        a = a[None]
    attached = reader.attached(
        opened.dst_ds[reader.name].variable,
        opened.fs,
        opened.shard_index_cache(reader.name),
        opened.shard_lock,
    )
    stats, problems = attached.check(a, job.coords, job.listed)
    return reader.name, job.coords, stats, problems


def _positive(option: str, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise RequestError(f"{option} must be a finite number >= 0, got {value}")
    return value


def verify(
    src: str,
    dst: str,
    *,
    variables: Sequence[str] | None = None,
    token: Any = None,
    storage_options: Mapping | None = None,
    dst_storage_options: Mapping | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    worker_timeout: float | None = None,
    max_abs_error: float | None = None,
    max_fs_error: float | None = None,
    sample: int | None = None,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Compare ``dst`` with ``src`` per variable and level, in float64, chunk by chunk.

    For each 2-D layer (one level at one time step) it finds the source's finite range
    ``[min, max]`` and checks every value: ``|x - y| <= bound * (max - min) + ulp32(x)``
    with ``bound`` the full-scale bound of the destination's codec (LayerQuantizer:
    ``0.5 / (2**nbits - 1)``, from the codec metadata or, failing that, the
    ``layerquantizer_nbits`` attribute; a lossless codec: exact equality). NaN and
    infinities must match exactly. ``max_fs_error`` is the largest error over its layer's
    range. Memory stays at a few chunks.

    Whatever keeps a value from being checked is a :class:`Problem` of its variable, and
    the other chunks are still checked (see :data:`PROBLEM_KINDS`): a chunk that cannot be
    decoded, a missing chunk (unless the source there is all fill values, which lq does not
    store), a chunk encoded with fewer bits than the attributes promise, values that differ
    under a codec whose bound is unknown (unless ``max_abs_error`` or ``max_fs_error`` state
    one), a source variable missing from ``dst`` and not dropped by its config. An
    unfinished ``dst`` (see :func:`inspect`) is a problem of the report itself.

    A variable quantized with an absolute tolerance ``X`` (``layerquantizer_mode:
    "tolerance"``) is checked against ``|x - y| <= X + ulp32(x)`` instead; each of its
    chunks' layer tables is read too, and a layer quantized with a step over ``2 X`` whose
    values miss that bound is a ``metadata_mismatch`` (a looser chunk than promised).

    The destination may hold a subset (times, levels) of the source. ``token``: gcsfs
    credentials for ``gs://`` stores (both; by default ``gs://`` is read anonymously).
    ``progress(chunks_done, chunks_total)`` is called in the calling thread as each chunk
    is checked.

    ``sample=N`` checks N chunks per variable, chosen at random from ``seed`` (default
    :data:`DEFAULT_SAMPLE_SEED`) and the
    variable's name (the same chunks on every run with the same seed), for stores too
    large to read twice; the report says so (:meth:`VerifyReport.coverage`). What it cannot
    see: values beyond the bound, NaN that differ, corrupt chunks or chunks looser than
    promised, in the chunks not sampled; the statistics are those of the sample (a layer's
    range too, so the full-scale bound is over the chunks of the layer sampled). Chunks
    absent from the store's listing are looked for in every chunk whatever the sample
    (except inside shards, whose chunks are not listed), and up to N of them per variable
    besides the sample are compared with the source; the others are counted
    (``chunks_absent_unchecked``) and said in the report.

    ``workers`` and ``scheduler`` choose where chunks are checked, as for :func:`compress`
    (see :func:`layerquantizer.dataset._parallel.open_runner`): by default one thread per
    core here; ``workers=N`` a local cluster of N processes; ``scheduler="threads"``
    (``workers`` threads), ``"synchronous"``, ``"processes"``, or a dask scheduler's
    address, whose workers must reach both stores.

    Examples
    --------
    >>> import tempfile
    >>> from layerquantizer.dataset import compress, verify, write_sample
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=1)
    >>> _ = compress(f"{tmp}/in.zarr", f"{tmp}/out.zarr", variables=["temperature"], nbits=12)
    >>> verify(f"{tmp}/in.zarr", f"{tmp}/out.zarr").ok
    True
    """
    import uuid

    import layerquantizer.dataset._parallel as _parallel
    from layerquantizer.dataset._errors import DatasetError

    user_abs = _positive("--max-abs-error", max_abs_error)
    user_fs = _positive("--max-fs-error", max_fs_error)
    if sample is not None and not (isinstance(sample, int) and sample >= 1):
        raise RequestError(f"--sample must be a whole number of chunks >= 1, got {sample}")
    if seed is None:
        seed = DEFAULT_SAMPLE_SEED
    elif sample is None:
        raise RequestError("--seed chooses the chunks of --sample N: give --sample too")
    if not (isinstance(seed, int) and seed >= 0):
        raise RequestError(f"--seed must be a whole number >= 0, got {seed}")
    if scheduler not in (None, "threads", "synchronous") or workers is not None:
        if src.startswith("memory://") or dst.startswith("memory://"):
            raise RequestError(
                "memory:// stores live in one process; with --workers or --scheduler use a "
                "path or a gs:// URL"
            )
    if worker_timeout is None:
        worker_timeout = _parallel.DEFAULT_WORKER_TIMEOUT
    src_token = _token(token, storage_options)
    dst_token = _token(token, dst_storage_options, "dst_storage_options")
    try:
        # First: a scheduler that does not answer fails before the stores are listed.
        runner_context = _parallel.open_runner(scheduler, workers, worker_timeout)
        with runner_context as runner:
            return _verify_on(
                runner, src, dst, src_token, dst_token, variables, user_fs, user_abs,
                sample, seed, progress, uuid.uuid4().hex,
            )  # fmt: skip
    except _parallel.SchedulerError as exc:
        raise RequestError(str(exc)) from exc
    except _parallel.WorkersLostError as exc:
        raise DatasetError(str(exc)) from exc


def _verify_on(
    runner, src, dst, src_token, dst_token, variables, user_fs, user_abs, sample, seed,
    progress, run,
) -> VerifyReport:  # fmt: skip
    """:func:`verify`, its chunks checked on ``runner``; ``run`` names the call (see
    :class:`_Stores`)."""
    import zarr

    import layerquantizer.dataset._parallel as _parallel
    from layerquantizer.dataset._resume import PROGRESS_DIR
    from layerquantizer.storage import filesystem, open_store

    src_ds = open_dataset(src, token=src_token)  # lazily indexed: read region by region
    try:
        dst_ds = open_dataset(dst, token=dst_token)
    except SourceError as exc:
        fs, root = filesystem(dst, "r", token=dst_token)
        if fs.exists(f"{root.rstrip('/')}/{PROGRESS_DIR}/manifest.json"):
            raise SourceError(_no_metadata_yet(dst)) from exc
        raise
    store = inspect(dst, token=dst_token)
    dropped = {str(n) for n in store.attrs.get(ATTR_DROPPED) or ()}
    if variables is None:
        names = [str(n) for n in dst_ds.data_vars if n in src_ds.data_vars]
        if not names:
            raise RequestError(f"{src} and {dst} have no data variable in common")
        missing = [str(n) for n in src_ds.data_vars if n not in dst_ds.data_vars]
    else:
        names, missing = [], []
        for name in variables:
            if name not in src_ds.data_vars:
                raise RequestError(
                    f"variable {name!r} not found in {src}; available: "
                    f"{', '.join(map(str, src_ds.data_vars))}"
                )
            (names if name in dst_ds.data_vars else missing).append(name)
    skipped = {
        name: "dropped by the config it was written with" for name in missing if name in dropped
    }
    missing = [name for name in missing if name not in skipped]
    fs, root = filesystem(dst, "r", token=dst_token)
    with _quiet_consolidated():
        group = zarr.open_group(open_store(dst, "r", token=dst_token), mode="r")
    stores = _Stores(run, src, dst, src_token, dst_token)
    if not runner.distributed:  # threads here use the stores opened already
        with _OPENED_LOCK:
            _OPENED[run] = _OpenStores(stores, src_ds, dst_ds)
    readers: dict[str, tuple[_ChunkReader, list | None]] = {}
    tallies: dict[str, _Tally] = {}
    total = 0
    for name in names:
        src_var, dst_var = src_ds[name], dst_ds[name]
        if src_var.dtype.kind not in "fiub" or dst_var.dtype.kind not in "fiub":
            skipped[name] = f"not numeric ({src_var.dtype}, {dst_var.dtype})"
            continue
        _align_to(src_var, dst_var, name)  # a request error before anything is read
        pad = max(0, 2 - dst_var.ndim)
        reader = _chunk_reader(
            name, dst_var, store.variables.get(name), group, store.keys, fs,
            root.rstrip("/"), dst, pad,
        )  # fmt: skip
        chosen, absent_unchecked = _chosen_chunks(reader, (1,) * pad + reader.grid, sample, seed)
        tally = tallies[name] = _Tally(reader, every_chunk=chosen is None)
        tally.absent_unchecked = absent_unchecked
        readers[name] = (reader, chosen)
        total += tally.chunks if chosen is None else len(chosen)

    def jobs():
        for name, (reader, chosen) in readers.items():
            detached = reader.detached()
            grid = tallies[name].grid
            for coords in np.ndindex(grid) if chosen is None else chosen:
                listed = reader.listed(coords[reader.pad :])
                yield _ChunkJob(stores, detached, coords, listed)

    done = 0

    def on_done(result) -> None:
        nonlocal done
        name, coords, stats, problems = result
        tallies[name].add(coords, stats, problems)
        done += 1
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    try:
        with _single_threaded_blosc():
            _parallel.run_jobs(
                jobs(), runner, on_done,
                submit=lambda job: runner.executor.submit(_check_chunk, job, runner.distributed),
            )  # fmt: skip
    finally:
        with _OPENED_LOCK:
            _OPENED.pop(run, None)
    checks = {}
    for name, tally in tallies.items():
        checks[name] = _check_variable(
            name, _align_to(src_ds[name], dst_ds[name], name), store.variables.get(name),
            tally, user_fs, user_abs,
        )  # fmt: skip
    for name in missing:
        checks[name] = VariableCheck(
            name=name, codec="-", nbits=None, codec_bound=None, levels=[], bound_from=None,
            problems=[Problem(
                "missing_variable",
                f"{name}: in {src} but not in {dst}, and not dropped by the config it was "
                "written with",
            )],
        )  # fmt: skip
    problems = []
    if not store.complete:
        problems.append(Problem("incomplete", store.incomplete or f"{dst} is incomplete"))
    return VerifyReport(
        src=src, dst=dst, variables=checks, skipped=skipped, problems=problems,
        sample=None if sample is None else {"chunks_per_variable": sample, "seed": seed},
    )  # fmt: skip
