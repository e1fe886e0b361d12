"""The legacy codec ``layerquantizer0.3b`` against the original package's test vectors.

Fixtures: ``../shared/fixtures/legacy-0.3b`` (see ``../shared/README.md``), written once by the
original and never regenerated.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numcodecs
import numcodecs.blosc
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import layerquantizer
from layerquantizer import _legacy_kernels as kernels
from layerquantizer.errors import CorruptChunkError
from layerquantizer.legacy import LegacyLayerQuantizer, legacy_plane_ranges

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "legacy-0.3b"
INDEX = json.loads((FIXTURES / "index.json").read_text())
STORE = FIXTURES / "legacy_store.zarr"
STORE_DECODED = FIXTURES / "legacy_store.decoded.npz"
NEGABINARY = 0xAAAAAAAA


def assert_within_one_ulp(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal within one float32 ulp, with NaN in the same places."""
    actual = np.asarray(actual, np.float32).reshape(expected.shape)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    gap = np.abs(actual[~nan].astype(np.float64) - expected[~nan].astype(np.float64))
    np.testing.assert_array_less(gap, np.spacing(np.abs(expected[~nan])) * 1.0001 + 1e-45)


def load_case(name: str) -> tuple[dict, np.ndarray, bytes, np.ndarray]:
    case = INDEX[name]
    return (
        case,
        np.load(FIXTURES / f"{name}.input.npy"),
        (FIXTURES / f"{name}.enc").read_bytes(),
        np.load(FIXTURES / f"{name}.decoded.npy"),
    )


# --------------------------------------------------------------------------------------
# The original's test vectors


@pytest.mark.parametrize("name", sorted(INDEX))
def test_encoding_reproduces_the_originals_bytes(name):
    case, values, _, _ = load_case(name)
    encoded = numcodecs.get_codec(case["config"]).encode(values)
    assert hashlib.sha256(encoded).hexdigest() == case["sha256_enc"]


@pytest.mark.parametrize("name", sorted(INDEX))
def test_decoding_matches_the_original(name):
    case, _, encoded, decoded = load_case(name)
    result = numcodecs.get_codec(case["config"]).decode(encoded)
    assert result.dtype == np.float32
    assert result.shape == (int(np.prod(decoded.shape[:-2])), *decoded.shape[-2:])
    assert_within_one_ulp(result, decoded)


@pytest.mark.parametrize("name", sorted(INDEX))
def test_decoding_into_out_of_the_inputs_shape(name):
    case, _, encoded, decoded = load_case(name)
    out = np.full(decoded.shape, -1.0, np.float32)
    result = numcodecs.get_codec(case["config"]).decode(encoded, out=out)
    assert result is out
    assert_within_one_ulp(out, decoded)


def test_legacy_store_opens_with_xarray_after_import():
    expected = np.load(STORE_DECODED)
    ds = xr.open_zarr(STORE, consolidated=True).load()
    assert sorted(ds.data_vars) == sorted(expected.files)
    for name in expected.files:
        assert_within_one_ulp(ds[name].values, expected[name])


_FRESH_READER = """
import sys
import numpy as np
import xarray as xr
store, decoded = sys.argv[1], sys.argv[2]
assert "layerquantizer" not in sys.modules
ds = xr.open_zarr(store, consolidated=True).load()
expected = np.load(decoded)
for name in expected.files:
    actual, want = ds[name].values, expected[name]
    nan = np.isnan(want)
    assert (np.isnan(actual) == nan).all(), name
    gap = np.abs(actual[~nan].astype(np.float64) - want[~nan])
    assert (gap <= np.spacing(np.abs(want[~nan]))).all(), name
print("ok", sorted(expected.files))
"""


