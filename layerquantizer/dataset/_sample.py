"""Writing the synthetic sample dataset to a store (:func:`write_sample`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

from layerquantizer.dataset._errors import RequestError
from layerquantizer.dataset._stores import _quiet_consolidated, _single_threaded_blosc, _token
from layerquantizer.dataset._write import _destination_action, destination_lock


def write_sample(
    dst: str,
    *,
    levels: int | Sequence[float] = 13,
    grid: tuple[int, int] = (121, 240),
    times: int = 4,
    zarr_format: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    token: Any = None,
    storage_options: Mapping | None = None,
    workers: int | None = None,
    break_lock: bool = False,
) -> xr.Dataset:
    """Write :func:`layerquantizer.synthetic.sample_dataset` losslessly to ``dst``.

    Chunks are one time step by the whole level x grid, as in WeatherBench2; the data are
    generated chunk by chunk, so memory stays small on full-size grids. Returns the
    (lazy) dataset written. ``workers`` threads generate and write chunks.

    While it writes it holds the lock of ``dst`` (``dst`` + ``.lq-lock``), the lock of
    :func:`compress`: :class:`DestinationExistsError` if another ``lq sample`` or
    ``lq compress`` is writing ``dst`` (``break_lock`` takes the lock anyway, for a run on
    another host that is gone).

    Examples
    --------
    >>> import tempfile
    >>> ds = write_sample(f"{tempfile.mkdtemp()}/sample.zarr", levels=3, grid=(25, 48), times=2)
    >>> dict(ds.temperature.sizes)
    {'time': 2, 'level': 3, 'latitude': 25, 'longitude': 48}
    """
    import dask

    from layerquantizer.storage import open_store, store_errors
    from layerquantizer.synthetic import sample_dataset

    if zarr_format not in (2, 3):
        raise RequestError(f"zarr format must be 2 or 3, got {zarr_format!r}")
    from layerquantizer.dataset._destination import write_marker

    token = _token(token, storage_options)
    try:
        ds = sample_dataset(levels=levels, grid=grid, times=times, seed=seed, lazy=True)
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    encoding = {name: {"chunks": (1, *var.shape[1:])} for name, var in ds.data_vars.items()}
    # One lock from before DST is looked at (an --overwrite removes it) until the end.
    with destination_lock(dst, token, break_lock=break_lock, writer="lq sample"):
        # The check of lq compress (_destination.check_removable): --overwrite removes only
        # what lq wrote, and the marker first makes this store one of those.
        _destination_action(None, dst, token, overwrite, resume=False)
        with (
            store_errors(dst),
            _single_threaded_blosc(),
            _quiet_consolidated(),
            dask.config.set(scheduler="threads", num_workers=workers or os.cpu_count() or 1),
        ):
            write_marker(dst, token, written_by="lq sample")
            store = open_store(dst, "w", token=token)
            # "a": the store holds the marker already (zarr's "w-" refuses any content).
            ds.to_zarr(
                store, mode="a", encoding=encoding, consolidated=True, zarr_format=zarr_format
            )
    return ds
