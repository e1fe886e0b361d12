"""Comparing a destination with its source per variable and level (:func:`verify`)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from layerquantizer.dataset._errors import RequestError
from layerquantizer.dataset._inspect import ArrayReport, inspect
from layerquantizer.dataset._stores import _single_threaded_blosc, _token, open_dataset

# Columns of the per-layer statistics that _layer_stats returns.
_LO, _HI, _MAX_ERR, _MAX_EXCESS, _SUM_SQ, _COUNT, _BAD = range(7)
# Relative slack on the half step, for the float64 rounding of our own bound arithmetic.
_BOUND_SLACK = 1e-12


def _layer_stats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per 2-D layer (last two axes) of one block: finite min/max of ``a``, max error,
    max of error minus one ulp of ``a``, sum of squared errors, count of finite pairs and
    count of non-finite values that differ; shape ``(..., 1, 1, 7)``, float64.

    Layer by layer, so that the float64 temporaries stay the size of one layer.
    """
    lead = a.shape[:-2]
    layers_a = a.reshape(-1, *a.shape[-2:])
    layers_b = b.reshape(layers_a.shape)
    stats = np.empty((layers_a.shape[0], 7))
    with np.errstate(invalid="ignore", over="ignore"):
        for index, (layer_a, layer_b) in enumerate(zip(layers_a, layers_b, strict=True)):
            if layer_a.dtype == np.float32 or layer_b.dtype == np.float32:
                # Stored as float32 (float64 sources too): one float32 ulp of the value.
                ulp = np.spacing(np.abs(layer_a).astype(np.float32)).astype(np.float64)
            elif layer_a.dtype.kind == "f":
                ulp = np.spacing(np.abs(layer_a.astype(np.float64)))
            else:
                ulp = 0.0
            a64 = layer_a.astype(np.float64)
            b64 = layer_b.astype(np.float64)
            finite_a = np.isfinite(a64)
            both = finite_a & np.isfinite(b64)
            diff = np.where(both, np.abs(a64 - b64), 0.0)
            same_nonfinite = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
            stats[index] = (
                np.where(finite_a, a64, np.inf).min(initial=np.inf),
                np.where(finite_a, a64, -np.inf).max(initial=-np.inf),
                diff.max(initial=0.0),
                np.where(both, diff - ulp, -np.inf).max(initial=-np.inf),
                np.square(diff).sum(),
                both.sum(),
                (~both & ~same_nonfinite).sum(),
            )
    return stats.reshape(*lead, 1, 1, 7)


@dataclasses.dataclass
class LevelStats:
    """Errors at one level (or over a whole variable without a level dimension)."""

    level: float | int | None
    vmin: float
    vmax: float
    max_abs_error: float
    max_fs_error: float
    rmse: float
    bound: float | None
    bound_abs: float | None
    nonfinite_mismatches: int
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "min": _json_float(self.vmin),
            "max": _json_float(self.vmax),
            "max_abs_error": _json_float(self.max_abs_error),
            "max_fs_error": _json_float(self.max_fs_error),
            "rmse": _json_float(self.rmse),
            "bound": _json_float(self.bound),
            "bound_abs": _json_float(self.bound_abs),
            "nonfinite_mismatches": self.nonfinite_mismatches,
            "ok": self.ok,
        }


@dataclasses.dataclass
class VariableCheck:
    """Verification of one variable.

    ``codec_bound`` is the codec's full-scale bound (``0.5 / (2**nbits - 1)``, 0 for a
    lossless codec, None if unknown); :attr:`bound` adds the float32 ulp the codec also
    allows, over each layer's range, so that ``max_fs_error <= bound`` whenever ``ok``.
    """

    name: str
    codec: str
    nbits: int | None
    codec_bound: float | None
    levels: list[LevelStats]

    @property
    def bound(self) -> float | None:
        if self.codec_bound is None:
            return None
        return max((lev.bound or 0.0 for lev in self.levels), default=self.codec_bound)

    @property
    def ok(self) -> bool:
        return all(level.ok for level in self.levels)

    @property
    def max_abs_error(self) -> float:
        return max((lev.max_abs_error for lev in self.levels), default=0.0)

    @property
    def max_fs_error(self) -> float:
        return max((lev.max_fs_error for lev in self.levels), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "nbits": self.nbits,
            "bound": _json_float(self.bound),
            "codec_bound": _json_float(self.codec_bound),
            "max_fs_error": _json_float(self.max_fs_error),
            "max_abs_error": _json_float(self.max_abs_error),
            "ok": self.ok,
            "levels": [lev.to_dict() for lev in self.levels],
        }


