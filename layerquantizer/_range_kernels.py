"""Numba kernels of block mode 3 (format version 3): the codes of a block through an
adaptive binary range coder.

Bit planes through zstd (mode 2) code runs of zero bits well, but a code that is 0 with a
probability of 0.97 still costs zstd far more than its 0.2 bits of information, and the
rare nonzero codes break the runs. An adaptive binary range coder (LZMA's, with 15-bit
probabilities moved by 1/32 of their distance at each bit) spends on each binary decision
what its adapted probability says, so the finest strides of the interpolation predictor,
nearly all zeros, cost a fraction of a bit a value. At 8 bits: eraint_z 94 -> 137, eraint_u
32 -> 40, synthetic temperature 38 -> 48 (a numba prototype on the codes in coding order).
15 bits rather than LZMA's 11: a certain decision then costs 0.0014 bits instead of 0.022,
which is what layers of codes all but all 0 need (synthetic geopotential at a tolerance of
1/510 of its range, 4 bits: 67 -> 42 KB; 11 bits of probability were worse than bit planes).
A context of the length of the run of zeros before a code gained nothing (measured).

Each code ``z`` (zigzag, ``nbits`` bits at most) is a sequence of binary decisions:

- ``z != 0``, in context ``min(previous z, 2)`` (three contexts: runs of zeros stay cheap);
- for ``z != 0``, with ``k = bit_length(z) - 1``: ``k`` ones and, when ``k < nbits - 1``,
  a zero (unary ``k``), the ``u``-th in context ``(min(previous z, 2), u)``;
- the ``k`` bits of ``z`` below its leading one, from the top, the ``t``-th in context
  ``(k, min(t, 2))``.

Contexts start at probability 1/2 at every block. Like the other kernels, these trust the
sizes they are given: the caller checks them (:mod:`layerquantizer._format`).
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}

#: Bits of a probability, and the shift that moves it towards each coded bit.
PROBABILITY_BITS = 15
MOVE_BITS = 5
_HALF = 1 << (PROBABILITY_BITS - 1)
_TOP = 1 << 24
# Context layout: 3 zero flags, then 3 x 24 unary positions, then 24 x 3 suffix positions.
_UNARY = 3
_SUFFIX = _UNARY + 3 * 24
CONTEXTS = _SUFFIX + 24 * 3
#: Bytes the coder always writes: the flush of its 32-bit low end and the carry byte.
MIN_BYTES = 5


@numba.njit(inline="always", **_JIT)
def _shift_low(low, cache, cache_size, written, out):
    """LZMA's ShiftLow: emit the top byte of ``low`` once no carry can reach it. Returns the
    new ``low, cache, cache size, bytes written``; bytes written -1 when ``out`` is full (the
    caller gives up: this form would not be smaller). The coder's state is passed as
    scalars, not an array, so that it stays in registers (three times faster)."""
    if (low & 0xFFFFFFFF) < 0xFF000000 or (low >> 32) != 0:
        carry = low >> 32
        byte = cache
        while True:
            if written >= out.size:
                return low, cache, cache_size, -1
            out[written] = (byte + carry) & 0xFF
            written += 1
            byte = 0xFF
            cache_size -= 1
            if cache_size == 0:
                break
        cache = (low >> 24) & 0xFF
    cache_size += 1
    low = (low & 0x00FFFFFF) << 8
    return low, cache, cache_size, written


@numba.njit(inline="always", **_JIT)
def _encode_bit(low, range_, cache, cache_size, written, out, probabilities, context, bit):
    """One decision; returns the new state (``written`` -1 once ``out`` is full)."""
    p = probabilities[context]
    bound = (range_ >> PROBABILITY_BITS) * p
    if bit == 0:
        range_ = bound
        probabilities[context] = p + (((1 << PROBABILITY_BITS) - p) >> MOVE_BITS)
    else:
        low += bound
        range_ -= bound
        probabilities[context] = p - (p >> MOVE_BITS)
    while range_ < _TOP and written >= 0:
        range_ = (range_ << 8) & 0xFFFFFFFF
        low, cache, cache_size, written = _shift_low(low, cache, cache_size, written, out)
    return low, range_, cache, cache_size, written


@numba.njit(**_JIT)
def range_encode(planes, nbits, out):
    """Code the block's codes ``planes`` (uint8[nbytes, M], byte-planar) into ``out``
    (uint8). Returns the bytes written, or -1 when they would not fit ``out`` (the caller
    then stores the block in another mode)."""
    nbytes, size = planes.shape
    low, range_ = np.int64(0), np.int64(0xFFFFFFFF)
    cache, cache_size, written = np.int64(0), np.int64(1), np.int64(0)
    probabilities = np.full(CONTEXTS, _HALF, np.int64)
    previous = np.int64(0)
    for n in range(size):
        z = np.int64(planes[0, n])
        for k in range(1, nbytes):
            z |= np.int64(planes[k, n]) << (8 * k)
        near = min(previous, 2)
        low, range_, cache, cache_size, written = _encode_bit(
            low, range_, cache, cache_size, written, out, probabilities, near, 1 if z else 0
        )
        if z:
            k = 0
            while z >> (k + 1):
                k += 1
            unary = _UNARY + near * 24
            for u in range(k):
                low, range_, cache, cache_size, written = _encode_bit(
                    low, range_, cache, cache_size, written, out, probabilities, unary + u, 1
                )
            if k < nbits - 1:
                low, range_, cache, cache_size, written = _encode_bit(
                    low, range_, cache, cache_size, written, out, probabilities, unary + k, 0
                )
            for t in range(k):
                bit = (z >> (k - 1 - t)) & 1
                context = _SUFFIX + k * 3 + min(t, 2)
                low, range_, cache, cache_size, written = _encode_bit(
                    low, range_, cache, cache_size, written, out, probabilities, context, bit
                )
        if written < 0:
            return -1
        previous = z
    for _ in range(MIN_BYTES):
        low, cache, cache_size, written = _shift_low(low, cache, cache_size, written, out)
        if written < 0:
            return -1
    return written


@numba.njit(**_JIT)
def _decode_bit(state, data, probabilities, context):
    # state: range, code, bytes read (bytes past the end read as 0 and still count, so
    # that the caller sees a stream that ended early)
    p = probabilities[context]
    bound = (state[0] >> PROBABILITY_BITS) * p
    if state[1] < bound:
        state[0] = bound
        probabilities[context] = p + (((1 << PROBABILITY_BITS) - p) >> MOVE_BITS)
        bit = 0
    else:
        state[1] -= bound
        state[0] -= bound
        probabilities[context] = p - (p >> MOVE_BITS)
        bit = 1
    while state[0] < _TOP:
        state[0] = (state[0] << 8) & 0xFFFFFFFF
        byte = data[state[2]] if state[2] < data.size else 0
        state[1] = ((state[1] << 8) | byte) & 0xFFFFFFFF
        state[2] += 1
    return bit


@numba.njit(**_JIT)
def range_decode(data, nbits, planes):
    """Inverse of :func:`range_encode`: fill ``planes`` (uint8[nbytes, M]) from ``data``.
    Returns the bytes the decoder read, which must be ``data.size`` (any other count means
    a corrupt block; bytes past the end read as 0). Any ``data`` decodes to codes of at
    most ``nbits`` bits: the unary length stops at ``nbits - 1``."""
    nbytes, size = planes.shape
    state = np.zeros(3, np.int64)  # range, code, bytes read
    state[0] = 0xFFFFFFFF
    for _ in range(MIN_BYTES):
        byte = data[state[2]] if state[2] < data.size else 0
        state[1] = ((state[1] << 8) | byte) & 0xFFFFFFFF
        state[2] += 1
    probabilities = np.full(CONTEXTS, _HALF, np.int64)
    previous = 0
    for n in range(size):
        near = min(previous, 2)
        z = np.int64(0)
        if _decode_bit(state, data, probabilities, near):
            k = 0
            while k < nbits - 1 and _decode_bit(state, data, probabilities, _UNARY + near * 24 + k):
                k += 1
            z = np.int64(1)
            for t in range(k):
                z = (z << 1) | _decode_bit(state, data, probabilities, _SUFFIX + k * 3 + min(t, 2))
        for k in range(nbytes):
            planes[k, n] = (z >> (8 * k)) & 0xFF
        previous = z
    return state[2]
