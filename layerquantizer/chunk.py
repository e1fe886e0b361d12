"""Encode and decode one chunk in the layerquantizer1 format.

This is the whole algorithm, shared by the numcodecs codec (:mod:`layerquantizer.codec`)
and the Zarr v3 codec (:mod:`layerquantizer.zarr3`); the numerics live in
:mod:`layerquantizer._kernels`, the byte layout in :mod:`layerquantizer._format`.

The promise, for every finite value ``x`` of a 2-D layer whose finite values span
``[vmin, vmax]``: ``|x - decoded| <= (vmax - vmin) / (2**nbits - 1) / 2 + ulp(x)``, with
``ulp`` the float32 spacing at ``x``. NaN, +inf and -inf (and any value that would miss
the bound by float32 rounding) are stored exactly, beside the quantized stream. Values equal
to a given fill value (Zarr's padding of edge chunks) are left out of ``[vmin, vmax]``.
"""

from __future__ import annotations

import functools

import numpy as np
import zstandard

from layerquantizer import _format, _grid, _kernels, _linear_kernels, _range_kernels
from layerquantizer._format import CODER_NONE, CODER_ZSTD, Header
from layerquantizer.errors import CorruptChunkError

#: The most bits per value for float32: its significand has 24.
MAX_NBITS = 24
#: Coded residuals per block (bytes, at least one row): encoder and decoder stream the
#: residual section through a buffer this size, which stays in cache.
BLOCK_BYTES = 1 << 20
# A layer quantized on a detected coarse grid goes back to the plain step when more
# than this share of its values had to be stored as exceptions.
_GRID_EXCEPTION_SHARE = 1 / 256
# The highest quantization level the format holds.
_MAX_LEVEL = float((1 << MAX_NBITS) - 1)


def max_abs_error(vmin: float, vmax: float, nbits: int) -> float:
    """The error bound, besides one float32 ulp, for a layer spanning ``[vmin, vmax]``.

    Examples
    --------
    >>> max_abs_error(0.0, 65535.0, 16)
    0.5
    """
    return (vmax - vmin) / ((1 << nbits) - 1) / 2.0


