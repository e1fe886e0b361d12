"""Describing a store from its metadata and object sizes (:func:`inspect`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from layerquantizer.dataset._codec_metadata import (
    _LOSSLESS_CODECS,
    _LQ_CODEC_IDS,
    ABSOLUTE_MODES,
    ATTR_CODEC,
    ATTR_DROPPED,
    ATTR_MODE,
    ATTR_NBITS,
    ATTR_TOLERANCE,
    MODE_NBITS,
    MODE_SOURCE,
    MODE_TOLERANCE,
    full_scale_bound,
)
from layerquantizer.dataset._errors import SourceError, _one_line
from layerquantizer.dataset._stores import _token


@dataclasses.dataclass
class ArrayReport:
    """One array of a store as its metadata and objects describe it."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    codec: str
    settings: dict[str, Any]
    codecs: list[dict[str, Any]]
    logical_bytes: int
    stored_bytes: int
    objects: int
    attrs: dict[str, Any]
    is_coordinate: bool
    #: False in a store whose writing did not finish: the ratio would count unwritten data.
    complete: bool = True
    #: The shard shape of a sharded Zarr v3 array (``chunks`` are then the chunks inside
    #: each shard, and ``objects`` counts shards), None otherwise.
    shards: tuple[int, ...] | None = None

    @property
    def ratio(self) -> float | None:
        if not self.complete or not self.stored_bytes:
            return None
        return self.logical_bytes / self.stored_bytes

    @property
    def nbits(self) -> int | None:
        """Bits of LayerQuantizer, from the codec metadata, else from the attributes (None
        for an absolute tolerance)."""
        if self.codec in _LQ_CODEC_IDS and "nbits" in self.settings:
            return int(self.settings["nbits"])
        if self.tolerance is not None:
            return None
        value = self.attrs.get(ATTR_NBITS)
        return int(value) if isinstance(value, int | float) else None

    @property
    def tolerance(self) -> float | None:
        """LayerQuantizer's absolute tolerance, from the codec metadata, else from the
        attributes (when the codec metadata gives no nbits)."""
        if self.codec in _LQ_CODEC_IDS:
            if isinstance(self.settings.get("tolerance"), int | float):
                return float(self.settings["tolerance"])
            if "nbits" in self.settings:
                return None
        value = self.attrs.get(ATTR_TOLERANCE)
        if self.attrs.get(ATTR_MODE) in ABSOLUTE_MODES and isinstance(value, int | float):
            return float(value)
        return None

    @property
    def mode(self) -> str | None:
        """``"nbits"``, ``"tolerance"`` or ``"source"`` (``precision: source``: a tolerance
        of half the source's grid step) for LayerQuantizer, None for other codecs."""
        if self.tolerance is not None:
            return MODE_SOURCE if self.attrs.get(ATTR_MODE) == MODE_SOURCE else MODE_TOLERANCE
        return MODE_NBITS if self.nbits is not None else None

    @property
    def units(self) -> str:
        """The ``units`` attribute, "" without one."""
        value = self.attrs.get("units")
        return value if isinstance(value, str) else ""

    @property
    def error_bound(self) -> float | None:
        """Full-scale bound: LayerQuantizer's, 0.0 for lossless codecs, None if unknown."""
        if self.nbits is not None:
            return full_scale_bound(self.nbits)
        return 0.0 if _codec_names(self.codecs) <= _LOSSLESS_CODECS else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": list(self.dims),
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "shards": None if self.shards is None else list(self.shards),
            "dtype": self.dtype,
            "codec": self.codec,
            "settings": self.settings,
            "codecs": self.codecs,
            "error_bound": self.error_bound,
            "mode": self.mode,
            "tolerance": self.tolerance,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "objects": self.objects,
        }


@dataclasses.dataclass
class StoreReport:
    """Sizes and codecs of every array in a store; ``variables`` holds the data variables."""

    store: str
    zarr_format: int
    consolidated: bool
    variables: dict[str, ArrayReport]
    coordinates: dict[str, ArrayReport]
    stored_bytes: int
    objects: int
    #: Why the store is unfinished (an interrupted ``lq compress``), None when complete.
    incomplete: str | None = None
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Every object key, relative to the store (progress folder aside).
    keys: frozenset[str] = dataclasses.field(default=frozenset(), repr=False)

    @property
    def complete(self) -> bool:
        return self.incomplete is None

    @property
    def logical_bytes(self) -> int:
        arrays = [*self.variables.values(), *self.coordinates.values()]
        return sum(a.logical_bytes for a in arrays)

    @property
    def total_ratio(self) -> float | None:
        if not self.complete or not self.stored_bytes:
            return None
        return self.logical_bytes / self.stored_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "zarr_format": self.zarr_format,
            "consolidated": self.consolidated,
            "complete": self.complete,
            "incomplete": self.incomplete,
            "variables": {name: a.to_dict() for name, a in self.variables.items()},
            "coordinates": {name: a.to_dict() for name, a in self.coordinates.items()},
            "total": {
                "variables": len(self.variables),
                "logical_bytes": self.logical_bytes,
                "stored_bytes": self.stored_bytes,
                "ratio": None if self.total_ratio is None else round(self.total_ratio, 4),
                "objects": self.objects,
            },
        }


