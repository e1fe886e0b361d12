"""``lq advise``: how many bits each variable needs, from a few sampled chunks.

Example::

    lq advise era5.zarr --vars temperature,geopotential --config-out advised.yaml \
        --plot advise.png && lq compress era5.zarr era5-lq.zarr --config advised.yaml

Reads ``--sample`` chunks per variable (chosen at random with ``--seed``, named in the
report), not the whole store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from cli._common import (
    DebugOption,
    GcsTokenOption,
    JsonOption,
    handle_errors,
    listed,
    print_json,
    ratio_text,
    stdout_console,
    usage_value,
)


def _advice_table(report) -> Table:
    table = Table(
        title=f"{report.src}: {report.sample} sampled chunks per variable (seed {report.seed})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("variable", "source grid", "information", "advised", "ratio",
                   "max abs error", "max fs error"):  # fmt: skip
        right = column in ("ratio", "max abs error", "max fs error")
        # On a narrow terminal the descriptions wrap; names and settings stay whole.
        wraps = column in ("source grid", "information", "max abs error")
        table.add_column(column, justify="right" if right else "left", no_wrap=not wraps)
    for name, advice in report.variables.items():
        rec = advice.recommendation
        grid = (
            f"{advice.source_step:.4g} = {advice.source_bits} bits"
            if advice.source_step is not None
            else f"none ({advice.layers_on_grid}/{advice.layers})"
        )
        info = f"{advice.keepbits} → nbits={advice.information_nbits}"
        units = f" {advice.units}" if advice.units else ""
        table.add_row(
            name, grid, info,
            "precision=source" if rec.source_step is not None else rec.trial.label,
            ratio_text(rec.trial.ratio),
            f"{rec.trial.max_abs_error:.3g}{units}", f"{rec.trial.max_fs_error:.3g}",
        )  # fmt: skip
    table.caption = (
        "source grid: the step the values sit on, in bits of the widest layer; information: "
        "mantissa bits holding 99% of the real information, and the nbits erring no more"
    )
    table.caption_justify = "left"
    return table


def _trials_table(report) -> Table:
    table = Table(
        title="measured on the sample: ratio / max abs error (variable's units)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("variable", no_wrap=True)
    table.add_column("setting", no_wrap=True)
    table.add_column("ratio", justify="right")
    table.add_column("max abs error", justify="right")
    table.add_column("max fs error", justify="right")
    for name, advice in report.variables.items():
        for trial in advice.trials:
            table.add_row(
                name, trial.label, ratio_text(trial.ratio), f"{trial.max_abs_error:.3g}",
                f"{trial.max_fs_error:.3g}",
            )  # fmt: skip
            name = ""
        table.add_section()
    return table


def advise(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The store to sample: path or URL.")],
    vars: Annotated[
        str | None,
        typer.Option(
            "--vars",
            help="Variables, comma-separated (default: the config's, else every float "
            "variable on a latitude/longitude grid).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML config whose variables to advise on; --config-out keeps its other keys.",
        ),
    ] = None,
    sample: Annotated[
        int, typer.Option("--sample", metavar="N", help="Source chunks read per variable.")
    ] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the choice of chunks.")] = 0,
    config_out: Annotated[
        Path | None,
        typer.Option(
            "--config-out",
            metavar="FILE",
            help="Write the advice as a config for lq compress --config.",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE.png",
            help="Draw ratio against error per variable (needs the plot extra).",
            show_default=False,
        ),
    ] = None,
    gcs_token: GcsTokenOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Per variable: the packing precision the source already has, the real information
    of its bits (Klöwer et al. 2021, 99 % kept), ratio and max error of the codec at
    several nbits and tolerances on a few sampled chunks, and a recommended setting."""
    with handle_errors(debug):
        from layerquantizer import dataset
        from layerquantizer.config import load_config

        cfg = load_config(config) if config is not None else None
        report = dataset.advise(
            src,
            variables=usage_value("--vars", dataset.parse_variables, vars),
            config=cfg,
            sample=sample,
            seed=seed,
            token=usage_value("--gcs-token", dataset.parse_gcs_token, gcs_token),
        )
        if config_out is not None:
            base = None
            if config is not None:
                import yaml

                base = yaml.safe_load(config.read_text())
            report.write_config(config_out, base=base)
        if plot is not None:
            from layerquantizer.dataset._plots import plot_advice

            plot_advice(report, plot)
    if json_output:
        print_json(report.to_dict())
        return
    console = stdout_console()
    console.print(_trials_table(report))
    console.print(_advice_table(report))
    for name, advice in report.variables.items():
        console.print(f"{name}: {advice.recommendation.reason}", markup=False, soft_wrap=True)
    reasons: dict[str, list[str]] = {}
    for name, reason in report.skipped.items():
        reasons.setdefault(reason, []).append(name)
    for reason, names in reasons.items():
        console.print(listed(f"{reason}, skipped", names), markup=False, soft_wrap=True)
    if config_out is not None:
        console.print(f"wrote {config_out}", markup=False)
    if plot is not None:
        console.print(f"wrote {plot}", markup=False)
