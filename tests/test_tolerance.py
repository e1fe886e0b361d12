"""The absolute tolerance of the codecs (``LayerQuantizer(tolerance=X)``): the bound
``|x - decoded| <= X + ulp(x)``, the steps and bits it picks, its settings and configs, and
Zarr v2 and v3 arrays written with it."""

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_array_equal

from layerquantizer import LayerQuantizer, _format, chunk
from layerquantizer.zarr3 import LayerQuantizerCodec

FIXTURES = Path(__file__).parent / "fixtures" / "layerquantizer1"
TOLERANCE_INDEX = json.loads((FIXTURES / "tolerance.json").read_text())


def float32_ulp(values):
    """float32 spacing at each value, in float64, without overflow at the largest float32."""
    return np.maximum(np.ldexp(1.0, np.frexp(values)[1] - 24), 2.0**-149)


def assert_within_tolerance(original, decoded, tolerance):
    """Every finite value within the tolerance (+ one ulp); NaN and infinities exact."""
    original = np.asarray(original, np.float32)
    assert decoded.dtype == np.float32
    assert decoded.shape == original.shape
    x = original.astype(np.float64)
    y = decoded.astype(np.float64)
    finite = np.isfinite(x)
    error = np.abs(x[finite] - y[finite])
    slack = float32_ulp(x[finite])
    if error.size:
        worst = np.argmax(error - slack)
        assert (error <= tolerance + slack).all(), (
            f"error {error[worst]} > tolerance {tolerance} + ulp {slack[worst]} "
            f"at value {x[finite][worst]}"
        )
    assert_array_equal(np.isnan(y), np.isnan(x))
    assert_array_equal(y[np.isinf(x)], x[np.isinf(x)])
    assert np.isfinite(y[finite]).all()


def header(encoded: bytes) -> _format.Header:
    return _format.parse(memoryview(encoded)).header


def round_trip(data, tolerance, **kwargs):
    codec = LayerQuantizer(tolerance=tolerance, **kwargs)
    encoded = codec.encode(data)
    return encoded, codec.decode(encoded)


finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
special_floats = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3.4028235e38])
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)


@st.composite
def arrays_and_tolerances(draw):
    """Arrays of every kind (any float32, smooth at any scale, constant, a few ulps wide,
    with NaN and infinities) and a tolerance from 1e-6 to 1e3 of their range, or absolute."""
    shape = draw(shapes)
    kind = draw(st.sampled_from(["any", "smooth", "constant", "narrow", "offset"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = np.float64(np.float32(draw(finite_floats)))
    biggest = np.finfo(np.float32).max
    if kind == "any":
        elements = st.one_of(finite_floats, special_floats)
        data = draw(hnp.arrays(np.float32, shape, elements=elements))
    elif kind == "constant":
        data = np.full(shape, base, np.float32)
    elif kind == "narrow":
        data = base + rng.integers(-3, 4, shape) * float32_ulp(base)
    elif kind == "offset":  # small variations on large values (1e-3 on 1e5)
        data = 10.0 ** draw(st.integers(0, 8)) + rng.standard_normal(shape).cumsum(axis=-1)
    else:
        data = rng.standard_normal(shape).cumsum(axis=-1) * 10.0 ** draw(st.integers(-30, 30))
    data = np.clip(data, -biggest, biggest).astype(np.float32)
    if data.size and draw(st.booleans()):
        holes = rng.random(shape) < draw(st.sampled_from([0.01, 0.5, 1.0]))
        specials = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), shape)
        data = np.where(holes, specials, data).astype(np.float32)
    finite = data[np.isfinite(data)].astype(np.float64)
    span = float(np.ptp(finite)) if finite.size else 0.0
    relative = 10.0 ** draw(st.floats(-6, 3))
    if span > 0 and np.isfinite(span) and draw(st.booleans()):
        tolerance = span * relative
    else:
        tolerance = 10.0 ** draw(st.floats(-8, 8))
    # Sometimes a fill value (Zarr's padding), taken from the data so that it occurs.
    fill = float(data.flat[0]) if data.size and draw(st.booleans()) else None
    return data, min(tolerance, 1e300), fill


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=arrays_and_tolerances())
def test_tolerance_bound_holds(case):
    data, tolerance, fill = case
    encoded, decoded = round_trip(data, tolerance, fill_value=fill)
    assert_within_tolerance(data, decoded, tolerance)
    assert 1 <= header(encoded).nbits <= 24


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=arrays_and_tolerances(), predictor=st.sampled_from(["interpolation", "lorenzo"]))
def test_tolerance_bound_holds_with_each_predictor(case, predictor):
    data, tolerance, fill = case
    encoded = chunk.encode(
        data, None, level=1, fill_value=fill, tolerance=tolerance, predictor=predictor
    )
    decoded = chunk.decode(encoded)
    assert_within_tolerance(data, decoded, tolerance)
    if predictor == "lorenzo":
        assert encoded[4] == 1 or encoded[5] & 4  # version 1, or stored where smaller
    elif data.size:
        # Predictor 4 (version 4, the narrow coarse bins) on every layer, or stored.
        assert encoded[4] == 4 or encoded[5] & 4


