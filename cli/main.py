"""The ``lq`` application: one module per command, joined here.

Example, on a synthetic dataset and without network::

    lq sample sample.zarr && lq compress sample.zarr out.zarr \
        --vars temperature,geopotential && lq verify sample.zarr out.zarr && lq inspect out.zarr
"""

from __future__ import annotations

import inspect
from typing import Annotated

import typer
from typer.core import TyperCommand

from cli import advise, compress, inspect_cmd, sample, verify

app = typer.Typer(
    name="lq",
    help="Error-bounded lossy compression of weather datasets in Zarr (LayerQuantizer).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("layerquantizer")
        except PackageNotFoundError:  # run from a checkout without installing
            text = "unknown (not installed)"
        typer.echo(f"lq (layerquantizer) {text}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
            show_default=False,
        ),
    ] = False,
) -> None:
    """Error-bounded lossy compression of weather datasets in Zarr (LayerQuantizer)."""


class _Command(TyperCommand):
    """Usage lines read ``lq compress [OPTIONS] SRC DST``, as the help text names them:
    Typer puts required arguments in braces, which reads as a choice."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [
            piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
            for piece in super().collect_usage_pieces(ctx)
        ]


def _summary(function) -> str:
    """The first paragraph of ``function``'s docstring on one line: the command list of
    ``lq --help`` keeps a docstring's line breaks (the command's own help reflows them)."""
    return " ".join(inspect.getdoc(function).split("\n\n")[0].split())


for _name, _function in [
    ("compress", compress.compress),
    ("verify", verify.verify),
    ("inspect", inspect_cmd.inspect),
    ("sample", sample.sample),
    ("advise", advise.advise),
]:
    app.command(_name, no_args_is_help=True, cls=_Command, short_help=_summary(_function))(
        _function
    )

if __name__ == "__main__":
    app()
