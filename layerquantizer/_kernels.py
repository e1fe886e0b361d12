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
def _float_key(bits):
    """An int32 that orders like the float32 whose bits these are; its own inverse."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@numba.njit(**_JIT)
def finite_ranges(bits):
    """Per-layer minimum, maximum and count of the finite values (float64, float64, int64).

    ``bits`` is the chunk as int32[layers, values per layer] (a view of the float32 data):
    comparing order-preserving integer keys instead of floats lets the loop vectorize.
    A layer without a finite value gets min = max = 0.
    """
    nlayers, size = bits.shape
    mins = np.zeros(nlayers)
    maxs = np.zeros(nlayers)
    counts = np.zeros(nlayers, np.int64)
    keys = np.empty(2, np.int32)
    values = keys.view(np.float32)
    for layer in range(nlayers):
        row = bits[layer]
        lo = np.int32(0x7FFFFFFF)
        hi = np.int32(-0x80000000)
        count = 0
        for n in range(size):
            b = row[n]
            finite = (b & 0x7F800000) != 0x7F800000
            key = _float_key(b)
            lo = min(lo, key if finite else np.int32(0x7FFFFFFF))
            hi = max(hi, key if finite else np.int32(-0x80000000))
            count += finite
        counts[layer] = count
        if count:
            keys[0] = _float_key(lo)
            keys[1] = _float_key(hi)
            mins[layer] = values[0]
            maxs[layer] = values[1]
    return mins, maxs, counts


@numba.njit(**_JIT)
def float32_ulp(x):
    """The spacing of float32 numbers at finite ``x`` (float64; 2**104 at the largest)."""
    exponent = math.frexp(x)[1]
    return max(math.ldexp(1.0, exponent - 24), 2.0**-149)


@numba.njit(**_JIT)
def _row_ulps(bits, ulp_bits):
    """:func:`float32_ulp` of each float32 whose bits (int32) are ``bits``, as the bits of a
    float32 (exact: a power of two from 2**-149 up), 0 for NaN and infinities; by integer
    operations only, so that the loop vectorizes."""
    for j in range(bits.size):
        b = bits[j]
        biased = (b >> 23) & 0xFF
        # frexp's exponent is biased - 126 (normal numbers): the ulp is 2**(biased - 150),
        # a normal float32 from biased 24 on, a subnormal one below; 2**-149 for subnormal
        # values, and float32_ulp(0) = 2**-24 (frexp(0) gives exponent 0).
        normal = (biased - 23) << 23
        subnormal = np.int32(1) << max(biased - 1, 0)
        zero = np.int32(103 << 23) if (b & 0x7FFFFFFF) == 0 else np.int32(1)
        ulp = normal if biased >= 24 else (subnormal if biased >= 1 else zero)
        ulp_bits[j] = np.int32(0) if biased == 0xFF else ulp


@numba.njit(**_JIT)
def _store_codes(codes, planes, base, nbytes):
    # One loop per byte count, so that each one vectorizes; slices indexed from 0 (see
    # _store_residuals).
    nx = codes.size
    low = planes[0, base : base + nx]
    if nbytes == 1:
        for j in range(nx):
            low[j] = codes[j]
    elif nbytes == 2:
        high = planes[1, base : base + nx]
        for j in range(nx):
            low[j] = codes[j] & 0xFF
            high[j] = codes[j] >> 8
    else:
        middle, high = planes[1, base : base + nx], planes[2, base : base + nx]
        for j in range(nx):
            low[j] = codes[j] & 0xFF
            middle[j] = (codes[j] >> 8) & 0xFF
            high[j] = codes[j] >> 16


@numba.njit(**_JIT)
def _quantize_row(row, ulps, offset, step, scale, tolerance, max_level, cur, bad):
    """Quantize a row into ``cur[1:]``; flag in ``bad`` what misses the bound by more than
    one float32 ulp (``ulps``, see :func:`_row_ulps`); returns whether any did.

    One loop without a branch, so that it vectorizes: at 16 bits a few % of the values
    miss the bound itself by less than their ulp, and a second, scalar pass over those
    cost more than quantizing. ``error <= tolerance + ulp`` holds whenever
    ``error <= tolerance`` does: the ulp is positive, or 0 for NaN and infinities, which
    are kept only within the tolerance itself, as before.
    """
    any_bad = np.uint8(0)
    for j in range(row.size):
        x = np.float64(row[j])
        level = np.floor((x - offset) * scale + 0.5)
        level = level if level >= 0.0 else 0.0  # NaN too: no undefined cast below
        level = level if level <= max_level else max_level
        rebuilt = np.float64(np.float32(offset + level * step))
        error = abs(x - rebuilt)
        flag = np.uint8(0) if error <= tolerance + np.float64(ulps[j]) else np.uint8(1)
        bad[j] = flag
        any_bad |= flag
        cur[j + 1] = np.uint32(level)
    return any_bad


@numba.njit(**_JIT)
def _quantize_row_fast(row, bits, offset, step, scale, tolerance, max_level, cur):
    """:func:`_quantize_row` without the flags: whether any value may miss the bound.

    The ulp is taken from the exponent bits alone, exact for normal numbers from
    ``2**-103`` on, 0 below (stricter), ``2**105`` for NaN and infinities (which miss any
    bound anyway): never larger than :func:`_row_ulps`' for a finite value, so a row
    it passes has no exception, and the row it does not is quantized again exactly. One
    loop, no stores but the levels: 0.3 ns per value less than the ulps' own pass and
    the flags' stores (at 16 bits most rows have no exception)."""
    any_bad = np.uint8(0)
    for j in range(row.size):
        x = np.float64(row[j])
        ulp_bits = max((bits[j] & 0x7F800000) - np.int32(23 << 23), np.int32(0))
        ulp = np.float64(np.int32(ulp_bits).view(np.float32))
        level = np.floor((x - offset) * scale + 0.5)
        level = level if level >= 0.0 else 0.0  # NaN too: no undefined cast below
        level = level if level <= max_level else max_level
        rebuilt = np.float64(np.float32(offset + level * step))
        error = abs(x - rebuilt)
        any_bad |= np.uint8(0) if error <= tolerance + ulp else np.uint8(1)
        cur[j + 1] = np.uint32(level)
    return any_bad


