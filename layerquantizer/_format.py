"""The layerquantizer1 chunk format: framing, header and validation (no numerics).

A chunk is, all integers little-endian::

    offset  size     field
    0       4        magic b"\\x89LQZ"
    4       1        format version (1, or 2 with the predictor table, or 3: version 2 with
                       range-coded blocks, or a stored chunk, or 4: version 3 with
                       predictors 4 and 6)
    5       1        flags: bit 0 exception section present, bit 1 Fortran order, bit 2
                       (version 3) stored: the values as they are (see below); others 0
    6       1        dtype code (1 = float32, 2 = float32 returned big-endian)
    7       1        nbits (1-24 for float32)
    8       1        entropy coder (0 = none, 1 = zstd)
    9       1        ndim (0-32)
    10      2        reserved, 0
    12      4        rows per block B (uint32, >= 1)
    16      8*ndim   shape (uint64 each)
    ..      16*L     per layer: offset, step (float64 each); L = prod(shape[:-2]), 1 if ndim < 2
    ..      L        versions 2 to 4: per layer, the predictor (0 Lorenzo, 1 interpolation,
                       2 interpolation with the codes in coding order, 3 the same on the
                       transposed layer; version 4: 4 the same with narrow bins at the
                       coarse strides, 6 linear)
    ..      12*K     version 4 only: for each of the K layers of predictor 6, in order, its
                       coefficients (int16 each: W, N, NW, NE, WW, NN, in 1/256)
    ..      8        residual section size R (uint64)
    ..      8        residual section size before coding U (uint64)
    ..      R        residual section, through the coder: seeing the chunk as L * ny rows
                       of nx values, one block per B rows (the last may be shorter), each a
                       mode byte and the block's coded residuals, byte-planar (byte 0 of
                       every value, then byte 1, ...) or with the upper bytes kept only
                       where they are not zero (see _kernels.pack_block), or (version 2,
                       nbits <= 12) as nbits bit planes (_kernels.pack_bit_planes); blocks let
                       encoder and decoder stream through a buffer that stays in cache
    ..      E        exception section (when flagged), the rest of the chunk but 4 bytes:
                       count (uint64), mask frame size M (uint64),
                       M bytes: the exception bitmap (bit n % 8 of byte n // 8) through the coder,
                       the exceptions' float32 values through the coder
    end-4   4        CRC-32C of every byte before it

A stored chunk (version 3, flag bit 2) holds after the shape only the size S (uint64) of the
values' float32 bytes, byte-planar, through the coder, S bytes, and the CRC-32C.

Every field is checked before any kernel touches memory: a chunk that fails a check
raises :class:`~layerquantizer.errors.CorruptChunkError` naming the field.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import crc32c
import numpy as np
import zstandard

from layerquantizer.errors import CorruptChunkError

MAGIC = b"\x89LQZ"
FORMAT_VERSION = 1
#: Version 2 adds a predictor byte per layer after the layer table (see docs/format.md).
FORMAT_VERSION_PREDICTORS = 2
#: Version 3 is version 2 with blocks of mode 3 (range-coded codes) and the stored chunk.
FORMAT_VERSION_RANGE = 3
#: Version 4 is version 3 with more predictors: 4, interpolation with narrow bins at the
#: coarse strides, and 6, the linear predictor, whose per-layer coefficients follow the
#: predictor table (see docs/format.md).
FORMAT_VERSION_4 = 4
READ_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_PREDICTORS, FORMAT_VERSION_RANGE, FORMAT_VERSION_4)
#: Version 2 chunks of at most this many bits may hold blocks of bit planes (mode 2).
BIT_PLANES_MAX_NBITS = 12
#: Per-layer predictors of version 2; version 1 chunks use Lorenzo everywhere.
PREDICTOR_LORENZO = 0
PREDICTOR_INTERPOLATION = 1
#: The interpolation predictor with the layer's codes in coding order (level by level), not
#: in row order.
PREDICTOR_INTERPOLATION_ORDERED = 2
#: The interpolation predictor on the transposed layer (columns first at every stride), its
#: codes in that layer's coding order: what the encoder writes for interpolated layers.
PREDICTOR_INTERPOLATION_TRANSPOSED = 3
#: Version 4 only: predictor 3 with the bins of the strides of 4 and more narrowed
#: (``_kernels.NARROW_BINS``): what the encoder writes for interpolated layers with a
#: tolerance.
PREDICTOR_INTERPOLATION_NARROW = 4
#: Version 4: a linear predictor of six neighbours whose coefficients the chunk stores per
#: layer (:mod:`layerquantizer._linear_kernels`).
PREDICTOR_LINEAR = 6
PREDICTOR_NAMES = {
    PREDICTOR_LORENZO: "lorenzo",
    PREDICTOR_INTERPOLATION: "interpolation",
    PREDICTOR_INTERPOLATION_ORDERED: "interpolation, codes in coding order",
    PREDICTOR_INTERPOLATION_TRANSPOSED: "interpolation, transposed, codes in coding order",
    PREDICTOR_INTERPOLATION_NARROW: "interpolation, transposed, coding order, narrow coarse bins",
    PREDICTOR_LINEAR: "linear, six neighbours, coefficients per layer",
}
#: The predictors of versions 2 and 3; version 4 adds the others.
PREDICTORS_V3 = (0, 1, 2, 3)
#: Coefficients of a layer of the linear predictor (int16 each), and the most their
#: magnitudes may add up to (in units of 2**-8: 4 in all).
LINEAR_COEFFICIENTS = 6
LINEAR_MAX_WEIGHT = 4 << 8
FLAG_EXCEPTIONS = 1
FLAG_FORTRAN = 2
#: Version 3 only: the chunk holds the values themselves (see :func:`pack_stored`).
FLAG_STORED = 4
_KNOWN_FLAGS = FLAG_EXCEPTIONS | FLAG_FORTRAN
_KNOWN_FLAGS_V3 = _KNOWN_FLAGS | FLAG_STORED

# The dtype the decoder returns: code 2 is float32 given big-endian (netCDF3 data), which
# Zarr v2 reads back by viewing the decoded bytes as the array's dtype. The chunk's own
# fields are little-endian whatever the code.
DTYPE_CODES = {1: np.dtype("<f4"), 2: np.dtype(">f4")}
DTYPE_NBITS = {1: 24, 2: 24}  # the most bits a dtype's significand can use
CODER_NONE = 0
CODER_ZSTD = 1
CODER_NAMES = {CODER_NONE: "none", CODER_ZSTD: "zstd"}
MAX_NDIM = 32
MAX_EXTENT = 1 << 48

_PREFIX = struct.Struct("<4sBBBBBBHI")
_U64 = struct.Struct("<Q")
_CRC = struct.Struct("<I")
# zstd cannot expand more than this (an RLE block of 128 KiB costs a few bytes), so a
# frame that claims more is corrupt; the check keeps a lying header from allocating.
_MAX_EXPANSION = 1 << 16


@dataclass(frozen=True)
class Header:
    """The decoded header of a chunk."""

    flags: int
    dtype_code: int
    nbits: int
    coder: int
    block_rows: int
    shape: tuple[int, ...]
    offsets: np.ndarray  # float64[L]
    steps: np.ndarray  # float64[L]
    # uint8[L] (version 2), or None: version 1, every layer Lorenzo.
    predictors: np.ndarray | None = None
    # Version 3: blocks of mode 3 may appear (the predictor table is that of version 2).
    range_coded: bool = False
    # Version 4: int64[K, 6], the coefficients of the K layers of the linear predictor, in
    # layer order (None when no layer uses it).
    coefficients: np.ndarray | None = None

    @property
    def version(self) -> int:
        predictors = self.predictors
        if self.coefficients is not None or (
            predictors is not None and (predictors == PREDICTOR_INTERPOLATION_NARROW).any()
        ):
            return FORMAT_VERSION_4
        if self.range_coded:
            return FORMAT_VERSION_RANGE
        return FORMAT_VERSION if self.predictors is None else FORMAT_VERSION_PREDICTORS

    @property
    def dtype(self) -> np.dtype:
        return DTYPE_CODES[self.dtype_code]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def plane_count(self) -> int:
        """Bytes per coded residual."""
        return (self.nbits + 7) // 8


def layer_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(layers, ny, nx)``: how a chunk of ``shape`` splits into 2-D layers."""
    if len(shape) == 0:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, 1, shape[0]
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def compress(data: np.ndarray | bytes, coder: int, level: int) -> bytes:
    if coder == CODER_NONE:
        return bytes(data)
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


