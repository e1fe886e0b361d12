"""``lq compress --shards``: Zarr v3 shards holding the layerquantizer chunks, read by plain
zarr and xarray, resumed shard by shard, inspected and verified, locally and on the GCS
emulator. ``lq`` runs as a subprocess, as users run it, for each command a test checks;
the runs it compares with, and repeated refusals, go through the same app in this process
(:func:`lq_here`)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from layerquantizer import dataset
from layerquantizer.dataset._resume import PROGRESS_DIR, Progress
from layerquantizer.synthetic import sample_dataset, write_wb2_sample_store

pytestmark = pytest.mark.slow  # lq subprocesses, the emulator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "era5.yaml"
VARS = "temperature,geopotential"


def lq_command() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def lq(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*lq_command(), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lq {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def lq_here(*args, check: bool = True) -> subprocess.CompletedProcess:
    """The same ``lq`` app run in this process (Typer's runner), as a finished process: no
    interpreter to start."""
    from typer.testing import CliRunner

    from cli.main import app

    invoked = CliRunner().invoke(app, [*map(str, args)])
    result = subprocess.CompletedProcess(args, invoked.exit_code, invoked.stdout, invoked.stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"lq {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def read_with_plain_xarray(store: str, names: list[str]) -> dict[str, float]:
    """Open ``store`` in a fresh interpreter that imports xarray and zarr and nothing of
    ours (zarr finds the codec through its entry point); the sum of each variable's finite
    values, the same through zarr alone."""
    code = textwrap.dedent(
        f"""
        import json, sys, numpy as np, xarray as xr, zarr
        ds = xr.open_zarr({store!r})
        out = {{name: float(ds[name].sum(skipna=True)) for name in {names!r}}}
        for name in {names!r}:  # and zarr alone, the same values
            np.testing.assert_array_equal(zarr.open_array({store!r}, path=name)[:], ds[name])
        assert "layerquantizer.dataset" not in sys.modules
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def chunk_bytes(store: Path, name: str, coords: tuple, per_shard: tuple | None = None) -> bytes:
    """The stored bytes of chunk ``coords`` of ``name``: its object, or its part of its
    shard, found through the shard's index (at its end: offset and length per chunk as
    little-endian uint64, then a crc32c)."""
    if per_shard is None:
        return (store / name / "c").joinpath(*map(str, coords)).read_bytes()
    shard_coords = [c // n for c, n in zip(coords, per_shard, strict=True)]
    shard = (store / name / "c").joinpath(*map(str, shard_coords)).read_bytes()
    count = math.prod(per_shard)
    index = np.frombuffer(shard[-(16 * count + 4) : -4], "<u8").reshape(*per_shard, 2)
    local = tuple(c % n for c, n in zip(coords, per_shard, strict=True))
    offset, length = (int(v) for v in index[local])
    return shard[offset : offset + length]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """6 time steps, 5 levels, 37 x 72."""
    path = tmp_path_factory.mktemp("shards") / "src.zarr"
    dataset.write_sample(str(path), levels=5, grid=(37, 72), times=6)
    return path


# --------------------------------------------------------------------------------------
# Writing and reading


def test_shards_hold_n_time_steps_and_read_back_with_plain_xarray(sample, tmp_path):
    plain, sharded = tmp_path / "plain.zarr", tmp_path / "sharded.zarr"
    common = ("--vars", VARS, "--zarr-format", "3", "--json")
    before = json.loads(lq_here("compress", sample, plain, *common).stdout)
    after = json.loads(lq("compress", sample, sharded, *common, "--shards", "time=4").stdout)

    temperature = after["variables"]["temperature"]
    assert temperature["chunks"] == [1, 5, 37, 72]  # the chunks stay one time step
    assert temperature["shards"] == [4, 5, 37, 72]
    assert temperature["codec"] == "layerquantizer"
    assert temperature["settings"]["nbits"] == 16
    # 6 steps: 6 chunk objects before, 2 shards (4 + 2 steps) after, zarr.json aside.
    assert before["variables"]["temperature"]["objects"] == 6 + 1
    assert temperature["objects"] == 2 + 1
    assert before["variables"]["temperature"]["shards"] is None
    # A copied variable is sharded too, and every stored byte counts.
    assert after["variables"]["2m_temperature"]["shards"] == [4, 37, 72]
    assert after["variables"]["2m_temperature"]["objects"] == 2 + 1
    assert after["total"]["objects"] < before["total"]["objects"]

    for name in ("temperature", "2m_temperature"):
        xr.testing.assert_identical(xr.open_zarr(sharded)[name], xr.open_zarr(plain)[name])
    sums = read_with_plain_xarray(str(sharded), ["temperature", "geopotential"])
    assert sums["temperature"] == pytest.approx(float(xr.open_zarr(plain)["temperature"].sum()))
    assert lq_here("verify", sample, sharded).returncode == 0
    inspected = json.loads(lq_here("inspect", sharded, "--json").stdout)
    assert inspected["variables"]["temperature"]["shards"] == [4, 5, 37, 72]
    assert inspected["variables"]["temperature"]["mode"] == "nbits"
    assert inspected["variables"]["temperature"]["error_bound"] == pytest.approx(0.5 / 65535)
    table = subprocess.run(
        [*lq_command(), "inspect", str(sharded)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    ).stdout  # fmt: skip
    assert "1×5×37×72 in 4×5×37×72" in table


def test_shards_with_a_tolerance_and_the_whole_time_dimension(sample, tmp_path):
    dst = tmp_path / "out.zarr"
    report = json.loads(
        lq("compress", sample, dst, "--vars", VARS, "--zarr-format", "3", "--tolerance", "0.01",
           "--shards", "time=-1", "--json").stdout
    )  # fmt: skip
    assert report["variables"]["temperature"]["shards"] == [6, 5, 37, 72]
    assert report["variables"]["temperature"]["objects"] == 1 + 1
    assert report["variables"]["temperature"]["tolerance"] == 0.01
    verified = json.loads(lq_here("verify", sample, dst, "--json").stdout)
    assert verified["ok"] is True
    assert verified["variables"]["temperature"]["abs_bound"] < 0.011
    # --resume of the finished store: nothing to do with the same shards, refused with others.
    common = ("compress", sample, dst, "--vars", VARS, "--zarr-format", "3", "--tolerance",
              "0.01", "--resume")  # fmt: skip
    assert "already complete" in lq_here(*common, "--shards", "time=-1").stdout
    refused = lq_here(*common, "--shards", "time=2", check=False)
    assert refused.returncode == 2
    assert "written with other options (temperature shards (6, 5, 37, 72)" in refused.stderr


def test_wb2_schema_store_sharded_with_the_config(tmp_path):
    """Every variable of the WeatherBench2 schema: those with a time dimension in shards of
    4 steps, the static ones as they were (one chunk each)."""
    src = tmp_path / "wb2.zarr"
    write_wb2_sample_store(str(src), times=8, grid=(31, 60))
    plain, sharded = tmp_path / "plain.zarr", tmp_path / "sharded.zarr"
    common = ("--config", CONFIG, "--zarr-format", "3", "--json")
    before = json.loads(lq_here("compress", src, plain, *common).stdout)
    after = json.loads(lq("compress", src, sharded, *common, "--shards", "time=4").stdout)
    for name, entry in after["variables"].items():
        has_time = "time" in entry["dims"]
        assert (entry["shards"] is not None) == has_time, name
        if has_time:
            assert before["variables"][name]["objects"] == 8 + 1, name
            assert entry["objects"] <= 2 + 1, name
    assert after["total"]["objects"] < before["total"]["objects"] / 2
    # Sharding changes where the chunks are, not their bytes: the ratio stays, but for
    # each shard's index (16 bytes per chunk and a checksum; 1% of these 31 x 60 chunks).
    assert after["total"]["ratio"] == pytest.approx(before["total"]["ratio"], rel=0.03)
    verified = json.loads(lq_here("verify", src, sharded, "--json").stdout)
    assert verified["ok"] is True, [
        p for v in verified["variables"].values() for p in v["problems"]
    ]
    names = ["sea_surface_temperature", "soil_type", "total_precipitation_6hr"]
    sums = read_with_plain_xarray(str(sharded), names)
    for name in names:
        assert sums[name] == pytest.approx(float(xr.open_zarr(plain)[name].sum()), rel=1e-6)


def test_float64_and_packed_sources_are_encoded_in_shards_as_without(tmp_path):
    """float64 values (and packed int16, read decoded to float64) are quantized through
    float32 within the bound of the float64 values (_unit.float64_chunk), not cast by
    zarr first: in shards, the same chunks as without them, the edge shard included."""
    ds = sample_dataset(levels=2, grid=(19, 36), times=5, variables=["temperature"])
    # A narrow range for its magnitude: the float32 rounding matters (see float64_chunk).
    ds["t64"] = 1000.0 + ds["temperature"].astype(np.float64) * 1e-6
    ds["t64"][2] = np.nan  # a chunk of fill values inside a shard: not stored
    ds["packed"] = ds["temperature"].isel(level=0)
    src = tmp_path / "src.zarr"
    encoding = {"packed": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 250.0,
                           "_FillValue": -32768}}  # fmt: skip
    ds.to_zarr(src, zarr_format=3, consolidated=False, encoding=encoding)
    plain, sharded = tmp_path / "plain.zarr", tmp_path / "sharded.zarr"
    common = ("--vars", "t64,packed", "--zarr-format", "3", "--nbits", "12")
    lq_here("compress", src, plain, *common)
    lq("compress", src, sharded, *common, "--shards", "time=2")
    for name in ("t64", "packed"):
        back = xr.open_zarr(sharded)[name]
        assert back.encoding["shards"][0] == 2 and back.dtype == np.float32
        xr.testing.assert_identical(back.load(), xr.open_zarr(plain)[name].load())
    # Byte for byte: each chunk in a shard is the chunk written without shards.
    for name, coords in (("t64", (0, 0, 0, 0)), ("t64", (4, 0, 0, 0)), ("packed", (1, 0, 0))):
        per_shard = (2,) + (1,) * (len(coords) - 1)
        assert chunk_bytes(sharded, name, coords, per_shard) == chunk_bytes(plain, name, coords)
    verified = json.loads(lq_here("verify", src, sharded, "--json").stdout)
    assert verified["ok"] is True
    # A float64 value beyond the float32 range is refused in a shard as in a chunk (zarr
    # would cast it to infinity and store that).
    ds["t64"][3, 1, 2, 3] = 1e39
    huge = tmp_path / "huge.zarr"
    ds[["t64"]].to_zarr(huge, zarr_format=3, consolidated=False)
    for shards in ((), ("--shards", "time=2")):
        refused = lq("compress", huge, tmp_path / f"out{len(shards)}.zarr", "--vars", "t64",
                     "--zarr-format", "3", *shards, check=False)  # fmt: skip
        assert refused.returncode == 1, refused.stderr
        # One line: planning casts nothing (numpy's overflow warning came first before).
        (line,) = refused.stderr.strip().splitlines()
        assert "a value (1e+39) is beyond the float32 range" in line


def test_dry_run_counts_shards_as_the_objects_written(sample, tmp_path):
    common = ("compress", sample, tmp_path / "out.zarr", "--vars", VARS, "--zarr-format", "3",
              "--dry-run", "--json")  # fmt: skip
    before = json.loads(lq_here(*common).stdout)
    after = json.loads(lq(*common, "--shards", "time=4").stdout)
    assert before["variables"]["temperature"]["chunks"] == 6
    assert after["variables"]["temperature"]["chunks"] == 2
    assert after["variables"]["2m_temperature"]["chunks"] == 2
    assert not (tmp_path / "out.zarr").exists()


def test_dry_run_with_shards_samples_chunks_inside_them_and_says_so(sample, tmp_path):
    """A shard of 28 steps at 0.25 degree is 1.5 GB: the dry run reads a few chunks of
    one step inside the shards, not whole shards, scales the estimate per chunk to the
    shards, and says so (per variable the chunks and bytes it read)."""
    common = ("compress", sample, tmp_path / "out.zarr", "--vars", VARS, "--zarr-format", "3",
              "--dry-run", "--shards", "time=4")  # fmt: skip
    report = json.loads(lq(*common, "--json").stdout)
    step = 5 * 37 * 72 * 4  # one chunk of temperature: one step
    temperature = report["variables"]["temperature"]
    assert (temperature["chunks"], temperature["sampled_chunks"]) == (2, 3)
    assert temperature["sampled_bytes"] == 3 * step  # 3 chunks, not 3 shards of 4 steps
    assert report["variables"]["2m_temperature"]["sampled_bytes"] == 3 * step // 5
    assert report["total"]["sampled_bytes"] == sum(
        v["sampled_bytes"] for v in report["variables"].values()
    )
    # The estimate per chunk, scaled to the variable: its ratio is the samples'.
    assert 0 < temperature["estimated_stored_bytes"] < temperature["logical_bytes"]
    table = lq_here(*common).stdout
    assert "estimated from 3 sampled chunks per variable (chunks inside the shards" in table
    assert not (tmp_path / "out.zarr").exists()


def test_config_shards_key(sample, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("zarr_format: 3\nshards: {time: 2}\nvariables: {temperature: }\n")
    dst = tmp_path / "out.zarr"
    report = json.loads(lq("compress", sample, dst, "--config", config, "--json").stdout)
    assert report["variables"]["temperature"]["shards"] == [2, 5, 37, 72]
    # The command line overrides the config.
    other = tmp_path / "other.zarr"
    report = json.loads(
        lq_here("compress", sample, other, "--config", config, "--shards", "time=6",
                "--json").stdout
    )  # fmt: skip
    assert report["variables"]["temperature"]["shards"] == [6, 5, 37, 72]
    config.write_text("zarr_format: 3\nshards: {time: 0}\n")
    refused = lq_here("compress", sample, tmp_path / "x.zarr", "--config", config, check=False)
    assert refused.returncode == 2 and "'shards.time'" in refused.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--shards", "time=4"), "--shards needs --zarr-format 3"),
        (("--shards", "time=3", "--chunks", "time=2", "--zarr-format", "3"),
         "--shards time=3 is not a multiple of the chunks time=2"),
        (("--shards", "step=4", "--zarr-format", "3"), "--shards names unknown dimension(s) step"),
        (("--shards", "time=0", "--zarr-format", "3"), "--shards"),
    ],
    ids=["zarr2", "not-a-multiple", "unknown-dim", "zero"],
)  # fmt: skip
def test_bad_shards_are_one_line_requests(sample, tmp_path, request, args, expected):
    """lq as a subprocess for the first; the others are about the message, the same app
    run in process (Typer's runner) says it as lq does."""
    argv = ["compress", str(sample), str(tmp_path / "out.zarr"), "--vars", VARS, *args]
    if request.node.callspec.id == "zarr2":
        result = lq(*argv, check=False)
        code, stderr = result.returncode, result.stderr
    else:
        from typer.testing import CliRunner

        from cli.main import app

        result = CliRunner().invoke(app, argv)
        code, stderr = result.exit_code, result.stderr
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and expected in stderr, stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.zarr").exists()


def test_a_unit_covers_whole_shards_and_whole_source_chunks(tmp_path):
    """Source chunks of 3 steps, shards of 2: a unit cut at a source chunk's end would
    write half of shard 1 (steps 2-3) and another unit the other half, each rewriting the
    shard, racing. Units are cut only where both end: one unit of 3 shards here."""
    ds = sample_dataset(levels=2, grid=(19, 36), times=6, variables=["temperature"])
    src = tmp_path / "src.zarr"
    ds.to_zarr(src, zarr_format=3, consolidated=False, encoding={
        "temperature": {"chunks": (3, 2, 19, 36)},
    })  # fmt: skip
    plan = dataset.plan_compress(
        dataset.open_dataset(str(src)), variables=["temperature"], zarr_format=3,
        shards={"time": 2},
    )  # fmt: skip
    (task,) = plan.tasks(["temperature"])
    assert task.region["time"] == slice(0, 6) and task.chunks == 3
    layer = 2 * 19 * 36 * 4
    assert plan.unit_memory("temperature") == 2 * 6 * layer + 3 * layer  # and a source chunk
    # Chunks of one step, no shards: a unit is a source chunk's 3 steps.
    chunked = dataset.plan_compress(
        dataset.open_dataset(str(src)), variables=["temperature"], chunks={"time": 1}
    )
    assert chunked.unit_memory("temperature") == 2 * 3 * layer + 3 * layer
    for each in (plan, chunked):  # as the units themselves say
        edges = each.unit_grid("temperature").edges
        assert each._largest_unit("temperature", {}) == tuple(
            max(b - a for a, b in along) for along in edges
        )
    dst = tmp_path / "out.zarr"
    report = json.loads(
        lq("compress", src, dst, "--vars", "temperature", "--zarr-format", "3", "--shards",
           "time=2", "--workers", "2", "--json").stdout
    )  # fmt: skip
    assert report["variables"]["temperature"]["objects"] == 3 + 1
    assert lq_here("verify", src, dst).returncode == 0


def test_a_shard_that_cannot_fit_in_memory_is_refused(tmp_path):
    """A unit holds a whole shard: on the full-size WB2 store (metadata only) a shard of
    every time step (5 TB of temperature) is refused before DST exists, and a shard of
    4 steps (216 MB) planned."""
    from layerquantizer.synthetic import write_wb2_metadata_store

    src = tmp_path / "wb2-full.zarr"
    write_wb2_metadata_store(str(src), zarr_format=3)
    common = ("compress", src, tmp_path / "out.zarr", "--vars", "temperature", "--zarr-format",
              "3")  # fmt: skip
    refused = lq(*common, "--shards", "time=-1", check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "cannot write 'temperature': one shard (time=93544" in refused.stderr
    assert "pass smaller --shards" in refused.stderr
    planned = json.loads(lq_here(*common, "--shards", "time=4", "--dry-run", "--json").stdout)
    assert planned["variables"]["temperature"]["chunks"] == 93544 // 4
    assert not (tmp_path / "out.zarr").exists()


def test_the_units_at_once_are_no_more_than_can_each_hold_a_shard(tmp_path):
    """A unit holds a whole shard, once per worker thread. Before: the memory check counted
    one unit, so 16 threads each holding 3 GB shards of the WB2 store ran on a 16 GiB
    machine. Now no more units of a variable run at once than fit together (the run's
    description says how many)."""
    from layerquantizer.dataset._parallel import threads_that_fit
    from layerquantizer.synthetic import write_wb2_metadata_store

    src = tmp_path / "wb2-full.zarr"
    write_wb2_metadata_store(str(src), zarr_format=3)
    plan = dataset.plan_compress(
        dataset.open_dataset(str(src)), variables=["temperature", "2m_temperature"],
        zarr_format=3, shards={"time": 28},
    )  # fmt: skip
    step = 13 * 721 * 1440 * 4  # one time step of temperature: a source chunk
    # The shard decoded and encoded, and a source chunk: the largest unit of the plan.
    largest = plan.unit_memory("temperature")
    assert largest == 2 * 28 * step + step > plan.unit_memory("2m_temperature")
    gib = 2**30
    assert threads_that_fit(16, largest, 16 * gib) == 5  # 2.9 GiB each
    assert threads_that_fit(16, largest, 64 * gib) == 16
    assert threads_that_fit(2, largest, None) == 2  # memory unknown
    assert threads_that_fit(4, 5 * gib, 4 * gib) == 1  # one always (a larger unit is refused)


def test_the_memory_figure_is_the_control_groups_limit_where_lower(tmp_path):
    """In a container or a batch job the limit is the control group's, not the machine's:
    cgroup v2 (``memory.max``, "max" where unlimited) and v1 (``memory.limit_in_bytes``)."""
    from layerquantizer.dataset._plan import _cgroup_limit, memory_bytes

    root, groups = tmp_path / "cgroup", tmp_path / "self-cgroup"
    (root / "job").mkdir(parents=True)
    groups.write_text("0::/job\n")
    assert _cgroup_limit(str(root), str(groups)) is None  # no file: no limit known
    (root / "job" / "memory.max").write_text("max\n")
    assert _cgroup_limit(str(root), str(groups)) is None
    (root / "job" / "memory.max").write_text("2147483648\n")
    assert _cgroup_limit(str(root), str(groups)) == 2**31
    groups.write_text("4:memory:/pod\n3:cpu,cpuacct:/pod\n")
    (root / "memory" / "pod").mkdir(parents=True)
    (root / "memory" / "pod" / "memory.limit_in_bytes").write_text("1073741824\n")
    assert _cgroup_limit(str(root), str(groups)) == 2**30
    # Never more than the machine's physical memory, whatever the group says.
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_bytes(str(tmp_path / "none")) == physical
    assert memory_bytes() <= physical


def test_a_run_says_how_many_shards_fit_at_once(sample, tmp_path, monkeypatch):
    """The memory of this machine cannot be set for a test: the check reads a small
    figure instead, through the command a user runs (in process). All the threads asked
    run; the report says how many of the largest units fit at once."""
    from typer.testing import CliRunner

    import layerquantizer.dataset._plan as _plan
    from cli.main import app

    dst = tmp_path / "out.zarr"
    args = ["compress", str(sample), str(dst), "--vars", "temperature", "--zarr-format", "3",
            "--shards", "time=2", "--scheduler", "threads", "--workers", "3", "--json"]  # fmt: skip
    step = 5 * 37 * 72 * 4
    unit = 2 * 2 * step + step  # a shard of 2 steps, decoded and encoded, a source chunk
    monkeypatch.setattr(_plan, "memory_bytes", lambda: 2 * unit + unit // 2)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runner"] == (
        "3 threads (write units of up to 0.3 MiB: 2 at a time, as 3 would not fit in this "
        "machine's 0.6 MiB of memory)"
    )
    assert dataset.verify(str(sample), str(dst)).ok
    # The dry run estimates the time with the units that fit at once, per variable.
    import layerquantizer.dataset._dry_run as _dry_run

    monkeypatch.setattr(_dry_run, "memory_bytes", lambda: 2 * unit + unit // 2)
    estimate = dataset.dry_run(str(sample), str(tmp_path / "dry.zarr"), variables=["temperature"],
                               zarr_format=3, shards={"time": 2}, workers=3)  # fmt: skip
    assert estimate.threads == 3
    assert estimate.units_at_once == {
        name: 2 for name, v in estimate.variables.items() if v.chunks and "level" in
        xr.open_zarr(sample)[name].dims
    }  # fmt: skip
    # Where they fit, as many as asked.
    monkeypatch.setattr(_plan, "memory_bytes", lambda: 3 * unit)
    result = CliRunner().invoke(app, [*args, "--overwrite"])
    assert json.loads(result.stdout)["runner"] == "3 threads", result.output


def test_small_units_use_every_thread_beside_shards_that_fit_once(sample, tmp_path, monkeypatch):
    """Before: the thread count was cut for the whole run by the largest unit of any
    variable, so the 2-D variables (units 5 times smaller) ran one unit at a time on a
    machine whose memory holds one 3-D shard: 1 thread of 2. Now every thread runs, and
    units are started only while those running fit in memory together."""
    import threading

    from typer.testing import CliRunner

    import layerquantizer.dataset._parallel as _parallel
    import layerquantizer.dataset._plan as _plan
    from cli.main import app

    step3, step2 = 5 * 37 * 72 * 4, 37 * 72 * 4
    big = 2 * 2 * step3 + step3  # a shard of 2 steps of a 3-D variable, decoded, encoded, read
    monkeypatch.setattr(_plan, "memory_bytes", lambda: big + big // 2)
    # Two 2-D units must run at once to pass; never two 3-D ones.
    meet = threading.Barrier(2, timeout=30)
    lock, running, peak, small = threading.Lock(), {2: 0, 3: 0}, {2: 0, 3: 0}, []
    run_job = _parallel.run_job

    def watched(job, *args):
        rank = 3 if job.nbytes > 2 * step2 else 2
        with lock:
            running[rank] += 1
            peak[rank] = max(peak[rank], running[rank])
            if rank == 2:
                small.append(job)
            first_two = rank == 2 and len(small) <= 2
        try:
            if first_two:
                meet.wait()
            return run_job(job, *args)
        finally:
            with lock:
                running[rank] -= 1

    monkeypatch.setattr(_parallel, "run_job", watched)
    dst = tmp_path / "out.zarr"
    result = CliRunner().invoke(app, [
        "compress", str(sample), str(dst), "--vars", "temperature", "--zarr-format", "3",
        "--shards", "time=2", "--scheduler", "threads", "--workers", "2", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert peak == {2: 2, 3: 1}
    assert json.loads(result.stdout)["runner"] == (
        "2 threads (write units of up to 0.3 MiB: 1 at a time, as 2 would not fit in this "
        "machine's 0.4 MiB of memory)"
    )
    assert dataset.verify(str(sample), str(dst)).ok


# --------------------------------------------------------------------------------------
# Resume


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    """37 levels on a 2.5-degree grid, 16 time steps (as tests/test_scale.py's)."""
    path = tmp_path_factory.mktemp("medium") / "src.zarr"
    dataset.write_sample(str(path), levels=37, grid=(73, 144), times=16)
    return path


def test_resume_after_sigkill_works_shard_by_shard(medium, tmp_path):
    shards = ("--config", CONFIG, "--zarr-format", "3", "--shards", "time=4")
    reference = tmp_path / "reference.zarr"
    lq_here("compress", medium, reference, *shards)
    dst = tmp_path / "killed.zarr"
    process = subprocess.Popen(
        [*lq_command(), "compress", str(medium), str(dst), *map(str, shards)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done = dst / PROGRESS_DIR / "done"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if done.exists() and sum(len(files) for _, _, files in os.walk(done)) >= 2:
                break
            time.sleep(0.005)
        assert process.poll() is None, "lq compress ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    units = 10 * 4  # 10 variables, 16 steps in shards of 4: a unit is one shard
    completed = len(Progress(str(dst)).done_units())
    assert 2 <= completed < units, completed
    resumed = json.loads(lq("compress", medium, dst, *shards, "--resume", "--json").stdout)
    assert resumed["resume"]["units_resumed"] == completed
    assert resumed["resume"]["units_written"] == units - completed
    assert tree(dst) == tree(reference)
    assert lq_here("verify", medium, dst).returncode == 0


def test_resume_with_other_shards_is_refused(sample, tmp_path):
    dst = tmp_path / "out.zarr"
    plan = dataset.plan_compress(
        dataset.open_dataset(str(sample)), variables=["temperature"], zarr_format=3,
        shards={"time": 2},
    )  # fmt: skip
    written = []

    def stop_after_one(chunks_done, *_):
        written.append(chunks_done)
        if len(written) > 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dataset.write_plan(plan, str(dst), progress=stop_after_one, scheduler="synchronous")
    refused = lq("compress", sample, dst, "--vars", "temperature", "--zarr-format", "3",
                 "--shards", "time=6", "--resume", check=False)  # fmt: skip
    assert refused.returncode == 2
    assert "other options (shards.time: 2 -> 6)" in refused.stderr


# --------------------------------------------------------------------------------------
# Verify: missing shards and missing chunks inside a shard


@pytest.fixture(scope="module")
def sharded(sample, tmp_path_factory) -> Path:
    """``sample``'s VARS compressed in shards of 2 steps (16 bits, the default), once for
    the tests below; each breaks a copy of it."""
    dst = tmp_path_factory.mktemp("sharded") / "out.zarr"
    lq_here("compress", sample, dst, "--vars", VARS, "--zarr-format", "3", "--shards", "time=2")
    return dst


def _copy(store: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(store, tmp_path / store.name))


def test_verify_reports_a_deleted_shard_and_an_absent_inner_chunk(sample, sharded, tmp_path):
    import zarr

    dst = _copy(sharded, tmp_path)
    (dst / "temperature" / "c" / "1" / "0" / "0" / "0").unlink()  # steps 2 and 3
    # Inside the first shard of geopotential, drop the chunk of step 1: zarr rewrites the
    # shard without it (a chunk of fill values is not stored), and reads it as NaN.
    array = zarr.open_array(str(dst), path="geopotential", mode="r+")
    array[1:2] = np.nan
    result = lq("verify", sample, dst, "--json", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    missing = report["variables"]["temperature"]["problems"]
    assert [(p["kind"], p["chunk"]) for p in missing] == [
        ("missing_chunk", [2, 0, 0, 0]),
        ("missing_chunk", [3, 0, 0, 0]),
    ]
    assert "temperature/c/1/0/0/0" in missing[0]["message"]
    inner = report["variables"]["geopotential"]["problems"]
    assert [(p["kind"], p["chunk"]) for p in inner] == [("missing_chunk", [1, 0, 0, 0])]
    assert "absent from its shard geopotential/c/0/0/0/0" in inner[0]["message"]
    assert report["variables"]["2m_temperature"]["ok"] is True


def test_verify_reads_the_headers_of_the_chunks_inside_shards(sample, sharded, tmp_path):
    """Chunks encoded with fewer bits than the metadata promises are named inside a shard
    as they are in chunk objects: their headers are found through the shard's index."""
    claimed, loose = _copy(sharded, tmp_path), tmp_path / "loose.zarr"  # claimed: 16 bits
    common = ("--vars", "temperature", "--zarr-format", "3", "--shards", "time=2")
    lq_here("compress", sample, loose, *common, "--nbits", "8")
    shard = Path("temperature", "c", "1", "0", "0", "0")
    (claimed / shard).write_bytes((loose / shard).read_bytes())
    result = lq("verify", sample, claimed, "--json", check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["variables"]["temperature"]["problems"]
    mismatches = [p for p in problems if p["kind"] == "metadata_mismatch"]
    assert [p["chunk"] for p in mismatches] == [[2, 0, 0, 0], [3, 0, 0, 0]]
    assert "(temperature/c/1/0/0/0) is encoded with 8 bits" in mismatches[0]["message"]
    assert {tuple(p["chunk"]) for p in problems if p["kind"] == "bound"} <= {
        (2, 0, 0, 0), (3, 0, 0, 0),
    }  # fmt: skip


def test_verify_accepts_shards_and_inner_chunks_left_out_for_fill_values(tmp_path):
    """A chunk of only NaN in the source is not stored, inside a shard or as a whole
    shard: that is what zarr writes, and verify says ok."""
    src = tmp_path / "src.zarr"
    ds = sample_dataset(levels=2, grid=(19, 36), times=6, variables=["temperature"])
    ds["temperature"][1] = np.nan  # one chunk inside the first shard
    ds["temperature"][4:6] = np.nan  # the whole third shard
    ds.to_zarr(src, zarr_format=3, consolidated=False)
    dst = tmp_path / "out.zarr"
    lq("compress", src, dst, "--vars", "temperature", "--zarr-format", "3", "--shards", "time=2")
    assert not (dst / "temperature" / "c" / "2").exists()
    assert lq("verify", src, dst).returncode == 0


# --------------------------------------------------------------------------------------
# On the GCS emulator


def test_shards_on_gcs_end_to_end(gcs_bucket):
    from servers import emulator_filesystem

    src, dst = f"gs://{gcs_bucket}/src.zarr", f"gs://{gcs_bucket}/dst.zarr"
    lq_here("sample", src, "--levels", "3", "--grid", "48x24", "--times", "4")
    report = json.loads(
        lq("compress", src, dst, "--vars", VARS, "--zarr-format", "3", "--shards", "time=2",
           "--json").stdout
    )  # fmt: skip
    assert report["variables"]["temperature"]["shards"] == [2, 3, 24, 48]
    assert report["variables"]["temperature"]["objects"] == 2 + 1
    verified = lq_here("verify", src, dst, "--json", check=False)
    assert verified.returncode == 0, verified.stdout
    fs = emulator_filesystem()
    fs.rm_file(f"{gcs_bucket}/dst.zarr/temperature/c/1/0/0/0")
    result = lq("verify", src, dst, "--json", check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["variables"]["temperature"]["problems"]
    assert {p["kind"] for p in problems} == {"missing_chunk"}
    assert [p["chunk"] for p in problems] == [[2, 0, 0, 0], [3, 0, 0, 0]]


def test_resume_after_sigkill_on_gcs(gcs_bucket):
    from servers import emulator_filesystem

    src, dst = f"gs://{gcs_bucket}/src.zarr", f"gs://{gcs_bucket}/dst.zarr"
    lq_here("sample", src, "--levels", "13", "--grid", "144x73", "--times", "8")
    shards = ("--vars", VARS, "--zarr-format", "3", "--shards", "time=2")
    process = subprocess.Popen(
        [*lq_command(), "compress", src, dst, *shards],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fs = emulator_filesystem()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if Progress(dst).done_units():
                break
            time.sleep(0.02)
        assert process.poll() is None, "lq compress ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    units = 10 * 4  # 10 variables, 8 steps in shards of 2
    completed = len(Progress(dst).done_units())  # markers hold batches of units
    assert 1 <= completed < units, completed
    resumed = json.loads(lq("compress", src, dst, *shards, "--resume", "--json").stdout)
    assert resumed["resume"]["units_resumed"] == completed
    assert resumed["resume"]["units_written"] == units - completed
    assert resumed["variables"]["temperature"]["objects"] == 4 + 1
    assert not fs.find(f"{gcs_bucket}/dst.zarr/{PROGRESS_DIR}")
    assert json.loads(lq_here("verify", src, dst, "--json").stdout)["ok"] is True