@dataclasses.dataclass
class VerifyReport:
    """The result of :func:`verify`; ``ok`` is False if any variable misses its bound."""

    src: str
    dst: str
    variables: dict[str, VariableCheck]
    skipped: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.variables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "src": self.src,
            "dst": self.dst,
            "variables": {name: check.to_dict() for name, check in self.variables.items()},
            "skipped": self.skipped,
        }


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _align_to(src_var: xr.DataArray, dst_var: xr.DataArray, name: str) -> xr.DataArray:
    if src_var.dims != dst_var.dims:
        raise RequestError(
            f"{name}: dims differ: ({', '.join(map(str, src_var.dims))}) in the source, "
            f"({', '.join(map(str, dst_var.dims))}) in the destination"
        )
    for dim in dst_var.dims:
        if dim in src_var.indexes and dim in dst_var.indexes:
            if not src_var.indexes[dim].equals(dst_var.indexes[dim]):
                try:
                    src_var = src_var.sel({dim: dst_var.indexes[dim]})
                except (KeyError, ValueError) as exc:
                    raise RequestError(
                        f"{name}: the destination's {dim!r} values are not all in the source"
                    ) from exc
    if src_var.shape != dst_var.shape:
        raise RequestError(
            f"{name}: shapes differ: {src_var.shape} in the source, {dst_var.shape} in the "
            "destination"
        )
    return src_var


def _check_variable(
    name: str,
    src_var: xr.DataArray,
    dst_var: xr.DataArray,
    array: ArrayReport | None,
    stats: np.ndarray,
) -> VariableCheck:
    """Turn per-layer statistics (leading dims x 7) into per-level results."""
    bound = array.error_bound if array is not None else 0.0
    codec = array.codec if array is not None else "?"
    nbits = array.nbits if array is not None else None
    dims = list(src_var.dims[:-2]) if src_var.ndim >= 2 else []
    if "level" in dims:
        axis = dims.index("level")
        per_level = np.moveaxis(stats, axis, 0).reshape(stats.shape[axis], -1, 7)
        level_values = [v.item() for v in src_var["level"].values]
    else:
        per_level = stats.reshape(1, -1, 7)
        level_values = [None]
    levels = []
    for value, layers in zip(level_values, per_level, strict=True):
        lo, hi = layers[:, _LO], layers[:, _HI]
        has_range = np.isfinite(lo) & np.isfinite(hi)
        span = np.where(has_range, hi - lo, 0.0)
        max_err = layers[:, _MAX_ERR]
        with np.errstate(invalid="ignore", divide="ignore"):
            fs = np.where(span > 0, max_err / np.where(span > 0, span, 1.0), 0.0)
        bad = int(layers[:, _BAD].sum())
        if bound is None:
            ok = bad == 0  # no promise to hold the values to
        elif bound == 0.0:
            ok = bad == 0 and bool((max_err == 0).all())
        else:
            allowed = bound * span * (1 + _BOUND_SLACK)
            ok = bad == 0 and bool((layers[:, _MAX_EXCESS] <= allowed).all())
        count = layers[:, _COUNT].sum()
        if bound is None:
            fs_bound = abs_bound = None
        else:
            # The codec also allows one float32 ulp of the value, largest at max |x|.
            ulp = np.spacing(np.maximum(np.abs(lo), np.abs(hi)).astype(np.float32))
            ulp = np.where(has_range, ulp.astype(np.float64), 0.0) if bound else 0.0 * span
            with np.errstate(invalid="ignore", divide="ignore"):
                per_layer = np.where(span > 0, bound + ulp / np.where(span > 0, span, 1), bound)
            fs_bound = float(per_layer.max(initial=bound))
            abs_bound = float((bound * span + ulp).max(initial=0.0))
        levels.append(
            LevelStats(
                level=value,
                vmin=float(lo[has_range].min()) if has_range.any() else math.nan,
                vmax=float(hi[has_range].max()) if has_range.any() else math.nan,
                max_abs_error=float(max_err.max(initial=0.0)),
                max_fs_error=float(fs.max(initial=0.0)),
                rmse=float(math.sqrt(layers[:, _SUM_SQ].sum() / count)) if count else 0.0,
                bound=fs_bound,
                bound_abs=abs_bound,
                nonfinite_mismatches=bad,
                ok=ok,
            )
        )
    return VariableCheck(name=name, codec=codec, nbits=nbits, codec_bound=bound, levels=levels)


