"""The original LayerQuantizer format, codec id ``layerquantizer0.3b``, bit for bit.

Stores written with the original package (version 0.3b) name this codec in their ``.zarray``;
with this module they open after ``import layerquantizer``, or with no import at all through
the ``numcodecs.codecs`` entry point. What :class:`LegacyLayerQuantizer` writes, the original
reads. New data should use the ``layerquantizer1`` codec; ``lq compress old new`` converts.

Format of one chunk (little-endian): a Blosc stream (byte shuffle, ``blosc_cname`` at
``blosc_clevel``, automatic block size, type size 4) of an int32 array::

    [nplanes, ny, nx, plane_min[nplanes], plane_max[nplanes], data[nplanes * ny * nx]]

``plane_min`` and ``plane_max`` are float32 bit patterns; every leading dimension of the chunk
is folded into ``nplanes``. See :mod:`layerquantizer._legacy_kernels` for ``data``. With
``nbits > 24`` the chunk is instead the Blosc stream of the float32 values themselves (which
the original wrote but could not read back); only the codec's ``nbits`` tells the two apart.

Example
-------
>>> import numpy as np
>>> from layerquantizer.legacy import LegacyLayerQuantizer
>>> codec = LegacyLayerQuantizer(nbits=16)
>>> field = np.linspace(250.0, 300.0, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
>>> decoded = codec.decode(codec.encode(field))
>>> decoded.shape, decoded.dtype
((2, 3, 4), dtype('float32'))
>>> bool(np.abs(decoded - field).max() < 50.0 / 65535)
True
"""

from __future__ import annotations

from typing import Any

import numcodecs
import numcodecs.blosc
import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from layerquantizer import _legacy_kernels as kernels
from layerquantizer.errors import CorruptChunkError

#: Above this ``nbits`` the original stored the float32 values unquantized.
MAX_QUANTIZED_NBITS = 24

# No Blosc codec expands a stream by more than about 32768 (zstd's RLE blocks), so a header
# that claims more is corrupt; checked before anything of that size is allocated.
_MAX_BLOSC_EXPANSION = 1 << 16
_BLOSC_HEADER_BYTES = 16
_BLOSC_MEMCPYED = 0x02
_HEADER_INTS = 3

_NO_TRANSFORM = (None, "none", "None")


