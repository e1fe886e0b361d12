"""One write unit of ``lq compress``, as a worker runs it: read a region, write its chunks.

A :class:`UnitJob` is small and picklable (store URLs, a variable name, slices), so that
dask can send hundreds of thousands of them to worker processes one at a time; the worker
opens each store once per run and keeps it (:func:`_open_array`), rather than once per unit.

The common case takes a short path measured to matter on 0.25-degree ERA5 chunks
(37 x 721 x 1440 float32, 147 MiB): the source chunk is read as raw bytes and decoded by
its compressor straight into a buffer the thread reuses, and every output chunk of a
quantized variable is encoded by the codec and stored as one object, bypassing zarr's
codec pipeline (which copies the chunk and checks it for fill values in extra passes).
The bytes are those zarr would write: the codec is the array's own, and a chunk holding
only the fill value (NaN) is not stored, as zarr does by default. Anything else (CF-encoded
sources, Zarr v3 sources, partial edge chunks, integer or time variables) goes through
zarr's or xarray's general path. Copied variables are read and written in their stored
form (no CF decoding); float64 values to quantize (float64 and packed sources, read
decoded) are encoded here through float32 within their own bound (:func:`float64_chunk`).
A sharded array's unit is whole shards, each encoded by zarr's ShardingCodec and stored
as one object (:func:`write_region`).

A unit none of whose source objects exists, with NaN the fill value of both arrays, is
neither read nor written (its output is NaN, which zarr does not store): a metadata request
per source chunk, where decoding and scanning a chunk of fill values ran at 90 units/s. The
worker marks nothing done: it reports the unit and its source fingerprint to the parent,
which records them in batches (see resume.py).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: Name of the hidden folder inside DST that holds the progress of a run (see resume.py).
PROGRESS_DIR = ".lq-progress"


@dataclasses.dataclass(slots=True)
class UnitJob:
    """What a worker needs to write one unit: a region of one variable, whole chunks.

    A plain slotted dataclass, not a frozen one: the parent makes one per unit, millions
    for a whole store, and a frozen dataclass's ``__init__`` costs several times more.

    Attributes
    ----------
    run : str
        Identifies the run; workers keep the stores they opened for it.
    src, dst : str
        Store URLs or paths; ``src_token``/``dst_token`` their gcsfs credentials.
    variable : str
        Data variable (and Zarr array) name.
    index : tuple of int
        Chunk-grid index of the unit's first output chunk.
    region : tuple of slice
        The unit's region in the destination array.
    source : tuple of slice or ndarray
        The same region in the source array (positions in the source's full dims).
    raw_read : bool
        Read the stored values from Zarr directly (copies, and quantized variables that
        need no CF decoding); otherwise they are read decoded, through xarray.
    nbytes, chunks : int
        Logical bytes and number of output chunks, for progress reports.
    ordinal : int
        The unit's position among the units of its variable (C order of the unit grid):
        how the progress markers name it (see resume.py).
    recorded : bytes or None
        The source fingerprint an interrupted run recorded for the unit (``b""``: it read
        no source object), None if the unit is not recorded done. A recorded unit is
        skipped if the source objects it reads are those recorded
        (:func:`source_fingerprint`), else written again.
    clean : bool
        DST may hold chunks of this unit from an earlier run (``--resume``): a unit whose
        source holds nothing removes them rather than writing nothing.
    """

    run: str
    src: str
    src_token: Any
    dst: str
    dst_token: Any
    variable: str
    index: tuple[int, ...]
    region: tuple[slice, ...]
    source: tuple[Any, ...]
    raw_read: bool
    nbytes: int
    chunks: int
    label: str = ""
    ordinal: int = 0
    recorded: bytes | None = None
    clean: bool = False


@dataclasses.dataclass(frozen=True)
class CheckJob:
    """The units of one progress batch that an interrupted run recorded done, to check on
    resume: one job for up to a batch of units, so that a million recorded units are a
    thousand round trips to the workers, and their source objects are looked up together
    (concurrently on object stores)."""

    units: tuple[UnitJob, ...]


@dataclasses.dataclass(frozen=True)
class UnitDone:
    """What a finished unit reports back: its variable, logical bytes, output chunks and
    the process id it ran in (so tests and users can see where the work happened), and
    the fingerprint of the source objects it read, for the progress markers."""

    variable: str
    index: tuple[int, ...]
    nbytes: int
    chunks: int
    pid: int
    fast_read: bool
    fast_write: bool
    resumed: bool = False  # written by an earlier run, from the same source objects
    ordinal: int = 0
    fingerprint: bytes = b""
    empty: bool = False  # the source held nothing there: nothing read, nothing written


# --------------------------------------------------------------------------------------
# Per-process state

_LOCK = threading.Lock()
# run -> {(role, url, path): object}; only the most recent runs are kept.
_OPENED: OrderedDict[str, dict] = OrderedDict()
_KEEP_RUNS = 4
_THREAD = threading.local()
_CONFIGURED = False


def configure_process(*, zarr_threads: int | None = None) -> None:
    """In a worker process, keep the libraries to the one thread dask gives each task.

    ``zarr_threads`` is given only where units run in processes of their own (dask
    workers); units run on threads of the caller's process (``zarr_threads=None``) leave its
    settings alone: off the main thread numcodecs' Blosc already uses one thread, and the
    codec's kernels are not parallel. In a worker: Blosc one thread; numba's parallel
    layer, if a kernel ever uses it, one thread; zarr's codec pool ``zarr_threads``; freed
    chunk-size buffers kept in the heap (:func:`keep_large_allocations`). Idempotent, cheap
    after the first call.
    """
    global _CONFIGURED
    if _CONFIGURED or zarr_threads is None:
        return
    with _LOCK:
        if _CONFIGURED:
            return
        import numcodecs.blosc

        numcodecs.blosc.set_nthreads(1)
        try:
            import numba

            numba.set_num_threads(1)
        except (ImportError, ValueError):  # pragma: no cover - numba is a dependency
            pass
        import zarr

        zarr.config.set({"threading.max_workers": zarr_threads})
        keep_large_allocations()
        _CONFIGURED = True


def keep_large_allocations() -> bool:
    """Ask glibc to serve chunk-size buffers from one heap and keep them after ``free``.

    By default glibc maps every allocation over 32 MiB afresh and unmaps it when freed, and
    gives each thread its own arena, whose heaps (64 MiB at most) cannot hold a chunk either;
    so each 147 MiB chunk, and each buffer the codec allocates for it, pays its page faults
    again. Measured on 0.25-degree ERA5 chunks, 2 threads: 716 -> 865 MiB/s end to end,
    system time 3.3 -> 1.8 s per 3.5 GiB. With these settings the process keeps up to
    1 GiB of freed memory for reuse, and threads share the main arena. Call it before
    starting threads (a thread keeps the arena it first allocated from). The environment
    variables ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=536870912
    MALLOC_TRIM_THRESHOLD_=1073741824`` do the same for a process from its start (dask
    workers: see docs/scale.md). Returns whether the settings took (only on glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    return all(
        mallopt(option, value)
        for option, value in (
            (m_arena_max, 1),
            (m_mmap_threshold, MALLOC_ENV_VALUES["MALLOC_MMAP_THRESHOLD_"]),
            (m_trim_threshold, MALLOC_ENV_VALUES["MALLOC_TRIM_THRESHOLD_"]),
        )
    )


#: The environment that makes glibc behave as :func:`keep_large_allocations` asks.
MALLOC_ENV_VALUES = {
    "MALLOC_ARENA_MAX": 1,
    "MALLOC_MMAP_THRESHOLD_": 512 << 20,
    "MALLOC_TRIM_THRESHOLD_": 1 << 30,
}


def warm_codec() -> threading.Thread:
    """Load the codec's compiled kernels on a background thread, and return it.

    A process's first encode loads the numba kernels from their cache (0.4-0.6 s of one
    core here, under numba's compiler lock: the other unit threads wait for it too), which
    fell inside the writing time of every run: an eighth of a 2-time-step ERA5 sample's.
    Started before the source is opened and planned, it runs on the core that planning
    (one thread) leaves idle. Failures are left to the units' own encode, which raises them.
    """
    thread = threading.Thread(target=_warm_codec, name="lq-warm-codec", daemon=True)
    thread.start()
    return thread


def _warm_codec() -> None:
    try:
        from layerquantizer import chunk

        values = np.linspace(0, 1, 2 * 8 * 16, dtype=np.float32).reshape(2, 8, 16)
        values[0, 0, 0] = np.nan  # the exceptions' kernels too
        for nbits in (16, 12):  # Lorenzo; the predictor trial and version 2 kernels
            chunk.encode(values, nbits=nbits, level=1)
    except Exception:  # pragma: no cover - the units' encode reports whatever this met
        pass


def _cached(run: str, key: tuple, make):
    with _LOCK:
        opened = _OPENED.get(run)
        if opened is not None and key in opened:
            _OPENED.move_to_end(run)
            return opened[key]
    value = make()  # outside the lock: opening a gs:// store takes a round trip
    with _LOCK:
        opened = _OPENED.setdefault(run, {})
        _OPENED.move_to_end(run)
        while len(_OPENED) > _KEEP_RUNS:
            _OPENED.popitem(last=False)
        return opened.setdefault(key, value)


def _open_array(run: str, url: str, token: Any, name: str, mode: str):
    import zarr

    from layerquantizer.storage import open_store

    def make():
        store = _cached(run, ("store", url, mode), lambda: open_store(url, mode, token=token))
        return zarr.open_array(store, path=name, mode="r" if mode == "r" else "r+")

    return _cached(run, ("array", url, name, mode), make)


def _open_source_dataset(run: str, url: str, token: Any):
    def make():
        from layerquantizer.dataset._stores import open_dataset

        return open_dataset(url, token=token)

    return _cached(run, ("dataset", url), make)


def _buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A buffer of this shape owned by the calling thread, reused from unit to unit."""
    buffers = getattr(_THREAD, "buffers", None)
    if buffers is None:
        buffers = _THREAD.buffers = {}
    key = (shape, np.dtype(dtype).str)
    if key not in buffers:
        buffers.clear()  # one chunk shape at a time: memory stays at one chunk per thread
        buffers[key] = np.empty(shape, dtype)
    return buffers[key]


# --------------------------------------------------------------------------------------
# Reading


def _whole_chunk(array, selection: tuple) -> tuple[int, ...] | None:
    """The chunk coordinates if ``selection`` is exactly one complete chunk of ``array``."""
    coords = []
    for where, size, chunk in zip(selection, array.shape, array.chunks, strict=True):
        if not isinstance(where, slice) or where.start % chunk or where.stop - where.start != chunk:
            return None
        if where.stop > size:
            return None
        coords.append(where.start // chunk)
    return tuple(coords)


def _raw_decoder(array):
    """The numcodecs compressor that turns a stored chunk of ``array`` into its values,
    or None when the chunk passes through more than that (filters, Zarr v3 pipelines)."""
    meta = array.metadata
    if meta.zarr_format != 2 or meta.filters or meta.order != "C" or meta.compressor is None:
        return None
    return meta.compressor


def read_region(job: UnitJob) -> tuple[np.ndarray, bool]:
    """The source values of the unit and whether the short path read them."""
    if not job.raw_read:
        ds = _open_source_dataset(job.run, job.src, job.src_token)
        variable = ds[job.variable].variable
        return np.asarray(variable[tuple(job.source)].values), False
    array = _open_array(job.run, job.src, job.src_token, job.variable, "r")
    coords = _whole_chunk(array, job.source)
    decoder = _raw_decoder(array) if coords is not None else None
    if decoder is None:
        return np.asarray(array.get_orthogonal_selection(tuple(job.source))), False
    dtype = array.metadata.dtype.to_native_dtype()
    out = _buffer(tuple(array.chunks), dtype)
    key = _join(array.path, array.metadata.encode_chunk_key(coords))
    if not _decode_stored(array.store_path.store, key, decoder, out):
        fill = array.metadata.fill_value
        out[...] = fill if fill is not None else 0  # zarr's default for a v2 "null" fill
    return out, True


def _decode_stored(store, key: str, decoder, out: np.ndarray) -> bool:
    """Decode the object at ``key`` by ``decoder`` into ``out``; False when no object is
    there. (``benchmarks/bench_compress.py`` times a unit's read with it.)"""
    raw = _get(store, key)
    if raw is None:
        return False
    decoder.decode(raw.as_numpy_array(), out=out)
    return True


def _join(path: str, key: str) -> str:
    return f"{path}/{key}" if path else key


# A local store (zarr's LocalStore) is read and written on the calling thread, through the
# store's own synchronous methods: the same file operations as its async ones (a write goes
# to a temporary file renamed over the key, a missing key reads as None), without handing
# each request to zarr's event loop and from there to a thread of its pool (about 2 ms per
# request on a loaded machine, most of it threads waking one another). Other stores (gcsfs,
# memory://) have no such methods and go through the loop.


def _get(store, key: str):
    """The stored bytes at ``key`` as a zarr Buffer, or None when no object is there."""
    from zarr.core.buffer import default_buffer_prototype

    get_sync = getattr(store, "get_sync", None)
    if get_sync is not None:
        return get_sync(key, prototype=default_buffer_prototype())
    from zarr.core.sync import sync

    return sync(store.get(key, default_buffer_prototype()))


def _set(store, key: str, value: bytes) -> None:
    """Store ``value`` at ``key`` (atomically on a local store, as zarr writes it)."""
    from zarr.core.buffer import default_buffer_prototype

    buffer = default_buffer_prototype().buffer.from_bytes(value)
    set_sync = getattr(store, "set_sync", None)
    if set_sync is not None:
        set_sync(key, buffer)
        return
    from zarr.core.sync import sync

    sync(store.set(key, buffer))


def _delete(store, key: str) -> None:
    """Remove the object at ``key``, if there is one."""
    delete_sync = getattr(store, "delete_sync", None)
    if delete_sync is not None:
        delete_sync(key)
        return
    from zarr.core.sync import sync

    sync(store.delete(key))


# --------------------------------------------------------------------------------------
# Writing


def _chunk_encoder(array, data: np.ndarray):
    """A function turning one complete chunk of ``array`` into the bytes zarr would store,
    or None when zarr's own pipeline must write it."""
    from layerquantizer import chunk as lq_chunk

    meta = array.metadata
    if not (isinstance(meta.fill_value, float | np.floating) and np.isnan(meta.fill_value)):
        return None
    stored = meta.dtype.to_native_dtype()
    settings = _layerquantizer_settings(meta)
    if data.dtype == np.float64 and stored == np.float32:
        if settings is None:
            return None
        nbits, level, tolerance = settings
        return lambda block: float64_chunk(block, nbits=nbits, level=level, tolerance=tolerance)
    if data.dtype != stored or data.dtype.kind != "f":
        return None
    if meta.zarr_format == 2:
        if meta.filters or meta.compressor is None or meta.order != "C":
            return None
        return meta.compressor.encode
    if settings is not None:
        nbits, level, tolerance = settings
        return lambda block: lq_chunk.encode(block, nbits=nbits, level=level, tolerance=tolerance)
    return None


def _layerquantizer_settings(meta) -> tuple[int | None, int, float | None] | None:
    """(nbits, level, tolerance) when LayerQuantizer alone turns a chunk of the array into
    bytes; one of nbits and tolerance is None."""
    from layerquantizer.codec import LayerQuantizer
    from layerquantizer.zarr3 import LayerQuantizerCodec

    if meta.zarr_format == 2:
        codec = meta.compressor
        if meta.filters or meta.order != "C" or not isinstance(codec, LayerQuantizer):
            return None
    else:
        if len(meta.codecs) != 1 or not isinstance(meta.codecs[0], LayerQuantizerCodec):
            return None
        codec = meta.codecs[0]
    return codec.nbits, codec.level, codec.tolerance


def float64_chunk(
    block: np.ndarray, *, nbits: int | None, level: int, tolerance: float | None = None
) -> bytes:
    """A LayerQuantizer chunk of float64 values, within the bound of the float64 values.

    The codec quantizes the float32 rounding ``r`` of each value ``x``; to hold
    ``|x - y| <= (max - min) / (2**nbits - 1) / 2 + ulp32(x)`` with ``max - min`` the
    float64 range of the layer, each layer's tolerance is that half step less half a
    float32 ulp of its largest magnitude (``|x - r|`` is at most half an ulp, and the
    codec allows one more ulp). A value outside it is stored as ``r``, exactly. So the
    bound holds whatever ``nbits``; when the half step is not well above the float32
    spacing of the layer's values (``(max - min) / max|x|`` below about
    ``(2**nbits - 1) * 2**-24``: 0.4% at 16 bits) most values are stored that way.

    With an absolute ``tolerance`` (``nbits`` None) the same holds with ``tolerance`` in
    place of the half step: ``|x - y| <= tolerance + ulp32(x)``.

    Raises
    ------
    ValueError
        If a finite value is beyond the float32 range.
    """
    from layerquantizer import _format, _kernels
    from layerquantizer import chunk as lq_chunk

    values = np.ascontiguousarray(block, dtype=np.float64)
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float32)
    layers = values.reshape(_format.layer_shape(values.shape))
    tolerances = np.empty(layers.shape[0])
    for index, layer in enumerate(layers):
        finite = layer[np.isfinite(layer)]
        if not finite.size:
            tolerances[index] = 0.0
            continue
        lo, hi = float(finite.min()), float(finite.max())
        largest = max(abs(lo), abs(hi))
        if largest > float(np.finfo(np.float32).max):
            raise ValueError(
                f"a value ({hi if abs(hi) >= abs(lo) else lo:g}) is beyond the float32 range, "
                "which the layerquantizer codec stores; leave the variable out to copy it "
                "losslessly"
            )
        # A little more than half an ulp: room for the float64 rounding of the checks.
        half_ulp = 0.5 * _kernels.float32_ulp(float(np.float32(largest))) * (1 + 2**-20)
        allowed = tolerance if nbits is None else (hi - lo) / ((1 << nbits) - 1) / 2.0
        tolerances[index] = allowed - half_ulp
    return lq_chunk.encode(
        rounded, nbits=nbits, level=level, tolerances=tolerances, tolerance=tolerance
    )


def _sharding_codec(array):
    """The ``sharding_indexed`` codec of a sharded Zarr v3 array, else None."""
    from zarr.codecs import ShardingCodec

    codecs = array.metadata.codecs if array.metadata.zarr_format == 3 else ()
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        return codecs[0]
    return None


def _float64_shard_encoder(array, sharding):
    """For a sharded float32 LayerQuantizer array written from float64 values: a function
    turning the float64 values of one whole shard into the bytes of its object, or None
    when the shard holds only fill values (NaN).

    zarr would cast the values to float32 and quantize those, outside the bound of the
    float64 values that :func:`float64_chunk` keeps. So zarr's own ShardingCodec, with the
    array's chunk shape and index codecs, encodes the shard here, each chunk inside it by
    :func:`float64_chunk`: the bytes of each chunk are those the array's codec decodes, and
    the shard's layout and index are zarr's (chunks of fill values left out, as zarr does).
    """
    from zarr.codecs import ShardingCodec
    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.buffer.cpu import NDBuffer
    from zarr.core.dtype import Float64
    from zarr.core.sync import sync

    from layerquantizer.zarr3 import LayerQuantizerCodec

    inner = sharding.codecs
    if len(inner) != 1 or not isinstance(inner[0], LayerQuantizerCodec):
        return None
    codec = ShardingCodec(
        chunk_shape=sharding.chunk_shape,
        codecs=[_float64_chunks_class()(inner[0])],
        index_codecs=sharding.index_codecs,
        index_location=sharding.index_location,
    )
    spec = ArraySpec(
        shape=tuple(array.shards),
        dtype=Float64(),
        fill_value=np.float64(np.nan),
        config=ArrayConfig(order="C", write_empty_chunks=False),
        prototype=default_buffer_prototype(),
    )

    def encode(block: np.ndarray) -> bytes | None:
        buffer = NDBuffer.from_numpy_array(np.ascontiguousarray(block, dtype=np.float64))
        (encoded,) = sync(codec.encode([(buffer, spec)]))
        return None if encoded is None else encoded.to_bytes()

    return encode


@functools.cache
def _float64_chunks_class():
    """The class, made once per process: zarr is imported only when a unit runs."""
    from zarr.abc.codec import ArrayBytesCodec

    class Float64Chunks(ArrayBytesCodec):
        """The serializer of the chunks inside a shard written from float64 values: the
        bytes :func:`float64_chunk` makes, which the array's LayerQuantizerCodec decodes."""

        is_fixed_size = False

        def __init__(self, codec) -> None:
            object.__setattr__(self, "codec", codec)

        async def _encode_single(self, chunk_array, chunk_spec):
            values = chunk_array.as_numpy_array()
            encoded = float64_chunk(
                values, nbits=self.codec.nbits, level=self.codec.level,
                tolerance=self.codec.tolerance,
            )  # fmt: skip
            return chunk_spec.prototype.buffer.from_bytes(encoded)

        async def _decode_single(self, chunk_bytes, chunk_spec):  # pragma: no cover
            raise NotImplementedError("only encodes; the array's own codec decodes")

        def compute_encoded_size(self, input_byte_length, chunk_spec):  # pragma: no cover
            raise NotImplementedError("the size depends on the data")

    return Float64Chunks


def _blocks(region: tuple[slice, ...], data: np.ndarray, shape: tuple[int, ...]):
    """``(coords, block)`` of each object of ``shape`` (a chunk or a shard) the unit's
    ``region`` covers, in the array's grid; an edge block is padded with NaN, the fill
    value, as zarr pads it."""
    pairs = list(zip(region, shape, strict=True))
    counts = [-(-(where.stop - where.start) // n) for where, n in pairs]
    first = [where.start // n for where, n in pairs]
    for offset in np.ndindex(*counts):
        block = data[tuple(slice(o * n, (o + 1) * n) for o, n in zip(offset, shape, strict=True))]
        if block.shape != shape:
            full = np.full(shape, np.nan, block.dtype)
            full[tuple(slice(0, n) for n in block.shape)] = block
            block = full
        yield tuple(f + o for f, o in zip(first, offset, strict=True)), block


def _write_shards(job: UnitJob, array, data: np.ndarray, encode) -> None:
    """Store each whole shard of the unit as one object made by ``encode`` (None: a shard
    of fill values only, which is not stored, as zarr does)."""
    store = array.store_path.store
    for coords, block in _blocks(job.region, data, tuple(array.shards)):
        key = _join(array.path, array.metadata.encode_chunk_key(coords))
        encoded = encode(block)
        if encoded is None:
            _delete(store, key)
            continue
        _set(store, key, bytes(encoded))


def write_region(job: UnitJob, data: np.ndarray) -> bool:
    """Store ``data`` as the unit's output chunks; whether the short path wrote them.

    A sharded array's unit covers whole shards (``Plan._units``), each written as one
    object: by zarr (its ShardingCodec encodes the whole shard, then one ``set``), or,
    from float64 values, by :func:`_float64_shard_encoder`.
    """
    array = _open_array(job.run, job.dst, job.dst_token, job.variable, "r+")
    sharding = _sharding_codec(array)
    if sharding is not None:
        stored = array.metadata.dtype.to_native_dtype()
        encode_shard = None
        if data.dtype == np.float64 and stored == np.float32:
            encode_shard = _float64_shard_encoder(array, sharding)
        if encode_shard is None:
            array[tuple(job.region)] = data
            return False
        _write_shards(job, array, data, encode_shard)
        return True
    encode = _chunk_encoder(array, data)
    chunk_shape = tuple(array.chunks)
    # float64 values for a float32 array are encoded here only (zarr would just cast
    # them), so an edge chunk is padded with the fill value (NaN) as zarr pads it.
    pad = data.dtype != array.metadata.dtype.to_native_dtype()
    complete = all(
        where.start % c == 0 and ((where.stop - where.start) % c == 0 or (pad and where.stop == n))
        for where, c, n in zip(job.region, chunk_shape, array.shape, strict=True)
    )
    if encode is None or not complete:
        array[tuple(job.region)] = data
        return False
    store = array.store_path.store
    for coords, block in _blocks(job.region, data, chunk_shape):
        key = _join(array.path, array.metadata.encode_chunk_key(coords))
        if _all_nan(block):
            _delete(store, key)  # as zarr does: no object for a chunk of fill values
            continue
        encoded = encode(np.ascontiguousarray(block))
        _set(store, key, bytes(encoded))
    return True


def _all_nan(block: np.ndarray) -> bool:
    # The first value settles almost every chunk without a pass over the whole.
    flat = block.reshape(-1)
    return flat.size == 0 or (bool(np.isnan(flat[0])) and bool(np.isnan(flat).all()))


# Fields of fsspec's object info that change when an object is written again, by backend.
_VERSION_FIELDS = ("generation", "etag", "ETag", "mtime", "LastModified", "updated", "created")


def source_fingerprint(job: UnitJob) -> bytes:
    """Size and version (GCS generation, etag or mtime) of every source object the unit
    reads, as JSON: one metadata request per source chunk, no data read; ``b""`` when
    none of them exists (the unit reads only fill values).

    Taken before the unit reads its source, so that a change during the read shows as a
    change on resume (the unit is then written again) rather than being missed.
    """
    return source_fingerprints([job])[0]


def source_fingerprints(jobs: list[UnitJob]) -> list[bytes]:
    """:func:`source_fingerprint` of each job (all of one variable and run), the source
    objects looked up together: concurrently on an object store."""
    import json

    from layerquantizer.storage import filesystem

    first = jobs[0]
    array = _open_array(first.run, first.src, first.src_token, first.variable, "r")
    fs, root = _cached(
        first.run, ("fs", first.src), lambda: filesystem(first.src, "r", token=first.src_token)
    )
    root = root.rstrip("/")
    keys = [_source_keys(array, job) for job in jobs]
    infos = _object_infos(fs, [f"{root}/{key}" for unit in keys for key in unit])
    fingerprints = []
    for unit in keys:
        entries: dict[str, Any] = {}
        for key in unit:
            info = infos.get(f"{root}/{key}")
            if info is None:
                entries[key] = None  # a chunk of fill values
                continue
            version = next((info[f] for f in _VERSION_FIELDS if info.get(f) is not None), None)
            entries[key] = [info.get("size"), str(version)]
        if all(entry is None for entry in entries.values()):
            fingerprints.append(b"")
        else:
            fingerprints.append(json.dumps(entries, sort_keys=True).encode())
    return fingerprints


def _source_keys(array, job: UnitJob) -> list[str]:
    """The keys of the source chunks the unit reads."""
    import itertools

    meta = array.metadata
    per_dim = []
    for where, size in zip(job.source, meta.chunk_grid.chunk_shape, strict=True):
        if isinstance(where, slice):
            per_dim.append(range(where.start // size, (where.stop - 1) // size + 1))
        else:
            per_dim.append(np.unique(np.asarray(where) // size).tolist())
    return [
        _join(array.path, meta.encode_chunk_key(tuple(int(c) for c in coords)))
        for coords in itertools.product(*per_dim)
    ]


def _object_infos(fs, paths: list[str]) -> dict[str, dict]:
    """fsspec's info of each existing object of ``paths``; concurrently where the
    filesystem is asynchronous (gcsfs), one request per object either way."""
    from fsspec.asyn import AsyncFileSystem, sync

    if isinstance(fs, AsyncFileSystem) and len(paths) > 1:

        async def gather():
            import asyncio

            async def one(path):
                try:
                    return await fs._info(path)
                except FileNotFoundError:
                    return None

            found = []
            for start in range(0, len(paths), _CONCURRENT_INFOS):
                batch = paths[start : start + _CONCURRENT_INFOS]
                found.extend(await asyncio.gather(*(one(path) for path in batch)))
            return found

        return {p: i for p, i in zip(paths, sync(fs.loop, gather), strict=True) if i is not None}
    infos = {}
    for path in paths:
        try:
            infos[path] = fs.info(path)
        except FileNotFoundError:
            pass
    return infos


#: Source objects looked up at once on an object store (a check of a progress batch).
_CONCURRENT_INFOS = 64


def run_job(job: UnitJob | CheckJob, zarr_threads: int | None = None):
    """:func:`run_unit` or :func:`run_check`, whichever ``job`` asks for."""
    if isinstance(job, CheckJob):
        return run_check(job, zarr_threads)
    return run_unit(job, zarr_threads)


def run_unit(
    job: UnitJob, zarr_threads: int | None = None, fingerprint: bytes | None = None
) -> UnitDone:
    """Read the unit's region from the source and write its chunks (the parent records
    it done, see resume.py); a unit whose source holds nothing reads and writes nothing.

    Raises
    ------
    layerquantizer.dataset.ChunkWriteError
        Naming the variable and the chunk, with the cause in one line.
    """
    import os

    configure_process(zarr_threads=zarr_threads)
    try:
        if fingerprint is None:
            fingerprint = source_fingerprint(job)
        if job.recorded is not None and job.recorded == fingerprint:
            return UnitDone(
                job.variable, job.index, job.nbytes, job.chunks, os.getpid(), False, False,
                resumed=True, ordinal=job.ordinal, fingerprint=fingerprint,
            )  # fmt: skip
        if not fingerprint and _reads_only_nan(job):
            # The output is NaN, the fill value: zarr stores no such chunk. Nothing to read,
            # encode or write (the decoded fill alone cost 10 ms and a pass per unit).
            if job.clean or job.recorded is not None:
                _delete_chunks(job)  # an earlier run may have written them from other data
            return UnitDone(
                job.variable, job.index, job.nbytes, job.chunks, os.getpid(), True, True,
                ordinal=job.ordinal, fingerprint=fingerprint, empty=True,
            )  # fmt: skip
        data, fast_read = read_region(job)
        fast_write = write_region(job, data)
    except Exception as exc:
        from layerquantizer.dataset._errors import ChunkWriteError, _one_line
        from layerquantizer.storage import classify_store_error

        classified = classify_store_error(exc, job.dst)
        cause = str(classified) if classified is not None else _one_line(exc)
        raise ChunkWriteError(
            f"{job.variable}: chunk {job.index} ({job.label or _describe(job.region)}) "
            f"failed: {cause}"
        ) from exc
    return UnitDone(
        job.variable, job.index, job.nbytes, job.chunks, os.getpid(), fast_read, fast_write,
        ordinal=job.ordinal, fingerprint=fingerprint,
    )  # fmt: skip


def run_check(check: CheckJob, zarr_threads: int | None = None) -> tuple[UnitDone, ...]:
    """Check the recorded units of a batch: those whose source objects are the ones
    recorded are skipped, the others written again (:func:`run_unit`)."""
    configure_process(zarr_threads=zarr_threads)
    units = list(check.units)
    try:
        fingerprints = source_fingerprints(units)
    except Exception as exc:
        from layerquantizer.dataset._errors import ChunkWriteError, _one_line

        first = units[0]
        raise ChunkWriteError(
            f"{first.variable}: cannot look up the source of chunks {first.index} to "
            f"{units[-1].index}: {_one_line(exc)}"
        ) from exc
    return tuple(
        run_unit(job, zarr_threads, fingerprint)
        for job, fingerprint in zip(units, fingerprints, strict=True)
    )


def _reads_only_nan(job: UnitJob) -> bool:
    """Whether a unit none of whose source objects exists reads NaN everywhere and writes
    no chunk: its stored values are read raw, and both arrays' fill value is NaN."""
    if not job.raw_read:
        return False
    source = _open_array(job.run, job.src, job.src_token, job.variable, "r")
    target = _open_array(job.run, job.dst, job.dst_token, job.variable, "r+")
    return _nan_fill(source) and _nan_fill(target)


def _nan_fill(array) -> bool:
    fill = array.metadata.fill_value
    return isinstance(fill, float | np.floating) and bool(np.isnan(fill))


def _delete_chunks(job: UnitJob) -> None:
    """Remove the output objects of the unit, chunks or whole shards (zarr's own answer to
    a chunk of fill values)."""
    import itertools

    array = _open_array(job.run, job.dst, job.dst_token, job.variable, "r+")
    store = array.store_path.store
    # The keys are of the array's grid: its shards where it has them.
    object_shape = tuple(getattr(array, "shards", None) or array.chunks)
    per_dim = [
        range(where.start // c, -(-where.stop // c))
        for where, c in zip(job.region, object_shape, strict=True)
    ]
    for coords in itertools.product(*per_dim):
        _delete(store, _join(array.path, array.metadata.encode_chunk_key(coords)))


def _describe(region: tuple[slice, ...]) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in region) + "]"
