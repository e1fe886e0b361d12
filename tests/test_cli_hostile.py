"""``lq`` against hostile or odd input, as a user meets it: the console script in a
subprocess, one line on stderr, the exit status, and no destination left behind. One case
of each kind of mistake runs as a subprocess; the other messages of that kind come from the
same app run in this process (:func:`lq_here`), where a warning would fail the test."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

pytestmark = pytest.mark.slow  # lq subprocesses


def lq_command() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def chunks_written(dst: Path, *names: str) -> int:
    """Chunk objects of the variables ``names`` in ``dst``, before the ledger says so.

    The ledger records finished units in batches (every few seconds, and at the end), so a
    run small enough to end within one batch shows no units done until it has finished.
    """
    chunk = re.compile(r"\d+(\.\d+)*")
    return sum(1 for name in names for path in (dst / name).glob("*") if chunk.fullmatch(path.name))


def lq(*args, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*lq_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def lq_here(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The same ``lq`` app run in this process (Typer's runner, in ``cwd``), as a finished
    process: no interpreter to start."""
    from typer.testing import CliRunner

    from cli.main import app

    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        invoked = CliRunner().invoke(app, [*map(str, args)])
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, invoked.exit_code, invoked.stdout, invoked.stderr)


def assert_refused(result: subprocess.CompletedProcess, code: int, match: str) -> str:
    """One line ``lq: error: ...`` holding ``match``, exit ``code``, no exception names."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("lq: error: "), line
    assert match in line, line
    for raw in ("Error:", "Traceback", "Errno"):
        assert raw not in line, line
    return line


def _small(path: Path, **extra) -> str:
    """A 3-D float32 dataset with WeatherBench2 dims, plus ``extra`` data variables."""
    dims = ("time", "latitude", "longitude")
    ds = xr.Dataset(
        {"t": (dims, np.arange(24, dtype="float32").reshape(2, 3, 4)), **extra},
        coords={"time": np.array(["2020-01-01", "2020-01-02"], "datetime64[ns]")},
    )
    ds.to_zarr(path, mode="w-", zarr_format=2, consolidated=True)
    return str(path)


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> dict[str, str]:
    """Stores a user may point ``lq`` at: odd dtypes, damaged chunk metadata, a huge array.
    (Dates stored as numbers are copied as stored: see test_packed.py.)"""
    root = tmp_path_factory.mktemp("odd")
    dims = ("time", "latitude", "longitude")
    stores = {
        "complex": _small(root / "complex.zarr", c=(dims, np.zeros((2, 3, 4), "complex64"))),
        "strings": _small(root / "strings.zarr", s=(dims, np.full((2, 3, 4), "ab"))),
        "zero_chunks": _small(root / "zero.zarr"),
        "empty": _small(root / "empty.zarr", e=(("member",), np.zeros(0, "float32"))),
    }
    meta_path = Path(stores["zero_chunks"]) / "t" / ".zarray"
    meta = json.loads(meta_path.read_text())
    meta["chunks"] = [0, 3, 4]
    meta_path.write_text(json.dumps(meta))
    zarr.consolidate_metadata(stores["zero_chunks"])
    # 1e12 float32 values without a time dimension: metadata only, no chunk is stored.
    huge = root / "huge.zarr"
    group = zarr.open_group(huge, mode="w", zarr_format=2)
    group.create_array(
        "big", shape=(1_000_000, 1_000_000), chunks=(1000, 1000), dtype="float32",
        fill_value=float("nan"), attributes={"_ARRAY_DIMENSIONS": ["latitude", "longitude"]},
    )  # fmt: skip
    zarr.consolidate_metadata(huge)
    stores["huge"] = str(huge)
    return stores


@pytest.mark.parametrize(
    ("store", "args", "match"),
    [
        pytest.param("complex", [], "cannot copy 'c': its dtype complex64 is not a number",
                     id="complex"),
        pytest.param("strings", [], "cannot copy 's': its dtype <U2 is not a number",
                     id="strings"),
        pytest.param("zero_chunks", [], "the source's metadata gives 't' chunks (0, 3, 4): "
                     "chunk sizes must be positive", id="zero-source-chunks"),
        pytest.param("empty", [], "dimension 'member' of 'e' has no elements: nothing to write",
                     id="zero-size-dim"),
        pytest.param("huge", ["--vars", "big"], "cannot write 'big': one output chunk "
                     "(latitude=1000000, longitude=1000000) holds 3725.3 GiB", id="huge-unit"),
    ],
)  # fmt: skip
def test_hostile_sources_fail_before_dst_exists(odd, tmp_path, store, args, match):
    dst = tmp_path / "out.zarr"
    run = lq if store in ("complex", "huge") else lq_here
    result = run("compress", odd[store], dst, *(args or ["--vars", "t"]))
    assert_refused(result, 2, match)
    assert not dst.exists()


def test_negative_source_chunks_cannot_be_opened(tmp_path):
    # zarr itself refuses such metadata when the store is opened: an unreadable source.
    src = _small(tmp_path / "negative.zarr")
    # zarr refuses to consolidate such metadata: edit both documents.
    array, consolidated = Path(src) / "t" / ".zarray", Path(src) / ".zmetadata"
    meta = json.loads(array.read_text())
    meta["chunks"] = [-1, 3, 4]
    array.write_text(json.dumps(meta))
    document = json.loads(consolidated.read_text())
    document["metadata"]["t/.zarray"]["chunks"] = [-1, 3, 4]
    consolidated.write_text(json.dumps(document))
    dst = tmp_path / "out.zarr"
    result = lq("compress", src, dst, "--vars", "t")
    assert_refused(result, 1, "negative.zarr as a Zarr dataset: Expected all values to be non-neg")
    assert not dst.exists()


def test_a_huge_variable_in_small_chunks_is_planned_in_units_that_fit(odd):
    from layerquantizer import dataset

    plan = dataset.plan_compress(
        dataset.open_dataset(odd["huge"]), variables=["big"], chunks={"latitude": 1}
    )
    first = next(plan.tasks())
    assert first.nbytes <= dataset.MAX_UNIT_BYTES


@pytest.mark.parametrize(
    ("option", "match"),
    [
        pytest.param("time=0", "--chunks: expected DIM=SIZE pairs", id="zero"),
        pytest.param("latitude=-5", "--chunks: expected DIM=SIZE pairs", id="negative"),
    ],
)
def test_zero_or_negative_chunks_are_refused(sample_v2, tmp_path, option, match):
    dst = tmp_path / "out.zarr"
    assert_refused(lq("compress", sample_v2, dst, "--vars", "t", "--chunks", option), 2, match)
    config = tmp_path / "c.yaml"
    config.write_text(f"chunks: {{{option.replace('=', ': ')}}}\n")
    assert_refused(lq_here("compress", sample_v2, dst, "--config", config), 2, "must be a positive")
    assert not dst.exists()


# --------------------------------------------------------------------------------------
# A dask scheduler without workers, or losing them mid-run


@pytest.fixture(scope="module")
def many_units(tmp_path_factory) -> str:
    """160 write units (16 times x 10 variables), so that a run can be cut in the middle."""
    from layerquantizer import dataset

    path = tmp_path_factory.mktemp("many") / "src.zarr"
    dataset.write_sample(str(path), levels=37, grid=(73, 144), times=16)
    return str(path)


@pytest.fixture
def bare_scheduler(tmp_path) -> Iterator[tuple[str, Path]]:
    """A dask scheduler of its own (workers are killed here), with no workers yet."""
    from servers import start_scheduler

    scheduler, address = start_scheduler(tmp_path)
    try:
        yield address, tmp_path
    finally:
        scheduler.stop()


def test_scheduler_without_workers_fails_before_dst_exists(bare_scheduler, sample_v2, tmp_path):
    address, _ = bare_scheduler
    dst = tmp_path / "out.zarr"
    result = lq("compress", sample_v2, dst, "--vars", "temperature", "--scheduler", address,
                "--worker-timeout", "1", timeout=120)  # fmt: skip
    assert_refused(result, 2, f"the dask scheduler at {address} has no workers (waited 1 s)")
    assert not dst.exists()


def test_losing_every_worker_mid_run_fails_in_bounded_time(bare_scheduler, many_units):
    from servers import start_worker

    address, directory = bare_scheduler
    worker = start_worker(address, directory, "doomed")
    dst = directory / "out.zarr"
    argv = ["compress", many_units, str(dst), "--vars", "temperature", "--scheduler", address,
            "--worker-timeout", "3"]  # fmt: skip
    process = subprocess.Popen(
        [*lq_command(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if chunks_written(dst, "temperature") >= 4:
                break
            time.sleep(0.01)
        assert process.poll() is None, "lq compress ended before its worker could be killed"
        worker.popen.kill()
        worker.popen.wait(30)
        # Bounded: the worker timeout plus a poll, not forever (the timeout fails the test).
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        worker.stop()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_refused(result, 1, f"the dask scheduler at {address} has had no workers for 3 s")
    assert "run the same command with --resume" in stderr

    # The advice works: with a worker again, --resume finishes the store.
    start_worker(address, directory, "second")
    resumed = lq(*argv, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert lq("verify", many_units, dst).returncode == 0


# --------------------------------------------------------------------------------------
# Interrupts


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_says_what_was_written_and_how_to_finish(many_units, tmp_path, signum, code):
    dst = tmp_path / "out dir" / "out.zarr"  # a space: the printed command must quote it
    dst.parent.mkdir()
    # As from a terminal: a suite started in the background (`pytest &`, nohup) would hand
    # lq SIGINT ignored, and lq, like any program, leaves it ignored. A handler here is
    # SIG_DFL in the child.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [*lq_command(), "compress", many_units, str(dst), "--vars",
             "temperature,geopotential"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, ignored)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            # Two units at a time: with 6 chunks written, 4 units have finished.
            if chunks_written(dst, "temperature", "geopotential") >= 6:
                break
            time.sleep(0.005)
        assert process.poll() is None, "lq compress ended before it could be interrupted"
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    match = re.fullmatch(
        r"lq: interrupted: (\d+) of 160 chunks written to (.+); to finish, run: (.+)", lines[0]
    )
    assert match, lines[0]
    assert 3 <= int(match[1]) < 160 and match[2] == str(dst)
    command = shlex.split(match[3])
    assert command[-1] == "--resume" and str(dst) in command
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "resumed: " in finished.stdout
    assert lq("verify", many_units, dst).returncode == 0


def test_the_resume_command_replaces_overwrite():
    from cli.compress import resume_command

    assert resume_command(["lq", "compress", "a", "b", "--overwrite", "--json"]).endswith(
        "compress a b --json --resume"
    )
    assert resume_command(["lq", "compress", "a", "b", "--resume"]).count("--resume") == 1


# --------------------------------------------------------------------------------------
# One-line errors that name the path or option and the way out, not an exception


@pytest.fixture
def litter(tmp_path) -> Path:
    """A working folder with the things a user points lq at by mistake."""
    (tmp_path / "afile").write_text("not a store\n")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("a\n")
    (tmp_path / "bad-key.json").write_text("{bad\n")
    (tmp_path / "x.nc").write_bytes(b"CDF\x01" + bytes(60))
    (tmp_path / "era5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(60))
    (tmp_path / "x.grib").write_bytes(b"GRIB" + bytes(60))
    return tmp_path


#: One mistake of each kind runs as a subprocess: a path under a file, a bad key file, an
#: unsupported scheme, a file that is no Zarr store, a selection of nothing.
SUBPROCESS_MISTAKES = {
    "dst-under-a-file", "bad-token-json", "s3-source", "netcdf-source", "time-without-steps",
}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        pytest.param(["compress", "{src}", "afile/out.zarr", "--vars", "temperature"], 1,
                     "afile/out.zarr: {tmp}/afile is a file, not a directory; choose another "
                     "path", id="dst-under-a-file"),
        pytest.param(["sample", "afile/out.zarr"], 1,
                     "{tmp}/afile is a file, not a directory", id="sample-under-a-file"),
        pytest.param(["compress", "{src}", "out.zarr", "--vars", "t", "--gcs-token",
                      "bad-key.json"], 2, "--gcs-token: bad-key.json: not a JSON key file "
                     "(invalid JSON at line 1 column 2)", id="bad-token-json"),
        pytest.param(["inspect", "gs://b/x.zarr", "--gcs-token", "none.json"], 2,
                     "--gcs-token: none.json: no such file; pass a service-account JSON key",
                     id="missing-token-file"),
        pytest.param(["compress", "s3://bucket/era5.zarr", "out.zarr", "--vars", "t"], 2,
                     "s3://bucket/era5.zarr: unsupported scheme 's3'; use a local path",
                     id="s3-source"),
        pytest.param(["compress", "{src}", "http://host/out.zarr", "--vars", "t"], 2,
                     "http://host/out.zarr: unsupported scheme 'http'", id="http-destination"),
        pytest.param(["inspect", "gs://"], 2, "gs://: no bucket named; write gs://BUCKET/PATH",
                     id="no-bucket"),
        pytest.param(["compress", "afile", "out.zarr", "--vars", "t"], 1,
                     "afile as a Zarr dataset: it is a file, not a Zarr store (a directory)",
                     id="src-a-file"),
        pytest.param(["compress", "files", "out.zarr", "--vars", "t"], 1,
                     "no Zarr store there (no zarr.json, .zgroup, .zarray)",
                     id="src-dir-of-files"),
        pytest.param(["compress", "x.nc", "out.zarr", "--vars", "t"], 1,
                     "x.nc as a Zarr dataset: it is a netCDF file, and lq reads Zarr stores only; "
                     "convert it with "
                     "xr.open_dataset('x.nc').to_zarr('x.zarr')", id="netcdf-source"),
        pytest.param(["compress", "era5", "out.zarr", "--vars", "t"], 1,
                     "era5 as a Zarr dataset: it is a HDF5 or netCDF4 file, and lq reads Zarr ",
                     id="hdf5-source"),
        pytest.param(["verify", "x.grib", "{src}"], 1,
                     "it is a GRIB file, and lq reads Zarr stores only; convert it with "
                     "xr.open_dataset('x.grib', engine='cfgrib')", id="grib-source"),
        pytest.param(["inspect", "x.nc"], 1, "x.nc: it is a netCDF file, and lq reads Zarr",
                     id="inspect-netcdf"),
        pytest.param(["compress", "{src}", "out.zarr", "--vars", "temperature", "--time",
                      "2030-01-01:2030-02-01"], 2, "selects no time step; the source has 3",
                     id="time-without-steps"),
        pytest.param(["compress", "{src}", "out.zarr", "--vars", "temperature", "--levels",
                      "1,2"], 2, "level(s) 2 not in the source; available: 1, 70", id="levels"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_with_the_way_out(litter, sample_v2, args, code, match, request):
    args = [arg.format(src=sample_v2) for arg in args]
    if request.node.callspec.id in SUBPROCESS_MISTAKES:
        result = lq(*args, cwd=litter, timeout=120)
    else:
        result = lq_here(*args, cwd=litter)
    assert_refused(result, code, match.format(tmp=litter))
    assert not (litter / "out.zarr").exists()


# --------------------------------------------------------------------------------------
# Small things a new user tripped over


def test_version_and_usage_lines():
    from importlib.metadata import version

    result = lq("--version")
    assert (
        result.returncode == 0
        and result.stdout == f"lq (layerquantizer) {version('layerquantizer')}\n"
    )
    for command, usage in [("compress", "SRC DST"), ("verify", "SRC DST"), ("inspect", "STORE"),
                           ("sample", "DST"), ("advise", "SRC")]:  # fmt: skip
        result = lq(command, "--help", timeout=60)
        assert f"Usage: lq {command} [OPTIONS] {usage}" in result.stdout, result.stdout


def test_help_shows_every_option_text_whole():
    # Rich reads "[default: all shared]" in a help text as markup and drops it: `lq verify
    # --help` said "Variables to check, comma-separated ." Every text must reach the screen.
    import typer

    from cli.main import app

    wide = {**os.environ, "COLUMNS": "2000"}  # one line per option: no wrapping to undo
    for name, command in typer.main.get_command(app).commands.items():
        shown = subprocess.run(
            [*lq_command(), name, "--help"], capture_output=True, text=True, env=wide, timeout=60
        ).stdout
        texts = [command.help.split("\n\n")[0]]
        texts += [param.help for param in command.params if getattr(param, "help", None)]
        for text in texts:
            assert " ".join(text.split()) in " ".join(shown.split()), (name, text)


def test_command_list_flows_each_summary_as_one_paragraph():
    # `lq --help` kept the docstrings' line breaks: at 80 columns "every other" ended one
    # line and "variable is copied" stood alone on the next. Summaries reflow to the width.
    import inspect as inspect_module

    import typer

    from cli.main import app

    wide = {**os.environ, "COLUMNS": "2000"}
    shown = subprocess.run(
        [*lq_command(), "--help"], capture_output=True, text=True, env=wide, timeout=60
    ).stdout
    for name, command in typer.main.get_command(app).commands.items():
        summary = " ".join(inspect_module.getdoc(command.callback).split("\n\n")[0].split())
        assert any(summary in line for line in shown.splitlines()), (name, summary)


def test_every_command_has_json_and_counts_read_right(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    for command in ("compress", "verify", "inspect", "sample", "advise"):
        assert "--json" in runner.invoke(app, [command, "--help"]).stdout, command
    src = tmp_path / "one.zarr"
    result = runner.invoke(app, ["sample", str(src), "--levels", "1", "--grid", "24x13",
                                 "--times", "1", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sizes"] == {"time": 1, "level": 1, "latitude": 13, "longitude": 24}
    assert "temperature" in report["variables"] and report["zarr_format"] == 2
    dst = tmp_path / "out.zarr"
    result = runner.invoke(app, ["compress", str(src), str(dst), "--vars", "temperature"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["verify", str(src), str(dst), "--vars", "temperature"])
    assert "ok: 1 variable within its bound\n" in result.stdout


def test_doctests_leave_no_folder_in_tmp(tmp_path):
    """The examples call tempfile.mkdtemp(); under pytest their folders are pytest's."""
    root = Path(__file__).resolve().parents[1]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "layerquantizer"],
        cwd=root, env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    assert [p.name for p in tmp.iterdir() if not p.name.startswith("pytest-of-")] == []
