"""Pictures of the advise, inspect and verify reports (the ``plot`` extra: matplotlib).

Each function writes one PNG with the Agg backend; matplotlib is imported only here, when
a picture is asked for.

Example
-------
>>> import tempfile
>>> from layerquantizer import dataset
>>> folder = tempfile.mkdtemp()
>>> _ = dataset.write_sample(folder + "/s.zarr", levels=3, grid=(37, 72), times=2)
>>> report = dataset.advise(folder + "/s.zarr", variables=["temperature"], sample=1)
>>> plot_advice(report, folder + "/advise.png")
>>> import matplotlib.image
>>> matplotlib.image.imread(folder + "/advise.png").shape
(720, 1200, 4)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Size of every picture, inches at :data:`DPI` (1200 x 720 pixels).
FIGSIZE = (10.0, 6.0)
DPI = 120


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        from layerquantizer.dataset._errors import RequestError

        raise RequestError("--plot needs matplotlib: pip install 'layerquantizer[plot]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_advice(report, path: str | Path) -> None:
    """Per variable, the ratio against the max full-scale error of the settings measured
    by :func:`~layerquantizer.dataset.advise` (log axis), the recommendation starred."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    floor = 1e-9  # lossless settings (error 0) sit on the left edge
    for name, advice in report.variables.items():
        trials = sorted(advice.trials, key=lambda t: t.max_fs_error)
        xs = [max(t.max_fs_error, floor) for t in trials]
        (line,) = ax.plot(xs, [t.ratio for t in trials], "o-", label=name, alpha=0.85)
        rec = advice.recommendation
        ax.plot(
            max(rec.trial.max_fs_error, floor),
            rec.trial.ratio,
            "*",
            markersize=18,
            color=line.get_color(),
            markeredgecolor="black",
        )
        ax.annotate(
            rec.trial.label,
            (max(rec.trial.max_fs_error, floor), rec.trial.ratio),
            textcoords="offset points",
            xytext=(8, 6),
            fontsize=8,
        )
    ax.plot([], [], "*", color="grey", markeredgecolor="black", markersize=14, label="advised")
    ax.set_xscale("log")
    ax.set_xlabel("max error over the layer's max - min range (full scale; lossless at 1e-9)")
    ax.set_ylabel("compression ratio (source bytes / stored bytes)")
    ax.set_title(
        f"lq advise {report.src}\nratio against error at nbits and tolerances "
        f"({report.sample} sampled chunks per variable, seed {report.seed})",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_inspect(report, path: str | Path) -> None:
    """Per variable, logical and stored bytes as horizontal bars (log axis), with ratios."""
    plt = _pyplot()
    names = list(report.variables)
    logical = np.array([report.variables[n].logical_bytes for n in names], float)
    stored = np.array([report.variables[n].stored_bytes for n in names], float)
    height = max(FIGSIZE[1], 0.4 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], height))
    y = np.arange(len(names))
    ax.barh(y + 0.2, logical / 2**20, height=0.4, label="logical (uncompressed)", color="#bbbbbb")
    ax.barh(y - 0.2, stored / 2**20, height=0.4, label="stored (on disk)", color="#1f77b4")
    for i, name in enumerate(names):
        ratio = report.variables[name].ratio
        if ratio is not None:
            ax.annotate(
                f"{ratio:.1f}x",
                (max(stored[i], 1) / 2**20, i - 0.2),
                textcoords="offset points",
                xytext=(4, -3),
                fontsize=8,
            )
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("size (MiB, log scale)")
    total = report.total_ratio
    ax.set_title(
        f"lq inspect {report.store}: stored bytes per variable"
        + (f" (total ratio {total:.2f}x)" if total else ""),
        fontsize=10,
    )
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def _share_of_bound(level) -> float | None:
    """The max error of one level as a share of the bound verify checks it against: full
    scale for nbits, absolute for a tolerance (which has no full-scale bound) or a stated
    ``--max-abs-error``; 0 for a lossless copy without error, None without a bound."""
    if level.bound:
        return level.max_fs_error / level.bound
    if level.bound_abs:
        return level.max_abs_error / level.bound_abs
    if level.bound == 0 or level.bound_abs == 0:
        return 0.0 if level.max_abs_error == 0 else math.inf
    return None


def _worst(report):
    """The variable and level whose max error is the largest share of its bound."""
    best = None
    for name, check in report.variables.items():
        for index, level in enumerate(check.levels):
            if not (level.bound or level.bound_abs):  # no bound, or a lossless copy
                continue
            share = _share_of_bound(level)
            if not math.isfinite(share):
                continue
            if best is None or share > best[0]:
                best = (share, name, index)
    return best


