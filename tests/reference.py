"""A slow, obvious NumPy implementation of the layerquantizer1 steps, to test the kernels.

Everything is computed on whole arrays with int64 and float64, and none of it shares code
with :mod:`layerquantizer._kernels`.
"""

from __future__ import annotations

import numpy as np


def finite_ranges(layers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer min, max and count of the finite values; 0, 0 for a layer without any."""
    flat = layers.reshape(len(layers), -1).astype(np.float64)
    finite = np.isfinite(flat)
    counts = finite.sum(axis=1)
    mins = np.where(finite, flat, np.inf).min(axis=1, initial=np.inf)
    maxs = np.where(finite, flat, -np.inf).max(axis=1, initial=-np.inf)
    mins[counts == 0] = 0.0
    maxs[counts == 0] = 0.0
    return mins, maxs, counts


def finite_ranges_except(layers: np.ndarray, fill: float):
    """:func:`finite_ranges` of the values other than ``fill``, and the count of those;
    a layer of fill values only spans [fill, fill]."""
    flat = layers.reshape(len(layers), -1)
    is_fill = flat == np.float32(fill)
    mins, maxs, counts = finite_ranges(np.where(is_fill, np.nan, flat))
    fills = is_fill.sum(axis=1)
    only_fill = (counts == 0) & (fills > 0)
    mins[only_fill] = maxs[only_fill] = fill
    return mins, maxs, counts, fills


def quantize(layers, offsets, steps, tolerances, nbits):
    """Levels (int64) and the exception mask, as the format defines them."""
    x = layers.astype(np.float64)
    off = offsets[:, None, None]
    step = steps[:, None, None]
    scale = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
    with np.errstate(invalid="ignore", over="ignore"):
        levels = np.clip(np.floor((x - off) * scale + 0.5), 0, 2**nbits - 1)
        levels = np.nan_to_num(levels, nan=0.0)
        rebuilt = (off + levels * step).astype(np.float32).astype(np.float64)
        error = np.abs(x - rebuilt)
        ulp = np.spacing(np.abs(layers)).astype(np.float64)
        ok = np.isfinite(x) & (error <= tolerances[:, None, None] + ulp)
    return levels.astype(np.int64), ~ok


def lorenzo_codes(levels: np.ndarray, exceptions: np.ndarray, nbits: int) -> np.ndarray:
    """Zigzag-coded Lorenzo residuals modulo 2**nbits (exceptions take the prediction)."""
    modulus = 1 << nbits
    q = levels.copy()
    codes = np.zeros_like(q)
    for layer in range(q.shape[0]):
        for i in range(q.shape[1]):
            for j in range(q.shape[2]):
                up = q[layer, i - 1, j] if i else 0
                left = q[layer, i, j - 1] if j else 0
                corner = q[layer, i - 1, j - 1] if i and j else 0
                prediction = (up + left - corner) % modulus
                if exceptions[layer, i, j]:
                    q[layer, i, j] = prediction
                residual = (q[layer, i, j] - prediction) % modulus
                signed = residual - modulus if residual >= modulus // 2 else residual
                codes[layer, i, j] = 2 * signed if signed >= 0 else -2 * signed - 1
    return codes


def lorenzo_decode(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Levels back from zigzag-coded residuals: a 2-D running sum modulo 2**nbits."""
    signed = np.where(codes % 2 == 0, codes // 2, -(codes + 1) // 2)
    return signed.cumsum(axis=1).cumsum(axis=2) % (1 << nbits)


def _linear_prediction(q, i, j, coefficients) -> int:
    """The linear predictor (format version 4) at ``(i, j)`` of the levels ``q`` (2-D):
    six neighbours in 1/256, floor-rounded, where all exist; else Lorenzo, zeros outside."""
    ny, nx = q.shape
    if i >= 2 and 2 <= j <= nx - 2:
        neighbours = [q[i, j - 1], q[i - 1, j], q[i - 1, j - 1], q[i - 1, j + 1], q[i, j - 2],
                      q[i - 2, j]]  # fmt: skip
        total = sum(int(c) * int(v) for c, v in zip(coefficients, neighbours, strict=True))
        return (total + 128) // 256
    up = int(q[i - 1, j]) if i else 0
    left = int(q[i, j - 1]) if j else 0
    corner = int(q[i - 1, j - 1]) if i and j else 0
    return up + left - corner


def linear_codes(levels, exceptions, nbits, coefficients) -> np.ndarray:
    """Zigzag-coded residuals of one layer's levels (2-D) under the linear predictor,
    modulo 2**nbits (exceptions take the prediction, modulo 2**nbits)."""
    modulus = 1 << nbits
    q = levels.copy()
    codes = np.zeros_like(q)
    for i in range(q.shape[0]):
        for j in range(q.shape[1]):
            prediction = _linear_prediction(q, i, j, coefficients)
            if exceptions[i, j]:
                q[i, j] = prediction % modulus
            residual = (q[i, j] - prediction) % modulus
            signed = residual - modulus if residual >= modulus // 2 else residual
            codes[i, j] = 2 * signed if signed >= 0 else -2 * signed - 1
    return codes


def linear_decode(codes, nbits, coefficients) -> np.ndarray:
    """Levels of one layer back from its codes under the linear predictor."""
    modulus = 1 << nbits
    signed = np.where(codes % 2 == 0, codes // 2, -(codes + 1) // 2)
    q = np.zeros_like(codes)
    for i in range(q.shape[0]):
        for j in range(q.shape[1]):
            q[i, j] = (_linear_prediction(q, i, j, coefficients) + signed[i, j]) % modulus
    return q


def dequantize(levels, offsets, steps) -> np.ndarray:
    return (offsets[:, None, None] + levels * steps[:, None, None]).astype(np.float32)


def byte_planes(codes: np.ndarray, nbits: int) -> np.ndarray:
    """uint8[nbytes, N]: byte k of every code."""
    flat = codes.reshape(-1)
    return np.stack([(flat >> (8 * k)) & 0xFF for k in range((nbits + 7) // 8)]).astype(np.uint8)


def bit_planes(codes: np.ndarray, nbits: int) -> bytes:
    """Block mode 2's bytes after the mode byte: bit b of every code, 8 a byte, least
    significant bit first, plane 0 first."""
    flat = codes.reshape(-1).astype(np.int64)
    return b"".join(np.packbits((flat >> b) & 1, bitorder="little").tobytes() for b in range(nbits))


def pack_block(planes: np.ndarray) -> bytes:
    """A block's stored form (see layerquantizer._kernels.pack_block), the obvious way."""
    nbytes, size = planes.shape
    plain = b"\x00" + planes.tobytes()
    if nbytes == 1:
        return plain
    escaped = np.flatnonzero((planes[1:] != 0).any(axis=0))
    gaps = bytearray()
    last = -1
    for position in escaped:
        gap = int(position) - last - 1
        gaps += b"\xff" * (gap // 255) + bytes([gap % 255])
        last = int(position)
    stored = (
        b"\x01"
        + planes[0].tobytes()
        + np.array([len(escaped), len(gaps)], "<u4").tobytes()
        + bytes(gaps)
        + planes[1:, escaped].tobytes()
    )
    return stored if len(stored) < len(plain) else plain


def unpack_block(stored: bytes, nbytes: int, size: int) -> np.ndarray:
    """The planes of a block back from its stored form."""
    data = np.frombuffer(stored, np.uint8)
    if data[0] == 0:
        return data[1:].reshape(nbytes, size).copy()
    planes = np.zeros((nbytes, size), np.uint8)
    planes[0] = data[1 : 1 + size]
    escapes, gap_bytes = np.frombuffer(stored, "<u4", 2, 1 + size)
    gaps = data[9 + size : 9 + size + gap_bytes]
    positions, position, gap = [], -1, 0
    for byte in gaps:
        gap += int(byte)
        if byte != 255:
            position += gap + 1
            positions.append(position)
            gap = 0
    assert len(positions) == escapes
    uppers = data[9 + size + gap_bytes :].reshape(nbytes - 1, escapes)
    planes[1:, positions] = uppers
    return planes


# --- The interpolation predictor of format version 2, point by point ---------------------

FINE_BITS = 8
BIN_UNITS = 2**FINE_BITS - 1


def bin_width(s: int, narrow: bool) -> int:
    """The width of the bins at stride ``s`` (0: the first point): BIN_UNITS, or for
    predictor 4 (``narrow``) 191 at stride 4, 159 at 8 and 127 from 16 on."""
    if not narrow or s < 4:
        return BIN_UNITS
    return {4: 191, 8: 159}.get(s, 127)


def interpolation_order(ny: int, nx: int) -> list[tuple[int, int, int, int]]:
    """``(i, j, stride, axis)`` in coding order: (0, 0) first, then for strides from the
    largest power of two below max(ny, nx) down to 1, the points halfway along rows
    (axis 1) between known points, then those halfway along columns (axis 0)."""
    order = [(0, 0, 0, 1)]
    top = 1
    while top < max(ny, nx):
        top *= 2
    s = top // 2
    while s >= 1:
        order += [(i, j, s, 1) for i in range(0, ny, 2 * s) for j in range(s, nx, 2 * s)]
        order += [(i, j, s, 0) for i in range(s, ny, 2 * s) for j in range(0, nx, s)]
        s //= 2
    return order


def interpolation_prediction(fine, i, j, s, axis, nbits):
    """Cubic (-1, 9, 9, -1)/16 with four neighbours, linear with two, else the one before;
    rounded down; clipped to the fine levels [0, (2**nbits - 1) * 2**FINE_BITS]."""
    top = (2**nbits - 1) * 2**FINE_BITS
    if s == 0:
        return min(2 ** (nbits - 1) * BIN_UNITS, top)
    n = fine.shape[axis]
    p = j if axis == 1 else i

    def at(k):
        return int(fine[i, k] if axis == 1 else fine[k, j])

    if p + s >= n:
        pred = at(p - s)
    elif p - 3 * s >= 0 and p + 3 * s < n:
        pred = (-at(p - 3 * s) + 9 * at(p - s) + 9 * at(p + s) - at(p + 3 * s) + 8) // 16
    else:
        pred = (at(p - s) + at(p + s) + 1) // 2
    return min(max(pred, 0), top)


def interpolation_encode(layer, offset, unit, tolerance, nbits, narrow=False):
    """Zigzag-coded residual bins (int64[ny, nx]) and the exception mask of one layer
    (``narrow``: predictor 4's bins, :func:`bin_width`)."""
    ny, nx = layer.shape
    fine = np.zeros((ny, nx), np.int64)
    codes = np.zeros((ny, nx), np.int64)
    bad = np.zeros((ny, nx), bool)
    top = (2**nbits - 1) * 2**FINE_BITS
    half = 2 ** (nbits - 1)
    for i, j, s, axis in interpolation_order(ny, nx) if layer.size else []:
        pred = interpolation_prediction(fine, i, j, s, axis, nbits)
        width = bin_width(s, narrow)
        x = float(layer[i, j])
        if not np.isfinite(x):
            b, bad[i, j] = 0, True
        else:
            level = np.floor((x - offset) * (1.0 / unit) + 0.5) if unit > 0 else 0.0
            level = int(min(max(level, 0), top))
            b = min(max(np.floor((level - pred) / width + 0.5), -half), half - 1)
            b = int(b)
            rebuilt = float(np.float32(offset + (pred + b * width) * unit))
            ulp = float(np.spacing(np.float32(abs(x))))
            bad[i, j] = abs(x - rebuilt) > tolerance + ulp
        fine[i, j] = pred + b * width
        codes[i, j] = 2 * b if b >= 0 else -2 * b - 1
    return codes, bad


def interpolation_decode(codes, nbits, offset, unit, narrow=False):
    """The layer back from its codes (exceptions not yet overwritten)."""
    ny, nx = codes.shape
    fine = np.zeros((ny, nx), np.int64)
    for i, j, s, axis in interpolation_order(ny, nx) if codes.size else []:
        code = int(codes[i, j])
        b = code // 2 if code % 2 == 0 else -(code + 1) // 2
        width = bin_width(s, narrow)
        fine[i, j] = interpolation_prediction(fine, i, j, s, axis, nbits) + b * width
    return (offset + fine * unit).astype(np.float32)


# --- Block mode 3: the adaptive binary range coder --------------------------------------


def _range_decisions(code: int, previous: int, nbits: int) -> list[tuple[int, int]]:
    """The (context, bit) decisions of one zigzag code (docs/format.md, *Block mode 3*)."""
    near = min(previous, 2)
    decisions = [(near, int(code != 0))]
    if code:
        k = code.bit_length() - 1
        decisions += [(3 + near * 24 + u, 1) for u in range(k)]
        if k < nbits - 1:
            decisions.append((3 + near * 24 + k, 0))
        suffix = format(code, "b")[1:]  # the bits below the leading one, from the top
        decisions += [(75 + k * 3 + min(t, 2), int(bit)) for t, bit in enumerate(suffix)]
    return decisions


def range_encode(codes: np.ndarray, nbits: int) -> bytes:
    """The bytes of a block of mode 3, with the carry propagated back through the output
    (rather than LZMA's cached byte): a leading 0 byte, one byte a normalisation, four at
    the end."""
    probabilities = [1 << 14] * 147
    low, width, out = 0, 0xFFFFFFFF, bytearray([0])
    previous = 0
    for code in (int(c) for c in codes):
        for context, bit in _range_decisions(code, previous, nbits):
            p = probabilities[context]
            bound = (width >> 15) * p
            if bit:
                low, width = low + bound, width - bound
                probabilities[context] = p - (p >> 5)
            else:
                width = bound
                probabilities[context] = p + (((1 << 15) - p) >> 5)
            if low >= 1 << 32:
                low -= 1 << 32
                i = len(out) - 1
                while out[i] == 0xFF:
                    out[i] = 0
                    i -= 1
                out[i] += 1
            while width < 1 << 24:
                out.append(low >> 24)
                low, width = (low << 8) & 0xFFFFFFFF, width << 8
        previous = code
    for _ in range(4):
        out.append(low >> 24)
        low = (low << 8) & 0xFFFFFFFF
    return bytes(out)


def range_decode(data: bytes, nbits: int, count: int) -> tuple[np.ndarray, int]:
    """The ``count`` codes of a block of mode 3 and the bytes read (0 past the end)."""
    probabilities = [1 << 14] * 147
    position = 5
    code_value = int.from_bytes((bytes(data[:5]) + bytes(5))[:5], "big") & 0xFFFFFFFF
    width = 0xFFFFFFFF

    def decide(context):
        nonlocal width, code_value, position
        p = probabilities[context]
        bound = (width >> 15) * p
        if code_value < bound:
            width, bit = bound, 0
            probabilities[context] = p + (((1 << 15) - p) >> 5)
        else:
            code_value, width, bit = code_value - bound, width - bound, 1
            probabilities[context] = p - (p >> 5)
        while width < 1 << 24:
            byte = data[position] if position < len(data) else 0
            code_value = ((code_value << 8) | byte) & 0xFFFFFFFF
            width, position = width << 8, position + 1
        return bit

    codes = np.zeros(count, np.int64)
    previous = 0
    for n in range(count):
        near = min(previous, 2)
        code = 0
        if decide(near):
            k = 0
            while k < nbits - 1 and decide(3 + near * 24 + k):
                k += 1
            code = 1
            for t in range(k):
                code = (code << 1) | decide(75 + k * 3 + min(t, 2))
        codes[n] = previous = code
    return codes, position
