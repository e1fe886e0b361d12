"""Compression ratio at an equal absolute tolerance: layerquantizer1 against SZ3.

The codecs, each given the same absolute error bound ``X``:

- ``layerquantizer1``: ``LayerQuantizer(tolerance=X)``, the field as one chunk;
- ``sz3 2-D``: SZ3 (``pysz``) in absolute-error mode on each 2-D layer (what layerquantizer1
  sees), the chunk being the layers' streams each after its length (uint64);
- ``sz3 3-D``: SZ3 in absolute-error mode on the whole field at once, as ``(layers, ny, nx)``
  (its 3-D predictors see across levels and times, which layerquantizer1 does not).

The tolerances: those matching nbits 8, 12 and 16 over each field's global range,
``(max - min) / (2**nbits - 1) / 2``, and physical ones by variable (0.01 and 0.1 K for
temperature, 1 and 10 m2/s2 for geopotential, 0.01 and 0.1 m/s for wind, 1e-7 and 1e-6 kg/kg
for specific humidity). The fields: every one of ``../shared/data/real_fields.npz`` and the
37 x 721 x 1440 synthetic fields of :mod:`layerquantizer.synthetic`.

For each case the table gives the ratios, layerquantizer1's nbits (the most any layer needed)
and the largest error of each codec over ``X`` (layerquantizer1 promises ``X`` plus one
float32 ulp, SZ3 ``X``). Ratios are exact; no timing.

Needs the ``bench`` extra (``pip install -e ".[bench]"``: pysz, pcodec).

Example
-------
    python benchmarks/bench_tolerance.py --variables temperature geopotential
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from pysz import sz, szConfig, szErrorBoundMode  # noqa: E402

from layerquantizer import LayerQuantizer  # noqa: E402
from layerquantizer.synthetic import WB2_LEVELS, era5_like_field  # noqa: E402

REAL_FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_fields.npz"
NBITS = (8, 12, 16)
SYNTHETIC = ("temperature", "geopotential", "u_component_of_wind", "specific_humidity")
# Physical tolerances by the kind of field, in its units.
PHYSICAL = {
    "temperature": (0.01, 0.1),  # K
    "geopotential": (1.0, 10.0),  # m2/s2
    "wind": (0.01, 0.1),  # m/s
    "humidity": (1e-7, 1e-6),  # kg/kg
}
KINDS = {
    "eraint_z": "geopotential",
    "eraint_u": "wind",
    "eraint_v": "wind",
    "era5ens_z": "geopotential",
    "era5ens_t": "temperature",
    "era5uk_t2m": "temperature",
    "temperature": "temperature",
    "geopotential": "geopotential",
    "u_component_of_wind": "wind",
    "specific_humidity": "humidity",
}


def sz3_config(tolerance: float) -> szConfig:
    config = szConfig()
    config.errorBoundMode = szErrorBoundMode.ABS
    config.absErrorBound = float(tolerance)
    config.openmp = False
    return config


def sz3_layers(field: np.ndarray, tolerance: float) -> tuple[int, np.ndarray]:
    """Bytes and decoded field of SZ3 on each 2-D layer."""
    config = sz3_config(tolerance)
    layers = field.reshape(-1, *field.shape[-2:])
    decoded = np.empty_like(layers)
    size = 0
    for index, layer in enumerate(layers):
        stream, _ = sz.compress(np.ascontiguousarray(layer), config)
        size += 8 + stream.size  # the length a container needs to find the stream again
        decoded[index], _ = sz.decompress(stream, np.float32, layer.shape)
    return size, decoded.reshape(field.shape)


def sz3_whole(field: np.ndarray, tolerance: float) -> tuple[int, np.ndarray]:
    """Bytes and decoded field of SZ3 on the whole field, as 3-D (SZ3 takes up to 4-D)."""
    cube = np.ascontiguousarray(field).reshape(-1, *field.shape[-2:])
    stream, _ = sz.compress(cube, sz3_config(tolerance))
    decoded, _ = sz.decompress(stream, np.float32, cube.shape)
    return stream.size, decoded.reshape(field.shape)


def layerquantizer(field: np.ndarray, tolerance: float) -> tuple[int, np.ndarray, int]:
    """Bytes, decoded field and nbits of layerquantizer1."""
    codec = LayerQuantizer(tolerance=tolerance)
    encoded = codec.encode(field)
    return len(encoded), codec.decode(encoded), encoded[7]  # byte 7: the chunk's nbits


def worst_error_share(field: np.ndarray, decoded: np.ndarray, tolerance: float) -> float:
    """Largest |error| / tolerance over the finite values, a layer at a time (memory)."""
    worst = 0.0
    layers = field.reshape(-1, *field.shape[-2:])
    for x, y in zip(layers, decoded.reshape(layers.shape), strict=True):
        finite = np.isfinite(x)
        error = np.abs(x[finite].astype(np.float64) - y[finite])
        worst = max(worst, float(error.max(initial=0.0)) / tolerance)
    return worst


def tolerances(name: str, field: np.ndarray) -> list[tuple[str, float]]:
    finite = field[np.isfinite(field)].astype(np.float64)
    span = float(finite.max() - finite.min())
    chosen = [(f"nbits {nbits}", span / ((1 << nbits) - 1) / 2) for nbits in NBITS]
    chosen += [(f"{x:g}", x) for x in PHYSICAL[KINDS[name]]]
    return chosen


def table(fields: dict[str, np.ndarray]) -> None:
    print(
        "| field | shape | tolerance | X | layerquantizer1 | nbits | sz3 2-D | sz3 3-D | "
        "lq1 / sz3 2-D | lq1 max err / X | sz3 2-D max err / X | sz3 3-D max err / X |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, field in fields.items():
        shape = "x".join(map(str, field.shape))
        for label, tolerance in tolerances(name, field):
            lq_size, lq_decoded, nbits = layerquantizer(field, tolerance)
            lq_share = worst_error_share(field, lq_decoded, tolerance)
            del lq_decoded
            layers_size, layers_decoded = sz3_layers(field, tolerance)
            layers_share = worst_error_share(field, layers_decoded, tolerance)
            del layers_decoded
            whole_size, whole_decoded = sz3_whole(field, tolerance)
            whole_share = worst_error_share(field, whole_decoded, tolerance)
            del whole_decoded
            print(
                f"| {name} | {shape} | {label} | {tolerance:.3g} | "
                f"{field.nbytes / lq_size:.2f} | {nbits} | {field.nbytes / layers_size:.2f} | "
                f"{field.nbytes / whole_size:.2f} | {layers_size / lq_size:.2f} | "
                f"{lq_share:.3f} | {layers_share:.3f} | {whole_share:.3f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variables",
        nargs="*",
        default=list(SYNTHETIC),
        choices=SYNTHETIC,
        help="synthetic 37x721x1440 fields to include (none: the real fields only)",
    )
    parser.add_argument("--real", default=str(REAL_FIELDS), help="the real_fields.npz file")
    args = parser.parse_args()
    with np.load(args.real) as real:
        fields = {name: np.ascontiguousarray(real[name], np.float32) for name in real.files}
    for variable in args.variables:
        fields[variable] = era5_like_field(variable, levels=WB2_LEVELS, grid=(721, 1440))
    print("### Ratio at equal absolute tolerance X (layerquantizer1: X + ulp)\n")
    table(fields)


if __name__ == "__main__":
    main()
