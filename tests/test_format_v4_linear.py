"""Format version 4: the linear predictor (predictor code 6) and its coefficient table.

The kernels against the reference model, what the encoder writes (and where it keeps the
older bytes), and what damaged or crafted version 4 chunks do (always a CorruptChunkError
naming the problem, never a crash). Versions 1 to 3 are in tests/test_format.py and
tests/test_format_v3.py.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import reference
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from test_codec import assert_within_bound
from test_format import assert_every_truncation_and_bit_flip_refused, decode_damaged, reseal

from layerquantizer import CorruptChunkError, LayerQuantizer, _format, _linear_kernels, chunk
from layerquantizer.synthetic import era5_like_field

CODEC = LayerQuantizer(nbits=16)
FIXTURES = Path(__file__).parent / "fixtures"


@st.composite
def coefficient_sets(draw):
    """Six int16 coefficients whose magnitudes add up to at most MAX_WEIGHT."""
    values = draw(st.lists(st.integers(-600, 600), min_size=6, max_size=6))
    weights = np.abs(values).sum()
    if weights > _linear_kernels.MAX_WEIGHT:
        values = [v * _linear_kernels.MAX_WEIGHT // int(weights) for v in values]
    return np.array(values, np.int64)


@st.composite
def layers_with_specials(draw):
    ny, nx = draw(st.integers(1, 9)), draw(st.integers(1, 11))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    layer = (rng.standard_normal((ny, nx)).cumsum(axis=1) * 10 + 100).astype(np.float32)
    for value in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3)):
        layer[rng.integers(ny), rng.integers(nx)] = value
    return layer


@settings(max_examples=150, deadline=None)
@given(layer=layers_with_specials(), nbits=st.integers(1, 24), coefficients=coefficient_sets())
def test_linear_kernels_match_reference(layer, nbits, coefficients):
    finite = layer[np.isfinite(layer)].astype(np.float64)
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    step = (high - low) / ((1 << nbits) - 1)
    tolerance = step / 2
    levels, exceptions = reference.quantize(
        layer[None], np.array([low]), np.array([step]), np.array([tolerance]), nbits
    )
    want = reference.linear_codes(levels[0], exceptions[0], nbits, coefficients)
    ny, nx = layer.shape
    planes = np.zeros(((nbits + 7) // 8, ny * nx), np.uint8)
    bits = np.zeros((ny * nx + 7) // 8 + 1, np.uint8)
    count = _linear_kernels.linear_encode(
        layer, low, step, tolerance, nbits, coefficients, planes, bits, 8
    )
    assert_array_equal(planes, reference.byte_planes(want, nbits))
    flagged = np.unpackbits(bits, bitorder="little")[8 : 8 + ny * nx].reshape(ny, nx)
    assert_array_equal(flagged.astype(bool), exceptions[0])
    assert count == exceptions.sum()
    decoded = np.empty_like(layer)
    _linear_kernels.linear_decode(planes, nbits, low, step, coefficients, decoded)
    rebuilt = reference.linear_decode(want, nbits, coefficients)
    expected = reference.dequantize(rebuilt[None], np.array([low]), np.array([step]))[0]
    assert decoded.tobytes() == expected.tobytes()
    kept = ~exceptions[0]
    assert (np.abs(decoded[kept] - layer[kept].astype(np.float64)) <= tolerance + 1e-3).all()


@settings(max_examples=100, deadline=None)
@given(
    codes=st.lists(st.integers(0, 2**24 - 1), min_size=1, max_size=60),
    nx=st.integers(1, 9),
    nbits=st.integers(1, 24),
    coefficients=coefficient_sets(),
)
def test_any_codes_and_coefficients_decode_as_the_reference(codes, nx, nbits, coefficients):
    # What a crafted chunk may hold: any codes of nbits bits, any coefficients in bounds.
    codes = np.array(codes, np.int64) % (1 << nbits)
    ny = len(codes) // nx
    if ny == 0:
        return
    codes = codes[: ny * nx].reshape(ny, nx)
    out = np.empty((ny, nx), np.float32)
    _linear_kernels.linear_decode(
        reference.byte_planes(codes, nbits), nbits, 0.0, 1.0, coefficients, out
    )
    assert_array_equal(out, reference.linear_decode(codes, nbits, coefficients).astype(np.float32))


def smooth_field(
    nbits=16, levels=(500.0, 850.0, 1000.0), grid=(61, 120), variable="u_component_of_wind"
):
    return era5_like_field(variable, list(levels), grid, seed=5)


def test_fitted_coefficients_add_up_to_one_and_are_chosen_on_smooth_layers():
    layer = smooth_field()[0]
    offset, step = float(layer.min()), float(layer.max() - layer.min()) / 65535
    rows = np.arange(2, 61, 4)
    out = np.zeros(6, np.int64)
    assert _linear_kernels.fit_coefficients(layer, rows, offset, step, out) > 0.07
    assert out.sum() == 256 and np.abs(out).sum() <= _linear_kernels.MAX_WEIGHT
    # A constant layer: nothing to fit (a singular system), Lorenzo it is.
    flat = np.zeros((8, 8), np.float32)
    assert _linear_kernels.fit_coefficients(flat, np.arange(2, 8), 0.0, 1.0, out) == -np.inf


@pytest.mark.parametrize(
    ("nbits", "predictor"),
    [(13, "linear"), (16, "linear"), (17, "auto"), (20, "auto"), (24, "auto")],
)
def test_linear_predictor_from_17_bits_or_when_asked(nbits, predictor):
    data = smooth_field()
    encoded = chunk.encode(data, nbits, level=1, predictor=predictor)
    header = _format.parse(memoryview(encoded)).header
    assert encoded[4] == 4 and header.version == 4
    assert (header.predictors == _format.PREDICTOR_LINEAR).any()
    assert len(header.coefficients) == (header.predictors == _format.PREDICTOR_LINEAR).sum()
    assert_within_bound(data, chunk.decode(encoded), nbits)
    lorenzo = chunk.encode(data, nbits, level=1, predictor="lorenzo")
    assert lorenzo[4] == 1 and len(encoded) < len(lorenzo)


def test_16_bits_keeps_lorenzo_by_default():
    # The default setting keeps its speed: a recurrence along the row decodes 3x slower.
    data = smooth_field()
    encoded = chunk.encode(data, 16, level=1)
    assert encoded[4] == 1 and encoded == chunk.encode(data, 16, level=1, predictor="lorenzo")


def test_linear_with_a_tolerance_is_refused():
    with pytest.raises(ValueError, match="predictor='linear' works with nbits"):
        chunk.encode(smooth_field(), None, level=1, tolerance=0.1, predictor="linear")


def test_linear_layers_beside_lorenzo_and_exceptions():
    data = smooth_field()
    rng = np.random.default_rng(3)
    data[1] = rng.random(data[1].shape).astype(np.float32)  # noise: Lorenzo or linear
    # A plane of integers: Lorenzo's residuals are all 0, nothing to gain.
    data[2] = np.add.outer(np.arange(61), 2 * np.arange(120)).astype(np.float32)
    data[0, 10, 10], data[0, 20, :5], data[0, 30, 7] = np.nan, np.inf, -np.inf
    encoded = chunk.encode(data, 16, level=1, predictor="linear")
    header = _format.parse(memoryview(encoded)).header
    assert header.predictors[0] == _format.PREDICTOR_LINEAR
    assert header.predictors[2] == _format.PREDICTOR_LORENZO
    decoded = chunk.decode(encoded)
    assert_within_bound(data, decoded, 16)
    assert_array_equal(decoded[2], data[2])


def test_chunks_without_a_linear_layer_keep_their_version_1_bytes(real_fields):
    # ERA-Interim u sits on its packing grid: Lorenzo's small residuals win.
    data = real_fields["eraint_u"][0]
    encoded = chunk.encode(data, 20, level=1)
    assert encoded[4] == 1 and encoded == chunk.encode(data, 20, level=1, predictor="lorenzo")


def test_version_1_fixtures_reencode_to_their_bytes_or_a_smaller_version_4():
    # The older forms' bytes do not change: a fixture re-encoded in version 1 is its bytes;
    # where "auto" now picks the linear predictor (17 bits on) the chunk is version 4,
    # and smaller. (Empty, scalar and 8-bit-or-fewer fixtures became version 3 before.)
    folder = FIXTURES / "layerquantizer1"
    versions = set()
    for name, case in json.loads((folder / "index.json").read_text()).items():
        if "tolerance" in case:
            continue
        data = np.load(folder / f"{name}.input.npy")
        frozen = (folder / f"{name}.lq").read_bytes()
        encoded = chunk.encode(data, case["nbits"], level=1, coder=case["coder"])
        versions.add(encoded[4])
        if encoded[4] == 1:
            assert encoded == frozen, name
        elif encoded[4] == 4:
            assert case["nbits"] >= 17 and len(encoded) < len(frozen), name
            assert_within_bound(data, chunk.decode(encoded), case["nbits"])
    assert {1, 4} <= versions


def test_float32_spacing_is_the_step_where_coarser():
    # High up, geopotential near 5e5 is a multiple of 1/32; a 20-bit step of its range is
    # finer: such layers are quantized on 1/32 and come back exactly.
    data = smooth_field(levels=(1.0, 2.0, 3.0), variable="geopotential")
    encoded = chunk.encode(data, 20, level=1)
    header = _format.parse(memoryview(encoded)).header
    assert encoded[4] == 4
    spacing = np.ldexp(1.0, np.frexp(data.reshape(3, -1).min(axis=1))[1] - 24)
    assert_array_equal(header.steps, spacing)
    assert_array_equal(chunk.decode(encoded), data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nbits=st.integers(13, 24),
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 3), st.integers(3, 30), st.integers(4, 40)),
    specials=st.integers(0, 4),
    coder=st.sampled_from([0, 1]),
)
def test_bound_holds_with_the_linear_predictor(nbits, seed, shape, specials, coder):
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0, 3, shape[1]), np.linspace(0, 5, shape[2]), indexing="ij")
    data = np.sin(x + y * rng.random()) * 100 + rng.standard_normal(shape) * rng.random()
    data = data.astype(np.float32)
    for _ in range(specials):
        data[tuple(rng.integers(0, n) for n in shape)] = rng.choice([np.nan, np.inf, -np.inf])
    encoded = chunk.encode(data, nbits, level=1, coder=coder, predictor="linear")
    assert_within_bound(data, chunk.decode(encoded), nbits)


def linear_chunk(coder=1, exceptions=True) -> bytes:
    """A small version 4 chunk (the encoder writes the linear predictor through zstd only:
    an uncoded one is the same chunk with its residual section stored as it is)."""
    data = smooth_field(levels=(500.0, 850.0), grid=(32, 48))
    if exceptions:
        data[0, 3, 4] = np.nan
    encoded = chunk.encode(data, 16, level=1, predictor="linear")
    assert encoded[4] == 4
    if coder == 0:
        parsed = _format.parse(memoryview(encoded))
        assert not parsed.exception_count
        blocks = zstandard.ZstdDecompressor().decompressobj().decompress(bytes(parsed.residuals))
        header = dataclasses.replace(parsed.header, coder=0)
        encoded = _format.pack(header, [blocks], len(blocks), None)
        assert_within_bound(data, chunk.decode(encoded), 16)
    return encoded


def with_header(encoded: bytes, **changes) -> bytes:
    """The chunk with header fields replaced (sections as they were), resealed."""
    parsed = _format.parse(memoryview(encoded))
    header = dataclasses.replace(parsed.header, **changes)
    exceptions = None
    if parsed.exception_count:
        bitmap = bytes(parsed.exception_bitmap)
        exceptions = (parsed.exception_count, bitmap, bytes(parsed.exception_values))
    return _format.pack(header, [bytes(parsed.residuals)], parsed.residual_bytes, exceptions)


def test_crafted_version_4_chunks_are_refused():
    encoded = linear_chunk(exceptions=False)
    header = _format.parse(memoryview(encoded)).header
    heavy = header.coefficients.copy()
    heavy[0, 0] = _format.LINEAR_MAX_WEIGHT
    with pytest.raises(CorruptChunkError, match="coefficient table: weights adding up to"):
        CODEC.decode(with_header(encoded, coefficients=heavy))
    # Predictor 6 is version 4's: in a version 3 chunk it is unknown.
    version_3 = bytearray(with_header(encoded, coefficients=None)[:-4])
    with pytest.raises(CorruptChunkError, match="unknown predictor 6"):
        CODEC.decode(reseal(bytes(version_3)))
    # The stored chunk is version 3's alone.
    flagged = bytearray(encoded[:-4])
    flagged[5] |= _format.FLAG_STORED
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        CODEC.decode(reseal(bytes(flagged)))
    # A coefficient table shorter than its layers need.
    short = with_header(encoded, coefficients=header.coefficients[:0])
    with pytest.raises(CorruptChunkError):
        CODEC.decode(short)


@pytest.mark.parametrize(
    "make", [lambda: linear_chunk(), lambda: linear_chunk(coder=0, exceptions=False)]
)
def test_every_truncation_and_bit_flip_of_version_4_is_refused(make):
    encoded = make()
    assert_every_truncation_and_bit_flip_refused(encoded)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from([0, 1]),
)
def test_random_damage_of_version_4_with_a_resealed_checksum(damage, truncate, coder):
    encoded = linear_chunk(coder=coder, exceptions=coder == 1)
    decode_damaged(encoded, damage, truncate)
