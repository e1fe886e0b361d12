"""``lq verify``: check a compressed store against its source, per variable and level.

Example::

    lq verify sample.zarr out.zarr --vars temperature --json

Exit status 0 when every value is within the bound its codec promises, 1 on any problem:
values beyond the bound, a missing or corrupt chunk, values that differ under a codec whose
bound lq cannot tell (state one with ``--max-abs-error`` or ``--max-fs-error``), chunks
looser than the attributes promise, a missing variable, an unfinished store.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli._common import (
    DebugOption,
    GcsTokenOption,
    JsonOption,
    PlotOption,
    WorkersOption,
    handle_errors,
    plural,
    print_json,
    stdout_console,
    usage_value,
)
from cli.render import problem_lines, verify_table


def verify(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The original store: a path or URL.")],
    dst: Annotated[str, typer.Argument(metavar="DST", help="The store to check: a path or URL.")],
    vars: Annotated[
        str | None,
        typer.Option("--vars", help="Variables to check, comma-separated [default: all shared]."),
    ] = None,
    max_abs_error: Annotated[
        float | None,
        typer.Option(
            "--max-abs-error",
            metavar="X",
            help="For variables whose codec's bound lq cannot tell (BitRound, Quantize, an "
            "unknown lossy codec): the largest absolute error allowed.",
            show_default=False,
        ),
    ] = None,
    max_fs_error: Annotated[
        float | None,
        typer.Option(
            "--max-fs-error",
            metavar="X",
            help="As --max-abs-error, over each layer's max - min range (plus one float32 ulp).",
            show_default=False,
        ),
    ] = None,
    workers: WorkersOption = None,
    gcs_token: GcsTokenOption = None,
    json_output: JsonOption = False,
    plot: PlotOption = None,
    debug: DebugOption = False,
) -> None:
    """Compare DST with SRC: per variable and level the max absolute error, the max
    full-scale error (over each layer's max-min range), the RMSE, and the bound the codec
    promises; and every problem found (missing or corrupt chunks, values under a codec lq
    cannot bound, chunks looser than their metadata, missing variables, an unfinished
    store). Exit status 1 on any problem."""
    with handle_errors(debug):
        from layerquantizer import dataset

        token = usage_value("--gcs-token", dataset.parse_gcs_token, gcs_token)
        report = dataset.verify(
            src,
            dst,
            variables=usage_value("--vars", dataset.parse_variables, vars),
            workers=workers,
            token=token,
            max_abs_error=max_abs_error,
            max_fs_error=max_fs_error,
        )
        if plot is not None:
            from layerquantizer.dataset._plots import plot_verify

            plot_verify(report, plot, token=token)
    if json_output:
        print_json(report.to_dict())
    else:
        console = stdout_console()
        console.print(verify_table(report))
        for name, reason in report.skipped.items():
            console.print(f"skipped {name}: {reason}")
        for line in problem_lines(report):
            console.print(line, markup=False, soft_wrap=True)
        failed = [
            f"{name} ({', '.join(dict.fromkeys(p.kind for p in check.problems))})"
            for name, check in report.variables.items()
            if not check.ok
        ]
        if not report.complete:
            failed.insert(0, "the store is incomplete")
        if failed:
            console.print(f"FAILED: {'; '.join(failed)}", markup=False, soft_wrap=True)
        else:
            count = len(report.variables)
            their = "its bound" if count == 1 else "their bounds"
            console.print(f"ok: {plural(count, 'variable')} within {their}")
    if not report.ok:
        raise typer.Exit(code=1)
