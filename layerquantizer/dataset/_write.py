"""Writing a plan to its destination (:func:`write_plan`), and the checks of an existing
destination before a write: overwrite, resume, or nothing left to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import uuid
from collections.abc import Callable, Container, Iterator, Mapping
from typing import Any

import numpy as np

from layerquantizer.dataset._codec_metadata import ATTR_CODEC
from layerquantizer.dataset._errors import (
    DatasetError,
    DestinationExistsError,
    RequestError,
    ResumeMismatchError,
    SourceError,
)
from layerquantizer.dataset._inspect import inspect
from layerquantizer.dataset._plan import Plan, UnitGrid
from layerquantizer.dataset._stores import (
    _quiet_consolidated,
    _single_threaded_blosc,
    _token,
)
from layerquantizer.dataset._unit import CheckJob, UnitJob

ProgressCallback = Callable[[int, int, int, int], None]
"""``progress(chunks_done, chunks_total, bytes_done, bytes_total)``, called as units finish."""


def _describe_region(region: Mapping[str, slice], labels: Mapping[str, np.ndarray]) -> str:
    parts = [_describe_part(dim, where, labels.get(dim)) for dim, where in region.items()]
    return ", ".join(part for part in parts if part) or "the whole array"


def _describe_part(dim: str, where: slice, values: np.ndarray | None) -> str:
    """One dimension's share of a region's label: its coordinate labels, its positions
    where it has none, nothing when the region covers the whole of a labelled dim."""
    if values is None:
        return f"{dim}[{where.start}:{where.stop}]"
    if where.stop - where.start < values.size:
        first, last = values[where.start], values[where.stop - 1]
        return f"{dim}={first}" if first == last else f"{dim}={first}..{last}"
    return ""


def _source_selection(positions: Mapping[str, np.ndarray], region: Mapping[str, slice]):
    """The unit's region in the source's own positions: slices where the kept positions
    are consecutive (time ranges), index arrays where they are not (a list of levels)."""
    selection = []
    for dim, where in region.items():
        picked = positions[dim][where]
        if picked.size and np.array_equal(picked, np.arange(picked[0], picked[0] + picked.size)):
            selection.append(slice(int(picked[0]), int(picked[0]) + picked.size))
        else:
            selection.append(picked)
    return tuple(selection)


#: Units along one dimension whose tables :class:`_DimTables` works out at a time.
TABLE_BLOCK = 4096


class _DimTables:
    """Per unit along one dimension: its region, source selection (as
    :func:`_source_selection` makes it), first chunk index, chunks, length and label (as
    :func:`_describe_part` makes it), worked out with numpy for :data:`TABLE_BLOCK` units
    at a time, each block once, as the jobs reach it."""

    def __init__(
        self, dim: str, edges: tuple, chunk: int, positions: np.ndarray, values: Any
    ) -> None:
        self.dim, self.edges, self.chunk = dim, edges, chunk
        self.positions, self.values = positions, values
        self.blocks = max(1, -(-len(edges) // TABLE_BLOCK))
        self._blocks: dict[int | None, tuple[list, ...]] = {}
        self._breaks: np.ndarray | None = None

    def row(self, index: int) -> tuple:
        """The six entries of unit ``index``."""
        number, at = divmod(index, TABLE_BLOCK)
        return tuple(column[at] for column in self.block(number))

    def block(self, number: int | None) -> tuple[list, ...]:
        """The tables of block ``number`` of the units (``None``: of all of them)."""
        found = self._blocks.get(number)
        if found is not None:
            return found
        if number is None and self.blocks > 1:
            found = tuple(
                list(itertools.chain.from_iterable(column))
                for column in zip(*(self.block(n) for n in range(self.blocks)), strict=True)
            )
            self._blocks[None] = found
            return found
        edges = self.edges if number is None else (
            self.edges[number * TABLE_BLOCK : (number + 1) * TABLE_BLOCK])  # fmt: skip
        bounds = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        starts, stops = bounds[:, 0], bounds[:, 1]
        regions = [slice(a, b) for a, b in edges]
        found = (
            regions,
            self._sources(starts, stops, regions),
            (starts // self.chunk).tolist(),
            (-(-(stops - starts) // self.chunk)).tolist(),
            (stops - starts).tolist(),
            self._labels(starts, stops, regions),
        )
        self._blocks[number] = found
        return found

    def _sources(self, starts, stops, regions: list[slice]) -> list:
        positions = self.positions
        if self._breaks is None:
            # A unit's kept positions are consecutive unless a break (a step other than
            # 1) falls inside it: then its selection is the positions themselves.
            self._breaks = np.concatenate([[0], np.cumsum(np.diff(positions) != 1)])
        breaks = self._breaks
        inside = breaks[np.maximum(stops - 1, starts)] - breaks[starts]
        firsts = positions[starts].tolist() if positions.size else []
        return [
            slice(int(first), int(first) + where.stop - where.start)
            if not broken and where.stop > where.start
            else positions[where]
            for first, broken, where in zip(firsts, inside.tolist(), regions, strict=True)
        ]

    def _labels(self, starts, stops, regions: list[slice]) -> list[str]:
        dim, values = self.dim, self.values
        if values is None:
            return [f"{dim}[{where.start}:{where.stop}]" for where in regions]
        values = np.asarray(values)
        # Only the labels of the block's ends: the text of all 93,544 steps took 0.3 s.
        firsts, lasts = values[starts].astype(str).tolist(), values[stops - 1].astype(str).tolist()
        return [
            ""
            if where.stop - where.start >= values.size
            else (f"{dim}={first}" if first == last else f"{dim}={first}..{last}")
            for first, last, where in zip(firsts, lasts, regions, strict=True)
        ]


class _UnitTables:
    """What the jobs of one variable's units are made of, worked out once per dimension
    (and shared by the variables with the same units along it), so that a unit costs a
    few tuple products, not a dict, numpy indexing and a label's formatting: the whole
    WeatherBench2 store has 4.6 million units."""

    def __init__(self, plan: Plan, labels: Mapping[str, np.ndarray]) -> None:
        self.plan = plan
        self.labels = labels
        self._per_dim: dict[tuple, _DimTables] = {}
        self._last: tuple[str, UnitGrid, list] | None = None  # one variable's grid at a time

    def dim_tables(self, dim: str, edges: tuple, chunk: int) -> _DimTables:
        """The tables of the units along ``dim`` (see :class:`_DimTables`)."""
        key = (dim, chunk, edges)
        found = self._per_dim.get(key)
        if found is None:
            positions = self.plan.source_positions[dim]
            found = _DimTables(dim, edges, chunk, positions, self.labels.get(dim))
            self._per_dim[key] = found
        return found

    def variable(self, name: str) -> tuple[UnitGrid, list[_DimTables]]:
        """The unit grid of ``name`` and its tables per dimension (those of the last
        variable asked for are kept: the units come variable by variable)."""
        if self._last is not None and self._last[0] == name:
            return self._last[1], self._last[2]
        grid = self.plan.unit_grid(name)
        per_dim = [
            self.dim_tables(dim, edges, chunk)
            for dim, edges, chunk in zip(grid.dims, grid.edges, grid.chunks, strict=True)
        ]
        self._last = (name, grid, per_dim)
        return grid, per_dim

    def jobs(
        self,
        name: str,
        run: str,
        dst: str,
        token: Any,
        *,
        clean: bool = False,
        skip: Container[int] = (),
    ) -> Iterator[UnitJob]:
        """The job of every unit of ``name`` in ordinal order, but those in ``skip``.

        The first dimension's tables are worked out a block at a time as the jobs reach
        them: all 93,544 steps of the WB2 store's at once took 0.3-0.4 s and 80 MB before
        the first unit could start."""
        grid, per_dim = self.variable(name)
        if not per_dim:
            return
        make = self._maker(name, grid, run, dst, token, clean)
        inner = [tables.block(None) for tables in per_dim[1:]]
        ordinal = 0
        for number in range(per_dim[0].blocks):
            block = [per_dim[0].block(number), *inner]
            columns = [itertools.product(*column) for column in zip(*block, strict=True)]
            for parts in zip(*columns, strict=True):
                if not (skip and ordinal in skip):
                    yield make(ordinal, *parts, None)
                ordinal += 1

    def job_at(
        self, name: str, ordinal: int, run: str, dst: str, token: Any, recorded: bytes | None
    ) -> UnitJob:
        """The job of unit ``ordinal`` of ``name``."""
        grid, per_dim = self.variable(name)
        at = np.unravel_index(ordinal, grid.shape)
        rows = [tables.row(int(i)) for tables, i in zip(per_dim, at, strict=True)]
        parts = [tuple(column) for column in zip(*rows, strict=True)]
        return self._maker(name, grid, run, dst, token, True)(ordinal, *parts, recorded)

    def _maker(self, name: str, grid: UnitGrid, run: str, dst: str, token: Any, clean: bool):
        plan, raw_read, itemsize = self.plan, name in self.plan.raw_read, grid.itemsize

        def make(ordinal, region, source, index, count, length, label, recorded) -> UnitJob:
            return UnitJob(
                run, plan.location, plan.token, dst, token, name, index, region, source,
                raw_read, math.prod(length) * itemsize, math.prod(count), _label(label),
                ordinal, recorded, clean,
            )  # fmt: skip

        return make


@contextlib.contextmanager
def _frozen_gc() -> Iterator[None]:
    """Leave the objects there are now out of the garbage collector's passes while units
    run: a full collection walks the 200,000 objects of xarray, dask and zarr (0.09 s
    with the GIL held, every Python thread waiting; once in a WB2 run of 6 steps, and
    again whenever the young objects that outlive two collections grow by a quarter),
    and the units leave few objects behind. Unfrozen at the end: a caller's own objects
    are collected as before."""
    import gc

    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _label(parts: tuple[str, ...]) -> str:
    return ", ".join(part for part in parts if part) or "the whole array"


@dataclasses.dataclass
class WriteResult:
    """What :func:`write_plan` did: units and bytes written now, and those found written
    by an earlier, interrupted run."""

    units: int
    units_skipped: int
    chunks_written: int
    bytes_written: int
    bytes_skipped: int
    runner: str
    pids: frozenset[int]


def write_plan(
    plan: Plan,
    dst: str,
    *,
    token: Any = None,
    storage_options: Mapping | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    worker_timeout: float | None = None,
    break_lock: bool = False,
) -> WriteResult:
    """Write ``plan`` to ``dst``: metadata, then every unit on the chosen scheduler, then the
    consolidated metadata; resumable at every step (see :mod:`layerquantizer.dataset._resume`).

    ``dst`` must be new, or (``resume=True``) hold the progress of a run of the same plan;
    :func:`compress` checks which. ``scheduler`` and ``workers`` choose where the units run
    (see :func:`layerquantizer.dataset._parallel.open_runner`): by default one thread per core here,
    ``workers=N`` a local cluster of N processes, ``scheduler="tcp://HOST:PORT"`` an
    existing dask cluster; ``worker_timeout`` bounds the waits for its workers (see
    :func:`layerquantizer.dataset._parallel.run_jobs`).

    While it writes it holds the lock of ``dst`` (``dst`` + ``.lq-lock``, as
    :func:`compress` does), so that a call from Python never writes into a destination
    another run is writing: :class:`DestinationExistsError` if one is (``break_lock`` takes
    the lock anyway, for a run on another host that is gone).
    """
    token = _token(token, storage_options)
    with destination_lock(dst, token, break_lock=break_lock):
        return _write_plan(
            plan, dst, token, workers=workers, scheduler=scheduler, progress=progress,
            resume=resume, worker_timeout=worker_timeout,
        )  # fmt: skip


@contextlib.contextmanager
def destination_lock(
    dst: str, token: Any, *, break_lock: bool = False, writer: str = "lq compress"
) -> Iterator[None]:
    """Hold the lock of ``dst`` (:class:`layerquantizer.dataset._destination.DestinationLock`)
    for the ``with`` block: :class:`DestinationExistsError` if another run holds it,
    :class:`RequestError` for a destination that cannot have one (a bucket's root).
    ``writer``, the command writing (``"lq compress"`` or ``"lq sample"``), is named to a run
    that finds the lock."""
    from layerquantizer.dataset._destination import DestinationLock, DestinationLocked
    from layerquantizer.storage import open_store, store_errors

    try:
        lock = DestinationLock(dst, token, break_lock=break_lock, writer=writer)
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    try:
        with store_errors(dst):
            # A missing bucket or a folder we may not write is named as such, not as a
            # failure to write the lock; nothing is created yet.
            open_store(dst, "w", token=token)
            lock.acquire()
    except DestinationLocked as exc:
        raise DestinationExistsError(str(exc)) from None
    with lock:
        yield


def _write_plan(
    plan: Plan,
    dst: str,
    token: Any,
    *,
    workers: int | None,
    scheduler: str | None,
    progress: ProgressCallback | None,
    resume: bool,
    worker_timeout: float | None,
) -> WriteResult:
    """:func:`write_plan`, the lock of ``dst`` held by the caller."""
    import zarr

    import layerquantizer.dataset._parallel as _parallel
    import layerquantizer.dataset._plan as _plan
    from layerquantizer.dataset._destination import write_marker
    from layerquantizer.dataset._resume import Ledger, Progress, describe_plan, differences
    from layerquantizer.storage import open_store, store_errors

    if plan.location is None:
        raise RequestError(
            "the plan's source was not opened with open_dataset(), so workers cannot read it"
        )
    if scheduler not in (None, "threads", "synchronous") or workers is not None:
        if dst.startswith("memory://") or plan.location.startswith("memory://"):
            raise RequestError(
                "memory:// stores live in one process; with --workers or --scheduler use a "
                "path or a gs:// URL"
            )
    if worker_timeout is None:
        worker_timeout = _parallel.DEFAULT_WORKER_TIMEOUT
    description = describe_plan(plan, plan.location)
    state = Progress(dst, token)
    resuming = False
    with store_errors(dst):
        manifest = state.manifest() if resume else None
        if manifest is not None:
            found = differences(manifest.get("description", {}), description)
            if found:
                raise ResumeMismatchError(
                    f"{dst} holds an interrupted run with other options ("
                    f"{'; '.join(found[:4])}{'; ...' if len(found) > 4 else ''}); resume with "
                    "the same source and options, or pass --overwrite to start again"
                )
        if manifest is None or not state.marked("metadata"):
            # Nothing of this run's data is there yet: start from an empty destination.
            if resume:
                _remove_lq_store(dst, token)
            # The marker first: whatever happens next, DST is known to be lq's to remove.
            write_marker(dst, token)
            state.start(description)
            with _quiet_consolidated():
                plan.template.to_zarr(
                    open_store(dst, "w", token=token),
                    mode="a",
                    compute=False,
                    encoding=plan.encoding,
                    consolidated=False,
                    zarr_format=plan.zarr_format,
                )
            state.mark("metadata")
        else:
            if state.marked("complete"):
                skipped = len(state.done_units())
                state.remove_partial_files()
                state.remove()
                return WriteResult(0, skipped, 0, 0, plan.total_bytes, "none", frozenset())
            resuming = True

    labels = {
        str(dim): plan.source.indexes[dim].values
        for dim in plan.source.dims
        if dim in plan.source.indexes
    }
    names = [str(name) for name in plan.source.data_vars]
    tables = _UnitTables(plan, labels)
    ledger = Ledger(state, {})  # each variable's number of units is set as it starts
    batch_units = ledger.batch_units
    total_chunks, total_bytes = plan.total_chunks, plan.total_bytes
    counts = {"chunks": 0, "bytes": 0, "units": 0, "skipped": 0, "skipped_bytes": 0}
    pids: set[int] = set()
    run = uuid.uuid4().hex
    # Variable -> the batches recorded whole, and the units recorded in the others: what
    # the second pass checks (the fingerprints are read again then, not kept).
    recorded_whole: dict[str, list[int]] = {}
    recorded_some: dict[str, dict[int, dict[int, bytes]]] = {}

    def new_units() -> Iterator[UnitJob]:
        """Pass 1: every unit not recorded done, in plan order."""
        for name in names:
            ledger.unit_counts[name] = tables.variable(name)[0].size
            recorded: set[int] = set()
            if resuming:
                with store_errors(dst):
                    batches = state.read_batches(name)
                for batch, entries in batches.items():
                    recorded.update(entries)
                    if len(entries) >= ledger.batch_size(name, batch):
                        recorded_whole.setdefault(name, []).append(batch)
                    else:
                        ledger.preload(name, batch, entries)
                        recorded_some.setdefault(name, {})[batch] = dict(entries)
                del batches
            yield from tables.jobs(name, run, dst, token, clean=resuming, skip=recorded)

    def checks() -> Iterator[CheckJob]:
        """Pass 2: the units recorded done, a batch per job, checked against their source."""
        for name in names:
            if name not in recorded_whole and name not in recorded_some:
                continue
            size = ledger.unit_counts[name]
            whole = set(recorded_whole.get(name, ()))
            with store_errors(dst):
                batches = {
                    batch: entries
                    for batch, entries in state.read_batches(name).items()
                    if batch in whole
                }
            batches.update(recorded_some.get(name, {}))
            for batch in sorted(batches):
                units = tuple(
                    tables.job_at(name, ordinal, run, dst, token, fingerprint)
                    for ordinal, fingerprint in sorted(batches[batch].items())
                    if ordinal < size  # the descriptions matched: always, but never index past
                )
                if units:
                    yield CheckJob(units)

    def _report(chunks: int, nbytes: int) -> None:
        counts["chunks"] += chunks
        counts["bytes"] += nbytes
        if progress is not None:
            progress(counts["chunks"], total_chunks, counts["bytes"], total_bytes)

    def on_unit(result, checked: bool) -> None:
        if result.resumed:
            counts["skipped"] += 1
            counts["skipped_bytes"] += result.nbytes
        else:
            counts["units"] += 1
            # Recorded before the progress report: a unit stored is a unit recorded.
            if checked:  # written again: its source changed since the marker
                ledger.update(
                    result.variable,
                    result.ordinal // batch_units,
                    {result.ordinal: result.fingerprint},
                )
            else:
                ledger.record(result.variable, result.ordinal, result.fingerprint)
        pids.add(result.pid)
        _report(result.chunks, result.nbytes)

    def on_done(result) -> None:
        if isinstance(result, tuple):
            for unit in result:
                on_unit(unit, checked=True)
        else:
            on_unit(result, checked=False)

    if progress is not None:
        progress(0, total_chunks, 0, total_bytes)
    try:
        # Each worker thread holds a unit at once: where the largest units do not fit in
        # memory on every thread together, a unit starts only beside those it fits with.
        memory, along = _plan.memory_bytes(), {}  # the variables share their dims
        unit_memory = {name: plan.unit_memory(name, along) for name in names}
        largest = max(unit_memory.values(), default=0)
        runner_context = _parallel.open_runner(
            scheduler, workers, worker_timeout, memory=memory, unit_bytes=largest,
        )  # fmt: skip
        with _single_threaded_blosc(), _frozen_gc(), runner_context as runner:
            memory_of = None
            if runner.memory is not None and largest * runner.threads > runner.memory:
                # Per variable (its largest unit): a dict look-up per unit, only here.
                def memory_of(job: UnitJob | CheckJob) -> int:
                    unit = job.units[0] if isinstance(job, CheckJob) else job
                    return unit_memory[unit.variable]

            try:
                _parallel.run_jobs(
                    itertools.chain(new_units(), checks()), runner, on_done, memory_of=memory_of
                )
            finally:
                with store_errors(dst):
                    ledger.flush()  # what was stored is recorded, whatever stopped the run
    except _parallel.SchedulerError as exc:
        raise RequestError(str(exc)) from exc
    except _parallel.WorkersLostError as exc:
        raise DatasetError(str(exc)) from exc
    with store_errors(dst), _quiet_consolidated():
        if resuming:
            # After the writes, not before: a walk of a local DST of a million chunks
            # would delay the first write, and the temporary files are in nobody's way.
            state.remove_partial_files()
        zarr.consolidate_metadata(open_store(dst, "r+", token=token))
        state.mark("complete")
        state.remove()
    return WriteResult(
        units=counts["units"],
        units_skipped=counts["skipped"],
        chunks_written=counts["chunks"],
        bytes_written=counts["bytes"] - counts["skipped_bytes"],
        bytes_skipped=counts["skipped_bytes"],
        runner=runner.description,
        pids=frozenset(pids),
    )


def _check_locations(src: str | None, dst: str, overwrite: bool, resume: bool) -> None:
    """The checks of a request that read nothing: before the source is opened, and long
    before anything could be removed."""
    from layerquantizer.dataset._destination import check_source_links
    from layerquantizer.storage import locations_overlap

    if overwrite and resume:
        raise RequestError("--overwrite and --resume exclude each other")
    if src is None:
        return
    try:
        if locations_overlap(src, dst):
            raise RequestError(f"destination {dst} is the source or inside it (or contains it)")
        check_source_links(src)
    except RequestError:
        raise
    except ValueError as exc:  # a scheme lq does not know, a link out of the source
        raise RequestError(str(exc)) from exc


def _remove_lq_store(dst: str, token: Any) -> None:
    """Remove ``dst`` if ``lq compress`` wrote it (see
    :func:`layerquantizer.dataset._destination.check_removable`), else refuse."""
    from layerquantizer.dataset._destination import MARKER, check_removable
    from layerquantizer.dataset._resume import PROGRESS_DIR
    from layerquantizer.storage import remove_store

    try:
        check_removable(dst, token)
        remove_store(dst, token=token, markers=(MARKER, f"{PROGRESS_DIR}/manifest.json"))
    except ValueError as exc:
        raise DestinationExistsError(str(exc)) from exc


def _destination_action(
    src: str | None, dst: str, token: Any, overwrite: bool, resume: bool
) -> str:
    """``"new"``, ``"resume"`` or ``"complete"``: what to do with ``dst``, after the checks
    (and the removal of an old ``dst`` for ``overwrite``). Call it after
    :func:`_check_locations`, holding the lock of ``dst``
    (:class:`layerquantizer.dataset._destination.DestinationLock`)."""
    from layerquantizer.dataset._destination import marker_writer
    from layerquantizer.dataset._resume import PROGRESS_DIR, Progress
    from layerquantizer.storage import locations_overlap, store_errors, store_exists

    if overwrite and resume:
        raise RequestError("--overwrite and --resume exclude each other")
    if src is not None and locations_overlap(src, dst):  # never remove a source, whoever calls
        raise RequestError(f"destination {dst} is the source or inside it (or contains it)")
    with store_errors(dst):
        if not store_exists(dst, token=token):
            return "new"
        if overwrite:
            _remove_lq_store(dst, token)
            return "new"
        if not resume:
            raise DestinationExistsError(
                f"destination {dst} already exists; pass --overwrite to replace it, or "
                "--resume to finish an interrupted run"
            )
        if Progress(dst, token).exists():
            return "resume"
        if _is_finished_lq_store(dst, token):
            return "complete"
        if marker_writer(dst, token) == "lq compress":
            return "resume"  # killed between the marker and the manifest
        raise DestinationExistsError(
            f"{dst} is not an interrupted lq compress run (no {PROGRESS_DIR} inside, no "
            "layerquantizer attributes); nothing to resume: pass --overwrite to replace it, "
            "or choose another destination"
        )


def _is_finished_lq_store(dst: str, token: Any) -> bool:
    try:
        report = inspect(dst, token=token)
    except SourceError:
        return False
    return report.consolidated and any(
        ATTR_CODEC in array.attrs for array in report.variables.values()
    )


def _check_finished(plan: Plan, dst: str, token: Any) -> None:
    """Refuse to call a finished store complete when it was written with other options."""
    report = inspect(dst, token=token)
    problems = []
    for name in plan.source.data_vars:
        name = str(name)
        array = report.variables.get(name)
        if array is None:
            problems.append(f"{name} missing")
            continue
        if array.shape != tuple(plan.source[name].shape):
            problems.append(f"{name} shape {array.shape}")
        if array.chunks != plan.variable_chunks(name):
            problems.append(f"{name} chunks {array.chunks}")
        if array.shards != plan.variable_shards(name):
            problems.append(f"{name} shards {array.shards}")
        if array.nbits != plan.quantized.get(name):
            problems.append(f"{name} nbits {array.nbits}")
        if array.tolerance != plan.tolerances.get(name):
            problems.append(f"{name} tolerance {array.tolerance}")
    extra = sorted(set(report.variables) - {str(n) for n in plan.source.data_vars})
    problems.extend(f"{name} not asked for" for name in extra)
    if problems:
        raise ResumeMismatchError(
            f"{dst} is a finished store written with other options ({'; '.join(problems[:4])}"
            f"{'; ...' if len(problems) > 4 else ''}); pass --overwrite to write it again"
        )