def legacy_plane_ranges(
    mins: np.ndarray, maxs: np.ndarray, nbits: int, pow2_range: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The ``plane_min, plane_max`` the original stores, from the planes' finite extrema.

    A plane whose extrema are equal gets a range of 1 if its value is 0 (so an all-NaN
    plane stores ``(0, 1)``), else ``max(|min|, 2 * min)``: constant 5 stores ``(5, 15)``,
    constant -3.5 stores ``(-3.5, 0)``. With ``pow2_range`` the range becomes the next power
    of two ``D`` with ``D * (2**nbits - 1) / 2**nbits`` above it, and the stored maximum is
    ``min + D * (2**nbits - 1) / 2**nbits``. All in float32, in the original's NumPy
    expressions, so that the bits agree.

    Parameters
    ----------
    mins, maxs : float32[nplanes]
        Finite minimum and maximum of each plane (0, 0 for a plane without finite values).
    nbits : int
    pow2_range : bool

    Returns
    -------
    mins, maxs : float32[nplanes]
        New arrays; ``maxs`` may be ``inf`` where the range overflows float32.

    Examples
    --------
    >>> lo, hi = legacy_plane_ranges(
    ...     np.float32([0, 5, -3.5]), np.float32([0, 5, -3.5]), 16, False)
    >>> hi.tolist()
    [1.0, 15.0, 0.0]
    """
    mins = np.array(mins, np.float32)
    maxs = np.array(maxs, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        delta = maxs - mins
        flat = delta == 0
        adjusted = delta.copy()
        adjusted[flat & (mins == 0)] = 1
        scaled = flat & (mins != 0)
        adjusted[scaled] = np.maximum(np.abs(mins[scaled]), 2 * mins[scaled])
        maxs[flat] = (mins[flat] + adjusted[flat]).astype(np.float32)
        if pow2_range:
            levels = 2**nbits
            # The smallest power of two that still spans the plane once the top level
            # (exclusive) is taken off.
            span = 2 ** (1 + np.floor(np.log2(adjusted * levels / (levels - 1))))
            maxs = (mins + span * (levels - 1) / levels).astype(np.float32)
    return mins, maxs


class LegacyLayerQuantizer(Codec):
    """Codec ``layerquantizer0.3b``: the original LayerQuantizer's per-plane quantization.

    Each 2-D plane (the last two dimensions; every leading one counts planes) is quantized
    linearly to ``nbits`` bits between its stored minimum and maximum, Lorenzo-predicted,
    written in negabinary and compressed with Blosc. The encoded bytes and the decoded
    values are the original package's, bit for bit.

    Parameters
    ----------
    nbits : int, default 16
        Bits per value, at least 1. Above 24 the chunk is the Blosc stream of the float32
        values, unquantized.
    transform : {"Lorenzo", None}, default "Lorenzo"
        ``None`` (or ``"none"``) stores the quantized levels without prediction.
    blosc_cname : str, default "zstd"
        A Blosc compressor from :func:`numcodecs.blosc.list_compressors`.
    blosc_clevel : int, default 5
        Blosc compression level, 0 to 9.
    in_id : str, default "layerquantizer0.3b"
        The original took the codec id as an argument; only this id is accepted.
    pow2_range : bool, default False
        Widen each plane's range to a power of two (as fstd files do), so that requantizing
        a subset does not change the values.

    Notes
    -----
    * ``encode`` takes float32 data of any shape: an ndarray (C-ordered; with ``nbits <= 24``
      F-ordered ones, as Zarr passes for ``order="F"``, are refused, as the original did) or
      a bytes-like object read as float32. A 1-D chunk (which
      the original refused) is written as one ``1 x n`` plane, a 0-d one as ``1 x 1``.
      NaN and +-inf become the NaN code, so +-inf decode as NaN; the plane range comes from
      the finite values. A plane whose range does not fit in float32 raises ``ValueError``
      (the original wrote a chunk that decoded to garbage).
    * ``decode`` returns float32 shaped ``(nplanes, ny, nx)`` as the header gives it (flat
      for ``nbits > 24``), or fills ``out`` (any shape with that many elements, which is what
      Zarr passes or reshapes to).
    * Every header field and every decoded level is checked before use; a truncated or
      corrupt chunk raises :class:`~layerquantizer.errors.CorruptChunkError` (a
      ``ValueError``). The format has no checksum, so a flipped bit inside the data can
      still decode, to different values: that cannot be detected. A chunk whose Blosc
      header claims more than 65536 times its own size (more than any Blosc codec
      expands) is refused before anything that large is allocated.

    Examples
    --------
    >>> import numcodecs, layerquantizer
    >>> codec = numcodecs.get_codec({"id": "layerquantizer0.3b", "nbits": 12})
    >>> codec.get_config()["nbits"]
    12
    """

    codec_id = "layerquantizer0.3b"

    def __init__(
        self,
        nbits: int = 16,
        transform: str | None = "Lorenzo",
        blosc_cname: str = "zstd",
        blosc_clevel: int = 5,
        in_id: str = codec_id,
        pow2_range: bool = False,
    ) -> None:
        if in_id != self.codec_id:
            raise ValueError(f"in_id must be {self.codec_id!r}, got {in_id!r}")
        if isinstance(nbits, bool) or not isinstance(nbits, int | np.integer) or nbits < 1:
            raise ValueError(f"nbits must be an integer of at least 1, got {nbits!r}")
        if transform != "Lorenzo" and transform not in _NO_TRANSFORM:
            raise ValueError(f"transform must be 'Lorenzo' or None, got {transform!r}")
        compressors = numcodecs.blosc.list_compressors()
        if blosc_cname not in compressors:
            raise ValueError(f"blosc_cname must be one of {compressors}, got {blosc_cname!r}")
        if (
            isinstance(blosc_clevel, bool)
            or not isinstance(blosc_clevel, int | np.integer)
            or not 0 <= blosc_clevel <= 9
        ):
            raise ValueError(f"blosc_clevel must be an integer from 0 to 9, got {blosc_clevel!r}")
        if not isinstance(pow2_range, bool | np.bool_):
            raise ValueError(f"pow2_range must be True or False, got {pow2_range!r}")
        self.nbits = int(nbits)
        self.transform = transform
        self.blosc_cname = blosc_cname
        self.blosc_clevel = int(blosc_clevel)
        self.pow2_range = bool(pow2_range)
        self._blosc = numcodecs.Blosc(
            cname=blosc_cname, clevel=self.blosc_clevel, shuffle=numcodecs.Blosc.SHUFFLE
        )

    @property
    def _lorenzo(self) -> bool:
        return self.transform == "Lorenzo"

    def get_config(self) -> dict[str, Any]:
        """The original's config: ``pow2_range`` appears only when true."""
        config: dict[str, Any] = {
            "id": self.codec_id,
            "nbits": self.nbits,
            "blosc_cname": self.blosc_cname,
            "blosc_clevel": self.blosc_clevel,
            "transform": self.transform,
        }
        if self.pow2_range:
            config["pow2_range"] = True
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LegacyLayerQuantizer:
        """Build the codec from :meth:`get_config`'s dict, with or without its ``id``."""
        config = dict(config)
        codec_id = config.pop("id", cls.codec_id)
        if codec_id != cls.codec_id:
            raise ValueError(f"config id must be {cls.codec_id!r}, got {codec_id!r}")
        return cls(**config)

    def encode(self, buf: Any) -> bytes:
        """Encode float32 data as the original did; see the class notes for what is taken."""
        # Unquantized, the bytes go to Blosc in memory order, so any order round-trips.
        values = _float32_array(buf, any_order=self.nbits > MAX_QUANTIZED_NBITS)
        if self.nbits > MAX_QUANTIZED_NBITS:
            return self._blosc.encode(values)
        if values.size == 0:
            raise ValueError(f"{self.codec_id} cannot encode an empty array (shape {values.shape})")
        if values.ndim >= 2:
            planes = values.reshape(-1, *values.shape[-2:])
        else:
            planes = values.reshape(1, 1, -1)
        nplanes = planes.shape[0]
        mins, maxs = legacy_plane_ranges(
            *kernels.finite_plane_ranges(planes), self.nbits, self.pow2_range
        )
        with np.errstate(over="ignore", invalid="ignore"):
            spans = maxs - mins
        bad = np.flatnonzero(~(np.isfinite(maxs) & np.isfinite(spans)))
        if bad.size:
            plane = int(bad[0])
            raise ValueError(
                f"{self.codec_id} cannot encode plane {plane}: its range "
                f"[{mins[plane]}, {maxs[plane]}] does not fit in float32"
            )
        stream = np.empty(_HEADER_INTS + 2 * nplanes + planes.size, np.int32)
        stream[:_HEADER_INTS] = planes.shape
        stream[_HEADER_INTS : _HEADER_INTS + nplanes] = mins.view(np.int32)
        stream[_HEADER_INTS + nplanes : _HEADER_INTS + 2 * nplanes] = maxs.view(np.int32)
        codes = stream[_HEADER_INTS + 2 * nplanes :].view(np.uint32).reshape(planes.shape)
        kernels.quantize_planes(planes, mins, maxs, self.nbits, self._lorenzo, codes)
        return self._blosc.encode(stream)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        """Decode one chunk; raises :class:`CorruptChunkError` for anything malformed."""
        raw = _blosc_decompress(buf, self.codec_id)
        if self.nbits > MAX_QUANTIZED_NBITS:
            return ndarray_copy(np.frombuffer(raw, np.float32), out)
        stream = np.frombuffer(raw, "<i4")
        shape, mins, maxs = _parse_header(stream, self.codec_id)
        codes = stream[_HEADER_INTS + 2 * shape[0] :].view(np.uint32).reshape(shape)
        dest, in_place = _output_array(out, shape)
        status = kernels.dequantize_planes(codes, mins, maxs, self.nbits, self._lorenzo, dest)
        if status >= 0:
            level_limit = 2**self.nbits
            raise CorruptChunkError(
                f"{self.codec_id} chunk is corrupt: the level of element {status} is outside "
                f"[0, {level_limit}] (nbits={self.nbits}; {level_limit} codes NaN)"
            )
        if out is None:
            return dest
        return out if in_place else ndarray_copy(dest, out)


def _float32_array(buf: Any, any_order: bool = False) -> np.ndarray:
    """``buf`` as a contiguous float32 ndarray, without copying when it already is one.

    C-contiguous, unless ``any_order`` lets an F-contiguous array through as it is.
    """
    if isinstance(buf, np.ndarray):
        if buf.dtype != np.float32:
            raise TypeError(
                f"LegacyLayerQuantizer encodes float32 data, got an array of dtype {buf.dtype}"
            )
        if buf.flags.f_contiguous and any_order:
            return buf
        if not buf.flags.c_contiguous and buf.flags.f_contiguous:
            raise ValueError(
                "LegacyLayerQuantizer encodes C-ordered chunks, got an F-ordered array of "
                f"shape {buf.shape}; the layerquantizer0.3b format has no Zarr order='F'"
            )
        return np.ascontiguousarray(buf)
    values = ensure_contiguous_ndarray(buf)
    if values.dtype == np.float32:
        return values
    if values.dtype.itemsize == 1 and values.nbytes % 4 == 0:
        return values.view(np.float32)
    raise TypeError(
        f"LegacyLayerQuantizer encodes float32 data, got a buffer of dtype {values.dtype} "
        f"and {values.nbytes} bytes"
    )


def _blosc_decompress(buf: Any, codec_id: str) -> bytes:
    """Decompress a Blosc stream after checking its header against the bytes at hand.

    c-blosc trusts the sizes in its header: a truncated stream would be read past its end
    and a forged one could ask for gigabytes, so both are refused here first.
    """
    raw = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
    size = raw.size
    if size < _BLOSC_HEADER_BYTES:
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: {size} bytes, shorter than the "
            f"{_BLOSC_HEADER_BYTES}-byte Blosc header"
        )
    flags = int(raw[2])
    typesize = int(raw[3])
    nbytes, blocksize, cbytes = (int(v) for v in raw[4:16].view("<i4"))
    if cbytes != size:
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: Blosc header field cbytes = {cbytes}, "
            f"expected the chunk's length {size}"
        )
    if typesize != 4:
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: Blosc header field typesize = {typesize}, expected 4"
        )
    if nbytes < 0 or nbytes % 4 or nbytes > _MAX_BLOSC_EXPANSION * cbytes:
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: Blosc header field nbytes = {nbytes}, expected a "
            f"multiple of 4 from 0 to {_MAX_BLOSC_EXPANSION} x {cbytes}"
        )
    if flags & _BLOSC_MEMCPYED and nbytes + _BLOSC_HEADER_BYTES != cbytes:
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: Blosc header says the {nbytes} bytes are stored "
            f"uncompressed, but the chunk has {cbytes - _BLOSC_HEADER_BYTES} after the header"
        )
    if nbytes and not 0 < blocksize <= max(nbytes, 1):
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: Blosc header field blocksize = {blocksize}, "
            f"expected 1 to {nbytes}"
        )
    if nbytes == 0:
        return b""  # c-blosc reports an empty stream as an error
    try:
        return numcodecs.blosc.decompress(raw)
    except (RuntimeError, ValueError, TypeError) as error:
        raise CorruptChunkError(f"{codec_id} chunk is corrupt: Blosc: {error}") from error


