"""Ratio and speed of layerquantizer1 against the original codec and Blosc-lz4, one core.

Prints two markdown tables:

1. Compression ratio at nbits=16 on every field of ``../shared/data/real_fields.npz`` (and
   the large synthetic fields), for ``layerquantizer1``, the original ``layerquantizer0.3b``
   (this package's bit-exact implementation of its format) and lossless Blosc-lz4, with the
   largest error seen as a fraction of the promised bound.
2. Encode and decode speed on 37 x 721 x 1440 float32 fields (one ERA5 time step of a
   pressure-level variable, from :mod:`layerquantizer.synthetic`), in MiB/s of float32 data,
   best of ``--repeats`` runs with the codecs interleaved, and each codec's speed relative to
   Blosc-lz4 with byte shuffle (the default Zarr v2 compressor) in the same run. Decoding is
   timed as Zarr calls it: ``decode(chunk)`` returning a new array. ``decode(chunk, out=)``
   into a reused buffer is shown too.
3. Writing and reading a whole array through zarr-python with each codec.

The process is pinned to one core, with Blosc and numba single-threaded. The machine may be
noisy: compare the relative columns, not absolute times.

Example
-------
    python benchmarks/bench_codec.py --variables temperature geopotential --repeats 7
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numcodecs  # noqa: E402
import numcodecs.blosc  # noqa: E402
import numpy as np  # noqa: E402

from layerquantizer import LayerQuantizer, LegacyLayerQuantizer, max_abs_error  # noqa: E402
from layerquantizer.synthetic import era5_like_field  # noqa: E402

MIB = 2**20
REAL_FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_fields.npz"
# The original's ratios on real_fields.npz at nbits=16, as published with it.
PUBLISHED = {"eraint_z": 8.83, "eraint_u": 4.96, "eraint_v": 4.83, "era5ens_z": 2.75,
             "era5ens_t": 2.41, "era5uk_t2m": 2.36}  # fmt: skip


def codecs(nbits: int) -> dict[str, numcodecs.abc.Codec]:
    return {
        "layerquantizer1": LayerQuantizer(nbits=nbits),
        "layerquantizer0.3b": LegacyLayerQuantizer(nbits=nbits),
        "blosc-lz4": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
    }


def worst_error_share(field: np.ndarray, decoded: np.ndarray, nbits: int) -> float:
    """Largest |error| / (half step + ulp) over all finite values, per 2-D layer."""
    layers = field.reshape(-1, *field.shape[-2:]).astype(np.float64)
    result = decoded.reshape(layers.shape).astype(np.float64)
    worst = 0.0
    for x, y in zip(layers, result, strict=True):
        bound = max_abs_error(x.min(), x.max(), nbits) + np.spacing(np.abs(x).astype(np.float32))
        worst = max(worst, float((np.abs(x - y) / bound).max()))
    return worst


def ratio_table(fields: dict[str, np.ndarray], nbits: int) -> None:
    print(f"\n### Compression ratio, nbits={nbits}\n")
    print("| field | shape | layerquantizer1 | layerquantizer0.3b | published 0.3b | "
          "blosc-lz4 | max error / bound |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, field in fields.items():
        ratios = {}
        for label, codec in codecs(nbits).items():
            ratios[label] = field.nbytes / len(codec.encode(field))
        ours = LayerQuantizer(nbits=nbits)
        share = worst_error_share(field, ours.decode(ours.encode(field)), nbits)
        published = f"{PUBLISHED[name]:.2f}" if name in PUBLISHED and nbits == 16 else ""
        print(f"| {name} | {'x'.join(map(str, field.shape))} | "
              f"{ratios['layerquantizer1']:.2f} | {ratios['layerquantizer0.3b']:.2f} | "
              f"{published} | {ratios['blosc-lz4']:.2f} | {share:.3f} |")  # fmt: skip


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def speed_table(fields: dict[str, np.ndarray], nbits: int, repeats: int) -> None:
    print(f"\n### Speed on one core, nbits={nbits} (MiB/s of float32; x = relative to "
          "blosc-lz4 in the same run)\n")  # fmt: skip
    print("| field | codec | ratio | encode | x | decode | x | decode into out= | x |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, field in fields.items():
        chosen = codecs(nbits)
        encoded = {label: codec.encode(field) for label, codec in chosen.items()}
        for label, codec in chosen.items():
            codec.decode(encoded[label])  # compile, warm up
        out = np.empty_like(field)
        best = {label: [np.inf, np.inf, np.inf] for label in chosen}
        for _ in range(repeats):  # interleaved, so drifting load hits every codec alike
            for label, codec in chosen.items():
                times = best[label]
                times[0] = min(times[0], timed(lambda c=codec, f=field: c.encode(f)))
                times[1] = min(times[1], timed(lambda c=codec, e=encoded[label]: c.decode(e)))
                times[2] = min(
                    times[2], timed(lambda c=codec, e=encoded[label], o=out: c.decode(e, out=o))
                )
        size = field.nbytes / MIB
        reference = [size / t for t in best["blosc-lz4"]]
        for label in chosen:
            rates = [size / t for t in best[label]]
            print(f"| {name} | {label} | {field.nbytes / len(encoded[label]):.2f} | "
                  f"{rates[0]:.0f} | {rates[0] / reference[0]:.2f} | "
                  f"{rates[1]:.0f} | {rates[1] / reference[1]:.2f} | "
                  f"{rates[2]:.0f} | {rates[2] / reference[2]:.2f} |")  # fmt: skip


def zarr_table(field: np.ndarray, nbits: int, repeats: int, tmp: Path) -> None:
    """Whole-array write and read through zarr-python (Zarr v2, one chunk per 4 levels)."""
    import zarr

    print(f"\n### Through zarr-python, one core, nbits={nbits} (MiB/s; {field.shape} float32, "
          "chunks of 4 levels; x = relative to blosc-lz4)\n")  # fmt: skip
    print("| codec | ratio | write | x | read | x |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = {}
    for label, codec in codecs(nbits).items():
        if label == "layerquantizer0.3b":
            continue
        path = tmp / f"{label}.zarr"
        array = zarr.create_array(path, shape=field.shape, chunks=(4, *field.shape[1:]),
                                  dtype="float32", compressors=codec, zarr_format=2)  # fmt: skip
        array[:] = field
        write = min(
            timed(lambda a=array: a.__setitem__(slice(None), field)) for _ in range(repeats)
        )
        read = min(timed(lambda a=array: a[:]) for _ in range(repeats))
        stored = sum(f.stat().st_size for f in path.iterdir())
        rows[label] = (field.nbytes / stored, field.nbytes / MIB / write, field.nbytes / MIB / read)
    lz4 = rows["blosc-lz4"]
    for label, (ratio, write, read) in rows.items():
        print(f"| {label} | {ratio:.2f} | {write:.0f} | {write / lz4[1]:.2f} | {read:.0f} | "
              f"{read / lz4[2]:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variables", nargs="+", default=["temperature", "geopotential",
                        "u_component_of_wind", "specific_humidity"])  # fmt: skip
    parser.add_argument("--nbits", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real-fields", type=Path, default=REAL_FIELDS)
    args = parser.parse_args()

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    numcodecs.blosc.set_nthreads(1)
    numba.set_num_threads(1)

    with np.load(args.real_fields) as data:
        real = dict(data)
    large = {f"{v} 37x721x1440": era5_like_field(v) for v in args.variables}
    ratio_table(real | large, args.nbits)
    speed_table(large, args.nbits, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        zarr_table(next(iter(large.values())), args.nbits, args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
