"""What a store records about LayerQuantizer: the attributes written on each quantized
variable, the codec ids, the lossless codecs, and the bound that ``nbits`` promises.

A variable quantized with ``nbits`` records ``layerquantizer_codec``, ``layerquantizer_nbits``
and ``layerquantizer_error_bound``: the full-scale bound ``0.5 / (2**nbits - 1)``, a fraction
of each 2-D layer's ``max - min`` (plus one float32 ulp of the value), as it always has. One
quantized with an absolute tolerance records ``layerquantizer_codec``,
``layerquantizer_mode: "tolerance"`` and ``layerquantizer_tolerance``: the absolute bound,
in the variable's units (plus one float32 ulp); it has no full-scale bound, so no
``layerquantizer_error_bound`` (nor ``layerquantizer_nbits``: each chunk takes the bits its
widest layer needs). One quantized with ``precision: source`` is a tolerance variable whose
tolerance is half the step of the source's packing grid: ``layerquantizer_mode: "source"``,
``layerquantizer_source_step`` (the step found in the sampled chunks) and
``layerquantizer_tolerance`` (half of it, the absolute bound).
"""

from __future__ import annotations

#: Attribute names written on every quantized variable.
ATTR_CODEC = "layerquantizer_codec"
ATTR_NBITS = "layerquantizer_nbits"
ATTR_BOUND = "layerquantizer_error_bound"
#: On a variable quantized with an absolute tolerance: "tolerance", and the tolerance.
ATTR_MODE = "layerquantizer_mode"
ATTR_TOLERANCE = "layerquantizer_tolerance"
MODE_NBITS = "nbits"
MODE_TOLERANCE = "tolerance"
#: On a variable quantized with ``precision: source``: the mode, and the grid step found.
MODE_SOURCE = "source"
ATTR_SOURCE_STEP = "layerquantizer_source_step"
#: The modes whose bound is ``layerquantizer_tolerance``, absolute, in the variable's units.
ABSOLUTE_MODES = (MODE_TOLERANCE, MODE_SOURCE)
#: On a quantized variable whose source did not decode to float32: the dtype it decoded
#: to (the bound is relative to those values; the variable now decodes to float32).
ATTR_SOURCE_DTYPE = "layerquantizer_source_dtype"
#: Root attribute: the source's data variables that the config dropped on purpose.
ATTR_DROPPED = "layerquantizer_dropped"
_ATTR_PREFIX = "layerquantizer_"
_LQ_CODEC_IDS = ("layerquantizer1", "layerquantizer", "layerquantizer0.3b")
# Codecs that give back every bit; anything else without a LayerQuantizer codec has an
# unknown error bound.
_LOSSLESS_CODECS = frozenset(
    {"blosc", "zstd", "lz4", "zlib", "gzip", "bz2", "lzma", "crc32c", "bytes", "transpose",
     "shuffle", "delta", "vlen-utf8", "vlen-bytes", "vlen-array", "sharding_indexed", "lzf",
     "zfpy-lossless", "categorize", "json2", "msgpack2", "pickle", "fletcher32", "adler32",
     "crc32", "packbits", "pcodec"}
)  # fmt: skip


def full_scale_bound(nbits: int) -> float:
    """Largest error over a layer's ``max - min`` that the codec allows, ulp aside.

    >>> f"{full_scale_bound(16):.3g}"
    '7.63e-06'
    """
    return 0.5 / (2**nbits - 1)
