"""The numcodecs codec ``layerquantizer1`` (a Zarr v2 compressor)."""

from __future__ import annotations

from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray

from layerquantizer import chunk

#: zstd level used when none is given: the fastest level that met every ratio target.
DEFAULT_LEVEL = 1


def parse_nbits(nbits: object) -> int:
    """Check ``nbits``: an integer from 1 to 24."""
    if isinstance(nbits, bool) or not isinstance(nbits, int):
        raise TypeError(f"nbits must be an int, got {type(nbits).__name__} {nbits!r}")
    if not 1 <= nbits <= chunk.MAX_NBITS:
        raise ValueError(
            f"nbits must be between 1 and {chunk.MAX_NBITS}, got {nbits}: float32 has a "
            f"{chunk.MAX_NBITS}-bit significand, so more bits cannot add precision; use a "
            "lossless codec (e.g. numcodecs.Zstd) to keep every bit"
        )
    return nbits


def parse_level(level: object) -> int:
    """Check ``level``: a zstd compression level from -7 to 22."""
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be an int, got {type(level).__name__} {level!r}")
    if not -7 <= level <= 22:
        raise ValueError(f"level must be a zstd level between -7 and 22, got {level}")
    return level


class LayerQuantizer(Codec):
    """Error-bounded lossy compression of float32 fields, one 2-D layer at a time.

    Every index but the last two selects a layer. Each layer is quantized linearly to
    ``2**nbits`` levels between its finite minimum and maximum, predicted with the
    Lorenzo predictor, zigzag-coded and compressed with zstd. Each finite value comes back
    within half a quantization step (plus one float32 ulp); NaN and infinities come back
    exactly. Chunks describe themselves and carry a checksum.

    Parameters
    ----------
    nbits : int
        Bits per value, 1 to 24: the layer's range is cut into ``2**nbits - 1`` steps.
        16 keeps a full-scale error of 7.6e-6.
    level : int
        zstd level, -7 to 22. Higher levels compress slightly better and encode slower;
        decoding speed hardly changes.

    Examples
    --------
    >>> import numpy as np
    >>> from layerquantizer import LayerQuantizer
    >>> x = np.linspace(250, 300, 2 * 30 * 40, dtype="float32").reshape(2, 30, 40)
    >>> codec = LayerQuantizer(nbits=16)
    >>> y = codec.decode(codec.encode(x))
    >>> bool(abs(y - x).max() <= 50 / (2**16 - 1) / 2 + 3e-5)
    True
    """

    codec_id = "layerquantizer1"

    def __init__(self, nbits: int = 16, level: int = DEFAULT_LEVEL):
        self.nbits = parse_nbits(nbits)
        self.level = parse_level(level)

    def encode(self, buf):
        return chunk.encode(ensure_ndarray(buf), nbits=self.nbits, level=self.level)

    def decode(self, buf, out=None):
        return chunk.decode(ensure_contiguous_ndarray(buf), out=out)

    def get_config(self):
        return {"id": self.codec_id, "nbits": self.nbits, "level": self.level}

    def __repr__(self):
        return f"{type(self).__name__}(nbits={self.nbits}, level={self.level})"
