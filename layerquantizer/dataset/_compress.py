"""The :func:`compress` entry: open, plan, write, and report what was written."""

from __future__ import annotations

import dataclasses
import time as _time
from collections.abc import Mapping, Sequence
from typing import Any

from layerquantizer.config import Config
from layerquantizer.dataset._errors import RequestError
from layerquantizer.dataset._inspect import StoreReport, inspect
from layerquantizer.dataset._plan import plan_compress
from layerquantizer.dataset._stores import _token, open_dataset
from layerquantizer.dataset._write import (
    ProgressCallback,
    WriteResult,
    _check_finished,
    _check_locations,
    _destination_action,
    _write_plan,
    destination_lock,
)


@dataclasses.dataclass
class CompressReport:
    """What :func:`compress` wrote: the destination's :class:`StoreReport` plus timing.

    ``bytes_written`` counts the logical bytes written by this call; with ``resume``,
    ``bytes_resumed`` those an interrupted run had written (``already_complete`` when it
    had finished and there was nothing left to do).
    """

    src: str
    dst: str
    store: StoreReport
    quantized: dict[str, int | None]
    copied: tuple[str, ...]
    dropped: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float
    bytes_written: int
    bytes_resumed: int = 0
    units_written: int = 0
    units_resumed: int = 0
    already_complete: bool = False
    runner: str = ""
    worker_pids: frozenset[int] = frozenset()

    @property
    def mib_per_s(self) -> float:
        return self.bytes_written / 2**20 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = self.store.to_dict()
        for name, entry in out["variables"].items():
            entry["quantized"] = name in self.quantized
        out.update(
            {
                "src": self.src,
                "dst": self.dst,
                "dropped": list(self.dropped),
                "skipped": list(self.skipped),
                "timing": {
                    "seconds": round(self.seconds, 3),
                    "logical_bytes": self.bytes_written,
                    "mib_per_s": round(self.mib_per_s, 2),
                },
                "resume": {
                    "already_complete": self.already_complete,
                    "units_written": self.units_written,
                    "units_resumed": self.units_resumed,
                    "logical_bytes_resumed": self.bytes_resumed,
                },
                "runner": self.runner,
            }
        )
        return out


