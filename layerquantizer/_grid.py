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

import numpy as np

#: Values sampled per layer.
SAMPLE_SIZE = 4096
# A grid is worth using when it saves at least a quarter of a bit per value.
_MIN_GAIN = 2.0**0.25
# Gaps up to this many grid steps pin the step down before the whole span refines it.
_SHORT_GAP = 16


def coarse_grid(
    layer: np.ndarray, vmin: float, vmax: float, step: float
) -> tuple[float, float] | None:
    """Offset and step of a grid coarser than ``step`` holding the layer's values, or None.

    Parameters
    ----------
    layer : float32 array
        The layer's values (any shape); only a strided sample is read.
    vmin, vmax : float
        The layer's finite minimum and maximum.
    step : float
        The quantization step the error bound allows; a grid must be coarser to be used.

    Examples
    --------
    >>> import numpy as np
    >>> x = (270.0 + 0.125 * np.arange(5000) % 97).astype(np.float32)
    >>> coarse_grid(x, float(x.min()), float(x.max()), step=0.001)
    (270.0, 0.125)
    """
    if step <= 0.0 or vmax <= vmin:
        return None
    flat = layer.reshape(-1)
    sample = flat[:: max(1, flat.size // SAMPLE_SIZE)].astype(np.float64)
    values = np.unique(sample[np.isfinite(sample)])
    if values.size < 3:
        return None
    # Packed values are rounded to float32 on the way out: allow that much noise.
    noise = 2.0 * math.ldexp(1.0, math.frexp(max(abs(vmin), abs(vmax)))[1] - 24)
    gaps = np.diff(values)
    smallest = gaps.min()
    if smallest < _MIN_GAIN * step or smallest <= 4.0 * noise:
        return None
    # The smallest gap seen may span several grid steps: try its simple fractions.
    for parts in range(1, 17):
        grid = smallest / parts
        if grid < _MIN_GAIN * step:
            break
        counts = np.rint(gaps / grid)
        short = counts <= _SHORT_GAP
        grid = gaps[short].sum() / counts[short].sum()
        total = np.rint(gaps / grid).sum()
        grid = (values[-1] - values[0]) / total
        positions = np.rint((values - values[0]) / grid)
        if np.abs(values - (values[0] + positions * grid)).max() <= noise:
            offset = values[0] - np.rint((values[0] - vmin) / grid) * grid
            return float(offset), float(grid)
    return None
