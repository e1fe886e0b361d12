"""The whole WeatherBench2 ERA5 store at full scale (issue 9): ``lq compress`` on the
full-size metadata store starts writing soon and in little memory, every variable has a
treatment, ``--dry-run`` prints the plan.

The full-size store is metadata only (:func:`layerquantizer.synthetic.write_wb2_metadata_store`:
62 variables, 93,544 time steps, built in a few seconds) with data at its first steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerquantizer.synthetic import wb2_schema, write_wb2_metadata_store

pytestmark = pytest.mark.slow  # lq runs as a subprocess

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "era5.yaml"
#: What lq compress may use on the full-size store before its first chunk (issue 9).
MEMORY_LIMIT = 1.5e9
#: Steps of the full-size store that hold data: the runs start there.
DATA_STEPS = (0, 1)


def lq_command() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def lq(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*lq_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def full_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wb2") / "wb2.zarr"
    write_wb2_metadata_store(str(path), data_time_steps=DATA_STEPS)
    return path


def _peak_rss(pid: int) -> int:
    """VmHWM of ``pid`` in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _first_chunk(dst: Path, names: set[str]) -> str | None:
    """A chunk object of a data variable in DST, if one is there."""
    for name in names:
        folder = dst / name
        try:
            entries = os.listdir(folder)
        except FileNotFoundError:
            continue
        chunks = [e for e in entries if not e.startswith(".") and e != "zarr.json"]
        if chunks:
            return f"{name}/{chunks[0]}"
    return None


@pytest.mark.parametrize(
    "subset",
    [pytest.param([], id="whole"), pytest.param(["--time", "1959-01-01:1959-12-31"], id="year")],
)
def test_full_size_store_first_chunk_soon_in_bounded_memory(full_store, tmp_path, subset):
    """Before: the whole store wrote no chunk within 120 s and grew past 6.9 GB (xarray's
    metadata write built a task per chunk of the template). Now planning does not grow
    with what will not be written: a chunk appears, below 1.5 GB of peak memory."""
    dst = tmp_path / "out.zarr"
    names = set(wb2_schema())
    process = subprocess.Popen(
        [*lq_command(), "compress", str(full_store), str(dst), "--config", str(CONFIG), *subset],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    peak, found = 0, None
    try:
        deadline = time.monotonic() + 600  # generous: the machine is shared
        while found is None and process.poll() is None and time.monotonic() < deadline:
            peak = max(peak, _peak_rss(process.pid))
            assert peak < MEMORY_LIMIT, f"lq compress reached {peak / 2**30:.2f} GiB"
            found = _first_chunk(dst, names)
            time.sleep(0.2)
        peak = max(peak, _peak_rss(process.pid))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
    assert found is not None, f"no chunk written; lq said: {stderr.decode()[-2000:]}"
    assert peak < MEMORY_LIMIT, f"lq compress reached {peak / 2**30:.2f} GiB"
