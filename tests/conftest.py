"""Test fixtures.

- ``real_fields``: the arrays of ``../shared/data/real_fields.npz``.

Stores shared by the CLI and dataset tests, made once per session in a temporary folder:

- ``sample_store``: ``lq sample`` output as Zarr v2 and v3 (WeatherBench2 names and dims).
- ``real_store``: ERA-Interim monthly means of geopotential and wind from
  ``../shared/data/real_fields.npz`` under WeatherBench2 names, plus a static
  ``land_sea_mask`` derived from them and a float64 variable.
- ``ensemble_store``: ERA5 ensemble geopotential and temperature with a ``number``
  dimension, as Zarr v3 without consolidated metadata.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# tests/reference.py is imported as a plain module by the kernel tests.
sys.path.insert(0, str(Path(__file__).parent))

# Real servers on loopback (a GCS emulator, a dask cluster): see tests/servers.py.
from servers import (  # noqa: E402, F401
    dask_cluster,
    gcs_bucket,
    gcs_emulator,
    gcs_emulator_server,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_FIELDS = SHARED / "data" / "real_fields.npz"


def _load_real() -> dict[str, np.ndarray]:
    if not REAL_FIELDS.exists():
        pytest.skip(f"{REAL_FIELDS} is not there (the project expects ../shared beside the clone)")
    with np.load(REAL_FIELDS) as data:
        return dict(data)


@pytest.fixture(scope="session")
def real_fields() -> dict[str, np.ndarray]:
    """The real ERA5 / ERA-Interim fields of ../shared (see its README)."""
    return _load_real()


def real_dataset():
    """ERA-Interim fields (2 months x 200/500/850 hPa x 0.75 degree) as an xarray Dataset."""
    import xarray as xr

    fields = _load_real()
    nlat, nlon = fields["eraint_z"].shape[-2:]
    dims = ("time", "level", "latitude", "longitude")
    z = fields["eraint_z"]
    return xr.Dataset(
        {
            "geopotential": (dims, z, {"units": "m**2 s**-2"}),
            "u_component_of_wind": (dims, fields["eraint_u"], {"units": "m s**-1"}),
            "v_component_of_wind": (dims, fields["eraint_v"], {"units": "m s**-1"}),
            # Static and 2-D: copied losslessly as a single chunk.
            "land_sea_mask": (
                ("latitude", "longitude"),
                (z[0, -1] < np.median(z[0, -1])).astype(np.float32),
            ),
            # float64: quantized through float32 when asked, else copied.
            "geopotential_float64": (dims[1:], z[0].astype(np.float64)),
        },
        coords={
            "time": np.array(["2000-01-01", "2000-07-01"], "datetime64[ns]"),
            "level": ("level", np.array([200, 500, 850]), {"units": "hPa"}),
            "latitude": np.linspace(90, -90, nlat),
            "longitude": np.arange(nlon) * (360 / nlon),
        },
        attrs={"source": "ERA-Interim monthly means (real_fields.npz)"},
    )


def ensemble_dataset():
    """ERA5 ensemble fields: (number=10, time=4, level=[850, 500], 61, 120)."""
    import xarray as xr

    fields = _load_real()
    nlat, nlon = fields["era5ens_z"].shape[-2:]
    dims = ("number", "time", "level", "latitude", "longitude")
    return xr.Dataset(
        {"geopotential": (dims, fields["era5ens_z"]), "temperature": (dims, fields["era5ens_t"])},
        coords={
            "number": np.arange(10),
            "time": np.datetime64("2020-01-01T00", "ns") + np.arange(4) * np.timedelta64(6, "h"),
            "level": [850, 500],
            "latitude": np.linspace(90, -90, nlat),
            "longitude": np.arange(nlon) * (360 / nlon),
        },
    )


@pytest.fixture(scope="session", params=[2, 3], ids=["zarr2", "zarr3"])
def sample_store(request, tmp_path_factory) -> str:
    from layerquantizer.dataset import write_sample

    path = tmp_path_factory.mktemp("sample") / f"sample-v{request.param}.zarr"
    write_sample(str(path), levels=5, grid=(37, 72), times=3, zarr_format=request.param)
    return str(path)


@pytest.fixture(scope="session")
def sample_v2(tmp_path_factory) -> str:
    from layerquantizer.dataset import write_sample

    path = tmp_path_factory.mktemp("sample") / "sample.zarr"
    write_sample(str(path), levels=5, grid=(37, 72), times=3, zarr_format=2)
    return str(path)


@pytest.fixture(scope="session")
def real_store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("real") / "eraint.zarr"
    real_dataset().to_zarr(path, mode="w-", consolidated=True, zarr_format=2)
    return str(path)


@pytest.fixture(scope="session")
def ensemble_store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ens") / "era5ens.zarr"
    ensemble_dataset().to_zarr(path, mode="w-", consolidated=False, zarr_format=3)
    return str(path)


def _tree_digest(path: str | Path) -> dict[str, bytes]:
    root = Path(path)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def tree_digest():
    """``tree_digest(path)``: every file under ``path`` with its bytes, to check that a
    source is never written."""
    return _tree_digest
