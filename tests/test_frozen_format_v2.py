"""Format versions 2 (the predictor table), 3 (range-coded blocks, stored chunks) and 4
(predictor 4, the "narrow_" cases, written with a tolerance; the linear predictor, the
"linear_" cases) are frozen too: chunks written when they were published decode to the same
values forever (tests/fixtures/make_layerquantizer1_v2.py wrote them once; an index entry
without a "version" is version 2). Version 1 has its own fixtures, in
tests/test_frozen_format.py."""

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from test_codec import assert_within_bound
from test_tolerance import assert_within_tolerance

from layerquantizer import LayerQuantizer

FIXTURES = Path(__file__).parent / "fixtures" / "layerquantizer1_v2"
INDEX = json.loads((FIXTURES / "index.json").read_text())


@pytest.mark.parametrize("name", sorted(INDEX))
def test_fixture_decodes_to_the_recorded_values(name):
    case = INDEX[name]
    encoded = (FIXTURES / f"{name}.lq").read_bytes()
    assert encoded[4] == case.get("version", 2)
    original = np.load(FIXTURES / f"{name}.input.npy")
    recorded = np.load(FIXTURES / f"{name}.decoded.npy")
    decoded = LayerQuantizer().decode(encoded)
    assert decoded.shape == tuple(case["shape"]) == original.shape
    assert decoded.tobytes() == recorded.tobytes()  # bit for bit, NaN payloads included
    if original.flags.f_contiguous and not original.flags.c_contiguous:
        assert decoded.flags.f_contiguous


@pytest.mark.parametrize("name", sorted(INDEX))
def test_fixture_is_within_its_bound(name):
    original = np.load(FIXTURES / f"{name}.input.npy")
    decoded = np.load(FIXTURES / f"{name}.decoded.npy")
    if "tolerance" in INDEX[name]:
        assert_within_tolerance(original, decoded, INDEX[name]["tolerance"])
        return
    # (as native float32: a stored fixture holds big-endian values)
    assert_within_bound(original, decoded.astype(np.float32), INDEX[name]["nbits"])
    assert_array_equal(np.isnan(decoded), np.isnan(original))


def test_fixtures_hold_every_form_of_the_interpolation_predictor():
    from layerquantizer import _format

    def predictors(name):
        encoded = (FIXTURES / f"{name}.lq").read_bytes()
        return set(_format.parse(memoryview(encoded)).header.predictors.tolist())

    # Row order (1) from the first fixtures, coding order (2) from the "ordered_" ones, the
    # transposed layer (3) from the "transposed_" ones.
    assert predictors("smooth_nb8") == {_format.PREDICTOR_INTERPOLATION}
    assert predictors("ordered_smooth_nb8_uncoded") == {_format.PREDICTOR_INTERPOLATION_ORDERED}
    assert predictors("ordered_eraint_z_nb8_auto_mixed") == {
        _format.PREDICTOR_LORENZO,
        _format.PREDICTOR_INTERPOLATION_ORDERED,
    }
    transposed = _format.PREDICTOR_INTERPOLATION_TRANSPOSED
    assert predictors("transposed_specials_nb12") == {transposed}
    mixed = predictors("transposed_eraint_z_nb8_auto_mixed")
    assert mixed == {_format.PREDICTOR_LORENZO, transposed}
    # Predictor 4 (version 4) from the "narrow_" ones, beside Lorenzo in the mixed one.
    narrow = _format.PREDICTOR_INTERPOLATION_NARROW
    for name in INDEX:
        if name.startswith("narrow_") and name != "narrow_mixed_tol_auto":
            assert predictors(name) == {narrow}, name
    assert predictors("narrow_mixed_tol_auto") == {_format.PREDICTOR_LORENZO, narrow}


@pytest.mark.parametrize(
    "name",
    [
        "bitplanes_eraint_z_nb8",
        "bitplanes_eraint_z_nb6_uncoded",
        "bitplanes_eraint_z_nb1",
        "bitplanes_eraint_z_nb4_specials",
        "bitplanes_eraint_z_nb12",
        "bitplanes_eraint_z_nb9_specials",
        "bitplanes_mixed_nb10_uncoded",
        "bitplanes_eraint_z_nb8_auto_mixed",
    ],
)
def test_bit_plane_fixtures_hold_blocks_of_mode_2(name):
    import zstandard

    from layerquantizer import _format

    parsed = _format.parse(memoryview((FIXTURES / f"{name}.lq").read_bytes()))
    blocks = bytes(parsed.residuals)
    if parsed.header.coder:
        blocks = zstandard.ZstdDecompressor().decompressobj().decompress(blocks)
    assert blocks[0] == 2


def residual_modes(name):
    """The format version and the mode byte of each block of a fixture (one block each)."""
    import zstandard

    from layerquantizer import _format

    parsed = _format.parse(memoryview((FIXTURES / f"{name}.lq").read_bytes()))
    blocks = bytes(parsed.residuals)
    if parsed.header.coder:
        blocks = zstandard.ZstdDecompressor().decompressobj().decompress(blocks)
    return parsed.header, blocks


@pytest.mark.parametrize("name", [name for name in sorted(INDEX) if name.startswith("range_")])
def test_range_fixtures_hold_blocks_of_mode_3(name):
    header, blocks = residual_modes(name)
    assert header.range_coded and blocks[0] == 3
    if name == "range_lorenzo_nb8_auto":
        assert set(header.predictors.tolist()) == {0}


@pytest.mark.parametrize("name", [name for name in sorted(INDEX) if name.startswith("stored_")])
def test_stored_fixtures_are_exact_and_small(name):
    from layerquantizer import _format

    encoded = (FIXTURES / f"{name}.lq").read_bytes()
    original = np.load(FIXTURES / f"{name}.input.npy")
    assert encoded[5] & _format.FLAG_STORED
    assert len(encoded) <= original.size * 4 + 36 + 8 * original.ndim
    decoded = np.load(FIXTURES / f"{name}.decoded.npy")
    assert decoded.dtype == original.dtype
    assert decoded.tobytes() == original.tobytes()


@pytest.mark.parametrize("name", [name for name in sorted(INDEX) if name.startswith("linear_")])
def test_linear_fixtures_hold_the_linear_predictor(name):
    from layerquantizer import _format

    encoded = (FIXTURES / f"{name}.lq").read_bytes()
    header = _format.parse(memoryview(encoded)).header
    assert encoded[4] == 4 and _format.PREDICTOR_LINEAR in header.predictors.tolist()
    assert len(header.coefficients) == (header.predictors == _format.PREDICTOR_LINEAR).sum()
    if name == "linear_mixed_nb24_auto":
        assert header.predictors[2] == _format.PREDICTOR_LORENZO
    if name == "linear_geopotential_nb20_auto":
        # Quantized on the values' float32 spacing, coarser than the step: exact.
        original = np.load(FIXTURES / f"{name}.input.npy")
        assert np.load(FIXTURES / f"{name}.decoded.npy").tobytes() == original.tobytes()
