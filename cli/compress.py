"""``lq compress``: copy a dataset, quantizing the chosen variables with LayerQuantizer.

Example (public WeatherBench2 ERA5, read anonymously, written to your bucket)::

    SRC=gs://weatherbench2/datasets/era5/1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr
    lq compress $SRC gs://my-bucket/era5-lq.zarr --config configs/era5.yaml \
        --time 2020-01-01:2020-01-31 --gcs-token ~/keys/writer.json
    # killed or interrupted? the same command with --resume finishes it:
    lq compress $SRC gs://my-bucket/era5-lq.zarr --config configs/era5.yaml \
        --time 2020-01-01:2020-01-31 --gcs-token ~/keys/writer.json --resume
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cli._common import (
    BreakLockOption,
    ClusterWorkersOption,
    DebugOption,
    GcsTokenOption,
    JsonOption,
    SchedulerOption,
    WorkerTimeoutOption,
    handle_errors,
    human_bytes,
    listed,
    plural,
    print_json,
    ratio_text,
    stderr_console,
    stdout_console,
    usage_value,
)
from cli.render import dry_run_table, store_table


class _MiBPerSecond(ProgressColumn):
    """Logical MiB/s, from the bytes carried in the task's ``mib`` field."""

    def render(self, task) -> Text:
        speed = task.fields.get("speed")
        return Text("" if not speed else f"{speed:.1f} MiB/s")


