"""``lq compress`` on the WeatherBench2 ERA5 store at full scale: start-up, memory, ratio.

The store of issue 9,
``gs://weatherbench2/datasets/era5/1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr``
(93,544 six-hourly steps, 13 levels, 721 x 1440, 62 variables, one time step per chunk),
without the network:

1. Writes its metadata at full size, without chunks
   (:func:`layerquantizer.synthetic.write_wb2_metadata_store`), and times ``xr.open_zarr`` on
   it in a fresh process (imports apart).
2. Runs ``lq compress SRC DST --config configs/era5.yaml`` on it as a subprocess, whole and
   with ``--time`` subsets, and measures the time to the first chunk of a data variable in
   DST (polling the directory) and the peak memory of the process tree (psutil if installed,
   else ``VmRSS``/``VmHWM`` of ``/proc/PID/status``), then kills the run (its own process
   group) once that chunk appears or after ``--timeout`` seconds; the time lq marks its
   first write unit done (``DST/.lq-progress/done``) beside it. The source holds data
   (constant fields) at the first 8 steps of the store and of 2020, where the runs start,
   and NaN fill values elsewhere (Zarr writes no all-NaN chunk): start-up and planning at
   full scale are what is measured, not the codec.
3. Writes the small WB2-schema store with data (:func:`layerquantizer.synthetic.
   write_wb2_sample_store`: every variable, 1.5 degree, ``--sample-times`` steps) and
   compresses it whole with the same config, reporting the store's ratio from
   ``lq inspect --json`` and which variables were quantized or copied with which codec.

Example
-------
    python benchmarks/bench_wb2.py --timeout 120 --workdir /tmp/lq-wb2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from layerquantizer.synthetic import (
    WB2_START,
    wb2_schema,
    write_wb2_metadata_store,
    write_wb2_sample_store,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "era5.yaml"
MIB = 2**20
TIME_SUBSETS = {
    "whole store (93,544 steps)": [],
    "--time 2020-01-01:2023-01-10 (4,412 steps)": ["--time", "2020-01-01:2023-01-10"],
    "--time 2020-01-01:2020-12-31 (1,464 steps)": ["--time", "2020-01-01:2020-12-31"],
    "--time 2020-01-01:2020-01-01 (4 steps)": ["--time", "2020-01-01:2020-01-01"],
}
# Steps of the source that hold data (the rest reads as NaN, and Zarr writes no all-NaN
# chunk): the first of the store and the first of 2020, where the runs above start.
FIRST_2020 = int((np.datetime64("2020-01-01T00") - WB2_START) // np.timedelta64(6, "h"))
DATA_STEPS = [*range(8), *range(FIRST_2020, FIRST_2020 + 8)]

OPEN_SCRIPT = """
import json, sys, time, warnings
start = time.perf_counter()
import xarray as xr
imported = time.perf_counter()
ds = xr.open_zarr(sys.argv[1])
opened = time.perf_counter()
print(json.dumps({"import_s": imported - start, "open_s": opened - imported,
                  "variables": len(ds.data_vars), "sizes": dict(ds.sizes)}))
"""


def lq() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def open_zarr_times(src: Path, repeats: int) -> list[dict]:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", OPEN_SCRIPT, str(src)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        runs.append(json.loads(out.stdout))
    return runs


def first_data_chunk(dst: Path, names: set[str]) -> str | None:
    """The first chunk object of a data variable in a local store, or None."""
    try:
        entries = list(os.scandir(dst))
    except FileNotFoundError:
        return None
    for entry in entries:
        if entry.name not in names or not entry.is_dir():
            continue
        for root, _, files in os.walk(entry.path):
            for file in files:
                if not file.startswith(".") and file != "zarr.json":
                    return os.path.relpath(os.path.join(root, file), dst)
    return None


def first_progress_marker(dst: Path) -> str | None:
    """The first progress marker ``lq`` wrote (``DST/.lq-progress/done/VAR/B``: a batch of
    units done, written when the batch is complete or 5 s after its first unit)."""
    for root, _, files in os.walk(dst / ".lq-progress" / "done"):
        if files:
            return os.path.relpath(os.path.join(root, files[0]), dst)
    return None


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc, when psutil is missing)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as children:
                kids = [int(p) for p in children.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            kids = []
        found += kids
        frontier += kids
    return found


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS of the process tree, largest VmHWM in it), bytes."""
    try:
        import psutil
    except ImportError:
        pids = [pid, *_children(pid)]
        rss = sum(_status_kib(p, "VmRSS") for p in pids) * 1024
        return rss, max(_status_kib(p, "VmHWM") for p in pids) * 1024
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = 0
    for process in processes:
        try:
            rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return rss, max(_status_kib(p.pid, "VmHWM") for p in processes) * 1024