def _stats_graph(src_var: xr.DataArray, dst_var: xr.DataArray):
    """A dask array (leading dims x 7) of per-layer statistics, one block pass over both."""
    import dask.array as da

    a, b = src_var.data, dst_var.data
    if not isinstance(a, da.Array):
        a = da.asarray(a)
    if not isinstance(b, da.Array):
        b = da.asarray(b)
    while a.ndim < 2:  # a vector or scalar is one layer
        a, b = a[None], b[None]
    # Whole layers are not needed per block: every statistic combines across blocks.
    b = b.rechunk(a.chunks)
    lead = a.chunks[:-2]
    blocks = da.map_blocks(
        _layer_stats, a, b,
        chunks=(*lead, (1,) * len(a.chunks[-2]), (1,) * len(a.chunks[-1]), (7,)),
        new_axis=a.ndim, dtype=np.float64, meta=np.empty((0,) * (a.ndim + 1)),
    )  # fmt: skip
    axes = (a.ndim - 2, a.ndim - 1)
    lo = blocks[..., _LO].min(axis=axes)
    hi = blocks[..., _HI].max(axis=axes)
    max_err = blocks[..., _MAX_ERR].max(axis=axes)
    excess = blocks[..., _MAX_EXCESS].max(axis=axes)
    sums = blocks[..., _SUM_SQ:].sum(axis=axes)
    return da.concatenate(
        [lo[..., None], hi[..., None], max_err[..., None], excess[..., None], sums],
        axis=-1,
    )


def verify(
    src: str,
    dst: str,
    *,
    variables: Sequence[str] | None = None,
    token: Any = None,
    storage_options: Mapping | None = None,
    dst_storage_options: Mapping | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Compare ``dst`` with ``src`` per variable and level, in float64, through dask.

    For each 2-D layer (one level at one time step) it finds the source's finite range
    ``[min, max]`` and checks every value: ``|x - y| <= bound * (max - min) + ulp32(x)``
    with ``bound`` the full-scale bound of the destination's codec (LayerQuantizer:
    ``0.5 / (2**nbits - 1)``, from the codec metadata or, failing that, the
    ``layerquantizer_nbits`` attribute; a lossless codec: exact equality). NaN and
    infinities must match exactly. ``max_fs_error`` is the largest error over its layer's
    range. Memory stays at a few chunks.

    The destination may hold a subset (times, levels) of the source. ``token``: gcsfs
    credentials for ``gs://`` stores (both; by default ``gs://`` is read anonymously).

    Examples
    --------
    >>> import tempfile
    >>> from layerquantizer.dataset import compress, verify, write_sample
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=1)
    >>> _ = compress(f"{tmp}/in.zarr", f"{tmp}/out.zarr", variables=["temperature"], nbits=12)
    >>> verify(f"{tmp}/in.zarr", f"{tmp}/out.zarr").ok
    True
    """
    import dask

    src_token = _token(token, storage_options)
    dst_token = _token(token, dst_storage_options, "dst_storage_options")
    src_ds = open_dataset(src, token=src_token, chunks={})
    dst_ds = open_dataset(dst, token=dst_token, chunks={})
    store = inspect(dst, token=dst_token)
    if variables is None:
        names = [str(n) for n in dst_ds.data_vars if n in src_ds.data_vars]
        if not names:
            raise RequestError(f"{src} and {dst} have no data variable in common")
    else:
        names = list(variables)
        for name in names:
            for ds, where in ((src_ds, src), (dst_ds, dst)):
                if name not in ds.data_vars:
                    raise RequestError(
                        f"variable {name!r} not found in {where}; available: "
                        f"{', '.join(map(str, ds.data_vars))}"
                    )
    skipped: dict[str, str] = {}
    pending = []
    for name in names:
        src_var, dst_var = src_ds[name], dst_ds[name]
        if src_var.dtype.kind not in "fiub" or dst_var.dtype.kind not in "fiub":
            skipped[name] = f"not numeric ({src_var.dtype}, {dst_var.dtype})"
            continue
        src_var = _align_to(src_var, dst_var, name)
        pending.append((name, src_var, dst_var, _stats_graph(src_var, dst_var)))
    with _single_threaded_blosc():
        computed = dask.compute(
            *[graph for *_, graph in pending],
            scheduler="threads",
            num_workers=workers or os.cpu_count() or 1,
        )
    checks = {
        name: _check_variable(name, src_var, dst_var, store.variables.get(name), stats)
        for (name, src_var, dst_var, _), stats in zip(pending, computed, strict=True)
    }
    return VerifyReport(src=src, dst=dst, variables=checks, skipped=skipped)
