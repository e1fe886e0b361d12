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
    unit threads."""

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0] * 6)
        self.lock = threading.Lock()

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            r0, t0, q0 = _now()
            try:
                return fn(*args, **kwargs)
            finally:
                r1, t1, q1 = _now()
                with self.lock:
                    row = self.sums[name]
                    row[0] += r1.ru_utime - r0.ru_utime
                    row[1] += r1.ru_stime - r0.ru_stime
                    row[2] += t1 - t0
                    row[3] += q1 - q0
                    row[4] += r1.ru_minflt - r0.ru_minflt
                    row[5] += 1

        return timed


def main() -> None:
    from layerquantizer.dataset import _compress, _unit

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
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        try:
            return write_plan(*args, **kwargs)
        finally:
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            phase["wall"] = time.perf_counter() - t0
            phase["cpu"] = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime

    _compress._write_plan = timed_write_plan

    from cli.main import app

    sys.argv = ["lq", "compress", *sys.argv[1:], "--json"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        app()
    report = json.loads(out.getvalue())
    mib = report["timing"]["logical_bytes"] / 2**20
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


if __name__ == "__main__":
    main()
