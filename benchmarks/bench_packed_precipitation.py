"""Lossless ratio on precipitation packed as GRIB packs it: layerquantizer1 against pcodec.

Issue 11 asks that the packing-aware path (data on a grid ``min + k g``) beat pcodec, which
finds such grids too. The field: the synthetic WeatherBench2 ``total_precipitation_6hr``
(:mod:`layerquantizer.synthetic`; two thirds exact zeros, a long tail) at 0.25 degree, each
time step packed as GRIB simple packing does with 16 bits (``g = 2**E``, the smallest power
of two with ``(max - min) / g <= 65535``) and stored as float32. Printed: pcodec (lossless,
default level) and layerquantizer1 at 16 bits (the grid is found, so it is lossless) and with
the tolerance ``g / 2`` of the finest step's grid (what ``precision: source`` asks for),
each with whether every value came back bit for bit. Needs the ``bench`` extra.

Example
-------
    python benchmarks/bench_packed_precipitation.py --times 4
"""

from __future__ import annotations

import argparse

import numpy as np
from pcodec import ChunkConfig, standalone

from layerquantizer import LayerQuantizer
from layerquantizer.synthetic import _wb2_static, _wb2_time_step


def packed_precipitation(times: int, grid: tuple[int, int]) -> tuple[np.ndarray, float]:
    """``times`` steps of GRIB-packed precipitation, and the finest packing step."""
    static = _wb2_static(grid, 0)
    steps, finest = [], np.inf
    for step in range(times):
        field = _wb2_time_step(step, grid, static, 0, pressure_levels=False)
        rain = field["total_precipitation_6hr"]
        low, high = rain.min(), rain.max()
        packing = 2.0 ** int(np.ceil(np.log2((high - low) / 65535)))
        finest = min(finest, packing)
        steps.append((low + np.round((rain - low) / packing) * packing).astype(np.float32))
    return np.stack(steps), finest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--times", type=int, default=4)
    parser.add_argument("--grid", type=int, nargs=2, default=(721, 1440))
    args = parser.parse_args()
    field, finest = packed_precipitation(args.times, tuple(args.grid))
    print(f"{field.shape}, {np.mean(field == 0):.0%} zeros, finest packing step {finest:g}\n")
    print("| codec | ratio | bit for bit |\n|---|---:|---|")
    blob = standalone.simple_compress(field.reshape(-1), ChunkConfig())
    back = standalone.simple_decompress(blob).reshape(field.shape)
    print(f"| pcodec | {field.nbytes / len(blob):.2f} | {np.array_equal(back, field)} |")
    for name, codec in (
        ("layerquantizer1, nbits 16", LayerQuantizer(nbits=16)),
        ("layerquantizer1, tolerance g / 2", LayerQuantizer(tolerance=finest / 2)),
    ):
        encoded = codec.encode(field)
        back = codec.decode(encoded).reshape(field.shape)
        exact = np.array_equal(back, field)
        print(f"| {name} | {field.nbytes / len(encoded):.2f} | {exact} |")


if __name__ == "__main__":
    main()