@pytest.mark.parametrize("name", ["eraint_z", "eraint_u", "era5ens_t"])
def test_coarse_tolerance_takes_the_interpolation_predictor(real_fields, name):
    # A tolerance of 1/500 of the range needs 8 bits: "auto" tries interpolation there.
    field = real_fields[name]
    tolerance = float(np.nanmax(field) - np.nanmin(field)) / 500
    encoded, decoded = round_trip(field, tolerance)
    assert_within_tolerance(field, decoded, tolerance)
    lorenzo = chunk.encode(field, None, level=1, tolerance=tolerance, predictor="lorenzo")
    assert len(encoded) <= len(lorenzo)


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("era5ens_t", 0.01),  # K
        ("era5uk_t2m", 0.01),
        ("eraint_z", 1.0),  # m2/s2
        ("era5ens_z", 1.0),
        ("eraint_u", 0.01),  # m/s
        ("eraint_v", 0.01),
    ],
)
def test_tolerance_bound_on_real_fields(real_fields, name, tolerance):
    field = real_fields[name]
    assert_within_tolerance(field, round_trip(field, tolerance)[1], tolerance)


def test_step_is_twice_the_tolerance_and_nbits_what_the_widest_layer_needs():
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((3, 40, 50)).cumsum(axis=-1) + 280).astype(np.float32)
    data[1] = 280 + (data[1] - 280) / 100  # a narrow layer: the same step, fewer levels
    tolerance = 0.01
    encoded, decoded = round_trip(data, tolerance)
    assert_within_tolerance(data, decoded, tolerance)
    head = header(encoded)
    assert_array_equal(head.steps, 2 * tolerance)
    assert_array_equal(head.offsets, data.min(axis=(1, 2)))
    widest = np.ptp(data.astype(np.float64), axis=(1, 2)).max()
    assert head.nbits == int(np.floor(widest / (2 * tolerance) + 0.5)).bit_length()
    error = np.abs(decoded.astype(np.float64) - data)
    assert error.max() > 0.9 * tolerance  # the tolerance is used, not a finer step


def test_nan_infinities_and_constant_layers_are_exact():
    data = np.stack(
        [np.full((5, 6), 7.25), np.full((5, 6), np.nan), np.linspace(0, 1, 30).reshape(5, 6)]
    ).astype(np.float32)
    data[2, 1, 1], data[2, 2, 2], data[2, 3, 3] = np.nan, np.inf, -np.inf
    encoded, decoded = round_trip(data, 0.1)
    assert_array_equal(decoded[:2], data[:2])
    assert_within_tolerance(data, decoded, 0.1)
    assert header(encoded).steps[0] == 0.0


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0, 5), (2, 3, 4, 5)])
def test_shapes(shape):
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert_within_tolerance(data, round_trip(data, 0.05)[1], 0.05)


def test_tiny_tolerance_on_large_values_is_lossless_on_their_own_spacing():
    # 1e-3 on geopotential-like values of 1e5, whose float32 spacing is 2**-7: quantizing on
    # that spacing keeps every value and needs fewer levels than a step of 2e-3.
    rng = np.random.default_rng(8)
    data = (1e5 + rng.standard_normal((2, 30, 40)).cumsum(axis=-1) * 100).astype(np.float32)
    encoded, decoded = round_trip(data, 1e-3)
    assert_array_equal(decoded, data)
    assert_array_equal(header(encoded).steps, 2.0**-7)
    assert header(encoded).nbits < int(np.ptp(data) / 2e-3).bit_length()


@pytest.mark.parametrize(
    ("low", "high", "tolerance"),
    [(-3e38, 3e38, 1.0), (-1.0, 1.0, 1e-12), (1.0, 1e30, 1e-3), (-1e5, 1e5, 1e-6)],
)
def test_layers_that_would_need_more_than_24_bits_keep_the_bound(low, high, tolerance):
    rng = np.random.default_rng(9)
    data = rng.uniform(low, high, (2, 40, 50)).astype(np.float32)
    data[0, 0, :2] = low, high
    encoded, decoded = round_trip(data, tolerance)
    assert_within_tolerance(data, decoded, tolerance)
    assert header(encoded).nbits == 24