@pytest.mark.slow
def test_legacy_store_opens_in_a_fresh_process_through_the_entry_point():
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", _FRESH_READER, str(STORE), str(STORE_DECODED)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_store_written_under_the_legacy_id_reads_back(tmp_path):
    ds = xr.open_zarr(STORE, consolidated=True).load()
    for variable in ds.variables.values():
        variable.encoding = {}
    codec = LegacyLayerQuantizer(nbits=16)
    encoding = {name: {"compressors": (codec,), "chunks": (1, 3, 64, 120)} for name in ds.data_vars}
    ds.to_zarr(tmp_path / "out.zarr", zarr_format=2, encoding=encoding, consolidated=True)
    meta = json.loads((tmp_path / "out.zarr" / "geopotential" / ".zarray").read_text())
    assert meta["compressor"] == {
        "id": "layerquantizer0.3b",
        "nbits": 16,
        "blosc_cname": "zstd",
        "blosc_clevel": 5,
        "transform": "Lorenzo",
    }
    back = xr.open_zarr(tmp_path / "out.zarr", consolidated=True).load()
    for name in ds.data_vars:
        original = ds[name].values
        span = np.ptp(original, axis=(2, 3), keepdims=True)
        assert (np.abs(back[name].values - original) <= span / 65535).all()


# --------------------------------------------------------------------------------------
# Configuration


def test_registered_under_the_legacy_id():
    assert numcodecs.registry.codec_registry["layerquantizer0.3b"] is LegacyLayerQuantizer
    assert layerquantizer.LegacyLayerQuantizer is LegacyLayerQuantizer


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"nbits": 12, "transform": None, "blosc_cname": "lz4", "blosc_clevel": 9},
        {"nbits": 16, "pow2_range": True},
        {"nbits": 32},
        {"in_id": "layerquantizer0.3b"},
    ],
)
def test_config_round_trips_through_json(config):
    codec = LegacyLayerQuantizer(**config)
    as_json = json.loads(json.dumps(codec.get_config()))
    assert numcodecs.get_codec(as_json) == codec
    assert LegacyLayerQuantizer.from_config(as_json) == codec
    assert "in_id" not in as_json
    assert ("pow2_range" in as_json) == bool(config.get("pow2_range"))


def test_get_codec_gives_the_originals_config():
    codec = numcodecs.get_codec({"id": "layerquantizer0.3b", "nbits": 12})
    assert isinstance(codec, LegacyLayerQuantizer)
    assert codec.get_config() == {
        "id": "layerquantizer0.3b",
        "nbits": 12,
        "blosc_cname": "zstd",
        "blosc_clevel": 5,
        "transform": "Lorenzo",
    }


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"nbits": 0}, "nbits must be an integer of at least 1, got 0"),
        ({"nbits": 16.0}, "nbits must be an integer"),
        ({"nbits": True}, "nbits must be an integer"),
        ({"transform": "lorenzo"}, "transform must be 'Lorenzo' or None, got 'lorenzo'"),
        ({"blosc_cname": "brotli"}, "blosc_cname must be one of .*, got 'brotli'"),
        ({"blosc_clevel": 10}, "blosc_clevel must be an integer from 0 to 9, got 10"),
        ({"pow2_range": "yes"}, "pow2_range must be True or False, got 'yes'"),
        ({"in_id": "layerquantizer1"}, "in_id must be 'layerquantizer0.3b'"),
    ],
)
def test_bad_parameters_are_named(config, match):
    with pytest.raises(ValueError, match=match):
        LegacyLayerQuantizer(**config)


def test_from_config_refuses_another_id():
    with pytest.raises(ValueError, match="config id must be 'layerquantizer0.3b'"):
        LegacyLayerQuantizer.from_config({"id": "layerquantizer1"})


# --------------------------------------------------------------------------------------
# Plane ranges


@pytest.mark.parametrize(
    ("lo", "hi", "nbits", "pow2", "stored_lo", "stored_hi"),
    [
        pytest.param(0.0, 0.0, 16, False, 0.0, 1.0, id="constant-zero-and-all-nan"),
        pytest.param(5.0, 5.0, 16, False, 5.0, 15.0, id="constant-positive"),
        pytest.param(-3.5, -3.5, 16, False, -3.5, 0.0, id="constant-negative"),
        pytest.param(1.0, 3.0, 16, False, 1.0, 3.0, id="plain"),
        pytest.param(-6.0, 10.0, 16, True, -6.0, -6.0 + 32 * 65535 / 65536, id="pow2-exact"),
        pytest.param(0.0, 15.9999, 8, True, 0.0, 32 * 255 / 256, id="pow2-just-below"),
        pytest.param(2.0, 2.0, 4, True, 2.0, 2.0 + 8 * 15 / 16, id="pow2-constant"),
    ],
)
def test_legacy_plane_ranges(lo, hi, nbits, pow2, stored_lo, stored_hi):
    mins, maxs = legacy_plane_ranges(np.float32([lo]), np.float32([hi]), nbits, pow2)
    assert mins.dtype == maxs.dtype == np.float32
    assert mins[0] == np.float32(stored_lo)
    assert maxs[0] == np.float32(stored_hi)
    assert maxs[0] >= np.float32(hi)


