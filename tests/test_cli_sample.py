"""``lq sample`` through CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from cli.main import app
from cli.sample import parse_grid
from layerquantizer.dataset import RequestError

runner = CliRunner()


@pytest.mark.parametrize("zarr_format", ["2", "3"])
def test_sample_writes_a_weatherbench2_like_store(tmp_path, zarr_format):
    dst = tmp_path / "s.zarr"
    result = runner.invoke(app, ["sample", str(dst), "--levels", "3", "--grid", "36x19",
                                 "--times", "2", "--zarr-format", zarr_format])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "10 variables, time=2, level=3, latitude=19, longitude=36" in result.stdout
    ds = xr.open_zarr(dst, consolidated=True)
    assert ds["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert ds["temperature"].encoding["chunks"] == (1, 3, 19, 36)
    assert ds["time"].values[1] - ds["time"].values[0] == np.timedelta64(6, "h")


def test_parse_grid():
    assert parse_grid("1440x721") == (721, 1440)
    with pytest.raises(RequestError, match="expected NLONxNLAT"):
        parse_grid("1440")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--grid", "big"], "--grid: expected NLONxNLAT such as 240x121"),
        (["--levels", "40"], "levels must be between 1 and 37, got 40"),
        (["--zarr-format", "1"], "zarr format must be 2 or 3, got 1"),
    ],
)
def test_sample_usage_errors(tmp_path, args, match):
    result = runner.invoke(app, ["sample", str(tmp_path / "s.zarr"), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("lq: error: ") and result.stderr.count("\n") == 1
    assert match in result.stderr


def test_sample_refuses_an_existing_destination(tmp_path):
    result = runner.invoke(app, ["sample", str(tmp_path)])
    assert result.exit_code == 1
    assert "already exists; pass --overwrite" in result.stderr


@pytest.mark.slow
def test_sample_overwrite_removes_only_what_lq_wrote(tmp_path):
    """`lq sample --overwrite` decides what it may remove as `lq compress --overwrite` does
    (_destination.check_removable, the .lq-store.json marker). Before: it refused its own
    output (a sample store has no marker); now it replaces it, and still refuses a Zarr
    store lq did not write and a folder of other files, leaving them untouched."""
    from test_cli_subprocess import lq

    small = ("--levels", "2", "--grid", "36x19")
    lq("sample", "s.zarr", *small, "--times", "1", cwd=tmp_path)
    lq("sample", "s.zarr", *small, "--times", "2", "--overwrite", cwd=tmp_path)
    assert xr.open_zarr(tmp_path / "s.zarr").sizes["time"] == 2
    # lq compress may replace a sample store too, but not "resume" it.
    resumed = lq("compress", "s.zarr", "s2.zarr", "--vars", "temperature", cwd=tmp_path)
    assert resumed.returncode == 0
    refused = lq("compress", "s2.zarr", "s.zarr", "--vars", "temperature", "--resume",
                 cwd=tmp_path, check=False)  # fmt: skip
    assert refused.returncode == 1 and "not an interrupted lq compress run" in refused.stderr

    xr.Dataset({"x": ("t", np.arange(3.0))}).to_zarr(tmp_path / "theirs.zarr", zarr_format=2)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    for dst in ("theirs.zarr", "notes"):
        result = lq("sample", dst, *small, "--overwrite", cwd=tmp_path, check=False)
        assert result.returncode == 1, result.stderr
        assert "refusing to remove it" in result.stderr and result.stderr.count("\n") == 1
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    assert xr.open_zarr(tmp_path / "theirs.zarr")["x"].values.tolist() == [0.0, 1.0, 2.0]
