"""How many bits a variable needs (:func:`advise`), from a few sampled chunks.

For each variable, :func:`advise` reads a few source chunks chosen at random (seeded, so
that a report can be reproduced) and measures:

- the packing precision the data already has: the grid step its values sit on (GRIB and
  netCDF packing leave one; :func:`layerquantizer._grid.coarse_grids` finds it) and that
  step in bits of each layer's range, so that "keep what the source had" is a setting;
- the ratio and the max error (absolute, in the variable's units, and over each layer's
  range) of the codec at several ``nbits`` and tolerances, by encoding the sampled chunks;
- the real information content of Klöwer et al. (2021), "Compressing atmospheric data into
  its real information content", Nature Computational Science 1, 713-724
  (doi:10.1038/s43588-021-00156-2): the mutual information of each bit of a float32 with
  the same bit of its neighbour along the last (longitude) axis, bits below the 99 %
  significance threshold of the paper set to zero, and the mantissa bits that keep 99 % of
  the total (as xbitinfo's ``get_bitinformation`` and ``get_keepbits`` compute them);
- a recommendation: the ``nbits`` whose error is within that of rounding to the
  information's mantissa bits, or the source's own grid when that is coarser.

The information is computed here in NumPy rather than with xbitinfo (0.0.7): its default
implementation calls Julia (BitInformation.jl), its Python one has no significance
threshold (``set_zero_insignificant`` raises NotImplementedError), and it pins
``numcodecs<0.16.4`` and ``numpy<2.4``. ``tests/test_advise.py`` checks this code against
the numbers its Python implementation gives on a real field.

Example
-------
>>> import tempfile
>>> from layerquantizer import dataset
>>> path = tempfile.mkdtemp() + "/sample.zarr"
>>> _ = dataset.write_sample(path, levels=3, grid=(37, 72), times=2)
>>> report = dataset.advise(path, variables=["temperature"], sample=1)
>>> advice = report.variables["temperature"]
>>> 1 <= advice.recommendation.nbits <= 24
True
>>> sorted(report.to_config()["variables"])
['temperature']
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerquantizer.dataset._errors import RequestError, SourceError
from layerquantizer.dataset._plan import grid_dims
from layerquantizer.dataset._source_grid import (
    _grid_step,
    _layer_grids,
    _layer_ranges,
    _read_block,
    _sample_chunks,
    _source_chunks,
)
from layerquantizer.dataset._stores import open_dataset

#: The bit counts :func:`advise` measures unless told otherwise.
DEFAULT_TRIAL_NBITS = (8, 10, 12, 14, 16, 20)
#: Share of the real information the recommendation keeps (Klöwer et al. 2021).
INFORMATION_LEVEL = 0.99
#: Confidence of the significance threshold on the mutual information of a bit pair.
CONFIDENCE = 0.99
# float32: 1 sign bit and 8 exponent bits before the 23 mantissa bits.
_NON_MANTISSA_BITS = 9
# Enough neighbouring pairs per chunk for the information; more only costs time.
_MAX_PAIRS = 1 << 22
# Values the codec encodes per setting (32 MiB): every n-th layer of larger samples.
_MAX_TRIAL_VALUES = 1 << 23


# -- real information content ---------------------------------------------------------------


def _signed_exponent(values: np.ndarray) -> np.ndarray:
    """float32 bits with the biased exponent replaced by sign and magnitude (as xbitinfo
    and BitInformation.jl do), so that the exponent bits of values near 1 do not flip
    all together between 0.99 and 1.01."""
    bits = values.view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.int64) - 127
    sign_and_mantissa = bits & np.uint32(0x807F_FFFF)
    signed = np.where(exponent < 0, np.uint32(0x4000_0000), np.uint32(0))
    return sign_and_mantissa | signed | (np.abs(exponent).astype(np.uint32) << np.uint32(23))


def bit_pair_counts(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Joint counts of each float32 bit (most significant first) of every value and its
    neighbour along ``axis``: int64 ``[32, 2, 2]`` (bit, this value's bit, the next one's).

    Pairs with a NaN or infinity are left out. Counts of several arrays add up.
    """
    array = np.moveaxis(np.asarray(values, dtype=np.float32), axis, -1)
    first, second = array[..., :-1].ravel(), array[..., 1:].ravel()
    finite = np.isfinite(first) & np.isfinite(second)
    first, second = _signed_exponent(first[finite]), _signed_exponent(second[finite])
    counts = np.zeros((32, 2, 2), np.int64)
    for bit in range(32):
        shift = np.uint32(31 - bit)
        pair = ((first >> shift) & 1) * 2 + ((second >> shift) & 1)
        counts[bit] = np.bincount(pair, minlength=4).reshape(2, 2)
    return counts


