"""Where an ``lq compress`` run's CPU goes, as lq runs it: each step of its units timed.

Runs ``lq compress ARGS... --json`` in this process (the CLI's own allocator settings and
default runner: one thread per core) with the steps of every unit wrapped by timers of
the thread that runs them (``RUSAGE_THREAD`` and ``/proc/thread-self/schedstat``), and
prints per step:

- CPU: user and system seconds of the unit threads in the step (what the machine's other
  users do not add to);
- run queue: seconds the thread was ready but waited for a core (the other users);
- blocked: wall less both, seconds off a core for other reasons (I/O, the GIL, locks);
- minor page faults.

Steps nest: ``run_unit`` holds ``read_region`` (``_decode_stored``: ``_get`` the read,
the rest Blosc's decode into the thread's buffer) and ``write_region`` (``encode``, the
array's codec, and ``_set``, the store). The writing phase (``_write_plan``: metadata,
units, consolidation) is timed as a whole, with the process's CPU in it, so that what
runs outside the units (the main thread, zarr's event loop) shows as the difference.

Linux only. The figures are the instrumented run's (each timer costs microseconds; a
unit is tens of milliseconds).

What the pipeline costs by itself (issue 9's ceiling), two options before lq's own:

- ``--preload``: every source chunk is read and decoded into memory before the writing
  phase, and the units take it from there (no read, no decode in the units);
- ``--no-store``: the units encode but store nothing (``_set`` does nothing).

With both, a unit is the encode and lq's bookkeeping around it.

Example
-------
    python benchmarks/profile_compress.py /tmp/lq-bench/wb2-721x1440-t6.zarr /tmp/out.zarr \\
        --config configs/era5.yaml
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import resource
import sys
import threading
import time

STEPS = ("run_unit", "read_region", "_decode_stored", "_get", "write_region", "_set",
         "_all_nan", "source_fingerprint", "_open_array")  # fmt: skip


def _run_queue() -> float:
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def _now() -> tuple:
    """The calling thread's rusage, wall time and run-queue seconds."""
    return resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter(), _run_queue()


class Timers:
    """Per step: user, system, wall, run-queue seconds, faults and calls, summed over the
    unit threads; and each unit's thread, start, end and logical bytes (the timeline)."""

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0] * 6)
        self.lock = threading.Lock()
        self.units: list[tuple[int, float, float, int, float]] = []

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            r0, t0, q0 = _now()
            try:
                return fn(*args, **kwargs)
            finally:
                r1, t1, q1 = _now()
                with self.lock:
                    if name == "run_unit":
                        cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                        nbytes = getattr(args[0], "nbytes", 0)
                        self.units.append((threading.get_ident(), t0, t1, nbytes, cpu))
                    row = self.sums[name]
                    row[0] += r1.ru_utime - r0.ru_utime
                    row[1] += r1.ru_stime - r0.ru_stime
                    row[2] += t1 - t0
                    row[3] += q1 - q0
                    row[4] += r1.ru_minflt - r0.ru_minflt
                    row[5] += 1

        return timed


def _region_key(source: tuple) -> tuple | None:
    if not all(isinstance(where, slice) for where in source):
        return None
    return tuple((where.start, where.stop) for where in source)


def preload(plan) -> dict:
    """Every chunk of the plan's source variables, decoded: ``(name, region) -> array``."""
    import numpy as np
    import zarr

    group = zarr.open_group(plan.location, mode="r")
    chunks = {}
    for name in plan.source.data_vars:
        array = group[str(name)]
        for coords in np.ndindex(*array.cdata_shape):
            region = tuple(
                slice(c * n, min((c + 1) * n, size))
                for c, n, size in zip(coords, array.chunks, array.shape, strict=True)
            )
            chunks[(str(name), _region_key(region))] = np.ascontiguousarray(array[region])
    return chunks