def _worst_layer(report, name: str, level_index: int, token=None):
    """Source and decoded values of the layer with the largest error at one level of one
    variable (:attr:`LevelStats.worst_layer`), read again from both stores."""
    from layerquantizer.dataset._stores import open_dataset

    src = open_dataset(report.src, token=token)[name]
    dst = open_dataset(report.dst, token=token)[name]
    stats = report.variables[name].levels[level_index]
    where = dict(stats.worst_layer or {})
    if "level" in src.dims and stats.level is not None:
        where["level"] = stats.level
    labels = {dim: v for dim, v in where.items() if dim in src.coords}
    positions = {dim: v for dim, v in where.items() if dim not in src.coords}
    a = np.asarray(src.sel(labels).isel(positions).values, np.float64)
    b = np.asarray(dst.sel(labels).isel(positions).values, np.float64)
    return a, b, stats.worst_layer or {}, src


# The error map shows at most this many cells a side.
_MAP_CELLS = 160


def _coarsen(error: np.ndarray, cells: int) -> np.ndarray:
    """Blocks of ``error`` as their value of the largest magnitude, at most ``cells`` a side,
    so that no error the eye should see is averaged away."""
    fy, fx = (max(1, -(-n // cells)) for n in error.shape)
    ny, nx = -(-error.shape[0] // fy) * fy, -(-error.shape[1] // fx) * fx
    padded = np.full((ny, nx), np.nan)
    padded[: error.shape[0], : error.shape[1]] = error
    blocks = (
        padded.reshape(ny // fy, fy, nx // fx, fx)
        .transpose(0, 2, 1, 3)
        .reshape(ny // fy, nx // fx, fy * fx)
    )
    magnitude = np.where(np.isnan(blocks), -1.0, np.abs(blocks))
    pick = magnitude.argmax(axis=-1)
    return np.take_along_axis(blocks, pick[..., None], axis=-1)[..., 0]


def _coordinate_text(value) -> str:
    if isinstance(value, np.datetime64):
        return str(np.datetime64(value, "m")).replace("T", " ")
    return str(value)


def plot_verify(report, path: str | Path, token=None) -> None:
    """Left: per variable and level, the max error as a share of its bound (heatmap; 1 is
    the bound): full scale for nbits, absolute for a tolerance. Right: the error map of the
    worst layer, read again from both stores."""
    plt = _pyplot()
    names = [n for n, c in report.variables.items() if c.levels]
    labels = sorted(
        {str(lev.level) for n in names for lev in report.variables[n].levels},
        key=lambda s: (float(s) if s.replace(".", "", 1).isdigit() else math.inf, s),
    )
    shares = np.full((len(names), len(labels)), np.nan)
    for i, name in enumerate(names):
        for lev in report.variables[name].levels:
            share = _share_of_bound(lev)
            if share is not None:
                shares[i, labels.index(str(lev.level))] = share
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.4, FIGSIZE[1]))
    shown = np.where(np.isfinite(shares), shares, np.nan)
    image = left.imshow(shown, aspect="auto", cmap="viridis", vmin=0, vmax=max(1.0, np.nanmax(
        shown, initial=0.0)))  # fmt: skip
    for i in range(len(names)):
        for j in range(len(labels)):
            if np.isfinite(shares[i, j]):
                left.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if shares[i, j] < 0.6 else "black")  # fmt: skip
    left.set_xticks(range(len(labels)), [s if s != "None" else "-" for s in labels], fontsize=8)
    left.set_yticks(range(len(names)), names, fontsize=8)
    left.set_xlabel("level")
    left.set_title("max error / bound per variable and level\n(1 = at the bound; blank: no "
                   "bound, lossless: 0)", fontsize=9)  # fmt: skip
    fig.colorbar(image, ax=left, label="max error / bound (nbits: full scale; tolerance: absolute)")

    worst = _worst(report)
    if worst is None or worst[0] == 0:
        right.text(0.5, 0.5, "no lossy variable with an error", ha="center", va="center")
        right.set_axis_off()
    else:
        _, name, level_index = worst
        a, b, worst_layer, src = _worst_layer(report, name, level_index, token)
        error = _coarsen(b - a, _MAP_CELLS)
        limit = float(np.nanmax(np.abs(error))) or 1.0
        where = ", ".join(f"{dim}={_coordinate_text(v)}" for dim, v in worst_layer.items())
        level = report.variables[name].levels[level_index].level
        # Few colours: the error is noise, and a PNG of noise in a smooth colour map weighs
        # megabytes; the extent keeps the axes in the layer's own indices.
        ny, nx = a.shape
        mesh = right.imshow(
            error, cmap=plt.get_cmap("RdBu_r", 9), vmin=-limit, vmax=limit, aspect="auto",
            interpolation="nearest", extent=(-0.5, nx - 0.5, ny - 0.5, -0.5),
        )  # fmt: skip
        units = src.attrs.get("units", "units of the variable")
        fig.colorbar(mesh, ax=right, label=f"decoded - source ({units})")
        right.set_title(
            f"error of the worst layer: {name}" + (f", level {level}" if level is not None else "")
            + (f"\n{where}" if where else ""), fontsize=9,
        )  # fmt: skip
        right.set_xlabel(f"{src.dims[-1]} index")
        right.set_ylabel(f"{src.dims[-2]} index")
    fig.suptitle(f"lq verify {report.src} {report.dst}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
