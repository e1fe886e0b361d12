"""Real servers for the tests, started as processes on loopback: a GCS emulator and a dask cluster.

Registered in ``conftest.py``, so a test asks for them by name::

    @pytest.mark.slow
    def test_round_trip(gcs_bucket, dask_cluster):
        # STORAGE_EMULATOR_HOST points at the emulator while the test runs, so gcsfs, the
        # `lq` subprocesses the test starts and open_store("gs://...") all go there.
        store = open_store(f"gs://{gcs_bucket}/x.zarr", mode="w")
        with distributed.Client(dask_cluster):
            dataset.chunk({"time": 1}).to_zarr(store, zarr_format=2)

Fixtures:

``gcs_emulator_server`` (session)
    A ``gcp-storage-emulator`` process with in-memory storage on a free loopback port; its
    URL. Changes no environment variable.
``gcs_emulator`` (per test)
    The same URL, with ``STORAGE_EMULATOR_HOST`` and ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``
    in ``os.environ`` for the test's duration (restored afterwards).
``gcs_bucket`` (per test)
    The name of a new, empty bucket in the emulator; implies ``gcs_emulator``.
``dask_cluster`` (session)
    A ``dask scheduler`` process and :data:`N_WORKERS` single-threaded ``dask worker``
    processes on loopback; the scheduler's address. The workers run with :data:`WORKER_ENV`
    and with the emulator's environment, so whatever they open on ``gs://`` is the emulator.

Every process logs to a file under pytest's temporary directory; a process that fails to
start raises :class:`ServerStartupError` with the end of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

# The workers keep every library to one thread, as lq's own local cluster does.
from layerquantizer.dataset._parallel import WORKER_ENV

if TYPE_CHECKING:
    import gcsfs.core

T = TypeVar("T")

#: Seconds a server may take to answer before the fixture gives up.
STARTUP_TIMEOUT = 60.0

#: Seconds a stopped process gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

#: Worker processes in the dask cluster, one thread each: the machine has two cores.
N_WORKERS = 2

#: One thread per worker process for every library that would otherwise start one per core.
#: numcodecs starts Blosc with min(8, cores) threads on import; c-blosc honours

#: What makes gcsfs talk to the emulator; added to the workers' environment as well.
EMULATOR_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class ServerStartupError(RuntimeError):
    """A test server did not come up; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of asking.

    Another process may take it before the server binds it; :func:`_start_emulator` retries
    with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """A started server process and the file it logs to."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], log_path: Path, *, env: dict | None = None, cwd=None
    ) -> ServerProcess:
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )
        process = cls(name, popen, log_path)
        # A session interrupted before its fixtures finalize must not leave servers behind.
        atexit.register(process.stop)
        return process

    def log_tail(self, limit: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(log {self.log_path} unreadable: {error})"
        return text[-limit:] if text else "(empty log)"

    def failure(self, problem: str) -> ServerStartupError:
        return ServerStartupError(
            f"{self.name} {problem}; command: {' '.join(self.popen.args)}\n"
            f"--- end of {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within :data:`STOP_TIMEOUT`."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        atexit.unregister(self.stop)


def wait_for(
    ready: Callable[[], T | None],
    processes: list[ServerProcess],
    what: str,
    timeout: float = STARTUP_TIMEOUT,
) -> T:
    """Poll ``ready()`` until it returns something other than ``None``.

    Raises :class:`ServerStartupError` with the log of the first process that exits
    meanwhile, or of all of them at the timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = ready()
        if result is not None:
            return result
        for process in processes:
            if process.popen.poll() is not None:
                raise process.failure(f"exited with code {process.popen.returncode} before {what}")
        if time.monotonic() > deadline:
            raise ServerStartupError(
                f"timed out after {timeout:.0f} s waiting until {what}\n"
                + "\n".join(str(p.failure("log")) for p in processes)
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


# --- GCS emulator ---------------------------------------------------------------------------


def _emulator_answers(url: str) -> bool | None:
    try:
        with urllib.request.urlopen(url + "/", timeout=2) as response:
            return True if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


#: Runs the emulator's command line with a deeper listen queue. The emulator serves one
#: request at a time over HTTP/1.0, so every request is a new connection, and zarr sends
#: bursts of them; beyond the default queue of 5 the kernel drops the SYNs, and each client
#: waits the 1 s SYN retransmission timeout (a Zarr v2 write took 1.1 s instead of 0.13 s).
#:
#: It also answers a suffix range (``Range: bytes=-N``, the last N bytes) as GCS does; the
#: emulator ignores one and sends the whole object. Zarr reads a shard's index that way
#: (at its end), so a sharded array read back from the emulator failed its checksum.
#:
#: And in memory it no longer serialises the metadata of every object it holds (of every
#: test so far, and soft-deleted ones) to JSON at each write or delete, for a restart from
#: disk it never makes: over a session of thousands of objects each write cost more than
#: the last (0.1-0.2 s late in the suite, the server answering one request at a time).
_EMULATOR_MAIN = """
import re, sys, http.server
http.server.HTTPServer.request_queue_size = 256
from gcp_storage_emulator import storage
_write_config = storage.Storage._write_config_to_file
def write_config(self):
    if not self._use_memory_fs:
        _write_config(self)
storage.Storage._write_config_to_file = write_config
from gcp_storage_emulator.handlers import objects
_download = objects.download
def download(request, response, storage, *args, **kwargs):
    headers = request._request_handler.headers
    suffix = re.fullmatch(r"\\s*bytes=-([0-9]+)\\s*", headers.get("range") or "")
    if suffix:
        try:
            size = len(storage.get_file(request.params["bucket_name"], request.params["object_id"]))
        except Exception:
            size = None  # the emulator's own handler answers (not found, ...)
        if size is not None:
            headers.replace_header("range", f"bytes={max(0, size - int(suffix[1]))}-")
    return _download(request, response, storage, *args, **kwargs)
objects.download = download  # before the server module builds its table of handlers
from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""


#: The session's server processes by URL, for the per-test fixtures to check on.
_RUNNING: dict[str, ServerProcess] = {}


def _start_emulator(directory: Path, attempts: int = 3) -> tuple[ServerProcess, str]:
    for attempt in range(attempts):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = ServerProcess.start(
            "gcp-storage-emulator",
            [
                sys.executable,
                "-c",
                _EMULATOR_MAIN,
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--in-memory",
                "--quiet",
            ],
            directory / f"gcs-emulator-{attempt}.log",
            cwd=directory,
        )
        try:
            wait_for(lambda url=url: _emulator_answers(url), [process], f"{url} answers")
        except ServerStartupError:
            process.stop()
            # Someone took the port between free_port() and the server's bind: try another.
            if "Address already in use" in process.log_tail() and attempt + 1 < attempts:
                continue
            raise
        return process, url
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def gcs_emulator_server(tmp_path_factory) -> Iterator[str]:
    """URL of a session-wide ``gcp-storage-emulator`` with in-memory storage."""
    process, url = _start_emulator(tmp_path_factory.mktemp("gcs-emulator"))
    _RUNNING[url] = process
    yield url
    del _RUNNING[url]
    process.stop()


@pytest.fixture
def gcs_emulator(gcs_emulator_server, monkeypatch) -> Iterator[str]:
    """URL of the emulator, with the environment pointing gcsfs at it during the test.

    ``STORAGE_EMULATOR_HOST`` is read by gcsfs at every request, so it must stay set while
    anything talks to the emulator, and subprocesses inherit it.

    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is read once, when gcsfs is first imported, to
    choose the class behind ``gcsfs.GCSFileSystem`` and fsspec's ``gs://``: the experimental
    one asks a gRPC endpoint for each new bucket's layout, which against the emulator waits
    60 s for nothing. If gcsfs was imported before (by any test), the fixture points both
    names at the plain class for the test's duration instead.
    """
    process = _RUNNING[gcs_emulator_server]
    if process.popen.poll() is not None or not _emulator_answers(gcs_emulator_server):
        raise process.failure("stopped answering during the session (an earlier test broke it?)")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator_server)
    for name, value in EMULATOR_ENV.items():
        monkeypatch.setenv(name, value)
    import fsspec  # noqa: F401  (imports fsspec.registry)
    import gcsfs
    import gcsfs.core

    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        monkeypatch.setattr(gcsfs, "GCSFileSystem", gcsfs.core.GCSFileSystem)
        # fsspec.registry is the read-only view of this dict; the module is shadowed by it.
        registry = sys.modules["fsspec.registry"]._registry
        for protocol in gcsfs.core.GCSFileSystem.protocol:
            monkeypatch.setitem(registry, protocol, gcsfs.core.GCSFileSystem)
    yield gcs_emulator_server


def emulator_filesystem(url: str | None = None) -> gcsfs.core.GCSFileSystem:
    """A fresh, anonymous gcsfs filesystem on the emulator at ``url`` (default: the one in
    ``STORAGE_EMULATOR_HOST``), without fsspec's instance cache or a listings cache, so that
    it sees what other processes wrote."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(
        token="anon",
        endpoint_url=url or os.environ["STORAGE_EMULATOR_HOST"],
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def new_bucket(url: str | None = None, prefix: str = "lq-test") -> str:
    """Create a bucket with a unique name in the emulator and return the name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    emulator_filesystem(url).mkdir(name)
    return name


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
    """Name of a new, empty bucket in the emulator (the environment points at it)."""
    return new_bucket(gcs_emulator)


# --- dask cluster ---------------------------------------------------------------------------


def _scheduler_address(scheduler_file: Path) -> str | None:
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (FileNotFoundError, ValueError, KeyError):
        return None  # not written yet, or half written


def start_scheduler(directory: Path) -> tuple[ServerProcess, str]:
    """A ``dask scheduler`` on loopback with no workers, and its address once it answers."""
    scheduler_file = directory / "scheduler.json"
    scheduler = ServerProcess.start(
        "dask scheduler",
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        directory / "scheduler.log",
        cwd=directory,
    )
    address = wait_for(
        lambda: _scheduler_address(scheduler_file), [scheduler], "the scheduler file is written"
    )
    return scheduler, address


def start_worker(
    address: str, directory: Path, name: str, *, env: dict | None = None
) -> ServerProcess:
    """A single-threaded ``dask worker`` of the scheduler at ``address``, without a nanny
    (so that killing it kills the worker), with :data:`WORKER_ENV` and ``env``."""
    return ServerProcess.start(
        f"dask {name}",
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            # The worker is the process we started: no nanny to spawn it anew, which
            # halves the start-up time and keeps the pid known.
            "--no-nanny",
            "--no-dashboard",
            "--name",
            name,
            "--local-directory",
            str(directory / name),
            # Exit on its own if the scheduler is gone for good.
            "--death-timeout",
            "60",
        ],
        directory / f"{name}.log",
        env={**os.environ, **WORKER_ENV, **(env or {})},
        cwd=directory,
    )


@pytest.fixture(scope="session")
def dask_cluster(gcs_emulator_server, tmp_path_factory) -> Iterator[str]:
    """Address (``tcp://127.0.0.1:PORT``) of a dask scheduler with :data:`N_WORKERS`
    single-threaded worker processes, all on loopback."""
    from distributed import Client

    directory = tmp_path_factory.mktemp("dask-cluster")
    processes: list[ServerProcess] = []
    try:
        scheduler, address = start_scheduler(directory)
        processes.append(scheduler)
        env = {**EMULATOR_ENV, "STORAGE_EMULATOR_HOST": gcs_emulator_server}
        for index in range(N_WORKERS):
            processes.append(start_worker(address, directory, f"worker-{index}", env=env))
        with Client(address, timeout=STARTUP_TIMEOUT) as client:

            def registered() -> bool | None:
                return True if len(client.scheduler_info()["workers"]) >= N_WORKERS else None

            wait_for(registered, processes, f"{N_WORKERS} workers registered")
        yield address
    finally:
        # Workers first, so that they do not spend their death timeout reconnecting.
        for process in reversed(processes):
            with contextlib.suppress(Exception):
                process.stop()
