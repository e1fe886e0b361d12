"""The WeatherBench2 ERA5 schema, its full-size metadata-only store and the small sample
store with data (layerquantizer.synthetic), that the full-scale work is tested with."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from layerquantizer.synthetic import (
    WB2_KINDS,
    WB2_TIMES,
    WB13_LEVELS,
    wb2_sample_dataset,
    wb2_schema,
    write_wb2_metadata_store,
    write_wb2_sample_store,
)

# The data variables of
# gs://weatherbench2/datasets/era5/1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr
STORE_VARIABLES = """
10m_u_component_of_wind 10m_v_component_of_wind 10m_wind_speed 2m_dewpoint_temperature
2m_temperature above_ground ageostrophic_wind_speed angle_of_sub_gridscale_orography
anisotropy_of_sub_gridscale_orography boundary_layer_height divergence eddy_kinetic_energy
geopotential geopotential_at_surface geostrophic_wind_speed high_vegetation_cover
integrated_vapor_transport lake_cover land_sea_mask lapse_rate
leaf_area_index_high_vegetation leaf_area_index_low_vegetation low_vegetation_cover
mean_sea_level_pressure mean_surface_latent_heat_flux mean_surface_net_long_wave_radiation_flux
mean_surface_net_short_wave_radiation_flux mean_surface_sensible_heat_flux
mean_top_downward_short_wave_radiation_flux mean_top_net_long_wave_radiation_flux
mean_top_net_short_wave_radiation_flux mean_vertically_integrated_moisture_divergence
potential_vorticity relative_humidity sea_ice_cover sea_surface_temperature
slope_of_sub_gridscale_orography snow_depth soil_type specific_humidity
standard_deviation_of_filtered_subgrid_orography standard_deviation_of_orography
surface_pressure temperature total_cloud_cover total_column_vapor total_column_water
total_column_water_vapour total_precipitation_12hr total_precipitation_24hr
total_precipitation_6hr type_of_high_vegetation type_of_low_vegetation u_component_of_wind
v_component_of_wind vertical_velocity volumetric_soil_water_layer_1
volumetric_soil_water_layer_2 volumetric_soil_water_layer_3 volumetric_soil_water_layer_4
vorticity wind_speed
""".split()

STATIC = {
    "angle_of_sub_gridscale_orography", "anisotropy_of_sub_gridscale_orography",
    "geopotential_at_surface", "high_vegetation_cover", "lake_cover", "land_sea_mask",
    "low_vegetation_cover", "slope_of_sub_gridscale_orography", "soil_type",
    "standard_deviation_of_filtered_subgrid_orography", "standard_deviation_of_orography",
    "type_of_high_vegetation", "type_of_low_vegetation",
}  # fmt: skip
PRESSURE_LEVELS = {
    "above_ground", "ageostrophic_wind_speed", "divergence", "geopotential",
    "geostrophic_wind_speed", "lapse_rate", "potential_vorticity", "relative_humidity",
    "specific_humidity", "temperature", "u_component_of_wind", "v_component_of_wind",
    "vertical_velocity", "vorticity", "wind_speed",
}  # fmt: skip


# --------------------------------------------------------------------------------------
# The schema


def test_schema_lists_the_62_variables_of_the_store_with_their_dims():
    schema = wb2_schema()
    assert len(STORE_VARIABLES) == len(set(STORE_VARIABLES)) == 62
    assert list(schema) == sorted(STORE_VARIABLES)
    for name, var in schema.items():
        assert var.name == name
        assert var.dtype == "float32"
        assert var.kind in WB2_KINDS
        assert var.units
        if name in STATIC:
            assert var.dims == ("latitude", "longitude") and var.static
        elif name in PRESSURE_LEVELS:
            assert var.dims == ("time", "level", "latitude", "longitude")
        else:
            assert var.dims == ("time", "latitude", "longitude") and not var.static
    kinds = {var.kind for var in schema.values()}
    assert kinds == set(WB2_KINDS)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("temperature", "smooth"),
        ("2m_temperature", "surface"),
        ("total_precipitation_6hr", "heavy_tailed"),
        ("mean_surface_latent_heat_flux", "heavy_tailed"),
        ("sea_surface_temperature", "nan_over_land"),
        ("sea_ice_cover", "nan_over_land"),
        ("soil_type", "categorical"),
        ("type_of_high_vegetation", "categorical"),
        ("type_of_low_vegetation", "categorical"),
        ("land_sea_mask", "fraction"),
        ("geopotential_at_surface", "static"),
    ],
)
def test_schema_kinds(name, kind):
    assert wb2_schema()[name].kind == kind


def test_derived_variables_have_no_attributes_as_in_the_store():
    schema = wb2_schema()
    assert schema["wind_speed"].attrs == {}
    assert schema["wind_speed"].units == "m s**-1"
    assert schema["temperature"].attrs == {
        "long_name": "Temperature", "short_name": "t", "standard_name": "air_temperature",
        "units": "K",
    }  # fmt: skip


# --------------------------------------------------------------------------------------
# The full-size store, metadata only


@pytest.fixture(scope="module", params=[2, 3], ids=["zarr2", "zarr3"])
def metadata_store(request, tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("wb2meta") / "wb2.zarr"
    write_wb2_metadata_store(str(path), zarr_format=request.param)
    return path, request.param


def _open(path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata")
        return xr.open_zarr(path)


def test_metadata_store_opens_lazily_at_full_size(metadata_store):
    path, _ = metadata_store
    ds = _open(path)
    assert dict(ds.sizes) == {"time": 93_544, "level": 13, "latitude": 721, "longitude": 1440}
    assert sorted(ds.data_vars) == sorted(STORE_VARIABLES)
    assert ds.temperature.dims == ("time", "level", "latitude", "longitude")
    assert ds.temperature.data.chunksize == (1, 13, 721, 1440)
    assert ds["2m_temperature"].data.chunksize == (1, 721, 1440)
    assert ds.land_sea_mask.dims == ("latitude", "longitude")
    assert all(var.dtype == np.float32 for var in ds.data_vars.values())
    assert ds.time.values[0] == np.datetime64("1959-01-01T00")
    assert ds.time.values[-1] == np.datetime64("2023-01-10T18")
    assert len(np.unique(np.diff(ds.time.values))) == 1
    assert list(ds.level.values) == list(WB13_LEVELS)
    assert ds.latitude.values[0] == 90 and ds.latitude.values[-1] == -90
    assert ds.longitude.values[1] == 0.25
    assert ds.temperature.attrs["units"] == "K"
    # ~89 TB of float32 described in a few hundred kB of metadata and coordinates.
    assert ds.nbytes > 80e12
    assert sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) < 2e6


def test_metadata_store_has_no_data_chunks_and_reads_fill_values(metadata_store):
    path, zarr_format = metadata_store
    metadata = {".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"}
    data_files = [
        p for p in path.rglob("*")
        if p.is_file() and p.name not in metadata and p.parts[-2] not in metadata
    ]  # fmt: skip
    coordinate_dirs = {"time", "level", "latitude", "longitude"}
    assert {p.relative_to(path).parts[0] for p in data_files} <= coordinate_dirs
    assert np.isnan(_open(path).land_sea_mask.isel(latitude=0).values).all()
    if zarr_format == 2:
        consolidated = json.loads((path / ".zmetadata").read_text())["metadata"]
        assert consolidated["temperature/.zarray"]["compressor"]["cname"] == "lz4"
        assert consolidated["temperature/.zarray"]["shape"] == [WB2_TIMES, 13, 721, 1440]
    else:
        assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())


def test_metadata_store_refuses_an_existing_store(tmp_path):
    path = tmp_path / "wb2.zarr"
    write_wb2_metadata_store(str(path), times=8, grid=(5, 8))
    with pytest.raises(ValueError, match="already holds a Zarr store; pass overwrite=True"):
        write_wb2_metadata_store(str(path), times=8, grid=(5, 8))
    write_wb2_metadata_store(str(path), times=4, grid=(5, 8), overwrite=True)
    assert _open(path).sizes["time"] == 4


# --------------------------------------------------------------------------------------
# The small store with data


@pytest.fixture(scope="module")
def sample() -> xr.Dataset:
    return wb2_sample_dataset(times=3, grid=(37, 72), seed=3)


def test_sample_has_the_schema(sample):
    schema = wb2_schema()
    assert list(sample.data_vars) == list(schema)
    assert dict(sample.sizes) == {"time": 3, "level": 13, "latitude": 37, "longitude": 72}
    for name, var in schema.items():
        assert sample[name].dims == var.dims, name
        assert sample[name].dtype == np.float32, name
        assert sample[name].attrs == var.attrs, name


def test_sample_is_reproducible(sample):
    again = wb2_sample_dataset(times=3, grid=(37, 72), seed=3)
    xr.testing.assert_identical(sample, again)
    other = wb2_sample_dataset(times=3, grid=(37, 72), seed=4)
    assert not np.array_equal(sample.temperature.values, other.temperature.values)


def _names(kind: str) -> list[str]:
    return [name for name, var in wb2_schema().items() if var.kind == kind]


def test_sample_values_of_each_kind(sample):
    land = sample.land_sea_mask.values
    assert 0.2 < (land > 0.5).mean() < 0.4  # about 29% of cells are land
    assert ((land > 0) & (land < 1)).any()  # fractional coasts
    for name in _names("smooth") + _names("surface"):
        values = sample[name].values
        assert np.isfinite(values).all(), name
        assert values.std() > 0, name
    for name in _names("smooth"):
        # Smooth in longitude: neighbours differ far less than the range.
        values = sample[name].values
        steps = np.abs(np.diff(values, axis=-1)).mean()
        assert steps < 0.2 * (values.max() - values.min()), name
    for name in _names("heavy_tailed"):
        values = sample[name].values
        assert np.isfinite(values).all(), name
    for name in ("total_precipitation_6hr", "total_precipitation_12hr", "total_precipitation_24hr",
                 "snow_depth", "mean_top_downward_short_wave_radiation_flux"):  # fmt: skip
        values = sample[name].values
        assert values.min() == 0 and (values == 0).mean() > 0.3, name  # exact zeros
    rain = sample.total_precipitation_6hr.values
    wet = rain[rain > 0]
    assert wet.max() > 10 * np.median(wet)  # a long tail
    night = sample.mean_top_downward_short_wave_radiation_flux.values == 0
    assert 0.3 < night.mean() < 0.7
    for name in _names("nan_over_land"):
        values = sample[name].values
        assert (np.isnan(values) == (land > 0.5)).all(), name
    sea_ice = sample.sea_ice_cover.values
    assert np.nanmin(sea_ice) == 0 and np.nanmax(sea_ice) <= 1
    for name in _names("categorical"):
        values = sample[name].values
        assert (values == np.round(values)).all(), name
        assert values.min() == 0 and len(np.unique(values)) >= 4, name
        assert (values[land == 0] == 0).all(), name
    for name in _names("fraction"):
        values = sample[name].values
        assert values.min() >= 0 and values.max() <= 1, name
    assert set(np.unique(sample.above_ground.values)) == {0.0, 1.0}
    assert sample.above_ground.sel(level=50).values.all()
    for name in _names("static"):
        assert sample[name].dims == ("latitude", "longitude"), name
        assert np.isfinite(sample[name].values).all(), name
    assert (sample.geopotential_at_surface.values[land == 0] == 0).all()


def test_sample_store_is_written_as_weatherbench2_writes(tmp_path):
    path = tmp_path / "sample.zarr"
    ds = write_wb2_sample_store(str(path), times=2, grid=(19, 36))
    opened = xr.open_zarr(path)
    xr.testing.assert_identical(opened.compute(), ds)
    assert opened.temperature.data.chunksize == (1, 13, 19, 36)
    assert opened.soil_type.data.chunksize == (19, 36)
    zarray = json.loads((path / "temperature" / ".zarray").read_text())
    assert zarray["compressor"]["id"] == "blosc" and zarray["compressor"]["cname"] == "lz4"
    assert (path / ".zmetadata").exists()


def test_importing_the_package_and_synthetic_loads_no_xarray():
    code = (
        "import sys, layerquantizer, layerquantizer.synthetic\n"
        "print(sorted(m for m in ('xarray', 'dask', 'gcsfs', 'zarr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "xarray" not in out.stdout and "dask" not in out.stdout and "gcsfs" not in out.stdout


def test_single_level_fields_alone_are_the_same_as_with_the_pressure_levels():
    # Benchmarks make the single-level fields at full size without the 3-D ones.
    from layerquantizer.synthetic import _wb2_static, _wb2_time_step

    static = _wb2_static((19, 36), seed=1)
    everything = _wb2_time_step(2, (19, 36), static, seed=1)
    single = _wb2_time_step(2, (19, 36), static, seed=1, pressure_levels=False)
    assert "temperature" not in single and "2m_temperature" in single
    for name, values in single.items():
        np.testing.assert_array_equal(values, everything[name], err_msg=name)


def test_metadata_store_with_data_at_some_time_steps(tmp_path):
    path = tmp_path / "wb2.zarr"
    write_wb2_metadata_store(str(path), times=10, grid=(5, 8), data_time_steps=[2, 7])
    ds = _open(path)
    assert (ds.temperature.isel(time=[2, 7]).values == 280).all()
    assert np.isnan(ds.temperature.isel(time=[0, 3, 9]).values).all()
    assert (ds.soil_type.values == 1).all()  # static chunks written as well
    with pytest.raises(ValueError, match=r"data_time_steps must lie in \[0, 10\)"):
        write_wb2_metadata_store(str(tmp_path / "x.zarr"), times=10, data_time_steps=[10])