def time_to_first_chunk(src: Path, dst: Path, extra: list[str], timeout: float) -> dict:
    """Run ``lq compress`` until the first data chunk appears in ``dst`` (or timeout)."""
    shutil.rmtree(dst, ignore_errors=True)
    names = set(wb2_schema())
    started = time.perf_counter()
    process = subprocess.Popen(
        [*lq(), "compress", str(src), str(dst), "--config", str(CONFIG), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    peak_rss = peak_hwm = 0
    chunk = marker = None
    marker_seconds = None
    try:
        while time.perf_counter() - started < timeout and process.poll() is None:
            rss, hwm = tree_memory(process.pid)
            peak_rss, peak_hwm = max(peak_rss, rss), max(peak_hwm, hwm)
            if marker is None:
                marker = first_progress_marker(dst)
                if marker is not None:
                    marker_seconds = time.perf_counter() - started
            chunk = first_data_chunk(dst, names)
            if chunk is not None:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        rss, hwm = tree_memory(process.pid)
        peak_rss, peak_hwm = max(peak_rss, rss), max(peak_hwm, hwm)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the run's own group: lq and its workers
        _, stderr = process.communicate(timeout=60)
    ended = (
        process.returncode if process.returncode is not None and process.returncode >= 0 else None
    )
    return {
        "seconds": elapsed,
        "chunk": chunk,
        "marker": marker,
        "marker_seconds": marker_seconds,
        "exit": ended,
        "stderr": stderr.decode(errors="replace").strip().splitlines()[-3:],
        "peak_rss": peak_rss,
        "peak_hwm": peak_hwm,
    }


def sample_ratio(workdir: Path, times: int) -> dict:
    src, dst = workdir / "wb2-sample.zarr", workdir / "wb2-sample-lq.zarr"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    write_wb2_sample_store(str(src), times=times, grid=(121, 240))
    started = time.perf_counter()
    run = subprocess.run(
        [*lq(), "compress", str(src), str(dst), "--config", str(CONFIG), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-3:], "exit": run.returncode}
    inspected = json.loads(
        subprocess.run(
            [*lq(), "inspect", str(dst), "--json"], capture_output=True, text=True, check=True
        ).stdout  # fmt: skip
    )
    source = json.loads(
        subprocess.run(
            [*lq(), "inspect", str(src), "--json"], capture_output=True, text=True, check=True
        ).stdout  # fmt: skip
    )
    return {"seconds": seconds, "dst": inspected, "src": source, "report": json.loads(run.stdout)}


def print_sample(result: dict, times: int) -> None:
    print(f"\n### Whole-store ratio, WB2-schema sample with data: 62 variables, {times} steps, "
          "13 levels, 121 x 240 (1.5 degree), configs/era5.yaml, today's defaults\n")  # fmt: skip
    if "error" in result:
        print(f"lq compress failed (exit {result['exit']}): {' / '.join(result['error'])}")
        return
    dst, src = result["dst"], result["src"]
    schema = wb2_schema()
    print(
        f"lq compress: {result['seconds']:.1f} s wall; source (Blosc-lz4) ratio "
        f"{src['total']['ratio']:.2f}; destination ratio {dst['total']['ratio']:.2f} "
        f"({dst['total']['logical_bytes'] / MIB:.1f} MiB -> "
        f"{dst['total']['stored_bytes'] / MIB:.1f} MiB, {dst['total']['objects']} objects)\n"
    )
    print("| codec in DST | variables | logical MiB | stored MiB | ratio | kinds |")
    print("|---|---:|---:|---:|---:|---|")
    groups: dict[str, list[str]] = {}
    for name, var in dst["variables"].items():
        groups.setdefault(var["codec"], []).append(name)
    for codec, names in groups.items():
        logical = sum(dst["variables"][n]["logical_bytes"] for n in names)
        stored = sum(dst["variables"][n]["stored_bytes"] for n in names)
        kinds = Counter(schema[n].kind for n in names if n in schema)
        print(
            f"| {codec} | {len(names)} | {logical / MIB:.1f} | {stored / MIB:.1f} | "
            f"{logical / stored:.2f} | {', '.join(f'{k} {c}' for k, c in kinds.items())} |"
        )
    missing = sorted(set(schema) - set(dst["variables"]))
    if missing:
        print(f"\nnot in DST: {', '.join(missing)}")
    print("\n| variable | kind | codec | ratio |")
    print("|---|---|---|---:|")
    for name, var in sorted(dst["variables"].items(), key=lambda item: -item[1]["stored_bytes"]):
        kind = schema[name].kind if name in schema else "?"
        print(f"| {name} | {kind} | {var['codec']} | {var['ratio']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--repeats", type=int, default=3, help="of xr.open_zarr")
    parser.add_argument("--sample-times", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--zarr-format", type=int, default=2, choices=(2, 3))
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lq-wb2-"))
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"wb2-metadata-v{args.zarr_format}.zarr"
    shutil.rmtree(src, ignore_errors=True)
    started = time.perf_counter()
    write_wb2_metadata_store(str(src), zarr_format=args.zarr_format, data_time_steps=DATA_STEPS)
    written = time.perf_counter() - started
    files = [p for p in src.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(
        f"full-size metadata store (zarr v{args.zarr_format}): {src}, written in "
        f"{written:.1f} s, {len(files)} files, {size / MIB:.2f} MiB"
    )

    opens = open_zarr_times(src, args.repeats)
    print(f"\n### xr.open_zarr on the full-size metadata store (fresh process, "
          f"{args.repeats} runs)\n")  # fmt: skip
    print(
        f"open_zarr: median {statistics.median(r['open_s'] for r in opens):.2f} s "
        f"(all: {', '.join(format(r['open_s'], '.2f') for r in opens)}); "
        f"import xarray: median {statistics.median(r['import_s'] for r in opens):.2f} s; "
        f"{opens[0]['variables']} variables, sizes {opens[0]['sizes']}"
    )

    print(f"\n### lq compress on the full-size metadata store: time to the first data chunk "
          f"and peak memory (killed then; timeout {args.timeout:.0f} s)\n")  # fmt: skip
    print("| run | first data chunk after | chunk | first unit marked done after | "
          "peak RSS of the tree | largest VmHWM | exit / stderr |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---|")
    for label, extra in TIME_SUBSETS.items():
        result = time_to_first_chunk(src, workdir / "out.zarr", extra, args.timeout)
        seen = f"{result['seconds']:.1f} s" if result["chunk"] else (
            f"none in {result['seconds']:.1f} s")  # fmt: skip
        tail = ""
        if result["exit"] is not None:
            tail = f"exit {result['exit']}: {' / '.join(result['stderr'])}"
        marked = "-" if result["marker"] is None else f"{result['marker_seconds']:.1f} s"
        print(f"| {label} | {seen} | {result['chunk'] or '-'} | {marked} | "
              f"{result['peak_rss'] / MIB:.0f} MiB | {result['peak_hwm'] / MIB:.0f} MiB | "
              f"{tail} |", flush=True)  # fmt: skip
    shutil.rmtree(workdir / "out.zarr", ignore_errors=True)

    print_sample(sample_ratio(workdir, args.sample_times), args.sample_times)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
