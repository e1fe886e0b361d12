"""Which lossless codec for the fields ``lq compress`` copies: ratio and one-core speed.

``lq compress`` quantizes the variables its config names and copies every other one
losslessly: on the WeatherBench2 ERA5 store that is 2-D fields at float32 (2 m temperature,
pressures, precipitation, fluxes, ...), masks and fractions, categorical fields stored as
float, the static fields, and ``above_ground`` (13 levels of 0 and 1). The codecs compared,
each a numcodecs codec Zarr v2 stores as is (Zarr v3 through ``zarr.codecs.numcodecs`` or
its own ``BloscCodec``/``ZstdCodec``):

- ``blosc-lz4``: Blosc, lz4, clevel 5, byte shuffle: what the WeatherBench2 stores use (Zarr
  2's default), the reference of the relative columns;
- ``zstd-0``: numcodecs ``Zstd(level=0)``: zarr-python 3's default, so what ``lq`` writes
  today for the variables it copies (it sets no compressor for them);
- ``zstd-N``: numcodecs ``Zstd`` at other levels (no shuffle);
- ``blosc-zstd-N`` / ``blosc-zstd-N-bit``: Blosc with zstd at clevel N, byte / bit shuffle;
- ``pcodec-N``: ``numcodecs.pcodec.PCodec(level=N)`` (needs the ``bench`` extra's pcodec).

The fields: every array of ``../shared/data/real_fields.npz`` as one chunk (2-5 MB each,
like one time step of a 0.25-degree 2-D field), and one full-size time step (721 x 1440,
4 MiB; ``above_ground`` 13 x 721 x 1440) of each kind of :func:`layerquantizer.synthetic.
wb2_schema` that ``configs/era5.yaml`` leaves to be copied. The synthetic values carry all
23 bits of the float32 mantissa, where real ERA5 fields come out of GRIB packing on a
coarser grid: their ratios are lower bounds for the float fields (not for the categorical
ones and masks, which are exact integers either way).

Prints, for each group of fields and codec, the ratio (bytes in / bytes out over the group)
and the encode and decode speed in MiB/s of float32 on one core (process pinned, Blosc
single-threaded; best of ``--repeats`` runs, codecs interleaved), with speeds relative to
``blosc-lz4`` in the same run; then the ratio of each field for the main candidates. Every
decode is checked bit for bit (NaN included).

Example
-------
    python benchmarks/bench_lossless.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numcodecs
import numcodecs.blosc
import numpy as np

from layerquantizer.synthetic import WB2_GRID, _wb2_static, _wb2_time_step, wb2_schema

MIB = 2**20
REAL_FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_fields.npz"
REFERENCE = "blosc-lz4"

# One or a few variables of each kind that configs/era5.yaml copies losslessly.
SYNTHETIC = {
    "categorical": ["soil_type", "type_of_high_vegetation", "type_of_low_vegetation"],
    "mask/fraction": ["land_sea_mask", "high_vegetation_cover", "total_cloud_cover",
                      "volumetric_soil_water_layer_1", "sea_ice_cover", "above_ground"],
    "static": ["geopotential_at_surface", "standard_deviation_of_orography",
               "angle_of_sub_gridscale_orography"],
    "surface float32": ["2m_temperature", "mean_sea_level_pressure", "10m_u_component_of_wind",
                        "surface_pressure", "total_column_water_vapour",
                        "sea_surface_temperature"],
    "heavy-tailed": ["total_precipitation_6hr", "mean_top_downward_short_wave_radiation_flux",
                     "mean_surface_latent_heat_flux", "snow_depth"],
}  # fmt: skip


def candidate_codecs() -> dict[str, numcodecs.abc.Codec]:
    blosc = numcodecs.Blosc
    chosen: dict[str, numcodecs.abc.Codec] = {
        REFERENCE: blosc(cname="lz4", clevel=5, shuffle=blosc.SHUFFLE),
        "zstd-0": numcodecs.Zstd(level=0),
    }
    for level in (1, 3, 9):
        chosen[f"zstd-{level}"] = numcodecs.Zstd(level=level)
    for level in (1, 3, 5, 9):
        chosen[f"blosc-zstd-{level}"] = blosc(cname="zstd", clevel=level, shuffle=blosc.SHUFFLE)
        chosen[f"blosc-zstd-{level}-bit"] = blosc(
            cname="zstd", clevel=level, shuffle=blosc.BITSHUFFLE
        )
    try:
        from numcodecs.pcodec import PCodec

        for level in (4, 8):
            chosen[f"pcodec-{level}"] = PCodec(level=level)
    except ImportError:  # pcodec is in the bench extra only
        print("(numcodecs.pcodec unavailable: pip install -e '.[bench]' for pcodec)")
    return chosen


def synthetic_fields(seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
    """One full-size time step of each variable of :data:`SYNTHETIC`: name -> (group, data)."""
    schema = wb2_schema()
    static = _wb2_static(WB2_GRID, seed)
    step = _wb2_time_step(1, WB2_GRID, static, seed, pressure_levels=False)
    fields = {}
    for group, names in SYNTHETIC.items():
        for name in names:
            values = static[name] if schema[name].static else step[name]
            shape = "x".join(map(str, values.shape))
            fields[f"{name} {shape}"] = (group, np.ascontiguousarray(values, np.float32))
    return fields


def real_fields(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    with np.load(path) as data:
        return {
            f"{key} {'x'.join(map(str, value.shape))}": ("real ERA fields", value)
            for key, value in data.items()
        }


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(fields: dict[str, tuple[str, np.ndarray]], codecs: dict, repeats: int) -> dict:
    """{(field, codec): (compressed bytes, best encode s, best decode s)}, checked."""
    results = {}
    for name, (_, field) in fields.items():
        encoded = {label: codec.encode(field) for label, codec in codecs.items()}
        for label, codec in codecs.items():
            decoded = np.frombuffer(codec.decode(encoded[label]), np.float32)
            if not np.array_equal(decoded.view(np.uint32), field.reshape(-1).view(np.uint32)):
                raise SystemExit(f"{label} did not give back {name} bit for bit")
        best = {label: [np.inf, np.inf] for label in codecs}
        for _ in range(repeats):  # interleaved, so a drifting load hits every codec alike
            for label, codec in codecs.items():
                blob = encoded[label]
                best[label][0] = min(best[label][0], timed(lambda c=codec, f=field: c.encode(f)))
                best[label][1] = min(best[label][1], timed(lambda c=codec, b=blob: c.decode(b)))
        for label in codecs:
            results[name, label] = (len(encoded[label]), *best[label])
    return results


def group_table(fields: dict, codecs: dict, results: dict, groups: list[str]) -> None:
    names = [name for name, (group, _) in fields.items() if group in groups]
    size = sum(fields[name][1].nbytes for name in names)
    title = " + ".join(groups)
    print(f"\n### {title}: {len(names)} fields, {size / MIB:.0f} MiB (MiB/s on one core; "
          f"x = relative to {REFERENCE} in the same run)\n")  # fmt: skip
    print("| codec | ratio | encode | x | decode | x |")
    print("|---|---:|---:|---:|---:|---:|")

    def totals(label: str) -> tuple[float, float, float]:
        stored = sum(results[name, label][0] for name in names)
        encode = sum(results[name, label][1] for name in names)
        decode = sum(results[name, label][2] for name in names)
        return size / stored, size / MIB / encode, size / MIB / decode

    _, ref_encode, ref_decode = totals(REFERENCE)
    for label in codecs:
        ratio, encode, decode = totals(label)
        print(f"| {label} | {ratio:.2f} | {encode:.0f} | {encode / ref_encode:.2f} | "
              f"{decode:.0f} | {decode / ref_decode:.2f} |")  # fmt: skip


def field_table(fields: dict, results: dict, labels: list[str]) -> None:
    print("\n### Ratio per field\n")
    print(f"| field | group | {' | '.join(labels)} |")
    print(f"|---|---|{'---:|' * len(labels)}")
    for name, (group, field) in fields.items():
        ratios = [field.nbytes / results[name, label][0] for label in labels]
        print(f"| {name} | {group} | {' | '.join(f'{r:.2f}' for r in ratios)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real-fields", type=Path, default=REAL_FIELDS)
    args = parser.parse_args()

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    numcodecs.blosc.set_nthreads(1)
    codecs = candidate_codecs()
    fields = real_fields(args.real_fields) | synthetic_fields()
    results = measure(fields, codecs, args.repeats)
    for groups in (["real ERA fields"], ["categorical"], ["mask/fraction"], ["static"],
                   ["surface float32"], ["heavy-tailed"], list(SYNTHETIC)):  # fmt: skip
        group_table(fields, codecs, results, groups)
    main_labels = [label for label in codecs if label in (
        REFERENCE, "zstd-0", "zstd-3", "blosc-zstd-3", "blosc-zstd-3-bit", "blosc-zstd-5-bit",
        "pcodec-8")]  # fmt: skip
    field_table(fields, results, main_labels)


if __name__ == "__main__":
    main()
