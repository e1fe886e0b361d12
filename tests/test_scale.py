"""Scale-out: resuming a killed ``lq compress``, dask clusters, gs:// end to end, the GIL.

The processes are real: ``lq`` runs as a subprocess and is killed with SIGKILL, the dask
cluster and the GCS emulator are those of tests/servers.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import xarray as xr

from layerquantizer import _grid, _kernels, dataset
from layerquantizer.codec import LayerQuantizer
from layerquantizer.dataset import DestinationExistsError, ResumeMismatchError
from layerquantizer.dataset._resume import PROGRESS_DIR, Progress, describe_plan, differences
from layerquantizer.synthetic import era5_like_field

pytestmark = pytest.mark.slow  # processes: lq subprocesses, clusters, the emulator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "era5.yaml"
#: dask's connect timeout in the environment: how long lq waits for a scheduler to answer.
CONNECT_TIMEOUT_ENV = "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"


def lq_command() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def lq(
    *args, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*lq_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env=env,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"lq {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def lq_here(*args, check: bool = True) -> subprocess.CompletedProcess:
    """The same ``lq`` app run in this process (Typer's runner), as a finished process: for
    runs whose command or message a subprocess of this file already shows as users meet it."""
    from typer.testing import CliRunner

    from cli.main import app

    invoked = CliRunner().invoke(app, [*map(str, args)])
    result = subprocess.CompletedProcess(args, invoked.exit_code, invoked.stdout, invoked.stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"lq {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def tree(path: str | Path) -> dict[str, bytes]:
    """Every object of a local store with its bytes."""
    root = Path(path)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_same_store(a: str | Path, b: str | Path) -> None:
    """Object by object: the same keys with the same bytes (metadata, attributes, chunks)."""
    left, right = tree(a), tree(b)
    assert sorted(left) == sorted(right)
    different = [key for key in left if left[key] != right[key]]
    assert not different, f"objects differ: {different[:5]}"


@pytest.fixture(scope="module")
def medium_store(tmp_path_factory) -> str:
    """37 levels on a 2.5-degree grid, 16 time steps: 10 variables, 160 write units,
    about 410 MiB, a second or two of compressing on 2 cores."""
    path = tmp_path_factory.mktemp("medium") / "src.zarr"
    dataset.write_sample(str(path), levels=37, grid=(73, 144), times=16)
    return str(path)


@pytest.fixture(scope="module")
def medium_reference(medium_store, tmp_path_factory) -> str:
    """The store an uninterrupted run writes, to compare resumed runs with."""
    path = tmp_path_factory.mktemp("reference") / "ref.zarr"
    dataset.compress(medium_store, str(path), config=_config())
    return str(path)


def _config():
    from layerquantizer.config import load_config

    return load_config(CONFIG)


# --------------------------------------------------------------------------------------
# Resume


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_store(
    medium_store, medium_reference, tmp_path
):
    dst = tmp_path / "killed.zarr"
    process = subprocess.Popen(
        [*lq_command(), "compress", medium_store, str(dst), "--config", str(CONFIG)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        # Kill once a few units are complete: chunks of others are being written then.
        while time.monotonic() < deadline and process.poll() is None:
            if len(Progress(str(dst)).done_units()) >= 3:
                break
            time.sleep(0.005)
        assert process.poll() is None, "lq compress ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    completed = len(Progress(str(dst)).done_units())
    assert 3 <= completed < 160, completed
    assert not (dst / ".zmetadata").exists()  # consolidated metadata comes last

    # Without --resume an existing destination is refused.
    refused = lq("compress", medium_store, dst, "--config", CONFIG, check=False)
    assert refused.returncode == 1
    assert "already exists; pass --overwrite to replace it, or --resume" in refused.stderr

    resumed = lq("compress", medium_store, dst, "--config", CONFIG, "--resume", "--json")
    report = json.loads(resumed.stdout)
    assert report["resume"]["units_resumed"] == completed
    assert report["resume"]["units_written"] == 160 - completed
    assert not (dst / PROGRESS_DIR).exists()
    assert_same_store(dst, medium_reference)
    assert lq_here("verify", medium_store, dst).returncode == 0


class _Interrupted(Exception):
    pass


def _interrupt_after(units: int):
    calls = []

    def progress(chunks_done, *_):
        calls.append(chunks_done)
        if len(calls) > units:
            raise _Interrupted

    return progress


def test_half_written_chunks_are_written_again(medium_store, medium_reference, tmp_path):
    dst = tmp_path / "half.zarr"
    with pytest.raises(_Interrupted):
        dataset.compress(
            medium_store, str(dst), config=_config(), scheduler="synchronous",
            progress=_interrupt_after(20),
        )  # fmt: skip
    done = Progress(str(dst)).done_units()
    assert len(done) == 20
    # A process killed while writing leaves, for units without a marker, chunk objects cut
    # short (written in place by another store, or by an older zarr) and temporary files.
    reference = tree(medium_reference)
    variables = set(dataset.inspect(medium_reference).variables)
    unfinished = [
        key for key in reference
        if key.split("/")[0] in variables and not key.split("/")[-1].startswith(".")
        and (key.split("/")[0], int(key.split("/")[-1].split(".")[0])) not in done
    ]  # fmt: skip
    assert len(unfinished) == 140
    for key in unfinished[:3]:
        (dst / key).write_bytes(reference[key][: len(reference[key]) // 2])
    stray = dst / unfinished[3]
    (stray.parent / f"{stray.name.rsplit('.', 1)[0]}.{'ab' * 16}.partial").write_bytes(b"cut")
    report = dataset.compress(medium_store, str(dst), config=_config(), resume=True)
    assert report.units_resumed == 20 and report.units_written == 140
    assert_same_store(dst, medium_reference)


def test_resume_when_nothing_was_written_yet(medium_store, medium_reference, tmp_path):
    dst = tmp_path / "early.zarr"
    with pytest.raises(_Interrupted):
        dataset.compress(
            medium_store, str(dst), config=_config(), progress=_interrupt_after(0),
            scheduler="synchronous",
        )  # fmt: skip
    assert Progress(str(dst)).done_units() == set()
    report = dataset.compress(medium_store, str(dst), config=_config(), resume=True)
    assert report.units_resumed == 0 and report.units_written == 160
    assert_same_store(dst, medium_reference)
    # A manifest cut short by a kill before anything else was written: started again.
    dst2 = tmp_path / "cut.zarr"
    (dst2 / PROGRESS_DIR).mkdir(parents=True)
    (dst2 / PROGRESS_DIR / "manifest.json").write_text('{"descr')
    dataset.compress(medium_store, str(dst2), config=_config(), resume=True)
    assert_same_store(dst2, medium_reference)
    # --resume on a destination that does not exist yet just writes it.
    dst3 = tmp_path / "new.zarr"
    assert dataset.compress(medium_store, str(dst3), config=_config(), resume=True).units_written
    assert_same_store(dst3, medium_reference)


def test_resume_of_a_finished_store_writes_nothing(medium_store, medium_reference, tmp_path):
    before = tree(medium_reference)
    result = lq("compress", medium_store, medium_reference, "--config", CONFIG, "--resume")
    assert f"{medium_reference} was already complete: nothing written" in " ".join(
        result.stdout.split()
    )
    assert tree(medium_reference) == before
    # ... unless it was written with other options.
    with pytest.raises(ResumeMismatchError, match=r"finished store written with other options"):
        dataset.compress(medium_store, medium_reference, config=_config(), nbits=12, resume=True)


def test_resume_refuses_other_options_and_other_stores(medium_store, sample_v2, tmp_path):
    dst = tmp_path / "other.zarr"
    with pytest.raises(_Interrupted):
        dataset.compress(
            medium_store, str(dst), config=_config(), progress=_interrupt_after(2),
            scheduler="synchronous",
        )  # fmt: skip
    result = lq("compress", medium_store, dst, "--config", CONFIG, "--nbits", "12", "--resume",
                check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "holds an interrupted run with other options (" in result.stderr
    # configs/era5.yaml quantizes the 2-D fields too: the first difference named, sorted.
    assert "variables.10m_u_component_of_wind.nbits: 16 -> 12" in result.stderr
    # Not an lq store at all: nothing to resume.
    with pytest.raises(DestinationExistsError, match="is not an interrupted lq compress run"):
        dataset.compress(medium_store, sample_v2, config=_config(), resume=True)
    # --overwrite removes an interrupted run, even one that wrote no metadata yet.
    dataset.compress(medium_store, str(dst), config=_config(), overwrite=True)
    assert not (dst / PROGRESS_DIR).exists()


def test_inspect_and_verify_ignore_the_progress_folder(medium_store, tmp_path):
    dst = tmp_path / "partial.zarr"
    with pytest.raises(_Interrupted):
        dataset.compress(
            medium_store, str(dst), variables=["temperature"], progress=_interrupt_after(1),
            scheduler="synchronous",
        )  # fmt: skip
    report = dataset.inspect(str(dst))
    files = [p for p in dst.rglob("*") if p.is_file() and PROGRESS_DIR not in p.parts]
    assert report.objects == len(files)
    assert (dst / PROGRESS_DIR / "manifest.json").exists()


def test_plan_descriptions_name_their_differences(medium_store):
    source = dataset.open_dataset(medium_store)
    a = describe_plan(dataset.plan_compress(source, variables=["temperature"]), medium_store)
    b = describe_plan(
        dataset.plan_compress(source, variables=["temperature"], levels=[1000], nbits=12),
        medium_store,
    )
    found = differences(a, b)
    assert "variables.temperature.nbits: 16 -> 12" in found
    assert "selection.level differs" in found
    assert differences(a, a) == []


# --------------------------------------------------------------------------------------
# Write paths


def test_short_path_writes_the_bytes_zarr_writes(sample_store, tmp_path, monkeypatch):
    """The direct read/encode/store path and zarr's own pipeline give identical stores."""
    from layerquantizer.dataset import _unit

    fast, slow = tmp_path / "fast.zarr", tmp_path / "slow.zarr"
    fmt = 3 if "v3" in sample_store else 2
    report = dataset.compress(
        sample_store, str(fast), variables=["temperature", "geopotential"], zarr_format=fmt
    )
    monkeypatch.setattr(_unit, "_chunk_encoder", lambda array, data: None)
    monkeypatch.setattr(_unit, "_raw_decoder", lambda array: None)
    dataset.compress(
        sample_store, str(slow), variables=["temperature", "geopotential"], zarr_format=fmt
    )
    assert_same_store(fast, slow)
    assert report.units_written == 30


def test_nan_chunks_are_not_stored_as_zarr_does(tmp_path):
    from layerquantizer.synthetic import sample_dataset

    ds = sample_dataset(levels=2, grid=(8, 16), times=3, variables=["temperature"])
    ds["temperature"][1] = np.nan
    src, dst = tmp_path / "nan.zarr", tmp_path / "out.zarr"
    ds.to_zarr(src, zarr_format=2, consolidated=True)
    dataset.compress(str(src), str(dst), variables=["temperature"])
    assert sorted(p.name for p in (dst / "temperature").iterdir() if p.name[0] != ".") == [
        "0.0.0.0", "2.0.0.0",
    ]  # fmt: skip
    assert dataset.verify(str(src), str(dst)).ok


def test_sources_with_cf_encoding_are_decoded(tmp_path):
    """Packed int16 with scale and offset: workers read it through xarray, decoded, to
    quantize it; a copy is read and written as stored."""
    values = np.linspace(200, 300, 2 * 8 * 16, dtype="float32").reshape(2, 8, 16)
    dims = ("time", "latitude", "longitude")
    ds = xr.Dataset({"t": (dims, values), "u": (dims, values - 250)})
    src, dst = tmp_path / "packed.zarr", tmp_path / "out.zarr"
    encoding = {"t": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 250.0,
                      "_FillValue": -32768}}  # fmt: skip
    ds.to_zarr(src, zarr_format=2, consolidated=True, encoding=encoding)
    plan = dataset.plan_compress(dataset.open_dataset(str(src)), variables=["t"])
    assert plan.raw_read == frozenset({"u"})
    plan = dataset.plan_compress(dataset.open_dataset(str(src)), variables=["u"])
    assert plan.raw_read == frozenset({"t", "u"})
    dataset.compress(str(src), str(dst), variables=["u"])
    back = xr.open_zarr(dst)
    xr.testing.assert_identical(back["t"].load(), xr.open_zarr(src)["t"].load())
    assert back["t"].encoding["dtype"] == np.int16
    assert dataset.verify(str(src), str(dst)).ok
    dataset.compress(str(src), str(dst), variables=["t"], overwrite=True)
    assert dataset.verify(str(src), str(dst)).ok


