"""``lq sample``: write a synthetic ERA5-like dataset with WeatherBench2 names and dims.

Example::

    lq sample sample.zarr --levels 37 --grid 1440x721 --times 2

Variables: geopotential, temperature, u/v_component_of_wind, specific_humidity and
vertical_velocity on (time, level, latitude, longitude); 2m_temperature,
mean_sea_level_pressure and 10m_u/v_component_of_wind on (time, latitude, longitude);
all float32, written losslessly in chunks of one time step.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli._common import (
    BreakLockOption,
    DebugOption,
    GcsTokenOption,
    JsonOption,
    WorkersOption,
    handle_errors,
    human_bytes,
    plural,
    print_json,
    stdout_console,
    usage_value,
)


def parse_grid(text: str) -> tuple[int, int]:
    """``"240x121"`` (longitudes x latitudes, as WeatherBench2 names its grids) ->
    ``(121, 240)`` (latitudes, longitudes)."""
    from layerquantizer.dataset import RequestError

    nlon, sep, nlat = text.lower().partition("x")
    try:
        lon, lat = int(nlon), int(nlat)
    except ValueError:
        lon = lat = 0
    if not sep or lon < 2 or lat < 2:
        raise RequestError(f"--grid: expected NLONxNLAT such as 240x121 or 1440x721, got {text!r}")
    return lat, lon


def sample(
    dst: Annotated[
        str,
        typer.Argument(metavar="DST", help="Destination store: a path or URL; must not exist."),
    ],
    levels: Annotated[
        int, typer.Option("--levels", help="Number of pressure levels, 1-37 (13: WeatherBench2's).")
    ] = 13,
    grid: Annotated[
        str, typer.Option("--grid", metavar="NLONxNLAT", help="Grid, e.g. 1440x721 (0.25 degree).")
    ] = "240x121",
    times: Annotated[
        int, typer.Option("--times", min=1, help="Number of 6-hourly time steps.")
    ] = 4,
    zarr_format: Annotated[
        int, typer.Option("--zarr-format", metavar="2|3", help="Zarr format.")
    ] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random waves.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing DST.")
    ] = False,
    workers: WorkersOption = None,
    break_lock: BreakLockOption = False,
    gcs_token: GcsTokenOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Write a synthetic ERA5-like dataset (smooth large-scale structure plus small-scale
    waves, level-dependent ranges, a few 2-D variables) to DST."""
    with handle_errors(debug):
        from layerquantizer import dataset

        ds = dataset.write_sample(
            dst,
            levels=levels,
            grid=parse_grid(grid),
            times=times,
            zarr_format=zarr_format,
            seed=seed,
            overwrite=overwrite,
            workers=workers,
            break_lock=break_lock,
            token=usage_value("--gcs-token", dataset.parse_gcs_token, gcs_token),
        )
    if json_output:
        print_json(
            {
                "dst": dst,
                "variables": sorted(map(str, ds.data_vars)),
                "sizes": {str(dim): int(size) for dim, size in ds.sizes.items()},
                "logical_bytes": int(ds.nbytes),
                "zarr_format": zarr_format,
            }
        )
        return
    sizes = ", ".join(f"{dim}={size}" for dim, size in ds.sizes.items())
    stdout_console().print(
        f"wrote {dst}: {plural(len(ds.data_vars), 'variable')}, {sizes}, {human_bytes(ds.nbytes)}"
    )