@numba.njit(**_JIT)
def _store_residuals(cur, prev, mask, half, planes, base, nbytes):
    """Lorenzo residuals of a row of levels ``cur`` under ``prev`` (both after a zero
    column), modulo ``2**nbits`` (``mask``), zigzag-coded, straight into ``planes`` from
    column ``base``: one pass, one loop per byte count, so that each one vectorizes.

    In int32 throughout (levels are below ``2**24``): numba widens arithmetic on smaller
    integers to 64 bits, which halves the values per vector and costs a narrowing per
    store (2.6x slower). The residual, read as a signed ``nbits``-bit number by flipping
    and subtracting its sign bit ``half``, is zigzag-coded by a shift of the int32's sign,
    without the variable shift that kept the compiler in 64 bits."""
    nx = cur.size - 1
    mask, half = np.int32(mask), np.int32(half)
    # Slices indexed from 0: an index ``base + j`` could be negative as far as the compiler
    # knows, and its wraparound test stops the loop from vectorizing (4x slower).
    low = planes[0, base : base + nx]
    if nbytes == 1:
        for j in range(nx):
            residual = _residual(cur, prev, j, mask)
            signed = np.int32((residual ^ half) - half)
            low[j] = np.uint8(np.int32((signed << 1) ^ (signed >> 31)) & mask)
    elif nbytes == 2:
        high = planes[1, base : base + nx]
        for j in range(nx):
            residual = _residual(cur, prev, j, mask)
            signed = np.int32((residual ^ half) - half)
            code = np.int32((signed << 1) ^ (signed >> 31)) & mask
            low[j] = np.uint8(code & 0xFF)
            high[j] = np.uint8((code >> 8) & 0xFF)
    else:
        middle, high = planes[1, base : base + nx], planes[2, base : base + nx]
        for j in range(nx):
            residual = _residual(cur, prev, j, mask)
            signed = np.int32((residual ^ half) - half)
            code = np.int32((signed << 1) ^ (signed >> 31)) & mask
            low[j] = np.uint8(code & 0xFF)
            middle[j] = np.uint8((code >> 8) & 0xFF)
            high[j] = np.uint8((code >> 16) & 0xFF)


@numba.njit(**_JIT)
def _residual(cur, prev, j, mask):
    """``q[i, j] - q[i-1, j] - q[i, j-1] + q[i-1, j-1]`` modulo ``mask + 1``, in int32."""
    return (
        np.int32(
            np.int32(cur[j + 1]) - np.int32(prev[j + 1]) - np.int32(cur[j]) + np.int32(prev[j])
        )
        & mask
    )


@numba.njit(**_JIT)
def _load_codes(planes, base, codes, nbytes):
    # Slices indexed from 0, so that the loops vectorize (see _store_residuals).
    nx = codes.size
    low = planes[0, base : base + nx]
    if nbytes == 1:
        for j in range(nx):
            codes[j] = low[j]
    elif nbytes == 2:
        high = planes[1, base : base + nx]
        for j in range(nx):
            codes[j] = np.uint32(low[j]) | (np.uint32(high[j]) << 8)
    else:
        middle, high = planes[1, base : base + nx], planes[2, base : base + nx]
        for j in range(nx):
            codes[j] = np.uint32(low[j]) | (np.uint32(middle[j]) << 8) | (np.uint32(high[j]) << 16)


