"""Time the planning of ``precision: source`` (the sampled chunks each variable's packing grid
is found in) on a gs:// source served by the GCS emulator of tests/servers.py.

    .venv/bin/python benchmarks/bench_source_grid.py --variables 20

Each variable's values sit on a grid of 2**-9; chunks of one time step. Prints the seconds
of ``plan_compress`` (best of ``--repeat``) and the steps found. Loopback has none of the
latency of Google Cloud Storage (tens of ms per request): ``--latency-ms`` waits that long
before each request gcsfs sends while planning, as a stand-in.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variables", type=int, default=20)
    parser.add_argument("--times", type=int, default=8)
    parser.add_argument("--levels", type=int, default=13)
    parser.add_argument("--grid", default="144x73", help="NLONxNLAT")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()

    import servers

    os.environ.update(servers.EMULATOR_ENV)  # before gcsfs is imported
    process, url = servers._start_emulator(Path(tempfile.mkdtemp()))
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        import xarray as xr

        from layerquantizer import dataset

        nlon, nlat = (int(n) for n in args.grid.split("x"))
        rng = np.random.default_rng(0)
        shape = (args.times, args.levels, nlat, nlon)
        dims = ("time", "level", "latitude", "longitude")
        data = {
            f"field_{i:02d}": (dims, (250 + rng.integers(0, 2**14, shape) * 2.0**-9).astype("f4"))
            for i in range(args.variables)
        }
        ds = xr.Dataset(data).chunk({"time": 1})
        src = f"gs://{servers.new_bucket(url)}/src.zarr"
        ds.to_zarr(src, zarr_format=2, consolidated=True, storage_options={"token": "anon"})
        if args.latency_ms > 0:
            import asyncio

            import gcsfs.core

            call = gcsfs.core.GCSFileSystem._call

            async def slow_call(self, *call_args, **kwargs):
                await asyncio.sleep(args.latency_ms / 1000)
                return await call(self, *call_args, **kwargs)

            gcsfs.core.GCSFileSystem._call = slow_call
        source = dataset.open_dataset(src, token="anon")
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            plan = dataset.plan_compress(source, variables=list(data), precision="source")
            best = min(best, time.perf_counter() - started)
        steps = sorted(set(plan.source_steps.values()))
        print(
            f"{args.variables} variables, chunks {shape[1:]} float32: plan_compress "
            f"{best:.2f} s (best of {args.repeat}, {args.latency_ms:g} ms per request); "
            f"steps {steps}"
        )
    finally:
        process.stop()


if __name__ == "__main__":
    main()
