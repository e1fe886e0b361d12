"""Numba kernels of the linear predictor (predictor code 6, format version 4).

At 16 bits and more the Lorenzo residual of a smooth field is mostly the field's own
curvature at the grid scale, and a predictor fitted to the layer does better: six
neighbours, ``W = q[i, j-1]``, ``N = q[i-1, j]``, ``NW``, ``NE``, ``WW = q[i, j-2]`` and
``NN = q[i-2, j]``, weighted by integer coefficients in 1/256 (:data:`SHIFT`) stored per
layer. Where a neighbour is missing (rows 0 and 1, columns 0, 1 and ``nx - 1``) the Lorenzo
predictor with zeros outside the layer stands in. The prediction is

    ``p = (cW W + cN N + cNW NW + cNE NE + cWW WW + cNN NN + 128) >> 8``

(an arithmetic shift, that is ``floor``), and, as with Lorenzo, the residual ``q - p`` is
taken modulo ``2**nbits`` and zigzag-coded. Any coefficients decode to some levels: nothing
here needs checking beyond the sizes. The sums are computed in float64, exact for levels
below ``2**24`` and coefficients of 16 bits, so that the loops vectorize (AVX2 has no 64-bit
integer multiply).

Like the other kernels, these trust the sizes they are given: the caller checks them.
"""

from __future__ import annotations

import numba
import numpy as np

from layerquantizer._kernels import _load_codes, _quantize_row, _row_ulps, _store_codes

_JIT = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}

#: Coefficients are integers in units of ``2**-SHIFT``.
SHIFT = 8
#: Coefficients per layer, in the order W, N, NW, NE, WW, NN.
COEFFICIENTS = 6
#: The most the coefficients' magnitudes may add up to (4 in all): predictions of levels
#: below ``2**24`` then stay below ``2**26`` in magnitude.
MAX_WEIGHT = 4 << SHIFT
_ROUND = float(1 << (SHIFT - 1))
_SCALE = 1.0 / (1 << SHIFT)


@numba.njit(**_JIT)
def _prediction(cur, above, above2, j, nx, linear, c):
    """The prediction at column ``j`` (levels after two zero columns, one after the end)."""
    if linear and 2 <= j <= nx - 2:
        total = (
            c[0] * cur[j + 1] + c[1] * above[j + 2] + c[2] * above[j + 1] + c[3] * above[j + 3]
            + c[4] * cur[j] + c[5] * above2[j + 2]
        )  # fmt: skip
        return np.int32(np.floor((total + _ROUND) * _SCALE))
    return cur[j + 1] + above[j + 2] - above[j + 1]


@numba.njit(**_JIT)
def linear_encode(
    layer, offset, step, tolerance, nbits, coefficients, planes, exception_bits, bit_base
):
    """Quantize, predict and code one layer with the linear predictor.

    Parameters
    ----------
    layer : float32[ny, nx]
    offset, step : float
        Value of level 0 and the distance between levels (0 for a layer of one level).
    tolerance : float
        The error a value may have (besides one float32 ulp) before it becomes an exception.
    nbits : int
    coefficients : int64[6]
        W, N, NW, NE, WW, NN, in units of ``2**-SHIFT``, their magnitudes adding up to
        :data:`MAX_WEIGHT` at most.
    planes : uint8[nbytes, ny * nx], out
        The codes, byte-planar, in row order.
    exception_bits : uint8[...], in/out
        Exception bitmap; value ``(i, j)`` is bit ``bit_base + i * nx + j``.
    bit_base : int

    Returns
    -------
    int
        The number of exceptions.
    """
    ny, nx = layer.shape
    nbytes = planes.shape[0]
    mask = np.int32((1 << nbits) - 1)
    sign_shift = np.int32(nbits - 1)
    max_level = float((1 << nbits) - 1)
    scale = 1.0 / step if step > 0.0 else 0.0
    c = coefficients.astype(np.float64)
    c0, c1, c2, c3, c4, c5 = c[0], c[1], c[2], c[3], c[4], c[5]
    # Levels after two zero columns and one after the end; three rows that take turns.
    # int32: levels are below 2**24 and predictions, with MAX_WEIGHT, below 2**26.
    levels = np.zeros((3, nx + 3), np.int32)
    quantized = np.zeros(nx + 1, np.uint32)
    bad = np.zeros(nx, np.uint8)
    ulp_bits = np.empty(nx, np.int32)
    ulps = ulp_bits.view(np.float32)
    preds = np.zeros(nx, np.int32)
    codes = np.empty(nx, np.uint32)
    row_bits = layer.view(np.int32)
    count = 0
    for i in range(ny):
        cur = levels[i % 3]
        above = levels[(i + 2) % 3]
        above2 = levels[(i + 1) % 3]
        linear = i >= 2
        _row_ulps(row_bits[i], ulp_bits)
        any_bad = _quantize_row(
            layer[i], ulps, offset, step, scale, tolerance, max_level, quantized, bad
        )
        target = cur[2 : nx + 2]
        for j in range(nx):
            target[j] = np.int32(quantized[j + 1])
        if any_bad:
            # An exception takes the prediction, so that its residual is 0 and what follows
            # is predicted from what the decoder will rebuild: left to right.
            for j in range(nx):
                if not bad[j]:
                    continue
                cur[j + 2] = _prediction(cur, above, above2, j, nx, linear, c) & mask
                n = bit_base + i * nx + j
                exception_bits[n >> 3] |= np.uint8(1 << (n & 7))
                count += 1
        if linear:
            # One loop without a branch over the inner columns (float64: vectorizes).
            for j in range(2, nx - 1):
                total = (
                    c0 * cur[j + 1] + c1 * above[j + 2] + c2 * above[j + 1]
                    + c3 * above[j + 3] + c4 * cur[j] + c5 * above2[j + 2]
                )  # fmt: skip
                preds[j] = np.int32(np.floor((total + _ROUND) * _SCALE))
            for j in (0, 1, nx - 1):
                if j < nx:
                    preds[j] = cur[j + 1] + above[j + 2] - above[j + 1]
        else:
            for j in range(nx):
                preds[j] = cur[j + 1] + above[j + 2] - above[j + 1]
        one = np.uint32(1)
        for j in range(nx):
            residual = np.uint32((target[j] - preds[j]) & mask)
            codes[j] = ((residual << one) ^ (np.uint32(0) - (residual >> sign_shift))) & mask
        _store_codes(codes, planes, i * nx, nbytes)
    return count