class BlockWriter:
    """Streams the residual section's blocks into one frame."""

    def __init__(self, coder: int, level: int):
        self.coder = coder
        self.parts: list[bytes] = []
        self.size = 0  # bytes before coding
        if coder == CODER_ZSTD:
            self.stream = zstandard.ZstdCompressor(level=level).compressobj()

    def write(self, block: np.ndarray) -> None:
        self.size += block.nbytes
        if self.coder == CODER_NONE:
            self.parts.append(block.tobytes())
        else:
            self.parts.append(self.stream.compress(block))

    def finish(self) -> list[bytes]:
        """The section, in parts (joined once, with the rest of the chunk)."""
        if self.coder == CODER_ZSTD:
            self.parts.append(self.stream.flush())
        return self.parts


class BlockReader:
    """Reads the residual section back, piece by piece, into the caller's buffers."""

    def __init__(self, frame: memoryview, coder: int, size: int):
        self.coder = coder
        self.frame = frame
        self.size = size  # bytes before coding, as the header says
        self.pos = 0
        if coder == CODER_ZSTD:
            try:
                self.stream = zstandard.ZstdDecompressor().stream_reader(
                    frame, read_across_frames=False
                )
            except zstandard.ZstdError as error:
                raise CorruptChunkError(f"residual section: not zstd ({error})") from None

    def read_into(self, target: np.ndarray) -> np.ndarray:
        """Fill ``target`` (a contiguous uint8 array) from the section; returns it."""
        nbytes = target.nbytes
        if self.pos + nbytes > self.size:
            raise CorruptChunkError(
                f"residual section: blocks need more than the {self.size} bytes it holds"
            )
        flat = target.reshape(-1)
        if self.coder == CODER_NONE:
            flat[:] = np.frombuffer(self.frame[self.pos : self.pos + nbytes], "u1")
        else:
            view = memoryview(flat)
            filled = 0
            try:
                while filled < nbytes:
                    got = self.stream.readinto(view[filled:])
                    if got == 0:
                        raise CorruptChunkError("residual section: zstd frame ended early")
                    filled += got
            except zstandard.ZstdError as error:
                raise CorruptChunkError(f"residual section: zstd failed ({error})") from None
        self.pos += nbytes
        return target

    def finish(self) -> None:
        """Every byte the header announced was used, and the frame holds no more."""
        if self.pos != self.size:
            raise CorruptChunkError(
                f"residual section: blocks used {self.pos} of its {self.size} bytes"
            )
        if self.coder == CODER_ZSTD:
            try:
                extra = self.stream.read(1)
            except zstandard.ZstdError as error:
                raise CorruptChunkError(f"residual section: zstd failed ({error})") from None
            if extra:
                raise CorruptChunkError("residual section: zstd frame holds more than expected")