@pytest.mark.parametrize("name", sorted(INDEX))
def test_stored_ranges_of_the_fixtures(name):
    case, values, encoded, _ = load_case(name)
    stream = np.frombuffer(numcodecs.blosc.decompress(encoded), "<i4")
    nplanes = stream[0]
    planes = values.reshape(-1, *values.shape[-2:])
    mins, maxs = legacy_plane_ranges(
        *kernels.finite_plane_ranges(planes),
        case["config"]["nbits"],
        case["config"].get("pow2_range", False),
    )
    np.testing.assert_array_equal(mins.view("<i4"), stream[3 : 3 + nplanes])
    np.testing.assert_array_equal(maxs.view("<i4"), stream[3 + nplanes : 3 + 2 * nplanes])


# --------------------------------------------------------------------------------------
# Kernels against slow NumPy references of the same steps


def reference_ranges(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    finite = np.where(np.isfinite(planes), planes, np.nan)
    has = np.isfinite(planes).any(axis=(1, 2))
    mins = np.zeros(planes.shape[0], np.float32)
    maxs = np.zeros(planes.shape[0], np.float32)
    mins[has] = np.nanmin(finite[has], axis=(1, 2))
    maxs[has] = np.nanmax(finite[has], axis=(1, 2))
    return mins, maxs


def reference_quantize(planes, mins, maxs, nbits, lorenzo):
    levels = 2**nbits - 1
    spans = (maxs - mins).astype(np.float64)
    scales = (1.0 / spans) * levels
    with np.errstate(invalid="ignore"):
        offsets = (planes - mins[:, None, None]).astype(np.float32).astype(np.float64)
        q = np.rint(offsets * scales[:, None, None])
    q = np.where(np.isfinite(planes), q, 2**nbits).astype(np.int64)
    if not lorenzo:
        return q.astype(np.uint32)
    padded = np.zeros((q.shape[0], q.shape[1] + 1, q.shape[2] + 1), np.int64)
    padded[:, 1:, 1:] = q
    residual = padded[:, 1:, 1:] - padded[:, :-1, 1:] - padded[:, 1:, :-1] + padded[:, :-1, :-1]
    residual %= 2**32
    return (((residual + NEGABINARY) % 2**32) ^ NEGABINARY).astype(np.uint32)


def reference_dequantize(codes, mins, maxs, nbits, lorenzo):
    codes = codes.astype(np.int64)
    if lorenzo:
        residual = ((codes ^ NEGABINARY) - NEGABINARY) % 2**32
        q = np.cumsum(np.cumsum(residual, axis=1), axis=2) % 2**32
    else:
        q = codes
    steps = (maxs - mins).astype(np.float64) / (2**nbits - 1)
    values = (mins[:, None, None].astype(np.float64) + steps[:, None, None] * q).astype(np.float32)
    return np.where(q == 2**nbits, np.float32(np.nan), values)


def random_planes(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    planes = (rng.standard_normal(shape) * 10 + 280).astype(np.float32)
    special = rng.random(shape)
    planes[special < 0.05] = np.nan
    planes[(special >= 0.05) & (special < 0.06)] = np.inf
    planes[(special >= 0.06) & (special < 0.07)] = -np.inf
    planes[-1] = np.nan  # one plane without any finite value
    return planes


@pytest.mark.parametrize("nbits", [1, 8, 12, 16, 24])
@pytest.mark.parametrize("lorenzo", [True, False])
def test_kernels_match_numpy_reference(nbits, lorenzo):
    rng = np.random.default_rng(nbits)
    planes = random_planes(rng, (4, 17, 23))
    mins, maxs = kernels.finite_plane_ranges(planes)
    ref_mins, ref_maxs = reference_ranges(planes)
    np.testing.assert_array_equal(mins, ref_mins)
    np.testing.assert_array_equal(maxs, ref_maxs)

    mins, maxs = legacy_plane_ranges(mins, maxs, nbits, False)
    codes = np.empty(planes.shape, np.uint32)
    kernels.quantize_planes(planes, mins, maxs, nbits, lorenzo, codes)
    np.testing.assert_array_equal(codes, reference_quantize(planes, mins, maxs, nbits, lorenzo))

    out = np.empty(planes.shape, np.float32)
    assert kernels.dequantize_planes(codes, mins, maxs, nbits, lorenzo, out) == -1
    expected = reference_dequantize(codes, mins, maxs, nbits, lorenzo)
    np.testing.assert_array_equal(out.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("lorenzo", [True, False])
def test_dequantize_reports_the_first_invalid_level(lorenzo):
    nbits = 8
    planes = np.linspace(0, 1, 2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    mins, maxs = legacy_plane_ranges(*kernels.finite_plane_ranges(planes), nbits, False)
    codes = np.empty(planes.shape, np.uint32)
    kernels.quantize_planes(planes, mins, maxs, nbits, lorenzo, codes)
    # Raw levels: 2**nbits + 1 is out of range. Negabinary 0b11 is -1: the running level
    # of element (1, 2, 3) drops below 0 only in the Lorenzo case for a level-0 element.
    index = (1, 2, 3)
    if lorenzo:
        codes[1, 0, 0] = 0  # q[1, 0, 0] becomes 0 ...
        codes[1, 0, 1] = 3  # ... and q[1, 0, 1] = -1, which wraps to 2**32 - 1
        index = (1, 0, 1)
    else:
        codes[index] = 2**nbits + 1
    out = np.empty(planes.shape, np.float32)
    flat = np.ravel_multi_index(index, planes.shape)
    assert kernels.dequantize_planes(codes, mins, maxs, nbits, lorenzo, out) == flat


# --------------------------------------------------------------------------------------
# Round trips


def _values(allow_special: bool) -> st.SearchStrategy:
    # Ranges stay finite in float32, even widened to a power of two times 2**24 / (2**24 - 1)
    # (the original's pow2 arithmetic); larger ones raise ValueError, tested apart.
    limit = float(np.float32(1e30))
    finite = st.floats(-limit, limit, width=32)
    if not allow_special:
        return finite
    return st.one_of(finite, finite, finite, st.sampled_from([np.nan, np.inf, -np.inf]))


def check_round_trip(codec: LegacyLayerQuantizer, values: np.ndarray) -> None:
    decoded = codec.decode(codec.encode(values))
    assert decoded.dtype == np.float32
    if codec.nbits > 24:
        assert decoded.shape == (values.size,)
        np.testing.assert_array_equal(decoded.view(np.int32), values.reshape(-1).view(np.int32))
        return
    shape = values.shape[-2:] if values.ndim >= 2 else (1, values.size)
    planes = values.reshape(-1, *shape)
    assert decoded.shape == planes.shape
    nonfinite = ~np.isfinite(planes)
    np.testing.assert_array_equal(np.isnan(decoded), nonfinite)
    mins, maxs = legacy_plane_ranges(*reference_ranges(planes), codec.nbits, codec.pow2_range)
    spans = maxs - mins
    steps = spans.astype(np.float64) / (2**codec.nbits - 1)
    magnitude = np.maximum(np.abs(mins), np.abs(maxs))
    bound = steps / 2 + np.spacing(spans) + np.spacing(magnitude)
    error = np.abs(decoded.astype(np.float64) - planes)
    assert (np.where(nonfinite, 0, error) <= bound[:, None, None]).all()


@settings(max_examples=60, deadline=None)
@given(
    values=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=7),
        elements=_values(allow_special=True),
    ),
    nbits=st.sampled_from([1, 8, 16, 24]),
    lorenzo=st.booleans(),
    pow2_range=st.booleans(),
)
def test_round_trip_within_half_a_step(values, nbits, lorenzo, pow2_range):
    codec = LegacyLayerQuantizer(
        nbits=nbits, transform="Lorenzo" if lorenzo else None, pow2_range=pow2_range
    )
    check_round_trip(codec, values)


@settings(max_examples=20, deadline=None)
@given(
    values=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
    nbits=st.sampled_from([25, 32]),
)
def test_nbits_above_24_store_the_floats_losslessly(values, nbits):
    codec = LegacyLayerQuantizer(nbits=nbits)
    encoded = codec.encode(values)
    assert numcodecs.Blosc("zstd", 5, numcodecs.Blosc.SHUFFLE).encode(values) == encoded
    check_round_trip(codec, values)


@pytest.mark.parametrize("nbits", [8, 16, 24, 32])
def test_round_trip_of_an_era5_like_field(nbits):
    from layerquantizer.synthetic import era5_like_field

    field = era5_like_field("temperature", levels=[500, 850], grid=(73, 144), seed=3)
    field[:, :5] = np.nan
    check_round_trip(LegacyLayerQuantizer(nbits=nbits), field)


def test_one_dimensional_chunks_are_one_row_planes():
    codec = LegacyLayerQuantizer()
    values = np.float32([1.0, 2.0, np.nan, 4.0])
    encoded = codec.encode(values)
    stream = np.frombuffer(numcodecs.blosc.decompress(encoded), "<i4")
    assert stream[:3].tolist() == [1, 1, 4]
    assert codec.decode(encoded).shape == (1, 1, 4)
    assert codec.encode(values.tobytes()) == encoded
    assert codec.decode(codec.encode(np.float32(7.0))).tolist() == [[[7.0]]]


def test_encode_decode_with_buffers_and_out():
    codec = LegacyLayerQuantizer(nbits=16)
    values = np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5)
    # Bytes carry no shape: they are read as float32, one row.
    assert codec.encode(values.tobytes()) == codec.encode(values.reshape(-1))
    assert codec.encode(memoryview(values.reshape(-1))) == codec.encode(values.reshape(-1))
    encoded = codec.encode(values)
    expected = codec.decode(encoded)
    for buf in (bytearray(encoded), np.frombuffer(encoded, np.uint8), memoryview(encoded)):
        np.testing.assert_array_equal(codec.decode(buf), expected)
    for out in (np.empty(60, np.float32), np.empty((3, 4, 5), np.float32)):
        assert codec.decode(encoded, out=out) is out
        np.testing.assert_array_equal(out.reshape(expected.shape), expected)
    strided = np.empty((3, 4, 10), np.float32)[:, :, ::2]  # not contiguous: copied into
    assert codec.decode(encoded, out=strided) is strided
    np.testing.assert_array_equal(strided, expected)
    with pytest.raises(ValueError):
        codec.decode(encoded, out=np.empty(59, np.float32))


def test_unquantized_chunks_keep_memory_order():
    codec = LegacyLayerQuantizer(nbits=32)
    values = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    out = np.empty((2, 3, 4), np.float32, order="F")
    assert codec.decode(codec.encode(values), out=out) is out
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (np.zeros((2, 3), np.float64), TypeError, "float32 data, got an array of dtype float64"),
        (np.zeros((2, 3), ">f4"), TypeError, "float32 data"),
        (np.zeros((0, 3), np.float32), ValueError, "cannot encode an empty array"),
        (np.zeros((3, 4, 5), np.float32, order="F"), ValueError, "F-ordered array"),
        (np.float32([-3e38, 3e38]), ValueError, "plane 0: its range .* does not fit"),
        (np.full(3, 3e38, np.float32), ValueError, "does not fit in float32"),
        (np.float32([0, 1e35]), ValueError, "pow2:.*does not fit in float32"),
        (b"abc", TypeError, "float32 data, got a buffer of dtype uint8 and 3 bytes"),
    ],
)
def test_encode_refuses_what_it_cannot_write(values, error, match):
    pow2 = match.startswith("pow2:")
    with pytest.raises(error, match=match.removeprefix("pow2:")):
        LegacyLayerQuantizer(pow2_range=pow2).encode(values)


