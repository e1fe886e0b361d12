"""End-to-end ``lq compress`` throughput against the codec's own encode speed.

1. Makes (once) a local store with ``lq sample --levels 37 --grid 1440x721 --times N``:
   10 variables, 6 of them on 37 levels, 0.94 GB per time step, Blosc-lz4 as zarr writes it.
2. Measures the codec's encode speed on one core on the same chunks (37 x 721 x 1440
   float32 fields read from that store): the process pinned to one core, Blosc and numba
   single-threaded, as ``benchmarks/bench_codec.py`` does; best of ``--repeats``.
3. Times ``lq compress SRC DST --config configs/era5.yaml`` as a subprocess, with the
   default runner (one thread per core) and with ``--workers 2`` (a local dask cluster of
   2 processes, its start-up included), best of ``--repeats``; the MiB/s are logical
   float32 bytes written over the command's own writing time (``--json`` timing).
4. Prints both and the ratio end-to-end / (encode on one core x cores), against the 0.6
   target of issue #5.

The machine may be shared: the encode speed is measured between the end-to-end runs, and
the ratio uses the median of those measurements.

Example
-------
    python benchmarks/bench_compress.py --times 4 --repeats 3 --workdir /tmp/lq-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
TARGET = 0.6
QUANTIZED = ["geopotential", "temperature", "u_component_of_wind", "v_component_of_wind",
             "specific_humidity", "vertical_velocity"]  # fmt: skip


def lq() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


ENCODE_SCRIPT = """
import os, sys, time, json
os.environ["NUMBA_NUM_THREADS"] = "1"
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import numcodecs.blosc, numba, zarr
numcodecs.blosc.set_nthreads(1)
numba.set_num_threads(1)
from layerquantizer import LayerQuantizer
QUANTIZED = json.loads(sys.argv[3])
src, repeats = sys.argv[1], int(sys.argv[2])
group = zarr.open_group(src, mode="r")
nbits = {"specific_humidity": 20}
best = {}
for name in QUANTIZED:
    field = group[name][0]
    codec = LayerQuantizer(nbits=nbits.get(name, 16))
    codec.encode(field)  # compile, warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        codec.encode(field)
        times.append(time.perf_counter() - start)
    best[name] = field.nbytes / min(times)
total = sum(group[name][0].nbytes for name in best)
seconds = sum(group[name][0].nbytes / rate for name, rate in best.items())
print(json.dumps({"mib_per_s": total / seconds / 2**20,
                  "per_variable": {k: v / 2**20 for k, v in best.items()}}))
"""


def encode_speed(src: Path, repeats: int) -> dict:
    """The codec alone on one core, in a fresh process (as a user's would be)."""
    out = subprocess.run(
        [sys.executable, "-c", ENCODE_SCRIPT, str(src), str(repeats), json.dumps(QUANTIZED)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def compress(src: Path, dst: Path, extra: list[str]) -> dict:
    shutil.rmtree(dst, ignore_errors=True)
    started = time.perf_counter()
    out = subprocess.run(
        [*lq(), "compress", str(src), str(dst), "--config", str(ROOT / "configs" / "era5.yaml"),
         "--json", *extra],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    report = json.loads(out.stdout)
    return {
        "mib_per_s": report["timing"]["mib_per_s"],
        "seconds": report["timing"]["seconds"],
        "wall": wall,
        "ratio": report["total"]["ratio"],
        "runner": report["runner"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", type=int, default=4, help="time steps in the sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lq-bench"))
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / f"sample-37x721x1440-t{args.times}.zarr"
    if not (src / ".zmetadata").exists():
        shutil.rmtree(src, ignore_errors=True)
        print(f"writing {src} ...", flush=True)
        subprocess.run([*lq(), "sample", str(src), "--levels", "37", "--grid", "1440x721",
                        "--times", str(args.times)], check=True)  # fmt: skip
    dst = args.workdir / "out.zarr"
    compress(src, dst, [])  # warm the page cache

    runs: dict[str, list[dict]] = {"default (threads)": [], "--workers 2": []}
    encodes = []
    for _ in range(args.repeats):
        encodes.append(encode_speed(src, 3))
        runs["default (threads)"].append(compress(src, dst, []))
        runs["--workers 2"].append(compress(src, dst, ["--workers", "2"]))
    encodes.append(encode_speed(src, 3))
    shutil.rmtree(dst, ignore_errors=True)

    encode = statistics.median(e["mib_per_s"] for e in encodes)
    print(f"\nmachine: {cores} cores; source {src} ({args.times} time steps, Blosc-lz4)")
    print(f"codec encode on one core, 6 quantized variables (median of {len(encodes)} "
          f"measurements, each best of 3): {encode:.0f} MiB/s "
          f"(all: {', '.join(format(e['mib_per_s'], '.0f') for e in encodes)})")  # fmt: skip
    print(f"target: {TARGET:.0%} of {encode:.0f} x {cores} = {TARGET * encode * cores:.0f} MiB/s\n")
    print("| runner | best MiB/s | all MiB/s | best / (encode x cores) | target met |")
    print("|---|---:|---|---:|---|")
    for name, results in runs.items():
        best = max(r["mib_per_s"] for r in results)
        share = best / (encode * cores)
        print(f"| {name} ({results[0]['runner']}) | {best:.0f} | "
              f"{', '.join(format(r['mib_per_s'], '.0f') for r in results)} | {share:.2f} | "
              f"{'yes' if share >= TARGET else 'NO'} |")  # fmt: skip
    print(
        f"\ncompression ratio of the store: {runs['default (threads)'][0]['ratio']:.2f}; "
        f"wall time of a default run (process start, planning, report included): "
        f"{min(r['wall'] for r in runs['default (threads)']):.1f} s"
    )


if __name__ == "__main__":
    main()
