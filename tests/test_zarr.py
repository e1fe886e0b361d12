"""The codecs inside real Zarr v2 and v3 stores, read back through zarr and xarray,
including by fresh processes that never import layerquantizer (entry points only)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
import zarr
from numpy.testing import assert_array_equal

from layerquantizer import LayerQuantizer, max_abs_error
from layerquantizer.zarr3 import LayerQuantizerCodec

# Edge chunks stick out of the array (NaN fill is encoded); NaN and inf inside.
SHAPE, CHUNKS = (3, 50, 70), (2, 32, 32)


def sample(seed=0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(SHAPE).cumsum(axis=2).astype(np.float32) + 280
    data[0, 3, 4] = np.nan
    data[2, 49, 69] = -np.inf
    return data


def check_decoded(original, decoded, nbits):
    """Within the bound of the chunk-layer a value sits in: the whole level's range bounds it."""
    assert_array_equal(np.isnan(decoded), np.isnan(original))
    finite = np.isfinite(original)
    assert_array_equal(
        decoded[~finite & ~np.isnan(original)], original[~finite & ~np.isnan(original)]
    )
    for level in range(original.shape[0]):
        values = original[level][finite[level]].astype(np.float64)
        bound = max_abs_error(values.min(), values.max(), nbits) + 6e-5
        assert np.abs(decoded[level][finite[level]] - values).max() <= bound


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


@pytest.mark.parametrize("nbits", [8, 16, 24])
def test_zarr_v2_array(tmp_path, nbits):
    data = sample()
    z = zarr.create_array(
        tmp_path / "a.zarr",
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="float32",
        compressors=LayerQuantizer(nbits=nbits),
        fill_value=np.nan,
        zarr_format=2,
    )
    z[:] = data
    meta = json.loads((tmp_path / "a.zarr" / ".zarray").read_text())
    assert meta["compressor"] == {"id": "layerquantizer1", "nbits": nbits, "level": 1}
    check_decoded(data, zarr.open_array(tmp_path / "a.zarr")[:], nbits)


def test_zarr_v2_fortran_order(tmp_path):
    data = sample()
    z = zarr.create_array(
        tmp_path / "f.zarr",
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="float32",
        order="F",
        compressors=LayerQuantizer(nbits=16),
        fill_value=np.nan,
        zarr_format=2,
    )
    z[:] = data
    check_decoded(data, zarr.open_array(tmp_path / "f.zarr")[:], 16)


@pytest.mark.parametrize("nbits", [8, 16, 24])
def test_zarr_v3_array_written_and_read_by_fresh_processes(tmp_path, nbits):
    path = str(tmp_path / "a.zarr")
    np.save(tmp_path / "data.npy", sample())
    run_fresh(
        """
        import numpy as np, zarr
        path, nbits = sys.argv[1], int(sys.argv[2])
        z = zarr.create_array(
            path, shape=(3, 50, 70), chunks=(2, 32, 32), dtype="float32",
            serializer={"name": "layerquantizer", "configuration": {"nbits": nbits}},
            compressors=None, fill_value=float("nan"), zarr_format=3,
        )
        z[:] = np.load(sys.argv[3])
        """,
        path,
        str(nbits),
        str(tmp_path / "data.npy"),
    )
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    assert meta["codecs"] == [
        {"name": "layerquantizer", "configuration": {"nbits": nbits, "level": 1}}
    ]
    run_fresh(
        """
        import numpy as np, zarr
        np.save(sys.argv[2], zarr.open_array(sys.argv[1])[:])
        """,
        path,
        str(tmp_path / "out.npy"),
    )
    check_decoded(sample(), np.load(tmp_path / "out.npy"), nbits)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_xarray_round_trip_in_a_fresh_process(tmp_path, zarr_format):
    data = sample()
    ds = xr.Dataset(
        {"temperature": (("level", "latitude", "longitude"), data)},
        coords={"level": [500, 850, 1000]},
        attrs={"title": "test"},
    )
    if zarr_format == 2:
        encoding = {"compressors": [LayerQuantizer(nbits=16)], "chunks": CHUNKS}
    else:
        encoding = {
            "serializer": LayerQuantizerCodec(nbits=16),
            "compressors": None,
            "chunks": CHUNKS,
        }
    store = tmp_path / "ds.zarr"
    ds.to_zarr(
        store, zarr_format=zarr_format, consolidated=False, encoding={"temperature": encoding}
    )
    back = xr.open_zarr(store, consolidated=False).load()
    check_decoded(data, back.temperature.values, 16)
    assert back.attrs == {"title": "test"}
    assert_array_equal(back.level, [500, 850, 1000])

    run_fresh(
        """
        import numpy as np, xarray as xr
        ds = xr.open_zarr(sys.argv[1], consolidated=False)
        np.save(sys.argv[2], ds.temperature.values)
        """,
        str(store),
        str(tmp_path / "out.npy"),
    )
    assert_array_equal(np.load(tmp_path / "out.npy"), back.temperature.values)


@pytest.mark.parametrize(
    ("dtype", "when", "match"),
    [
        # No numeric cast makes float32 of these: refused when the array is created.
        ("complex64", "create", "got dtype complex64; store this array with another"),
        ("bool", "create", "got dtype bool"),
        # A filter (AsType) could make float32 of these, so only a chunk that arrives as
        # something else is refused, on the first write.
        ("float64", "write", "got dtype float64; convert the array to float32 or put a filter"),
        ("int16", "write", "got dtype int16"),
    ],
)
def test_v3_serializer_refuses_other_dtypes(dtype, when, match):
    def create():
        return zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=(4, 4),
            dtype=dtype,
            serializer=LayerQuantizerCodec(),
            compressors=None,
            zarr_format=3,
        )

    with pytest.raises(TypeError, match=match):
        create()[:] = 1
    if when == "write":
        create()