# --------------------------------------------------------------------------------------
# Corrupt chunks


def blosc(stream: np.ndarray) -> bytes:
    return numcodecs.Blosc("zstd", 5, numcodecs.Blosc.SHUFFLE).encode(stream)


def good_stream() -> np.ndarray:
    _, _, encoded, _ = load_case("constant_layers_nb16")
    return np.frombuffer(numcodecs.blosc.decompress(encoded), "<i4").copy()


def with_changes(**changes) -> bytes:
    stream = good_stream()
    for index, value in changes.items():
        stream[int(index[1:])] = value
    return blosc(stream)


NAN_BITS = int(np.float32(np.nan).view(np.int32))
INF_BITS = int(np.float32(np.inf).view(np.int32))


@pytest.mark.parametrize(
    ("chunk", "match"),
    [
        pytest.param(b"", "0 bytes, shorter than the 16-byte Blosc header", id="empty"),
        pytest.param(b"\x02\x01" * 5, "shorter than the 16-byte Blosc header", id="short"),
        pytest.param(blosc(good_stream())[:-1], "cbytes = 60, expected .* 59", id="truncated"),
        pytest.param(blosc(good_stream()) + b"\0", "cbytes = 60, expected .* 61", id="padded"),
        pytest.param(blosc(np.zeros(0, np.int32)), "0 int32 after Blosc", id="no-header"),
        pytest.param(blosc(np.int32([3, 16])), "2 int32 after Blosc", id="short-header"),
        pytest.param(with_changes(i0=0), "nplanes = 0, expected at least 1", id="nplanes-0"),
        pytest.param(with_changes(i1=-16), "ny = -16, expected at least 1", id="ny<0"),
        pytest.param(with_changes(i2=2**31 - 1), "needs .* int32, the chunk holds", id="huge-nx"),
        pytest.param(with_changes(i0=2), "needs 519 int32, the chunk holds 777", id="size"),
        pytest.param(with_changes(i3=NAN_BITS), "plane 0 has plane_min = nan, plane_max = 1.0"),
        pytest.param(with_changes(i7=INF_BITS), "plane 1 has plane_min = 5.0, plane_max = inf"),
        pytest.param(
            with_changes(i4=int(np.float32(20).view(np.int32))),
            "plane 1 has plane_min = 20.0, plane_max = 15.0; expected finite values with min < max",
        ),
        pytest.param(with_changes(i9=12345), "level of element 0 is outside \\[0, 65536\\]"),
    ],
)
def test_corrupt_chunks_are_named(chunk, match):
    with pytest.raises(CorruptChunkError, match=match):
        LegacyLayerQuantizer().decode(chunk)


