"""Compress, verify and inspect whole Zarr datasets: the Python API behind ``lq``.

The same steps as the command line (``lq sample sample.zarr && lq compress sample.zarr
out.zarr --vars temperature,geopotential && lq verify sample.zarr out.zarr``)::

    from layerquantizer import dataset

    dataset.write_sample("sample.zarr", levels=13, grid=(121, 240), times=4)
    report = dataset.compress(
        "sample.zarr", "out.zarr", variables=["temperature", "geopotential"], nbits=16
    )
    print(report.store.total_ratio)
    assert dataset.verify("sample.zarr", "out.zarr").ok
    print(dataset.inspect("out.zarr").to_dict()["total"])

:func:`compress` runs in these steps:

1. :func:`open_dataset` opens the source lazily and read-only (``gs://`` anonymously
   unless a ``token`` is given; see :mod:`layerquantizer.storage`);
2. :func:`plan_compress` selects and subsets the variables, chooses the output chunks,
   builds the encodings and a lazy template, and lists the write units (whole output
   chunks, never cutting a source chunk);
3. :func:`write_plan`, holding DST's lock (``DST.lq-lock``, also when called from Python),
   records the plan in DST's progress folder, writes the metadata from
   the template (``to_zarr(compute=False)``), then runs every unit on threads, a local
   cluster or a dask scheduler (:mod:`layerquantizer.dataset._parallel`; the unit itself is
   :func:`layerquantizer.dataset._unit.run_unit`), recording them done in batched markers, and
   finally writes the consolidated metadata and removes the progress folder
   (:mod:`layerquantizer.dataset._resume`);
   a failure is re-raised as :class:`ChunkWriteError` naming the variable and the chunk.

With ``resume=True`` step 3 writes the units an interrupted run did not record done, then
checks the recorded ones against their source (a unit whose source changed is written again).

This package imports xarray, dask, zarr and fsspec; ``import layerquantizer`` does not
import it.
"""

from __future__ import annotations

from layerquantizer.dataset._advise import (
    AdviceReport,
    Recommendation,
    Trial,
    VariableAdvice,
    advise,
    bit_pair_counts,
    bitinformation,
    keepbits,
)
from layerquantizer.dataset._codec_metadata import (
    ATTR_BOUND,
    ATTR_CODEC,
    ATTR_DROPPED,
    ATTR_NBITS,
    full_scale_bound,
)
from layerquantizer.dataset._compress import CompressReport, compress
from layerquantizer.dataset._dry_run import DryRunReport, VariableEstimate, dry_run
from layerquantizer.dataset._errors import (
    ChunkWriteError,
    DatasetError,
    DestinationExistsError,
    RequestError,
    ResumeMismatchError,
    SourceError,
    _one_line,
)
from layerquantizer.dataset._inspect import ArrayReport, StoreReport, inspect
from layerquantizer.dataset._plan import (
    DEFAULT_NBITS,
    GRID_DIMS,
    MAX_UNIT_BYTES,
    ChunkTask,
    Plan,
    grid_dims,
    plan_compress,
    select_subset,
)
from layerquantizer.dataset._requests import (
    parse_chunks,
    parse_gcs_token,
    parse_levels,
    parse_shards,
    parse_time_range,
    parse_variables,
)
from layerquantizer.dataset._sample import write_sample
from layerquantizer.dataset._stores import _token, open_dataset
from layerquantizer.dataset._verify import (
    PROBLEM_KINDS,
    LevelStats,
    Problem,
    VariableCheck,
    VerifyReport,
    verify,
)
from layerquantizer.dataset._write import ProgressCallback, WriteResult, write_plan

__all__ = [
    "AdviceReport",
    "Recommendation",
    "Trial",
    "VariableAdvice",
    "advise",
    "ChunkTask",
    "ChunkWriteError",
    "CompressReport",
    "DEFAULT_NBITS",
    "DatasetError",
    "DestinationExistsError",
    "DryRunReport",
    "LevelStats",
    "PROBLEM_KINDS",
    "Plan",
    "Problem",
    "RequestError",
    "ResumeMismatchError",
    "SourceError",
    "StoreReport",
    "ArrayReport",
    "VariableCheck",
    "VariableEstimate",
    "VerifyReport",
    "WriteResult",
    "compress",
    "dry_run",
    "full_scale_bound",
    "inspect",
    "open_dataset",
    "parse_chunks",
    "parse_gcs_token",
    "parse_levels",
    "parse_shards",
    "parse_time_range",
    "parse_variables",
    "plan_compress",
    "select_subset",
    "verify",
    "write_plan",
    "write_sample",
]
