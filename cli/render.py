"""Tables of the store, compress and verify reports."""

from __future__ import annotations

from rich import box
from rich.table import Table

from cli._common import error_text, human_bytes, plural, ratio_text, settings_text


def store_table(
    report, title: str | None = None, quantized: set[str] | None = None, compact: bool = False
) -> Table:
    """Per variable: shape, chunks, dtype, codec and settings, logical and stored size, ratio,
    objects, with the dims in the caption; ``compact`` keeps only the name, codec, settings,
    sizes and ratio."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns = ["variable", "shape", "chunks", "dtype", "codec", "settings", "logical", "stored",
               "ratio", "objects"]  # fmt: skip
    if compact:
        columns = [c for c in columns if c not in ("shape", "chunks", "dtype", "objects")]
    for column in columns:
        justify = "right" if column in ("logical", "stored", "ratio", "objects") else "left"
        # On a narrow terminal the settings wrap; names and numbers stay whole.
        wraps = column == "settings"
        table.add_column(
            column, justify=justify, no_wrap=not wraps, min_width=16 if wraps else None
        )

    def row(cells: dict[str, str]) -> None:
        table.add_row(*(cells.get(column, "") for column in columns))

    for name, array in report.variables.items():
        row(
            {
                "variable": name + ("*" if quantized and name in quantized else ""),
                "dtype": array.dtype,
                "shape": "×".join(map(str, array.shape)),
                "chunks": "×".join(map(str, array.chunks))
                + ("" if array.shards is None else " in " + "×".join(map(str, array.shards))),
                "codec": array.codec,
                "settings": _settings_cell(array),
                "logical": human_bytes(array.logical_bytes),
                "stored": human_bytes(array.stored_bytes),
                "ratio": ratio_text(array.ratio),
                "objects": str(array.objects),
            }
        )
    if not compact:
        groups: dict[tuple[str, ...], int] = {}
        for array in report.variables.values():
            groups[array.dims] = groups.get(array.dims, 0) + 1
        table.caption = "dims: " + "; ".join(
            f"({', '.join(dims)}) for {plural(count, 'variable')}" for dims, count in groups.items()
        )
        table.caption_justify = "left"
    table.add_section()
    row(
        {
            "variable": "total",
            "settings": f"{plural(len(report.variables), 'variable')} + coordinates",
            "logical": human_bytes(report.logical_bytes),
            "stored": human_bytes(report.stored_bytes),
            "ratio": ratio_text(report.total_ratio),
            "objects": str(report.objects),
        }
    )
    return table


def _settings_cell(array) -> str:
    """The codec's settings; an absolute tolerance first, in the variable's units:
    ``tol 0.01 K level=1`` (``source, tol ...`` for ``precision: source``)."""
    if array.tolerance is None:
        return settings_text(array.codec, array.settings, array.error_bound)
    rest = {k: v for k, v in array.settings.items() if k != "tolerance"}
    rest_text = settings_text(array.codec, rest, None)
    source = "source, " if array.mode == "source" else ""
    return f"{source}{tolerance_text(array.tolerance, array.units)} {rest_text}"


def tolerance_text(tolerance: float, units: str = "") -> str:
    """``tol 0.01 K``.

    >>> tolerance_text(0.01, "K"), tolerance_text(2.5e-07)
    ('tol 0.01 K', 'tol 2.5e-07')
    """
    return f"tol {tolerance:.6g}" + (f" {units}" if units else "")


_FS_CAPTION = (
    "fs = full scale: error over the layer's max - min; an nbits bound is the codec's fs "
    "bound plus one float32 ulp of the largest value, a tolerance is absolute (plus one "
    "float32 ulp of the value)"
)


def verify_summary_table(report) -> Table:
    """One row per variable: units, max abs error, max fs error, RMSE over every value,
    bound, verdict (``--by-level`` gives :func:`verify_table`)."""
    table = Table(
        title=f"{report.dst} against {report.src}",
        caption=_FS_CAPTION,
        title_justify="left",
        caption_justify="left",
    )
    for column in ("variable", "units", "max abs err", "max fs err", "rmse", "bound", "ok"):
        table.add_column(column, justify="left" if column in ("variable", "units") else "right")
    for name, check in report.variables.items():
        if not check.levels:  # nothing to compare: a missing variable
            kinds = ", ".join(dict.fromkeys(p.kind for p in check.problems)) or "-"
            table.add_row(name, "", "", "", "", kinds, "[bold red]FAIL[/]")
            continue
        table.add_row(
            name,
            check.units or "-",
            error_text(check.max_abs_error),
            error_text(check.max_fs_error),
            error_text(check.rmse),
            _variable_bound_text(check),
            "ok" if check.ok else "[bold red]FAIL[/]",
        )
    return table


def _variable_bound_text(check) -> str:
    if check.codec_bound == 0:
        return "lossless"
    if check.bound_from is None:
        return "unknown"
    if check.tolerance is not None:
        return tolerance_text(check.tolerance, check.units)
    parts = []
    if check.bound is not None:
        bits = f"{check.nbits} bits, " if check.bound_from == "codec" and check.nbits else ""
        parts.append(f"{bits}fs {error_text(check.bound)}")
    if check.abs_bound is not None and check.bound_from == "user":
        parts.append(f"abs {error_text(check.abs_bound)}")
    return ", ".join(parts) or "unknown"


def verify_table(report) -> Table:
    """Per variable and level: range, errors, bound, verdict."""
    table = Table(
        title=f"{report.dst} against {report.src}",
        caption=_FS_CAPTION,
        title_justify="left",
        caption_justify="left",
    )
    for column in ("variable", "level", "min", "max", "max abs err", "max fs err", "rmse",
                   "bound", "ok"):  # fmt: skip
        table.add_column(column, justify="left" if column == "variable" else "right")
    for name, check in report.variables.items():
        if not check.levels:  # nothing to compare: a missing variable
            kinds = ", ".join(dict.fromkeys(p.kind for p in check.problems)) or "-"
            table.add_row(name, "-", "", "", "", "", "", kinds, "[bold red]FAIL[/]")
        for index, level in enumerate(check.levels):
            table.add_row(
                name if index == 0 else "",
                "-" if level.level is None else str(level.level),
                error_text(level.vmin),
                error_text(level.vmax),
                error_text(level.max_abs_error),
                error_text(level.max_fs_error),
                error_text(level.rmse),
                _bound_text(check, level),
                "ok" if level.ok else "[bold red]FAIL[/]",
            )
        table.add_section()
    return table


def _bound_text(check, level) -> str:
    if check.codec_bound == 0:
        return "lossless"
    if check.bound_from is None:
        return "unknown"
    if check.tolerance is not None:
        return tolerance_text(check.tolerance, check.units)
    if level.bound is None and level.bound_abs is not None:
        return f"abs {error_text(level.bound_abs)}"
    return error_text(level.bound)


#: Problems listed per variable under the verify table; --json has them all.
PROBLEMS_SHOWN = 5


def problem_lines(report, per_variable: int = PROBLEMS_SHOWN) -> list[str]:
    """One line per problem of the store and of each variable, at most ``per_variable``
    per variable, then how many more there are."""
    lines = [f"{p.kind}: {p.message}" for p in report.problems]
    for check in report.variables.values():
        shown = check.problems[:per_variable]
        lines.extend(f"{p.kind}: {p.message}" for p in shown)
        omitted = check.problems_omitted
        rest = len(check.problems) - len(shown) + sum(omitted.values())
        if not rest:
            continue
        where = "see --json"
        if omitted:
            kinds = ", ".join(f"{count:,} {kind}" for kind, count in omitted.items())
            where += f", which leaves out {kinds} after the first of each kind"
        lines.append(
            f"... and {rest:,} more problem{'s' if rest > 1 else ''} of {check.name} ({where})"
        )
    return lines


def dry_run_table(report) -> Table:
    """``lq compress --dry-run``: per variable the treatment, setting (bits, tolerance, or
    the source's grid), chunk objects, logical and estimated stored bytes and ratio; the
    total and the estimated time in the caption."""
    title = f"{report.dst} would be written (zarr v{report.zarr_format}; dry run, nothing written)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("variable", "treatment", "setting", "chunks", "logical", "est. stored",
                   "est. ratio"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("variable", "treatment") else "right")

    def ratio(logical: int, stored: int | None) -> str:
        return ratio_text(logical / stored) if stored else "n/a"

    def setting(v) -> str:
        if v.source_step is not None:
            return f"source (step {v.source_step:.6g}, {tolerance_text(v.tolerance)})"
        if v.tolerance is not None:
            return tolerance_text(v.tolerance)
        return "" if v.nbits is None else f"{v.nbits} bits"

    for name, v in report.variables.items():
        written = v.chunks > 0
        table.add_row(
            name, v.treatment, setting(v),
            str(v.chunks) if written else "", human_bytes(v.logical_bytes) if written else "",
            human_bytes(v.estimated_stored_bytes) if written and v.estimated_stored_bytes
            is not None else ("n/a" if written else ""),
            ratio(v.logical_bytes, v.estimated_stored_bytes) if written else "",
        )  # fmt: skip
    table.add_section()
    stored = report.estimated_stored_bytes
    table.add_row(
        "total", plural(sum(1 for v in report.variables.values() if v.chunks), "variable"), "",
        str(report.total_chunks), human_bytes(report.total_logical_bytes),
        human_bytes(stored) if stored is not None else "n/a",
        ratio(report.total_logical_bytes, stored),
    )  # fmt: skip
    seconds, speed = report.estimated_seconds, report.mib_per_s
    if seconds is None:
        table.caption = "no sampled chunk held data: no estimate of the size or the time"
    else:
        inside = " (chunks inside the shards, not whole shards)" if report.sharded else ""
        table.caption = (
            f"estimated from {report.samples} sampled chunks per variable{inside}; at the "
            f"measured {speed:.1f} MiB/s per thread on {plural(report.threads, 'thread')}: "
            f"about {_duration(seconds)}"
        )
    table.caption_justify = "left"
    return table


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