def blosc_header(
    nbytes: int, blocksize: int, cbytes: int, flags: int = 0x91, typesize: int = 4
) -> bytes:
    return bytes([2, 1, flags, typesize]) + np.int32([nbytes, blocksize, cbytes]).tobytes()


@pytest.mark.parametrize(
    ("chunk", "match"),
    [
        pytest.param(blosc_header(2**31 - 1, 2**16, 64) + bytes(48), "nbytes = 2147483647"),
        pytest.param(blosc_header(-4, 2**16, 64) + bytes(48), "nbytes = -4"),
        pytest.param(blosc_header(6, 6, 64) + bytes(48), "nbytes = 6, expected a multiple"),
        pytest.param(blosc_header(64, 0, 64) + bytes(48), "blocksize = 0"),
        pytest.param(blosc_header(64, 64, 64, 0x93) + bytes(48), "stored uncompressed"),
        pytest.param(blosc_header(8, 8, 16, typesize=8), "typesize = 8, expected 4"),
        pytest.param(blosc_header(64, 64, 64) + bytes(48), "Blosc: error during blosc"),
    ],
)
def test_corrupt_blosc_headers_are_refused_before_decompressing(chunk, match):
    with pytest.raises(CorruptChunkError, match=match):
        LegacyLayerQuantizer().decode(chunk)


