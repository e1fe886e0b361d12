"""Speed and ratio of the legacy ``layerquantizer0.3b`` codec on one core, against Blosc-lz4.

Builds one ERA5-like time step per variable (37 levels x 721 x 1440 float32, 147 MiB) and
prints, for each codec, the compression ratio and the best of a few encode and decode runs
in MiB/s of float32 data. Pinned to one core, Blosc and numba single-threaded, so the figures
compare with the original package's (about 51 MiB/s encode, 300 MiB/s decode here).

Example
-------
    python benchmarks/bench_legacy.py --variables temperature geopotential --repeats 5
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numba
import numcodecs
import numcodecs.blosc
import numpy as np

from layerquantizer.legacy import LegacyLayerQuantizer
from layerquantizer.synthetic import era5_like_field

MIB = 2**20


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls of ``run``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(codec: numcodecs.abc.Codec, field: np.ndarray, repeats: int) -> tuple[float, ...]:
    """Ratio, encode MiB/s and decode MiB/s of ``codec`` on ``field``."""
    encoded = codec.encode(field)
    codec.decode(encoded)  # compile and warm up
    out = np.empty_like(field)
    encode_s = best_seconds(lambda: codec.encode(field), repeats)
    decode_s = best_seconds(lambda: codec.decode(encoded, out=out), repeats)
    size = field.nbytes
    return size / len(encoded), size / MIB / encode_s, size / MIB / decode_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variables", nargs="+", default=["temperature"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.sched_setaffinity(0, {0})
    numcodecs.blosc.set_nthreads(1)
    numba.set_num_threads(1)

    codecs = {
        "layerquantizer0.3b nbits=16": LegacyLayerQuantizer(nbits=16),
        "layerquantizer0.3b nbits=12": LegacyLayerQuantizer(nbits=12),
        "blosc lz4 5 shuffle": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
    }
    print(f"{'variable':<18} {'codec':<28} {'ratio':>7} {'enc MiB/s':>10} {'dec MiB/s':>10}")
    for variable in args.variables:
        field = era5_like_field(variable)
        for name, codec in codecs.items():
            ratio, encode_rate, decode_rate = measure(codec, field, args.repeats)
            print(
                f"{variable:<18} {name:<28} {ratio:>7.2f} {encode_rate:>10.1f} {decode_rate:>10.1f}"
            )


if __name__ == "__main__":
    main()
