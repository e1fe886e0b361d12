"""The ``lq`` application: one module per command, joined here.

Example, on a synthetic dataset and without network::

    lq sample sample.zarr && lq compress sample.zarr out.zarr \
        --vars temperature,geopotential && lq verify sample.zarr out.zarr && lq inspect out.zarr
"""

from __future__ import annotations

import typer

from cli import compress, inspect_cmd, sample, verify

app = typer.Typer(
    name="lq",
    help="Error-bounded lossy compression of weather datasets in Zarr (LayerQuantizer).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("compress", no_args_is_help=True)(compress.compress)
app.command("verify", no_args_is_help=True)(verify.verify)
app.command("inspect", no_args_is_help=True)(inspect_cmd.inspect)
app.command("sample", no_args_is_help=True)(sample.sample)

if __name__ == "__main__":
    app()