def _codec_names(codecs: list[dict]) -> set[str]:
    """The names of ``codecs`` (raw metadata entries) and of those inside a shard's."""
    names = set()
    for entry in codecs:
        names.add(entry.get("id", entry.get("name")))
        if entry.get("name") == "sharding_indexed":
            names |= _codec_names((entry.get("configuration") or {}).get("codecs") or [])
    return names


def _sharding(meta: Mapping) -> dict | None:
    """The configuration of a v3 array's ``sharding_indexed`` codec, None if unsharded."""
    codecs = meta.get("codecs") or []
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        return dict(codecs[0].get("configuration") or {})
    return None


def _summarize_codecs(meta: Mapping, zarr_format: int) -> tuple[str, dict, list[dict]]:
    """(short name, settings, full list) of an array's codecs from its raw metadata; of a
    sharded array, the name and settings are those of the codecs inside its shards."""
    if zarr_format == 2:
        codecs = [dict(f) for f in meta.get("filters") or []]
        if meta.get("compressor"):
            codecs.append(dict(meta["compressor"]))
        names = [c.get("id", "?") for c in codecs]
        main = codecs[-1] if codecs else None
        settings = {k: v for k, v in main.items() if k != "id"} if main else {}
    else:
        codecs = [dict(c) for c in meta.get("codecs", [])]
        sharding = _sharding(meta)
        if sharding is not None:
            name, settings, _ = _summarize_codecs({"codecs": sharding.get("codecs") or []}, 3)
            return name, settings, codecs
        names = [c.get("name", "?") for c in codecs]
        # "bytes" is the plain serializer every v3 array has unless another replaces it.
        shown = [c for c in codecs if c.get("name") != "bytes"] or codecs
        main = next(
            (c for c in codecs if c.get("name") in _LQ_CODEC_IDS), shown[-1] if shown else None
        )
        settings = dict(main.get("configuration") or {}) if main else {}
        names = [c.get("name", "?") for c in shown]
    lq = next((n for n in names if n in _LQ_CODEC_IDS), None)
    return (lq or "+".join(names) or "none"), settings, codecs


