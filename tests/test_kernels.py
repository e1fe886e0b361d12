"""The numba kernels against the slow NumPy reference in tests/reference.py."""

import numpy as np
import pytest
import reference
from numpy.testing import assert_array_equal

from layerquantizer import _kernels

SHAPES = [(1, 1, 1), (1, 1, 7), (1, 5, 1), (2, 9, 13), (3, 16, 33)]


def random_layers(shape, rng, specials=0.0):
    layers = rng.standard_normal(shape) * 10 + rng.standard_normal((shape[0], 1, 1)) * 50
    layers = layers.astype(np.float32)
    if specials:
        pick = rng.random(shape) < specials
        layers[pick] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), pick.sum())
    return layers


def encode(layers, offsets, steps, tolerances, nbits, block_rows):
    """Run the encode kernel block by block, as chunk.py does."""
    nlayers, ny, nx = layers.shape
    rows = layers.reshape(-1, nx)
    planes = np.empty(((nbits + 7) // 8, layers.size), np.uint8)
    bits = np.zeros((layers.size + 7) // 8, np.uint8)
    prev = np.zeros(nx + 1, np.uint32)
    counts = np.zeros(nlayers, np.int64)
    for first in range(0, len(rows), block_rows):
        count = min(block_rows, len(rows) - first)
        block = np.empty((planes.shape[0], count * nx), np.uint8)
        _kernels.encode_rows(
            rows, first, ny, offsets, steps, tolerances, nbits, block, bits, prev, counts
        )
        planes[:, first * nx : (first + count) * nx] = block
    return planes, bits, counts


def decode(planes, layers_shape, offsets, steps, nbits, block_rows, escaped=False):
    """Run the decode kernel block by block, from full planes or (escaped) from byte 0 and
    the positions and upper bytes of the codes that have any."""
    nlayers, ny, nx = layers_shape
    rows = np.empty((nlayers * ny, nx), np.float32)
    prev = np.zeros(nx, np.uint32)
    for first in range(0, len(rows), block_rows):
        count = min(block_rows, len(rows) - first)
        block = np.ascontiguousarray(planes[:, first * nx : (first + count) * nx])
        positions = np.flatnonzero((block[1:] != 0).any(axis=0)).astype(np.int64)
        uppers = np.ascontiguousarray(block[1:, positions])
        if escaped:
            block[1:] = 77  # must not be read
        _kernels.decode_rows(
            block, first, ny, nbits, offsets, steps, rows, prev, escaped, positions, uppers
        )
    return rows.reshape(layers_shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("specials", [0.0, 0.2, 1.0])
def test_finite_ranges(shape, specials):
    layers = random_layers(shape, np.random.default_rng(1), specials)
    got = _kernels.finite_ranges(layers.reshape(shape[0], -1).view(np.int32))
    for g, want in zip(got, reference.finite_ranges(layers), strict=True):
        assert_array_equal(g, want)


def test_finite_ranges_extremes():
    values = np.array([[-0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, np.nan]], np.float32)
    mins, maxs, counts = _kernels.finite_ranges(values.view(np.int32))
    big = float(np.finfo(np.float32).max)
    assert (mins[0], maxs[0], counts[0]) == (-big, big, 5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fill", [0.0, -0.0, -999.0])
@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_finite_ranges_except(shape, fill, share):
    rng = np.random.default_rng(2)
    layers = random_layers(shape, rng, specials=0.1)
    pick = rng.random(shape) < share
    layers[pick] = rng.choice(np.array([0.0, -0.0, -999.0], np.float32), pick.sum())
    fill32 = np.float32(fill)
    other = -fill32 if fill32 == 0 else fill32
    bits = layers.reshape(shape[0], -1).view(np.int32)
    got = _kernels.finite_ranges_except(
        bits, int(fill32.view(np.int32)), int(np.float32(other).view(np.int32))
    )
    for g, want in zip(got, reference.finite_ranges_except(layers, fill), strict=True):
        assert_array_equal(g, want)


@pytest.mark.parametrize("nbits", [1, 2, 7, 8, 9, 15, 16, 17, 23, 24])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block_rows", [1, 4, 1000])
def test_encode_rows_matches_reference(nbits, shape, block_rows):
    rng = np.random.default_rng(nbits)
    layers = random_layers(shape, rng, specials=0.1)
    mins, maxs, _ = reference.finite_ranges(layers)
    steps = (maxs - mins) / (2**nbits - 1)
    tolerances = steps / 2
    planes, bits, counts = encode(layers, mins, steps, tolerances, nbits, block_rows)

    levels, exceptions = reference.quantize(layers, mins, steps, tolerances, nbits)
    codes = reference.lorenzo_codes(levels, exceptions, nbits)
    assert_array_equal(planes, reference.byte_planes(codes, nbits))
    assert_array_equal(np.unpackbits(bits, count=layers.size, bitorder="little"),
                       exceptions.reshape(-1))  # fmt: skip
    assert_array_equal(counts, exceptions.sum(axis=(1, 2)))
    assert codes.max(initial=0) < 2**nbits


def test_row_ulps_are_float32_ulp_of_every_kind_of_float():
    # The vectorized ulps of encode_rows must be float32_ulp's to the bit (the frozen bytes
    # depend on which values within one ulp of the bound are kept): zeros, subnormals, the
    # normal range, its extremes; 0 for NaN and infinities.
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-40, 2.0**-126, 2.0**-125, 1.0, -1.5,
                        3.4028235e38, np.inf, -np.inf, np.nan], np.float32)  # fmt: skip
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [special, rng.integers(-(2**31), 2**31, 100_000).astype(np.int32).view(np.float32)]
    )
    ulp_bits = np.empty(values.size, np.int32)
    _kernels._row_ulps(values.view(np.int32), ulp_bits)
    finite = np.isfinite(values)
    expected = [_kernels.float32_ulp(float(x)) for x in values[finite]]
    assert_array_equal(ulp_bits.view(np.float32)[finite].astype(np.float64), expected)
    assert_array_equal(ulp_bits[~finite], 0)


def test_fast_quantize_pass_flags_every_row_the_exact_one_does():
    # encode_rows quantizes a row again exactly only when the fast pass (ulps from the
    # exponent bits) flags it: it must flag every value the exact pass does, of every kind
    # of float, with steps near the values' own ulp (where the ulp decides).
    special = np.array([0.0, -0.0, 1e-45, 1e-40, 2.0**-126, 2.0**-104, 2.0**-103, 1.0,
                        3.4028235e38, np.inf, -np.inf, np.nan], np.float32)  # fmt: skip
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [special, rng.integers(-(2**31), 2**31, 3000).astype(np.int32).view(np.float32)]
    )
    row, ulps, cur, bad = (np.empty(1, t) for t in (np.float32, np.int32, np.uint32, np.uint8))
    flagged = 0
    for x, spread in zip(values, rng.uniform(0.5, 6.0, values.size), strict=True):
        row[0] = x
        ulp = _kernels.float32_ulp(float(x)) if np.isfinite(x) else 1.0
        step = ulp * spread
        offset = float(x) - step * rng.integers(0, 50) - rng.uniform(0, step)
        tolerance = step / 2 * rng.uniform(0.0, 1.0)
        args = (offset, step, 1.0 / step, tolerance, 65535.0)
        _kernels._row_ulps(row.view(np.int32), ulps)
        exact = _kernels._quantize_row(row, ulps.view(np.float32), *args, cur, bad)
        fast = _kernels._quantize_row_fast(row, row.view(np.int32), *args, cur)
        assert fast or not exact, x
        flagged += exact
    assert 0 < flagged < values.size


@pytest.mark.parametrize(
    ("nbits", "escaped"),
    [(n, False) for n in (1, 8, 9, 16, 17, 24)] + [(n, True) for n in (9, 16, 17, 24)],
)
@pytest.mark.parametrize("block_rows", [1, 3, 1000])
def test_decode_rows_inverts_reference_codes(nbits, block_rows, escaped):
    rng = np.random.default_rng(7)
    shape = (3, 11, 17)
    # Mostly small codes, as from smooth fields, and some of every size.
    codes = np.where(rng.random(shape) < 0.9, rng.integers(0, 256, shape),
                     rng.integers(0, 2**nbits, shape)) % 2**nbits  # fmt: skip
    offsets = rng.standard_normal(3) * 100
    steps = rng.random(3)
    want = reference.dequantize(reference.lorenzo_decode(codes, nbits), offsets, steps)
    planes = reference.byte_planes(codes, nbits)
    got = decode(planes, shape, offsets, steps, nbits, block_rows, escaped)
    assert_array_equal(got, want)


def pack(planes):
    stored = np.empty(1 + planes.size, np.uint8)
    stored[1:] = planes.reshape(-1)
    size = _kernels.pack_block(
        stored, planes.shape[0], np.empty(planes.shape[1], np.int64),
        np.empty(2 * planes.shape[1], np.uint8),
    )  # fmt: skip
    return stored[:size].tobytes()


@pytest.mark.parametrize("nbytes", [1, 2, 3])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.04, 0.3, 0.9])
@pytest.mark.parametrize("size", [1, 7, 8, 9, 300, 4099])
def test_pack_block_matches_reference(nbytes, density, size):
    rng = np.random.default_rng(size)
    planes = rng.integers(0, 256, (nbytes, size)).astype(np.uint8)
    planes[1:, rng.random(size) >= density] = 0
    stored = pack(planes)
    assert stored == reference.pack_block(planes)
    assert_array_equal(reference.unpack_block(stored, nbytes, size), planes)
    if stored[0] == 1:
        gap_bytes = int(np.frombuffer(stored, "<u4", 1, 5 + size)[0])
        escapes = int(np.frombuffer(stored, "<u4", 1, 1 + size)[0])
        positions = np.empty(escapes, np.int64)
        gaps = np.frombuffer(stored, np.uint8, gap_bytes, 9 + size)
        assert 0 <= _kernels.escape_positions(gaps, positions) <= size
        assert_array_equal(positions, np.flatnonzero((planes[1:] != 0).any(axis=0)))


