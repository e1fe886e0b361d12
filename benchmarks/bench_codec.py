"""Ratio and speed of layerquantizer1 against its peers, on one core.

The codecs:

- ``layerquantizer1``, this package;
- ``sz3``: SZ3 (``pysz``) in absolute-error mode, one 2-D layer at a time, each with the bound
  layerquantizer1 promises for it, ``(max - min) / (2**nbits - 1) / 2``;
- ``pcodec``: pcodec 1.x, lossless, default level;
- ``blosc-lz4``: Blosc with lz4 and byte shuffle, the default Zarr v2 compressor, lossless;
- ``layerquantizer0.3b``: the original codec (this package's bit-exact implementation).

Prints three sets of markdown tables:

1. Compression ratio at nbits 8, 12, 16 and 20 on every field of
   ``../shared/data/real_fields.npz`` and on the 37 x 721 x 1440 synthetic fields of
   :mod:`layerquantizer.synthetic` (one ERA5 time step of a pressure-level variable), with the
   largest error of layerquantizer1 and of SZ3 over the bound (layerquantizer1's bound adds one
   float32 ulp; SZ3's is taken as given, without it). Lossless codecs do not depend on nbits.
2. Speed at ``--speed-nbits`` on chunks of 5 x 451 x 900 and 37 x 721 x 1440: encode, decode
   into a reused ``out=``, and decode returning a new array (as Zarr calls a codec), in MiB/s
   of float32, best of ``--repeats`` runs with the codecs interleaved, each relative to
   Blosc-lz4 in the same run.
3. A whole array read through zarr-python from a ``MemoryStore``, Zarr v2 and v3, one chunk
   per time step, relative to Blosc-lz4 (SZ3 has no Zarr codec: left out).

The process is pinned to one core, with Blosc, numba and zarr single-threaded. The machine may
be noisy: ratios are exact, speeds indicative; compare the relative columns.

Needs the ``bench`` extra (``pip install -e ".[bench]"``: pysz, pcodec).

Example
-------
    python benchmarks/bench_codec.py --variables temperature geopotential --repeats 7
    python benchmarks/bench_codec.py --tables speed zarr --speed-nbits 12
"""

from __future__ import annotations

import argparse
import os
import struct
import time
import warnings
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numcodecs  # noqa: E402
import numcodecs.blosc  # noqa: E402
import numpy as np  # noqa: E402
from pcodec import ChunkConfig, standalone  # noqa: E402
from pysz import sz, szConfig, szErrorBoundMode  # noqa: E402

from layerquantizer import LayerQuantizer, LegacyLayerQuantizer, max_abs_error  # noqa: E402
from layerquantizer.synthetic import WB2_LEVELS, era5_like_field  # noqa: E402

MIB = 2**20
REAL_FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_fields.npz"
NBITS = (8, 12, 16, 20)
LOSSLESS = ("pcodec", "blosc-lz4")
# Chunk shapes of the speed tables: 5 levels of a 0.4-degree grid, one full ERA5 time step.
SPEED_SHAPES = ((5, 451, 900), (37, 721, 1440))
# The sets of tables main() prints (--tables).
TABLES = ("ratio", "speed", "zarr")
# Roughly this much data per array read through zarr-python.
ZARR_BYTES = 256 * MIB


def layer_bounds(field: np.ndarray, nbits: int) -> np.ndarray:
    """layerquantizer1's bound, without the ulp, for each 2-D layer of ``field``."""
    layers = field.reshape(-1, *field.shape[-2:])
    bounds = np.empty(len(layers))
    for index, layer in enumerate(layers):
        finite = layer[np.isfinite(layer)].astype(np.float64)
        bounds[index] = max_abs_error(finite.min(), finite.max(), nbits) if finite.size else 0
    return bounds