def _check_frame(frame: memoryview, nbytes: int, what: str) -> None:
    """A zstd frame must declare exactly ``nbytes`` and be able to hold them."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as error:
        raise CorruptChunkError(f"{what}: not a zstd frame ({error})") from None
    if declared != nbytes:
        raise CorruptChunkError(f"{what}: zstd frame holds {declared} bytes, {nbytes} expected")
    if nbytes > _MAX_EXPANSION * len(frame):
        raise CorruptChunkError(f"{what}: {len(frame)} coded bytes cannot hold {nbytes}")


def decompress(frame: memoryview, coder: int, nbytes: int, what: str) -> np.ndarray:
    """Decode one coded section that must hold exactly ``nbytes`` bytes."""
    if coder == CODER_NONE:
        if len(frame) != nbytes:
            raise CorruptChunkError(f"{what}: {len(frame)} bytes stored, {nbytes} expected")
        return np.frombuffer(frame, np.uint8)
    _check_frame(frame, nbytes, what)
    try:
        data = zstandard.ZstdDecompressor().decompress(frame, max_output_size=nbytes)
    except zstandard.ZstdError as error:
        raise CorruptChunkError(f"{what}: zstd failed ({error})") from None
    if len(data) != nbytes:
        raise CorruptChunkError(f"{what}: zstd gave {len(data)} bytes, {nbytes} expected")
    return np.frombuffer(data, np.uint8)


def pack(
    header: Header,
    residuals: list[bytes],
    residual_bytes: int,
    exceptions: tuple[int, bytes, bytes] | None,
) -> bytes:
    """Frame a chunk from the residual section's coded parts, its size before coding and
    ``exceptions``: (count, coded bitmap, coded values) or None."""
    flags = header.flags | (FLAG_EXCEPTIONS if exceptions else 0)
    predictors = [] if header.predictors is None else [header.predictors.astype("u1").tobytes()]
    if header.coefficients is not None:
        predictors.append(header.coefficients.astype("<i2").tobytes())
    parts = [
        _PREFIX.pack(
            MAGIC,
            header.version,
            flags,
            header.dtype_code,
            header.nbits,
            header.coder,
            len(header.shape),
            0,
            header.block_rows,
        ),
        struct.pack(f"<{len(header.shape)}Q", *header.shape),
        np.column_stack([header.offsets, header.steps]).astype("<f8").tobytes(),
        *predictors,
        _U64.pack(sum(map(len, residuals))),
        _U64.pack(residual_bytes),
        *residuals,
    ]
    if exceptions:
        count, bitmap, values = exceptions
        parts += [_U64.pack(count), _U64.pack(len(bitmap)), bitmap, values]
    return _seal(parts)


def _seal(parts: list[bytes]) -> bytes:
    checksum = 0
    for part in parts:
        checksum = crc32c.crc32c(part, value=checksum)
    parts.append(_CRC.pack(checksum))
    return b"".join(parts)


def stored_size(shape: tuple[int, ...], payload: int) -> int:
    """Bytes of a stored chunk of ``shape`` whose values take ``payload`` bytes."""
    return _PREFIX.size + 8 * len(shape) + 8 + payload + _CRC.size


def pack_stored(
    shape: tuple[int, ...], flags: int, dtype_code: int, nbits: int, coder: int, values: bytes
) -> bytes:
    """Frame a stored chunk (version 3, flag bit 2): the values' float32 bytes, byte-planar
    (byte 0 of every value, then byte 1, ...), as ``values`` through ``coder``. ``nbits`` is
    what the chunk was asked for, kept for :func:`peek_nbits`; the values are exact."""
    parts = [
        _PREFIX.pack(
            MAGIC,
            FORMAT_VERSION_RANGE,
            flags | FLAG_STORED,
            dtype_code,
            nbits,
            coder,
            len(shape),
            0,
            1,
        ),  # fmt: skip
        struct.pack(f"<{len(shape)}Q", *shape),
        _U64.pack(len(values)),
        values,
    ]
    return _seal(parts)


def block_count(header: Header) -> int:
    nlayers, ny, nx = layer_shape(header.shape)
    if not header.size:
        return 0
    return -(-(nlayers * ny) // header.block_rows)


def residual_bounds(header: Header) -> tuple[int, int]:
    """Fewest and most bytes the residual section can hold before coding: each block is a
    mode byte and its planes, or (two planes or more) the escape form, chosen only when
    smaller, or (version 2, 8 bits or fewer) nbits bit planes of ceil(M / 8) bytes."""
    blocks = block_count(header)
    planes = header.size * header.plane_count
    if header.range_coded and header.nbits > BIT_PLANES_MAX_NBITS:
        # Mode 3 above 12 bits: at most as large as mode 0 (see range_block_most).
        return header.size // RANGE_CODES_PER_BYTE + blocks, planes + blocks
    if header.range_coded:
        # Version 3 adds mode 3, range-coded codes, written only where smaller than mode 2.
        # Each code costs the range coder at least log2(32768 / 32737) bits (its most
        # certain probability), so a block of M codes is at least 1 + 4 + 4 + M / 5857
        # bytes: M / 8192 bounds every mode from below, and keeps a lying shape from
        # allocating far more than the section could hold.
        lowest = header.size // RANGE_CODES_PER_BYTE + blocks
        return lowest, max(planes, header.nbits * header.size // 8) + (header.nbits + 1) * blocks
    if header.predictors is not None and header.nbits <= BIT_PLANES_MAX_NBITS:
        # Version 2 at 12 bits or fewer: blocks may be nbits bit planes of ceil(M / 8)
        # bytes, fewer bytes than M below 8 bits, up to nbits more than nbits M / 8.
        lowest = min(header.nbits * header.size // 8, header.size) + blocks
        return lowest, max(planes, header.nbits * header.size // 8) + (header.nbits + 1) * blocks
    return header.size + blocks, planes + blocks


#: A block of mode 3 holds at most this many codes a byte (see :func:`residual_bounds`).
RANGE_CODES_PER_BYTE = 8192


def range_block_most(nbits: int, size: int) -> int:
    """The most range-coded bytes a block of mode 3 of ``size`` codes may hold: 4 fewer
    than its bit planes (12 bits or fewer) or its planes of mode 0 (more bits), so that
    the block, with its mode byte and size, is never larger than those."""
    if nbits <= BIT_PLANES_MAX_NBITS:
        return nbits * ((size + 7) // 8) - 4
    return (nbits + 7) // 8 * size - 4


@dataclass(frozen=True)
class Chunk:
    """A parsed, checksummed chunk: header and views of its sections."""

    header: Header
    residuals: memoryview
    residual_bytes: int  # before coding
    exception_count: int
    exception_bitmap: memoryview | None
    exception_values: memoryview | None
    # A stored chunk (version 3, flag bit 2): its values' bytes, byte-planar, through the
    # coder; the header's layer table is then empty and the other sections too.
    stored: memoryview | None = None


class _Reader:
    """Reads fields off a buffer, failing with the field's name when it runs out."""

    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0

    def take(self, nbytes: int, what: str) -> memoryview:
        if nbytes < 0 or self.pos + nbytes > len(self.buf):
            raise CorruptChunkError(
                f"truncated chunk: {what} needs {nbytes} bytes at offset {self.pos}, "
                f"only {len(self.buf) - self.pos} left"
            )
        view = self.buf[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return view

    def u64(self, what: str) -> int:
        return _U64.unpack(self.take(8, what))[0]


def parse(buf: memoryview) -> Chunk:
    """Check and split an encoded chunk; raises CorruptChunkError on anything amiss."""
    if len(buf) < _PREFIX.size + _CRC.size:
        raise CorruptChunkError(
            f"not a layerquantizer1 chunk: {len(buf)} bytes is shorter than any chunk"
        )
    magic, version, flags, dtype_code, nbits, coder, ndim, reserved, block_rows = _PREFIX.unpack(
        buf[: _PREFIX.size]
    )
    if magic != MAGIC:
        raise CorruptChunkError(
            f"not a layerquantizer1 chunk: magic {bytes(magic)!r}, expected {MAGIC!r}"
        )
    if version not in READ_VERSIONS:
        raise CorruptChunkError(
            f"chunk has format version {version}; this layerquantizer reads versions "
            f"{', '.join(map(str, READ_VERSIONS[:-1]))} and {READ_VERSIONS[-1]} (upgrade "
            "layerquantizer if the chunk is newer)"
        )
    (stored_crc,) = _CRC.unpack(buf[-_CRC.size :])
    body = buf[: -_CRC.size]
    if crc32c.crc32c(body) != stored_crc:
        raise CorruptChunkError("chunk checksum (CRC-32C) mismatch: the chunk is corrupted")
    # The checksum passed; still trust nothing (a chunk may have been crafted).
    # The stored chunk is version 3's alone: version 4 adds predictors, not flags.
    if flags & ~(_KNOWN_FLAGS_V3 if version == FORMAT_VERSION_RANGE else _KNOWN_FLAGS) or reserved:
        raise CorruptChunkError(f"unknown flags {flags:#x} or reserved field {reserved}")
    if dtype_code not in DTYPE_CODES:
        raise CorruptChunkError(f"unknown dtype code {dtype_code}")
    if not 1 <= nbits <= DTYPE_NBITS[dtype_code]:
        raise CorruptChunkError(f"nbits {nbits} out of range for {DTYPE_CODES[dtype_code]}")
    if coder not in CODER_NAMES:
        raise CorruptChunkError(f"unknown entropy coder {coder}")
    if ndim > MAX_NDIM:
        raise CorruptChunkError(f"ndim {ndim} exceeds {MAX_NDIM}")
    if block_rows < 1:
        raise CorruptChunkError("rows per block is 0")
    reader = _Reader(body)
    reader.take(_PREFIX.size, "prefix")
    shape = struct.unpack(f"<{ndim}Q", reader.take(8 * ndim, "shape"))
    if any(n > MAX_EXTENT for n in shape):
        raise CorruptChunkError(f"shape {shape} has an extent over {MAX_EXTENT}")
    nlayers, ny, nx = layer_shape(shape)
    if flags & FLAG_STORED:
        return _parse_stored(reader, body, flags, dtype_code, nbits, coder, shape)
    table = np.frombuffer(reader.take(16 * nlayers, "layer table"), "<f8").reshape(nlayers, 2)
    offsets, steps = table[:, 0], table[:, 1]
    if not (np.isfinite(offsets).all() and np.isfinite(steps).all() and (steps >= 0).all()):
        raise CorruptChunkError("layer table holds a non-finite offset or a negative step")
    predictors = coefficients = None
    if version != FORMAT_VERSION:
        predictors = np.frombuffer(reader.take(nlayers, "predictor table"), "u1")
        known = PREDICTOR_NAMES if version == FORMAT_VERSION_4 else PREDICTORS_V3
        unknown = np.setdiff1d(predictors, list(known))
        if unknown.size:
            raise CorruptChunkError(
                f"predictor table holds unknown predictor {unknown[0]} (upgrade "
                "layerquantizer if the chunk is newer)"
            )
    if version == FORMAT_VERSION_4:
        coefficients = _coefficients(reader, int((predictors == PREDICTOR_LINEAR).sum()))
    header = Header(
        flags & FLAG_FORTRAN,
        dtype_code,
        nbits,
        coder,
        block_rows,
        shape,
        offsets,
        steps,
        predictors,
        version >= FORMAT_VERSION_RANGE,
        coefficients,
    )
    residual_size = reader.u64("residual section size")
    residual_bytes = reader.u64("residual section size before coding")
    residuals = reader.take(residual_size, "residual section")
    # Checked before anything is allocated for the shape the header declares.
    lowest, highest = residual_bounds(header)
    if not lowest <= residual_bytes <= highest:
        raise CorruptChunkError(
            f"shape {shape} makes a residual section of {lowest} to {highest} bytes, "
            f"the header says {residual_bytes}"
        )
    if coder == CODER_NONE and residual_size != residual_bytes:
        raise CorruptChunkError(
            f"residual section: {residual_size} bytes stored, {residual_bytes} expected"
        )
    if coder == CODER_ZSTD and residual_bytes > _MAX_EXPANSION * residual_size:
        raise CorruptChunkError(
            f"residual section: {residual_size} coded bytes cannot hold {residual_bytes}"
        )
    count, bitmap, values = 0, None, None
    if flags & FLAG_EXCEPTIONS:
        count = reader.u64("exception count")
        if not 0 < count <= header.size:
            raise CorruptChunkError(f"exception count {count} for {header.size} values")
        bitmap = reader.take(reader.u64("exception bitmap size"), "exception bitmap")
        values = reader.take(len(body) - reader.pos, "exception values")
    if reader.pos != len(body):
        raise CorruptChunkError(f"{len(body) - reader.pos} stray bytes after the chunk's data")
    return Chunk(header, residuals, residual_bytes, count, bitmap, values)


def _coefficients(reader: _Reader, layers: int) -> np.ndarray:
    """The linear predictor's coefficients of ``layers`` layers (version 4), checked."""
    size = 2 * LINEAR_COEFFICIENTS * layers
    table = np.frombuffer(reader.take(size, "coefficient table"), "<i2")
    table = table.reshape(layers, LINEAR_COEFFICIENTS).astype(np.int64)
    weights = np.abs(table).sum(axis=1)
    if (weights > LINEAR_MAX_WEIGHT).any():
        raise CorruptChunkError(
            f"coefficient table: weights adding up to {weights.max()} (at most {LINEAR_MAX_WEIGHT})"
        )
    return table


def _parse_stored(reader, body, flags, dtype_code, nbits, coder, shape) -> Chunk:
    """The rest of a stored chunk: its values' section, which must end the chunk."""
    if flags & FLAG_EXCEPTIONS:
        raise CorruptChunkError("a stored chunk flags an exception section")
    header = Header(
        flags & FLAG_FORTRAN, dtype_code, nbits, coder, 1, shape, np.zeros(0), np.zeros(0),
        None, True,
    )  # fmt: skip
    size = reader.u64("stored values size")
    values = reader.take(size, "stored values")
    # Checked before anything is allocated for the shape the header declares.
    if coder == CODER_NONE and size != 4 * header.size:
        raise CorruptChunkError(
            f"stored values: {size} bytes for shape {shape}, {4 * header.size} expected"
        )
    if coder == CODER_ZSTD and 4 * header.size > _MAX_EXPANSION * size:
        raise CorruptChunkError(f"stored values: {size} coded bytes cannot hold shape {shape}")
    if reader.pos != len(body):
        raise CorruptChunkError(f"{len(body) - reader.pos} stray bytes after the chunk's data")
    return Chunk(header, memoryview(b""), 0, 0, None, None, values)


#: Bytes at the start of a chunk that :func:`peek_nbits` needs.
PREFIX_SIZE = _PREFIX.size


def peek_nbits(prefix: bytes) -> int | None:
    """The nbits a chunk was encoded with, from its first :data:`PREFIX_SIZE` bytes; None
    when they are not the start of a chunk of a version this module reads (no checksum is
    checked: this is for telling what a store holds, not for decoding). Every version
    shares the prefix.

    >>> peek_nbits(MAGIC + bytes([FORMAT_VERSION, 0, 1, 12, 1, 2, 0, 0, 1, 0, 0, 0]))
    12
    """
    if len(prefix) < _PREFIX.size:
        return None
    magic, version, _, _, nbits, *_ = _PREFIX.unpack(bytes(prefix[: _PREFIX.size]))
    return nbits if magic == MAGIC and version in READ_VERSIONS else None


def layer_table_end(shape: tuple[int, ...]) -> int:
    """Bytes at the start of a chunk of ``shape`` that :func:`peek_steps` needs: the
    prefix, the shape and the layer table.

    >>> layer_table_end((1, 37, 721, 1440))
    640
    """
    return _PREFIX.size + 8 * len(shape) + 16 * layer_shape(shape)[0]


def peek_steps(prefix: bytes) -> tuple[tuple[int, ...], np.ndarray] | None:
    """The shape and the per-layer quantization steps of a chunk, from its first bytes
    (:func:`layer_table_end` of its shape); None when they are not the start of a chunk of
    a version this module reads, or too few. No checksum is checked (as :func:`peek_nbits`).
    """
    prefix = bytes(prefix)
    if len(prefix) < _PREFIX.size:
        return None
    magic, version, flags, _, _, _, ndim, *_ = _PREFIX.unpack(prefix[: _PREFIX.size])
    if magic != MAGIC or version not in READ_VERSIONS or ndim > MAX_NDIM:
        return None
    if version >= FORMAT_VERSION_RANGE and flags & FLAG_STORED:
        return None  # no layer table: the values are exact
    end = _PREFIX.size + 8 * ndim
    if len(prefix) < end:
        return None
    shape = struct.unpack(f"<{ndim}Q", prefix[_PREFIX.size : end])
    if any(n > MAX_EXTENT for n in shape) or len(prefix) < layer_table_end(shape):
        return None
    nlayers = layer_shape(shape)[0]
    table = np.frombuffer(prefix[end : end + 16 * nlayers], "<f8").reshape(nlayers, 2)
    return shape, table[:, 1].copy()