def as_float32_layers(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """The C-contiguous ``(layers, ny, nx)`` float32 view (or copy) to encode, and whether
    the input was Fortran-ordered."""
    if array.dtype.kind != "f" or array.dtype.itemsize != 4:
        raise TypeError(
            f"layerquantizer encodes float32 arrays, got dtype {array.dtype}; convert "
            "explicitly (e.g. array.astype('float32')) if the loss of precision is acceptable"
        )
    fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
    native = np.ascontiguousarray(array, dtype=np.float32)
    return native.reshape(_format.layer_shape(array.shape)), fortran


def encode(
    array: np.ndarray,
    nbits: int | None,
    level: int,
    coder: int = CODER_ZSTD,
    fill_value: float | None = None,
    *,
    tolerances: np.ndarray | None = None,
    tolerance: float | None = None,
    predictor: str = "auto",
    range_coding: bool | None = None,
    fallback: bool = True,
) -> bytes:
    """Encode a float32 array of any shape into one chunk.

    ``predictor`` is ``"auto"`` (per layer, the Lorenzo or the interpolation predictor,
    whichever promises fewer bytes; at ``nbits`` above :data:`AUTO_INTERPOLATION_MAX_NBITS`
    Lorenzo, without a trial, and from :data:`AUTO_LINEAR_MIN_NBITS` on Lorenzo or the
    linear predictor), ``"lorenzo"``, ``"interpolation"`` or ``"linear"`` (per layer, the
    linear predictor where its trial pays, else Lorenzo; with ``nbits`` only). ``"lorenzo"``,
    and ``"auto"`` above :data:`AUTO_INTERPOLATION_MAX_NBITS`, write format version 1, as
    before, unless a layer takes the linear predictor (format version 4). Otherwise, at
    :data:`RANGE_CODING_MAX_NBITS` bits or fewer (with a tolerance,
    :data:`TOLERANCE_INTERPOLATION_MAX_NBITS`), the blocks' codes are range-coded (block
    mode 3, format version 3) where that is smaller; ``range_coding=False`` never does
    (format version 2, for readers that predate version 3), ``True`` at any nbits.

    A chunk whose coded form would be larger than its values is written as a stored chunk
    (format version 3): the values themselves, through zstd when that is smaller, so that no
    chunk exceeds its input by more than a fixed header of ``36 + 8 * ndim`` bytes
    (``fallback=False`` keeps the coded form whatever its size).

    Values equal to ``fill_value`` (what Zarr pads edge chunks with) do not widen a layer's
    range: the bound is that of the other values, and the fill values, when they lie
    outside it, are stored exactly as exceptions. NaN and infinities never enter a range,
    so a non-finite ``fill_value`` is the same as None.

    ``tolerances`` (float64, one per layer), when given, tightens the error a value may
    have (besides one float32 ulp) before it is stored exactly: the smaller of it and the
    half step. The bytes stay a valid chunk of this format; more values become
    exceptions. Used to hold the float32 rounding of float64 data to the float64 bound.

    ``tolerance`` (with ``nbits=None``) is an absolute bound instead: every finite value
    comes back within ``tolerance`` (+ one float32 ulp). Each layer is quantized with a step
    of ``2 * tolerance`` (or a coarser grid its values sit on, losslessly), and the chunk's
    nbits are what its widest layer needs: see :func:`tolerance_steps`.

    Examples
    --------
    >>> x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    >>> y = decode(encode(x, nbits=8, level=1))
    >>> bool(np.abs(x - y).max() <= max_abs_error(0.0, 1.0, 8) + 1e-7)
    True
    """
    if (nbits is None) == (tolerance is None):
        raise ValueError(
            f"give nbits or tolerance, not both nor neither (nbits={nbits}, tolerance={tolerance})"
        )
    if predictor not in ("auto", "lorenzo", "interpolation", "linear"):
        raise ValueError(
            f"predictor must be 'auto', 'lorenzo', 'interpolation' or 'linear', got {predictor!r}"
        )
    if predictor == "linear" and tolerance is not None:
        raise ValueError(
            "predictor='linear' works with nbits, not with a tolerance; use predictor='auto'"
        )
    layers, fortran = as_float32_layers(array)
    nlayers, ny, nx = layers.shape
    bits = layers.reshape(nlayers, ny * nx).view(np.int32)
    fill = _fill_bits(fill_value)
    if fill is None:
        mins, maxs, _ = _kernels.finite_ranges(bits)
        fills = np.zeros(nlayers, np.int64)
    else:
        mins, maxs, _, fills = _kernels.finite_ranges_except(bits, *fill)
    if tolerance is None:
        plain_steps = (maxs - mins) / ((1 << nbits) - 1)
        allowed = plain_steps / 2.0
    else:
        plain_steps = tolerance_steps(mins, maxs, tolerance)
        allowed = np.full(nlayers, float(tolerance))
    grid_offsets, grids = _grid.coarse_grids(
        layers.reshape(nlayers, ny * nx),
        mins,
        maxs,
        plain_steps,
        fill=None if fill is None else np.float32(fill_value),
    )
    snapped = ~np.isnan(grids)
    offsets = np.where(snapped, grid_offsets, mins)
    steps = np.where(snapped, grids, plain_steps)
    if tolerances is not None:
        tolerances = np.asarray(tolerances, np.float64)
        if tolerances.shape != (nlayers,):
            raise ValueError(
                f"tolerances must hold one value per layer ({nlayers}), got shape "
                f"{tolerances.shape}"
            )
        allowed = np.minimum(allowed, tolerances)
    if tolerance is not None:
        nbits = _levels_bits(maxs, offsets, steps)
    predictors = coefficients = None
    range_coded = False
    # From 17 bits "auto" tries the linear predictor against Lorenzo (with nbits and zstd:
    # uncoded, smaller residuals save little but escapes); "linear" at any nbits.
    linear = predictor == "linear" or (
        predictor == "auto"
        and tolerance is None
        and nbits >= AUTO_LINEAR_MIN_NBITS
        and coder == CODER_ZSTD
    )
    if predictor == "linear":
        predictor = "lorenzo"
    # With a tolerance, layers that need up to 16 bits still try interpolation, range-coded.
    if predictor == "auto" and nbits > (
        AUTO_INTERPOLATION_MAX_NBITS if tolerance is None else TOLERANCE_INTERPOLATION_MAX_NBITS
    ):
        predictor = "lorenzo"
    if range_coding is None:
        most = RANGE_CODING_MAX_NBITS if tolerance is None else TOLERANCE_INTERPOLATION_MAX_NBITS
        range_coding = nbits <= most
    if predictor != "lorenzo" and layers.size:
        candidates = None
        if tolerance is not None:
            # Enough bits for the plain steps of the layers that may be interpolated (on the
            # plain step): with a tolerance, those off a coarse grid. A layer on a grid keeps
            # Lorenzo on the grid's levels (exact, and fewer bits: 4000 levels of a grid,
            # not 62500 of the tolerance); were its grid to fail, values beyond the chunk's
            # levels become exceptions.
            if predictor == "auto":
                candidates = ~snapped
            wide = np.ones_like(snapped) if candidates is None else candidates
            nbits = max(nbits, _levels_bits(maxs[wide], mins[wide], plain_steps[wide]))
        # With a tolerance (and range coding, which readers of version 3 have), interpolated
        # layers narrow the bins of their coarse strides (predictor 4, format version 4).
        narrow = tolerance is not None and range_coding
        predicted = _encode_predicted(
            layers, offsets, steps, snapped, mins, plain_steps, allowed, nbits, coder, level,
            predictor, range_coding, candidates, narrow,
        )  # fmt: skip
        # A chunk of Lorenzo layers whose blocks all kept bit planes is written in version
        # 1 (byte for byte as before version 3): only range coding made it worth version 3.
        if predicted is not None and (predicted[7] or predicted[4].any()):
            residuals, residual_bytes, bitmap, counts, predictors, offsets, steps = predicted[:7]
            range_coded = predicted[7]
    if linear and layers.size:
        # Version 4 only (chunks without a linear layer keep their version 1 bytes): layers
        # whose values' own float32 spacing is coarser than the step are quantized on it.
        grid_offsets, grids = _float32_grids(mins, maxs, plain_steps, offsets, steps, snapped)
        on_grid = snapped | (grids != steps)
        fitted, chosen = _linear_choices(layers, grid_offsets, grids)
        if chosen.any():
            predicted = _encode_predicted(
                layers, grid_offsets, grids, on_grid, mins, plain_steps, allowed, nbits, coder,
                level, "linear", range_coding, coefficients=fitted, linear=chosen,
            )  # fmt: skip
            residuals, residual_bytes, bitmap, counts, predictors, offsets, steps = predicted[:7]
            range_coded = predicted[7]
            coefficients = fitted[chosen]
    while predictors is None:
        if tolerance is not None:
            nbits = _levels_bits(maxs, offsets, steps)
        residuals, residual_bytes, bitmap, counts = _encode_residuals(
            layers, offsets, steps, allowed, nbits, coder, level
        )
        # A grid holds on the sample it was found in but may fail elsewhere: such layers
        # are quantized again with the plain step (rare, so the whole chunk is redone).
        # (Fill values outside the range are exceptions whatever the step: not counted.)
        failed = snapped & (counts - fills > ny * nx * _GRID_EXCEPTION_SHARE)
        if not failed.any():
            break
        offsets[failed], steps[failed] = mins[failed], plain_steps[failed]
        snapped &= ~failed

    exceptions = None
    count = int(counts.sum())
    if count:
        values = _kernels.gather_exceptions(layers.reshape(-1), bitmap, count)
        exceptions = (
            count,
            _format.compress(bitmap, coder, level),
            _format.compress(values.view(np.uint8), coder, level),
        )
    header = Header(
        flags=_format.FLAG_FORTRAN if fortran else 0,
        dtype_code=_dtype_code(array.dtype),
        nbits=nbits,
        coder=coder,
        block_rows=_block_rows(layers.shape[2], nbits),
        shape=tuple(array.shape),
        offsets=offsets,
        steps=steps,
        predictors=predictors,
        range_coded=range_coded or coefficients is not None,
        coefficients=coefficients,
    )
    encoded = _format.pack(header, residuals, residual_bytes, exceptions)
    if fallback and len(encoded) > _format.stored_size(header.shape, 4 * layers.size):
        return _stored(layers, header, level)
    return encoded


def _stored(layers: np.ndarray, header: Header, level: int) -> bytes:
    """The stored chunk of ``layers`` (format version 3): their float32 bytes, byte-planar,
    through zstd when that is smaller (and the header's coder is zstd), else as they are.
    Exact, so within any bound."""
    planar = np.ascontiguousarray(layers.reshape(-1).astype("<f4").view(np.uint8).reshape(-1, 4).T)
    coder, values = CODER_NONE, planar.tobytes()
    if header.coder == CODER_ZSTD:
        coded = _format.compress(values, CODER_ZSTD, level)
        if len(coded) < len(values):
            coder, values = CODER_ZSTD, coded
    return _format.pack_stored(
        header.shape, header.flags, header.dtype_code, header.nbits, coder, values
    )


def tolerance_steps(mins: np.ndarray, maxs: np.ndarray, tolerance: float) -> np.ndarray:
    """The quantization step of each layer for an absolute ``tolerance`` (offset: ``mins``).

    ``2 * tolerance``, the coarsest step whose half is within the tolerance, with two
    exceptions. A layer of one sign whose values' own float32 spacing is coarser (1e-3 on
    values of 1e5, whose spacing is 7.8e-3) takes that spacing: all its values are multiples
    of the spacing at its smallest magnitude, so it comes back exactly with fewer levels. A
    layer that would need more than ``2**24`` levels (the most the format holds) gets the
    24-bit step ``(max - min) / (2**24 - 1)``: the encoder still allows each value only
    ``tolerance`` (+ one ulp) and stores the values that miss it exactly, as exceptions.
    A constant layer gets step 0.

    Examples
    --------
    >>> tolerance_steps(np.array([270.0, 0.0]), np.array([300.0, 0.0]), 0.01)
    array([0.02, 0.  ])
    >>> float(tolerance_steps(np.array([65536.0]), np.array([70000.0]), 1e-3)[0]) == 2.0**-7
    True
    """
    spans = maxs - mins
    steps = np.full(spans.shape, 2.0 * tolerance)
    smallest = np.where(mins > 0, mins, -maxs)  # the smallest magnitude, when of one sign
    spacing = np.maximum(np.ldexp(1.0, np.frexp(smallest)[1] - 24), 2.0**-149)
    steps = np.where((smallest > 0) & (spacing > steps), spacing, steps)
    with np.errstate(over="ignore"):
        wide = spans / steps > _MAX_LEVEL
    steps[wide] = spans[wide] / _MAX_LEVEL
    steps[spans == 0] = 0.0
    return steps


def _float32_grids(mins, maxs, plain_steps, offsets, steps, snapped):
    """``offsets`` and ``steps`` with, for each layer of one sign off a coarse grid, the
    float32 spacing at its smallest magnitude where that is coarser than its (nonzero)
    plain step: every value of the layer is a multiple of it, so the layer comes back
    exactly with fewer levels (the geopotential high up at 20 bits: values near 5e5 are
    multiples of 1/32, the step of a 20-bit range of 2.5e4 is 1/42)."""
    smallest = np.where(mins > 0, mins, -maxs)
    spacing = np.maximum(np.ldexp(1.0, np.frexp(smallest)[1] - 24), 2.0**-149)
    use = ~snapped & (smallest > 0) & (plain_steps > 0) & (spacing > plain_steps)
    return np.where(use, mins, offsets), np.where(use, spacing, steps)


def _levels_bits(maxs: np.ndarray, offsets: np.ndarray, steps: np.ndarray) -> int:
    """The bits the highest level of any layer needs (1 to 24)."""
    positive = steps > 0
    with np.errstate(over="ignore"):
        levels = np.floor((maxs[positive] - offsets[positive]) / steps[positive] + 0.5)
    highest = min(float(levels.max(initial=0.0)), _MAX_LEVEL)
    # A level the bits cannot hold is clipped and the value stored as an exception.
    return max(1, int(highest).bit_length())


def _fill_bits(fill_value: float | None) -> tuple[int, int] | None:
    """The int32 bits of a finite fill value as float32, twice (+0 and -0 for zero)."""
    if fill_value is None or not np.isfinite(np.float32(fill_value)):
        return None
    fill = np.float32(fill_value)
    other = -fill if fill == 0 else fill
    return int(fill.view(np.int32)), int(np.float32(other).view(np.int32))


def _dtype_code(dtype: np.dtype) -> int:
    """The code of the byte order the decoder must give back: big-endian input gets a
    big-endian array (Zarr v2 views the decoded bytes as the array's dtype)."""
    return 2 if dtype == _format.DTYPE_CODES[2] else 1


def _block_rows(nx: int, nbits: int) -> int:
    return max(1, BLOCK_BYTES // max(1, nx * ((nbits + 7) // 8)))


def _encode_residuals(layers, offsets, steps, tolerances, nbits, coder, level):
    """The coded residual section (in parts) and its size before coding, the exception
    bitmap and the exceptions per layer."""
    nlayers, ny, nx = layers.shape
    rows = layers.reshape(nlayers * ny, nx)
    plane_count = (nbits + 7) // 8
    block_rows = _block_rows(nx, nbits)
    bitmap = np.zeros((layers.size + 7) // 8, np.uint8)
    counts = np.zeros(nlayers, np.int64)
    if not layers.size:
        return [], 0, bitmap, counts
    writer = _format.BlockWriter(coder, level)
    block_size = min(block_rows, len(rows)) * nx
    # Each block is coded straight into its stored form: a mode byte, then the planes.
    packed = np.empty(1 + plane_count * block_size, np.uint8)
    positions = np.empty(block_size, np.int64)
    upper = np.empty(2 * block_size, np.uint8)
    prev = np.zeros(nx + 1, np.uint32)
    for first in range(0, len(rows), block_rows):
        count = min(block_rows, len(rows) - first)
        block = packed[: 1 + plane_count * count * nx]
        planes = block[1:].reshape(plane_count, count * nx)
        _kernels.encode_rows(
            rows, first, ny, offsets, steps, tolerances, nbits, planes, bitmap, prev, counts
        )
        writer.write(block[: _kernels.pack_block(block, plane_count, positions, upper)])
    return writer.finish(), writer.size, bitmap, counts


def _coded_size(planes: np.ndarray, scratch: np.ndarray, positions, upper, compressor) -> int:
    """The size of a layer's codes (byte-planar) in their stored form through zstd at its
    fastest level: to compare predictors, which an entropy estimate does badly (zstd
    codes runs of zero residuals far below their order-0 entropy)."""
    nbytes, size = planes.shape
    block = scratch[: 1 + nbytes * size]
    block[1:] = planes.reshape(-1)
    stored = _kernels.pack_block(block, nbytes, positions, upper)
    return len(compressor.compress(block[:stored]))


#: The blocks of a version 2 chunk at this many bits or fewer are stored as bit planes
#: (mode 2): zstd then codes runs of zero bits (eight codes a byte) instead of zero bytes.
#: Measured at zstd level 1, interpolated layers: at 8 bits eraint_z 86.8 -> 95.6, eraint_u
#: 26.8 -> 32.6, synthetic temperature 30 -> 41; at 12 bits eraint_z 14.2 -> 16.9,
#: eraint_v 7.39 -> 7.76. Lorenzo codes gain too at 8 and 12 bits, and lose at 16.
BIT_PLANES_MAX_NBITS = _format.BIT_PLANES_MAX_NBITS
#: Block modes of the residual section (docs/format.md).
MODE_BIT_PLANES = 2
#: Format version 3 only, at 12 bits or fewer: the codes through an adaptive binary range
#: coder (:mod:`layerquantizer._range_kernels`).
MODE_RANGE_CODED = 3


class _BlockStream:
    """Cuts codes given layer by layer into the residual section's blocks of rows (of a
    version 2 chunk: mode 2 allowed)."""

    def __init__(
        self, writer, nrows: int, nx: int, block_rows: int, plane_count: int, nbits: int,
        range_coding: bool = False,
    ):  # fmt: skip
        self.writer, self.nx, self.block_rows = writer, nx, block_rows
        self.plane_count, self.rows_left, self.nbits = plane_count, nrows, nbits
        block_size = min(block_rows, nrows) * nx
        self.bit_planes = np.empty(1 + nbits * ((block_size + 7) // 8), np.uint8)
        # Mode 3 (format version 3): whether to try it, and whether any block used it.
        self.range_coding = range_coding
        self.range_coded = False
        if self.range_coding:
            most = _format.range_block_most(nbits, block_size)
            self.range_block = np.empty(5 + max(most, 0), np.uint8)
            if writer.coder == CODER_ZSTD:
                self.estimate = zstandard.ZstdCompressor(level=1)
        self.packed = np.empty(1 + plane_count * block_size, np.uint8)
        self.positions = np.empty(block_size, np.int64)
        self.upper = np.empty(2 * block_size, np.uint8)
        self._start_block()

    def _start_block(self) -> None:
        rows = min(self.block_rows, self.rows_left)
        self.rows_left -= rows
        self.size = rows * self.nx
        self.block = self.packed[: 1 + self.plane_count * self.size]
        self.planes = self.block[1:].reshape(self.plane_count, self.size)
        self.filled = 0

    def write(self, planes: np.ndarray) -> None:
        """Append a layer's codes, uint8[plane_count, ny * nx]."""
        done = 0
        while done < planes.shape[1]:
            take = min(self.size - self.filled, planes.shape[1] - done)
            self.planes[:, self.filled : self.filled + take] = planes[:, done : done + take]
            self.filled += take
            done += take
            if self.filled == self.size:
                self._flush()
                self._start_block()

    def _flush(self) -> None:
        if self.range_coding:
            # Before pack_block, which packs the planes in place.
            stored = self.range_block[: 5 + _format.range_block_most(self.nbits, self.size)]
            size = _range_kernels.range_encode(self.planes, self.nbits, stored[5:])
        if self.nbits <= BIT_PLANES_MAX_NBITS:
            other = self.bit_planes[: 1 + self.nbits * ((self.size + 7) // 8)]
            other[0] = MODE_BIT_PLANES
            _kernels.pack_bit_planes(self.planes, self.nbits, other[1:])
        else:
            other = self.block[
                : _kernels.pack_block(self.block, self.plane_count, self.positions, self.upper)
            ]
        if self.range_coding:
            # Mode 3 (a mode byte, the size as uint32, the bytes) only where smaller than
            # the other form through zstd at its fastest level: on Lorenzo codes of small
            # layers zstd may win (era5ens_z at 8 bits: 12.4 with bit planes, 11.5 with
            # mode 3 everywhere).
            if size >= 0 and self.writer.coder == CODER_ZSTD:
                if len(self.estimate.compress(other)) <= 5 + size:
                    size = -1
            if size >= 0:
                stored[0] = MODE_RANGE_CODED
                stored[1:5] = np.frombuffer(np.uint32(size).astype("<u4").tobytes(), np.uint8)
                self.writer.write(stored[: 5 + size])
                self.range_coded = True
                return
        self.writer.write(other)


# "auto" compares the predictors on six square tiles of this side, centred at a sixth, a
# half and five sixths of each layer's height and at a quarter and three quarters of its
# width (the whole layer when it has fewer than four tiles' rows or columns: a
# single band misjudged layers whose middle, the tropics, differs from the rest), then codes
# only the one chosen. Square, because the interpolation predictor codes a strip of 64 rows
# worse than it codes the layer (its coarse strides find no neighbours across the strip):
# trials on strips of 64 rows picked Lorenzo for the synthetic temperature and geopotential
# at 12 bits, where interpolation codes 6 % smaller. Six tiles of 128 cost a third of three
# strips of 64 rows on a 1440-wide layer.
TRIAL_SIDE = 128
# Tiles still favour Lorenzo: the interpolation predictor's share of the Lorenzo size on the
# tiles exceeded that on the whole layer by 5-10 % on every synthetic field at 8, 12 and 16
# bits (temperature at 12 bits: 1.025 on tiles, 0.945 on the layer). Tiles' sizes are
# compared after this correction; a whole layer's as they are.
TRIAL_TILE_BIAS = 1.07
# Tiles favour predictor 3 over 4: they miss where the whole layer's coarse strides gain
# (synthetic geopotential at the tolerance of 8 bits: 11 layers whose tiles range-coded to
# their floor, 72 bytes with predictor 3 and 74-86 with 4, took 3, and the chunk grew from
# 9.7 to 12.9 KB). Predictor 4 is kept unless 3 codes the tiles smaller by these bytes a
# tile. (Also by 3 %, a share: the synthetic temperature and wind at the tolerance of 12 bits
# lost 1 % to predictor 4.)
NARROW_TILE_SLACK = 8
#: "auto" tries the interpolation predictor up to this many bits only: above, Lorenzo on the
#: integers won on every field measured (bench_codec.py), and the trial would cost encode
#: time for nothing.
AUTO_INTERPOLATION_MAX_NBITS = 12
#: Range coding (block mode 3) is tried up to this many bits: it codes the codes of
#: interpolated layers 25-45 % smaller at 8 bits (eraint_z 94 -> 137, eraint_u 32 -> 40)
#: but only 4 % smaller at 12 bits, where it made encoding 8 times slower (synthetic
#: temperature, 48 -> 6 MiB/s; at 8 bits 38 -> 16 MiB/s, indicative, busy machine).
RANGE_CODING_MAX_NBITS = 8
#: With a tolerance, "auto" tries the interpolation predictor, and range coding, up to this
#: many bits: a chunk's nbits are those of its widest layer, and at 13 and 14 bits SZ3 (and
#: interpolation) coded eraint_z and the synthetic geopotential 20-35 % smaller than Lorenzo.
#: Up to 24 bits since predictor 4: the synthetic specific humidity at 1e-7 (19 bits) went
#: from 7.60 (Lorenzo; SZ3 8.14) to 8.78, for an encoder about 7 times slower there (196 ->
#: 29 MiB/s, one core: the range coder, some 20 decisions a code at 19 bits).
TOLERANCE_INTERPOLATION_MAX_NBITS = 24


def _on_levels(values: np.ndarray, offset: float, step: float) -> bool:
    """Whether the finite ``values`` are all ``float32(offset + q * step)`` for integers q."""
    finite = values[np.isfinite(values)].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # near float32's largest: not on them
        levels = np.floor((finite - offset) / step + 0.5)
        return bool((np.float32(offset + levels * step) == finite).all())


@functools.lru_cache(maxsize=8)
def _interpolation_order(ny: int, nx: int) -> np.ndarray:
    """:func:`_kernels.interpolation_order` of a layer of this shape (read-only, computed
    once: every layer of a chunk, and every chunk of an array, share it)."""
    order = np.empty(ny * nx, np.int64)
    _kernels.interpolation_order(ny, nx, order)
    order.flags.writeable = False
    return order


def _prefers_interpolation(
    layer, offset, step, snapped, low, plain_step, nbits, compressor, whole=None, narrow=False,
) -> int:  # fmt: skip
    """Whether the interpolation predictor codes the trial tiles of ``layer`` in fewer
    bytes than Lorenzo (zstd at its fastest level on the stored form, exceptions at 5
    bytes each), unless the tiles' values all sit on Lorenzo's levels: Lorenzo then keeps
    them exactly, which interpolation's lattice of 255/256 of a step would not (packed data
    on the grid it is quantized on, a coarse grid found or a tolerance of half its step, is
    returned losslessly). When the trial codes the whole layer, its interpolation codes (in
    coding order), exception bitmap, exception count and tolerance are put in the list
    ``whole``, for the encoder to use instead of coding the layer again.

    Returns the predictor: Lorenzo (0) or the interpolation (3); with ``narrow``, 4 where
    the narrow coarse bins range-code the tiles smaller (they gain much at coarse
    tolerances, and lose a little at fine ones and on small layers: era5ens_z at the
    tolerance of 12 bits, 8.18 with predictor 3, 7.67 with 4)."""
    ny, nx = layer.shape
    half = TRIAL_SIDE // 2
    if ny < 4 * TRIAL_SIDE or nx < 4 * TRIAL_SIDE:
        bands = [layer]
    else:
        bands = [
            layer[i - half : i + half, j - half : j + half]
            for i in (ny // 6, ny // 2, 5 * ny // 6)
            for j in (nx // 4, 3 * nx // 4)
        ]
    if step > 0 and all(_on_levels(band, offset, step) for band in bands):
        return _format.PREDICTOR_LORENZO
    rows, nx = bands[0].shape
    plane_count = (nbits + 7) // 8
    planes = np.empty((plane_count, rows * nx), np.uint8)
    bits = np.zeros((rows * nx + 7) // 8, np.uint8)
    scratch = np.empty(1 + plane_count * rows * nx, np.uint8)
    positions = np.empty(rows * nx, np.int64)
    upper = np.empty(2 * rows * nx, np.uint8)
    fine = np.empty((nx, rows), np.int64)
    order = _interpolation_order(nx, rows)
    ordered = np.empty_like(planes)
    tolerance = plain_step / 2.0
    unit = plain_step / (1 << _kernels.FINE_BITS)
    lorenzo = interpolation = 0
    if narrow:
        narrowed, narrow_bits = np.empty_like(planes), np.zeros_like(bits)
        range_out = np.empty(2 * planes.size + 64, np.uint8)
        wide_size = narrow_size = lorenzo_size = 0
    for band in bands:
        band = np.ascontiguousarray(band)
        counts = np.zeros(1, np.int64)
        bits[:] = 0
        _lorenzo_layer(
            band,
            0,
            rows,
            np.array([offset]),
            np.array([step]),
            np.array([snapped]),
            np.array([low]),
            np.array([plain_step]),
            np.array([tolerance]),
            nbits,
            planes,
            bits,
            np.zeros(nx + 1, np.uint32),
            counts,
        )
        if narrow:
            lorenzo_size += _range_coded_size(planes, nbits, range_out) + 5 * int(counts[0])
        lorenzo += _coded_size(planes, scratch, positions, upper, compressor)
        lorenzo += 5 * int(counts[0])
        bits[:] = 0
        transposed = np.ascontiguousarray(band.T)
        exceptions = _kernels.interpolation_encode(
            transposed, low, unit, tolerance, nbits, fine, planes, bits, 0
        )
        _kernels.gather_codes(planes, order, ordered)
        interpolation += _coded_size(ordered, scratch, positions, upper, compressor)
        interpolation += 5 * exceptions
        if narrow:
            wide_size += _range_coded_size(ordered, nbits, range_out) + 5 * exceptions
            narrow_bits[:] = 0
            narrow_exceptions = _kernels.interpolation_encode(
                transposed, low, unit, tolerance, nbits, fine, planes, narrow_bits, 0,
                _kernels.NARROW_BINS,
            )  # fmt: skip
            _kernels.gather_codes(planes, order, narrowed)
            narrow_size += _range_coded_size(narrowed, nbits, range_out) + 5 * narrow_exceptions
    bias = 1.0 if len(bands) == 1 else TRIAL_TILE_BIAS
    pick_narrow = narrow and (
        narrow_size < wide_size
        if len(bands) == 1
        else narrow_size < wide_size + NARROW_TILE_SLACK * len(bands)
    )
    if pick_narrow:
        # Against Lorenzo through the same range coder: zstd's estimate misjudged layers
        # of a few levels (synthetic geopotential at the tolerance of 8 bits, 4 layers that
        # Lorenzo range-codes in 3 KB less).
        if narrow_size >= bias * lorenzo_size:
            return _format.PREDICTOR_LORENZO
    elif interpolation >= bias * lorenzo:
        return _format.PREDICTOR_LORENZO
    if pick_narrow:
        if whole is not None and len(bands) == 1:
            whole += [narrowed, narrow_bits, narrow_exceptions, tolerance]
        return _format.PREDICTOR_INTERPOLATION_NARROW
    if whole is not None and len(bands) == 1:
        whole += [ordered, bits, exceptions, tolerance]
    return _format.PREDICTOR_INTERPOLATION_TRANSPOSED


def _range_coded_size(planes: np.ndarray, nbits: int, out: np.ndarray) -> float:
    """Bytes of ``planes`` through the range coder of block mode 3 (infinite when they do
    not fit ``out``)."""
    size = _range_kernels.range_encode(planes, nbits, out)
    return float(size) if size >= 0 else np.inf


def _encode_predicted(
    layers, offsets, steps, snapped, mins, plain_steps, allowed, nbits, coder, level, how,
    range_coding=False, candidates=None, narrow=False, coefficients=None, linear=None,
):  # fmt: skip
    """Code each layer with the Lorenzo or the interpolation predictor (``how``: "auto"
    picks per layer by a trial on a band of rows, see :func:`_prefers_interpolation`), into
    a version 2 residual section. Returns None when "auto" picked Lorenzo everywhere (the
    chunk is then written in version 1), else the section, its size before coding, the
    exception bitmap, the exceptions per layer, the predictors, the layer table and whether
    a block is range-coded (format version 3). ``allowed`` is each layer's largest error
    before a value is stored exactly. With ``range_coding``, a chunk of Lorenzo layers
    only is coded here too: range-coded Lorenzo codes often beat version 1's blocks.
    ``candidates`` (bool per layer; None: all) are the layers "auto" may interpolate.
    ``narrow``: interpolated layers may use predictor 4 (format version 4; "auto" picks it
    per layer), else they use 3. ``how="linear"`` interpolates none: the layers ``linear``
    (bool per layer) use the linear predictor with their ``coefficients`` (int64[L, 6]),
    the others Lorenzo."""
    nlayers, ny, nx = layers.shape
    if how == "auto":
        # One per call: a zstandard compressor must not be shared between threads.
        compressor = zstandard.ZstdCompressor(level=1)
        trials = [[] for _ in range(nlayers)]
        predictors = np.array(
            [
                _prefers_interpolation(
                    layers[layer],
                    offsets[layer],
                    steps[layer],
                    snapped[layer],
                    mins[layer],
                    plain_steps[layer],
                    nbits,
                    compressor,
                    trials[layer],
                    narrow,
                )
                if candidates is None or candidates[layer]
                else _format.PREDICTOR_LORENZO
                for layer in range(nlayers)
            ],
            np.uint8,
        )
        choices = predictors != _format.PREDICTOR_LORENZO
        if not choices.any() and not range_coding:
            return None
    else:
        choices = np.full(nlayers, how != "linear")
        trials = [[] for _ in range(nlayers)]
        interpolated = (
            _format.PREDICTOR_INTERPOLATION_NARROW
            if narrow
            else _format.PREDICTOR_INTERPOLATION_TRANSPOSED
        )
        predictors = np.where(choices, interpolated, _format.PREDICTOR_LORENZO).astype(np.uint8)
    if linear is None:
        linear = np.zeros(nlayers, bool)
    rows = layers.reshape(nlayers * ny, nx)
    size = ny * nx
    plane_count = (nbits + 7) // 8
    tolerances = allowed
    units = plain_steps / (1 << _kernels.FINE_BITS)
    offsets = np.where(choices, mins, offsets)
    steps = np.where(choices, units, steps)
    snapped = snapped & ~choices
    bitmap = np.zeros((rows.size + 7) // 8, np.uint8)
    counts = np.zeros(nlayers, np.int64)
    planes = np.empty((plane_count, size), np.uint8)
    # Interpolated layers are coded transposed (predictor 3): columns first at each stride
    # coded 5-12 % smaller than rows first on every field measured (ERA-Interim, synthetic).
    ordered = np.empty_like(planes)
    order = _interpolation_order(nx, ny)
    transposed = np.empty((nx, ny), np.float32)
    layer_bits = np.empty((size + 7) // 8, np.uint8)
    fine = np.empty((nx, ny), np.int64)
    prev = np.zeros(nx + 1, np.uint32)
    writer = _format.BlockWriter(coder, level)
    stream = _BlockStream(
        writer, nlayers * ny, nx, _block_rows(nx, nbits), plane_count, nbits, range_coding
    )
    for layer in range(nlayers):
        if choices[layer] and trials[layer] and trials[layer][3] == tolerances[layer]:
            # The trial coded this whole layer with the same settings: its codes it is.
            trial_codes, trial_bits, counts[layer], _ = trials[layer]
            if counts[layer]:
                _kernels.transpose_bits(trial_bits, nx, ny, bitmap, layer * size)
            stream.write(trial_codes)
        elif choices[layer]:
            transposed[...] = layers[layer].T
            layer_bits[:] = 0
            counts[layer] = _kernels.interpolation_encode(
                transposed,
                mins[layer],
                units[layer],
                tolerances[layer],
                nbits,
                fine,
                planes,
                layer_bits,
                0,
                (
                    _kernels.NARROW_BINS
                    if predictors[layer] == _format.PREDICTOR_INTERPOLATION_NARROW
                    else _kernels.WIDE_BINS
                ),
            )
            if counts[layer]:
                _kernels.transpose_bits(layer_bits, nx, ny, bitmap, layer * size)
            _kernels.gather_codes(planes, order, ordered)
            stream.write(ordered)
        elif linear[layer]:
            while True:
                counts[layer] = _linear_kernels.linear_encode(
                    layers[layer], offsets[layer], steps[layer], tolerances[layer], nbits,
                    coefficients[layer], planes, bitmap, layer * size,
                )  # fmt: skip
                # On the plain step when the layer's coarse grid fails (as for Lorenzo).
                if not snapped[layer] or counts[layer] <= size * _GRID_EXCEPTION_SHARE:
                    break
                _kernels.clear_bits(bitmap, layer * size, size)
                offsets[layer], steps[layer] = mins[layer], plain_steps[layer]
                snapped[layer] = False
            stream.write(planes)
        else:
            _lorenzo_layer(
                rows,
                layer,
                ny,
                offsets,
                steps,
                snapped,
                mins,
                plain_steps,
                tolerances,
                nbits,
                planes,
                bitmap,
                prev,
                counts,
            )
            stream.write(planes)
    predictors[linear] = _format.PREDICTOR_LINEAR
    return (
        writer.finish(), writer.size, bitmap, counts, predictors, offsets, steps,
        stream.range_coded,
    )  # fmt: skip


#: "auto" tries the linear predictor from this many bits on: it codes the synthetic ERA5
#: fields 5-6 % smaller at 16 bits and 20 bits (u at 16 bits 4.03 -> 4.27, geopotential at
#: 20 bits 2.69 -> 2.90 with the float32 spacing), but its decoder is a recurrence along
#: each row: at 16 bits, the default, decoding fell from 0.63 to 0.22 of Blosc-lz4's speed
#: and encoding from 0.60 to 0.42 (one core), so there it is asked for (``"linear"``).
AUTO_LINEAR_MIN_NBITS = 17
#: "auto" uses the linear predictor on a layer when its residuals on the
#: fitted sample cost this many bits a value less than Lorenzo's (as ``log2(1 + |r|)``):
#: less is not worth its slower decoding (a recurrence along the row, where Lorenzo's is a
#: running sum). It must also save twice its 13 bytes of table (small layers).
LINEAR_GAIN_BITS = 0.07
_LINEAR_TABLE_BYTES = 1 + 2 * _format.LINEAR_COEFFICIENTS
# Rows of a layer the linear predictor's coefficients are fitted on (each with the two
# above it), spread over the layer: 16 x 1440 points fit six coefficients well.
_LINEAR_SAMPLE_ROWS = 16


def _linear_choices(layers, offsets, steps) -> tuple[np.ndarray, np.ndarray]:
    """For each layer, the linear predictor's coefficients fitted on a sample of its rows'
    levels (int64[L, 6]) and whether they beat Lorenzo there by :data:`LINEAR_GAIN_BITS`."""
    nlayers, ny, nx = layers.shape
    fitted = np.zeros((nlayers, _format.LINEAR_COEFFICIENTS), np.int64)
    chosen = np.zeros(nlayers, bool)
    if ny < 3 or nx < 4:
        return fitted, chosen
    rows = np.unique(np.linspace(2, ny - 1, min(_LINEAR_SAMPLE_ROWS, ny - 2)).astype(np.int64))
    for layer in range(nlayers):
        if steps[layer] > 0:
            gain = _linear_kernels.fit_coefficients(
                layers[layer], rows, offsets[layer], steps[layer], fitted[layer]
            )
            chosen[layer] = gain >= LINEAR_GAIN_BITS and gain * ny * nx >= 16 * _LINEAR_TABLE_BYTES
    return fitted, chosen


def _lorenzo_layer(
    rows,
    layer,
    ny,
    offsets,
    steps,
    snapped,
    mins,
    plain_steps,
    tolerances,
    nbits,
    planes,
    bits,
    prev,
    counts,
):
    """Lorenzo codes of one layer into ``planes``, on the plain step when the layer's
    coarse grid fails (as :func:`encode` does for whole chunks)."""
    nx = rows.shape[1]
    while True:
        _kernels.encode_rows(
            rows, layer * ny, ny, offsets, steps, tolerances, nbits, planes, bits, prev, counts
        )
        if not snapped[layer] or counts[layer] <= ny * nx * _GRID_EXCEPTION_SHARE:
            return
        _kernels.clear_bits(bits, layer * ny * nx, ny * nx)
        counts[layer] = 0
        offsets[layer], steps[layer] = mins[layer], plain_steps[layer]
        snapped[layer] = False


class _BlockReader:
    """Reads the residual section's blocks back, checking each block's own fields."""

    def __init__(self, chunk: _format.Chunk, nrows: int, nx: int):
        header = chunk.header
        self.plane_count = plane_count = header.plane_count
        self.reader = _format.BlockReader(chunk.residuals, header.coder, chunk.residual_bytes)
        block_size = min(header.block_rows, nrows) * nx
        self.buffer = np.empty(plane_count * block_size, np.uint8)
        self.gaps = np.empty(block_size + block_size // 255 + 1, np.uint8)
        self.uppers = np.empty((plane_count - 1) * block_size, np.uint8)
        self.positions = np.empty(block_size, np.int64)
        self.no_escapes = np.empty((max(plane_count - 1, 1), 0), np.uint8)
        self.mode = np.empty(1, np.uint8)
        self.counts = np.empty(2, "<u4")
        # Mode 2 (bit planes) exists in version 2 chunks of 12 bits or fewer only.
        self.nbits = header.nbits
        self.bit_planes = header.predictors is not None and header.nbits <= BIT_PLANES_MAX_NBITS
        if self.bit_planes:
            self.bit_buffer = np.empty(header.nbits * ((block_size + 7) // 8), np.uint8)
        # Mode 3 (range-coded codes) exists in version 3 chunks only.
        self.range_coded = header.range_coded
        self.length = np.empty(1, "<u4")
        if self.range_coded:
            self.range_buffer = np.empty(
                max(_format.range_block_most(header.nbits, block_size), 0), np.uint8
            )

    def read(self, first: int, size: int):
        """The next block, of ``size`` codes starting at row ``first``: its planes (only
        byte 0 is read for an escaped block), whether it is escaped, and the escapes'
        positions and upper bytes."""
        plane_count, reader = self.plane_count, self.reader
        planes = self.buffer[: plane_count * size].reshape(plane_count, size)
        reader.read_into(self.mode)
        mode = self.mode[0]
        if mode == MODE_BIT_PLANES and self.bit_planes:
            data = reader.read_into(self.bit_buffer[: self.nbits * ((size + 7) // 8)])
            _kernels.unpack_bit_planes(data, self.nbits, planes)
            return planes, False, self.positions, self.no_escapes
        if mode == MODE_RANGE_CODED and self.range_coded:
            reader.read_into(self.length.view(np.uint8))
            length, most = int(self.length[0]), _format.range_block_most(self.nbits, size)
            if not _range_kernels.MIN_BYTES <= length <= most:
                raise CorruptChunkError(
                    f"residual block at row {first}: {length} range-coded bytes for {size} "
                    f"values (at least {_range_kernels.MIN_BYTES}, at most {most})"
                )
            data = reader.read_into(self.range_buffer[:length])
            if _range_kernels.range_decode(data, self.nbits, planes) != length:
                raise CorruptChunkError(
                    f"residual block at row {first}: the range-coded codes do not fill "
                    f"their {length} bytes"
                )
            return planes, False, self.positions, self.no_escapes
        reader.read_into(planes[0])
        if mode == 0:
            reader.read_into(planes[1:])
            return planes, False, self.positions, self.no_escapes
        if mode != 1 or plane_count == 1:
            raise CorruptChunkError(f"residual block at row {first}: unknown mode {mode}")
        reader.read_into(self.counts.view(np.uint8))
        escapes, gap_bytes = int(self.counts[0]), int(self.counts[1])
        if escapes > size or not escapes <= gap_bytes <= escapes + size // 255 + 1:
            raise CorruptChunkError(
                f"residual block at row {first}: {escapes} escapes and {gap_bytes} gap "
                f"bytes for {size} values"
            )
        block_gaps = reader.read_into(self.gaps[:gap_bytes])
        positions = self.positions[:escapes]
        if not 0 <= _kernels.escape_positions(block_gaps, positions) <= size:
            raise CorruptChunkError(
                f"residual block at row {first}: the gaps do not place {escapes} escapes"
            )
        uppers = reader.read_into(self.uppers[: (plane_count - 1) * escapes])
        return planes, True, positions, uppers.reshape(plane_count - 1, escapes)


def _decode_predicted(chunk: _format.Chunk, layers: np.ndarray) -> None:
    """Decode a version 2 residual section: the blocks' codes are gathered per layer, then
    each layer is decoded with its predictor."""
    header = chunk.header
    nlayers, ny, nx = layers.shape
    rows = layers.reshape(nlayers * ny, nx)
    size = ny * nx
    blocks = _BlockReader(chunk, len(rows), nx)
    layer_planes = np.empty((header.plane_count, size), np.uint8)
    ordered = header.predictors == _format.PREDICTOR_INTERPOLATION_ORDERED
    # Predictor 4 is predictor 3 with narrower bins at the coarse strides.
    narrow = header.predictors == _format.PREDICTOR_INTERPOLATION_NARROW
    transposed = narrow | (header.predictors == _format.PREDICTOR_INTERPOLATION_TRANSPOSED)
    if ordered.any() or transposed.any():
        row_planes = np.empty_like(layer_planes)
    if ordered.any():
        order = _interpolation_order(ny, nx)
    if transposed.any():
        transposed_order = _interpolation_order(nx, ny)
        transposed_fine = np.empty((nx, ny), np.int64)
    fine = np.empty((ny, nx), np.int64)
    prev = np.zeros(nx, np.uint32)
    # The coefficients of each layer of the linear predictor (version 4), in layer order.
    linear = np.cumsum(header.predictors == _format.PREDICTOR_LINEAR) - 1
    layer, filled = 0, 0
    for first in range(0, len(rows), header.block_rows):
        block_size = min(header.block_rows, len(rows) - first) * nx
        planes, escaped, positions, uppers = blocks.read(first, block_size)
        if escaped:
            planes[1:] = 0
            planes[1:, positions] = uppers
        done = 0
        while done < block_size:
            take = min(size - filled, block_size - done)
            layer_planes[:, filled : filled + take] = planes[:, done : done + take]
            filled += take
            done += take
            if filled == size:
                if transposed[layer]:
                    _kernels.scatter_codes(layer_planes, transposed_order, row_planes)
                    # Written through the transposed view: no copy of the layer after.
                    _kernels.interpolation_decode(
                        row_planes,
                        header.nbits,
                        header.offsets[layer],
                        header.steps[layer],
                        transposed_fine,
                        layers[layer].T,
                        _kernels.NARROW_BINS if narrow[layer] else _kernels.WIDE_BINS,
                    )
                elif ordered[layer]:
                    _kernels.scatter_codes(layer_planes, order, row_planes)
                    _kernels.interpolation_decode(
                        row_planes,
                        header.nbits,
                        header.offsets[layer],
                        header.steps[layer],
                        fine,
                        layers[layer],
                    )
                elif header.predictors[layer] == _format.PREDICTOR_LINEAR:
                    _linear_kernels.linear_decode(
                        layer_planes,
                        header.nbits,
                        header.offsets[layer],
                        header.steps[layer],
                        header.coefficients[linear[layer]],
                        layers[layer],
                    )
                elif header.predictors[layer] == _format.PREDICTOR_INTERPOLATION:
                    _kernels.interpolation_decode(
                        layer_planes,
                        header.nbits,
                        header.offsets[layer],
                        header.steps[layer],
                        fine,
                        layers[layer],
                    )
                else:
                    _kernels.decode_rows(
                        layer_planes,
                        layer * ny,
                        ny,
                        header.nbits,
                        header.offsets,
                        header.steps,
                        rows,
                        prev,
                        False,
                        blocks.positions,
                        blocks.no_escapes,
                    )
                layer, filled = layer + 1, 0
    blocks.reader.finish()


def _decode_residuals(chunk: _format.Chunk, layers: np.ndarray) -> None:
    header = chunk.header
    nlayers, ny, nx = layers.shape
    rows = layers.reshape(nlayers * ny, nx)
    blocks = _BlockReader(chunk, len(rows), nx)
    prev = np.zeros(nx, np.uint32)
    for first in range(0, len(rows), header.block_rows):
        size = min(header.block_rows, len(rows) - first) * nx
        planes, escaped, positions, uppers = blocks.read(first, size)
        _kernels.decode_rows(
            planes,
            first,
            ny,
            header.nbits,
            header.offsets,
            header.steps,
            rows,
            prev,
            escaped,
            positions,
            uppers,
        )
    blocks.reader.finish()


def decode(buf, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a chunk made by :func:`encode`, optionally into ``out``.

    ``buf`` may be any object exposing the buffer protocol. ``out``, when given, must
    hold exactly as many bytes as the decoded chunk; it is filled and returned (as is
    when it is a C-contiguous float32 array, else through a copy). A float32 ``out`` of
    either byte order receives the values; a new array, or the bytes written into any
    other ``out``, have the byte order of the array that was encoded.
    """
    view = memoryview(buf).cast("B") if not isinstance(buf, memoryview) else buf.cast("B")
    chunk = _format.parse(view)
    header = chunk.header
    size = header.size
    if out is not None and np.asarray(out).dtype.hasobject:
        # As the numcodecs compressors do: the bytes of pointers are no place for values.
        raise TypeError(
            f"out has dtype {np.asarray(out).dtype}: object arrays are not supported; pass "
            "a float32 array or a buffer of the chunk's size"
        )
    if out is not None and np.asarray(out).nbytes != size * 4:
        raise ValueError(
            f"out holds {np.asarray(out).nbytes} bytes; the chunk decodes to {size * 4} "
            f"(shape {header.shape}, float32)"
        )

    direct = (
        out is not None
        and isinstance(out, np.ndarray)
        and out.dtype == np.float32
        and out.flags.c_contiguous
        and out.flags.writeable
        and not header.flags & _format.FLAG_FORTRAN
    )
    result = out.reshape(header.shape) if direct else np.empty(header.shape, np.float32)
    layers = result.reshape(_format.layer_shape(header.shape))
    if chunk.stored is not None:
        planar = _format.decompress(chunk.stored, header.coder, 4 * size, "stored values")
        layers.reshape(-1).view(np.uint8).reshape(-1, 4)[...] = planar.reshape(4, size).T
    elif size and header.predictors is not None:
        _decode_predicted(chunk, layers)
    elif size:
        _decode_residuals(chunk, layers)
    if chunk.exception_count:
        bitmap = _format.decompress(
            chunk.exception_bitmap, header.coder, (size + 7) // 8, "exception bitmap"
        )
        values = _format.decompress(
            chunk.exception_values, header.coder, chunk.exception_count * 4, "exception values"
        ).view("<f4")
        if _kernels.scatter_exceptions(layers.reshape(-1), bitmap, values) < 0:
            raise CorruptChunkError(
                f"exception bitmap does not match the {chunk.exception_count} stored values"
            )

    if header.flags & _format.FLAG_FORTRAN:
        result = np.asfortranarray(result)
    if direct:
        return out
    # A float32 `out` of either byte order receives the values; anything else (bytes), and
    # a new array, the bytes in the byte order the chunk was encoded from.
    order = out.dtype if _is_float32(out) else header.dtype
    if result.dtype != order:
        result = result.astype(order, order="K")
    if out is None:
        return result
    from numcodecs.compat import ndarray_copy

    return ndarray_copy(result, out)


def _is_float32(array) -> bool:
    return isinstance(array, np.ndarray) and array.dtype.kind == "f" and array.dtype.itemsize == 4


__all__ = ["CODER_NONE", "CODER_ZSTD", "MAX_NBITS", "decode", "encode", "max_abs_error"]