def compress(
    src: str,
    dst: str,
    *,
    variables: Sequence[str] | None = None,
    config: Config | None = None,
    nbits: int | None = None,
    tolerance: float | None = None,
    precision: str | None = None,
    time: tuple[str | None, str | None] | None = None,
    levels: Sequence[float] | None = None,
    chunks: Mapping[str, int] | None = None,
    zarr_format: int | None = None,
    shards: Mapping[str, int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    token: Any = None,
    storage_options: Mapping | None = None,
    dst_storage_options: Mapping | None = None,
    progress: ProgressCallback | None = None,
    break_lock: bool = False,
    worker_timeout: float | None = None,
) -> CompressReport:
    """Copy the dataset at ``src`` to ``dst``, quantizing the chosen variables.

    The chosen variables are written with LayerQuantizer (Zarr v2: the ``layerquantizer1``
    compressor; v3: the ``layerquantizer`` serializer), every other data variable losslessly
    with Blosc zstd clevel 3 and byte shuffle, in its stored form (raw values, dtype, fill value
    and attributes, netCDF packing included); coordinates and attributes are kept, and each
    quantized variable records ``layerquantizer_codec``, ``layerquantizer_nbits`` and
    ``layerquantizer_error_bound`` (full scale) in its attributes, or, with an absolute
    ``tolerance`` (exclusive with ``nbits``; per variable from the config),
    ``layerquantizer_mode: "tolerance"`` and ``layerquantizer_tolerance``, or with
    ``precision="source"`` (half the step of the source's packing grid, found in a few
    sampled chunks, as the tolerance) ``layerquantizer_mode: "source"``,
    ``layerquantizer_source_step`` and ``layerquantizer_tolerance``. float64 and packed
    variables (decoded to float64) are quantized through float32 within the bound of their
    float64 values, and written as float32 with ``layerquantizer_source_dtype``. Metadata
    is consolidated. The source is only read. See :func:`plan_compress` for the selection
    arguments.

    Parameters
    ----------
    overwrite : bool
        Replace an existing ``dst``; otherwise an existing ``dst`` is an error.
    resume : bool
        Finish the interrupted run that ``dst`` holds: only units without a completion
        marker are written, and the result is the store an uninterrupted run writes. The
        options must describe the same plan (else :class:`ResumeMismatchError`). A
        finished ``dst`` is left as it is (``already_complete``); a missing one is written.
    workers : int, optional
        Start a local dask cluster of this many single-threaded worker processes.
    scheduler : str, optional
        ``"tcp://HOST:PORT"`` of a dask scheduler whose workers write the units, or
        ``"threads"`` (the default: one thread per core in this process),
        ``"synchronous"``, ``"processes"`` (see :mod:`layerquantizer.dataset._parallel`).
    token : optional
        gcsfs credentials (a service-account JSON file, ``"anon"``, ``"google_default"``,
        ``"cloud"``) for a ``gs://`` destination, and the source too when given. By
        default ``gs://`` sources are read anonymously and destinations written with the
        standard Google credentials.
    storage_options, dst_storage_options : mapping, optional
        ``{"token": ...}`` for the source and the destination (the older spelling).
    progress : callable, optional
        ``progress(chunks_done, chunks_total, bytes_done, bytes_total)``.
    break_lock : bool
        Take the lock of ``dst`` even if another run holds it: for a lock left by a run on
        another host that is gone (a dead run on this host is recognised by its pid).

    ``dst`` must not be ``src``, inside it or around it, in any spelling (see
    :func:`layerquantizer.storage.normalize_location`), and a local ``src`` must not link
    out of itself. The source is opened and the plan made before anything in ``dst`` is
    touched. While the call runs, ``dst`` + ``.lq-lock`` (beside it) keeps other runs out
    (see :mod:`layerquantizer.dataset._destination`); ``overwrite`` removes only a store that
    ``lq compress`` wrote.
    worker_timeout : float, optional
        Seconds a ``scheduler``'s cluster may be without workers, at the start (then
        :class:`RequestError`) or mid-run (then :class:`DatasetError`); default 180.

    Raises
    ------
    DestinationExistsError
        ``dst`` exists and neither ``overwrite`` nor ``resume`` is set, or it is not an
        ``lq compress`` output that ``overwrite`` may remove or ``resume`` could finish,
        or another run is writing it.
    ChunkWriteError
        A unit failed; the message names the variable and its coordinates.
    layerquantizer.storage.StoreError
        A bucket is missing, access is denied, or the storage endpoint does not answer.

    Examples
    --------
    >>> import tempfile
    >>> from layerquantizer.dataset import compress, write_sample
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=1)
    >>> report = compress(f"{tmp}/in.zarr", f"{tmp}/out.zarr", variables=["temperature"])
    >>> report.store.variables["temperature"].ratio > 1
    True
    """
    src_token = _token(token, storage_options)
    dst_token = _token(token, dst_storage_options, "dst_storage_options")
    _check_locations(src, dst, overwrite, resume)
    _check_scheduler(scheduler, workers, worker_timeout)
    if scheduler in (None, "threads", "synchronous") and workers is None:
        from layerquantizer.dataset._unit import warm_codec

        warm_codec()  # units run in this process: their kernels load while it plans
    # Read the source and make the plan before touching DST: a source that cannot be
    # opened, or a request that does not fit it, must not cost an existing DST.
    ds = open_dataset(src, token=src_token)
    plan = plan_compress(
        ds, variables=variables, config=config, nbits=nbits, tolerance=tolerance,
        precision=precision, time=time, levels=levels, chunks=chunks, zarr_format=zarr_format,
        shards=shards,
    )  # fmt: skip
    # One lock from before DST is looked at (an --overwrite removes it) until the end.
    with destination_lock(dst, dst_token, break_lock=break_lock):
        action = _destination_action(src, dst, dst_token, overwrite, resume)
        started = _time.perf_counter()
        if action == "complete":
            _check_finished(plan, dst, dst_token)
            result = WriteResult(0, 0, 0, 0, plan.total_bytes, "none", frozenset())
        else:
            result = _write_plan(
                plan, dst, dst_token, workers=workers, scheduler=scheduler,
                progress=progress, resume=action == "resume", worker_timeout=worker_timeout,
            )  # fmt: skip
        seconds = _time.perf_counter() - started
    return CompressReport(
        src=src,
        dst=dst,
        store=inspect(dst, token=dst_token),
        quantized=plan.quantized,
        copied=plan.copied,
        dropped=plan.dropped,
        skipped=plan.skipped,
        seconds=seconds,
        bytes_written=result.bytes_written,
        bytes_resumed=result.bytes_skipped,
        units_written=result.units,
        units_resumed=result.units_skipped,
        already_complete=action == "complete",
        runner=result.runner,
        worker_pids=result.pids,
    )


def _check_scheduler(scheduler: str | None, workers: int | None, timeout: float | None) -> None:
    """Before DST is touched (``--overwrite`` removes it): a scheduler that does not answer
    or has no worker is a bad request."""
    import layerquantizer.dataset._parallel as _parallel

    try:
        _parallel.check_scheduler(
            scheduler, workers, _parallel.DEFAULT_WORKER_TIMEOUT if timeout is None else timeout
        )
    except _parallel.SchedulerError as exc:
        raise RequestError(str(exc)) from exc
