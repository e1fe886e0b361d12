"""LayerQuantizer: error-bounded lossy compression of gridded weather data for Zarr.

Importing the package registers its numcodecs codecs; Zarr also finds them (and the Zarr v3
serializer) through entry points, so readers need no import at all.
"""

__version__ = "1.0.0.dev0"

import numcodecs

from layerquantizer.legacy import LegacyLayerQuantizer

numcodecs.register_codec(LegacyLayerQuantizer)