@numba.njit(**_JIT)
def linear_decode(planes, nbits, offset, step, coefficients, out):
    """Inverse of :func:`linear_encode` but for the exceptions: fills ``out``
    (float32[ny, nx]) from the layer's codes ``planes`` (uint8[nbytes, ny * nx]).
    ``coefficients`` must respect :data:`MAX_WEIGHT` (the parser checks)."""
    ny, nx = out.shape
    nbytes = planes.shape[0]
    mask = np.int64((1 << nbits) - 1)
    c = coefficients.astype(np.float64)
    c1, c2, c3, c5 = c[1], c[2], c[3], c[5]
    cw, cww = np.int64(coefficients[0]), np.int64(coefficients[4])
    levels = np.zeros((3, nx + 3), np.int32)
    codes = np.empty(nx, np.uint32)
    residuals = np.empty(nx, np.int32)
    rest = np.zeros(nx, np.int64)
    one = np.uint32(1)
    for i in range(ny):
        cur = levels[i % 3]
        above = levels[(i + 2) % 3]
        above2 = levels[(i + 1) % 3]
        _load_codes(planes, i * nx, codes, nbytes)
        for j in range(nx):
            code = codes[j]
            residuals[j] = np.int32((code >> one) ^ (np.uint32(0) - (code & one)))
        if i < 2 or nx < 4:
            # Lorenzo: a running sum along the row of the residuals plus N - NW.
            q = np.int64(0)
            for j in range(nx):
                q = (q + residuals[j] + above[j + 2] - above[j + 1]) & mask
                cur[j + 2] = q
        else:
            # What the rows above give, for all columns at once (vectorized; below 2**35,
            # exact in float64); then the recurrence along the row, in integers.
            for j in range(2, nx - 1):
                rest[j] = np.int64(
                    c1 * above[j + 2] + c2 * above[j + 1] + c3 * above[j + 3]
                    + c5 * above2[j + 2] + _ROUND
                )  # fmt: skip
            q1 = (np.int64(residuals[0]) + above[2]) & mask  # Lorenzo, W = NW = 0
            cur[2] = q1
            q2 = (q1 + residuals[1] + above[3] - above[2]) & mask
            cur[3] = q2
            for j in range(2, nx - 1):
                q = (residuals[j] + ((rest[j] + cw * q2 + cww * q1) >> SHIFT)) & mask
                cur[j + 2] = q
                q1, q2 = q2, q
            cur[nx + 1] = (q2 + residuals[nx - 1] + above[nx + 1] - above[nx]) & mask
        row = out[i]
        for j in range(nx):
            row[j] = np.float32(offset + np.float64(cur[j + 2]) * step)


@numba.njit(**_JIT)
def _sample_levels(layer, i, offset, scale, levels):
    """Levels of row ``i`` of ``layer`` (as the encoder quantizes, without the clipping) into
    ``levels`` (float64; NaN where the value is not finite)."""
    row = layer[i]
    for j in range(row.size):
        levels[j] = np.floor((np.float64(row[j]) - offset) * scale + 0.5)


