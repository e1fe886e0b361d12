"""The numcodecs codec ``layerquantizer1`` (a Zarr v2 compressor)."""

from __future__ import annotations

import numpy as np
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


def parse_fill_value(fill_value: object) -> float | None:
    """Check ``fill_value``: a real number or None; NaN and infinities become None, since
    they never enter a layer's range."""
    if fill_value is None:
        return None
    if isinstance(fill_value, bool) or not isinstance(fill_value, int | float | np.number):
        raise TypeError(
            f"fill_value must be a real number or None, got {type(fill_value).__name__} "
            f"{fill_value!r}"
        )
    if isinstance(fill_value, np.complexfloating):
        raise TypeError(f"fill_value must be a real number or None, got {fill_value!r}")
    value = float(fill_value)
    return value if np.isfinite(np.float32(value)) else None


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
    fill_value : float, optional
        The array's fill value, which Zarr pads edge chunks with: values equal to it do
        not widen a layer's range (and come back exactly). Zarr v2 does not tell a
        compressor the fill value, so give it here when it is finite; with None (and with
        a NaN fill value, which ``lq`` writes) the padding of edge chunks enters the range
        only when it is finite.

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

    def __init__(self, nbits: int = 16, level: int = DEFAULT_LEVEL, fill_value=None):
        self.nbits = parse_nbits(nbits)
        self.level = parse_level(level)
        self.fill_value = parse_fill_value(fill_value)

    def encode(self, buf):
        return chunk.encode(
            ensure_ndarray(buf), nbits=self.nbits, level=self.level, fill_value=self.fill_value
        )

    def decode(self, buf, out=None):
        return chunk.decode(ensure_contiguous_ndarray(buf), out=out)

    def get_config(self):
        config = {"id": self.codec_id, "nbits": self.nbits, "level": self.level}
        if self.fill_value is not None:  # only then: the configs of before stay the same
            config["fill_value"] = self.fill_value
        return config

    def __repr__(self):
        fill = "" if self.fill_value is None else f", fill_value={self.fill_value!r}"
        return f"{type(self).__name__}(nbits={self.nbits}, level={self.level}{fill})"
