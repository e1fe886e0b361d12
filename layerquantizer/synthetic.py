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
