"""Sources as users have them (issue 8): netCDF-packed int16, float64, integers with a fill
value, categorical uint8, boolean masks. ``lq compress`` copies what it does not quantize
bit for bit, and quantizes packed and float64 variables from their decoded values.

The packed store is what ``xr.open_dataset("eraint_uvz.nc").to_zarr(...)`` writes: the
decoded float64 variables carry the netCDF encoding (int16, ``scale_factor``,
``add_offset``, ``_FillValue`` and ``missing_value``), which xarray applies again on write.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from layerquantizer import chunk
from layerquantizer.dataset import full_scale_bound
from layerquantizer.dataset._unit import float64_chunk

PACKED = ("z", "u", "v")
COPIED = ("z", "u", "v", "f64", "i32", "u8", "u8_fill", "mask", "nanfill")


def lq(*args, check: bool = True) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "lq"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]
    result = subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lq {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def _packed(values: np.ndarray) -> xr.Variable:
    """``values`` as netCDF packs them into int16 and xarray decodes them back: float64
    with the packing in the encoding. NaN becomes the fill value."""
    lo, hi = np.nanmin(values), np.nanmax(values)
    scale = float(hi - lo) / (2**16 - 2)
    offset = float(hi + lo) / 2
    packed = np.round((values - offset) / scale)
    decoded = np.where(np.isnan(values), np.nan, packed * scale + offset)
    fill = np.int16(-32767)
    dims = ("time", "level", "latitude", "longitude")
    var = xr.Variable(dims, decoded, {"units": "m s**-1", "long_name": "packed"})
    var.encoding = {
        "dtype": np.dtype("int16"), "scale_factor": scale, "add_offset": offset,
        "_FillValue": fill, "missing_value": fill,
    }  # fmt: skip
    return var


def packed_dataset(fields: dict[str, np.ndarray]) -> xr.Dataset:
    z, u, v = (fields[f"eraint_{k}"].astype(np.float64) for k in "zuv")
    u = u.copy()
    u[0, 0, :3] = np.nan  # missing values: the fill value in the store
    grid = ("latitude", "longitude")
    nanfill = fields["eraint_u"][0].copy()
    nanfill[:, :10] = np.nan
    i32 = xr.Variable(grid, (z[0, 0] > np.median(z[0, 0])).astype(np.int32) * 7)
    i32.encoding = {"_FillValue": np.int32(0)}
    u8_fill = xr.Variable(grid, (np.abs(fields["eraint_v"][0, 0]) // 4).astype(np.uint8))
    u8_fill.encoding = {"_FillValue": np.uint8(255)}
    nlat, nlon = z.shape[-2:]
    return xr.Dataset(
        {
            "z": _packed(z),
            "u": _packed(u),
            "v": _packed(v),
            "f64": (("level", *grid), z[0] + 0.1),
            "i32": i32,
            "u8": (grid, (np.abs(fields["eraint_u"][0, 0]) // 5).astype(np.uint8),
                   {"flag_values": [0, 1, 2]}),
            "u8_fill": u8_fill,
            "mask": (grid, z[0, -1] < np.median(z[0, -1])),
            "nanfill": (("level", *grid), nanfill),
        },
        coords={
            "time": np.array(["2000-01-01", "2000-07-01"], "datetime64[ns]"),
            "level": ("level", np.array([200, 500, 850]), {"units": "hPa"}),
            "latitude": np.linspace(90, -90, nlat),
            "longitude": np.arange(nlon) * (360 / nlon),
        },
    )  # fmt: skip


@pytest.fixture(scope="module", params=[2, 3], ids=["zarr2", "zarr3"])
def packed_store(request, real_fields, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("packed") / f"packed-v{request.param}.zarr"
    packed_dataset(real_fields).to_zarr(
        path, mode="w-", zarr_format=request.param, consolidated=request.param == 2
    )
    return str(path)


def _open(path: str) -> xr.Dataset:
    from layerquantizer.dataset import open_dataset

    return open_dataset(path)


def test_the_store_is_packed_as_users_have_it(packed_store):
    z = zarr.open_array(packed_store, path="z", mode="r")
    assert z.dtype == np.int16 and "scale_factor" in z.attrs and "missing_value" in z.attrs
    decoded = _open(packed_store)
    assert decoded["z"].dtype == np.float64 and decoded["u8_fill"].dtype == np.float32
    assert decoded["i32"].dtype == np.float64  # fill 0 masked: zeros decode to NaN


@pytest.mark.slow  # lq as a subprocess
def test_copies_are_bit_for_bit(packed_store, tmp_path):
    """Before: int32 with fill 0 came out float64 (zeros NaN), uint8 with a fill float32,
    packed int16 float64 without its packing."""
    fmt = zarr.open_group(packed_store, mode="r").metadata.zarr_format
    dst = tmp_path / "out.zarr"
    lq("compress", packed_store, dst, "--vars", "nanfill", "--zarr-format", fmt)
    for name in COPIED[:-1]:
        a = zarr.open_array(packed_store, path=name, mode="r")
        b = zarr.open_array(dst, path=name, mode="r")
        assert b.dtype == a.dtype, name
        assert np.array_equal(b[...], a[...], equal_nan=a.dtype.kind == "f"), name
        assert str(b.fill_value) == str(a.fill_value), name
        assert dict(b.attrs) == dict(a.attrs), name
        if fmt == 3:  # v2 keeps the dimension names in the attributes compared above
            assert b.metadata.dimension_names == a.metadata.dimension_names, name
    source, back = _open(packed_store), _open(str(dst))
    names = list(COPIED[:-1])
    xr.testing.assert_identical(back[names].load(), source[names].load())
    verified = json.loads(lq("verify", packed_store, dst, "--json").stdout)
    assert verified["ok"] is True
    assert verified["variables"]["i32"]["max_abs_error"] == 0


@pytest.mark.slow  # lq as a subprocess
def test_copies_across_zarr_formats_decode_the_same(packed_store, tmp_path):
    fmt = zarr.open_group(packed_store, mode="r").metadata.zarr_format
    dst = tmp_path / "out.zarr"
    lq("compress", packed_store, dst, "--vars", "nanfill", "--zarr-format", 5 - fmt)
    names = list(COPIED[:-1])
    xr.testing.assert_identical(_open(str(dst))[names].load(), _open(packed_store)[names].load())
    for name in names:
        a = zarr.open_array(packed_store, path=name, mode="r")
        b = zarr.open_array(dst, path=name, mode="r")
        assert b.dtype == a.dtype and np.array_equal(b[...], a[...]), name


@pytest.mark.slow  # lq as a subprocess
def test_packed_and_float64_are_quantized(packed_store, tmp_path):
    """Before: exit 2, "cannot quantize 'z': its dtype is float64"."""
    dst = tmp_path / "out.zarr"
    report = json.loads(lq("compress", packed_store, dst, "--vars", "z,u,v,f64", "--json").stdout)
    source = _open(packed_store).load()
    back = xr.open_zarr(dst).load()  # as a user reads it, no lq involved
    bound = full_scale_bound(16)
    for name in (*PACKED, "f64"):
        array = zarr.open_array(dst, path=name, mode="r")
        assert array.dtype == np.float32, name
        for key in ("scale_factor", "add_offset", "missing_value"):
            assert key not in array.attrs, (name, key)
        assert back[name].dtype == np.float32
        assert back[name].attrs["layerquantizer_source_dtype"] == "float64"
        a = source[name].values
        b = back[name].values.astype(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        layers_a = a.reshape(-1, *a.shape[-2:])
        layers_b = b.reshape(layers_a.shape)
        for layer_a, layer_b in zip(layers_a, layers_b, strict=True):
            finite = np.isfinite(layer_a)
            span = np.ptp(layer_a[finite])
            ulp = np.spacing(np.abs(layer_a[finite]).astype(np.float32)).astype(np.float64)
            error = np.abs(layer_a[finite] - layer_b[finite])
            assert (error <= bound * span + ulp).all(), name
    inspected = json.loads(lq("inspect", packed_store, "--json").stdout)["variables"]
    for name in PACKED:
        # Smaller than the int16 source, losslessly compressed as it was.
        assert report["variables"][name]["stored_bytes"] < inspected[name]["stored_bytes"], name
    assert json.loads(lq("verify", packed_store, dst, "--json").stdout)["ok"] is True


@pytest.mark.slow  # lq as a subprocess
def test_integers_are_not_quantized(packed_store, tmp_path):
    result = lq("compress", packed_store, tmp_path / "o.zarr", "--vars", "u8", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("lq: error: cannot quantize 'u8': its dtype is uint8")


def _within_float64_bound(x: np.ndarray, y: np.ndarray, nbits: int) -> bool:
    """verify's check, per layer: ``|x - y| <= b * (max - min) + ulp32(x)`` in float64."""
    layers = x.reshape(-1, *x.shape[-2:])
    for layer_x, layer_y in zip(layers, y.reshape(layers.shape), strict=True):
        finite = np.isfinite(layer_x)
        if not np.array_equal(layer_x[~finite], layer_y[~finite], equal_nan=True):
            return False
        a, b = layer_x[finite], layer_y[finite].astype(np.float64)
        ulp = np.spacing(np.abs(a).astype(np.float32)).astype(np.float64)
        if (np.abs(a - b) > full_scale_bound(nbits) * np.ptp(a) + ulp).any():
            return False
    return True


