"""The ``lq`` command line: compress, verify and inspect Zarr datasets with LayerQuantizer.

Each command lives in its own module and stays thin over :mod:`layerquantizer.dataset`.
"""
