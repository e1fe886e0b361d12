"""Synthetic ERA5-like fields for tests, benchmarks and ``lq sample``.

The fields imitate what makes real reanalysis data compress the way it does: a smooth
large-scale structure (a zonal-mean profile that depends on latitude and pressure level),
plus random waves whose power falls off with wavenumber like the atmosphere's
(about ``k**-3`` in kinetic energy, so ``k**-4`` in 2-D power), correlated between
neighbouring levels, periodic in longitude. Only NumPy is needed.

Example
-------
>>> from layerquantizer.synthetic import era5_like_field, WB2_LEVELS
>>> t = era5_like_field("temperature", levels=WB2_LEVELS[-3:], grid=(73, 144), seed=1)
>>> t.shape, t.dtype
((3, 73, 144), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The 37 pressure levels (hPa) of the WeatherBench2 ERA5 stores.
WB2_LEVELS: tuple[int, ...] = (
    1, 2, 3, 5, 7, 10, 20, 30, 50, 70, 100, 125, 150, 175, 200, 225, 250, 300, 350, 400,
    450, 500, 550, 600, 650, 700, 750, 775, 800, 825, 850, 875, 900, 925, 950, 975, 1000,
)  # fmt: skip

#: Variables this module knows, with their WeatherBench2 names.
PRESSURE_LEVEL_VARIABLES: tuple[str, ...] = (
    "geopotential",
    "temperature",
    "u_component_of_wind",
    "v_component_of_wind",
    "specific_humidity",
    "vertical_velocity",
)
SURFACE_VARIABLES: tuple[str, ...] = (
    "2m_temperature",
    "mean_sea_level_pressure",
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
)

# Spectral slope of the 2-D power density and the share of variance the waves carry
# at the smallest scales: chosen so that the original codec reaches ratios in the range
# it reaches on ERA5 at 0.25 degree (3-5x at 16 bits).
_SLOPE = 4.0
_SCALE_HEIGHT_M = 7400.0
_G = 9.80665


def latitudes(n: int) -> np.ndarray:
    """Latitudes from 90 to -90 degrees, ``n`` points, as on the WeatherBench2 grids."""
    return np.linspace(90.0, -90.0, n)


def longitudes(n: int) -> np.ndarray:
    """Longitudes from 0 to 360 degrees (exclusive), ``n`` points."""
    return np.arange(n) * (360.0 / n)


def random_waves(
    nlayers: int, grid: tuple[int, int], rng: np.random.Generator, correlation: float = 0.9
) -> np.ndarray:
    """Unit-variance random fields with a ``k**-4`` power spectrum, float64.

    Consecutive layers are correlated (an AR(1) process along the first axis with the
    given ``correlation``), as neighbouring pressure levels are.
    """
    ny, nx = grid
    ky = np.fft.fftfreq(ny)[:, None] * (ny / nx)  # same physical wavenumber units both ways
    kx = np.fft.rfftfreq(nx)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = np.inf  # no mean: the profile carries it
    amplitude = np.maximum(k, 1.0 / nx) ** (-_SLOPE / 2)
    amplitude[0, 0] = 0.0
    out = np.empty((nlayers, ny, nx))
    coeffs = np.zeros((ny, nx // 2 + 1), complex)
    innovation = np.sqrt(1.0 - correlation**2)
    for layer in range(nlayers):
        fresh = rng.standard_normal(coeffs.shape) + 1j * rng.standard_normal(coeffs.shape)
        coeffs = (
            fresh * amplitude
            if layer == 0
            else correlation * coeffs + innovation * (fresh * amplitude)
        )
        field = np.fft.irfft2(coeffs, s=(ny, nx))
        out[layer] = field / field.std()
    return out


def _profile(variable: str, lat: np.ndarray, level_hpa: float) -> tuple[np.ndarray, float]:
    """Zonal-mean profile (over latitude) and the amplitude of the waves at one level."""
    coslat = np.cos(np.deg2rad(lat))
    height = _SCALE_HEIGHT_M * np.log(1013.25 / level_hpa)  # metres, roughly
    if variable == "geopotential":
        mean = _G * height * (1.0 + 0.02 * (coslat**2 - 0.5))
        return mean, 40.0 + 6.0 * height / 1000.0 * _G
    if variable == "temperature":
        tropo = np.clip(288.0 - 6.5e-3 * height, 216.0, None)
        strat = 216.0 + 2.5e-3 * np.clip(height - 20000.0, 0.0, None)
        base = np.where(height > 20000.0, strat, tropo)
        return base + 25.0 * (coslat**2 - 0.6) * np.exp(-height / 12000.0), 6.0
    if variable == "u_component_of_wind":
        jet = np.exp(-(((np.abs(lat) - 40.0) / 12.0) ** 2))
        strength = 10.0 + 30.0 * np.exp(-(((level_hpa - 225.0) / 200.0) ** 2))
        return strength * jet - 5.0 * coslat**8, 5.0 + strength / 4.0
    if variable == "v_component_of_wind":
        return np.zeros_like(lat), 4.0 + 6.0 * np.exp(-(((level_hpa - 250.0) / 250.0) ** 2))
    if variable == "specific_humidity":
        q = 0.018 * coslat**3 * np.exp(-height / 2500.0) + 2.5e-6
        return q, 0.0  # waves enter multiplicatively, see era5_like_field
    if variable == "vertical_velocity":
        return np.zeros_like(lat), 0.05 + 0.25 * level_hpa / 1000.0
    if variable == "2m_temperature":
        return 258.0 + 45.0 * coslat**2, 5.0
    if variable == "mean_sea_level_pressure":
        return 101325.0 - 1500.0 * np.cos(np.deg2rad(3.0 * lat)), 1200.0
    if variable in ("10m_u_component_of_wind", "10m_v_component_of_wind"):
        return -3.0 * np.cos(np.deg2rad(2.0 * lat)), 4.0
    raise ValueError(
        f"unknown variable {variable!r}; known: "
        f"{', '.join(PRESSURE_LEVEL_VARIABLES + SURFACE_VARIABLES)}"
    )


def era5_like_field(
    variable: str = "temperature",
    levels: Sequence[float] | None = WB2_LEVELS,
    grid: tuple[int, int] = (721, 1440),
    seed: int = 0,
) -> np.ndarray:
    """One time step of an ERA5-like variable, float32, shaped ``(level, lat, lon)``.

    Parameters
    ----------
    variable : str
        A name from :data:`PRESSURE_LEVEL_VARIABLES` or :data:`SURFACE_VARIABLES`.
    levels : sequence of float or None
        Pressure levels in hPa; ``None`` for a surface variable, giving ``(lat, lon)``.
    grid : (int, int)
        Number of latitudes and longitudes.
    seed : int
        Seed of the random waves; the same seed gives the same field.

    Examples
    --------
    >>> era5_like_field("2m_temperature", levels=None, grid=(7, 12)).shape
    (7, 12)
    """
    rng = np.random.default_rng(seed)
    lat = latitudes(grid[0])
    level_list = [1000.0] if levels is None else [float(p) for p in levels]
    waves = random_waves(len(level_list), grid, rng)
    out = np.empty((len(level_list), *grid), np.float32)
    for index, level in enumerate(level_list):
        mean, amplitude = _profile(variable, lat, level)
        if variable == "specific_humidity":
            field = mean[:, None] * np.exp(0.6 * waves[index])
        else:
            field = mean[:, None] + amplitude * waves[index]
        out[index] = field
    return out[0] if levels is None else out


#: The 13 pressure levels (hPa) of the WeatherBench2 "wb13" stores.
WB13_LEVELS: tuple[int, ...] = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)

_UNITS = {
    "geopotential": "m**2 s**-2",
    "temperature": "K",
    "u_component_of_wind": "m s**-1",
    "v_component_of_wind": "m s**-1",
    "specific_humidity": "kg kg**-1",
    "vertical_velocity": "Pa s**-1",
    "2m_temperature": "K",
    "mean_sea_level_pressure": "Pa",
    "10m_u_component_of_wind": "m s**-1",
    "10m_v_component_of_wind": "m s**-1",
}


def sample_levels(count: int) -> tuple[int, ...]:
    """``count`` pressure levels out of :data:`WB2_LEVELS`, spread from top to bottom.

    37 gives all of them and 13 the WeatherBench2 "wb13" set; other counts take evenly
    spaced indices, always including 1000 hPa.

    >>> sample_levels(3)
    (1, 350, 1000)
    """
    if not 1 <= count <= len(WB2_LEVELS):
        raise ValueError(f"levels must be between 1 and {len(WB2_LEVELS)}, got {count}")
    if count == len(WB13_LEVELS):
        return WB13_LEVELS
    if count == 1:
        return (WB2_LEVELS[-1],)
    indices = np.linspace(0, len(WB2_LEVELS) - 1, count).round().astype(int)
    return tuple(WB2_LEVELS[i] for i in indices)


def sample_dataset(
    levels: int | Sequence[float] = 13,
    grid: tuple[int, int] = (121, 240),
    times: int = 4,
    variables: Sequence[str] | None = None,
    seed: int = 0,
    lazy: bool = False,
):
    """A synthetic ERA5-like :class:`xarray.Dataset` with WeatherBench2 names and dims.

    Pressure-level variables are ``(time, level, latitude, longitude)``, surface variables
    ``(time, latitude, longitude)``, all float32; ``time`` is 6-hourly from 2020-01-01,
    ``level`` in hPa, ``latitude`` from 90 to -90, ``longitude`` from 0 (exclusive of 360).
    Each time step has its own random waves.

    Parameters
    ----------
    levels : int or sequence of float
        A number of levels (see :func:`sample_levels`) or the levels themselves, in hPa.
    grid : (int, int)
        Number of latitudes and longitudes.
    times : int
        Number of time steps.
    variables : sequence of str, optional
        Default: every name in :data:`PRESSURE_LEVEL_VARIABLES` and :data:`SURFACE_VARIABLES`.
    seed : int
        Base seed; the same arguments give the same dataset.
    lazy : bool
        Return dask arrays, one chunk per time step and variable, generated when computed
        (needs dask); memory then stays at a few time steps even for full-size grids.

    Examples
    --------
    >>> ds = sample_dataset(levels=3, grid=(19, 36), times=2, variables=["temperature"])
    >>> dict(ds.sizes), ds.temperature.dtype.name
    ({'time': 2, 'level': 3, 'latitude': 19, 'longitude': 36}, 'float32')
    """
    import xarray as xr  # optional dependency, imported only here

    level_values = sample_levels(levels) if isinstance(levels, int) else tuple(levels)
    if times < 1:
        raise ValueError(f"times must be at least 1, got {times}")
    if min(grid) < 2:
        raise ValueError(f"grid must have at least 2 latitudes and 2 longitudes, got {grid}")
    names = (
        tuple(variables)
        if variables is not None
        else (PRESSURE_LEVEL_VARIABLES + SURFACE_VARIABLES)
    )
    known = PRESSURE_LEVEL_VARIABLES + SURFACE_VARIABLES
    for name in names:
        if name not in known:
            raise ValueError(f"unknown variable {name!r}; known: {', '.join(known)}")

    def one_step(name: str, step: int) -> np.ndarray:
        # Distinct, reproducible seeds per (variable, time step).
        index = known.index(name)
        field_levels = level_values if name in PRESSURE_LEVEL_VARIABLES else None
        return era5_like_field(name, field_levels, grid, seed=seed * 100_003 + step * 101 + index)

    data_vars = {}
    for name in names:
        surface = name in SURFACE_VARIABLES
        dims = (
            ("time", "latitude", "longitude")
            if surface
            else ("time", "level", "latitude", "longitude")
        )
        step_shape = grid if surface else (len(level_values), *grid)
        if lazy:
            import dask
            import dask.array as da

            steps = [
                da.from_delayed(
                    dask.delayed(one_step, pure=True)(name, step), step_shape, np.float32
                )
                for step in range(times)
            ]
            data = da.stack(steps)
        else:
            data = np.stack([one_step(name, step) for step in range(times)])
        data_vars[name] = xr.Variable(dims, data, attrs={"units": _UNITS[name]})

    coords = {
        "time": np.datetime64("2020-01-01T00", "ns") + np.arange(times) * np.timedelta64(6, "h"),
        "level": ("level", np.asarray(level_values, np.int64), {"units": "hPa"}),
        "latitude": ("latitude", latitudes(grid[0]), {"units": "degrees_north"}),
        "longitude": ("longitude", longitudes(grid[1]), {"units": "degrees_east"}),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    if all(name in SURFACE_VARIABLES for name in names):
        ds = ds.drop_vars("level")
    ds.attrs["title"] = "Synthetic ERA5-like sample (layerquantizer.synthetic.sample_dataset)"
    return ds


# --------------------------------------------------------------------------------------
# The WeatherBench2 ERA5 store at full scale:
# gs://weatherbench2/datasets/era5/1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr

#: Time steps of that store: 6-hourly from 1959-01-01T00 to 2023-01-10T18.
WB2_TIMES = 93_544
#: Its grid: 0.25 degree, latitudes from 90 to -90 (poles included), longitudes from 0.
WB2_GRID: tuple[int, int] = (721, 1440)
#: Where its time coordinate starts.
WB2_START = np.datetime64("1959-01-01T00", "ns")

_TIME_DIMS = {
    "3d": ("time", "level", "latitude", "longitude"),
    "2d": ("time", "latitude", "longitude"),
    "static": ("latitude", "longitude"),
}

#: The kinds of field :func:`wb2_schema` tells apart, by what matters to a codec.
WB2_KINDS: tuple[str, ...] = (
    "smooth",  # pressure-level fields with a smooth large-scale structure
    "surface",  # smooth time-dependent single-level fields (some zero over sea)
    "heavy_tailed",  # precipitation, fluxes, snow: exact zeros and long tails
    "nan_over_land",  # sea-only fields: NaN where the land-sea mask is over one half
    "categorical",  # small integer classes stored as float32, 0 over sea
    "fraction",  # masks and fractions in [0, 1]
    "static",  # continuous fields without a time dimension (orography)
)


class WB2Variable:
    """One data variable of the WeatherBench2 ERA5 store, as :func:`wb2_schema` lists it.

    Attributes
    ----------
    name : str
    dims : tuple of str
        ``(time, level, latitude, longitude)``, ``(time, latitude, longitude)`` or, for
        static fields, ``(latitude, longitude)``.
    dtype : str
        ``"float32"`` for every variable, categorical ones included, as in the store.
    units : str
        Physical units (also of the derived variables, whose attributes the store leaves
        empty).
    kind : str
        One of :data:`WB2_KINDS`.
    attrs : dict
        The attributes the store has: ``long_name``, ``short_name``, ``units`` and
        sometimes ``standard_name`` for ERA5 variables, none for the derived ones.
    """

    __slots__ = ("attrs", "dims", "dtype", "kind", "name", "units")

    def __init__(self, name: str, dims: tuple[str, ...], units: str, kind: str, attrs: dict):
        self.name, self.dims, self.units, self.kind = name, dims, units, kind
        self.dtype = "float32"
        self.attrs = attrs

    @property
    def static(self) -> bool:
        """True for fields without a time dimension."""
        return "time" not in self.dims

    def __repr__(self) -> str:
        return f"WB2Variable({self.name!r}, dims={self.dims}, kind={self.kind!r})"


# name: (dims, units, kind); dims "3d" is (time, level, latitude, longitude), "2d"
# (time, latitude, longitude), "static" (latitude, longitude).
_WB2_VARIABLES: dict[str, tuple[str, str, str]] = {
    "10m_u_component_of_wind": ("2d", "m s**-1", "surface"),
    "10m_v_component_of_wind": ("2d", "m s**-1", "surface"),
    "10m_wind_speed": ("2d", "m s**-1", "surface"),
    "2m_dewpoint_temperature": ("2d", "K", "surface"),
    "2m_temperature": ("2d", "K", "surface"),
    "above_ground": ("3d", "(0 - 1)", "fraction"),
    "ageostrophic_wind_speed": ("3d", "m s**-1", "smooth"),
    "angle_of_sub_gridscale_orography": ("static", "radians", "static"),
    "anisotropy_of_sub_gridscale_orography": ("static", "~", "fraction"),
    "boundary_layer_height": ("2d", "m", "surface"),
    "divergence": ("3d", "s**-1", "smooth"),
    "eddy_kinetic_energy": ("2d", "J m**-2", "surface"),
    "geopotential": ("3d", "m**2 s**-2", "smooth"),
    "geopotential_at_surface": ("static", "m**2 s**-2", "static"),
    "geostrophic_wind_speed": ("3d", "m s**-1", "smooth"),
    "high_vegetation_cover": ("static", "(0 - 1)", "fraction"),
    "integrated_vapor_transport": ("2d", "kg m**-1 s**-1", "surface"),
    "lake_cover": ("static", "(0 - 1)", "fraction"),
    "land_sea_mask": ("static", "(0 - 1)", "fraction"),
    "lapse_rate": ("3d", "K m**-1", "smooth"),
    "leaf_area_index_high_vegetation": ("2d", "m**2 m**-2", "surface"),
    "leaf_area_index_low_vegetation": ("2d", "m**2 m**-2", "surface"),
    "low_vegetation_cover": ("static", "(0 - 1)", "fraction"),
    "mean_sea_level_pressure": ("2d", "Pa", "surface"),
    "mean_surface_latent_heat_flux": ("2d", "W m**-2", "heavy_tailed"),
    "mean_surface_net_long_wave_radiation_flux": ("2d", "W m**-2", "heavy_tailed"),
    "mean_surface_net_short_wave_radiation_flux": ("2d", "W m**-2", "heavy_tailed"),
    "mean_surface_sensible_heat_flux": ("2d", "W m**-2", "heavy_tailed"),
    "mean_top_downward_short_wave_radiation_flux": ("2d", "W m**-2", "heavy_tailed"),
    "mean_top_net_long_wave_radiation_flux": ("2d", "W m**-2", "heavy_tailed"),
    "mean_top_net_short_wave_radiation_flux": ("2d", "W m**-2", "heavy_tailed"),
    "mean_vertically_integrated_moisture_divergence": ("2d", "kg m**-2 s**-1", "heavy_tailed"),
    "potential_vorticity": ("3d", "K m**2 kg**-1 s**-1", "smooth"),
    "relative_humidity": ("3d", "(0 - 1)", "smooth"),
    "sea_ice_cover": ("2d", "(0 - 1)", "nan_over_land"),
    "sea_surface_temperature": ("2d", "K", "nan_over_land"),
    "slope_of_sub_gridscale_orography": ("static", "~", "static"),
    "snow_depth": ("2d", "m of water equivalent", "heavy_tailed"),
    "soil_type": ("static", "~", "categorical"),
    "specific_humidity": ("3d", "kg kg**-1", "smooth"),
    "standard_deviation_of_filtered_subgrid_orography": ("static", "m", "static"),
    "standard_deviation_of_orography": ("static", "m", "static"),
    "surface_pressure": ("2d", "Pa", "surface"),
    "temperature": ("3d", "K", "smooth"),
    "total_cloud_cover": ("2d", "(0 - 1)", "fraction"),
    "total_column_vapor": ("2d", "kg m**-2", "surface"),
    "total_column_water": ("2d", "kg m**-2", "surface"),
    "total_column_water_vapour": ("2d", "kg m**-2", "surface"),
    "total_precipitation_12hr": ("2d", "m", "heavy_tailed"),
    "total_precipitation_24hr": ("2d", "m", "heavy_tailed"),
    "total_precipitation_6hr": ("2d", "m", "heavy_tailed"),
    "type_of_high_vegetation": ("static", "~", "categorical"),
    "type_of_low_vegetation": ("static", "~", "categorical"),
    "u_component_of_wind": ("3d", "m s**-1", "smooth"),
    "v_component_of_wind": ("3d", "m s**-1", "smooth"),
    "vertical_velocity": ("3d", "Pa s**-1", "smooth"),
    "vorticity": ("3d", "s**-1", "smooth"),
    "wind_speed": ("3d", "m s**-1", "smooth"),
    **{f"volumetric_soil_water_layer_{i}": ("2d", "m**3 m**-3", "fraction") for i in (1, 2, 3, 4)},
}
# The attributes of the ERA5 variables: (long_name, short_name[, standard_name]). The
# derived variables (not listed) have none in the store.
_WB2_ERA5_ATTRS: dict[str, tuple[str, ...]] = {
    "10m_u_component_of_wind": ("10 metre U wind component", "u10"),
    "10m_v_component_of_wind": ("10 metre V wind component", "v10"),
    "2m_dewpoint_temperature": ("2 metre dewpoint temperature", "d2m"),
    "2m_temperature": ("2 metre temperature", "t2m"),
    "angle_of_sub_gridscale_orography": ("Angle of sub-gridscale orography", "anor"),
    "anisotropy_of_sub_gridscale_orography": ("Anisotropy of sub-gridscale orography", "isor"),
    "boundary_layer_height": ("Boundary layer height", "blh"),
    "geopotential": ("Geopotential", "z", "geopotential"),
    "geopotential_at_surface": ("Geopotential", "z", "geopotential"),
    "high_vegetation_cover": ("High vegetation cover", "cvh"),
    "lake_cover": ("Lake cover", "cl"),
    "land_sea_mask": ("Land-sea mask", "lsm", "land_binary_mask"),
    "leaf_area_index_high_vegetation": ("Leaf area index, high vegetation", "lai_hv"),
    "leaf_area_index_low_vegetation": ("Leaf area index, low vegetation", "lai_lv"),
    "low_vegetation_cover": ("Low vegetation cover", "cvl"),
    "mean_sea_level_pressure": ("Mean sea level pressure", "msl", "air_pressure_at_mean_sea_level"),
    "mean_surface_latent_heat_flux": ("Mean surface latent heat flux", "mslhf"),
    "mean_surface_net_long_wave_radiation_flux": (
        "Mean surface net long-wave radiation flux",
        "msnlwrf",
    ),
    "mean_surface_net_short_wave_radiation_flux": (
        "Mean surface net short-wave radiation flux",
        "msnswrf",
    ),
    "mean_surface_sensible_heat_flux": ("Mean surface sensible heat flux", "msshf"),
    "mean_top_downward_short_wave_radiation_flux": (
        "Mean top downward short-wave radiation flux",
        "mtdwswrf",
    ),
    "mean_top_net_long_wave_radiation_flux": ("Mean top net long-wave radiation flux", "mtnlwrf"),
    "mean_top_net_short_wave_radiation_flux": ("Mean top net short-wave radiation flux", "mtnswrf"),
    "mean_vertically_integrated_moisture_divergence": (
        "Mean vertically integrated moisture divergence",
        "mvimd",
    ),
    "potential_vorticity": ("Potential vorticity", "pv"),
    "sea_ice_cover": ("Sea ice area fraction", "siconc", "sea_ice_area_fraction"),
    "sea_surface_temperature": ("Sea surface temperature", "sst"),
    "slope_of_sub_gridscale_orography": ("Slope of sub-gridscale orography", "slor"),
    "snow_depth": ("Snow depth", "sd", "lwe_thickness_of_surface_snow_amount"),
    "soil_type": ("Soil type", "slt"),
    "specific_humidity": ("Specific humidity", "q", "specific_humidity"),
    "standard_deviation_of_filtered_subgrid_orography": (
        "Standard deviation of filtered subgrid orography",
        "sdfor",
    ),
    "standard_deviation_of_orography": ("Standard deviation of orography", "sdor"),
    "surface_pressure": ("Surface pressure", "sp", "surface_air_pressure"),
    "temperature": ("Temperature", "t", "air_temperature"),
    "total_cloud_cover": ("Total cloud cover", "tcc", "cloud_area_fraction"),
    "total_column_water": ("Total column water", "tcw"),
    "total_column_water_vapour": (
        "Total column vertically-integrated water vapour",
        "tcwv",
        "lwe_thickness_of_atmosphere_mass_content_of_water_vapor",
    ),
    "total_precipitation_12hr": ("Total precipitation", "tp"),
    "total_precipitation_24hr": ("Total precipitation", "tp"),
    "total_precipitation_6hr": ("Total precipitation", "tp"),
    "type_of_high_vegetation": ("Type of high vegetation", "tvh"),
    "type_of_low_vegetation": ("Type of low vegetation", "tvl"),
    "u_component_of_wind": ("U component of wind", "u", "eastward_wind"),
    "v_component_of_wind": ("V component of wind", "v", "northward_wind"),
    "vertical_velocity": ("Vertical velocity", "w", "lagrangian_tendency_of_air_pressure"),
    **{
        f"volumetric_soil_water_layer_{i}": (f"Volumetric soil water layer {i}", f"swvl{i}")
        for i in (1, 2, 3, 4)
    },
}


def wb2_schema() -> dict[str, WB2Variable]:
    """The 62 data variables of the WeatherBench2 ERA5 store with derived variables.

    ``gs://weatherbench2/datasets/era5/1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr``
    as ``xr.open_zarr`` shows it: 15 on the 13 pressure levels, 34 single-level fields in
    time, 13 static fields; all float32, in the store's (alphabetical) order.

    Examples
    --------
    >>> schema = wb2_schema()
    >>> len(schema), schema["soil_type"].dims, schema["soil_type"].kind
    (62, ('latitude', 'longitude'), 'categorical')
    >>> sum(var.static for var in schema.values())
    13
    """
    schema = {}
    for name in sorted(_WB2_VARIABLES):
        dims, units, kind = _WB2_VARIABLES[name]
        attrs: dict[str, str] = {}
        if name in _WB2_ERA5_ATTRS:
            keys = ("long_name", "short_name", "standard_name")
            attrs = dict(zip(keys, _WB2_ERA5_ATTRS[name], strict=False))
            attrs["units"] = units
        schema[name] = WB2Variable(name, _TIME_DIMS[dims], units, kind, attrs)
    return schema


def _wb2_coordinates(times: int, grid: tuple[int, int], start: np.datetime64) -> dict:
    """Coordinate values of a WeatherBench2-like store: time, level, latitude, longitude."""
    return {
        "time": start + np.arange(times) * np.timedelta64(6, "h"),
        "level": np.asarray(WB13_LEVELS, np.int64),
        "latitude": latitudes(grid[0]).astype(np.float32),
        "longitude": longitudes(grid[1]).astype(np.float32),
    }


def _blosc_lz4(zarr_format: int):
    """The compressor the WeatherBench2 stores were written with (zarr 2's default)."""
    if zarr_format == 2:
        from numcodecs import Blosc

        return Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _consolidate(path: str, zarr_format: int) -> None:
    import warnings

    import zarr

    with warnings.catch_warnings():
        # Zarr v3 consolidated metadata is not in the spec yet: zarr says so each time.
        warnings.filterwarnings(
            "ignore", message=".*[Cc]onsolidated metadata", category=UserWarning
        )
        zarr.consolidate_metadata(path, zarr_format=zarr_format)


# Orders of magnitude by units, for the constant chunks of write_wb2_metadata_store.
_WB2_TYPICAL = {"K": 280.0, "Pa": 101325.0, "m**2 s**-2": 50000.0, "m s**-1": 10.0, "m": 0.001}


def write_wb2_metadata_store(
    path: str,
    zarr_format: int = 2,
    times: int = WB2_TIMES,
    grid: tuple[int, int] = WB2_GRID,
    overwrite: bool = False,
    data_time_steps: Sequence[int] = (),
) -> None:
    """Write the metadata of the full-size WeatherBench2 ERA5 store, without its chunks.

    Every array of :func:`wb2_schema` at its real shape (93,544 time steps x 13 levels x
    721 x 1440 by default, 60 TB of float32), one time step per chunk, Blosc-lz4 as in the
    store, fill value NaN; the coordinate arrays ``time`` (hours since 1959-01-01, int64),
    ``level``, ``latitude`` and ``longitude`` are written with their values; the metadata
    are consolidated, as in WeatherBench2. Reading a data variable gives NaN (no chunk
    exists), so the store tests planning and opening at full scale in a second or two.
    ``data_time_steps`` writes the chunks of a few time steps after all, so that a reader
    gets data there (and a writer, whose all-NaN chunks Zarr skips, writes chunks).

    Parameters
    ----------
    path : str
        A local path (or any URL zarr opens).
    zarr_format : {2, 3}
    times : int
        Number of time steps (default the store's).
    grid : (int, int)
        Latitudes and longitudes.
    overwrite : bool
        Replace whatever is at ``path``; otherwise an existing store is an error.
    data_time_steps : sequence of int
        Time indices whose chunks are written, each variable with a constant of its order
        of magnitude (cheap to write and to compress); the static fields' chunks are
        written too when any index is given.

    Examples
    --------
    >>> import tempfile, xarray as xr
    >>> path = f"{tempfile.mkdtemp()}/wb2.zarr"
    >>> write_wb2_metadata_store(path)
    >>> ds = xr.open_zarr(path)
    >>> ds.sizes["time"], ds.temperature.shape[1:], len(ds.data_vars)
    (93544, (13, 721, 1440), 62)
    """
    import zarr

    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if times < 1 or min(grid) < 2:
        raise ValueError(f"need times >= 1 and a grid of at least 2 x 2, got {times}, {grid}")
    try:
        group = zarr.open_group(path, mode="w" if overwrite else "w-", zarr_format=zarr_format)
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
        raise ValueError(
            f"{path} already holds a Zarr store; pass overwrite=True to replace it"
        ) from exc
    coords = _wb2_coordinates(times, grid, WB2_START)
    sizes = {"time": times, "level": len(WB13_LEVELS), "latitude": grid[0], "longitude": grid[1]}
    compressor = _blosc_lz4(zarr_format)

    def create(name: str, dims: tuple[str, ...], dtype, chunks, fill_value, attrs: dict):
        dims_kw = {"dimension_names": dims} if zarr_format == 3 else {}
        array = group.create_array(
            name,
            shape=tuple(sizes[d] for d in dims),
            chunks=chunks,
            dtype=dtype,
            fill_value=fill_value,
            compressors=[compressor],
            **dims_kw,
        )
        array.attrs.update(
            attrs if zarr_format == 3 else {**attrs, "_ARRAY_DIMENSIONS": list(dims)}
        )
        return array

    hours = ((coords["time"] - WB2_START) // np.timedelta64(1, "h")).astype(np.int64)
    time_attrs = {"units": "hours since 1959-01-01", "calendar": "proleptic_gregorian"}
    create("time", ("time",), np.int64, (times,), None, time_attrs)[...] = hours
    create("level", ("level",), np.int64, (len(WB13_LEVELS),), None, {})[...] = coords["level"]
    for name, units in (("latitude", "degrees_north"), ("longitude", "degrees_east")):
        attrs = {"long_name": name, "units": units}
        create(name, (name,), np.float32, (sizes[name],), None, attrs)[...] = coords[name]
    steps = sorted({int(step) for step in data_time_steps})
    if steps and not 0 <= steps[0] <= steps[-1] < times:
        raise ValueError(f"data_time_steps must lie in [0, {times}), got {list(data_time_steps)}")
    for var in wb2_schema().values():
        chunks = tuple(1 if d == "time" else sizes[d] for d in var.dims)
        array = create(var.name, var.dims, np.float32, chunks, np.nan, var.attrs)
        if steps and var.static:
            array[...] = _WB2_TYPICAL.get(var.units, 1.0)
        for step in steps if not var.static else ():
            array[step] = _WB2_TYPICAL.get(var.units, 1.0)
    _consolidate(path, zarr_format)


def _uniform(field: np.ndarray) -> np.ndarray:
    """The ranks of ``field`` scaled to [0, 1): a smooth field made uniformly distributed."""
    ranks = np.empty(field.size)
    ranks[np.argsort(field, axis=None, kind="stable")] = np.arange(field.size)
    return (ranks / field.size).reshape(field.shape)


def _classes(field: np.ndarray, count: int, where: np.ndarray) -> np.ndarray:
    """Integer classes 1..count in patches that follow ``field``, 0 outside ``where``."""
    return np.where(where, 1 + np.minimum((_uniform(field) * count).astype(int), count - 1), 0)


def _wb2_static(grid: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """The static fields, with the land fraction and the orography height the time
    steps use: a land mask covering 29% of the globe (Antarctica included), with
    fractional coasts, mountains and vegetation on land only."""
    rng = np.random.default_rng([seed, 7919])
    lat = latitudes(grid[0])[:, None] * np.ones(grid)
    coslat = np.cos(np.deg2rad(lat))
    waves = random_waves(12, grid, rng, correlation=0.0)
    continents = waves[0] + 3.0 * (lat < -70)
    above = continents - np.quantile(continents, 0.71)
    land = np.clip(above / 0.3 + 0.5, 0.0, 1.0)  # 0 at sea, 1 inland, fractions on coasts
    on_land = land > 0
    height = np.where(
        on_land, 700.0 * np.exp(0.7 * waves[1]) * np.clip(above, 0.0, 2.0), 0.0
    ) + 2500.0 * land * (lat < -70)
    sdor = np.where(on_land, 0.2 * height * np.exp(0.5 * waves[2]), 0.0)
    high = land * np.clip(0.35 + 0.4 * waves[7], 0.0, 1.0) * (np.abs(lat) < 70)
    low = np.minimum(land * np.clip(0.5 + 0.3 * waves[8], 0.0, 1.0), land - high)
    return {
        "land": land,
        "height": height,
        "land_sea_mask": land,
        "geopotential_at_surface": _G * height,
        "standard_deviation_of_orography": sdor,
        "standard_deviation_of_filtered_subgrid_orography": 0.4 * sdor * np.exp(0.3 * waves[3]),
        "slope_of_sub_gridscale_orography": np.where(
            on_land, np.clip(0.004 * np.exp(0.8 * waves[4]), 0.0, 0.15), 0.0
        ),
        "anisotropy_of_sub_gridscale_orography": np.where(
            on_land, np.clip(0.5 + 0.2 * waves[5], 0.0, 1.0), 0.0
        ),
        "angle_of_sub_gridscale_orography": np.where(
            on_land, np.clip(0.6 * waves[6], -np.pi / 2, np.pi / 2), 0.0
        ),
        "high_vegetation_cover": high,
        "low_vegetation_cover": low,
        "lake_cover": land * np.clip(2.0 * (waves[9] - 1.2), 0.0, 1.0),
        "soil_type": _classes(waves[10], 7, land > 0.5),
        "type_of_high_vegetation": _classes(waves[11], 19, high > 0),
        "type_of_low_vegetation": _classes(waves[11] + waves[9] * coslat, 20, low > 0),
    }


def _wb2_time_step(
    step: int,
    grid: tuple[int, int],
    static: dict[str, np.ndarray],
    seed: int,
    pressure_levels: bool = True,
) -> dict[str, np.ndarray]:
    """Every time-dependent variable of :func:`wb2_schema` at one time step (float64);
    with ``pressure_levels=False`` the single-level ones and ``above_ground`` only (the
    same values: what memory a full-size grid takes is then a few 2-D fields)."""
    lat = latitudes(grid[0])[:, None] * np.ones(grid)
    lon = longitudes(grid[1])[None, :] * np.ones(grid)
    coslat = np.cos(np.deg2rad(lat))
    land = static["land"]
    levels = np.asarray(WB13_LEVELS, float)[:, None, None]
    step_seed = seed * 100_003 + step * 101
    rng = np.random.default_rng([seed, step, 104729])
    w = random_waves(24, grid, rng, correlation=0.0)  # one unit-variance field per use
    out: dict[str, np.ndarray] = {}

    def era5(name: str, levels_: Sequence[float] | None, index: int) -> np.ndarray:
        return era5_like_field(name, levels_, grid, seed=step_seed + index).astype(np.float64)

    for index, name in enumerate(SURFACE_VARIABLES):
        out[name] = era5(name, None, 10 + index)
    pressure = 101325.0 * np.exp(-static["height"] / 8000.0) + 800.0 * w[0]
    out["surface_pressure"] = pressure
    out["above_ground"] = (levels * 100.0 < pressure).astype(np.float64)

    if pressure_levels:
        # Derived as WeatherBench2 derives them, in shape if not in physics.
        w3 = random_waves(len(WB13_LEVELS), grid, rng)  # correlated in the vertical
        for index, name in enumerate(PRESSURE_LEVEL_VARIABLES):
            out[name] = era5(name, WB13_LEVELS, index)
        u, v = out["u_component_of_wind"], out["v_component_of_wind"]
        out["wind_speed"] = np.hypot(u, v)
        geostrophic = np.hypot(u, v) * np.exp(0.3 * w3) / np.maximum(coslat, 0.2)
        out["geostrophic_wind_speed"] = geostrophic
        out["ageostrophic_wind_speed"] = 3.0 * np.exp(0.5 * w3[::-1])
        out["divergence"] = 1e-5 * (1.0 + levels / 1000.0) * w3
        out["vorticity"] = 1e-4 * np.sin(np.deg2rad(lat)) + 3e-5 * w3[::-1]
        pvu = 1e-6 * np.sin(np.deg2rad(lat)) * (0.5 + 10.0 * np.exp(-(levels - 50.0) / 120.0))
        out["potential_vorticity"] = pvu * (1.0 + 0.3 * w3)
        out["relative_humidity"] = np.clip(0.55 + 0.3 * w3, 0.0, 1.05)
        out["lapse_rate"] = 6.5e-3 + 1.5e-3 * w3 - 6e-3 * (levels < 200)

    # Single-level fields.
    t2m = out["2m_temperature"] - 6.5e-3 * static["height"]
    out["2m_temperature"] = t2m
    out["2m_dewpoint_temperature"] = t2m - np.abs(4.0 + 3.0 * w[1])
    out["10m_wind_speed"] = np.hypot(out["10m_u_component_of_wind"], out["10m_v_component_of_wind"])
    out["boundary_layer_height"] = 600.0 * np.exp(0.6 * w[2])
    out["eddy_kinetic_energy"] = 1e6 * np.exp(0.8 * w[3])
    tcwv = 2.0 + 30.0 * coslat**3 * np.exp(0.5 * w[4])
    out["total_column_water_vapour"] = tcwv
    out["total_column_vapor"] = tcwv * (1.0 + 0.01 * w[5])
    out["total_column_water"] = tcwv + 0.3 * np.exp(w[6])
    out["integrated_vapor_transport"] = 10.0 * tcwv * np.exp(0.5 * w[7])
    out["total_cloud_cover"] = np.clip(0.6 + 0.5 * w[8], 0.0, 1.0)
    season = 1.0 + 0.4 * np.sin(2 * np.pi * step / (4 * 365.25)) * np.sign(lat)
    out["leaf_area_index_high_vegetation"] = 4.0 * static["high_vegetation_cover"] * season
    out["leaf_area_index_low_vegetation"] = 2.5 * static["low_vegetation_cover"] * season
    for layer in (1, 2, 3, 4):
        soil = np.clip(0.25 + 0.1 * w[8 + layer] / layer, 0.01, 0.7)
        out[f"volumetric_soil_water_layer_{layer}"] = np.where(land > 0, soil, 0.0)
    snow = np.clip(np.abs(lat) - 50.0, 0.0, None) / 40.0 * np.exp(w[13]) - 0.2
    out["snow_depth"] = np.where(land > 0, np.clip(snow, 0.0, None), 0.0)

    # Heavy tails: precipitation (mostly exact zeros), fluxes, moisture divergence.
    for hours, index in ((6, 14), (12, 15), (24, 16)):
        rain = np.clip(w[index] - 0.5, 0.0, None) ** 3 * 2e-3 * hours / 6.0
        out[f"total_precipitation_{hours}hr"] = rain * (0.3 + coslat)
    hour = (step * 6) % 24
    declination = np.deg2rad(23.44) * np.sin(2 * np.pi * (step / 4 - 80) / 365.25)
    hour_angle = np.deg2rad((hour + lon / 15.0 - 12.0) * 15.0)
    cos_zenith = np.sin(np.deg2rad(lat)) * np.sin(declination) + coslat * np.cos(
        declination
    ) * np.cos(hour_angle)
    toa = 1361.0 * np.clip(cos_zenith, 0.0, None)
    out["mean_top_downward_short_wave_radiation_flux"] = toa
    albedo = np.clip(0.3 + 0.3 * out["total_cloud_cover"] - 0.3 + 0.05 * w[17], 0.05, 0.9)
    out["mean_top_net_short_wave_radiation_flux"] = toa * (1.0 - albedo)
    out["mean_surface_net_short_wave_radiation_flux"] = toa * (1.0 - albedo) * 0.7
    out["mean_top_net_long_wave_radiation_flux"] = -(150.0 + 110.0 * coslat**2 + 25.0 * w[18])
    out["mean_surface_net_long_wave_radiation_flux"] = -np.abs(60.0 + 25.0 * w[19])
    sea = 1.0 - land
    out["mean_surface_latent_heat_flux"] = -(5.0 + 100.0 * sea) * np.exp(0.8 * w[20])
    out["mean_surface_sensible_heat_flux"] = -15.0 + 30.0 * w[21] * np.abs(w[21])
    out["mean_vertically_integrated_moisture_divergence"] = 5e-5 * w[22] ** 3

    # Sea only: NaN where the grid cell is mostly land, as ERA5's ocean fields are.
    over_land = land > 0.5
    sst = 271.46 + 31.0 * coslat**2 + 1.5 * w[23]
    out["sea_surface_temperature"] = np.where(over_land, np.nan, np.maximum(sst, 271.46))
    ice = np.clip((np.abs(lat) - 62.0) / 12.0 + 0.3 * w[23], 0.0, 1.0)
    out["sea_ice_cover"] = np.where(over_land, np.nan, ice)
    return out


def wb2_sample_dataset(times: int = 4, grid: tuple[int, int] = (121, 240), seed: int = 0):
    """A small :class:`xarray.Dataset` with the schema of the WeatherBench2 ERA5 store.

    The 62 variables of :func:`wb2_schema`, with their dims, float32 dtype and attributes,
    on the 13 WeatherBench2 levels and a coarse grid (1.5 degree by default), filled with
    values of each kind: smooth fields on pressure levels and at the surface; exact zeros
    and long tails for precipitation, snow and fluxes (short-wave ones zero on the night
    side); NaN over land for sea surface temperature and sea ice; integer classes stored as
    float (0 over sea) for soil and vegetation types; fractions in [0, 1] for masks, covers
    and soil water; static fields without time. One land mask (29% of cells, fractional
    coasts) is shared by all. ``time`` is 6-hourly from 2020-01-01.

    Parameters
    ----------
    times : int
        Number of time steps.
    grid : (int, int)
        Number of latitudes (90 to -90) and longitudes.
    seed : int
        The same seed gives the same dataset.

    Examples
    --------
    >>> ds = wb2_sample_dataset(times=2, grid=(19, 36))
    >>> len(ds.data_vars), ds.temperature.shape
    (62, (2, 13, 19, 36))
    >>> ds.soil_type.dims, ds.soil_type.dtype.name
    (('latitude', 'longitude'), 'float32')
    """
    import xarray as xr  # optional dependency, imported only here

    if times < 1:
        raise ValueError(f"times must be at least 1, got {times}")
    if min(grid) < 2:
        raise ValueError(f"grid must have at least 2 latitudes and 2 longitudes, got {grid}")
    schema = wb2_schema()
    static = _wb2_static(grid, seed)
    steps = [_wb2_time_step(step, grid, static, seed) for step in range(times)]
    data_vars = {}
    for name, var in schema.items():
        values = static[name] if var.static else np.stack([step[name] for step in steps])
        data_vars[name] = xr.Variable(var.dims, values.astype(np.float32), attrs=dict(var.attrs))
    coords = _wb2_coordinates(times, grid, np.datetime64("2020-01-01T00", "ns"))
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": coords["time"],
            "level": ("level", coords["level"]),
            "latitude": (
                "latitude",
                coords["latitude"],
                {"long_name": "latitude", "units": "degrees_north"},
            ),
            "longitude": (
                "longitude",
                coords["longitude"],
                {"long_name": "longitude", "units": "degrees_east"},
            ),
        },
    )
    return ds


def write_wb2_sample_store(
    path: str,
    times: int = 4,
    grid: tuple[int, int] = (121, 240),
    seed: int = 0,
    zarr_format: int = 2,
):
    """Write :func:`wb2_sample_dataset` to ``path`` as WeatherBench2 stores it.

    One time step per chunk (static fields in one chunk), Blosc-lz4, consolidated
    metadata. Returns the dataset written. An existing store at ``path`` is an error.

    Examples
    --------
    >>> import tempfile, xarray as xr
    >>> path = f"{tempfile.mkdtemp()}/wb2-sample.zarr"
    >>> _ = write_wb2_sample_store(path, times=2, grid=(19, 36))
    >>> xr.open_zarr(path).land_sea_mask.chunks
    ((19,), (36,))
    """
    import warnings

    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    ds = wb2_sample_dataset(times=times, grid=grid, seed=seed)
    compressor = _blosc_lz4(zarr_format)
    encoding = {
        name: {
            "chunks": tuple(1 if d == "time" else ds.sizes[d] for d in var.dims),
            "compressors": [compressor],
        }
        for name, var in ds.data_vars.items()
    }
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*[Cc]onsolidated metadata", category=UserWarning
        )
        ds.to_zarr(path, mode="w-", encoding=encoding, consolidated=True, zarr_format=zarr_format)
    return ds