def _free_entropy(pairs: int, confidence: float) -> float:
    """Information below which a bit pair's mutual information is not significant: one
    minus the entropy of the probability a fair coin reaches in ``pairs`` tosses with the
    given ``confidence`` (Klöwer et al. 2021, Methods; BitInformation.jl's
    ``binom_free_entropy``)."""
    z = statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = min(1.0, 0.5 + z / (2 * math.sqrt(pairs)))
    if p >= 1.0:
        return 1.0
    return 1.0 + p * math.log2(p) + (1 - p) * math.log2(1 - p)


def bitinformation(counts: np.ndarray, confidence: float | None = CONFIDENCE) -> np.ndarray:
    """Real information per bit, in bits (float64 ``[32]``), from :func:`bit_pair_counts`.

    The mutual information between a bit and the same bit of the neighbouring value; with
    ``confidence``, values not above the significance threshold of Klöwer et al. (2021) are
    set to zero (``None`` keeps them, as xbitinfo's Python implementation does).

    Examples
    --------
    A bit that (nearly) always equals its neighbour's and is 1 half the time carries (nearly)
    one bit; independent random bits carry none that is significant:

    >>> rng = np.random.default_rng(0)
    >>> steps = np.repeat(rng.integers(0, 2, 100), 100).astype(np.float32)  # runs of 0 or 1
    >>> noise = rng.random(10000).astype(np.float32)
    >>> info = bitinformation(bit_pair_counts(1 + steps / 2 + noise * 2**-10))
    >>> round(float(info[9]), 1), float(info[31])  # first mantissa bit, last one
    (1.0, 0.0)
    """
    counts = np.asarray(counts, dtype=np.float64)
    pairs = counts[0].sum()
    if pairs == 0:
        return np.zeros(counts.shape[0])
    p = counts / pairs
    p_first = p.sum(axis=2, keepdims=True)
    p_second = p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / (p_first * p_second)), 0.0)
    info = np.maximum(terms.sum(axis=(1, 2)), 0.0)
    if confidence is not None:
        info[info <= _free_entropy(int(pairs), confidence)] = 0.0
    return info


def keepbits(info: np.ndarray, level: float = INFORMATION_LEVEL) -> int:
    """The float32 mantissa bits that keep ``level`` of the real information ``info``.

    As xbitinfo's ``get_keepbits``: the bits at or below 1.5 times the largest
    information of the last four bits are rounding noise and left out; the rest is summed
    from the sign bit on, and the mantissa bits kept are those up to where the sum first
    exceeds ``level`` of the total (0..23).

    Examples
    --------
    >>> info = np.zeros(32)
    >>> info[:12] = 1.0  # sign, exponent and three mantissa bits carry it all
    >>> keepbits(info)
    3
    """
    info = np.asarray(info, dtype=np.float64)
    cleaned = np.where(info > 1.5 * info[-4:].max(), info, 0.0)
    total = cleaned.sum()
    if total <= 0:
        return 0
    cdf = np.cumsum(cleaned) / total
    kept = int(np.argmax(cdf > level)) + 1 - _NON_MANTISSA_BITS
    return min(max(kept, 0), 23)


