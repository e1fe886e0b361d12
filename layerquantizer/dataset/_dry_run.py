"""What ``lq compress --dry-run`` prints: the plan of a run, per variable its treatment,
chunk objects, logical bytes and estimated stored bytes, and the time it would take;
nothing is written (:func:`dry_run`, :class:`DryRunReport`).

The estimates come from a few chunks per variable read from the source and encoded here
with the codec the plan chose (:data:`SAMPLES`, spread over the variable's chunks): their
ratio gives the stored bytes, their speed on one thread the time. A sampled chunk that
holds only the fill value (Zarr stores nothing for it) says nothing about the others and
is left out; a variable none of whose samples holds data has no estimate (``None``).

Example::

    lq compress $SRC gs://my-bucket/era5-lq.zarr --config configs/era5.yaml --dry-run --json
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from layerquantizer.config import Config
from layerquantizer.dataset._errors import RequestError
from layerquantizer.dataset._plan import (
    Plan,
    _build_codec,
    _lossless_codec,
    memory_bytes,
    plan_compress,
)
from layerquantizer.dataset._stores import _token, open_dataset
from layerquantizer.dataset._write import _check_locations, _source_selection

#: Chunks read and encoded per variable for the estimates.
SAMPLES = 3


@dataclasses.dataclass(frozen=True)
class VariableEstimate:
    """One data variable of the source (or named by the config) in a dry run.

    ``treatment`` is ``"quantize"``, ``"copy"``, ``"drop"`` or ``"skip"`` (named by the
    config, missing from the source); ``chunks`` the chunk objects a run would write at
    most (shards of a sharded variable; Zarr skips those holding only the fill value);
    ``logical_bytes`` the values' size; ``estimated_stored_bytes`` None where no sampled
    chunk held data. A quantized variable has ``nbits`` or an absolute ``tolerance``; with
    ``precision: source`` also the ``source_step`` found in its sampled chunks (the
    tolerance is half of it). ``sampled_chunks`` and ``sampled_bytes``: the chunks that
    held data among those read for the estimate (chunks inside the shards of a sharded
    variable, never whole shards) and their logical bytes.
    """

    treatment: str
    chunks: int
    logical_bytes: int
    estimated_stored_bytes: int | None
    nbits: int | None = None
    tolerance: float | None = None
    source_step: float | None = None
    sampled_chunks: int = 0
    sampled_bytes: int = 0


@dataclasses.dataclass
class DryRunReport:
    """The plan of ``lq compress`` without writing it; see :func:`dry_run`."""

    src: str
    dst: str
    zarr_format: int
    variables: dict[str, VariableEstimate]
    sampled_bytes: int
    sample_seconds: float
    threads: int
    plan_seconds: float
    #: Units of each variable that fit in memory at once, where fewer than ``threads``.
    units_at_once: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Chunks read per variable for the estimates (:data:`SAMPLES`).
    samples: int = SAMPLES
    #: Whether any variable is written in shards (its samples are chunks inside them).
    sharded: bool = False

    @property
    def total_chunks(self) -> int:
        return sum(v.chunks for v in self.variables.values())

    @property
    def total_logical_bytes(self) -> int:
        return sum(v.logical_bytes for v in self.variables.values() if v.chunks)

    @property
    def estimated_stored_bytes(self) -> int | None:
        written = [v for v in self.variables.values() if v.chunks]
        if any(v.estimated_stored_bytes is None for v in written):
            return None
        return sum(v.estimated_stored_bytes or 0 for v in written)

    @property
    def mib_per_s(self) -> float | None:
        """Measured speed of reading and encoding the samples, on one thread."""
        if self.sampled_bytes == 0 or self.sample_seconds <= 0:
            return None
        return self.sampled_bytes / 2**20 / self.sample_seconds

    @property
    def estimated_seconds(self) -> float | None:
        """The time to write everything at the measured speed on :attr:`threads` threads
        (fewer for a variable whose units do not fit in memory on every thread at once)."""
        speed = self.mib_per_s
        if speed is None:
            return None
        return sum(
            v.logical_bytes / 2**20 / speed / max(self.units_at_once.get(name, self.threads), 1)
            for name, v in self.variables.items()
            if v.chunks
        )

    def to_dict(self) -> dict[str, Any]:
        ratio = None
        stored = self.estimated_stored_bytes
        if stored:
            ratio = round(self.total_logical_bytes / stored, 3)
        return {
            "src": self.src,
            "dst": self.dst,
            "dry_run": True,
            "zarr_format": self.zarr_format,
            "variables": {
                name: {
                    "treatment": v.treatment,
                    "chunks": v.chunks,
                    "logical_bytes": v.logical_bytes,
                    "estimated_stored_bytes": v.estimated_stored_bytes,
                    "nbits": v.nbits,
                    "tolerance": v.tolerance,
                    "precision": "source" if v.source_step is not None else None,
                    "source_step": v.source_step,
                    "sampled_chunks": v.sampled_chunks,
                    "sampled_bytes": v.sampled_bytes,
                }
                for name, v in self.variables.items()
            },
            "total": {
                "variables": sum(1 for v in self.variables.values() if v.chunks),
                "chunks": self.total_chunks,
                "logical_bytes": self.total_logical_bytes,
                "estimated_stored_bytes": stored,
                "estimated_ratio": ratio,
                "measured_mib_per_s": None if self.mib_per_s is None else round(self.mib_per_s, 2),
                "threads": self.threads,
                "estimated_seconds": (
                    None if self.estimated_seconds is None else round(self.estimated_seconds, 1)
                ),
                "plan_seconds": round(self.plan_seconds, 3),
                "samples_per_variable": self.samples,
                "sampled_bytes": self.sampled_bytes,
            },
        }


def dry_run(
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
    workers: int | None = None,
    token: Any = None,
    samples: int = SAMPLES,
) -> DryRunReport:
    """Plan ``compress(src, dst, ...)`` and estimate it, writing nothing anywhere.

    Takes the selection arguments of :func:`compress`; ``dst`` is only checked against
    ``src`` (not opened). ``workers`` (default: one thread per core) scales the estimated
    time. Raises what :func:`compress` raises before it writes.

    Examples
    --------
    >>> import tempfile
    >>> from layerquantizer.dataset import write_sample
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=2)
    >>> report = dry_run(f"{tmp}/in.zarr", f"{tmp}/out.zarr", variables=["temperature"])
    >>> report.variables["temperature"].treatment, report.variables["temperature"].chunks
    ('quantize', 2)
    """
    import layerquantizer.dataset._parallel as _parallel

    if samples < 1:
        raise RequestError(f"samples must be at least 1, got {samples}")
    _check_locations(src, dst, overwrite=False, resume=False)
    started = _time.perf_counter()
    ds = open_dataset(src, token=_token(token, None))
    plan = plan_compress(
        ds, variables=variables, config=config, nbits=nbits, tolerance=tolerance,
        precision=precision, time=time, levels=levels, chunks=chunks, zarr_format=zarr_format,
        shards=shards,
    )  # fmt: skip
    plan_seconds = _time.perf_counter() - started
    if plan.location is None:
        raise RequestError("the source was not opened with open_dataset(): nothing to sample")
    run = f"dry-run-{uuid.uuid4().hex}"
    estimates: dict[str, VariableEstimate] = {}
    sampled_bytes, sample_seconds = 0, 0.0
    for name in plan.source.data_vars:
        name = str(name)
        encode = _sample_encoder(plan, name)
        stored = logical = sampled = 0
        for region in _sample_regions(plan, name, samples):
            tick = _time.perf_counter()
            values = _read(plan, name, region, run)
            if values.dtype.kind == "f" and np.isnan(values).all():
                continue  # Zarr stores nothing for it: no evidence about the others
            stored += len(encode(values))
            logical += values.nbytes
            sampled += 1
            sample_seconds += _time.perf_counter() - tick
        sampled_bytes += logical
        total = int(plan.source[name].nbytes)
        estimates[name] = VariableEstimate(
            treatment="quantize" if name in plan.quantized else "copy",
            chunks=plan.variable_object_count(name),
            logical_bytes=total,
            estimated_stored_bytes=round(total * stored / logical) if logical else None,
            nbits=plan.quantized.get(name),
            tolerance=plan.tolerances.get(name),
            source_step=plan.source_steps.get(name),
            sampled_chunks=sampled,
            sampled_bytes=logical,
        )
    for name in plan.dropped:
        estimates[name] = VariableEstimate("drop", 0, int(ds[name].nbytes), 0)
    for name in plan.skipped:
        estimates[name] = VariableEstimate("skip", 0, 0, None)
    threads = workers if workers is not None else _parallel.default_threads()
    # As the run will: each variable's units no more at once than fit in memory together.
    memory, along, at_once = memory_bytes(), {}, {}
    for name in plan.source.data_vars:
        fit = _parallel.threads_that_fit(threads, plan.unit_memory(str(name), along), memory)
        if fit < threads:
            at_once[str(name)] = fit
    return DryRunReport(
        src=src, dst=dst, zarr_format=plan.zarr_format,
        variables=dict(sorted(estimates.items())), sampled_bytes=sampled_bytes,
        sample_seconds=sample_seconds, threads=threads, plan_seconds=plan_seconds,
        units_at_once=at_once, samples=samples,
        sharded=any(plan.variable_shards(str(n)) is not None for n in plan.source.data_vars),
    )  # fmt: skip


def _sample_regions(plan: Plan, name: str, samples: int) -> list[dict[str, slice]]:
    """Up to ``samples`` output chunks spread over the variable: the first, the last and
    between, picked without listing every chunk (millions on a full-size store). Chunks,
    not write units: a unit of a sharded variable is whole shards (1.5 GB for 28 steps of
    a 13-level variable at 0.25 degree), and the ratio of a few chunks scales to them."""
    var = plan.source[name]
    out = plan.variable_chunks(name)
    grid = [math.ceil(n / c) for n, c in zip(var.shape, out, strict=True)]
    count = math.prod(grid)
    picks = sorted({round(i * (count - 1) / max(samples - 1, 1)) for i in range(samples)})
    regions = []
    for flat in picks:
        index = np.unravel_index(flat, grid) if grid else ()
        region = {
            str(dim): slice(int(i) * c, min((int(i) + 1) * c, n))
            for dim, i, c, n in zip(var.dims, index, out, var.shape, strict=True)
        }
        regions.append(region)
    return regions


def _read(plan: Plan, name: str, region: Mapping[str, slice], run: str) -> np.ndarray:
    """The values a worker would read for ``region`` of ``name`` (:func:`_unit.read_region`:
    stored values for copies and raw reads, decoded ones otherwise)."""
    from layerquantizer.dataset._unit import UnitJob, read_region

    job = UnitJob(
        run=run, src=plan.location, src_token=plan.token, dst="", dst_token=None,
        variable=name, index=(), region=tuple(region.values()),
        source=_source_selection(plan.source_positions, region),
        raw_read=name in plan.raw_read, nbytes=0, chunks=1,
    )  # fmt: skip
    values, _ = read_region(job)
    return np.array(values, copy=True)  # read_region reuses its buffer


def _sample_encoder(plan: Plan, name: str):
    """The function that turns a chunk's values into the bytes a run would store (Zarr v3
    chunks are estimated with the v2 codec of the same settings: the same bytes but the
    framing)."""
    if name in plan.quantized:
        encoding = plan.encoding.get(name, {})
        compressors = encoding.get("compressors") if plan.zarr_format == 2 else None
        codec = (
            compressors[0]
            if compressors
            else _build_codec(plan.quantized[name], 2, plan.tolerances.get(name))["compressors"][0]
        )

        def quantize(values: np.ndarray) -> bytes:
            return codec.encode(np.ascontiguousarray(values, dtype=np.float32))

        return quantize
    codec = _lossless_codec(2)["compressors"][0]
    return lambda values: codec.encode(np.ascontiguousarray(values))