@numba.njit(**_JIT)
def fit_coefficients(layer, rows, offset, step, out):
    """Fit the coefficients of ``layer`` (float32[ny, nx]; ny >= 3, nx >= 4) quantized with
    ``offset`` and ``step`` (> 0) by least squares on the inner columns of ``rows`` (each
    at least 2), into ``out`` (int64[6]).

    The fit is of ``q - W`` on ``N - W, NW - W, NE - W, WW - W, NN - W`` (the weights then
    add up to 1, as a predictor of a smooth field's levels must). Returns how many bits a
    value the fitted predictor's residuals cost less than Lorenzo's on the sample, the
    cost of a residual ``r`` taken as ``log2(1 + |r|)`` (-inf for a sample without a
    finite point or a singular fit). On the levels, not the values: on a
    coarse grid Lorenzo's residuals are small integers, often 0 where the layer is locally
    a plane, and the rounding of a fitted prediction costs more than the fit gains
    (ERA-Interim u and v at 16 bits: 6.1 -> 5.7 and 5.7 -> 4.5 when chosen on the values).
    """
    ny, nx = layer.shape
    scale = 1.0 / step
    x = np.empty(nx)
    a = np.empty(nx)
    b = np.empty(nx)
    gram = np.zeros((5, 6))  # the normal equations, right-hand side in column 5
    features = np.empty(5)
    for i in rows:
        _sample_levels(layer, i, offset, scale, x)
        _sample_levels(layer, i - 1, offset, scale, a)
        _sample_levels(layer, i - 2, offset, scale, b)
        for j in range(2, nx - 1):
            w = x[j - 1]
            features[0] = a[j] - w
            features[1] = a[j - 1] - w
            features[2] = a[j + 1] - w
            features[3] = x[j - 2] - w
            features[4] = b[j] - w
            target = x[j] - w
            # (a sum is finite when all its terms are: one test, no array)
            if not np.isfinite(
                features[0] + features[1] + features[2] + features[3] + features[4] + target
            ):
                continue
            for k in range(5):
                for m in range(5):
                    gram[k, m] += features[k] * features[m]
                gram[k, 5] += features[k] * target
    trace = gram[0, 0] + gram[1, 1] + gram[2, 2] + gram[3, 3] + gram[4, 4]
    if not trace > 0.0 or not np.isfinite(trace):
        return -np.inf
    for k in range(5):
        gram[k, k] += 1e-9 * trace
    # Gaussian elimination with partial pivoting of a 5 x 5 system.
    for k in range(5):
        pivot = k
        for m in range(k + 1, 5):
            if abs(gram[m, k]) > abs(gram[pivot, k]):
                pivot = m
        if gram[pivot, k] == 0.0:
            return -np.inf
        for m in range(6):
            gram[k, m], gram[pivot, m] = gram[pivot, m], gram[k, m]
        for m in range(k + 1, 5):
            factor = gram[m, k] / gram[k, k]
            for n in range(k, 6):
                gram[m, n] -= factor * gram[k, n]
    solution = np.zeros(5)
    for k in range(4, -1, -1):
        total = gram[k, 5]
        for m in range(k + 1, 5):
            total -= gram[k, m] * solution[m]
        solution[k] = total / gram[k, k]
    if not (np.isfinite(solution).all() and (np.abs(solution) < MAX_WEIGHT).all()):
        return -np.inf
    # Order W, N, NW, NE, WW, NN; W takes what makes them add up to 1.
    rest = 0
    for k in range(5):
        value = np.int64(np.rint(solution[k] * (1 << SHIFT)))
        out[k + 1] = value
        rest += value
    out[0] = (1 << SHIFT) - rest
    weight = 0
    for k in range(6):
        weight += abs(out[k])
    if weight > MAX_WEIGHT:
        return -np.inf
    linear = lorenzo = 0.0
    count = 0
    c = out.astype(np.float64)
    for i in rows:
        _sample_levels(layer, i, offset, scale, x)
        _sample_levels(layer, i - 1, offset, scale, a)
        _sample_levels(layer, i - 2, offset, scale, b)
        for j in range(2, nx - 1):
            total = (
                c[0] * x[j - 1] + c[1] * a[j] + c[2] * a[j - 1] + c[3] * a[j + 1]
                + c[4] * x[j - 2] + c[5] * b[j]
            )  # fmt: skip
            error = abs(x[j] - np.floor((total + _ROUND) * _SCALE))
            lorenzo_error = abs(x[j] - (x[j - 1] + a[j] - a[j - 1]))
            if np.isfinite(error) and np.isfinite(lorenzo_error):
                linear += np.log2(1.0 + error)
                lorenzo += np.log2(1.0 + lorenzo_error)
                count += 1
    return (lorenzo - linear) / count if count else -np.inf