@numba.njit(**_JIT)
def encode_rows(
    rows, first, ny, offsets, steps, tolerances, nbits, planes, exception_bits, prev, counts
):
    """Quantize, predict and code a block of rows into ``planes``.

    The chunk is seen as ``rows``, float32[layers * ny, nx]; this call codes rows
    ``first`` to ``first + planes.shape[1] // nx - 1``, so that a caller can stream a chunk
    through a small ``planes`` buffer.

    Parameters
    ----------
    rows : float32[R, nx]
    first : int
        First row of the block.
    ny : int
        Rows per layer; row ``r`` belongs to layer ``r // ny``.
    offsets, steps : float64[layers]
        Value of quantization level 0 and the distance between levels (0 for a layer
        with one level).
    tolerances : float64[layers]
        The error a value may have (besides one float32 ulp) before it becomes an exception.
    nbits : int
    planes : uint8[nbytes, block rows * nx], out
    exception_bits : uint8[ceil(R * nx / 8)], in/out
        The chunk's exception bitmap, zeroed by the caller.
    prev : uint32[nx + 1], in/out
        The previous row's levels (after a zero column), carried from block to block.
    counts : int64[layers], in/out
        Exceptions per layer, incremented.
    """
    nx = rows.shape[1]
    nbytes = planes.shape[0]
    mask = np.uint32((1 << nbits) - 1)
    # The sign bit of an nbits-bit residual.
    half = np.uint32(1 << (nbits - 1))
    max_level = float((1 << nbits) - 1)
    # Index 0 of cur and prev is a zero column, so that j - 1 needs no test. The two
    # rows swap roles after each row instead of being copied; ``prev`` gets the last one.
    cur = np.zeros(nx + 1, np.uint32)
    above = prev.copy()
    bad = np.zeros(nx, np.uint8)
    row_bits = rows.view(np.int32)
    ulp_bits = np.empty(nx, np.int32)
    ulps = ulp_bits.view(np.float32)
    for k in range(planes.shape[1] // nx):
        r = first + k
        layer = r // ny
        if r % ny == 0:
            above[:] = 0
        offset = offsets[layer]
        step = steps[layer]
        scale = 1.0 / step if step > 0.0 else 0.0
        tolerance = tolerances[layer]
        any_bad = _quantize_row_fast(
            rows[r], row_bits[r], offset, step, scale, tolerance, max_level, cur
        )
        if any_bad:
            _row_ulps(row_bits[r], ulp_bits)
            any_bad = _quantize_row(
                rows[r], ulps, offset, step, scale, tolerance, max_level, cur, bad
            )
        if any_bad:
            for j in range(nx):
                if not bad[j]:
                    continue
                # An exception takes the prediction, so that its residual is 0 and its
                # neighbours' predictions are what the decoder will compute.
                cur[j + 1] = (above[j + 1] + cur[j] - above[j]) & mask
                n = r * nx + j
                exception_bits[n >> 3] |= np.uint8(1 << (n & 7))
                counts[layer] += 1
        _store_residuals(cur, above, mask, half, planes, k * nx, nbytes)
        cur, above = above, cur
    prev[:] = above


@numba.njit(**_JIT)
def decode_rows(planes, first, ny, nbits, offsets, steps, rows, prev, escaped, positions, uppers):
    """Inverse of :func:`encode_rows` but for the exceptions: fills a block of ``rows``.

    The block's codes are ``planes`` (uint8[nbytes, M]); or, when ``escaped`` (a mode-1
    block, see :func:`pack_block`), only ``planes[0]`` holds data and the codes at
    ``positions`` (int64[E], increasing, each below M) have the upper bytes ``uppers``
    (uint8[nbytes-1, E]): ``planes[1:]`` is then scratch, overwritten with them.
    ``prev``, uint32[nx], carries the previous row's levels from block to block.
    """
    nx = rows.shape[1]
    nbytes = planes.shape[0]
    # In int32 (codes are below 2**24; sums wrap modulo 2**32, a multiple of 2**nbits):
    # numba would widen uint32 arithmetic to 64 bits, half the values per vector.
    mask = np.int32((1 << nbits) - 1)
    residuals = np.empty(nx, np.int32)
    if escaped:
        # The escapes' upper bytes go back into their planes, the rest of which is 0: then
        # every code loads alike, in a loop that vectorizes, instead of a scalar pass
        # merging the escapes row by row (a quarter of the codes at 16 bits; merging them
        # into each row's codes measured 15 % slower over the whole decode).
        planes[1:] = 0
        for p in range(1, nbytes):
            plane, upper = planes[p], uppers[p - 1]
            for e in range(upper.size):
                plane[positions[e]] = upper[e]
    for k in range(planes.shape[1] // nx):
        r = first + k
        layer = r // ny
        if r % ny == 0:
            prev[:] = 0
        offset = offsets[layer]
        step = steps[layer]
        # The codes, zigzag-decoded, in one loop that vectorizes (slices indexed from 0,
        # see _store_residuals); what is left of the running sum is one addition per value.
        base = k * nx
        low = planes[0, base : base + nx]
        if nbytes == 1:
            for j in range(nx):
                residuals[j] = _unzigzag(np.int32(low[j]))
        elif nbytes == 2:
            high = planes[1, base : base + nx]
            for j in range(nx):
                residuals[j] = _unzigzag(np.int32(low[j]) | (np.int32(high[j]) << 8))
        else:
            middle, high = planes[1, base : base + nx], planes[2, base : base + nx]
            for j in range(nx):
                code = np.int32(low[j]) | (np.int32(middle[j]) << 8) | (np.int32(high[j]) << 16)
                residuals[j] = _unzigzag(code)
        # q[i, j] - q[i-1, j] is the running sum of the residuals along the row. (Typed
        # as the array's int32 but added in 64 bits: a cast back to int32 in the chain
        # doubled its latency.)
        running = residuals.dtype.type(0)
        for j in range(nx):
            running += residuals[j]
            residuals[j] = running
        row = rows[r]
        for j in range(nx):
            q = np.int32(np.int32(prev[j]) + residuals[j]) & mask
            prev[j] = q
            row[j] = np.float32(offset + np.float64(q) * step)


@numba.njit(**_JIT)
def _unzigzag(code):
    """The signed residual of a zigzag code (int32)."""
    return np.int32((code >> 1) ^ (np.int32(0) - (code & 1)))


@numba.njit(**_JIT)
def _compact_escapes(flags, positions):
    """Write the index of every nonzero flag into ``positions``, in order; returns how many.

    One pass without a branch: every index is written and the count advances by the flag
    (a quarter of the codes of a 16-bit chunk are escapes: a branch per code would be
    mispredicted often, and skipping words of zero flags rarely pays at that density).
    Keeping the flags (the upper bytes at 16 bits) in the same pass, or splitting it into
    independent chains, measured slower than gathering them after."""
    count = 0
    for n in range(flags.size):
        positions[count] = n
        count += flags[n] != 0
    return count


@numba.njit(**_JIT)
def _long_gaps(positions, escapes):
    """How many gaps between escapes (the first counted from -1) reach 255 codes."""
    long_gaps = 0
    if escapes:
        long_gaps += positions[0] >= 255
    for e in range(1, escapes):
        long_gaps += positions[e] - positions[e - 1] > 255
    return long_gaps


@numba.njit(**_JIT)
def pack_block(packed, nbytes, positions, upper):
    """Turn a block, written as planes at ``packed[1:]``, into its stored form in place;
    returns the stored size.

    Mode 0 keeps the planes as they are. Mode 1 (only with two or more planes, and only
    when smaller) keeps byte 0 of every code and then only the codes whose upper bytes are
    not all zero (*escapes*): the gaps between them and their upper bytes. Most residuals of
    smooth fields fit one byte, so the decoder's entropy stage has far fewer bytes to
    produce::

        mode 0: u8 0, planes[0] (M bytes), planes[1], ...
        mode 1: u8 1, planes[0] (M bytes), u32 E escapes, u32 G gap bytes,
                G gap bytes, planes[1][escapes] (E bytes), planes[2][escapes], ...

    The gap before an escape (codes since the previous one) is written as ``gap // 255``
    bytes of 255, then ``gap % 255``. ``packed`` holds ``1 + nbytes * M`` bytes at least;
    ``positions`` (int64[M]) and ``upper`` (uint8[2 * M]) are scratch.
    """
    size = (packed.size - 1) // nbytes
    planes = packed[1 : 1 + nbytes * size].reshape(nbytes, size)
    packed[0] = 0
    if nbytes == 1:
        return 1 + size
    if nbytes == 2:
        escapes = _compact_escapes(planes[1], positions)
    else:
        flags = upper[:size]
        for n in range(size):
            flags[n] = planes[1, n] | planes[2, n]
        escapes = _compact_escapes(flags, positions)
    # Each escape costs its upper bytes and one gap byte at least: when that already
    # reaches the planes' size, mode 0 it is.
    if 9 + size + nbytes * escapes >= 1 + nbytes * size:
        return 1 + nbytes * size
    long_gaps = _long_gaps(positions, escapes)
    gap_bytes = escapes
    if long_gaps:
        gap_bytes = 0
        last = -1
        for e in range(escapes):
            gap_bytes += (positions[e] - last - 1) // 255 + 1
            last = positions[e]
    escaped_size = 9 + size + gap_bytes + (nbytes - 1) * escapes
    if escaped_size >= 1 + nbytes * size:
        return 1 + nbytes * size
    # Gather the escapes' upper bytes before their planes are overwritten.
    for k in range(1, nbytes):
        source = planes[k]
        target = upper[(k - 1) * escapes : k * escapes]
        for e in range(escapes):
            target[e] = source[positions[e]]
    packed[0] = 1
    cursor = 1 + size
    for k in range(4):
        packed[cursor + k] = (escapes >> (8 * k)) & 0xFF
        packed[cursor + 4 + k] = (gap_bytes >> (8 * k)) & 0xFF
    cursor += 8
    if not long_gaps and escapes:
        # Every gap one byte: written in a loop that vectorizes.
        gaps = packed[cursor : cursor + escapes]
        gaps[0] = positions[0]
        for e in range(1, escapes):
            gaps[e] = positions[e] - positions[e - 1] - 1
        cursor += escapes
    else:
        last = -1
        for e in range(escapes):
            gap = positions[e] - last - 1
            while gap >= 255:
                packed[cursor] = 255
                cursor += 1
                gap -= 255
            packed[cursor] = gap
            cursor += 1
            last = positions[e]
    packed[cursor : cursor + (nbytes - 1) * escapes] = upper[: (nbytes - 1) * escapes]
    return escaped_size


# Byte t of _SPREAD[v] is bit t of v: one lookup spreads a byte of a bit plane over the
# eight codes it holds bits of.
_SPREAD = np.array(
    [sum(((v >> t) & 1) << (8 * t) for t in range(8)) for v in range(256)], np.uint64
)
# Times a word whose bytes are 0 or 1, this puts byte t at bit 56 + t (the products of the
# other pairs land at distinct bits, so nothing carries into the top byte).
_GATHER = np.uint64(0x0102040810204080)
_LOW_BITS = np.uint64(0x0101010101010101)


@numba.njit(**_JIT)
def pack_bit_planes(planes, nbits, out):
    """Block mode 2 (format version 2, ``nbits <= 12``): bit ``b`` of code ``n``, the code
    whose byte ``k`` is ``planes[k, n]`` (uint8[nbytes, M]), into bit ``n % 8`` of byte
    ``b * ceil(M / 8) + n // 8`` of ``out`` (uint8[nbits * ceil(M / 8)]), least
    significant plane first, unused bits 0.

    Eight codes at a time: their bytes of one plane as a word, from which each bit plane's
    byte is one mask, one multiplication and one shift."""
    size = planes.shape[1]
    stride = (size + 7) // 8
    full = size >> 3
    for p in range((nbits + 7) // 8):
        source = planes[p]
        words = source[: full * 8].view(np.uint64)
        bits = min(8, nbits - 8 * p)
        for t in range(bits):
            target = out[(8 * p + t) * stride : (8 * p + t + 1) * stride]
            shift = np.uint64(t)
            for q in range(full):
                target[q] = (((words[q] >> shift) & _LOW_BITS) * _GATHER) >> np.uint64(56)
            if full < stride:
                byte = 0
                for n in range(full << 3, size):
                    byte |= ((source[n] >> t) & 1) << (n & 7)
                target[full] = byte


@numba.njit(**_JIT)
def unpack_bit_planes(data, nbits, planes):
    """Inverse of :func:`pack_bit_planes`: fills ``planes`` (uint8[nbytes, M]) from
    ``data``; bits above ``nbits`` are 0. Eight codes at a time, built in a word from
    :data:`_SPREAD`."""
    nbytes, size = planes.shape
    stride = (size + 7) // 8
    words = np.empty(stride, np.uint64)
    spread = words.view(np.uint8)
    for p in range(nbytes):
        words[:] = 0
        for b in range(8 * p, min(nbits, 8 * p + 8)):
            source = data[b * stride : (b + 1) * stride]
            shift = np.uint64(b - 8 * p)
            for q in range(stride):
                words[q] |= _SPREAD[source[q]] << shift
        planes[p, :] = spread[:size]


@numba.njit(**_JIT)
def escape_positions(gaps, positions):
    """The positions of a mode-1 block's escapes from its gap bytes (see
    :func:`pack_block`), into ``positions`` (int64[E]). Returns the position after the
    last escape, or -1 if the gaps do not describe exactly E escapes: the caller checks
    that against the block's size and treats a failure as corruption."""
    position = -1
    if gaps.size == positions.size:
        # One byte per escape, when no gap reaches 255 (the usual case): a plain running
        # sum, without the test per byte.
        long_gaps = 0
        for byte in gaps:
            long_gaps += byte == 255
        if long_gaps == 0:
            for found in range(positions.size):
                position += np.int64(gaps[found]) + 1
                positions[found] = position
            return position + 1
    cursor = 0
    for found in range(positions.size):
        gap = 0
        while True:
            if cursor >= gaps.size:
                return -1
            byte = gaps[cursor]
            cursor += 1
            gap += byte
            if byte != 255:
                break
        position += gap + 1
        positions[found] = position
    return position + 1 if cursor == gaps.size else -1


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


@numba.njit(**_JIT)
def finite_ranges_except(bits, fill, other_fill):
    """:func:`finite_ranges` of the values that are not the fill value, and how many are.

    ``fill`` and ``other_fill`` are the int32 bits of the fill value (the same twice, or
    +0 and -0, which compare equal). Zarr pads edge chunks with the fill value: it must
    not widen a layer's range. A layer of fill values only gets min = max = the fill.
    """
    nlayers, size = bits.shape
    mins = np.zeros(nlayers)
    maxs = np.zeros(nlayers)
    counts = np.zeros(nlayers, np.int64)
    fills = np.zeros(nlayers, np.int64)
    keys = np.empty(3, np.int32)
    values = keys.view(np.float32)
    keys[2] = fill
    for layer in range(nlayers):
        row = bits[layer]
        lo = np.int32(0x7FFFFFFF)
        hi = np.int32(-0x80000000)
        count = 0
        filled = 0
        for n in range(size):
            b = row[n]
            is_fill = (b == fill) | (b == other_fill)
            kept = ((b & 0x7F800000) != 0x7F800000) & (b != fill) & (b != other_fill)
            key = _float_key(b)
            lo = min(lo, key if kept else np.int32(0x7FFFFFFF))
            hi = max(hi, key if kept else np.int32(-0x80000000))
            count += kept
            filled += is_fill
        counts[layer] = count
        fills[layer] = filled
        if count:
            keys[0] = _float_key(lo)
            keys[1] = _float_key(hi)
            mins[layer] = values[0]
            maxs[layer] = values[1]
        elif filled:
            mins[layer] = values[2]
            maxs[layer] = values[2]
    return mins, maxs, counts, fills


# --- Interpolation predictor (format version 2) ------------------------------------------
#
# SZ3's multilevel interpolation, on integers so that the decoder reproduces every
# prediction exactly. A layer's values are reconstructed on a *fine lattice*,
# ``offset + r * unit`` with ``unit = step / 2**FINE_BITS``; each value is predicted from
# values already reconstructed (cubic ``(-a + 9b + 9c - d) / 16`` inside the layer, linear
# or the nearest neighbour at its edges, rounded down), and the residual is counted in bins
# of ``BIN_UNITS = 2**FINE_BITS - 1`` units: ``r = prediction + b * BIN_UNITS``. Rounding a
# value to the fine lattice costs at most ``unit / 2`` and binning at most
# ``(BIN_UNITS - 1) / 2`` units, so the error stays under ``step / 2``. Unlike a prediction
# on the quantization levels themselves, the reconstruction of a smooth field stays smooth
# (a residual of 0 reconstructs the prediction, not a level), which is what lets most
# residuals of smooth fields at low nbits be 0.

#: Bits of the fine lattice below one quantization step.
FINE_BITS = 8
#: Width of a residual bin, in fine-lattice units (odd, so that bins centre on integers).
BIN_UNITS = (1 << FINE_BITS) - 1
#: The bin widths of predictors 1 to 3, by stride level (index ``log2(s)``): all
#: :data:`BIN_UNITS`.
WIDE_BINS = np.full(64, BIN_UNITS, np.int64)
#: The bin widths of predictor 4 (format version 4), by stride level: the coarse strides'
#: bins narrowed, ``BIN_UNITS`` at strides 1 and 2, then 191, 159 and 127 from stride 16 on
#: (odd, so that bins centre on integers). The coarse points, one in sixteen, are known
#: better and predict the fine ones better: at coarse tolerances most codes of the fine
#: strides are then 0 where they were not (synthetic temperature at the tolerance of 8 bits
#: over the field's range: range-coded 88 -> 53 KB on four layers, geopotential 4.5 -> 1.6).
NARROW_BINS = np.array([BIN_UNITS, BIN_UNITS, 191, 159] + [127] * 60, np.int64)


@numba.njit(**_JIT)
def _top_stride(ny, nx):
    s = 1
    while s < max(ny, nx):
        s *= 2
    return s


@numba.njit(**_JIT)
def _settle(x, pred, offset, unit, scale, tolerance, nbits, top, width):
    """The bin of ``x`` around ``pred`` (bins of ``width`` fine units, odd), its fine level,
    and whether it is an exception."""
    half = np.int64(1) << (nbits - 1)
    level = np.floor((x - offset) * scale + 0.5)
    level = level if level >= 0.0 else 0.0  # NaN too: no undefined cast below
    level = level if level <= top else float(top)
    d = np.int64(level) - pred
    b = (d + (width - 1) // 2) // width
    b = min(max(b, -half), half - 1)
    if not math.isfinite(x):
        return np.int64(0), pred, True
    rebuilt_level = pred + b * width
    rebuilt = np.float64(np.float32(offset + np.float64(rebuilt_level) * unit))
    error = abs(x - rebuilt)
    # Within one float32 ulp of the bound: still kept, as with the Lorenzo predictor.
    bad = error > tolerance and error > tolerance + float32_ulp(x)
    return b, rebuilt_level, bad


@numba.njit(**_JIT)
def _settle_row(row, preds, points, offset, unit, scale, tolerance, nbits, top, fine, zig, flags):
    """:func:`_settle` of ``row[:points]`` around ``preds``, into ``fine`` and ``zig``
    (the zigzag-coded bins), without a branch: a value is flagged in ``flags`` when its
    error exceeds ``tolerance`` or is NaN (not finite), for the caller to settle again
    with :func:`_settle`, which also decides on the ulp. Returns whether any is flagged.
    The bin is ``floor((d + 127) / 255)`` in float64, exact for ``|d| < 2**44`` (levels
    reach ``2**32``), since integer division does not vectorize."""
    half = np.int64(1) << (nbits - 1)
    doubtful = np.uint8(0)
    for j in range(points):
        x = np.float64(row[j])
        level = np.floor((x - offset) * scale + 0.5)
        level = level if level >= 0.0 else 0.0
        level = level if level <= top else float(top)
        d = np.int64(level) - preds[j]
        b = np.int64(np.floor(np.float64(d + (BIN_UNITS - 1) // 2) / BIN_UNITS))
        b = min(max(b, -half), half - 1)
        rebuilt_level = preds[j] + b * BIN_UNITS
        rebuilt = np.float64(np.float32(offset + np.float64(rebuilt_level) * unit))
        # (x - x is NaN for NaN and infinities: flagged whatever the tolerance.)
        kept = abs(x - rebuilt) <= tolerance and x - x == 0.0
        flag = np.uint8(0) if kept else np.uint8(1)
        flags[j] = flag
        doubtful |= flag
        fine[j] = rebuilt_level
        zig[j] = np.uint32(2 * b) if b >= 0 else np.uint32(-2 * b - 1)
    return doubtful


@numba.njit(**_JIT)
def _column_predictions(fine, i, s, ny, nx, top, preds):
    """The predictions of row ``i`` (an odd multiple of ``s``) at columns 0, s, 2s, ...
    from rows ``i - s``, ``i + s`` (and ``i - 3s``, ``i + 3s``), clipped to ``[0, top]``:
    cubic ``(-c + 9a + 9b - d + 8) >> 4`` with four rows, linear ``(a + b + 1) >> 1`` with
    two, else row ``i - s``. The case is chosen once per row, so that the loop over columns
    vectorizes (half of all points are predicted here)."""
    count = (nx + s - 1) // s
    a = fine[i - s]
    if s == 1 and i - 3 >= 0 and i + 3 < ny:
        # The finest stride, half of all points: contiguous rows, a loop that vectorizes.
        b, c, d = fine[i + 1], fine[i - 3], fine[i + 3]
        for j in range(count):
            preds[j] = min(max((9 * (a[j] + b[j]) - c[j] - d[j] + 8) >> 4, 0), top)
    elif i + s >= ny:
        for k in range(count):
            preds[k] = min(max(a[k * s], 0), top)
    elif i - 3 * s >= 0 and i + 3 * s < ny:
        b, c, d = fine[i + s], fine[i - 3 * s], fine[i + 3 * s]
        for k in range(count):
            j = k * s
            preds[k] = min(max((9 * (a[j] + b[j]) - c[j] - d[j] + 8) >> 4, 0), top)
    else:
        b = fine[i + s]
        for k in range(count):
            j = k * s
            preds[k] = min(max((a[j] + b[j] + 1) >> 1, 0), top)
    return count


@numba.njit(**_JIT)
def _row_prediction(row, j, s, nx, top):
    a = row[j - s]
    b = row[min(j + s, nx - 1)]
    c = row[max(j - 3 * s, 0)]
    d = row[min(j + 3 * s, nx - 1)]
    cubic = (9 * (a + b) - c - d + 8) >> 4
    linear = (a + b + 1) >> 1
    pred = cubic if j - 3 * s >= 0 and j + 3 * s < nx else linear
    pred = pred if j + s < nx else a
    return min(max(pred, 0), top)


@numba.njit(**_JIT)
def _row_predictions(fine, i, s, nx, top, preds):
    """The predictions of row ``i`` (a multiple of ``2s``) at columns s, 3s, 5s, ...,
    as :func:`_column_predictions` does along columns, written as selects so that the loop
    vectorizes."""
    count = (nx - s + 2 * s - 1) // (2 * s) if nx > s else 0
    row = fine[i]
    if s == 1:
        # The finest stride, a quarter of all points: the cubic inside the row, without
        # the selects of the edges, which are done apart.
        inner = min(max((nx - 5) // 2 + 1, 1), count)
        for k in range(1, inner):
            j = 2 * k + 1
            cubic = (9 * (row[j - 1] + row[j + 1]) - row[j - 3] - row[j + 3] + 8) >> 4
            preds[k] = min(max(cubic, 0), top)
        if count:
            preds[0] = _row_prediction(row, 1, 1, nx, top)
        for k in range(max(inner, 1), count):
            preds[k] = _row_prediction(row, 2 * k + 1, 1, nx, top)
        return count
    for k in range(count):
        preds[k] = _row_prediction(row, s + 2 * s * k, s, nx, top)
    return count


@numba.njit(**_JIT)
def interpolation_encode(
    layer, offset, unit, tolerance, nbits, fine, planes, bits, bit_base, bins=WIDE_BINS
):
    """Predict and code one layer with the interpolation predictor.

    Parameters
    ----------
    layer : float32[ny, nx]
    offset, unit : float
        The value of fine level 0 and the fine step (the quantization step / 2**FINE_BITS).
    tolerance : float
        The error a value may have (besides one float32 ulp) before it becomes an exception.
    nbits : int
        Residual bins are signed ``nbits``-bit numbers, zigzag-coded.
    fine : int64[ny, nx], scratch
        The fine levels as the decoder will rebuild them.
    planes : uint8[nbytes, ny * nx], out
        The codes, byte-planar, in row order.
    bits : uint8[...], in/out
        Exception bitmap; value ``(i, j)`` is bit ``bit_base + i * nx + j``.
    bit_base : int
    bins : int64[64]
        The bin width at each stride ``2**k`` from 4 on, ``bins[k]`` (odd, at most
        ``BIN_UNITS``): :data:`WIDE_BINS` (predictors 1 to 3) or :data:`NARROW_BINS`
        (predictor 4). Strides 1 and 2 and the first point take ``BIN_UNITS``.

    Returns
    -------
    int
        The number of exceptions.
    """
    ny, nx = layer.shape
    if ny == 0 or nx == 0:
        return 0
    nbytes = planes.shape[0]
    top = ((np.int64(1) << nbits) - 1) << FINE_BITS
    scale = 1.0 / unit if unit > 0.0 else 0.0
    codes = np.empty(nx, np.uint32)
    preds = np.empty(nx, np.int64)
    flags = np.empty(nx, np.uint8)
    # Codes are stored in row order; the traversal fills them level by level.
    zig = np.empty((ny, nx), np.uint32)
    count = 0
    s = _top_stride(ny, nx)
    first = min((np.int64(1) << (nbits - 1)) * BIN_UNITS, top)
    b, rebuilt, bad = _settle(
        np.float64(layer[0, 0]), first, offset, unit, scale, tolerance, nbits, top, BIN_UNITS
    )
    fine[0, 0] = rebuilt
    zig[0, 0] = np.uint32(2 * b) if b >= 0 else np.uint32(-2 * b - 1)
    if bad:
        bits[bit_base >> 3] |= np.uint8(1 << (bit_base & 7))
        count += 1
    while s > 1:
        s //= 2
        level = 0
        while (1 << level) < s:
            level += 1
        width = bins[level] if s > 2 else BIN_UNITS
        for along_rows in (True, False):
            for i in range(s if not along_rows else 0, ny, 2 * s):
                if along_rows:
                    j_start, j_step = s, 2 * s
                    points = _row_predictions(fine, i, s, nx, top, preds)
                else:
                    j_start, j_step = 0, s
                    points = _column_predictions(fine, i, s, ny, nx, top, preds)
                if s == 1:
                    # Three quarters of all points: settled without a branch (in a loop
                    # that vectorizes along columns); the few that may miss the bound (or
                    # are not finite) again, one by one.
                    if j_step == 1:  # contiguous rows: their own, vectorized, version
                        doubtful = _settle_row(
                            layer[i], preds, points, offset, unit, scale, tolerance, nbits,
                            top, fine[i], zig[i], flags,
                        )  # fmt: skip
                    else:
                        doubtful = _settle_row(
                            layer[i, 1::2], preds, points, offset, unit, scale, tolerance,
                            nbits, top, fine[i, 1::2], zig[i, 1::2], flags,
                        )  # fmt: skip
                    if not doubtful:
                        continue
                    for k in range(points):
                        if not flags[k]:
                            continue
                        j = j_start + k * j_step
                        x = np.float64(layer[i, j])
                        b, rebuilt, bad = _settle(
                            x, preds[k], offset, unit, scale, tolerance, nbits, top, BIN_UNITS
                        )
                        fine[i, j] = rebuilt
                        zig[i, j] = np.uint32(2 * b) if b >= 0 else np.uint32(-2 * b - 1)
                        if bad:
                            n = bit_base + i * nx + j
                            bits[n >> 3] |= np.uint8(1 << (n & 7))
                            count += 1
                    continue
                for k in range(points):
                    j = j_start + k * j_step
                    x = np.float64(layer[i, j])
                    b, rebuilt, bad = _settle(
                        x, preds[k], offset, unit, scale, tolerance, nbits, top, width
                    )
                    fine[i, j] = rebuilt
                    zig[i, j] = np.uint32(2 * b) if b >= 0 else np.uint32(-2 * b - 1)
                    if bad:
                        n = bit_base + i * nx + j
                        bits[n >> 3] |= np.uint8(1 << (n & 7))
                        count += 1
    for i in range(ny):
        for j in range(nx):
            codes[j] = zig[i, j]
        _store_codes(codes, planes, i * nx, nbytes)
    return count


@numba.njit(**_JIT)
def _narrow_bins(fine, top_stride, bins):
    """Rescale the bins in ``fine`` (each ``b * BIN_UNITS``) of the points coded at strides
    of 4 and more to ``b * bins[log2(s)]``: the points ``(i, j)``, both multiples of ``s``,
    not both of ``2s``. One point in sixteen at most; nothing for :data:`WIDE_BINS`."""
    ny, nx = fine.shape
    s, level = 4, 2
    while s < top_stride:
        width = bins[level]
        if width != BIN_UNITS:
            for i in range(0, ny, s):
                row = fine[i]
                # Rows that are multiples of 2s: the odd multiples of s along them only.
                first, along = (s, 2 * s) if i % (2 * s) == 0 else (0, s)
                for j in range(first, nx, along):
                    row[j] = row[j] // BIN_UNITS * width
        s *= 2
        level += 1


@numba.njit(**_JIT)
def interpolation_decode(planes, nbits, offset, unit, fine, out, bins=WIDE_BINS):
    """Inverse of :func:`interpolation_encode` but for the exceptions: fills ``out``
    (float32[ny, nx]) from the layer's codes ``planes`` (uint8[nbytes, ny * nx]);
    ``fine`` (int64[ny, nx]) is scratch. Any codes decode to some values without overflow:
    predictions are clipped to ``[0, top]`` and a bin moves a level by less than
    ``2**24 * BIN_UNITS``. ``bins``: as for :func:`interpolation_encode`."""
    ny, nx = out.shape
    if ny == 0 or nx == 0:
        return
    nbytes = planes.shape[0]
    top = ((np.int64(1) << nbits) - 1) << FINE_BITS
    codes = np.empty(nx, np.uint32)
    preds = np.empty(nx, np.int64)
    # The bins, kept in ``fine`` until each is replaced by its level.
    for i in range(ny):
        _load_codes(planes, i * nx, codes, nbytes)
        row = fine[i]
        for j in range(nx):
            code = np.int64(codes[j])
            row[j] = ((code >> 1) ^ -(code & 1)) * BIN_UNITS
    s = _top_stride(ny, nx)
    _narrow_bins(fine, s, bins)
    fine[0, 0] += min((np.int64(1) << (nbits - 1)) * BIN_UNITS, top)
    while s > 1:
        s //= 2
        for i in range(0, ny, 2 * s):
            points = _row_predictions(fine, i, s, nx, top, preds)
            row = fine[i]
            if s == 1:
                for k in range(points):
                    row[2 * k + 1] += preds[k]
            else:
                for k in range(points):
                    row[s + 2 * s * k] += preds[k]
        for i in range(s, ny, 2 * s):
            points = _column_predictions(fine, i, s, ny, nx, top, preds)
            row = fine[i]
            if s == 1:
                for j in range(points):
                    row[j] += preds[j]
            else:
                for k in range(points):
                    row[k * s] += preds[k]
    for i in range(ny):
        row = fine[i]
        target = out[i]
        for j in range(nx):
            target[j] = np.float32(offset + np.float64(row[j]) * unit)


@numba.njit(**_JIT)
def interpolation_order(ny, nx, order):
    """Fill ``order`` (int64[ny * nx]) with the row-order position ``i * nx + j`` of each
    point of a layer in the interpolation predictor's coding order: (0, 0), then for each
    stride ``s`` from the top down, the points along rows, then those along columns.

    Predictor code 2 stores a layer's codes in this order: the bins of one level sit
    together, so the finest levels (three quarters of the points, mostly 0 at low nbits)
    make long runs of zeros for the entropy stage, which row order breaks up every few
    points with the coarser levels' bins."""
    if ny == 0 or nx == 0:
        return
    order[0] = 0
    t = 1
    s = _top_stride(ny, nx)
    while s > 1:
        s //= 2
        for i in range(0, ny, 2 * s):
            for j in range(s, nx, 2 * s):
                order[t] = i * nx + j
                t += 1
        for i in range(s, ny, 2 * s):
            for j in range(0, nx, s):
                order[t] = i * nx + j
                t += 1


@numba.njit(**_JIT)
def gather_codes(planes, order, out):
    """``out[:, t] = planes[:, order[t]]``: row-order codes into coding order."""
    for p in range(planes.shape[0]):
        source, target = planes[p], out[p]
        for t in range(order.size):
            target[t] = source[order[t]]


@numba.njit(**_JIT)
def scatter_codes(planes, order, out):
    """``out[:, order[t]] = planes[:, t]``: coding-order codes back into row order."""
    for p in range(planes.shape[0]):
        source, target = planes[p], out[p]
        for t in range(order.size):
            target[order[t]] = source[t]


@numba.njit(**_JIT)
def transpose_bits(source, nx, ny, target, base):
    """Set in ``target`` the bits of ``source``, the exception bitmap of a transposed layer
    (bit ``j * ny + i`` for point ``(i, j)``), at their places in the layer's row order,
    bit ``base + i * nx + j``."""
    for n in range(nx * ny):
        if source[n >> 3] >> (n & 7) & 1:
            j, i = divmod(n, ny)
            m = base + i * nx + j
            target[m >> 3] |= np.uint8(1 << (m & 7))


@numba.njit(**_JIT)
def clear_bits(target, start, count):
    """Clear the bits ``start`` to ``start + count - 1`` of the bitmap ``target``."""
    for n in range(start, start + count):
        target[n >> 3] &= np.uint8(~(1 << (n & 7)) & 0xFF)