def test_long_gaps_are_written_in_steps_of_255():
    planes = np.zeros((2, 2000), np.uint8)
    planes[1, [0, 255, 256, 1999]] = [1, 2, 3, 4]
    stored = pack(planes)
    assert stored[0] == 1
    gaps = np.frombuffer(stored, np.uint8, -1, 9 + 2000)[:-4]
    assert gaps.tolist() == [0, 254, 0] + [255] * 6 + [212]  # 1742 = 6 * 255 + 212
    positions = np.empty(4, np.int64)
    assert _kernels.escape_positions(gaps, positions) == 2000
    assert positions.tolist() == [0, 255, 256, 1999]


def test_escape_positions_refuses_gaps_that_do_not_add_up():
    positions = np.empty(2, np.int64)
    assert _kernels.escape_positions(np.array([3], np.uint8), positions) == -1  # too few
    assert _kernels.escape_positions(np.array([3, 4, 5], np.uint8), positions) == -1  # extra
    assert _kernels.escape_positions(np.array([255, 255], np.uint8), positions) == -1


def test_escape_positions_of_one_byte_gaps_are_their_running_sum():
    # The path for gaps of one byte each (none 255) against the general one.
    gaps = np.array([0, 254, 3, 0, 0, 17], np.uint8)
    positions = np.empty(6, np.int64)
    assert _kernels.escape_positions(gaps, positions) == 280
    assert positions.tolist() == (np.cumsum(gaps.astype(np.int64) + 1) - 1).tolist()
    longer = np.empty(5, np.int64)
    assert _kernels.escape_positions(np.append(gaps[:4], [255, 0]), longer) == 517
    assert longer.tolist() == [0, 255, 259, 260, 516]