class NumcodecsCodec:
    """A numcodecs codec as the benchmark calls it."""

    def __init__(self, codec: numcodecs.abc.Codec):
        self.codec = codec

    def encode(self, field: np.ndarray) -> bytes:
        return self.codec.encode(field)

    def decode(self, blob, shape) -> np.ndarray:
        return self.codec.decode(blob)

    def decode_into(self, blob, out: np.ndarray) -> np.ndarray:
        return self.codec.decode(blob, out=out)


class PcodecCodec:
    """pcodec's standalone format, lossless at its default level, on the flattened chunk."""

    def encode(self, field: np.ndarray) -> bytes:
        return standalone.simple_compress(field.reshape(-1), ChunkConfig())

    def decode(self, blob, shape) -> np.ndarray:
        return standalone.simple_decompress(blob).reshape(shape)

    def decode_into(self, blob, out: np.ndarray) -> np.ndarray:
        standalone.simple_decompress_into(blob, out.reshape(-1))
        return out


class SZ3Layers:
    """SZ3 in absolute-error mode on each 2-D layer, with that layer's layerquantizer1 bound.

    A chunk is the layers' SZ3 streams, each after its length (uint64): what a codec would
    have to store to find them again.
    """

    def __init__(self, nbits: int):
        self.nbits = nbits

    def encode(self, field: np.ndarray) -> bytes:
        config = szConfig()
        config.errorBoundMode = szErrorBoundMode.ABS
        config.openmp = False
        parts = []
        layers = field.reshape(-1, *field.shape[-2:])
        for layer, bound in zip(layers, layer_bounds(field, self.nbits), strict=True):
            config.absErrorBound = float(bound)
            stream, _ = sz.compress(np.ascontiguousarray(layer), config)
            parts += [struct.pack("<Q", stream.size), stream.tobytes()]
        return b"".join(parts)

    def decode(self, blob, shape) -> np.ndarray:
        return self.decode_into(blob, np.empty(shape, np.float32))

    def decode_into(self, blob, out: np.ndarray) -> np.ndarray:
        layers = out.reshape(-1, *out.shape[-2:])
        view = memoryview(blob)
        position = 0
        for layer in layers:
            (size,) = struct.unpack_from("<Q", view, position)
            stream = np.frombuffer(view[position + 8 : position + 8 + size], np.uint8)
            layer[...], _ = sz.decompress(stream, np.float32, layer.shape)
            position += 8 + size
        return out


def codecs(nbits: int) -> dict[str, object]:
    return {
        "layerquantizer1": NumcodecsCodec(LayerQuantizer(nbits=nbits)),
        "sz3": SZ3Layers(nbits),
        "pcodec": PcodecCodec(),
        "blosc-lz4": NumcodecsCodec(numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE)),
        "layerquantizer0.3b": NumcodecsCodec(LegacyLayerQuantizer(nbits=nbits)),
    }


def worst_error_share(field: np.ndarray, decoded: np.ndarray, nbits: int, ulp: bool) -> float:
    """Largest |error| / bound over all finite values, per 2-D layer; the bound with one
    float32 ulp added when ``ulp``. A layer with a bound of 0 counts any error as infinite."""
    layers = field.reshape(-1, *field.shape[-2:])
    result = decoded.reshape(layers.shape)
    worst = 0.0
    for x, y, bound in zip(layers, result, layer_bounds(field, nbits), strict=True):
        finite = np.isfinite(x)
        error = np.abs(x[finite].astype(np.float64) - y[finite])
        slack = np.spacing(np.abs(x[finite])).astype(np.float64) if ulp else 0.0
        allowed = bound + slack
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(error == 0, 0.0, error / allowed)
        worst = max(worst, float(share.max(initial=0.0)))
    return worst


