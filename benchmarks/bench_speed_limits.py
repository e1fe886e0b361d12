"""What bounds the speed of layerquantizer1 at 16 bits, against Blosc-lz4, on one core.

Times, on one ERA5-like temperature chunk, the whole codecs and the stages no change of
the code can avoid while the bytes stay what they are (docs/speed.md):

- zstd at level 1 compressing the residual section exactly as the encoder feeds it, and
  decompressing it;
- the running sum along rows that inverts the Lorenzo predictor (a chain of additions,
  uint32, in place) and the conversion of levels to float32, each over every value;
- a memory copy of the float32 chunk, for scale;
- the encoder's and the decoder's own kernels on the same chunk (min/max, grid detection,
  encode_rows, pack_block, the CRC; decode_rows on blocks already decompressed), to show
  what the code adds to the stages above.

Thread CPU time (steady on a shared machine), best of ``--repeats``, interleaved; each
relative to Blosc-lz4's encode and decode (into ``out=``) of the same chunk.

Example
-------
    taskset -c 1 python benchmarks/bench_speed_limits.py --shape 5 451 900
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import crc32c  # noqa: E402
import numba  # noqa: E402
import numcodecs  # noqa: E402
import numcodecs.blosc  # noqa: E402
import numpy as np  # noqa: E402
import zstandard  # noqa: E402

from layerquantizer import _format, _grid, _kernels, chunk  # noqa: E402
from layerquantizer.synthetic import WB2_LEVELS, era5_like_field  # noqa: E402

MIB = 2**20


@numba.njit(nogil=True)
def running_sums(rows):
    """The running sum along each row, in place (the inverse Lorenzo's chain)."""
    for i in range(rows.shape[0]):
        row = rows[i]
        running = np.uint32(0)
        for j in range(row.size):
            running += row[j]
            row[j] = running


@numba.njit(nogil=True)
def to_values(levels, out, offset, step):
    """float32(offset + level * step) for every level, as the decoder computes them."""
    for i in range(levels.shape[0]):
        source, target = levels[i], out[i]
        for j in range(source.size):
            target[j] = np.float32(offset + np.float64(source[j]) * step)


def compress_blocks(section: bytes) -> list[bytes]:
    """zstd level 1 on the section in blocks of chunk.BLOCK_BYTES, as the encoder streams it."""
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    view = memoryview(section)
    parts = [stream.compress(view[i : i + chunk.BLOCK_BYTES])
             for i in range(0, len(view), chunk.BLOCK_BYTES)]  # fmt: skip
    return [*parts, stream.flush()]


def decompress_into(frame: bytes, target: np.ndarray) -> None:
    """The section back into a reused buffer, through a stream reader, as the decoder
    reads it (a one-shot decompression would time the allocation of its result too)."""
    reader = zstandard.ZstdDecompressor().stream_reader(frame, read_across_frames=False)
    view = memoryview(target)
    for start in range(0, len(view), chunk.BLOCK_BYTES):
        piece = view[start : start + chunk.BLOCK_BYTES]
        filled = 0
        while filled < len(piece):
            filled += reader.readinto(piece[filled:])


class Kernels:
    """The codec's kernels run over the chunk block by block, as encode and decode run
    them, without zstd and the Python framing."""

    def __init__(self, field: np.ndarray, blob: bytes):
        nlayers, ny, nx = _format.layer_shape(field.shape)
        self.ny = ny
        self.layers = field.reshape(nlayers, ny * nx)
        self.bits = self.layers.view(np.int32)
        self.rows = field.reshape(nlayers * ny, nx)
        self.mins, self.maxs, _ = _kernels.finite_ranges(self.bits)
        self.steps = (self.maxs - self.mins) / (2**16 - 1)
        self.block_rows = chunk._block_rows(nx, 16)
        size = min(self.block_rows, len(self.rows)) * nx
        self.packed = np.empty(1 + 2 * size, np.uint8)
        self.positions = np.empty(size, np.int64)
        self.upper = np.empty(2 * size, np.uint8)
        self.bitmap = np.zeros((field.size + 7) // 8, np.uint8)
        self.blob = blob
        # The blocks as the decoder's reader hands them over (decompressed, escapes found).
        parsed = _format.parse(memoryview(blob))
        self.header = parsed.header
        reader = chunk._BlockReader(parsed, len(self.rows), nx)
        self.blocks = []
        for first in range(0, len(self.rows), self.header.block_rows):
            count = min(self.header.block_rows, len(self.rows) - first) * nx
            planes, escaped, positions, uppers = reader.read(first, count)
            self.blocks.append((first, planes.copy(), escaped, positions.copy(), uppers.copy()))
        self.out = np.empty_like(self.rows)

    def ranges(self):
        _kernels.finite_ranges(self.bits)

    def grids(self):
        _grid.coarse_grids(self.layers, self.mins, self.maxs, self.steps)

    def encode_rows(self, pack: bool = False):
        prev = np.zeros(self.rows.shape[1] + 1, np.uint32)
        counts = np.zeros(len(self.mins), np.int64)
        for first in range(0, len(self.rows), self.block_rows):
            count = min(self.block_rows, len(self.rows) - first) * self.rows.shape[1]
            block = self.packed[: 1 + 2 * count]
            planes = block[1:].reshape(2, count)
            _kernels.encode_rows(self.rows, first, self.ny, self.mins, self.steps,
                                 self.steps / 2, 16, planes, self.bitmap, prev, counts)  # fmt: skip
            if pack:
                _kernels.pack_block(block, 2, self.positions, self.upper)

    def crc(self):
        crc32c.crc32c(self.blob)

    def decode_rows(self):
        prev = np.zeros(self.rows.shape[1], np.uint32)
        header = self.header
        for first, planes, escaped, positions, uppers in self.blocks:
            _kernels.decode_rows(
                planes, first, self.ny, header.nbits, header.offsets, header.steps, self.out,
                prev, escaped, positions, uppers,
            )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[5, 451, 900])
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()
    numcodecs.blosc.set_nthreads(1)
    shape = tuple(args.shape)
    field = era5_like_field("temperature", [float(p) for p in WB2_LEVELS[: shape[0]]], shape[1:])
    blob = chunk.encode(field, 16, 1)
    frame = bytes(_format.parse(memoryview(blob)).residuals)
    section = zstandard.ZstdDecompressor().decompressobj().decompress(frame)
    scratch = np.empty(len(section), np.uint8)
    lz4 = numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE)
    lz4_blob = lz4.encode(field)
    out = np.empty_like(field)
    rows = out.reshape(-1, shape[-1])
    levels = np.zeros(rows.shape, np.uint32)
    running_sums(levels)  # compile
    to_values(levels, rows, 250.0, 1e-3)
    kernels = Kernels(field, blob)
    stages = {
        "blosc-lz4 encode": lambda: lz4.encode(field),
        "blosc-lz4 decode into out=": lambda: lz4.decode(lz4_blob, out=out),
        "layerquantizer1 encode": lambda: chunk.encode(field, 16, 1),
        "layerquantizer1 decode into out=": lambda: chunk.decode(blob, out=out),
        f"zstd -1 of the residual section ({len(section) / MIB:.2f} MiB)": lambda: compress_blocks(
            section
        ),
        "zstd decompression of it": lambda: decompress_into(frame, scratch),
        "running sums along rows (uint32, in place)": lambda: running_sums(levels),
        "levels to float32": lambda: to_values(levels, rows, 250.0, 1e-3),
        "memory copy of the chunk": lambda: np.copyto(out, field),
        "encoder: per-layer min/max (finite_ranges)": kernels.ranges,
        "encoder: grid detection (coarse_grids)": kernels.grids,
        "encoder: quantize, residuals, planes (encode_rows)": kernels.encode_rows,
        "encoder: the same and mode 1 (encode_rows, pack_block)": lambda: kernels.encode_rows(
            pack=True
        ),
        "encoder and decoder: CRC-32C of the chunk": kernels.crc,
        "decoder: decode_rows of the decompressed blocks": kernels.decode_rows,
    }
    best = dict.fromkeys(stages, np.inf)
    for _ in range(args.repeats):
        for label, run in stages.items():
            start = time.thread_time()
            run()
            best[label] = min(best[label], time.thread_time() - start)
    size = field.nbytes / MIB
    encode, decode = best["blosc-lz4 encode"], best["blosc-lz4 decode into out="]
    print(f"\n### {'x'.join(map(str, shape))} float32 ({size:.1f} MiB), nbits=16, one core\n")
    print("| stage | ms | MiB/s of float32 | / lz4 encode | / lz4 decode |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds in best.items():
        print(f"| {label} | {seconds * 1e3:.2f} | {size / seconds:.0f} | "
              f"{seconds / encode:.2f} | {seconds / decode:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