def test_corrupt_plain_float_chunk():
    codec = LegacyLayerQuantizer(nbits=32)
    encoded = codec.encode(np.arange(10, dtype=np.float32))
    with pytest.raises(CorruptChunkError, match="cbytes"):
        codec.decode(encoded[:-3])


_FUZZ = """
import json, resource, sys
import numpy as np
# A decoder that allocated what a forged header asks for would fail here, not pass.
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
sys.path.insert(0, sys.argv[1])
from test_legacy import fuzz_cases
from layerquantizer.legacy import LegacyLayerQuantizer
codecs = {n: LegacyLayerQuantizer(nbits=n) for n in (8, 12, 16, 20, 32)}
counts = {"rejected": 0, "decoded": 0}
for nbits, chunk, label in fuzz_cases(int(sys.argv[2])):
    try:
        out = codecs[nbits].decode(chunk)
    except ValueError:
        counts["rejected"] += 1
        continue
    except BaseException as error:
        sys.exit(f"{label}: {type(error).__name__}: {error}")
    if out.dtype != np.float32:
        sys.exit(f"{label}: decoded to {out.dtype}")
    counts["decoded"] += 1
print(json.dumps(counts))
"""


def fuzz_cases(seed: int):
    """Chunks made from the fixtures by truncation, bit flips, forged fields and noise.

    Yields ``(nbits, chunk, label)``; used by the fuzz test in a separate process.
    """
    rng = np.random.default_rng(seed)
    bases = []
    for name in ("constant_layers_nb16", "allnan_layer_nb16", "era5_t2m_nb20", "eraint_z_3d_nb16"):
        case, values, encoded, _ = load_case(name)
        bases.append((case["config"]["nbits"], encoded))
        if name == "era5_t2m_nb20":
            bases.append((32, LegacyLayerQuantizer(nbits=32).encode(values)))
    small = LegacyLayerQuantizer(nbits=12).encode(np.float32(rng.standard_normal((2, 5, 6))))
    bases.append((12, small))
    yield 16, b"", "empty"
    for nbits, encoded in bases:
        for length in sorted(set(rng.integers(0, len(encoded), 60).tolist()) | {1, 15, 16, 17}):
            yield nbits, encoded[:length], f"truncated to {length}"
        for trial in range(200):
            chunk = bytearray(encoded)
            for _ in range(int(rng.integers(1, 4))):
                position = int(rng.integers(0, 16 if trial % 4 == 0 else len(chunk)))
                chunk[position] ^= 1 << int(rng.integers(0, 8))
            yield nbits, bytes(chunk), f"bit flips, trial {trial}"
        if nbits > 24:
            continue
        stream = np.frombuffer(numcodecs.blosc.decompress(encoded), "<i4")
        for trial in range(150):
            forged = stream.copy()
            nplanes = int(stream[0])
            field = int(rng.integers(0, min(forged.size, 3 + 2 * nplanes + 8)))
            forged[field] = rng.choice(
                [0, -1, 1, 2**31 - 1, -(2**31), NAN_BITS, INF_BITS, int(rng.integers(-9, 9))]
                + [int(rng.integers(-(2**31), 2**31))]
            )
            if trial % 3 == 0:
                forged = forged[: int(rng.integers(0, forged.size))]
            yield nbits, blosc(forged), f"forged int {field}, trial {trial}"
    for trial in range(300):
        noise = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        if trial % 2:  # a plausible Blosc header in front, so the noise reaches c-blosc
            noise = blosc_header(4 * int(rng.integers(0, 4096)), 4096, len(noise) + 16) + noise
        yield int(rng.choice([8, 16, 32])), noise, f"noise, trial {trial}"


@pytest.mark.slow
def test_fuzzed_chunks_raise_value_error_or_decode():
    result = subprocess.run(
        [sys.executable, "-c", _FUZZ, str(Path(__file__).parent), "20240"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["rejected"] > 1000


def test_docstring_examples_run():
    import doctest

    from layerquantizer import legacy

    assert doctest.testmod(legacy, raise_on_error=False).failed == 0
