"""The packing grid of a source variable, from a few sampled chunks: what ``lq advise``
reports and ``precision: source`` keeps (:func:`find_source_grid`).

GRIB and netCDF packing leave every value of a field on a grid ``a + k * g``;
:func:`layerquantizer._grid.coarse_grids` finds ``g`` per layer, and :func:`snap_step` takes
it to the round step the packing used (ERA5: a power of two), so that quantizing with the
tolerance ``g / 2`` gives back every value on the grid bit for bit.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Source chunks ``precision: source`` reads per variable to find its packing grid.
SOURCE_SAMPLE = 3
#: Sampled chunks read at once (:func:`find_source_grids`): the reads wait on the store
#: (tens of ms per request on Google Cloud Storage) more than they compute.
SOURCE_READS = 8
# How near a detected grid step must be to a round one to be taken for it (snap_step).
_SNAP = 1e-4


def _source_chunks(var) -> tuple[int, ...]:
    """The variable's chunk shape in its store (the whole array where it has none)."""
    preferred = var.encoding.get("preferred_chunks") or {}
    chunks = var.encoding.get("chunks")
    return tuple(
        int(preferred.get(dim, chunks[axis] if chunks else size))
        for axis, (dim, size) in enumerate(var.sizes.items())
    )


def sample_block_bytes(var) -> int:
    """Bytes of one sampled chunk of ``var`` read as float32."""
    return math.prod(min(c, n) for c, n in zip(_source_chunks(var), var.shape, strict=True)) * 4


