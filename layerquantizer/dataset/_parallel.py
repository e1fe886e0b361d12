"""Where the write units of ``lq compress`` run: threads here, a local cluster, or a cluster.

========================  ==============================================================
``scheduler``             runs the units
========================  ==============================================================
None (default)            in this process, one thread per core (see :func:`open_runner`)
``"threads"``             the same, ``workers`` threads
``"synchronous"``         one at a time in the calling thread (debugging)
``"processes"``           a new ``distributed.LocalCluster`` of ``workers`` single-threaded
                          processes (``workers=N`` alone means this too)
``"tcp://HOST:PORT"``     the workers of an existing dask.distributed scheduler
========================  ==============================================================

Units are submitted a few per worker thread at a time (:func:`run_jobs`), never as one
graph: a full ERA5 run has over half a million of them, and a bounded number in flight
keeps the scheduler's memory and the client's flat whatever the size of the job. Each
unit reads its own source region and writes its own chunks, so nothing but a small
description travels to the workers and a small summary back.

Every worker process keeps its libraries to one thread
(:func:`layerquantizer.dataset._unit.configure_process`); threads in the caller's process
change none of its settings (``lq`` tunes its own process's allocator, see ``cli/compress.py``):
the codec's numba kernels release the GIL, so the parallelism is dask's threads or
processes, and Blosc's or zarr's own pools would only oversubscribe the cores.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from layerquantizer.dataset._unit import (
    MALLOC_ENV_VALUES,
    CheckJob,
    UnitDone,
    UnitJob,
    run_job,
)

#: Units in flight per worker thread: enough that a worker finds its next unit waiting.
IN_FLIGHT_PER_THREAD = 2

#: Seconds a dask cluster may be without workers (at the start, or after losing them all)
#: before the run gives up (``--worker-timeout``).
DEFAULT_WORKER_TIMEOUT = 180.0

#: Seconds to wait for a dask scheduler to answer (it may still be starting) unless dask's own
#: ``distributed.comm.timeouts.connect`` is set (see :func:`connect_timeout`).
DEFAULT_CONNECT_TIMEOUT = 10.0

#: The environment variable of dask's connect timeout, named in the refusal as the way out.
CONNECT_TIMEOUT_ENV = "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"

#: Environment of the worker processes of a local cluster: one thread per library.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "BLOSC_NTHREADS": "1",
    "ZARR_THREADING__MAX_WORKERS": "1",
    **{name: str(value) for name, value in MALLOC_ENV_VALUES.items()},
}

_LOCAL_SCHEDULERS = ("threads", "synchronous", "processes")


class SchedulerError(ValueError):
    """The scheduler asked for cannot be used; the message says why and what to do."""


class WorkersLostError(RuntimeError):
    """The cluster has had no worker for longer than the worker timeout, mid-run."""


@dataclasses.dataclass
class Runner:
    """Submits units somewhere; see :func:`open_runner`.

    Attributes
    ----------
    executor : concurrent.futures.Executor
        Where :func:`run_unit` calls go.
    threads : int
        Worker threads in all (for the number of units in flight).
    description : str
        For reports: ``"2 threads"``, ``"local cluster of 4 processes"``, the address.
    distributed : bool
        Whether units run in other processes, which then cannot see ``memory://`` stores.
    count_workers : callable, optional
        The number of workers the cluster has now, for clusters that may lose them all.
    worker_timeout : float
        Seconds without a worker before :func:`run_jobs` gives up.
    memory : int, optional
        Bytes the units in flight may hold together (this machine's memory, for threads
        here and a local cluster); None where unknown or on a scheduler's workers.
    """

    executor: cf.Executor
    threads: int
    description: str
    distributed: bool
    count_workers: Callable[[], int] | None = None
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT
    memory: int | None = None

    def submit(self, job: UnitJob | CheckJob) -> cf.Future:
        # Worker processes run one unit per thread: zarr's own codec pool gets one thread.
        return self.executor.submit(run_job, job, 1 if self.distributed else None)


class _InlineExecutor(cf.Executor):
    """Runs each call at submission, in the calling thread."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


