"""The test servers are real and usable: the GCS emulator round-trips Zarr stores written by
xarray (with and without the layerquantizer codecs), and the dask cluster runs tasks in its
own worker processes, including a distributed ``to_zarr`` onto the emulator."""

import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import xarray as xr

from layerquantizer import LayerQuantizer, max_abs_error
from layerquantizer.storage import open_store
from layerquantizer.zarr3 import LayerQuantizerCodec

pytestmark = pytest.mark.slow

# zarr-python warns on every consolidated Zarr v3 write; the tests write one on purpose.
V3_CONSOLIDATED = pytest.mark.filterwarnings(
    "ignore:Consolidated metadata is currently not part:zarr.errors.ZarrUserWarning"
)

ENVIRONMENT_AT_IMPORT = {
    name: os.environ.get(name)
    for name in ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
}


def era5_like(n_time: int = 4, n_lat: int = 31, n_lon: int = 40) -> xr.Dataset:
    """A small ERA5-like dataset: a float32 temperature on a regular lat/lon grid."""
    rng = np.random.default_rng(42)
    lat = np.linspace(90, -90, n_lat)
    lon = np.arange(n_lon) * 360 / n_lon
    field = (
        250 + 40 * np.cos(np.deg2rad(lat))[None, :, None] + rng.normal(0, 1, (n_time, n_lat, n_lon))
    )
    return xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), field.astype("float32"))},
        coords={
            "time": np.arange(n_time).astype("datetime64[h]").astype("datetime64[ns]"),
            "latitude": lat,
            "longitude": lon,
        },
        attrs={"title": "era5-like"},
    )


ENCODINGS = {
    "plain": lambda: {},
    "layerquantizer1": lambda: {"compressors": [LayerQuantizer(nbits=16)]},
    "zarr3-serializer": lambda: {"serializer": LayerQuantizerCodec(nbits=16), "compressors": None},
}

CASES = [
    pytest.param(2, "plain", id="v2-plain"),
    pytest.param(3, "plain", id="v3-plain", marks=V3_CONSOLIDATED),
    pytest.param(2, "layerquantizer1", id="v2-layerquantizer1"),
    pytest.param(3, "zarr3-serializer", id="v3-layerquantizer", marks=V3_CONSOLIDATED),
]


def write(dataset: xr.Dataset, store, zarr_format: int, encoding: str, **kwargs) -> None:
    dataset.to_zarr(
        store,
        zarr_format=zarr_format,
        consolidated=True,
        mode="w",
        encoding={"t2m": {"chunks": (1, 31, 40), **ENCODINGS[encoding]()}},
        **kwargs,
    )


def check_round_trip(back: xr.Dataset, expected: xr.Dataset, encoding: str) -> None:
    """Lossless encodings come back equal; lossy ones come back exactly as the same
    encoding written to local disk, and within the codec's error bound."""
    if encoding == "plain":
        xr.testing.assert_equal(back, expected)
        return
    t2m = expected.t2m.values
    bound = max_abs_error(float(t2m.min()), float(t2m.max()), 16) + 3e-5
    xr.testing.assert_allclose(back, expected, rtol=0, atol=bound)
    assert not back.t2m.equals(expected.t2m), "a 16-bit codec cannot be lossless on noise"


def test_a_server_that_exits_at_startup_fails_with_its_log(tmp_path):
    from servers import ServerProcess, ServerStartupError, wait_for

    crashing = ServerProcess.start(
        "crashing server",
        [sys.executable, "-c", "import sys; sys.exit('cannot bind 127.0.0.1:1: Address in use')"],
        tmp_path / "crashing.log",
    )
    with pytest.raises(ServerStartupError) as caught:
        wait_for(lambda: None, [crashing], "it answers")
    message = str(caught.value)
    assert message.startswith("crashing server exited with code 1 before it answers; command:")
    assert "cannot bind 127.0.0.1:1: Address in use" in message


def test_a_server_that_never_answers_times_out_with_its_log(tmp_path):
    from servers import ServerProcess, ServerStartupError, wait_for

    silent = ServerProcess.start(
        "silent server",
        [sys.executable, "-c", "import time; print('listening', flush=True); time.sleep(60)"],
        tmp_path / "silent.log",
    )
    try:
        with pytest.raises(ServerStartupError, match=r"(?s)timed out after 0 s.*listening"):
            wait_for(lambda: None, [silent], "it answers", timeout=0.3)
    finally:
        silent.stop()
    assert silent.popen.returncode is not None