def test_v3_codec_dict_round_trip():
    codec = LayerQuantizerCodec(nbits=9, level=3)
    assert codec.to_dict() == {"name": "layerquantizer", "configuration": {"nbits": 9, "level": 3}}
    assert LayerQuantizerCodec.from_dict(codec.to_dict()) == codec
    assert LayerQuantizerCodec.from_dict({"name": "layerquantizer"}) == LayerQuantizerCodec()
    with pytest.raises(ValueError, match="between 1 and 24"):
        LayerQuantizerCodec(nbits=30)


def test_v2_and_v3_chunks_are_the_same_bytes(tmp_path):
    # One core behind both codecs: a chunk written through either decodes with the other.
    data = sample()[:2, :32, :32]
    v2 = zarr.create_array(
        tmp_path / "v2.zarr",
        shape=data.shape,
        chunks=data.shape,
        dtype="float32",
        compressors=LayerQuantizer(),
        zarr_format=2,
    )
    v3 = zarr.create_array(
        tmp_path / "v3.zarr",
        shape=data.shape,
        chunks=data.shape,
        dtype="float32",
        serializer=LayerQuantizerCodec(),
        compressors=None,
        zarr_format=3,
    )
    v2[:] = data
    v3[:] = data
    chunk_v2 = (tmp_path / "v2.zarr" / "0.0.0").read_bytes()
    chunk_v3 = (tmp_path / "v3.zarr" / "c" / "0" / "0" / "0").read_bytes()
    assert chunk_v2 == chunk_v3


@pytest.mark.parametrize(
    ("zarr_format", "dtype"),
    [(2, ">f4"), (2, "<f4"), (3, ">f4"), (3, "<f4")],
    ids=["v2-big", "v2-little", "v3-big", "v3-little"],
)
def test_byte_order_of_the_array_is_honoured(zarr_format, dtype):
    # netCDF3 files load as >f4; Zarr v2 views the codec's output bytes as the array's dtype.
    data = sample()
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype=dtype,
        zarr_format=zarr_format,
        fill_value=np.nan,
        **(
            {"compressors": [LayerQuantizer()]}
            if zarr_format == 2
            else {"serializer": LayerQuantizerCodec(), "compressors": None}
        ),
    )
    z[:] = data
    back = z[:]
    assert back.dtype == np.dtype(dtype)
    check_decoded(data, back.astype(np.float32), 16)


def assert_within_chunk_bound(data, decoded, chunks, nbits):
    """Every finite value within half a step of the range of its own chunk-layer's data
    (the padding that fills edge chunks is not data), plus one float32 ulp."""
    for corner in np.ndindex(*(-(-n // c) for n, c in zip(data.shape, chunks, strict=True))):
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(corner, chunks, strict=True))
        block = data[region].reshape(-1, *data[region].shape[-2:]).astype(np.float64)
        back = decoded[region].reshape(block.shape).astype(np.float64)
        for x, y in zip(block, back, strict=True):
            finite = np.isfinite(x)
            values = x[finite]
            bound = max_abs_error(values.min(), values.max(), nbits)
            slack = np.spacing(np.abs(values).astype(np.float32)).astype(np.float64)
            error = np.abs(values - y[finite])
            assert (error <= bound + slack).all(), (
                f"chunk {corner}: error {error.max()} > bound {bound} of the data's range"
            )


@pytest.mark.parametrize(
    ("zarr_format", "fill_value", "codec_fill"),
    [
        pytest.param(3, None, None, id="v3-default-fill-0"),
        pytest.param(3, -999.0, None, id="v3-fill-minus-999"),
        pytest.param(2, 0.0, 0.0, id="v2-fill-0-given-to-the-codec"),
        pytest.param(2, np.nan, None, id="v2-nan-fill"),
    ],
)
def test_padding_of_edge_chunks_does_not_widen_the_bound(zarr_format, fill_value, codec_fill):
    # Zarr pads edge chunks with the fill value (0 by default): with data near 280 it used
    # to enter the layer's range, and the error reached ~100 times what the data implies.
    data = sample()
    data[0, 3, 4] = 281.0  # no NaN: the bound is checked on every value
    data[2, 49, 69] = 279.0
    nbits = 12
    if zarr_format == 2:
        codecs = {"compressors": [LayerQuantizer(nbits=nbits, fill_value=codec_fill)]}
    else:
        codecs = {"serializer": LayerQuantizerCodec(nbits=nbits), "compressors": None}
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="float32",
        zarr_format=zarr_format,
        **({} if fill_value is None else {"fill_value": fill_value}),
        **codecs,
    )
    z[:] = data
    assert_within_chunk_bound(data, z[:], CHUNKS, nbits)


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3")
def test_v3_serializer_after_an_astype_filter():
    # zarr validates every codec against the array's dtype (float64): the serializer must
    # accept what the filters before it produce (float32) instead.
    from zarr.codecs.numcodecs import AsType

    data = sample().astype(np.float64)
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="float64",
        fill_value=np.nan,
        filters=[AsType(encode_dtype="float32", decode_dtype="float64")],
        serializer=LayerQuantizerCodec(),
        compressors=None,
        zarr_format=3,
    )
    z[:] = data
    back = z[:]
    assert back.dtype == np.float64
    check_decoded(data.astype(np.float32), back.astype(np.float32), 16)