def ratio_tables(fields: dict[str, np.ndarray]) -> None:
    lossless = {}
    for name, field in fields.items():
        chosen = codecs(16)
        lossless[name] = {
            label: field.nbytes / len(chosen[label].encode(field)) for label in LOSSLESS
        }
    for nbits in NBITS:
        print(f"\n### Compression ratio, nbits={nbits}\n")
        print("| field | shape | layerquantizer1 | sz3 | pcodec | blosc-lz4 | "
              "layerquantizer0.3b | lq1 max error / bound | sz3 max error / bound |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, field in fields.items():
            chosen = codecs(nbits)
            ratios = dict(lossless[name])
            shares = {}
            for label in ("layerquantizer1", "sz3", "layerquantizer0.3b"):
                blob = chosen[label].encode(field)
                ratios[label] = field.nbytes / len(blob)
                if label != "layerquantizer0.3b":
                    decoded = chosen[label].decode(blob, field.shape)
                    shares[label] = worst_error_share(
                        field, decoded, nbits, ulp=label == "layerquantizer1"
                    )
            flag = " (over!)" if shares["sz3"] > 1 else ""
            print(f"| {name} | {'x'.join(map(str, field.shape))} | "
                  f"{ratios['layerquantizer1']:.2f} | {ratios['sz3']:.2f} | "
                  f"{ratios['pcodec']:.2f} | {ratios['blosc-lz4']:.2f} | "
                  f"{ratios['layerquantizer0.3b']:.2f} | {shares['layerquantizer1']:.4f} | "
                  f"{shares['sz3']:.4f}{flag} |")  # fmt: skip


# time.perf_counter, or time.process_time with --clock cpu: the process's CPU time, which
# on a shared machine leaves out the time other processes take the core (the process is
# pinned to one core and every codec runs single-threaded).
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def timed(run) -> float:
    start = clock()
    run()
    return clock() - start


def speed_table(name: str, field: np.ndarray, nbits: int, repeats: int) -> None:
    shape = "x".join(map(str, field.shape))
    print(f"\n### Speed on one core, {name} {shape}, nbits={nbits} (MiB/s of float32; "
          "x = relative to blosc-lz4 in the same run)\n")  # fmt: skip
    print("| codec | ratio | encode | x | decode into out= | x | decode, new array | x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    chosen = codecs(nbits)
    encoded = {label: codec.encode(field) for label, codec in chosen.items()}
    out = np.empty_like(field)
    for label, codec in chosen.items():  # compile, warm up
        codec.decode(encoded[label], field.shape)
        codec.decode_into(encoded[label], out)
    best = {label: [np.inf] * 3 for label in chosen}
    for _ in range(repeats):  # interleaved, so drifting load hits every codec alike
        for label, codec in chosen.items():
            blob, times = encoded[label], best[label]
            times[0] = min(times[0], timed(lambda c=codec: c.encode(field)))
            times[1] = min(times[1], timed(lambda c=codec, b=blob: c.decode_into(b, out)))
            times[2] = min(times[2], timed(lambda c=codec, b=blob: c.decode(b, field.shape)))
    size = field.nbytes / MIB
    reference = [size / t for t in best["blosc-lz4"]]
    for label in chosen:
        rates = [size / t for t in best[label]]
        pairs = zip(rates, reference, strict=True)
        cells = " | ".join(f"{rate:.0f} | {rate / ref:.2f}" for rate, ref in pairs)
        print(f"| {label} | {field.nbytes / len(encoded[label]):.2f} | {cells} |")


def zarr_codecs(zarr_format: int, nbits: int) -> dict[str, dict]:
    """The create_array arguments of each codec that Zarr can store."""
    from numcodecs.pcodec import PCodec as PCodecV2
    from zarr.codecs import BloscCodec, BytesCodec
    from zarr.codecs.numcodecs import PCodec

    from layerquantizer.zarr3 import LayerQuantizerCodec

    lz4 = numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE)
    if zarr_format == 2:
        return {
            "layerquantizer1": {"compressors": [LayerQuantizer(nbits=nbits)]},
            "pcodec": {"compressors": [PCodecV2()]},
            "blosc-lz4": {"compressors": [lz4]},
            "layerquantizer0.3b": {"compressors": [LegacyLayerQuantizer(nbits=nbits)]},
        }
    return {
        "layerquantizer1": {"serializer": LayerQuantizerCodec(nbits=nbits), "compressors": None},
        "pcodec": {"serializer": PCodec(), "compressors": None},
        "blosc-lz4": {
            "serializer": BytesCodec(),
            "compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
        },
    }


def zarr_table(name: str, chunk_shape: tuple[int, ...], nbits: int, repeats: int) -> None:
    """Whole-array write and read through zarr-python, one chunk per time step."""
    import zarr

    times = max(2, ZARR_BYTES // (4 * int(np.prod(chunk_shape))))
    levels = [float(p) for p in WB2_LEVELS[: chunk_shape[0]]]
    data = np.stack([era5_like_field(name, levels, chunk_shape[1:], seed=t) for t in range(times)])
    print(f"\n### Through zarr-python, one core, {name} {'x'.join(map(str, data.shape))}, "
          f"chunks of one time step, nbits={nbits} (MiB/s; x = relative to "
          "blosc-lz4)\n")  # fmt: skip
    print("| zarr format | codec | ratio | write | x | read | x |")
    print("|---|---|---:|---:|---:|---:|---:|")
    size = data.nbytes / MIB
    for zarr_format in (2, 3):
        arrays, rows = {}, {}
        for label, arguments in zarr_codecs(zarr_format, nbits).items():
            store = zarr.storage.MemoryStore()
            array = zarr.create_array(store, shape=data.shape, chunks=(1, *chunk_shape),
                                      dtype="float32", zarr_format=zarr_format,
                                      fill_value=np.nan, **arguments)  # fmt: skip
            array[:] = data  # warm up: the timed write below is the second
            write = timed(lambda a=array: a.__setitem__(slice(None), data))
            stored = sum(len(value) for value in store._store_dict.values())
            arrays[label] = array
            rows[label] = [data.nbytes / stored, write, np.inf]
        for _ in range(repeats):
            for label, array in arrays.items():
                rows[label][2] = min(rows[label][2], timed(lambda a=array: a[:]))
        lz4 = rows["blosc-lz4"]
        for label, (ratio, write, read) in rows.items():
            print(f"| v{zarr_format} | {label} | {ratio:.2f} | {size / write:.0f} | "
                  f"{lz4[1] / write:.2f} | {size / read:.0f} | {lz4[2] / read:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variables", nargs="+", default=["temperature", "geopotential",
                        "u_component_of_wind", "specific_humidity"])  # fmt: skip
    parser.add_argument("--speed-variable", default="temperature")
    parser.add_argument("--speed-nbits", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real-fields", type=Path, default=REAL_FIELDS)
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES),
                        help="which sets of tables to print (default: all)")  # fmt: skip
    parser.add_argument("--clock", choices=CLOCK, default="wall",
                        help="wall time, or CPU time of the process (steadier when the "
                        "machine is shared)")  # fmt: skip
    args = parser.parse_args()
    global clock
    clock = CLOCK[args.clock]

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    numcodecs.blosc.set_nthreads(1)
    numba.set_num_threads(1)
    import zarr

    zarr.config.set({"threading.max_workers": 1})
    # pcodec and the original codec in Zarr v3 are numcodecs codecs outside the v3 spec.
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")

    if "ratio" in args.tables:
        with np.load(args.real_fields) as data:
            real = dict(data)
        large = {f"{v} 37x721x1440": era5_like_field(v) for v in args.variables}
        ratio_tables(real | large)
    for shape in SPEED_SHAPES if "speed" in args.tables else ():
        levels = [float(p) for p in WB2_LEVELS[: shape[0]]]
        field = era5_like_field(args.speed_variable, levels, shape[1:])
        speed_table(args.speed_variable, field, args.speed_nbits, args.repeats)
    for shape in SPEED_SHAPES if "zarr" in args.tables else ():
        zarr_table(args.speed_variable, shape, args.speed_nbits, args.repeats)


if __name__ == "__main__":
    main()
