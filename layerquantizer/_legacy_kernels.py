"""Numba kernels of the original ``layerquantizer0.3b`` format: no I/O, no full-size temporaries.

The format quantizes each 2-D plane ``p`` of a float32 chunk to integers ``q`` in
``[0, 2**nbits - 1]`` between a stored ``lo = plane_min[p]`` and ``hi = plane_max[p]``;
NaN and +-inf get the code ``2**nbits``. With the Lorenzo transform, the stored integer is
the 2-D Lorenzo residual ``q[i,j] - q[i-1,j] - q[i,j-1] + q[i-1,j-1]`` (zero outside the
plane, so the first element of a plane is ``q`` itself) in 32-bit negabinary,
``(r + 0xAAAAAAAA) ^ 0xAAAAAAAA``; without it, ``q`` itself.

The arithmetic below is the one that reproduces the original package's bytes and decoded
values exactly (worked out from its test vectors):

* quantize: ``span = float32(hi - lo)``, ``scale = (1.0 / float64(span)) * (2**nbits - 1)``,
  ``q = rint(float64(float32(x - lo)) * scale)``, rounding half to even;
* dequantize: ``step = float64(float32(hi - lo)) / (2**nbits - 1)``,
  ``x = float32(float64(lo) + step * q)``.

All arithmetic on codes is modulo ``2**32`` (``uint32``), as the original's ``int32`` was,
so that no corrupt input can overflow anything. Every kernel works on C-contiguous arrays
whose shapes the caller has validated; numba does no bounds checking.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True, "boundscheck": False}

#: The constant of the negabinary conversion (Schroeppel's), binary 1010...10.
NEGABINARY_MASK = 0xAAAAAAAA


@numba.njit(**_JIT)
def finite_plane_ranges(planes):
    """Per-plane minimum and maximum of the finite values, as float32.

    Parameters
    ----------
    planes : float32[nplanes, ny, nx]

    Returns
    -------
    mins, maxs : float32[nplanes]
        A plane without a finite value gets ``0, 0``, as in the original.
    """
    nplanes = planes.shape[0]
    size = planes.shape[1] * planes.shape[2]
    mins = np.zeros(nplanes, np.float32)
    maxs = np.zeros(nplanes, np.float32)
    for plane in range(nplanes):
        flat = planes[plane].reshape(size)
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for n in range(size):
            x = flat[n]
            # inf is not finite, NaN fails both comparisons: neither moves lo or hi.
            if math.isfinite(x):
                lo = min(lo, x)
                hi = max(hi, x)
        if lo <= hi:
            mins[plane] = lo
            maxs[plane] = hi
    return mins, maxs


@numba.njit(**_JIT)
def quantize_planes(planes, mins, maxs, nbits, lorenzo, codes):
    """Quantize ``planes`` into ``codes`` (Lorenzo-predicted and negabinary if ``lorenzo``).

    Parameters
    ----------
    planes : float32[nplanes, ny, nx]
    mins, maxs : float32[nplanes]
        The stored plane ranges; every value of a plane lies within its range.
    nbits : int
        1 to 24.
    lorenzo : bool
    codes : uint32[nplanes, ny, nx]
        Output, the data section of the chunk.
    """
    nplanes, ny, nx = planes.shape
    levels = float((1 << nbits) - 1)
    nan_code = np.uint32(1 << nbits)
    mask = np.uint32(NEGABINARY_MASK)
    # q of the previous row and of this row; index 0 is the zero column left of the plane.
    prev = np.zeros(nx + 1, np.uint32)
    cur = np.zeros(nx + 1, np.uint32)
    for plane in range(nplanes):
        lo = mins[plane]
        span = np.float32(maxs[plane] - lo)
        if not span > 0:
            span = np.float32(1.0)  # the original's guard; its own ranges never need it
        scale = (1.0 / np.float64(span)) * levels
        prev[:] = 0
        for i in range(ny):
            row = planes[plane, i]
            out = codes[plane, i]
            for j in range(nx):
                x = row[j]
                if math.isfinite(x):
                    cur[j + 1] = np.uint32(np.rint(np.float64(np.float32(x - lo)) * scale))
                else:
                    cur[j + 1] = nan_code
            if lorenzo:
                for j in range(nx):
                    residual = cur[j + 1] - prev[j + 1] - cur[j] + prev[j]
                    out[j] = (residual + mask) ^ mask
                prev, cur = cur, prev
            else:
                for j in range(nx):
                    out[j] = cur[j + 1]


@numba.njit(**_JIT)
def dequantize_planes(codes, mins, maxs, nbits, lorenzo, out):
    """Inverse of :func:`quantize_planes`: fill ``out`` from ``codes``.

    Parameters
    ----------
    codes : uint32[nplanes, ny, nx]
    mins, maxs : float32[nplanes]
    nbits : int
        1 to 24.
    lorenzo : bool
    out : float32[nplanes, ny, nx]

    Returns
    -------
    int
        -1 if every reconstructed level is valid (``0 <= q <= 2**nbits``), else the flat
        index of the first invalid one; the caller treats that as corruption (``out`` is
        then partly written).
    """
    nplanes, ny, nx = codes.shape
    levels = float((1 << nbits) - 1)
    nan_code = np.uint32(1 << nbits)
    mask = np.uint32(NEGABINARY_MASK)
    nan = np.float32(np.nan)
    prev = np.zeros(nx, np.uint32)
    levels_row = np.empty(nx, np.uint32)
    for plane in range(nplanes):
        lo = np.float64(mins[plane])
        step = np.float64(np.float32(maxs[plane] - mins[plane])) / levels
        prev[:] = 0
        for i in range(ny):
            crow = codes[plane, i]
            if lorenzo:
                # q[i, j] - q[i-1, j] is the running sum of the residuals along the row.
                running = np.uint32(0)
                for j in range(nx):
                    running += (crow[j] ^ mask) - mask
                    levels_row[j] = running
                for j in range(nx):
                    prev[j] += levels_row[j]
                    levels_row[j] = prev[j]
            else:
                for j in range(nx):
                    levels_row[j] = crow[j]
            row = out[plane, i]
            bad = False
            for j in range(nx):
                q = levels_row[j]
                bad |= q > nan_code
                row[j] = nan if q == nan_code else np.float32(lo + step * np.float64(q))
            if bad:
                for j in range(nx):
                    if levels_row[j] > nan_code:
                        return (plane * ny + i) * nx + j
    return -1