def test_packed_data_on_a_grid_coarser_than_twice_the_tolerance_comes_back_exactly():
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 900, (3, 40, 50)).cumsum(axis=-1) % 4000
    data = (250.0 + levels * 0.015625).astype(np.float32)
    encoded, decoded = round_trip(data, 0.001)
    assert_array_equal(decoded, data)
    assert_array_equal(header(encoded).steps, 0.015625)
    assert header(encoded).nbits == 12  # 4000 levels of the grid, not 62500 of 2e-3


def test_fill_value_does_not_widen_the_range_with_a_tolerance():
    data = np.full((2, 16, 16), -9999.0, np.float32)
    data[:, :10, :10] = 280 + 10 * np.random.default_rng(6).random((2, 10, 10))
    encoded, decoded = round_trip(data, 0.01, fill_value=-9999.0)
    assert_within_tolerance(data, decoded, 0.01)
    assert_array_equal(decoded[data == -9999.0], -9999.0)
    assert_array_equal(header(encoded).steps, 0.02)
    assert header(encoded).nbits == 9  # < 500 levels of 0.02 K, not 2**20 from -9999


@pytest.mark.parametrize(
    ("tolerance", "error", "match"),
    [
        (0, ValueError, "positive, finite number .*got 0"),
        (-0.5, ValueError, "got -0.5"),
        (float("nan"), ValueError, "got nan"),
        (float("inf"), ValueError, "got inf"),
        (1e308, ValueError, "got 1e\\+308"),
        ("0.01", TypeError, "must be a number, got str"),
        (True, TypeError, "got bool"),
    ],
)
def test_tolerance_is_validated(tolerance, error, match):
    with pytest.raises(error, match=match):
        LayerQuantizer(tolerance=tolerance)
    with pytest.raises(error, match=match):
        LayerQuantizerCodec(tolerance=tolerance)


def test_nbits_and_tolerance_are_exclusive():
    with pytest.raises(ValueError, match="give nbits or tolerance, not both"):
        LayerQuantizer(nbits=16, tolerance=0.01)
    with pytest.raises(ValueError, match="give nbits or tolerance, not both"):
        LayerQuantizerCodec(nbits=16, tolerance=0.01)
    with pytest.raises(ValueError, match="give nbits or tolerance, not both"):
        numcodecs.get_codec({"id": "layerquantizer1", "nbits": 8, "tolerance": 0.1})
    with pytest.raises(ValueError, match="give nbits or tolerance, not both"):
        chunk.encode(np.zeros(3, np.float32), nbits=8, level=1, tolerance=0.1)
    with pytest.raises(ValueError, match="not both nor neither"):
        chunk.encode(np.zeros(3, np.float32), nbits=None, level=1)
    assert LayerQuantizer().nbits == 16 and LayerQuantizer().tolerance is None


def test_numcodecs_config_round_trips_through_json():
    codec = LayerQuantizer(tolerance=0.01, level=3, fill_value=-1.0)
    config = codec.get_config()
    assert config == {"id": "layerquantizer1", "tolerance": 0.01, "level": 3, "fill_value": -1.0}
    clone = numcodecs.get_codec(json.loads(json.dumps(config)))
    assert clone == codec and clone.nbits is None
    assert repr(codec) == "LayerQuantizer(tolerance=0.01, level=3, fill_value=-1.0)"
    assert eval(repr(codec), {"LayerQuantizer": LayerQuantizer}) == codec
    assert pickle.loads(pickle.dumps(codec)) == codec
    data = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert clone.encode(data) == codec.encode(data)
    # nbits codecs keep the config they always had.
    assert LayerQuantizer().get_config() == {"id": "layerquantizer1", "nbits": 16, "level": 1}


def test_v3_config_round_trips_through_json():
    codec = LayerQuantizerCodec(tolerance=0.5)
    assert codec.to_dict() == {
        "name": "layerquantizer",
        "configuration": {"tolerance": 0.5, "level": 1},
    }
    assert LayerQuantizerCodec.from_dict(json.loads(json.dumps(codec.to_dict()))) == codec
    given = {"name": "layerquantizer", "configuration": {"tolerance": 0.5}}
    assert LayerQuantizerCodec.from_dict(given) == codec
    assert LayerQuantizerCodec().to_dict()["configuration"] == {"nbits": 16, "level": 1}