# --------------------------------------------------------------------------------------
# dask


@pytest.mark.slow
def test_units_are_encoded_on_the_cluster_workers(dask_cluster, sample_v2, tmp_path):
    from distributed import Client

    with Client(dask_cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
    on_cluster, local = tmp_path / "cluster.zarr", tmp_path / "local.zarr"
    report = dataset.compress(
        sample_v2, str(on_cluster), variables=["temperature", "geopotential"],
        scheduler=dask_cluster,
    )  # fmt: skip
    assert report.worker_pids and report.worker_pids <= worker_pids
    assert os.getpid() not in report.worker_pids
    assert report.runner.startswith(dask_cluster)
    dataset.compress(sample_v2, str(local), variables=["temperature", "geopotential"])
    assert_same_store(on_cluster, local)


@pytest.mark.slow
def test_workers_option_starts_a_local_cluster(sample_v2, tmp_path):
    report = dataset.compress(
        sample_v2, str(tmp_path / "o.zarr"), variables=["temperature"], workers=2
    )
    assert report.runner == "local cluster of 2 processes"
    assert os.getpid() not in report.worker_pids
    assert dataset.verify(sample_v2, str(tmp_path / "o.zarr")).ok


def test_scheduler_errors_are_one_line(sample_v2, tmp_path):
    from servers import free_port

    out = tmp_path / "o.zarr"
    result = lq("compress", sample_v2, out, "--vars", "temperature", "--scheduler", "fast",
                check=False)  # fmt: skip
    assert result.returncode == 2 and "unknown scheduler 'fast'" in result.stderr
    address = f"tcp://127.0.0.1:{free_port()}"
    # dask's own connect timeout, set as a user would, replaces lq's 10 s wait for an answer.
    env = {**os.environ, CONNECT_TIMEOUT_ENV: "1s"}
    result = lq("compress", sample_v2, tmp_path / "p.zarr", "--vars", "temperature",
                "--scheduler", address, check=False, timeout=120, env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("lq: error: cannot reach the dask scheduler at tcp://")
    assert f"wait longer than 1 s with {CONNECT_TIMEOUT_ENV}=" in result.stderr
    assert result.stderr.count("\n") == 1
    with pytest.raises(dataset.RequestError, match="memory:// stores live in one process"):
        dataset.compress(sample_v2, "memory://lq-scale/x.zarr", variables=["temperature"],
                         workers=2)  # fmt: skip


def test_connect_timeout_is_dasks_setting_where_set(sample_v2, tmp_path):
    """lq waits 10 s for a scheduler to answer, or dask's ``distributed.comm.timeouts.connect``
    where the user set it (dask's shipped 30 s counts as not set); the refusal says which."""
    import dask
    from servers import free_port

    from layerquantizer.dataset._parallel import DEFAULT_CONNECT_TIMEOUT, connect_timeout

    key = "distributed.comm.timeouts.connect"
    assert connect_timeout() == DEFAULT_CONNECT_TIMEOUT == 10.0
    with dask.config.set({key: "30s"}):  # dask's default, not a choice
        assert connect_timeout() == DEFAULT_CONNECT_TIMEOUT
    with dask.config.set({key: 45}):
        assert connect_timeout() == 45.0
    dst = tmp_path / "o.zarr"
    with dask.config.set({key: "500ms"}):
        assert connect_timeout() == 0.5
        with pytest.raises(dataset.RequestError, match=r"wait longer than 0\.5 s with DASK_"):
            dataset.compress(sample_v2, str(dst), variables=["temperature"],
                             scheduler=f"tcp://127.0.0.1:{free_port()}")  # fmt: skip
    assert not dst.exists()


# --------------------------------------------------------------------------------------
# gs:// end to end, over the emulator


@pytest.mark.slow
def test_gs_to_gs_end_to_end(gcs_bucket):
    src, dst = f"gs://{gcs_bucket}/src.zarr", f"gs://{gcs_bucket}/dst.zarr"
    lq("sample", src, "--levels", "3", "--grid", "48x24", "--times", "2")
    result = lq("compress", src, dst, "--vars", "temperature,geopotential", "--json")
    report = json.loads(result.stdout)
    assert report["variables"]["temperature"]["codec"] == "layerquantizer1"
    verified = json.loads(lq("verify", src, dst, "--json").stdout)
    assert verified["ok"] is True
    inspected = json.loads(lq("inspect", dst, "--json").stdout)
    assert inspected["total"] == report["total"]
    from servers import emulator_filesystem

    assert not emulator_filesystem().find(f"{gcs_bucket}/dst.zarr/{PROGRESS_DIR}")
    refused = lq_here("compress", src, dst, "--vars", "temperature", check=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr


@pytest.mark.slow
def test_gs_resume_keeps_the_units_done_and_redoes_the_changed(gcs_bucket):
    """On GCS: the batched markers (one object per variable here, not one per unit), read
    back on resume; the recorded units' source objects looked up concurrently; a unit whose
    source changed written again, the others skipped."""
    import zarr
    from servers import emulator_filesystem

    from layerquantizer.storage import open_store

    src, dst = f"gs://{gcs_bucket}/src.zarr", f"gs://{gcs_bucket}/dst.zarr"
    lq_here("sample", src, "--levels", "3", "--grid", "48x24", "--times", "6")
    with pytest.raises(_Interrupted):
        dataset.compress(
            src, dst, variables=["temperature"], scheduler="synchronous",
            progress=_interrupt_after(8),
        )  # fmt: skip
    done = Progress(dst).done_units()
    assert len(done) >= 8
    markers = emulator_filesystem().find(f"{gcs_bucket}/dst.zarr/{PROGRESS_DIR}/done")
    assert len(markers) == len({name for name, _ in done}) < len(done)
    name, ordinal = sorted(done)[0]
    array = zarr.open_array(open_store(src, "r+"), path=name, mode="r+")
    array[ordinal] = array[ordinal] + 1
    report = dataset.compress(src, dst, variables=["temperature"], resume=True)
    assert report.units_resumed == len(done) - 1
    assert report.units_written == 60 - len(done) + 1
    assert dataset.verify(src, dst).ok
    assert not emulator_filesystem().find(f"{gcs_bucket}/dst.zarr/{PROGRESS_DIR}")


@pytest.mark.slow
def test_gs_missing_bucket_or_source_is_one_line(gcs_bucket):
    result = lq("compress", "gs://lq-no-such-bucket/src.zarr", f"gs://{gcs_bucket}/o.zarr",
                "--vars", "t", check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "bucket 'lq-no-such-bucket' does not exist" in result.stderr
    result = lq_here("compress", f"gs://{gcs_bucket}/nothing.zarr", f"gs://{gcs_bucket}/o.zarr",
                     "--vars", "t", check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"lq: error: cannot open gs://{gcs_bucket}/nothing.zarr")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    result = lq_here("inspect", "gs://lq-no-such-bucket/x.zarr", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1


# --------------------------------------------------------------------------------------
# The GIL


def _dispatchers(module):
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, numba.core.registry.CPUDispatcher)
    }


def test_every_kernel_releases_the_gil():
    kernels = {**_dispatchers(_kernels), **_dispatchers(_grid)}
    assert len(kernels) >= 10
    assert {name for name, k in kernels.items() if not k.targetoptions.get("nogil")} == set()


def test_threads_encoding_at_once_give_the_same_bytes():
    fields = [
        era5_like_field(v, levels=[1000, 850, 500, 250], grid=(181, 360))
        for v in ("temperature", "geopotential")
    ]
    codec = LayerQuantizer(nbits=16)
    expected = [codec.encode(field) for field in fields]
    results: dict[int, list[bytes]] = {}

    def work(index: int) -> None:
        results[index] = [codec.encode(fields[index % 2]) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, encoded in results.items():
        assert all(e == expected[index % 2] for e in encoded)