def _sample_chunks(shape, chunks, sample: int, rng) -> list[tuple[int, ...]]:
    grid = tuple(-(-size // chunk) for size, chunk in zip(shape, chunks, strict=True))
    total = math.prod(grid)
    picks = rng.choice(total, size=min(sample, total), replace=False)
    return [tuple(int(i) for i in np.unravel_index(pick, grid)) for pick in sorted(picks)]


def _read_block(var, index: tuple[int, ...], chunks: tuple[int, ...]) -> np.ndarray:
    """The values of source chunk ``index`` of ``var``, as float32."""
    region = {
        dim: slice(i * size, (i + 1) * size)
        for dim, i, size in zip(var.dims, index, chunks, strict=True)
    }
    return np.ascontiguousarray(var.isel(region).values, dtype=np.float32)


def _layer_grids(layers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer (``[L, n]``): the finite min and max, and the step of the packing grid its
    values sit on (NaN where none): any grid coarser than the float32 spacing of its values.
    """
    from layerquantizer._grid import coarse_grids
    from layerquantizer._kernels import float32_ulp

    low, high = _layer_ranges(layers)
    has = np.isfinite(low) & (high > low)
    peak = np.where(has, np.maximum(np.abs(low), np.abs(high)), 0.0)
    ulps = np.array([float32_ulp(float(v)) for v in peak])
    grids = np.full(len(layers), np.nan)
    if has.any():
        grids[has] = coarse_grids(layers[has], low[has], high[has], ulps[has])[1]
    return low, high, grids


def snap_step(step: float) -> float:
    """A detected grid step, rounded to the step the packing most likely used when within
    1e-4 of it: a power of two (GRIB's binary scale factor: ERA5 temperature on 2**-9 K),
    else two significant decimal digits (a decimal scale factor such as 0.01).

    The detected step carries the float32 rounding of the values it was fitted on; the exact
    step makes values on the grid come back bit for bit. A wrong snap costs exactness on
    the grid, never the bound (the codec checks every value against it).

    >>> snap_step(0.0009765621719527655), snap_step(0.12500001), snap_step(0.0100000007)
    (0.0009765625, 0.125, 0.01)
    >>> snap_step(1.72502708164403)
    1.72502708164403
    """
    if not (step > 0 and math.isfinite(step)):
        return step
    power = math.ldexp(1.0, round(math.log2(step)))
    if abs(step - power) <= _SNAP * power:
        return power
    decimal = float(f"{step:.2g}")
    if abs(step - decimal) <= _SNAP * decimal:
        return decimal
    return step


def _grid_step(grids: np.ndarray, ranged: np.ndarray) -> float | None:
    """The step of the packing grid of a variable from its sampled layers' (``grids``,
    NaN where none; ``ranged``: layers with a range): the finest one, snapped
    (:func:`snap_step`), or None unless every layer with a range sits on a grid."""
    if not ranged.any() or int(np.isfinite(grids).sum()) != int(ranged.sum()):
        return None
    return snap_step(float(np.nanmin(grids)))


@dataclasses.dataclass(frozen=True)
class SourceGrid:
    """The packing grid of a variable found in sampled chunks (:func:`find_source_grid`):
    ``step`` None when not every sampled layer with a range sits on a grid."""

    step: float | None
    layers: int
    layers_on_grid: int
    chunks: list[tuple[int, ...]]


def find_source_grid(var, sample: int = SOURCE_SAMPLE, seed: int = 0) -> SourceGrid:
    """Find the grid step the values of ``var`` (an xarray variable over a store) sit on,
    from ``sample`` of its source chunks picked at random with ``seed``: what
    ``precision: source`` keeps (see :mod:`layerquantizer.config`).

    Examples
    --------
    >>> import xarray as xr
    >>> values = (np.arange(4 * 30 * 40) % 701 * 0.125).reshape(4, 30, 40) + 250.0
    >>> var = xr.DataArray(values.astype(np.float32), dims=("time", "lat", "lon"))
    >>> find_source_grid(var).step
    0.125
    """
    return find_source_grids({"var": var}, sample, seed)["var"]


def find_source_grids(
    variables: Mapping[str, Any],
    sample: int = SOURCE_SAMPLE,
    seed: int = 0,
    threads: int = SOURCE_READS,
) -> dict[str, SourceGrid]:
    """:func:`find_source_grid` of each of ``variables`` (name -> xarray variable), the
    sampled chunks of all of them read by ``threads`` threads at once: the same chunks
    (each variable's own generator, seeded with ``seed``) and the same grids as one after
    another, in a fraction of the time over a remote store. A thread holds one chunk at a
    time, and keeps of it only its layers' grids.

    Examples
    --------
    >>> import xarray as xr
    >>> values = (np.arange(4 * 30 * 40) % 701).reshape(4, 30, 40) + 250.0
    >>> found = find_source_grids({
    ...     "a": xr.DataArray((values * 0.125).astype(np.float32), dims=("t", "y", "x")),
    ...     "b": xr.DataArray((values * 0.5).astype(np.float32), dims=("t", "y", "x")),
    ... })
    >>> {name: grid.step for name, grid in found.items()}
    {'a': 0.125, 'b': 0.5}
    """
    picked = {}
    for name, var in variables.items():
        chunks = _source_chunks(var)
        rng = np.random.default_rng(seed)  # per variable: its picks whatever else is read
        picked[name] = (chunks, _sample_chunks(var.shape, chunks, sample, rng))
    reads = [(name, index) for name, (_, picks) in picked.items() for index in picks]

    def grids_of(read: tuple[str, tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        name, index = read
        block = _read_block(variables[name], index, picked[name][0])
        low, high, found = _layer_grids(block.reshape(-1, block.shape[-2] * block.shape[-1]))
        return found, np.isfinite(low) & (high > low)

    if threads <= 1 or len(reads) <= 1:
        results = [grids_of(read) for read in reads]
    else:
        with cf.ThreadPoolExecutor(min(threads, len(reads)), "lq-source-grid") as pool:
            results = list(pool.map(grids_of, reads))
    per_variable: dict[str, list] = {name: [] for name in variables}
    for (name, _), result in zip(reads, results, strict=True):
        per_variable[name].append(result)
    found_grids = {}
    for name, blocks in per_variable.items():
        grids_all = np.concatenate([grids for grids, _ in blocks])
        ranged_all = np.concatenate([ranged for _, ranged in blocks])
        found_grids[name] = SourceGrid(
            step=_grid_step(grids_all, ranged_all),
            layers=int(ranged_all.sum()),
            layers_on_grid=int(np.isfinite(grids_all).sum()),
            chunks=picked[name][1],
        )
    return found_grids


def _layer_ranges(layers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(layers)
    with np.errstate(invalid="ignore"):
        mins = np.where(finite, layers, np.inf).min(axis=1).astype(np.float64)
        maxs = np.where(finite, layers, -np.inf).max(axis=1).astype(np.float64)
    return mins, maxs
