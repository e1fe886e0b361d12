"""``lq`` as users run it: the installed console script in a subprocess, not a terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def lq_command() -> list[str]:
    script = Path(sys.executable).parent / "lq"
    if script.exists():
        return [str(script)]
    found = shutil.which("lq")
    return [found] if found else [sys.executable, "-m", "cli"]


def lq(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*lq_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lq {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def test_readme_one_liner(tmp_path):
    """The README's first command, after the install, on the embedded default."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    bin_dir = Path(lq_command()[0]).parent
    command = (
        "lq sample sample.zarr && "
        "lq compress sample.zarr sample-lq.zarr --config configs/era5.yaml && "
        "lq verify sample.zarr sample-lq.zarr && lq inspect sample-lq.zarr"
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    if lq_command()[0] == sys.executable:
        pytest.skip("no lq console script installed")
    result = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ok: 10 variables within their bounds" in result.stdout
    assert result.stderr == ""  # not a terminal: no progress bar
    back = xr.open_zarr(tmp_path / "sample-lq.zarr")
    assert back["specific_humidity"].attrs["layerquantizer_nbits"] == 20
    assert back["temperature"].attrs["layerquantizer_nbits"] == 16
    # configs/era5.yaml gives every variable a treatment: the 2-D fields are quantized too.
    assert back["2m_temperature"].attrs["layerquantizer_nbits"] == 16


@pytest.mark.parametrize("zarr_format", ["2", "3"])
def test_real_fields_end_to_end(real_store, tmp_path, zarr_format):
    dst = tmp_path / "eraint-lq.zarr"
    result = lq(
        "compress", real_store, dst, "--vars", "geopotential,u_component_of_wind,"
        "v_component_of_wind", "--zarr-format", zarr_format, "--workers", "2", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["variables"]["geopotential"]["ratio"] > 2
    verified = json.loads(lq("verify", real_store, dst, "--json", cwd=tmp_path).stdout)
    assert verified["ok"] is True
    assert verified["variables"]["land_sea_mask"]["bound"] == 0.0
    inspected = json.loads(lq("inspect", dst, "--json", cwd=tmp_path).stdout)
    assert inspected["variables"] == {
        name: {k: v for k, v in entry.items() if k != "quantized"}
        for name, entry in report["variables"].items()
    }
    # Read back through xarray alone and check the promise on the real fields.
    source, back = xr.open_zarr(real_store).load(), xr.open_zarr(dst).load()
    for name in ("geopotential", "u_component_of_wind", "v_component_of_wind"):
        a = source[name].values.astype(np.float64)
        b = back[name].values.astype(np.float64)
        span = np.ptp(a, axis=(-2, -1), keepdims=True)
        ulp = np.spacing(np.abs(source[name].values)).astype(np.float64)
        assert (np.abs(a - b) <= span * 0.5 / (2**16 - 1) + ulp).all(), name
    xr.testing.assert_identical(back["land_sea_mask"], source["land_sea_mask"])


def test_errors_are_one_line_without_traceback(sample_v2, tmp_path):
    result = lq("compress", sample_v2, tmp_path / "o.zarr", "--vars", "nope", cwd=tmp_path,
                check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lq: error: variable")
    result = lq("compress", tmp_path / "missing", tmp_path / "o.zarr", "--vars", "t", "--debug",
                cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "SourceError" in result.stderr


def test_a_long_list_of_skipped_variables_is_a_count_and_a_few_names(tmp_path):
    """Before: configs/era5.yaml on the `lq sample` store printed one line naming all 58
    variables the store lacks (several lines of a terminal). Now the count and the first
    few names; --json keeps the full list. The same for any list of names compress prints."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    lq("sample", "sample.zarr", "--levels", "2", "--grid", "48x25", "--times", "1", cwd=tmp_path)
    config = "configs/era5.yaml"
    result = lq("compress", "sample.zarr", "out.zarr", "--config", config, cwd=tmp_path)
    [line] = [text for text in result.stdout.splitlines() if "not in the source" in text]
    again = lq("compress", "sample.zarr", "out.zarr", "--config", config, "--overwrite", "--json",
               cwd=tmp_path)  # fmt: skip
    skipped = json.loads(again.stdout)["skipped"]
    assert len(skipped) > 50
    assert line == (
        f"not in the source, skipped {len(skipped)} variables: {', '.join(skipped[:5])} and "
        f"{len(skipped) - 5} more (--json lists them all)"
    )
