"""The numcodecs codec ``layerquantizer1`` (a Zarr v2 compressor)."""

from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray

from layerquantizer import chunk

#: zstd level used when none is given: the fastest level that met every ratio target.
DEFAULT_LEVEL = 1
#: Bits per value when neither nbits nor a tolerance is given.
DEFAULT_NBITS = 16


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


def parse_tolerance(tolerance: object) -> float:
    """Check ``tolerance``: a positive, finite number (an absolute error, in the data's units)."""
    if isinstance(tolerance, bool) or not isinstance(
        tolerance, int | float | np.integer | np.floating
    ):
        raise TypeError(f"tolerance must be a number, got {type(tolerance).__name__} {tolerance!r}")
    value = float(tolerance)
    if not (value > 0 and np.isfinite(2.0 * value)):
        raise ValueError(
            f"tolerance must be a positive, finite number (the largest absolute error, in the "
            f"data's units), got {tolerance!r}; for lossless storage use a lossless codec "
            "(e.g. numcodecs.Zstd)"
        )
    return value


def parse_nbits_or_tolerance(nbits: object, tolerance: object) -> tuple[int | None, float | None]:
    """Check the two exclusive ways of setting the error: ``(nbits, None)`` (16 when neither
    is given) or ``(None, tolerance)``."""
    if tolerance is None:
        return parse_nbits(DEFAULT_NBITS if nbits is None else nbits), None
    if nbits is not None:
        raise ValueError(
            f"give nbits or tolerance, not both (got nbits={nbits!r}, tolerance={tolerance!r}): "
            "nbits sets the error relative to each layer's range, tolerance in the data's units"
        )
    return None, parse_tolerance(tolerance)


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
    nbits : int, optional
        Bits per value, 1 to 24: the layer's range is cut into ``2**nbits - 1`` steps.
        16 (the default) keeps a full-scale error of 7.6e-6.
    tolerance : float, optional
        Instead of ``nbits``: the largest absolute error, in the data's units (e.g. 0.01 for
        temperatures to 0.01 K). Every finite value comes back within ``tolerance`` plus one
        float32 ulp; each chunk uses the bits its widest layer needs (a layer that would need
        more than 24 keeps the bound by storing the values that miss it exactly).
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
    >>> codec = LayerQuantizer(tolerance=0.01)
    >>> bool(abs(codec.decode(codec.encode(x)) - x).max() <= 0.01 + 3e-5)
    True
    """

    codec_id = "layerquantizer1"

    def __init__(
        self,
        nbits: int | None = None,
        level: int = DEFAULT_LEVEL,
        fill_value=None,
        tolerance: float | None = None,
    ):
        self.nbits, self.tolerance = parse_nbits_or_tolerance(nbits, tolerance)
        self.level = parse_level(level)
        self.fill_value = parse_fill_value(fill_value)

    def encode(self, buf):
        return chunk.encode(
            ensure_ndarray(buf),
            nbits=self.nbits,
            level=self.level,
            fill_value=self.fill_value,
            tolerance=self.tolerance,
        )

    def decode(self, buf, out=None):
        return chunk.decode(ensure_contiguous_ndarray(buf), out=out)

    def get_config(self):
        # Only the setting in use: the configs of nbits codecs stay what they were.
        if self.tolerance is None:
            config = {"id": self.codec_id, "nbits": self.nbits, "level": self.level}
        else:
            config = {"id": self.codec_id, "tolerance": self.tolerance, "level": self.level}
        if self.fill_value is not None:  # only then: the configs of before stay the same
            config["fill_value"] = self.fill_value
        return config

    def __repr__(self):
        fill = "" if self.fill_value is None else f", fill_value={self.fill_value!r}"
        error = f"nbits={self.nbits}" if self.tolerance is None else f"tolerance={self.tolerance!r}"
        return f"{type(self).__name__}({error}, level={self.level}{fill})"