def main() -> None:
    from layerquantizer.dataset import _compress, _unit

    options = {"--preload", "--no-store"}
    chosen = {arg for arg in sys.argv[1:] if arg in options}
    sys.argv = [arg for arg in sys.argv if arg not in options]
    preloaded: dict = {}
    if "--preload" in chosen:
        read_region = _unit.read_region

        def read_preloaded(job):
            found = preloaded.get((job.variable, _region_key(tuple(job.source))))
            return (found, True) if found is not None else read_region(job)

        _unit.read_region = read_preloaded
    if "--no-store" in chosen:
        _unit._set = lambda store, key, value: None
    timers = Timers()
    for name in STEPS:
        setattr(_unit, name, timers.wrap(name, getattr(_unit, name)))
    chunk_encoder = _unit._chunk_encoder

    def timed_encoder(array, data):
        encode = chunk_encoder(array, data)
        return None if encode is None else timers.wrap("encode", encode)

    _unit._chunk_encoder = timed_encoder
    phase: dict[str, float] = {}
    write_plan = _compress._write_plan

    def timed_write_plan(*args, **kwargs):
        if "--preload" in chosen:
            preloaded.update(preload(args[0]))
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        phase["start"] = t0
        try:
            return write_plan(*args, **kwargs)
        finally:
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            phase["wall"] = time.perf_counter() - t0
            phase["cpu"] = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime

    _compress._write_plan = timed_write_plan
    # What the writing phase runs on the main thread besides submitting units.
    import xarray
    import zarr

    from layerquantizer.dataset import _destination, _resume

    outside = Timers()
    xarray.Dataset.to_zarr = outside.wrap("template to_zarr", xarray.Dataset.to_zarr)
    zarr.consolidate_metadata = outside.wrap("consolidate_metadata", zarr.consolidate_metadata)
    _resume.Ledger._write = outside.wrap("ledger writes", _resume.Ledger._write)
    _destination.write_marker = outside.wrap("write_marker", _destination.write_marker)
    _resume.Progress.start = outside.wrap("manifest", _resume.Progress.start)
    _resume.Progress.mark = outside.wrap("progress marks", _resume.Progress.mark)

    from cli.main import app

    sys.argv = ["lq", "compress", *sys.argv[1:], "--json"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        app()
    report = json.loads(out.getvalue())
    mib = report["timing"]["logical_bytes"] / 2**20
    if chosen:
        print(f"units as lq runs them but: {', '.join(sorted(chosen))}")
    print(f"{mib:.0f} MiB in {report['timing']['seconds']:.2f} s of writing "
          f"({report['timing']['mib_per_s']:.0f} MiB/s, {report['runner']})")  # fmt: skip
    print(f"writing phase: {phase['wall']:.2f} s, process CPU {phase['cpu']:.2f} s "
          f"({mib / phase['cpu']:.0f} MiB per CPU-s)")  # fmt: skip
    unit_cpu = sum(timers.sums["run_unit"][:2])
    print(f"outside the units (main thread, event loop, pool): "
          f"{phase['cpu'] - unit_cpu:.2f} CPU-s\n")  # fmt: skip
    print(
        "| step | CPU s | of a unit's CPU | user | system | run queue | blocked | faults | calls |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in sorted(timers.sums.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        user, system, wall, queue, faults, calls = row
        cpu = user + system
        print(f"| {name} | {cpu:.2f} | {cpu / unit_cpu:.0%} | {user:.2f} | {system:.2f} | "
              f"{queue:.2f} | {wall - cpu - queue:.2f} | {faults:.0f} | {calls:.0f} |")  # fmt: skip
    print("\noutside the units, on the main thread:\n")
    print("| step | wall s | CPU s | calls |")
    print("|---|---:|---:|---:|")
    for name, row in outside.sums.items():
        print(f"| {name} | {row[2]:.2f} | {row[0] + row[1]:.2f} | {row[5]:.0f} |")
    timeline(timers.units, phase)


def timeline(units: list[tuple[int, float, float, int, float]], phase: dict) -> None:
    """When the unit threads worked: the wait for the first unit, the gaps between units,
    the tail (threads done while another still runs), and the units by size."""
    start, end = phase["start"], phase["start"] + phase["wall"]
    threads = collections.defaultdict(list)
    for ident, t0, t1, _, _ in units:
        threads[ident].append((t0, t1))
    print(f"\ntimeline of the writing phase ({phase['wall']:.2f} s, {len(threads)} threads):")
    first = min(t0 for t0, _ in (s[0] for s in map(sorted, threads.values())))
    last = max(t1 for spans in threads.values() for _, t1 in spans)
    print(f"  before the first unit starts: {first - start:.2f} s (both threads idle)")
    print(f"  after the last unit ends:     {end - last:.2f} s")
    for ident, spans in threads.items():
        spans.sort()
        busy = sum(t1 - t0 for t0, t1 in spans)
        gaps = sum(b0 - a1 for (_, a1), (b0, _) in zip(spans, spans[1:], strict=False))
        print(f"  thread {ident % 10000:04d}: {len(spans)} units, busy {busy:.2f} s, "
              f"first at {spans[0][0] - start:.2f} s, last done at {spans[-1][1] - start:.2f} s, "
              f"gaps between units {gaps:.2f} s")  # fmt: skip
    sizes = collections.defaultdict(list)
    for _, t0, t1, nbytes, cpu in units:
        sizes[nbytes].append((t1 - t0, cpu))
    print("\n| unit MiB | units | wall ms per unit | CPU ms per unit | MiB per CPU-s |")
    print("|---:|---:|---:|---:|---:|")
    for nbytes, rows in sorted(sizes.items()):
        wall = sum(r[0] for r in rows) / len(rows)
        cpu = sum(r[1] for r in rows) / len(rows)
        print(f"| {nbytes / 2**20:.1f} | {len(rows)} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | "
              f"{nbytes / 2**20 / cpu if cpu else 0:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
