"""Find the coarse value grid that packed data (GRIB, netCDF scale/offset) sits on.

Reanalysis fields come out of packing: their values are ``a + k * g`` rounded to float32,
for integers ``k``. When ``g`` is coarser than the quantization step, quantizing on the
grid itself (step ``g``) loses nothing the data had, needs fewer levels and so fewer
residual bits. pcodec's float-multiplier mode exploits the same structure.

Detection only proposes a grid; the encoder still checks every value against the error
bound and keeps those that miss it exactly, so a wrong guess costs ratio, never accuracy.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Values sampled per layer.
SAMPLE_SIZE = 4096
# A grid is worth using when it saves at least a quarter of a bit per value.
_MIN_GAIN = 2.0**0.25
# Gaps up to this many grid steps pin the step down before the whole span refines it.
_SHORT_GAP = 16
# The smallest gap in a sample may span several grid steps: its fractions up to this.
_MAX_PARTS = 16

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def _distinct_finite(sorted_sample):
    """The distinct finite values of a sorted sample (NaN sorts last, infinities at the ends)."""
    values = np.empty(sorted_sample.size)  # float64
    count = 0
    for x in sorted_sample:
        if math.isfinite(x) and (count == 0 or x != values[count - 1]):
            values[count] = x
            count += 1
    return values[:count]


@numba.njit(**_JIT)
def _fit(values, gaps, grid, noise):
    """Refine a candidate step on the gaps; the step if every value sits on it, else 0."""
    short_sum = 0.0
    short_count = 0.0
    for gap in gaps:
        count = np.rint(gap / grid)
        if count <= _SHORT_GAP:
            short_sum += gap
            short_count += count
    grid = short_sum / short_count
    total = 0.0
    for gap in gaps:
        total += np.rint(gap / grid)
    grid = (values[-1] - values[0]) / total
    for value in values:
        position = np.rint((value - values[0]) / grid)
        if abs(value - (values[0] + position * grid)) > noise:
            return 0.0
    return grid


def coarse_grids(
    layers: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    steps: np.ndarray,
    fill: np.float32 | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each layer, the offset and step of a grid coarser than ``steps`` holding its
    values, or NaN when there is none.

    Parameters
    ----------
    layers : float32[L, n]
        The layers, flattened; only a strided sample of each is read.
    mins, maxs : float64[L]
        Each layer's finite minimum and maximum.
    steps : float64[L]
        The quantization step the error bound allows; a grid must be coarser to be used.
    fill : float32, optional
        The fill value Zarr pads edge chunks with: left out of the sample, like NaN.
    """
    stride = max(1, layers.shape[1] // SAMPLE_SIZE)
    samples = layers[:, ::stride]
    if fill is not None:
        samples = np.where(samples == fill, np.float32(np.nan), samples)
    # NumPy's sort is vectorized, numba's is not: sort here, the rest in the kernel.
    samples = np.sort(samples, axis=1)
    return _coarse_grids(samples, mins, maxs, steps)


@numba.njit(**_JIT)
def _coarse_grids(samples, mins, maxs, steps):
    nlayers = samples.shape[0]
    offsets = np.full(nlayers, np.nan)
    grids = np.full(nlayers, np.nan)
    for index in range(nlayers):
        step = steps[index]
        if step <= 0.0:
            continue
        values = _distinct_finite(samples[index])
        if values.size < 3:
            continue
        # Packed values are rounded to float32 on the way out: allow that much noise.
        largest = max(abs(mins[index]), abs(maxs[index]))
        noise = 2.0 * math.ldexp(1.0, math.frexp(largest)[1] - 24)
        gaps = np.diff(values)
        smallest = gaps.min()
        if smallest < _MIN_GAIN * step or smallest <= 4.0 * noise:
            continue
        for parts in range(1, _MAX_PARTS + 1):
            grid = smallest / parts
            if grid < _MIN_GAIN * step:
                break
            grid = _fit(values, gaps, grid, noise)
            if grid > 0.0:
                grids[index] = grid
                offsets[index] = values[0] - np.rint((values[0] - mins[index]) / grid) * grid
                break
    return offsets, grids


def coarse_grid(
    layer: np.ndarray, vmin: float, vmax: float, step: float
) -> tuple[float, float] | None:
    """Offset and step of a grid coarser than ``step`` holding ``layer``'s values, or None.

    Examples
    --------
    >>> import numpy as np
    >>> x = (270.0 + 0.125 * np.arange(5000) % 97).astype(np.float32)
    >>> coarse_grid(x, float(x.min()), float(x.max()), step=0.001)
    (270.0, 0.125)
    >>> coarse_grid(x + np.float32(1e-3) * (np.arange(5000) % 2), 270.0, 282.2, 0.001) is None
    True
    """
    offsets, grids = coarse_grids(
        np.ascontiguousarray(layer, np.float32).reshape(1, -1),
        np.array([vmin], float),
        np.array([vmax], float),
        np.array([step], float),
    )
    if np.isnan(grids[0]):
        return None
    return float(offsets[0]), float(grids[0])
