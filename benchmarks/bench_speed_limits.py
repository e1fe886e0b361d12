"""What bounds the speed of layerquantizer1 at 16 bits, against Blosc-lz4, on one core.

Times, on one ERA5-like temperature chunk, the whole codecs and the stages no change of
the code can avoid while the bytes stay what they are (docs/speed.md):

- zstd at level 1 compressing the residual section exactly as the encoder feeds it, and
  decompressing it;
- the running sum along rows that inverts the Lorenzo predictor (a chain of additions,
  uint32, in place) and the conversion of levels to float32, each over every value;
- a memory copy of the float32 chunk, for scale.

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

import numba  # noqa: E402
import numcodecs  # noqa: E402
import numcodecs.blosc  # noqa: E402
import numpy as np  # noqa: E402
import zstandard  # noqa: E402

from layerquantizer import _format, chunk  # noqa: E402
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
