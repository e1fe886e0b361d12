"""``lq compress`` bookkeeping at the scale of the whole WeatherBench2 store (issue 9).

On the full-size metadata store (:func:`layerquantizer.synthetic.write_wb2_metadata_store`:
62 variables, 93,544 steps, 4.6 million write units with ``configs/era5.yaml``, data at the
first two steps only), without the codec's work:

1. The parent's CPU to make the job of every unit (what the runner is fed): seconds for
   the whole store, microseconds per unit.
2. Units per second where the source holds nothing (the store is empty after its first
   steps): a fresh run with the default runner, for ``--seconds``.
3. ``--resume`` with a million units recorded done (the whole of the first variables in
   plan order): the marker objects in DST, and the seconds from the start of
   ``lq compress --resume`` to the first chunk of a variable not recorded.

Example
-------
    python benchmarks/bench_resume.py --workdir /tmp/lq-resume --seconds 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "era5.yaml"


def lq() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def first_chunk(dst: Path, names: set[str]) -> str | None:
    for name in names:
        try:
            entries = os.listdir(dst / name)
        except FileNotFoundError:
            continue
        chunks = [e for e in entries if not e.startswith(".") and e != "zarr.json"]
        if chunks:
            return f"{name}/{chunks[0]}"
    return None


def job_generation(plan) -> tuple[float, int]:
    """CPU seconds of the parent to make every unit's job, and the number of units."""
    from layerquantizer.dataset._write import _UnitTables

    labels = {str(d): plan.source.indexes[d].values for d in plan.source.dims}
    started = time.process_time()
    tables = _UnitTables(plan, labels)
    units = 0
    run = uuid.uuid4().hex
    for name in plan.source.data_vars:
        for _ in tables.jobs(str(name), run, "/tmp/x.zarr", None):
            units += 1
    return time.process_time() - started, units


def empty_units_per_second(src: Path, dst: Path, seconds: float) -> float:
    from layerquantizer import dataset
    from layerquantizer.config import load_config

    shutil.rmtree(dst, ignore_errors=True)
    calls: list[tuple[float, int]] = []
    started = time.perf_counter()

    class Enough(Exception):
        pass

    def progress(done, *_):
        calls.append((time.perf_counter() - started, done))
        if calls[-1][0] > seconds:
            raise Enough

    try:
        dataset.compress(str(src), str(dst), config=load_config(CONFIG), progress=progress)
    except Enough:
        pass
    shutil.rmtree(dst, ignore_errors=True)
    after = [c for c in calls if c[1] > 4]  # past the units with data
    return (after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0])


def resume_start(src: Path, dst: Path, plan, done_units: int, patience: float) -> dict:
    from layerquantizer.dataset._resume import BATCH_UNITS, PROGRESS_DIR, Progress

    shutil.rmtree(dst, ignore_errors=True)
    argv = [*lq(), "compress", str(src), str(dst), "--config", str(CONFIG)]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    while not (dst / PROGRESS_DIR / "metadata").exists() and first.poll() is None:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    progress, recorded, done_names = Progress(str(dst)), 0, set()
    for name in plan.source.data_vars:
        size = plan.unit_grid(str(name)).size
        for batch in range(-(-size // BATCH_UNITS)):
            ordinals = range(batch * BATCH_UNITS, min(size, (batch + 1) * BATCH_UNITS))
            progress.write_batch(str(name), batch, {o: b"" for o in ordinals})
        recorded += size
        done_names.add(str(name))
        if recorded >= done_units:
            break
    markers = sum(len(files) for _, _, files in os.walk(dst / PROGRESS_DIR / "done"))
    names = {str(n) for n in plan.source.data_vars} - done_names
    started = time.monotonic()
    resumed = subprocess.Popen([*argv, "--resume"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    found = None
    while found is None and resumed.poll() is None and time.monotonic() - started < patience:
        found = first_chunk(dst, names)
        time.sleep(0.05)
    seconds = time.monotonic() - started
    os.killpg(resumed.pid, signal.SIGKILL)
    resumed.wait()
    shutil.rmtree(dst, ignore_errors=True)
    return {"recorded": recorded, "markers": markers, "first_chunk_s": seconds if found else None}


def main() -> None:
    from layerquantizer import dataset
    from layerquantizer.config import load_config
    from layerquantizer.synthetic import write_wb2_metadata_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lq-resume"))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--done-units", type=int, default=1_000_000)
    parser.add_argument("--patience", type=float, default=600.0)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / "wb2.zarr"
    if not (src / ".zmetadata").exists():
        shutil.rmtree(src, ignore_errors=True)
        write_wb2_metadata_store(str(src), data_time_steps=(0, 1))
    plan = dataset.plan_compress(dataset.open_dataset(str(src)), config=load_config(CONFIG))

    cpu, units = job_generation(plan)
    print(f"jobs of all {units:,} units: {cpu:.1f} s of CPU in the parent "
          f"({cpu / units * 1e6:.1f} us per unit)", flush=True)  # fmt: skip
    rate = empty_units_per_second(src, args.workdir / "empty.zarr", args.seconds)
    print(f"units whose source holds nothing: {rate:,.0f} per second", flush=True)
    resumed = resume_start(src, args.workdir / "resume.zarr", plan, args.done_units,
                           args.patience)  # fmt: skip
    start = resumed["first_chunk_s"]
    after = f"more than {args.patience:.0f}" if start is None else f"{start:.1f}"
    print(f"--resume with {resumed['recorded']:,} units done ({resumed['markers']:,} marker "
          f"objects): first new chunk after {after} s")  # fmt: skip


if __name__ == "__main__":
    main()
