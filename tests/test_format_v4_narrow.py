"""Format version 4: predictor 4, the interpolation predictor with the bins of its coarse
strides narrowed (written with a tolerance).

What the encoder writes, that chunks without the new form keep their older bytes, and what
damaged or crafted version 4 chunks do (always a CorruptChunkError naming the problem,
never a crash). The kernels against the reference model are in tests/test_kernels.py, the
frozen chunks in tests/test_frozen_format_v2.py ("narrow_" cases).
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_format import assert_every_truncation_and_bit_flip_refused, decode_damaged, reseal
from test_tolerance import assert_within_tolerance

from layerquantizer import CorruptChunkError, LayerQuantizer, _format, _kernels, chunk
from layerquantizer.synthetic import era5_like_field

CODEC = LayerQuantizer(nbits=12)


def smooth_layers(shape=(2, 40, 40)) -> np.ndarray:
    x = np.linspace(0, 3, shape[-1])
    data = np.sin(x)[:, None] * np.cos(x)[None, :] * np.ones((shape[0], 1, 1))
    noise = np.random.default_rng(0).standard_normal(data.shape)
    return (100 * data + 0.1 * noise).astype(np.float32)


def narrow_chunk(coder=1, with_exceptions=True, tolerance=2.0) -> tuple[np.ndarray, bytes]:
    """A version 4 chunk: smooth layers at a coarse tolerance, predictor 4 (told to
    interpolate: "auto" compares predictors 3 and 4 on layers this small, and may keep 3)."""
    data = smooth_layers()
    if with_exceptions:
        data[1, 3, 4] = np.nan
    encoded = chunk.encode(
        data, None, level=1, coder=coder, tolerance=tolerance, predictor="interpolation"
    )
    return data, encoded


@pytest.mark.parametrize("coder", [0, 1])
def test_tolerance_writes_predictor_4_in_version_4(coder):
    data, encoded = narrow_chunk(coder)
    parsed = _format.parse(memoryview(encoded))
    assert encoded[4] == 4
    assert parsed.header.predictors.tolist() == [_format.PREDICTOR_INTERPOLATION_NARROW] * 2
    assert_within_tolerance(data, CODEC.decode(encoded), 2.0)


def test_chunks_without_the_new_form_keep_their_version():
    data = smooth_layers()
    # nbits: as before (version 3, range-coded, predictor 3).
    encoded = chunk.encode(data, 8, level=1)
    assert encoded[4] == 3
    assert set(_format.parse(memoryview(encoded)).header.predictors.tolist()) == {3}
    # A tolerance without range coding (for readers of version 2): predictor 3.
    plain = chunk.encode(data, None, level=1, tolerance=2.0, range_coding=False)
    assert plain[4] == 2
    # Lorenzo only: version 1.
    assert chunk.encode(data, None, level=1, tolerance=2.0, predictor="lorenzo")[4] == 1


def test_narrow_bins_code_coarse_tolerances_smaller():
    # Synthetic geopotential at the tolerance of 8 bits over its range (about 4 bits a
    # layer): the coarse points known to within half a tolerance predict the fine ones well
    # enough that nearly all their codes are 0.
    field = era5_like_field("geopotential", levels=(10, 500, 1000), grid=(181, 360), seed=3)
    tolerance = float(np.ptp(field)) / 255 / 2
    narrow = chunk.encode(field, None, level=1, tolerance=tolerance)
    wide = chunk.encode(field, None, level=1, tolerance=tolerance, range_coding=False)
    assert narrow[4] == 4  # "auto" picked predictor 4
    predictors = _format.parse(memoryview(narrow)).header.predictors
    assert (predictors == _format.PREDICTOR_INTERPOLATION_NARROW).any()
    assert len(narrow) < 0.8 * len(wide)
    assert_within_tolerance(field, chunk.decode(narrow), tolerance)


def test_narrow_bins_are_odd_and_within_the_bin_of_the_bound():
    # Odd widths centre bins on integers (the reference's floor(d / w + 0.5) is the kernels'
    # (d + (w - 1) / 2) // w); none wider than BIN_UNITS keeps the error within the bound.
    bins = _kernels.NARROW_BINS
    assert (bins % 2 == 1).all() and (bins <= _kernels.BIN_UNITS).all()
    assert bins[:2].tolist() == [_kernels.BIN_UNITS] * 2 and bins[2:5].tolist() == [191, 159, 127]


def test_predictor_4_outside_version_4_is_refused():
    _, encoded = narrow_chunk(with_exceptions=False)
    parsed = _format.parse(memoryview(encoded))
    body = bytearray(encoded[:-4])
    body[4] = 3  # version 3 knows predictors 0 to 3 only
    with pytest.raises(CorruptChunkError, match="unknown predictor 4"):
        CODEC.decode(reseal(bytes(body)))
    # And a version 4 chunk refuses predictors past 4 (5 to 7 are reserved).
    header = dataclasses.replace(parsed.header, predictors=np.array([4, 8], np.uint8))
    crafted = _format.pack(header, [bytes(parsed.residuals)], parsed.residual_bytes, None)
    with pytest.raises(CorruptChunkError, match="unknown predictor 8"):
        CODEC.decode(crafted)


def test_a_newer_version_is_refused_with_the_upgrade_message():
    _, encoded = narrow_chunk(with_exceptions=False)
    body = bytearray(encoded[:-4])
    body[4] = 5
    with pytest.raises(
        CorruptChunkError,
        match="format version 5; this layerquantizer reads versions 1, 2, 3 and 4 \\(upgrade",
    ):
        CODEC.decode(reseal(bytes(body)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: narrow_chunk()[1],
        lambda: narrow_chunk(coder=0)[1],
        lambda: narrow_chunk(coder=0, with_exceptions=False, tolerance=0.5)[1],
    ],
)
def test_every_truncation_and_bit_flip_of_version_4_is_refused(make):
    encoded = make()
    assert encoded[4] == 4
    assert_every_truncation_and_bit_flip_refused(encoded)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from(["zstd", "uncoded"]),
)
def test_random_damage_of_version_4_with_a_resealed_checksum(damage, truncate, form):
    encoded = narrow_chunk(coder=1 if form == "zstd" else 0)[1]
    assert encoded[4] == 4
    decode_damaged(encoded, damage, truncate)