def bitround_error(magnitude: float, mantissa_bits: int) -> float:
    """The largest error of rounding float32 values of ``magnitude`` to
    ``mantissa_bits`` mantissa bits: half their last kept bit.

    >>> bitround_error(300.0, 7)  # 300 = 1.17 * 2**8: the last kept bit is 2**1
    1.0
    """
    if magnitude <= 0 or not math.isfinite(magnitude):
        return 0.0
    exponent = math.frexp(magnitude)[1] - 1  # magnitude = m * 2**exponent, 1 <= m < 2
    return math.ldexp(1.0, exponent - mantissa_bits - 1)


# -- the report -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Trial:
    """The codec at one setting on the sampled chunks: ``mode`` ``"nbits"`` or
    ``"tolerance"``, the stored ratio, and the max error, absolute (the variable's units)
    and over each layer's max - min (full scale)."""

    mode: str
    value: float
    ratio: float
    max_abs_error: float
    max_fs_error: float

    @property
    def label(self) -> str:
        return f"nbits={self.value:g}" if self.mode == "nbits" else f"tolerance={self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "value": int(self.value) if self.mode == "nbits" else self.value,
            "ratio": self.ratio,
            "max_abs_error": self.max_abs_error,
            "max_fs_error": self.max_fs_error,
        }


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The setting advised: always ``nbits``; when the source's own grid decides it, its
    ``source_step`` and ``tolerance`` half of it (``precision: source``: every value comes
    back on the grid). ``trial`` is its measurement on the sample."""

    nbits: int
    tolerance: float | None
    reason: str
    trial: Trial
    source_step: float | None = None

    def setting(self) -> dict[str, Any]:
        """The variable's entry of a config: ``{"precision": "source"}`` where the source's
        grid decides, ``{"tolerance": X}`` or ``{"nbits": N}``."""
        if self.source_step is not None:
            return {"precision": "source"}
        if self.tolerance is not None:
            return {"tolerance": self.tolerance}
        return {"nbits": self.nbits}

    def to_dict(self) -> dict[str, Any]:
        return {
            "nbits": self.nbits,
            "precision": "source" if self.source_step is not None else None,
            "tolerance": self.tolerance,
            "reason": self.reason,
            "measured": self.trial.to_dict(),
        }


@dataclasses.dataclass
class VariableAdvice:
    """What :func:`advise` found for one variable (see the module docstring)."""

    name: str
    units: str | None
    dtype: str
    chunks: list[tuple[int, ...]]
    values: int
    measured_values: int
    layers: int
    layers_on_grid: int
    source_step: float | None
    source_bits: int | None
    information: np.ndarray
    keepbits: int
    information_error: float
    information_nbits: int
    trials: list[Trial]
    recommendation: Recommendation

    def to_dict(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "dtype": self.dtype,
            "sampled_chunks": [list(index) for index in self.chunks],
            "sampled_values": self.values,
            "measured_values": self.measured_values,
            "source_precision": {
                "layers": self.layers,
                "layers_on_grid": self.layers_on_grid,
                "step": self.source_step,
                "bits": self.source_bits,
            },
            "information": {
                "bits_per_bit": [round(float(v), 6) for v in self.information],
                "total_bits": float(self.information.sum()),
                "keepbits": self.keepbits,
                "level": INFORMATION_LEVEL,
                "max_abs_error": self.information_error,
                "nbits": self.information_nbits,
            },
            "trials": [trial.to_dict() for trial in self.trials],
            "recommendation": self.recommendation.to_dict(),
        }


@dataclasses.dataclass
class AdviceReport:
    """The result of :func:`advise`: per variable a :class:`VariableAdvice`."""

    src: str
    seed: int
    sample: int
    variables: dict[str, VariableAdvice]
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "seed": self.seed,
            "sample": self.sample,
            "variables": {name: advice.to_dict() for name, advice in self.variables.items()},
            "skipped": self.skipped,
        }

    def to_config(self, base: Mapping | None = None) -> dict[str, Any]:
        """A config document (``lq compress --config``) quantizing every variable with its
        recommendation; the other keys of ``base`` (a parsed config document) are kept.

        Where the source's packing grid decides, ``precision: source`` (lq compress finds
        the grid again on its own sample); otherwise the ``nbits`` advised.
        """
        from layerquantizer import config

        document = dict(base or {})
        document.setdefault(
            "description",
            f"lq advise {self.src}: {self.sample} sampled chunks per variable (seed {self.seed})",
        )
        variables = dict(document.get("variables") or {})
        for name, advice in self.variables.items():
            variables[name] = advice.recommendation.setting()
        document["variables"] = variables
        config.parse_config(document, source="lq advise")  # what compress will accept
        return document

    def write_config(self, path: str | Path, base: Mapping | None = None) -> None:
        """Write :meth:`to_config` as YAML to ``path``, with a header saying where it came
        from."""
        import yaml

        document = self.to_config(base)
        header = [
            f"# Written by lq advise from {self.src}",
            f"# ({self.sample} sampled chunks per variable, seed {self.seed}). Per variable:",
        ]
        for name, advice in self.variables.items():
            header.append(f"#   {name}: {advice.recommendation.reason}")
        text = "\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False)
        Path(path).write_text(text)


# -- measuring --------------------------------------------------------------------------------


def _measure(blocks: list[np.ndarray], source_bytes: int, **setting) -> Trial:
    from layerquantizer import chunk

    stored = 0
    max_abs = max_fs = 0.0
    for block in blocks:
        encoded = chunk.encode(block, level=1, **setting)
        stored += len(encoded)
        decoded = chunk.decode(encoded).reshape(block.shape)
        layers = block.reshape(-1, block.shape[-2] * block.shape[-1]).astype(np.float64)
        back = decoded.reshape(layers.shape).astype(np.float64)
        both = np.isfinite(layers) & np.isfinite(back)
        errors = np.where(both, np.abs(layers - back), 0.0).max(axis=1, initial=0.0)
        mins, maxs = _layer_ranges(layers)
        spans = np.where(maxs > mins, maxs - mins, np.inf)
        max_abs = max(max_abs, float(errors.max(initial=0.0)))
        max_fs = max(max_fs, float((errors / spans).max(initial=0.0)))
    mode, value = ("nbits", setting["nbits"])
    if setting["nbits"] is None:
        mode, value = "tolerance", setting["tolerance"]
    return Trial(mode, float(value), source_bytes / max(stored, 1), max_abs, max_fs)


def _nbits_within(spans: np.ndarray, error: float) -> int:
    """The fewest bits whose bound (half of span / (2**nbits - 1)) is within ``error``
    on every layer; 24 at most."""
    widest = float(spans.max(initial=0.0))
    if widest <= 0:
        return 1
    if error <= 0:
        return 24
    return min(24, max(1, math.ceil(math.log2(widest / (2 * error) + 1))))


def _default_tolerances(spans: np.ndarray, source_step: float | None) -> list[float]:
    """Powers of ten from 1e-2 to 1e-5 of the typical layer range (what the eye sees to
    what a float32 still holds), and half the source's grid step."""
    typical = float(np.median(spans)) if spans.size else 0.0
    tolerances = []
    if typical > 0:
        top = math.floor(math.log10(typical))
        tolerances = [float(f"{10.0 ** (top - k):.0e}") for k in range(2, 6)]
    if source_step:
        tolerances.append(source_step / 2)  # exact: values on the grid come back exactly
    return sorted(set(tolerances), reverse=True)