def test_lorenzo_reference_round_trip():
    # The reference's own consistency: residuals of random levels decode to the levels.
    rng = np.random.default_rng(3)
    for nbits in (1, 8, 24):
        levels = rng.integers(0, 2**nbits, (2, 6, 5))
        codes = reference.lorenzo_codes(levels, np.zeros(levels.shape, bool), nbits)
        assert_array_equal(reference.lorenzo_decode(codes, nbits), levels)


def test_exception_scatter_and_gather():
    flat = np.arange(20, dtype=np.float32)
    bits = np.packbits(np.isin(np.arange(24), [0, 7, 8, 19]), bitorder="little")
    values = _kernels.gather_exceptions(flat, bits, 4)
    assert_array_equal(values, [0, 7, 8, 19])
    target = np.zeros(20, np.float32)
    assert _kernels.scatter_exceptions(target, bits, values) == 4
    assert_array_equal(target[[0, 7, 8, 19]], values)
    # A bit past the end, or a count that does not match, is refused without writing.
    past = np.packbits(np.isin(np.arange(24), [21]), bitorder="little")
    assert _kernels.scatter_exceptions(target, past, np.ones(1, np.float32)) == -1
    assert _kernels.scatter_exceptions(target, bits, values[:3]) == -1


INTERPOLATION_SHAPES = [(1, 1), (1, 7), (5, 1), (9, 13), (16, 33), (3, 40)]


