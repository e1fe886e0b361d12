"""LayerQuantizer: error-bounded lossy compression of gridded weather data for Zarr.

Importing the package registers its numcodecs codecs, ``layerquantizer1`` and the
original package's ``layerquantizer0.3b``; Zarr also finds them (and the Zarr v3 serializer,
:class:`layerquantizer.zarr3.LayerQuantizerCodec`) through entry points, so readers need no
import at all.

>>> import numpy as np, layerquantizer
>>> codec = layerquantizer.LayerQuantizer(nbits=16)
>>> x = np.linspace(0, 1, 64 * 64, dtype="float32").reshape(64, 64)
>>> bool(np.abs(codec.decode(codec.encode(x)) - x).max() <= 0.5 / (2**16 - 1) + 6e-8)
True
"""

import numcodecs

from layerquantizer.chunk import max_abs_error
from layerquantizer.codec import LayerQuantizer
from layerquantizer.errors import CorruptChunkError
from layerquantizer.legacy import LegacyLayerQuantizer

__version__ = "1.0.0.dev0"

numcodecs.register_codec(LayerQuantizer)
numcodecs.register_codec(LegacyLayerQuantizer)

__all__ = [
    "CorruptChunkError",
    "LayerQuantizer",
    "LegacyLayerQuantizer",
    "__version__",
    "max_abs_error",
]