@pytest.mark.parametrize("name", sorted(TOLERANCE_INDEX))
def test_tolerance_fixture_decodes_to_the_recorded_values_within_its_tolerance(name):
    # Frozen chunks written in tolerance mode (tests/fixtures/make_layerquantizer1.py).
    case = TOLERANCE_INDEX[name]
    encoded = (FIXTURES / f"{name}.lq").read_bytes()
    original = np.load(FIXTURES / f"{name}.input.npy")
    recorded = np.load(FIXTURES / f"{name}.decoded.npy")
    decoded = LayerQuantizer().decode(encoded)
    assert decoded.shape == tuple(case["shape"]) == original.shape
    assert decoded.tobytes() == recorded.tobytes()
    assert header(encoded).nbits == case["nbits"]
    assert_within_tolerance(original, recorded, case["tolerance"])


# Zarr arrays: edge chunks stick out of the array (NaN fill is encoded); NaN and inf inside.
SHAPE, CHUNKS = (3, 50, 70), (2, 32, 32)


def sample():
    rng = np.random.default_rng(0)
    data = rng.standard_normal(SHAPE).cumsum(axis=2).astype(np.float32) + 280
    data[0, 3, 4] = np.nan
    data[2, 49, 69] = -np.inf
    return data


def run_fresh(code: str, *args: str) -> str:
    """Run code in a new interpreter that must not import layerquantizer itself."""
    guard = "import sys\nassert 'layerquantizer' not in sys.modules\n"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", guard + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_zarr_v2_array_with_a_tolerance_read_by_a_fresh_process(tmp_path):
    path = tmp_path / "a.zarr"
    z = zarr.create_array(
        path,
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="float32",
        compressors=LayerQuantizer(tolerance=0.05),
        fill_value=np.nan,
        zarr_format=2,
    )
    z[:] = sample()
    meta = json.loads((path / ".zarray").read_text())
    assert meta["compressor"] == {"id": "layerquantizer1", "tolerance": 0.05, "level": 1}
    assert_within_tolerance(sample(), zarr.open_array(path)[:], 0.05)
    run_fresh(
        """
        import numpy as np, zarr
        np.save(sys.argv[2], zarr.open_array(sys.argv[1])[:])
        """,
        str(path),
        str(tmp_path / "out.npy"),
    )
    assert_within_tolerance(sample(), np.load(tmp_path / "out.npy"), 0.05)


@pytest.mark.slow
def test_zarr_v3_array_with_a_tolerance_written_and_read_by_fresh_processes(tmp_path):
    path = str(tmp_path / "a.zarr")
    np.save(tmp_path / "data.npy", sample())
    run_fresh(
        """
        import numpy as np, zarr
        z = zarr.create_array(
            sys.argv[1], shape=(3, 50, 70), chunks=(2, 32, 32), dtype="float32",
            serializer={"name": "layerquantizer", "configuration": {"tolerance": 0.05}},
            compressors=None, fill_value=0.0, zarr_format=3,
        )
        z[:] = np.load(sys.argv[2])
        """,
        path,
        str(tmp_path / "data.npy"),
    )
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    assert meta["codecs"] == [
        {"name": "layerquantizer", "configuration": {"tolerance": 0.05, "level": 1}}
    ]
    run_fresh(
        """
        import numpy as np, zarr
        np.save(sys.argv[2], zarr.open_array(sys.argv[1])[:])
        """,
        path,
        str(tmp_path / "out.npy"),
    )
    assert_within_tolerance(sample(), np.load(tmp_path / "out.npy"), 0.05)
    # The padding (fill 0.0, far outside 280 K) did not widen the edge chunk's data layer;
    # its second layer lies outside the array, all padding, constant.
    steps = header((tmp_path / "a.zarr" / "c" / "1" / "1" / "2").read_bytes()).steps
    assert_array_equal(steps, [0.1, 0.0])


def test_packed_data_on_the_tolerance_step_stays_exact(real_fields):
    # ERA5 ensemble geopotential sits on a packing grid of 0.125: at a tolerance of 0.0625
    # the step 2X is that grid (no coarser grid), and Lorenzo's levels from each layer's
    # minimum are the grid's. "auto" keeps Lorenzo there (interpolation, which a tolerance
    # tries at any nbits, would move values by up to X), so they come back exactly, as
    # lq advise promises.
    data = real_fields["era5ens_z"][:2, :2]
    encoded, decoded = round_trip(data, 0.0625)
    assert header(encoded).nbits == 16
    assert_array_equal(decoded, data)
