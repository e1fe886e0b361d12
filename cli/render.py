"""Tables of the store, compress and verify reports."""

from __future__ import annotations

from rich.table import Table

from cli._common import error_text, human_bytes, ratio_text, settings_text


def store_table(report, title: str | None = None, quantized: set[str] | None = None) -> Table:
    """Per variable: dims, chunks, codec and settings, logical and stored size, ratio."""
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("variable", "left"), ("dims", "left"), ("chunks", "left"), ("dtype", "left"),
        ("codec", "left"), ("settings", "left"), ("logical", "right"), ("stored", "right"),
        ("ratio", "right"), ("objects", "right"),
    ):  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=column in ("variable", "codec"))
    for name, array in report.variables.items():
        marker = "*" if quantized and name in quantized else ""
        table.add_row(
            name + marker,
            ",".join(array.dims),
            ",".join(map(str, array.chunks)),
            array.dtype,
            array.codec,
            settings_text(array.codec, array.settings, array.error_bound),
            human_bytes(array.logical_bytes),
            human_bytes(array.stored_bytes),
            ratio_text(array.ratio),
            str(array.objects),
        )
    table.add_section()
    table.add_row(
        "total", "", "", "", "", f"{len(report.variables)} variables + coordinates",
        human_bytes(report.logical_bytes), human_bytes(report.stored_bytes),
        ratio_text(report.total_ratio), str(report.objects),
    )  # fmt: skip
    return table


def verify_table(report) -> Table:
    """Per variable and level: range, errors, bound, verdict."""
    table = Table(
        title=f"{report.dst} against {report.src}",
        caption="fs = full scale: error over the layer's max - min; the fs bound is the "
        "codec's plus one float32 ulp of the largest value",
        title_justify="left",
        caption_justify="left",
    )
    for column in ("variable", "level", "min", "max", "max abs err", "max fs err", "rmse",
                   "fs bound", "ok"):  # fmt: skip
        table.add_column(column, justify="left" if column == "variable" else "right")
    for name, check in report.variables.items():
        for index, level in enumerate(check.levels):
            table.add_row(
                name if index == 0 else "",
                "-" if level.level is None else str(level.level),
                error_text(level.vmin),
                error_text(level.vmax),
                error_text(level.max_abs_error),
                error_text(level.max_fs_error),
                error_text(level.rmse),
                "lossless" if check.codec_bound == 0 else error_text(level.bound),
                "ok" if level.ok else "[bold red]FAIL[/]",
            )
        table.add_section()
    return table
