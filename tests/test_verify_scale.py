"""``lq verify`` at scale (issue 9): ``--sample N`` (seeded, said in the report),
``--workers`` / ``--scheduler`` as for ``lq compress``, problem lists capped per kind; and
the whole flow on the WeatherBench2-schema sample store (compress, dry run, kill and
``--resume``, verify in full and sampled), locally and on the GCS emulator.

``lq`` runs as a subprocess, where users meet it; the dask cluster and the emulator are
those of tests/servers.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from layerquantizer import dataset
from layerquantizer.dataset._verify import MAX_PROBLEMS_PER_KIND, _chosen_chunks
from layerquantizer.synthetic import wb2_schema, write_wb2_sample_store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "era5.yaml"


def lq_command() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def lq(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*lq_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def lq_here(*args):
    """The same ``lq`` app run in this process (Typer's runner): for the runs a test
    compares with, or whose message a subprocess of the test already shows as users see it;
    no interpreter to start."""
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, [*map(str, args)])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[str, str]:
    """A sample store of 8 time steps and its compressed copy (temperature quantized)."""
    root = tmp_path_factory.mktemp("verify-small")
    src, dst = str(root / "src.zarr"), str(root / "dst.zarr")
    dataset.write_sample(src, levels=3, grid=(24, 48), times=8)
    dataset.compress(src, dst, variables=["temperature"], nbits=12)
    return src, dst


def _copy(path: str, tmp_path: Path) -> str:
    import shutil

    target = tmp_path / Path(path).name
    shutil.copytree(path, target)
    return str(target)


def _reader(dst: str, name: str):
    """The chunk reader verify builds for ``name`` (for its chunk keys and listing)."""
    from layerquantizer.dataset._inspect import inspect
    from layerquantizer.dataset._verify import _chunk_reader
    from layerquantizer.storage import filesystem

    ds = dataset.open_dataset(dst)
    store = inspect(dst)
    fs, root = filesystem(dst, "r")
    group = zarr.open_group(dst, mode="r")
    return _chunk_reader(
        name, ds[name], store.variables[name], group, store.keys, fs, root.rstrip("/"), dst,
        max(0, 2 - ds[name].ndim),
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# --sample


@pytest.mark.slow
def test_sample_checks_n_chunks_per_variable_and_says_which(small):
    """Before: no --sample, every chunk read. Now N chunks per variable, the sample and its
    seed in the text and the JSON, exit 0 on a good store."""
    src, dst = small
    result = lq("verify", src, dst, "--sample", "3")
    assert result.returncode == 0, result.stderr
    assert "sampled 3 of 8 chunks per variable, seed 0 (30 of 80 chunks checked)" in (result.stdout)
    assert "not sampled are not checked" in result.stdout
    result = lq("verify", src, dst, "--sample", "3", "--seed", "7", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar with --json
    report = json.loads(result.stdout)
    assert report["sample"] == {"chunks_per_variable": 3, "seed": 7}
    assert (report["chunks"], report["chunks_checked"]) == (80, 30)
    assert report["coverage"].startswith("sampled 3 of 8 chunks per variable, seed 7")
    for entry in report["variables"].values():
        assert (entry["chunks"], entry["chunks_checked"]) == (8, 3)
    full = json.loads(lq_here("verify", src, dst, "--json").stdout)
    assert full["sample"] is None and full["chunks_checked"] == full["chunks"] == 80
    assert full["coverage"] == "checked all 80 chunks"
    # A sample larger than the variable checks it whole.
    whole = dataset.verify(src, dst, variables=["temperature"], sample=100)
    assert whole.chunks_checked == whole.chunks == 8


def test_sample_is_seeded_per_variable(small):
    _, dst = small
    reader = _reader(dst, "temperature")
    grid = reader.grid
    assert grid == (8, 1, 1, 1)
    first, unchecked = _chosen_chunks(reader, grid, 3, 0)
    assert len(first) == 3 and first == sorted(first) and unchecked == 0
    assert _chosen_chunks(reader, grid, 3, 0) == (first, 0)
    assert any(_chosen_chunks(reader, grid, 3, seed)[0] != first for seed in range(1, 5))
    assert _chosen_chunks(reader, grid, 8, 0) == (None, 0)  # all of them
    other = _reader(dst, "geopotential")
    assert any(
        _chosen_chunks(other, grid, 3, seed) != _chosen_chunks(reader, grid, 3, seed)
        for seed in range(5)
    )


def test_sample_statistics_are_those_of_the_layers_sampled(small):
    """The statistics are kept for the layers checked only (issue 9: not for every layer of
    the variable): each level's errors, count and worst layer are those of the sampled
    steps, read here with xarray, and every level is reported."""
    src, dst = small
    chosen, _ = _chosen_chunks(_reader(dst, "temperature"), (8, 1, 1, 1), 3, 0)
    times = [coords[0] for coords in chosen]
    check = dataset.verify(src, dst, variables=["temperature"], sample=3).variables["temperature"]
    source = xr.open_zarr(src)["temperature"].isel(time=times)
    back = xr.open_zarr(dst)["temperature"].isel(time=times)
    assert [stats.level for stats in check.levels] == list(source["level"].values)
    for stats in check.levels:
        error = abs(back.sel(level=stats.level) - source.sel(level=stats.level))
        per_step = error.max(["latitude", "longitude"])
        assert stats.count == 3 * 24 * 48
        assert stats.max_abs_error == pytest.approx(float(per_step.max()), rel=1e-6)
        worst = per_step["time"].values[int(np.argmax(per_step.values))]
        assert stats.worst_layer == {"time": worst}
        assert stats.vmin == pytest.approx(float(source.sel(level=stats.level).min()))


def test_a_full_check_keeps_one_array_of_statistics(small):
    """Without --sample every layer is checked: its statistics are one array in layer order,
    as before issue 9's change, not an array and a dict entry per step sorted at the end
    (which cost 40 % more while checking and four times the statistics at the end: 270
    MiB, not 65, per pressure-level variable of the full-size store). The same results
    either way."""
    import tracemalloc
    import types

    from layerquantizer.dataset._verify import _Tally

    steps, levels = 4000, 13
    reader = types.SimpleNamespace(
        pad=0, chunk_sizes=(1, levels, 721, 1440), grid=(steps, 1, 1, 1),
        shape=(steps, levels, 721, 1440),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    stats = rng.random((steps, 1, levels, 1, 1, 7))
    tallies = []
    for every_chunk in (True, False):
        tracemalloc.start()
        tally = _Tally(reader, every_chunk=every_chunk)
        for step in rng.permutation(steps):  # in the order chunks happen to finish
            tally.add((int(step), 0, 0, 0), stats[step], [])
        layers, index = tally.layers_checked()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        tallies.append((layers, index, peak))
    (dense, dense_index, dense_peak), (blocks, blocks_index, _) = tallies
    np.testing.assert_array_equal(dense, blocks)
    np.testing.assert_array_equal(dense_index, blocks_index)
    needed = steps * levels * 7 * 8  # the statistics, float64
    assert dense_peak < 1.6 * needed, f"{dense_peak / needed:.2f} times the statistics"
    src, dst = small
    full = dataset.verify(src, dst, variables=["temperature"]).variables["temperature"]
    assert full.ok and len(full.levels) == 3


def test_sample_arguments_are_checked(small):
    src, dst = small
    with pytest.raises(dataset.RequestError, match="--sample must be a whole number"):
        dataset.verify(src, dst, sample=0)
    with pytest.raises(dataset.RequestError, match="--seed must be a whole number >= 0"):
        dataset.verify(src, dst, sample=2, seed=-1)
    with pytest.raises(dataset.RequestError, match="give --sample too"):
        dataset.verify(src, dst, seed=3)


def _not_sampled(dst: str, name: str, sample: int, seed: int) -> tuple[int, ...]:
    reader = _reader(dst, name)
    chosen, _ = _chosen_chunks(reader, (*reader.grid,), sample, seed)
    return next(c for c in np.ndindex(reader.grid) if c not in chosen)


@pytest.mark.slow
def test_sample_finds_missing_chunks_outside_it_but_not_corrupt_ones(small, tmp_path):
    """What a sample cannot see, and what it still sees: a chunk missing from the listing
    is found wherever it is (its source is read), a corrupt chunk outside the sample is not
    (the full verify finds it)."""
    src, dst = small
    dst = _copy(dst, tmp_path)
    reader = _reader(dst, "temperature")
    missing = _not_sampled(dst, "temperature", 2, 0)
    os.remove(Path(dst) / reader.key(missing))
    result = lq("verify", src, dst, "--sample", "2", "--json")
    assert result.returncode == 1, result.stderr
    problems = json.loads(result.stdout)["variables"]["temperature"]["problems"]
    assert [(p["kind"], tuple(p["chunk"])) for p in problems] == [("missing_chunk", missing)]
    assert json.loads(result.stdout)["variables"]["temperature"]["chunks_checked"] == 3

    dst2 = _copy(small[1], tmp_path / "b")
    reader = _reader(dst2, "geopotential")
    corrupt = _not_sampled(dst2, "geopotential", 2, 0)
    path = Path(dst2) / reader.key(corrupt)
    path.write_bytes(path.read_bytes()[:20])
    assert lq_here("verify", src, dst2, "--sample", "2").exit_code == 0
    result = lq("verify", src, dst2, "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["variables"]["geopotential"]["problems"]
    assert [(p["kind"], tuple(p["chunk"])) for p in problems] == [("corrupt_chunk", corrupt)]


# --------------------------------------------------------------------------------------
# --workers, --scheduler


@pytest.mark.slow
def test_scheduler_spellings_and_errors_are_those_of_compress(small, tmp_path):
    """Each message as ``lq verify`` prints it. The unreachable scheduler is waited for
    (dask's connect timeout, set to 1 s as a user may) while the other spellings are
    checked: lq as a subprocess for it and for an unknown scheduler, in process (Typer's
    runner, the same app) for the other messages and for the schedulers that run here."""
    from servers import free_port
    from typer.testing import CliRunner

    from cli.main import app

    src, dst = small
    address = f"tcp://127.0.0.1:{free_port()}"
    unreachable = subprocess.Popen(
        [*lq_command(), "verify", src, dst, "--scheduler", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},
    )
    try:
        result = lq("verify", src, dst, "--scheduler", "fast")
        assert result.returncode == 2 and "unknown scheduler 'fast'" in result.stderr
        assert result.stderr.count("\n") == 1
        runner = CliRunner()
        result = runner.invoke(app, ["verify", src, dst, "--scheduler", address, "--workers", "2"])
        assert result.exit_code == 2 and "--workers starts a local cluster" in result.stderr
        assert runner.invoke(app, ["verify", src, dst, "--workers", "0"]).exit_code == 2
        with pytest.raises(dataset.RequestError, match="memory:// stores live in one process"):
            dataset.verify("memory://lq-verify/x.zarr", dst, workers=2)
        for spelling in (
            ["--scheduler", "threads", "--workers", "1"],
            ["--scheduler", "synchronous"],
        ):
            result = runner.invoke(
                app, ["verify", src, dst, "--vars", "temperature", "--json", *spelling]
            )
            assert result.exit_code == 0, result.stderr
            assert json.loads(result.stdout)["ok"]
        _, stderr = unreachable.communicate(timeout=120)
    finally:
        if unreachable.poll() is None:
            unreachable.kill()
            unreachable.communicate()
    assert unreachable.returncode == 2, stderr
    assert stderr.startswith("lq: error: cannot reach the dask scheduler at tcp://")
    assert "wait longer than 1 s with DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=" in stderr
    assert stderr.count("\n") == 1


def _errors(report: dict) -> dict:
    return {
        name: (v["max_abs_error"], v["rmse"], v["chunks_checked"])
        for name, v in report["variables"].items()
    }


@pytest.mark.slow
def test_workers_start_a_local_cluster_with_the_same_report(small):
    """One local cluster: the same sample (same seed) checked there and here gives the same
    report (the full verify on a cluster is test_chunks_are_checked_on_the_cluster_workers)."""
    src, dst = small
    here = json.loads(lq_here("verify", src, dst, "--sample", "4", "--json").stdout)
    result = lq("verify", src, dst, "--workers", "2", "--sample", "4", "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    on_cluster = json.loads(result.stdout)
    assert on_cluster["chunks_checked"] == here["chunks_checked"] == 40
    assert _errors(on_cluster) == _errors(here)


@pytest.mark.slow
def test_chunks_are_checked_on_the_cluster_workers(dask_cluster, gcs_bucket, tmp_path):
    """The dask cluster of tests/servers.py reaches the emulator: gs:// stores on both.
    The stores are written and verified here in process (lq sample and compress to gs://
    as subprocesses: tests/test_shards.py); lq verify on the cluster as a subprocess."""
    from typer.testing import CliRunner

    from cli.main import app

    src, dst = f"gs://{gcs_bucket}/src.zarr", f"gs://{gcs_bucket}/dst.zarr"
    dataset.write_sample(src, levels=3, grid=(24, 48), times=3)
    dataset.compress(src, dst, variables=["temperature"])
    result = lq("verify", src, dst, "--scheduler", dask_cluster, "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["chunks_checked"] == 30
    here = CliRunner().invoke(app, ["verify", src, dst, "--json"])
    assert here.exit_code == 0, here.stderr
    assert _errors(json.loads(result.stdout)) == _errors(json.loads(here.stdout))


# --------------------------------------------------------------------------------------
# Problem lists are capped


@pytest.mark.slow
def test_problem_lists_are_capped_per_kind_with_a_count_of_the_rest(tmp_path):
    """Before: one JSON problem per bad chunk, uncapped (a million bad chunks, a million
    problems). Now the first MAX_PROBLEMS_PER_KIND of each kind, and a count of the rest."""
    steps = MAX_PROBLEMS_PER_KIND + 50
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    rng = np.random.default_rng(0)
    dims = ("time", "latitude", "longitude")
    ds = xr.Dataset(
        {name: (dims, rng.normal(size=(steps, 4, 8)).astype("f4")) for name in ("q", "t")},
        coords={"time": np.arange(steps), "latitude": np.arange(4.0), "longitude": np.arange(8.0)},
    )
    encoding = {name: {"chunks": (1, 4, 8)} for name in ("q", "t")}
    ds.to_zarr(src, zarr_format=2, encoding=encoding, consolidated=True)
    dataset.compress(str(src), str(dst), variables=["q"])  # t copied losslessly
    array = zarr.open_array(dst / "t", mode="r+")
    array[:] = array[:] + 1  # every chunk beyond the lossless bound
    result = lq("verify", src, dst, "--json")
    assert result.returncode == 1
    entry = json.loads(result.stdout)["variables"]["t"]
    assert len(entry["problems"]) == MAX_PROBLEMS_PER_KIND
    assert [p["chunk"][0] for p in entry["problems"]] == list(range(MAX_PROBLEMS_PER_KIND))
    assert entry["problems_omitted"] == {"bound": 50}
    assert not entry["ok"]
    text = lq("verify", src, dst)
    assert text.returncode == 1
    assert (
        f"... and {steps - 5} more problems of t (see --json, which leaves out 50 bound after "
        "the first of each kind)"
    ) in text.stdout


# --------------------------------------------------------------------------------------
# The WeatherBench2-schema sample store: the whole flow, locally and on the emulator


@pytest.fixture(scope="module")
def wb2_local(tmp_path_factory) -> str:
    """All 62 variables of the WB2 schema with data of their kind: 3 steps, 6 degrees."""
    path = tmp_path_factory.mktemp("wb2-flow") / "src.zarr"
    write_wb2_sample_store(str(path), times=3, grid=(31, 60))
    return str(path)


def _chunk_objects(location: str) -> int:
    """Data chunk objects written so far under ``location`` (local or on the emulator)."""
    if location.startswith("gs://"):
        from servers import emulator_filesystem

        paths = emulator_filesystem().find(location[len("gs://") :])
    else:
        paths = [str(p) for p in Path(location).rglob("*") if p.is_file()]
    names, root = set(wb2_schema()), Path(location).name
    return sum(
        1
        for p in map(Path, paths)
        if p.parent.name in names
        and p.parent.parent.name == root  # not the progress folder's markers
        and not p.name.startswith(".")
        and p.name != "zarr.json"
    )


def _kill_after_first_chunk(src: str, dst: str) -> None:
    process = subprocess.Popen(
        [*lq_command(), "compress", src, dst, "--config", str(CONFIG)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if _chunk_objects(dst) > 0:
                break
            time.sleep(0.01)
        assert process.poll() is None, "lq compress ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "gcs"])
def test_wb2_sample_store_whole_flow(where, wb2_local, request, tmp_path):
    """compress --dry-run --json, compress killed with SIGKILL then --resume, verify in full
    and with --sample, all through lq, on the store of the 62 WB2 variables (NaN over
    land, categorical fields) with configs/era5.yaml. The kill and the resume are lq
    subprocesses in both places, the dry run and the sampled text locally, the full verify
    on the emulator (locally, tests/test_full_scale.py runs it on this store); the other
    runs go through the same app in this process."""
    if where == "gcs":
        from servers import emulator_filesystem

        bucket = request.getfixturevalue("gcs_bucket")
        src, dst = f"gs://{bucket}/wb2.zarr", f"gs://{bucket}/wb2-lq.zarr"
        emulator_filesystem().put(wb2_local, f"{bucket}/wb2.zarr", recursive=True)
    else:
        src, dst = wb2_local, str(tmp_path / "wb2-lq.zarr")
    names = set(wb2_schema())

    run = lq if where == "local" else here
    planned = run("compress", src, dst, "--config", CONFIG, "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    # Every variable of the store has a treatment (the config names a few more: skipped).
    treatments = {name: plan["variables"][name]["treatment"] for name in names}
    assert set(treatments.values()) <= {"quantize", "copy", "drop"}
    assert plan["variables"]["temperature"]["treatment"] == "quantize"
    assert plan["variables"]["soil_type"]["treatment"] == "copy"
    assert plan["variables"]["temperature"]["estimated_stored_bytes"] > 0
    assert _chunk_objects(dst) == 0

    _kill_after_first_chunk(src, dst)
    resumed = lq("compress", src, dst, "--config", CONFIG, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resume"]["units_resumed"] >= 0

    run = here if where == "local" else lq
    full = run("verify", src, dst, "--json")
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr
    report = json.loads(full.stdout)
    assert report["ok"] and report["sample"] is None
    assert set(report["variables"]) | set(report["skipped"]) == names
    assert report["chunks_checked"] == report["chunks"]

    sampled = here("verify", src, dst, "--sample", "1", "--seed", "3", "--json")
    assert sampled.returncode == 0, sampled.stderr
    sample_report = json.loads(sampled.stdout)
    assert sample_report["sample"] == {"chunks_per_variable": 1, "seed": 3}
    assert sample_report["chunks_checked"] == len(sample_report["variables"])
    if where == "local":  # the text is drawn from the same report wherever the stores are
        text = lq("verify", src, dst, "--sample", "1")
        assert text.returncode == 0
        assert f"sampled 1 of 3 chunks per variable, seed 0 ({len(report['variables'])} of" in (
            text.stdout
        )


def here(*args) -> subprocess.CompletedProcess:
    """:func:`lq_here` as a finished process (``returncode``, ``stdout``, ``stderr``)."""
    result = lq_here(*args)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _stderr_on_a_terminal(*args) -> tuple[int, str]:
    """Run lq with stderr on a pseudo-terminal (where a progress bar is drawn)."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*lq_command(), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(follower)
    output = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal is closed once lq has ended
            break
        if not data:
            break
        output += data
    os.close(leader)
    return process.wait(120), output.decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_on_a_terminal_and_none_with_json(small):
    src, dst = small
    code, stderr = _stderr_on_a_terminal("verify", src, dst, "--vars", "temperature")
    assert code == 0 and "verifying" in stderr
    code, stderr = _stderr_on_a_terminal("verify", src, dst, "--vars", "temperature", "--json")
    assert code == 0 and stderr == ""


@pytest.mark.slow
def test_compress_progress_bar_on_a_terminal_and_none_with_json(small, tmp_path):
    """Before: lq compress --json drew its bar on a terminal (into what a script captures
    with 2>&1); now, as lq verify, a bar without --json and nothing on stderr with it."""
    src, _ = small
    args = ("compress", src, "--vars", "temperature", "--nbits", "12")
    code, stderr = _stderr_on_a_terminal(*args[:2], tmp_path / "bar.zarr", *args[2:])
    assert code == 0 and "writing" in stderr
    code, stderr = _stderr_on_a_terminal(*args[:2], tmp_path / "json.zarr", *args[2:], "--json")
    assert code == 0 and stderr == ""


@pytest.mark.slow
def test_many_skipped_variables_are_a_count_and_a_few_names(tmp_path):
    """Before: lq verify printed one line per variable it skipped (a store of many
    non-numeric variables filled the terminal). Now one line per reason, with the count and
    the first few names, as lq compress says them; --json keeps them all."""
    store = tmp_path / "dates.zarr"
    stamps = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
    data = {f"date{i}": ("time", stamps) for i in range(7)}
    data["temperature"] = (("time", "latitude", "longitude"), np.ones((2, 3, 4), "f4"))
    xr.Dataset(data).to_zarr(store, zarr_format=3, consolidated=False)
    text = subprocess.run(
        [*lq_command(), "verify", str(store), str(store)], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    [line] = [line for line in text.stdout.splitlines() if "not numeric" in line]
    assert line == (
        "not numeric (datetime64[ns], datetime64[ns]), skipped 7 variables: date0, date1, "
        "date2, date3, date4 and 2 more (--json lists them all)"
    )
    report = json.loads(
        subprocess.run(
            [*lq_command(), "verify", str(store), str(store), "--json"],
            capture_output=True, text=True, timeout=300,
        ).stdout
    )  # fmt: skip
    assert sorted(report["skipped"]) == [f"date{i}" for i in range(7)]


def test_sample_compares_at_most_n_absent_chunks_and_counts_the_rest(small, tmp_path):
    """A store may lack many chunks (lq leaves out those of fill values only): a sample
    compares N of the absent ones besides its own with the source, and says how many
    more it did not."""
    src, dst = small
    dst = _copy(dst, tmp_path)
    reader = _reader(dst, "geopotential")
    for coords in [(i, 0, 0, 0) for i in range(6)]:
        os.remove(Path(dst) / reader.key(coords))
    report = dataset.verify(src, dst, variables=["geopotential"], sample=1, seed=0)
    check = report.variables["geopotential"]
    missing = [p.chunk for p in check.problems if p.kind == "missing_chunk"]
    assert check.chunks_checked == 2 and not check.ok
    assert 1 <= len(missing) <= 2  # 2 if the sampled chunk is one of the absent
    assert check.chunks_absent_unchecked == 6 - len(missing)
    assert "absent ones beyond the sample's size were not compared" in report.coverage()