@pytest.mark.parametrize("nbits", [1, 2, 7, 8, 9, 12, 16, 17, 24])
@pytest.mark.parametrize("shape", INTERPOLATION_SHAPES)
@pytest.mark.parametrize("specials", [0.0, 0.1])
@pytest.mark.parametrize("narrow", [False, True], ids=["wide", "narrow"])
def test_interpolation_encode_matches_reference(nbits, shape, specials, narrow):
    # narrow: predictor 4 (format version 4), the coarse strides' bins narrowed.
    bins = _kernels.NARROW_BINS if narrow else _kernels.WIDE_BINS
    rng = np.random.default_rng(nbits)
    layer = random_layers((1, *shape), rng)[0]
    layer[:, : shape[1] // 2] = np.cumsum(layer[:, : shape[1] // 2], axis=1)  # smooth too
    pick = rng.random(shape) < specials
    layer[pick] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), pick.sum())
    finite = layer[np.isfinite(layer)].astype(np.float64)
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    step = (high - low) / (2**nbits - 1)
    unit = step / 2**_kernels.FINE_BITS
    ny, nx = shape
    planes = np.full(((nbits + 7) // 8, ny * nx), 99, np.uint8)
    bits = np.zeros((2 + ny * nx + 7) // 8 + 1, np.uint8)
    fine = np.empty(shape, np.int64)
    count = _kernels.interpolation_encode(
        layer, low, unit, step / 2, nbits, fine, planes, bits, 2, bins
    )
    codes, bad = reference.interpolation_encode(layer, low, unit, step / 2, nbits, narrow)
    assert_array_equal(planes, reference.byte_planes(codes, nbits))
    assert_array_equal(np.unpackbits(bits, bitorder="little")[2 : 2 + ny * nx], bad.reshape(-1))
    assert count == bad.sum()
    out = np.empty(shape, np.float32)
    _kernels.interpolation_decode(planes, nbits, low, unit, fine, out, bins)
    want = reference.interpolation_decode(codes, nbits, low, unit, narrow)
    assert_array_equal(out, want)
    # The bound, wherever the value was not an exception.
    x = layer.astype(np.float64)
    ulp = np.spacing(np.abs(layer)).astype(np.float64)
    assert (np.abs(out - x)[~bad] <= (step / 2 + ulp)[~bad]).all()


@pytest.mark.parametrize("nbits", [1, 9, 16, 24])
@pytest.mark.parametrize("narrow", [False, True], ids=["wide", "narrow"])
def test_interpolation_decode_of_any_codes_matches_reference(nbits, narrow):
    bins = _kernels.NARROW_BINS if narrow else _kernels.WIDE_BINS
    # Codes a crafted chunk may hold, up to the full width of the planes.
    rng = np.random.default_rng(nbits)
    nbytes = (nbits + 7) // 8
    for shape in INTERPOLATION_SHAPES:
        codes = rng.integers(0, 2 ** (8 * nbytes), shape)
        planes = reference.byte_planes(codes, 8 * nbytes)
        out = np.empty(shape, np.float32)
        fine = np.empty(shape, np.int64)
        _kernels.interpolation_decode(planes, nbits, -3.0, 0.001, fine, out, bins)
        want = reference.interpolation_decode(codes, nbits, -3.0, 0.001, narrow)
        assert_array_equal(out, want)


@pytest.mark.parametrize("shape", [(0, 5), *INTERPOLATION_SHAPES, (721, 1440)])
def test_interpolation_order_matches_reference(shape):
    ny, nx = shape
    order = np.full(ny * nx, -1, np.int64)
    _kernels.interpolation_order(ny, nx, order)
    want = [i * nx + j for i, j, _, _ in reference.interpolation_order(ny, nx)] if ny else []
    assert_array_equal(order, want)


@pytest.mark.parametrize("nbytes", [1, 2, 3])
def test_gather_and_scatter_codes_move_every_plane(nbytes):
    rng = np.random.default_rng(nbytes)
    order = rng.permutation(77)
    planes = rng.integers(0, 256, (nbytes, 77)).astype(np.uint8)
    gathered = np.empty_like(planes)
    _kernels.gather_codes(planes, order, gathered)
    assert_array_equal(gathered, planes[:, order])
    back = np.empty_like(planes)
    _kernels.scatter_codes(gathered, order, back)
    assert_array_equal(back, planes)


def test_clear_bits():
    target = np.random.default_rng(5).integers(0, 256, 9).astype(np.uint8)
    want = np.unpackbits(target, bitorder="little")
    _kernels.clear_bits(target, 10, 20)
    want[10:30] = 0
    assert_array_equal(np.unpackbits(target, bitorder="little"), want)


def test_transpose_bits_puts_each_bit_at_its_row_order_place():
    ny, nx, base = 5, 7, 3
    rng = np.random.default_rng(1)
    mask = rng.random((ny, nx)) < 0.3
    source = np.packbits(mask.T.reshape(-1), bitorder="little")
    target = np.zeros((base + ny * nx + 7) // 8, np.uint8)
    _kernels.transpose_bits(source, nx, ny, target, base)
    bits = np.unpackbits(target, bitorder="little")
    assert_array_equal(bits[base : base + ny * nx], mask.reshape(-1))
    assert not bits[:base].any() and not bits[base + ny * nx :].any()


@pytest.mark.parametrize("nbits", [1, 2, 5, 8, 9, 12])
@pytest.mark.parametrize("size", [1, 7, 8, 9, 1000])
def test_bit_planes_match_reference(nbits, size):
    rng = np.random.default_rng(size)
    codes = rng.integers(0, 2**nbits, size)
    codes[rng.random(size) < 0.8] = 0
    planes = reference.byte_planes(codes, nbits)
    out = np.full(nbits * ((size + 7) // 8), 0xAB, np.uint8)
    _kernels.pack_bit_planes(planes, nbits, out)
    assert out.tobytes() == reference.bit_planes(codes, nbits)
    back = np.full_like(planes, 0xCD)
    _kernels.unpack_bit_planes(out, nbits, back)
    assert_array_equal(back, planes)