def _advise_variable(name, var, sample, rng, trial_nbits, tolerances) -> VariableAdvice:
    chunks = _source_chunks(var)
    picks = _sample_chunks(var.shape, chunks, sample, rng)
    blocks = []
    counts = np.zeros((32, 2, 2), np.int64)
    for index in picks:
        block = _read_block(var, index, chunks)
        blocks.append(block)
        # Along longitude; a strided share of the rows when the chunk is large.
        rows = block.reshape(-1, block.shape[-1])
        step = max(1, rows.size // _MAX_PAIRS)
        counts += bit_pair_counts(rows[::step])
    source_bytes = sum(block.size for block in blocks) * var.dtype.itemsize
    # Per layer of every block (edge chunks are smaller): range and packing grid, any grid
    # coarser than the float32 spacing of the layer's values.
    ranges, grid_steps = [], []
    for block in blocks:
        layers = block.reshape(-1, block.shape[-2] * block.shape[-1])
        low, high, grids = _layer_grids(layers)
        has = np.isfinite(low) & (high > low)
        typical = np.zeros(len(layers))
        for i in np.flatnonzero(has):  # an all-NaN layer has no median (and NumPy warns)
            values = layers[i]
            typical[i] = np.median(np.abs(values[np.isfinite(values)]))
        ranges.append(np.stack([low, high, typical]))
        grid_steps.append(grids)
    mins, maxs, typical = np.concatenate(ranges, axis=1)
    grids = np.concatenate(grid_steps)
    ranged = np.isfinite(mins) & (maxs > mins)
    spans = np.where(ranged, maxs - mins, 0.0)
    largest = np.where(ranged, np.maximum(np.abs(mins), np.abs(maxs)), 0.0)
    on_grid = int(np.isfinite(grids).sum())
    source_step = _grid_step(grids, ranged)
    source_bits = None
    if source_step is not None:
        source_bits = int(math.ceil(math.log2(float((spans[ranged] / grids[ranged]).max()) + 1)))

    info = bitinformation(counts)
    if source_step is not None:
        # Mantissa bits finer than the packing grid hold only the pattern of its rounding
        # to float32 (the "artificial information" of Klöwer et al.), never real information.
        exponent = math.frexp(float(largest.max()))[1] - 1
        for bit in range(1, 24):
            if math.ldexp(1.0, exponent - bit) < source_step:
                info[_NON_MANTISSA_BITS - 1 + bit] = 0.0
    kept = keepbits(info)
    # Rounding to the kept bits errs in proportion to each value's magnitude, nbits the
    # same on a whole layer: match them at the layer's median magnitude, and let the layer
    # with the least room decide.
    layer_errors = np.array([bitround_error(float(v), kept) for v in typical[ranged]])
    info_error = float(layer_errors.min(initial=math.inf)) if ranged.any() else 0.0
    info_nbits = (
        max(_nbits_within(spans[ranged][i : i + 1], e) for i, e in enumerate(layer_errors))
        if ranged.any()
        else 1
    )
    if math.isinf(info_error):
        info_error = 0.0

    # The ratio and error are properties of each layer: a regular share of the layers
    # measures them at a fraction of the time (37 levels x 0.25 degree: a tenth).
    total = sum(block.size for block in blocks)
    every = max(1, math.ceil(total / _MAX_TRIAL_VALUES))
    if every > 1:
        blocks = [
            np.ascontiguousarray(block.reshape(-1, *block.shape[-2:])[::every]) for block in blocks
        ]
        source_bytes = sum(block.size for block in blocks) * var.dtype.itemsize
    trials = [_measure(blocks, source_bytes, nbits=n) for n in trial_nbits]
    if tolerances is None:
        tolerances = _default_tolerances(spans[ranged], source_step)
    trials += [_measure(blocks, source_bytes, nbits=None, tolerance=t) for t in tolerances]

    if source_bits is not None and source_bits <= info_nbits:
        tolerance = source_step / 2
        reason = (
            f"the source's packing grid (step {source_step:.4g}, {source_bits} bits of the "
            f"widest layer) is coarser than its information ({kept} mantissa bits): "
            f"precision: source (tolerance {tolerance:g}) keeps every value on it"
        )
        trial = next(
            (t for t in trials if t.mode == "tolerance" and t.value == tolerance), None
        ) or _measure(blocks, source_bytes, nbits=None, tolerance=tolerance)
        recommendation = Recommendation(
            min(source_bits, 24), tolerance, reason, trial, source_step=source_step
        )
    else:
        units = f" {var.attrs['units']}" if var.attrs.get("units") else ""
        reason = (
            f"{kept} mantissa bits hold {INFORMATION_LEVEL:.0%} of the real information; "
            f"rounding to them errs up to {info_error:.3g}{units} at the median magnitude of "
            f"the tightest layer, and nbits={info_nbits} no more"
        )
        trial = next(
            (t for t in trials if t.mode == "nbits" and t.value == info_nbits), None
        ) or _measure(blocks, source_bytes, nbits=info_nbits)
        recommendation = Recommendation(info_nbits, None, reason, trial)
    return VariableAdvice(
        name=name,
        units=var.attrs.get("units"),
        dtype=str(var.dtype),
        chunks=picks,
        values=int(total),
        measured_values=int(sum(block.size for block in blocks)),
        layers=int(ranged.sum()),
        layers_on_grid=on_grid,
        source_step=source_step,
        source_bits=source_bits,
        information=info,
        keepbits=kept,
        information_error=info_error,
        information_nbits=info_nbits,
        trials=trials,
        recommendation=recommendation,
    )


def advise(
    src: str,
    variables: Sequence[str] | None = None,
    *,
    config: Any = None,
    sample: int = 3,
    seed: int = 0,
    nbits: Sequence[int] = DEFAULT_TRIAL_NBITS,
    tolerances: Sequence[float] | None = None,
    token: Any = None,
) -> AdviceReport:
    """Advise a setting per variable of ``src`` from ``sample`` chunks of each.

    Parameters
    ----------
    src : str
        A Zarr store: a path or URL (``gs://`` read anonymously unless ``token`` says).
    variables : sequence of str, optional
        The variables to advise on; default: those of ``config``, else every float data
        variable with a latitude/longitude grid.
    config : layerquantizer.config.Config, optional
        Its ``variables`` are the default list; those the source lacks are skipped.
    sample : int
        Source chunks read per variable, chosen at random with ``seed``.
    nbits, tolerances : sequences
        The settings measured; default tolerances: powers of ten from 1e-2 to 1e-5 of the
        typical layer range, and half the source's grid step when it has one.
    token : optional
        gcsfs credentials.

    Raises
    ------
    RequestError
        If a variable is not in the source, has no 2-D grid, or ``sample`` is below 1.
    SourceError
        If ``src`` cannot be opened.

    Examples
    --------
    See the module docstring.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise RequestError(f"--sample must be a positive number of chunks, got {sample!r}")
    for value in nbits:
        if not 1 <= int(value) <= 24:
            raise RequestError(f"nbits {value} to measure is not in 1..24")
    if tolerances is not None and any(not t > 0 for t in tolerances):
        raise RequestError(f"tolerances to measure must be positive, got {list(tolerances)}")
    ds = open_dataset(src, token=token)
    skipped: dict[str, str] = {}
    if variables is None and config is not None and config.variables:
        variables = [name for name in config.variables if name in ds.data_vars]
        skipped = {
            name: "not in the source" for name in config.variables if name not in ds.data_vars
        }
    if variables is None:
        dims = grid_dims(ds)
        variables = [
            name
            for name, var in ds.data_vars.items()
            if dims is not None and var.dtype.kind == "f" and var.dims[-2:] == dims
        ]
        if not variables:
            raise SourceError(f"{src}: no float variable on a latitude/longitude grid to advise on")
    missing = [name for name in variables if name not in ds.data_vars]
    if missing:
        raise RequestError(
            f"variable(s) {', '.join(missing)} not in {src}; it has: "
            f"{', '.join(map(str, ds.data_vars))}"
        )
    rng = np.random.default_rng(seed)
    results = {}
    for name in variables:
        var = ds[name]
        if var.ndim < 2 or var.dtype.kind != "f":
            raise RequestError(
                f"{name} is {var.dtype} over {var.dims}: lq advises on float variables of "
                "2 or more dimensions; leave it out of --vars"
            )
        results[name] = _advise_variable(name, var, sample, rng, tuple(nbits), tolerances)
    return AdviceReport(src=src, seed=seed, sample=sample, variables=results, skipped=skipped)
