"""``lq inspect``: codecs, chunks and sizes of every variable of a Zarr store.

Example::

    lq inspect out.zarr --json

Reads metadata and object sizes only; no chunk is decoded.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli._common import (
    DebugOption,
    GcsTokenOption,
    JsonOption,
    PlotOption,
    handle_errors,
    print_json,
    stdout_console,
    usage_value,
)
from cli.render import store_table


def inspect(
    store: Annotated[str, typer.Argument(metavar="STORE", help="A Zarr store: a path or URL.")],
    gcs_token: GcsTokenOption = None,
    json_output: JsonOption = False,
    plot: PlotOption = None,
    debug: DebugOption = False,
) -> None:
    """Per variable: dims, shape, chunks, dtype, codec and settings, logical and stored
    bytes, ratio and number of objects; and totals. An unfinished lq compress output is
    reported incomplete (JSON "complete": false), without ratios."""
    with handle_errors(debug):
        from layerquantizer import dataset

        report = dataset.inspect(
            store, token=usage_value("--gcs-token", dataset.parse_gcs_token, gcs_token)
        )
        if plot is not None:
            from layerquantizer.dataset._plots import plot_inspect

            plot_inspect(report, plot)
    if json_output:
        print_json(report.to_dict())
        return
    console = stdout_console()
    title = f"{store} (zarr v{report.zarr_format})"
    if not report.complete:
        title += ", INCOMPLETE"
    table = store_table(report, title=title)
    unlimited = console.options.update_width(100_000)
    if console.measure(table, options=unlimited).maximum > console.width:
        # Too narrow for every column: rich would squeeze the settings to nothing.
        table = store_table(report, title=title, compact=True)
        table.caption = "shape, chunks, dtype and objects: widen the terminal or use --json"
        table.caption_justify = "left"
    console.print(table)
    if not report.complete:
        # The ratios would count data not written yet: they are left out ("-").
        console.print(
            f"incomplete: {report.incomplete}; ratios not shown", markup=False, soft_wrap=True
        )
