"""Numba kernels of the layerquantizer1 format: no I/O, no allocation of full-size arrays.

Every kernel works on C-contiguous arrays that the caller has validated; numba does no
bounds checking, so nothing here may be called on sizes read from untrusted bytes before
:mod:`layerquantizer._format` has checked them.

The integer pipeline is modular: quantized values ``q`` lie in ``[0, 2**nbits)``; the
Lorenzo residual ``d = q[i,j] - q[i-1,j] - q[i,j-1] + q[i-1,j-1]`` is taken modulo
``2**nbits``, read as a signed ``nbits``-bit number and zigzag-coded, so ``nbits`` bits
hold it (instead of ``nbits + 2``). The coded residuals are written byte-planar
(``planes[k, n]`` is byte ``k`` of element ``n``), which is what byte shuffling would do,
without the intermediate array.

Values that cannot be quantized within the error bound (NaN, +-inf, and the rare value
whose float32 reconstruction would miss the bound) are *exceptions*: their bit is set in
``exception_bits`` (bit ``n % 8`` of byte ``n // 8``) and their residual is 0, i.e. the
decoder reconstructs the prediction there, which it then overwrites with the stored value.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}


@numba.njit(**_JIT)
def finite_ranges(layers):
    """Per-layer minimum, maximum and count of the finite values (float64, float64, int64).

    A layer without a finite value gets min = max = 0.
    """
    nlayers = layers.shape[0]
    size = layers.shape[1] * layers.shape[2]
    mins = np.zeros(nlayers)
    maxs = np.zeros(nlayers)
    counts = np.zeros(nlayers, np.int64)
    for layer in range(nlayers):
        flat = layers[layer].reshape(size)
        lo = np.inf
        hi = -np.inf
        count = 0
        for n in range(size):
            x = flat[n]
            if math.isfinite(x):
                lo = min(lo, x)
                hi = max(hi, x)
                count += 1
        if count:
            mins[layer] = lo
            maxs[layer] = hi
        counts[layer] = count
    return mins, maxs, counts


@numba.njit(**_JIT)
def _store_codes(codes, planes, base, nbytes):
    # One loop per byte count, so that each one vectorizes.
    nx = codes.size
    if nbytes == 1:
        for j in range(nx):
            planes[0, base + j] = codes[j]
    elif nbytes == 2:
        for j in range(nx):
            planes[0, base + j] = codes[j] & 0xFF
            planes[1, base + j] = codes[j] >> 8
    else:
        for j in range(nx):
            planes[0, base + j] = codes[j] & 0xFF
            planes[1, base + j] = (codes[j] >> 8) & 0xFF
            planes[2, base + j] = codes[j] >> 16


@numba.njit(**_JIT)
def _load_codes(planes, base, codes, nbytes):
    nx = codes.size
    if nbytes == 1:
        for j in range(nx):
            codes[j] = planes[0, base + j]
    elif nbytes == 2:
        for j in range(nx):
            codes[j] = np.uint32(planes[0, base + j]) | (np.uint32(planes[1, base + j]) << 8)
    else:
        for j in range(nx):
            codes[j] = (
                np.uint32(planes[0, base + j])
                | (np.uint32(planes[1, base + j]) << 8)
                | (np.uint32(planes[2, base + j]) << 16)
            )


@numba.njit(**_JIT)
def encode_layers(layers, offsets, steps, tolerances, nbits, planes, start, exception_bits):
    """Quantize, predict and code ``layers`` into ``planes[:, start:]``.

    Parameters
    ----------
    layers : float32[L, ny, nx]
    offsets, steps : float64[L]
        Value of quantization level 0 and the distance between levels (0 for a layer
        with one level).
    tolerances : float64[L]
        The error a value may have (besides one float32 ulp) before it becomes an exception.
    nbits : int
    planes : uint8[nbytes, N]
    start : int
        Element index of ``layers[0, 0, 0]`` within the chunk (for ``planes`` and the bits).
    exception_bits : uint8[ceil(N / 8)], zeroed by the caller for these layers.

    Returns
    -------
    int64[L]
        Number of exceptions per layer.
    """
    nlayers, ny, nx = layers.shape
    nbytes = planes.shape[0]
    mask = np.uint32((1 << nbits) - 1)
    top = np.uint32(1 << (nbits - 1))
    max_level = float((1 << nbits) - 1)
    # Row buffers; index 0 is a zero column, so that j - 1 needs no test.
    prev = np.zeros(nx + 1, np.uint32)
    cur = np.zeros(nx + 1, np.uint32)
    bad = np.zeros(nx, np.uint8)
    codes = np.empty(nx, np.uint32)
    exceptions = np.zeros(nlayers, np.int64)
    for layer in range(nlayers):
        offset = offsets[layer]
        step = steps[layer]
        scale = 1.0 / step if step > 0.0 else 0.0
        tolerance = tolerances[layer]
        prev[:] = 0
        count = 0
        for i in range(ny):
            row = layers[layer, i]
            base = start + (layer * ny + i) * nx
            # Quantize the row; flag what misses the bound (NaN fails every comparison).
            any_bad = np.uint8(0)
            for j in range(nx):
                x = np.float64(row[j])
                level = np.floor((x - offset) * scale + 0.5)
                level = min(max(level, 0.0), max_level)
                rebuilt = np.float64(np.float32(offset + level * step))
                flag = np.uint8(0) if abs(x - rebuilt) <= tolerance else np.uint8(1)
                bad[j] = flag
                any_bad |= flag
                cur[j + 1] = np.uint32(level) if flag == 0 else np.uint32(0)
            if any_bad:
                for j in range(nx):
                    if not bad[j]:
                        continue
                    x = np.float64(row[j])
                    rebuilt = np.float64(np.float32(offset + cur[j + 1] * step))
                    level = np.floor((x - offset) * scale + 0.5)
                    if math.isfinite(x) and 0.0 <= level <= max_level:
                        rebuilt = np.float64(np.float32(offset + level * step))
                        # Within one float32 ulp of the bound: still kept.
                        if abs(x - rebuilt) <= tolerance + np.spacing(np.abs(row[j])):
                            cur[j + 1] = np.uint32(level)
                            continue
                    # An exception takes the prediction, so that its residual is 0 and
                    # its neighbours' predictions are what the decoder will compute.
                    cur[j + 1] = (prev[j + 1] + cur[j] - prev[j]) & mask
                    n = base + j
                    exception_bits[n >> 3] |= np.uint8(1 << (n & 7))
                    count += 1
            # Lorenzo residual modulo 2**nbits, zigzag-coded.
            for j in range(nx):
                residual = (cur[j + 1] - prev[j + 1] - cur[j] + prev[j]) & mask
                sign = np.uint32(0) - (residual // top)  # all ones when negative
                codes[j] = ((residual << np.uint32(1)) ^ sign) & mask
            _store_codes(codes, planes, base, nbytes)
            prev, cur = cur, prev
        exceptions[layer] = count
    return exceptions


@numba.njit(**_JIT)
def decode_layers(planes, nbits, offsets, steps, out):
    """Inverse of :func:`encode_layers` but for the exceptions: ``out`` is float32[L, ny, nx]."""
    nlayers, ny, nx = out.shape
    nbytes = planes.shape[0]
    mask = np.uint32((1 << nbits) - 1)
    one = np.uint32(1)
    prev = np.zeros(nx, np.uint32)
    residuals = np.empty(nx, np.uint32)
    for layer in range(nlayers):
        offset = offsets[layer]
        step = steps[layer]
        prev[:] = 0
        for i in range(ny):
            _load_codes(planes, (layer * ny + i) * nx, residuals, nbytes)
            for j in range(nx):
                code = residuals[j]
                residuals[j] = (code >> one) ^ (np.uint32(0) - (code & one))
            # q[i, j] - q[i-1, j] is the running sum of the residuals along the row.
            running = np.uint32(0)
            for j in range(nx):
                running += residuals[j]
                residuals[j] = running
            row = out[layer, i]
            for j in range(nx):
                q = (prev[j] + residuals[j]) & mask
                prev[j] = q
                row[j] = np.float32(offset + np.float64(q) * step)
    return out


@numba.njit(**_JIT)
def gather_exceptions(flat, exception_bits, count):
    """The values at the set bits, in element order: float32[count]."""
    values = np.empty(count, np.float32)
    found = 0
    for byte_index in range(exception_bits.size):
        byte = exception_bits[byte_index]
        if byte == 0:
            continue
        for bit in range(8):
            if byte & (1 << bit) and found < count:
                values[found] = flat[byte_index * 8 + bit]
                found += 1
    return values


@numba.njit(**_JIT)
def scatter_exceptions(flat, exception_bits, values):
    """Write ``values`` at the set bits of ``exception_bits``.

    Returns the number of set bits, or -1 if they do not match ``values`` or point past
    the end of ``flat``: the caller treats that as corruption. Nothing past either end
    is ever written.
    """
    size = flat.size
    count = values.size
    found = 0
    for byte_index in range(exception_bits.size):
        byte = exception_bits[byte_index]
        if byte == 0:
            continue
        for bit in range(8):
            if byte & (1 << bit):
                n = byte_index * 8 + bit
                if n >= size or found >= count:
                    return -1
                flat[n] = values[found]
                found += 1
    return found if found == count else -1