def inspect(
    location: str, *, token: Any = None, storage_options: Mapping | None = None
) -> StoreReport:
    """Describe every array of a Zarr store from its metadata and object sizes.

    Reads only metadata documents and the object listing (no chunk is decoded, and no
    codec needs to be installed). Logical bytes are ``prod(shape) * itemsize``; stored
    bytes the summed sizes of the array's objects, metadata included. The progress folder
    of an unfinished ``lq compress`` run (``.lq-progress``) is not counted.

    A store is reported incomplete (``complete`` False, ratios None) when it holds that
    progress folder without its ``complete`` marker, or when it was written by ``lq
    compress`` (LayerQuantizer attributes) but has no consolidated metadata, which a run
    writes last.

    Examples
    --------
    >>> import tempfile
    >>> from layerquantizer.dataset import inspect, write_sample
    >>> tmp = tempfile.mkdtemp()
    >>> _ = write_sample(f"{tmp}/in.zarr", levels=2, grid=(25, 48), times=1)
    >>> inspect(f"{tmp}/in.zarr").to_dict()["total"]["objects"] > 0
    True
    """
    import json

    from layerquantizer.dataset._resume import PROGRESS_DIR
    from layerquantizer.storage import StoreError, filesystem, local_file_reason, store_errors

    token = _token(token, storage_options)
    try:
        with store_errors(location):
            fs, root = filesystem(location, "r", token=token)
            root = root.rstrip("/")
            listing = fs.find(root, detail=True)
    except StoreError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot list {location}: {_one_line(exc)}") from exc
    prefix = root + "/"
    everything = {
        path[len(prefix) :]: int(info.get("size") or 0)
        for path, info in listing.items()
        if path.startswith(prefix) and info.get("type") != "directory"
    }
    progress = {key for key in everything if key.startswith(PROGRESS_DIR + "/")}
    sizes = {key: size for key, size in everything.items() if key not in progress}
    if ".zgroup" in sizes:
        zarr_format = 2
    elif "zarr.json" in sizes:
        zarr_format = 3
    elif progress:
        raise SourceError(_no_metadata_yet(location))
    else:
        reason = local_file_reason(location)  # a netCDF file, say: how to convert it
        if reason is not None:
            raise SourceError(f"{location}: {reason}")
        raise SourceError(f"{location} is not a Zarr store (no .zgroup or zarr.json at its root)")

    def read_json(key: str) -> dict:
        try:
            return json.loads(fs.cat_file(prefix + key))
        except Exception as exc:
            raise SourceError(f"cannot read {location}/{key}: {_one_line(exc)}") from exc

    arrays: dict[str, tuple[dict, dict]] = {}
    if zarr_format == 2:
        consolidated = ".zmetadata" in sizes
        root_attrs = read_json(".zattrs") if ".zattrs" in sizes else {}
        for key in sizes:
            if key.endswith(".zarray"):
                name = key[: -len("/.zarray")]
                attrs_key = f"{name}/.zattrs"
                arrays[name] = (read_json(key), read_json(attrs_key) if attrs_key in sizes else {})
    else:
        root_meta = read_json("zarr.json")
        consolidated = root_meta.get("consolidated_metadata") is not None
        root_attrs = root_meta.get("attributes") or {}
        for key in sizes:
            if key.endswith("/zarr.json"):
                meta = read_json(key)
                if meta.get("node_type") == "array":
                    arrays[key[: -len("/zarr.json")]] = (meta, meta.get("attributes", {}))

    incomplete = _incompleteness(location, progress, arrays, root_attrs, consolidated)
    coordinate_names: set[str] = set()
    for _, attrs in arrays.values():
        coordinate_names.update(str(attrs.get("coordinates", "")).split())
    variables: dict[str, ArrayReport] = {}
    coordinates: dict[str, ArrayReport] = {}
    for name in sorted(arrays):
        meta, attrs = arrays[name]
        shards = None
        if zarr_format == 2:
            dims = tuple(attrs.get("_ARRAY_DIMENSIONS", ()))
            chunks = tuple(meta["chunks"])
            dtype = np.dtype(meta["dtype"]) if isinstance(meta["dtype"], str) else None
        else:
            dims = tuple(d for d in meta.get("dimension_names") or () if d is not None)
            chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
            sharding = _sharding(meta)
            if sharding is not None:  # the chunk grid is the grid of shards
                shards, chunks = chunks, tuple(sharding["chunk_shape"])
            try:
                dtype = np.dtype(meta["data_type"])
            except TypeError:
                dtype = None
        shape = tuple(meta["shape"])
        codec, settings, codecs = _summarize_codecs(meta, zarr_format)
        own = {k: v for k, v in sizes.items() if k.startswith(name + "/")}
        report = ArrayReport(
            name=name,
            dims=dims,
            shape=shape,
            chunks=chunks,
            dtype=dtype.name
            if dtype is not None
            else str(meta.get("dtype", meta.get("data_type"))),
            codec=codec,
            settings=settings,
            codecs=codecs,
            logical_bytes=math.prod(shape) * (dtype.itemsize if dtype is not None else 0),
            stored_bytes=sum(own.values()),
            objects=len(own),
            attrs={k: v for k, v in attrs.items() if k != "_ARRAY_DIMENSIONS"},
            is_coordinate=name in coordinate_names or dims == (name,),
            complete=incomplete is None,
            shards=shards,
        )
        (coordinates if report.is_coordinate else variables)[name] = report
    return StoreReport(
        store=location,
        zarr_format=zarr_format,
        consolidated=consolidated,
        variables=variables,
        coordinates=coordinates,
        stored_bytes=sum(sizes.values()),
        objects=len(sizes),
        incomplete=incomplete,
        attrs=dict(root_attrs),
        keys=frozenset(sizes),
    )


def _no_metadata_yet(location: str) -> str:
    return (
        f"{location} holds an interrupted lq compress run that wrote no metadata yet; run "
        "the same lq compress command with --resume or --overwrite"
    )


def _incompleteness(
    location: str, progress: set[str], arrays: Mapping, root_attrs: Mapping, consolidated: bool
) -> str | None:
    """Why the store at ``location`` is an unfinished ``lq compress`` output, or None."""
    from layerquantizer.dataset._resume import PROGRESS_DIR

    if progress and f"{PROGRESS_DIR}/complete" not in progress:
        return (
            f"{location} holds an interrupted lq compress run ({PROGRESS_DIR} is still there); "
            "finish it with the same lq compress command and --resume"
        )
    written_by_lq = ATTR_DROPPED in root_attrs or any(
        ATTR_CODEC in attrs for _, attrs in arrays.values()
    )
    if written_by_lq and not consolidated:
        return (
            f"{location} has no consolidated metadata, which lq compress writes last: the run "
            "did not finish; run the same lq compress command with --resume or --overwrite"
        )
    return None