@pytest.mark.parametrize("nbits", [4, 12, 16, 20, 24])
@pytest.mark.parametrize("relative_span", [1.0, 1e-3, 1e-6])
def test_float64_chunk_holds_the_float64_bound(nbits, relative_span):
    """Through float32, whether the half step is far above float32's spacing or below it."""
    rng = np.random.default_rng(nbits)
    x = 1e5 * (1 + relative_span * rng.standard_normal((2, 40, 50)).cumsum(axis=-1) / 10)
    x[0, 0, :3] = [np.nan, np.inf, -np.inf]
    y = chunk.decode(float64_chunk(x, nbits=nbits, level=1))
    assert y.dtype == np.float32
    assert _within_float64_bound(x, y, nbits)


def test_float64_chunk_refuses_values_beyond_float32():
    x = np.ones((3, 4))
    x[1, 2] = 1e39
    with pytest.raises(ValueError, match=r"a value \(1e\+39\) is beyond the float32 range"):
        float64_chunk(x, nbits=16, level=1)
    with pytest.raises(ValueError, match=r"tolerances must hold one value per layer \(1\)"):
        chunk.encode(np.ones((3, 4), np.float32), nbits=16, level=1, tolerances=np.zeros(2))


def test_planning_reads_no_values_of_a_float64_variable(tmp_path):
    """The plan's template holds float32 for a float64 (or decoded packed) variable without
    reading its values: the source is read unit by unit, never whole at planning."""
    import tracemalloc

    from layerquantizer.dataset._plan import plan_compress
    from layerquantizer.dataset._stores import open_dataset

    dims = ("time", "latitude", "longitude")
    values = np.ones((24, 361, 720))  # 50 MB of float64, a few KB stored
    path = tmp_path / "src.zarr"
    xr.Dataset({"t64": (dims, values)}).to_zarr(
        path, zarr_format=2, consolidated=True, encoding={"t64": {"chunks": (1, 361, 720)}}
    )
    del values
    ds = open_dataset(str(path))
    tracemalloc.start()
    try:
        plan = plan_compress(ds, variables=["t64"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert plan.template["t64"].dtype == np.float32
    assert peak < 10 * 2**20, f"planning held {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_time_variables_are_copied_as_stored(tmp_path, zarr_format):
    """Datetimes and timedeltas: int64 with their units (and a timedelta's dtype attribute)."""
    from layerquantizer.dataset import compress, open_dataset

    times = np.datetime64("2020-01-01", "ns") + np.arange(3) * np.timedelta64(6, "h")
    grid = np.random.default_rng(0).normal(280, 10, (3, 8, 16)).astype(np.float32)
    ds = xr.Dataset(
        {
            "t": (("time", "latitude", "longitude"), grid),
            "valid_time": ("time", times + np.timedelta64(3, "h")),
            "lead": ("time", np.arange(3) * np.timedelta64(1, "h")),
        },
        coords={"time": times, "latitude": np.arange(8.0), "longitude": np.arange(16.0)},
    )
    src, dst = str(tmp_path / "src.zarr"), str(tmp_path / "dst.zarr")
    ds.to_zarr(src, zarr_format=zarr_format, consolidated=zarr_format == 2)
    compress(src, dst, variables=["t"], zarr_format=zarr_format)
    for name in ("valid_time", "lead"):
        a = zarr.open_array(src, path=name, mode="r")
        b = zarr.open_array(dst, path=name, mode="r")
        assert (b.dtype, dict(b.attrs)) == (a.dtype, dict(a.attrs)), name
        assert np.array_equal(b[...], a[...]), name
    names = ["valid_time", "lead"]
    xr.testing.assert_identical(open_dataset(dst)[names].load(), open_dataset(src)[names].load())