def threads_that_fit(threads: int, unit_bytes: int, memory: int | None) -> int:
    """How many of ``threads`` worker threads (or single-threaded processes of this machine)
    can each hold a write unit of ``unit_bytes`` at the same time in ``memory`` bytes: at
    least one, since :func:`~layerquantizer.dataset._plan.plan_compress` refuses a unit that
    cannot fit alone. ``memory`` None (unknown): all of them.

    >>> threads_that_fit(16, unit_bytes=9 * 2**30, memory=64 * 2**30)
    7
    >>> threads_that_fit(2, unit_bytes=300 * 2**20, memory=8 * 2**30)
    2
    """
    if memory is None or unit_bytes <= 0:
        return threads
    return max(1, min(threads, memory // unit_bytes))


def _described(threads: int, unit_bytes: int, memory: int | None, what: str = "threads") -> str:
    """How to name ``threads`` (``what``): ``"2 threads"``, and where that many units of
    the largest do not fit in memory together, how many run at once and why."""
    fit = threads_that_fit(threads, unit_bytes, memory)
    if fit == threads:
        return f"{threads} {what}"
    return (
        f"{threads} {what} (write units of up to {_size(unit_bytes)}: {fit} at a time, as "
        f"{threads} would not fit in this machine's {_size(memory)} of memory)"
    )


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def default_threads() -> int:
    """Threads of the default runner: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def open_runner(
    scheduler: str | None = None,
    workers: int | None = None,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
    *,
    unit_bytes: int = 0,
    memory: int | None = None,
) -> Iterator[Runner]:
    """A :class:`Runner` for the scheduler named, closed (and a local cluster stopped) on exit.

    The default, threads in this process, measured fastest on a 2-core machine for small
    and large jobs alike: the kernels release the GIL, the short write path copies nothing
    between processes, and a local cluster's start (about 2 s) is saved (see docs/scale.md).

    ``worker_timeout`` bounds the wait for a scheduler's first worker, and the time
    :func:`run_jobs` waits when the cluster has lost every worker.

    Each thread here (or process of a local cluster) holds a unit at once, of up to
    ``unit_bytes``: all the threads asked are started, and :func:`run_jobs` starts a unit
    only while the units in flight fit in ``memory`` (this machine's bytes) together, so
    that a variable of large shards runs fewer units at once without starving the small
    units of the others (the description says how many of the largest fit). The workers
    of a scheduler's cluster have memory of their own, unknown here.

    Raises
    ------
    SchedulerError
        An unknown scheduler name, ``workers`` below 1, a scheduler that does not answer or
        has no worker within ``worker_timeout`` seconds.
    """
    if workers is not None and workers < 1:
        raise SchedulerError(f"workers must be at least 1, got {workers}")
    if not worker_timeout > 0:
        raise SchedulerError(f"--worker-timeout must be a positive number, got {worker_timeout}")
    if scheduler is None:
        scheduler = "processes" if workers is not None else "threads"
    if scheduler == "synchronous":
        yield Runner(_InlineExecutor(), 1, "synchronous", distributed=False)
        return
    if scheduler == "threads":
        threads = workers or default_threads()
        description = _described(threads, unit_bytes, memory)
        with cf.ThreadPoolExecutor(threads, thread_name_prefix="lq-unit") as executor:
            yield Runner(executor, threads, description, distributed=False, memory=memory)
            return
    if scheduler == "processes":
        processes = workers or default_threads()
        description = _described(processes, unit_bytes, memory, "processes")
        with _local_cluster(processes, f"local cluster of {description}", memory) as runner:
            yield runner
        return
    if "://" not in scheduler:
        raise SchedulerError(
            f"unknown scheduler {scheduler!r}: use a dask scheduler address such as "
            f"tcp://10.0.0.5:8786, or one of {', '.join(_LOCAL_SCHEDULERS)}"
        )
    if workers is not None:
        raise SchedulerError(
            "--workers starts a local cluster; with --scheduler the cluster's own workers "
            "run the job (start more there with `dask worker ADDRESS`)"
        )
    with _client(scheduler, worker_timeout) as runner:
        yield runner


def check_scheduler(
    scheduler: str | None, workers: int | None, worker_timeout: float = DEFAULT_WORKER_TIMEOUT
) -> None:
    """Raise :class:`SchedulerError` now if :func:`open_runner` would: an unknown name, or a
    scheduler that does not answer or has no worker, so that a run fails before it writes.
    Local runners are not started."""
    if scheduler is None or scheduler in _LOCAL_SCHEDULERS:
        if workers is not None and workers < 1:
            raise SchedulerError(f"workers must be at least 1, got {workers}")
        return
    with open_runner(scheduler, workers, worker_timeout):
        pass


@contextlib.contextmanager
def _local_cluster(workers: int, description: str, memory: int | None) -> Iterator[Runner]:
    import dask
    from distributed import Client, LocalCluster

    # The nanny's default MALLOC_TRIM_THRESHOLD_ hands every freed chunk back to the OS;
    # the workers keep them instead (see _unit.keep_large_allocations).
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.update(WORKER_ENV)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # no fixed port: other clusters may run here
            env=WORKER_ENV,
        )
    try:
        with Client(cluster) as client:
            yield Runner(
                client.get_executor(pure=False),
                workers,
                description,
                distributed=True,
                memory=memory,
            )
    finally:
        cluster.close()


def connect_timeout() -> float:
    """Seconds to wait for a dask scheduler to answer: dask's
    ``distributed.comm.timeouts.connect`` where the user set it (a dask config file, the
    ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT`` environment variable, ``dask.config.set``),
    else :data:`DEFAULT_CONNECT_TIMEOUT`.

    dask's own default (30 s) is not taken: a mistyped address would wait that long, and
    dask retries a refused connection until the timeout, since a scheduler may be starting.
    ``dask.config.set`` to exactly that default counts as not set.
    """
    import dask.config
    import distributed  # noqa: F401 - registers dask's distributed defaults
    from dask.utils import parse_timedelta

    key = "distributed.comm.timeouts.connect"
    value = parse_timedelta(dask.config.get(key), default="seconds")
    shipped = dask.config.get(key, None, config=dask.config.merge(*dask.config.defaults))
    from_files_or_env = dask.config.get(key, None, config=dask.config.collect())
    if from_files_or_env is None and value == parse_timedelta(shipped, default="seconds"):
        return DEFAULT_CONNECT_TIMEOUT
    return float(value)


@contextlib.contextmanager
def _client(address: str, worker_timeout: float) -> Iterator[Runner]:
    from distributed import Client

    timeout = connect_timeout()
    try:
        client = Client(address, timeout=timeout)
    except OSError as exc:
        raise SchedulerError(
            f"cannot reach the dask scheduler at {address} ({type(exc).__name__}: {exc}); "
            "check the address and that `dask scheduler` runs there, or wait longer than "
            f"{timeout:g} s with {CONNECT_TIMEOUT_ENV}={2 * timeout:g}s"
        ) from exc
    try:
        threads = sum(client.nthreads().values())
        if threads == 0:
            # Workers may still be joining; wait for one rather than queueing forever.
            try:
                client.wait_for_workers(1, timeout=worker_timeout)
            except TimeoutError:
                raise SchedulerError(
                    f"the dask scheduler at {address} has no workers (waited "
                    f"{worker_timeout:g} s); start some with `dask worker {address}`, or "
                    "wait longer with --worker-timeout SECONDS"
                ) from None
            threads = sum(client.nthreads().values())

        def count_workers() -> int:
            try:
                return len(client.nthreads())
            except Exception:  # the scheduler is gone too: no worker either
                return 0

        yield Runner(
            client.get_executor(pure=False),
            max(threads, 1),
            f"{address} ({len(client.nthreads())} workers, {threads} threads)",
            distributed=True,
            count_workers=count_workers,
            worker_timeout=worker_timeout,
        )
    finally:
        client.close()


def run_jobs(
    jobs: Iterable[UnitJob | CheckJob],
    runner: Runner,
    on_done: Callable[[UnitDone | tuple[UnitDone, ...]], Any],
    submit: Callable[[Any], cf.Future] | None = None,
    memory_of: Callable[[Any], int] | None = None,
) -> None:
    """Run every job with at most ``IN_FLIGHT_PER_THREAD`` per worker thread in flight
    (a :class:`CheckJob` reports a tuple, one result per unit).

    ``submit(job)`` starts a job (default :meth:`Runner.submit`: a write unit); ``lq
    verify`` submits chunk checks the same way.

    ``memory_of(job)`` (the bytes a job holds while it runs), where given with a
    ``runner.memory``: a job waits, and those after it, until it fits beside the jobs in
    flight (one alone always starts). Jobs queued at a worker count as in flight, so a
    thread may wait for its next unit of the largest; the small units of other variables
    keep every thread busy.

    ``on_done`` is called in this thread as each unit finishes. The first failure (or an
    interrupt) stops the submission, cancels what has not started, and is raised once what
    runs has ended; ``on_done`` has then been called for every unit that succeeded.

    Raises
    ------
    WorkersLostError
        The cluster had no worker for ``runner.worker_timeout`` seconds: its units would
        wait forever.
    """
    limit = max(1, runner.threads * IN_FLIGHT_PER_THREAD)
    pending: set[cf.Future] = set()
    queue = iter(jobs)
    exhausted = False
    # How often to look for workers while nothing finishes.
    poll = None if runner.count_workers is None else min(5.0, runner.worker_timeout / 4)
    alone_since: float | None = None
    budget = None if memory_of is None else runner.memory
    held: dict[cf.Future, int] = {}  # bytes of each job in flight, with a budget only
    in_use = 0
    waiting: list = []  # the next job, when it did not fit beside those in flight

    def fill() -> None:
        nonlocal exhausted, in_use
        while not exhausted and len(pending) < limit:
            job = waiting.pop() if waiting else next(queue, None)
            if job is None:
                exhausted = True
                return
            if budget is None:
                pending.add((submit or runner.submit)(job))
                continue
            need = memory_of(job)
            if pending and in_use + need > budget:
                waiting.append(job)
                return
            future = (submit or runner.submit)(job)
            pending.add(future)
            held[future] = need
            in_use += need

    try:
        fill()
        while pending:
            done, pending = cf.wait(pending, timeout=poll, return_when=cf.FIRST_COMPLETED)
            if not done and runner.count_workers is not None:
                alone_since = _check_workers(runner, alone_since)
            for future in done:
                if budget is not None:
                    in_use -= held.pop(future)
                on_done(future.result())
            fill()
    except WorkersLostError:
        for future in pending:
            future.cancel()  # no worker is left to run or end them: do not wait
        raise
    except BaseException:
        for future in pending:
            future.cancel()
        # Let the units already running end, so that none writes after we return; on a
        # cluster that loses its workers meanwhile, no longer than the worker timeout.
        timeout = None if runner.count_workers is None else runner.worker_timeout
        cf.wait([f for f in pending if not f.cancelled()], timeout=timeout)
        # Those that ended well are written: count them, so that an interrupted run
        # reports every unit it wrote.
        for future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                with contextlib.suppress(Exception):
                    on_done(future.result())
        raise


def _check_workers(runner: Runner, alone_since: float | None) -> float | None:
    """When the cluster first had no worker (None: it has some); raise once it has been
    without for ``runner.worker_timeout`` seconds."""
    if runner.count_workers() > 0:
        return None
    now = time.monotonic()
    if alone_since is None:
        return now
    if now - alone_since >= runner.worker_timeout:
        address = runner.description.split(" ")[0]
        raise WorkersLostError(
            f"the dask scheduler at {address} has had no workers for "
            f"{runner.worker_timeout:g} s (--worker-timeout), with units unfinished; start "
            f"workers (`dask worker {address}`) and run the same command with --resume"
        )
    return alone_since
