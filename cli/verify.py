"""``lq verify``: check a compressed store against its source, per variable and level.

Example::

    lq verify sample.zarr out.zarr --vars temperature --json
    lq verify sample.zarr out.zarr --by-level    # a row per variable and level
    lq verify $SRC gs://my-bucket/era5.zarr --sample 20 --scheduler tcp://10.0.0.5:8786

Exit status 0 when every value is within the bound its codec promises, 1 on any problem:
values beyond the bound, a missing or corrupt chunk, values that differ under a codec whose
bound lq cannot tell (state one with ``--max-abs-error`` or ``--max-fs-error``), chunks
looser than the attributes promise, a missing variable, an unfinished store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli._common import (
    ClusterWorkersOption,
    DebugOption,
    GcsTokenOption,
    JsonOption,
    PlotOption,
    SchedulerOption,
    WorkerTimeoutOption,
    handle_errors,
    listed,
    plural,
    print_json,
    stderr_console,
    stdout_console,
    usage_value,
)
from cli.render import problem_lines, verify_summary_table, verify_table


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator:
    """A ``progress(chunks_done, chunks_total)`` callback drawing a bar on stderr, or None
    when not ``enabled`` or stderr is not a terminal (a pipe or a log stays clean)."""
    console = stderr_console()
    if not enabled or not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
        TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("verify", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def verify(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The original store: a path or URL.")],
    dst: Annotated[str, typer.Argument(metavar="DST", help="The store to check: a path or URL.")],
    vars: Annotated[
        str | None,
        typer.Option("--vars", help="Variables to check, comma-separated (default: all shared)."),
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
    by_level: Annotated[
        bool,
        typer.Option(
            "--by-level",
            help="A row per variable and level (range, errors, bound) instead of one per variable.",
            show_default=False,
        ),
    ] = False,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            min=1,
            metavar="N",
            help="Check N chunks per variable chosen at random (see --seed) instead of "
            "all: for stores too large to read twice. Chunks absent from the store's "
            "listing are looked for in all of them (and N of those compared with SRC).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            min=0,
            metavar="S",
            help="With --sample: which chunks (default 0); the same S, the same chunks.",
            show_default=False,
        ),
    ] = None,
    workers: ClusterWorkersOption = None,
    scheduler: SchedulerOption = None,
    worker_timeout: WorkerTimeoutOption = 180.0,
    gcs_token: GcsTokenOption = None,
    json_output: JsonOption = False,
    plot: PlotOption = None,
    debug: DebugOption = False,
) -> None:
    """Compare DST with SRC: per variable (per level with --by-level) the max absolute
    error, the max full-scale error (over each layer's max-min range), the RMSE, and the
    bound the codec promises (nbits: full scale; a tolerance: absolute, in the variable's
    units); and every problem found (missing or corrupt chunks, values under a codec lq
    cannot bound, chunks looser than their metadata, missing variables, an unfinished
    store). Exit status 1 on any problem."""
    with handle_errors(debug), _progress_bar(enabled=not json_output) as progress:
        from layerquantizer import dataset

        token = usage_value("--gcs-token", dataset.parse_gcs_token, gcs_token)
        report = dataset.verify(
            src,
            dst,
            variables=usage_value("--vars", dataset.parse_variables, vars),
            workers=workers,
            scheduler=scheduler,
            worker_timeout=worker_timeout,
            token=token,
            max_abs_error=max_abs_error,
            max_fs_error=max_fs_error,
            sample=sample,
            seed=seed,
            progress=progress,
        )
        if plot is not None:
            from layerquantizer.dataset._plots import plot_verify

            plot_verify(report, plot, token=token)
    if json_output:
        print_json(report.to_dict())
    else:
        console = stdout_console()
        console.print(verify_table(report) if by_level else verify_summary_table(report))
        by_reason: dict[str, list[str]] = {}
        for name, reason in sorted(report.skipped.items()):
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():  # one line each, as lq compress says them
            console.print(listed(f"{reason}, skipped", names), markup=False, soft_wrap=True)
        for line in problem_lines(report):
            console.print(line, markup=False, soft_wrap=True)
        console.print(report.coverage(), markup=False, soft_wrap=True)
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
