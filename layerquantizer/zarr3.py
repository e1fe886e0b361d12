"""The Zarr v3 array-to-bytes codec ``layerquantizer`` over the same core as the v2 codec.

Zarr finds it through the ``zarr.codecs`` entry point, so a reader needs no import:

>>> import zarr
>>> z = zarr.create_array(
...     zarr.storage.MemoryStore(), shape=(2, 30, 40), chunks=(1, 30, 40), dtype="float32",
...     serializer={"name": "layerquantizer", "configuration": {"nbits": 16}},
...     compressors=None, zarr_format=3,
... )
>>> z[:] = 1.5
>>> float(z[1, 2, 3])
1.5
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from layerquantizer import chunk
from layerquantizer.codec import DEFAULT_LEVEL, parse_level, parse_nbits_or_tolerance

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

CODEC_NAME = "layerquantizer"


@dataclass(frozen=True)
class LayerQuantizerCodec(ArrayBytesCodec):
    """Error-bounded lossy serializer of float32 arrays: :class:`layerquantizer.LayerQuantizer`.

    Parameters
    ----------
    nbits : int, optional
        Bits per value, 1 to 24 (16 when neither this nor ``tolerance`` is given).
    level : int
        zstd level, -7 to 22.
    tolerance : float, optional
        Instead of ``nbits``: the largest absolute error, in the data's units.
    """

    is_fixed_size = False

    nbits: int | None
    level: int
    tolerance: float | None

    def __init__(
        self,
        *,
        nbits: int | None = None,
        level: int = DEFAULT_LEVEL,
        tolerance: float | None = None,
    ) -> None:
        nbits, tolerance = parse_nbits_or_tolerance(nbits, tolerance)
        object.__setattr__(self, "nbits", nbits)
        object.__setattr__(self, "level", parse_level(level))
        object.__setattr__(self, "tolerance", tolerance)

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))

    def to_dict(self) -> dict:
        if self.tolerance is None:
            configuration = {"nbits": self.nbits, "level": self.level}
        else:
            configuration = {"tolerance": self.tolerance, "level": self.level}
        return {"name": CODEC_NAME, "configuration": configuration}

    def validate(
        self,
        *,
        shape: tuple[int, ...],
        dtype: ZDType[TBaseDType, TBaseScalar],
        chunk_grid: ChunkGrid,
    ) -> None:
        # zarr checks every codec against the array's dtype, not against what the filters
        # before it make (e.g. AsType from float64 to float32): refuse here only what no
        # numeric cast can turn into float32; each chunk's own dtype is checked on encode.
        native = dtype.to_native_dtype()
        if native.kind not in "fiu":
            raise TypeError(
                f"the {CODEC_NAME} codec encodes float32 arrays, got dtype {native}; store "
                "this array with another serializer"
            )

    @staticmethod
    def _check_chunk_dtype(chunk_spec: ArraySpec) -> None:
        native = chunk_spec.dtype.to_native_dtype()
        if native.kind != "f" or native.itemsize != 4:
            raise TypeError(
                f"the {CODEC_NAME} codec encodes float32 arrays, got dtype {native}; convert "
                "the array to float32 or put a filter before it that does (e.g. "
                "zarr.codecs.numcodecs.AsType(encode_dtype='float32', "
                f"decode_dtype='{native}'))"
            )

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        decoded = chunk.decode(chunk_bytes.as_numpy_array())
        if decoded.shape != chunk_spec.shape:
            raise ValueError(
                f"{CODEC_NAME}: chunk decodes to shape {decoded.shape}, the array's chunks "
                f"have shape {chunk_spec.shape}"
            )
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(decoded)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        self._check_chunk_dtype(chunk_spec)
        data = np.asarray(chunk_array.as_numpy_array())
        # Zarr pads edge chunks with the fill value: it must not widen the layers' range.
        fill = chunk_spec.fill_value
        fill = float(fill) if isinstance(fill, float | np.floating) else None
        encoded = chunk.encode(
            data, nbits=self.nbits, level=self.level, fill_value=fill, tolerance=self.tolerance
        )
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"{CODEC_NAME} output size depends on the data")
