"""``lq verify``: check a compressed store against its source, per variable and level.

Example::

    lq verify sample.zarr out.zarr --vars temperature --json

Exit status 0 when every value is within the bound its codec promises, 1 otherwise.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli._common import (
    DebugOption,
    GcsTokenOption,
    JsonOption,
    WorkersOption,
    handle_errors,
    plural,
    print_json,
    stdout_console,
    usage_value,
)
from cli.render import verify_table


def verify(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The original store: a path or URL.")],
    dst: Annotated[str, typer.Argument(metavar="DST", help="The store to check: a path or URL.")],
    vars: Annotated[
        str | None,
        typer.Option("--vars", help="Variables to check, comma-separated [default: all shared]."),
    ] = None,
    workers: WorkersOption = None,
    gcs_token: GcsTokenOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Compare DST with SRC: per variable and level the max absolute error, the max
    full-scale error (over each layer's max-min range), the RMSE, and the bound the codec
    promises. Exit status 1 if any value misses its bound."""
    with handle_errors(debug):
        from layerquantizer import dataset

        report = dataset.verify(
            src,
            dst,
            variables=usage_value("--vars", dataset.parse_variables, vars),
            workers=workers,
            token=usage_value("--gcs-token", dataset.parse_gcs_token, gcs_token),
        )
    if json_output:
        print_json(report.to_dict())
    else:
        console = stdout_console()
        console.print(verify_table(report))
        for name, reason in report.skipped.items():
            console.print(f"skipped {name}: {reason}")
        failed = [name for name, check in report.variables.items() if not check.ok]
        if failed:
            console.print(f"FAILED: {', '.join(failed)} exceed their bound", markup=False)
        else:
            count = len(report.variables)
            their = "its bound" if count == 1 else "their bounds"
            console.print(f"ok: {plural(count, 'variable')} within {their}")
    if not report.ok:
        raise typer.Exit(code=1)