@contextlib.contextmanager
def progress_reporter(enabled: bool) -> Iterator:
    """A ``progress(chunks_done, chunks_total, bytes_done, bytes_total)`` callback showing
    a rich bar on a terminal, or None when not a terminal."""
    console = stderr_console()
    if not enabled or not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("writing"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
        _MiBPerSecond(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("write", total=None, speed=0.0)
        shown = [-1.0]  # when the bar was last updated

        def update(chunks_done: int, chunks_total: int, bytes_done: int, bytes_total: int):
            # Ten times a second at most: units without data finish by the thousand per
            # second, and an update of the bar costs more than making a unit's job.
            now = time.monotonic()
            if now - shown[0] < 0.1 and chunks_done < chunks_total:
                return
            shown[0] = now
            elapsed = bar.tasks[0].elapsed or 0.0
            speed = bytes_done / 2**20 / elapsed if elapsed > 0 else 0.0
            bar.update(task, completed=chunks_done, total=chunks_total, speed=speed)

        yield update


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like SIGINT's KeyboardInterrupt, so that a run
    stops the same clean way: no new unit is started, those running are finished."""


class _Written:
    """The chunks known written, from the progress callback."""

    def __init__(self) -> None:
        self.chunks = 0
        self.total: int | None = None

    def tracking(self, progress):
        def update(chunks_done: int, chunks_total: int, bytes_done: int, bytes_total: int):
            self.chunks, self.total = chunks_done, chunks_total
            if progress is not None:
                progress(chunks_done, chunks_total, bytes_done, bytes_total)

        return update


def resume_command(argv: list[str]) -> str:
    """The shell command that finishes an interrupted ``lq compress`` run: the same
    arguments with ``--resume`` (in place of ``--overwrite``, which would start again).

    >>> resume_command(["/usr/bin/lq", "compress", "a b.zarr", "out.zarr", "--overwrite"])
    "/usr/bin/lq compress 'a b.zarr' out.zarr --resume"
    """
    program = argv[0]
    found = shutil.which("lq")
    if program.endswith(".py") or os.path.basename(program) == "__main__.py":
        command = [sys.executable, "-m", "cli.main"]
    elif found and os.path.realpath(found) == os.path.realpath(program):
        command = ["lq"]  # the user's own spelling, found on PATH as they typed it
    else:
        command = [program]
    rest = [arg for arg in argv[1:] if arg != "--overwrite"]
    if "--resume" not in rest:
        rest.append("--resume")
    return shlex.join([*command, *rest])


@contextlib.contextmanager
def _stop_on_signals(dst: str, written: _Written) -> Iterator[None]:
    """On SIGINT or SIGTERM: let the run stop cleanly, then say on one line what was
    written and how to finish, and exit 130 or 143 (128 + the signal, as shells do)."""

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean stop, not a second one
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt as exc:
        code = 143 if isinstance(exc, Terminated) else 130
        if written.total is None:
            what = f"nothing written to {dst} yet"
        else:
            what = f"{written.chunks} of {written.total} chunks written to {dst}"
        stderr_console().print(
            f"lq: interrupted: {what}; to finish, run: {resume_command(sys.argv)}",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=code) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def compress(
    src: Annotated[
        str,
        typer.Argument(
            metavar="SRC", help="Source store: a path or URL (gs://, file://, memory://)."
        ),
    ],
    dst: Annotated[str, typer.Argument(metavar="DST", help="Destination store: a path or URL.")],
    vars: Annotated[
        str | None,
        typer.Option(
            "--vars", help="Variables to quantize, comma-separated (overrides the config)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config (see configs/era5.yaml).")
    ] = None,
    nbits: Annotated[
        int | None,
        typer.Option("--nbits", help="Bits per value for every quantized variable (default 16)."),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            metavar="X",
            help="Instead of --nbits: the largest absolute error of every quantized variable, "
            "in its own units (e.g. 0.01 for temperatures to 0.01 K), plus one float32 ulp.",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            metavar="source",
            help="Instead of --nbits or --tolerance: keep the packing grid each quantized "
            "variable's source values sit on (found in a few sampled chunks; tolerance half "
            "its step, so values on it come back exactly). A variable on no grid is refused.",
            show_default=False,
        ),
    ] = None,
    time: Annotated[
        str | None, typer.Option("--time", metavar="START:END", help="Time range, inclusive.")
    ] = None,
    levels: Annotated[
        str | None, typer.Option("--levels", metavar="500,850,...", help="Levels to keep.")
    ] = None,
    chunks: Annotated[
        str | None,
        typer.Option(
            "--chunks",
            metavar="DIM=N,...",
            help="Output chunks (-1: whole dim); default time=1, every other dim whole.",
        ),
    ] = None,
    zarr_format: Annotated[
        int | None, typer.Option("--zarr-format", metavar="2|3", help="Zarr format (default 2).")
    ] = None,
    shards: Annotated[
        str | None,
        typer.Option(
            "--shards",
            metavar="DIM=N",
            help="With --zarr-format 3: store N chunks' worth of DIM in one object, a Zarr "
            "v3 shard (time=28: a year of 6-hourly steps in 53 objects per variable, not "
            "1,460); -1: the whole dim. Readers need nothing but zarr 3.",
            show_default=False,
        ),
    ] = None,
    workers: ClusterWorkersOption = None,
    scheduler: SchedulerOption = None,
    worker_timeout: WorkerTimeoutOption = 180.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing DST.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Finish an interrupted run into DST with the same options: only the chunks "
            "not yet complete are written. A finished DST is left as it is.",
        ),
    ] = False,
    break_lock: BreakLockOption = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Write nothing: print the plan (per variable the treatment, chunk objects, "
            "logical and estimated stored bytes, from a few sampled chunks) and the time "
            "it would take at the speed measured on them.",
        ),
    ] = False,
    gcs_token: GcsTokenOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Copy SRC to DST, quantizing the chosen variables; every other variable is copied
    losslessly, coordinates and attributes are kept. Prints a report of sizes and ratios.

    SRC and DST are paths or gs:// URLs. Without --overwrite or --resume an existing DST is
    refused. Examples:

    \b
      lq compress sample.zarr out.zarr --vars temperature,geopotential
      lq compress sample.zarr out.zarr --vars temperature --tolerance 0.01
      lq compress era5.zarr out.zarr --vars temperature --precision source
      SRC=gs://weatherbench2/datasets/era5/1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr
      lq compress $SRC gs://my-bucket/era5.zarr --config configs/era5.yaml \\
          --time 2020-01-01:2020-12-31 --gcs-token key.json --scheduler tcp://10.0.0.5:8786
      lq compress $SRC gs://my-bucket/era5.zarr ... --resume   # after an interruption
    """

    def selection() -> dict:
        """What to read and how to write it, parsed once for the run and the dry run alike
        (each option a usage error of its own)."""
        from layerquantizer import dataset
        from layerquantizer.config import load_config

        return {
            "variables": usage_value("--vars", dataset.parse_variables, vars),
            "config": load_config(config) if config is not None else None,
            "nbits": nbits,
            "tolerance": tolerance,
            "precision": precision,
            "time": usage_value("--time", dataset.parse_time_range, time),
            "levels": usage_value("--levels", dataset.parse_levels, levels),
            "chunks": usage_value("--chunks", dataset.parse_chunks, chunks),
            "zarr_format": zarr_format,
            "shards": usage_value("--shards", dataset.parse_shards, shards),
            "token": usage_value("--gcs-token", dataset.parse_gcs_token, gcs_token),
        }

    if dry_run:
        with handle_errors(debug):
            from layerquantizer import dataset

            if overwrite or resume:
                raise dataset.RequestError(
                    "--dry-run writes nothing: leave out --overwrite and --resume"
                )
            estimate = dataset.dry_run(src, dst, workers=workers, **selection())
        if json_output:
            print_json(estimate.to_dict())
        else:
            stdout_console().print(dry_run_table(estimate))
        return
    from layerquantizer.dataset._unit import keep_large_allocations

    keep_large_allocations()  # first, before any library starts a thread (see its docstring)
    written = _Written()
    with handle_errors(debug), _stop_on_signals(dst, written):
        from layerquantizer import dataset

        chosen = selection()
        # With --json the output is a script's: no bar, even on a terminal.
        with progress_reporter(enabled=not json_output) as bar:
            report = dataset.compress(
                src,
                dst,
                **chosen,
                overwrite=overwrite,
                resume=resume,
                workers=workers,
                scheduler=scheduler,
                progress=written.tracking(bar),
                break_lock=break_lock,
                worker_timeout=worker_timeout,
            )
    if json_output:
        print_json(report.to_dict())
        return
    console = stdout_console()
    store = report.store
    console.print(
        store_table(store, title=f"{dst} (zarr v{store.zarr_format}; * = quantized)",
                    quantized=set(report.quantized), compact=True)
    )  # fmt: skip
    notes = []
    if report.skipped:
        notes.append(listed("not in the source, skipped", report.skipped))
    if report.dropped:
        notes.append(listed("dropped", report.dropped))
    if report.already_complete:
        notes.append(f"{dst} was already complete: nothing written")
    elif report.units_resumed:
        notes.append(
            f"resumed: {plural(report.units_resumed, 'write unit')} complete before, "
            f"{report.units_written} written now"
        )
    for note in notes:
        console.print(note, markup=False, soft_wrap=True)
    if report.already_complete:
        return
    console.print(
        f"wrote {human_bytes(report.bytes_written)} of data as {human_bytes(store.stored_bytes)} "
        f"({ratio_text(store.total_ratio)}) in {report.seconds:.1f} s, "
        f"{report.mib_per_s:.1f} MiB/s on {report.runner}"
    )