def test_emulator_environment_reaches_subprocesses(gcs_emulator):
    assert gcs_emulator.startswith("http://127.0.0.1:")
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs_emulator
    assert os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    with urllib.request.urlopen(gcs_emulator + "/", timeout=5) as response:
        assert response.read() == b"OK"
    seen = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; print(os.environ['STORAGE_EMULATOR_HOST'],"
            " os.environ['GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert seen == [gcs_emulator, "false"]


def test_emulator_environment_is_restored_after_the_test():
    # Runs after the test above (pytest keeps file order); its fixture changed os.environ.
    for name, value in ENVIRONMENT_AT_IMPORT.items():
        assert os.environ.get(name) == value


def test_bucket_objects_round_trip(gcs_bucket):
    from servers import emulator_filesystem

    fs = emulator_filesystem()
    fs.pipe(f"{gcs_bucket}/a/b.bin", b"\x00\x01payload")
    assert fs.cat(f"{gcs_bucket}/a/b.bin") == b"\x00\x01payload"
    assert fs.ls(f"{gcs_bucket}/a") == [f"{gcs_bucket}/a/b.bin"]
    # A second, fresh filesystem (as another process would have) sees the object too.
    assert emulator_filesystem().info(f"{gcs_bucket}/a/b.bin")["size"] == 9


@pytest.mark.parametrize(("zarr_format", "encoding"), CASES)
def test_xarray_round_trip_through_gs_urls(gcs_bucket, zarr_format, encoding, tmp_path):
    """xarray's own gs:// handling (fsspec's registry, gcsfs) against the emulator."""
    url = f"gs://{gcs_bucket}/x.zarr"
    dataset = era5_like()
    write(dataset, url, zarr_format, encoding, storage_options={"token": "anon"})
    back = xr.open_zarr(url, consolidated=True, storage_options={"token": "anon"}).load()
    check_round_trip(back, dataset, encoding)

    local = tmp_path / "local.zarr"
    write(dataset, local, zarr_format, encoding)
    xr.testing.assert_equal(back, xr.open_zarr(local, consolidated=True).load())


@pytest.mark.parametrize(("zarr_format", "encoding"), CASES)
def test_xarray_round_trip_through_open_store(gcs_bucket, zarr_format, encoding, tmp_path):
    import zarr

    url = f"gs://{gcs_bucket}/x.zarr"
    dataset = era5_like()
    write(dataset, open_store(url, mode="w"), zarr_format, encoding)
    source = open_store(url)
    assert source.read_only
    back = xr.open_zarr(source, consolidated=True).load()
    check_round_trip(back, dataset, encoding)

    array = zarr.open_group(source, mode="r")["t2m"]
    assert array.metadata.zarr_format == zarr_format
    if encoding == "layerquantizer1":
        assert array.compressors == (LayerQuantizer(nbits=16),)
    if encoding == "zarr3-serializer":
        assert array.serializer == LayerQuantizerCodec(nbits=16)


def test_dask_tasks_run_in_the_worker_processes(dask_cluster):
    import dask.array as da
    from distributed import Client

    with Client(dask_cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2
        assert os.getpid() not in worker_pids

        task_pids = set(client.gather(client.map(lambda i: os.getpid(), range(16), pure=False)))
        assert task_pids <= worker_pids

        x = da.arange(10_000, chunks=1_000, dtype="float64")
        assert float((x**2).sum().compute()) == float((np.arange(10_000.0) ** 2).sum())


def test_dask_workers_keep_one_thread_per_library(dask_cluster):
    from distributed import Client

    def thread_settings(_):
        import numba
        import numcodecs.blosc
        import zarr

        return {
            "numba": numba.config.NUMBA_NUM_THREADS,
            "zarr": zarr.config.get("threading.max_workers"),
            "blosc env": os.environ["BLOSC_NTHREADS"],
            # dask runs tasks off the main thread, where numcodecs' Blosc uses one thread.
            "blosc threads": numcodecs.blosc._get_use_threads(),
            "omp": os.environ["OMP_NUM_THREADS"],
            "emulator": os.environ["STORAGE_EMULATOR_HOST"],
        }

    with Client(dask_cluster) as client:
        settings = client.gather(client.map(thread_settings, range(4), pure=False))
        assert client.nthreads() == dict.fromkeys(client.nthreads(), 1)
    for seen in settings:
        assert seen["numba"] == 1
        assert seen["zarr"] == 1
        assert seen["blosc env"] == "1"
        assert seen["blosc threads"] is False
        assert seen["omp"] == "1"
        assert seen["emulator"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("zarr_format", "encoding"),
    [
        pytest.param(2, "layerquantizer1", id="v2-layerquantizer1"),
        pytest.param(3, "zarr3-serializer", id="v3-layerquantizer", marks=V3_CONSOLIDATED),
    ],
)
def test_distributed_to_zarr_with_the_codec(
    dask_cluster, gcs_bucket, zarr_format, encoding, tmp_path
):
    from distributed import Client, get_task_stream

    url = f"gs://{gcs_bucket}/distributed.zarr"
    dataset = era5_like(n_time=8).chunk({"time": 1})
    with Client(dask_cluster) as client:
        worker_addresses = set(client.scheduler_info()["workers"])
        with get_task_stream(client) as stream:
            write(dataset, open_store(url, mode="w"), zarr_format, encoding, compute=True)
    workers_used = {task["worker"] for task in stream.data}
    assert workers_used and workers_used <= worker_addresses
    assert len(stream.data) >= 8  # at least one task per chunk ran on the cluster

    back = xr.open_zarr(open_store(url), consolidated=True).load()
    check_round_trip(back, dataset.compute(), encoding)
    local = tmp_path / "local.zarr"
    write(dataset.compute(), local, zarr_format, encoding)
    xr.testing.assert_equal(back, xr.open_zarr(local, consolidated=True).load())