def _parse_header(
    stream: np.ndarray, codec_id: str
) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """Check and return ``(nplanes, ny, nx)`` and the plane ranges of a decompressed stream."""
    if stream.size < _HEADER_INTS:
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: {stream.size} int32 after Blosc, fewer than the "
            f"{_HEADER_INTS} of the header [nplanes, ny, nx]"
        )
    shape = tuple(int(v) for v in stream[:_HEADER_INTS])
    for name, value in zip(("nplanes", "ny", "nx"), shape, strict=True):
        if value < 1:
            raise CorruptChunkError(
                f"{codec_id} chunk is corrupt: header field {name} = {value}, expected at least 1"
            )
    nplanes, ny, nx = shape
    expected = _HEADER_INTS + 2 * nplanes + nplanes * ny * nx
    if stream.size != expected:
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: header [nplanes, ny, nx] = {list(shape)} needs "
            f"{expected} int32, the chunk holds {stream.size}"
        )
    mins = stream[_HEADER_INTS : _HEADER_INTS + nplanes].view(np.float32)
    maxs = stream[_HEADER_INTS + nplanes : _HEADER_INTS + 2 * nplanes].view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        spans = maxs - mins
        valid = np.isfinite(mins) & np.isfinite(maxs) & np.isfinite(spans) & (spans > 0)
    if not valid.all():
        plane = int(np.flatnonzero(~valid)[0])
        raise CorruptChunkError(
            f"{codec_id} chunk is corrupt: plane {plane} has plane_min = {float(mins[plane])}, "
            f"plane_max = {float(maxs[plane])}; expected finite values with min < max"
        )
    return shape, mins, maxs


def _output_array(out: Any, shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """Where to decode, and whether that is ``out`` itself (a C-contiguous float32 array of
    the right size), so that no copy is needed."""
    if (
        isinstance(out, np.ndarray)
        and out.dtype == np.float32
        and out.flags.c_contiguous
        and out.flags.writeable
        and out.size == shape[0] * shape[1] * shape[2]
    ):
        return out.reshape(shape), True
    return np.empty(shape, np.float32), False
