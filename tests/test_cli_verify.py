"""``lq verify`` through CliRunner: exit status, table and JSON contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture
def compressed(sample_v2, tmp_path) -> str:
    dst = str(tmp_path / "out.zarr")
    result = runner.invoke(app, ["compress", sample_v2, dst, "--vars", "temperature,geopotential"])
    assert result.exit_code == 0, result.stderr
    return dst


def test_verify_ok_table(sample_v2, compressed):
    result = runner.invoke(app, ["verify", sample_v2, compressed])
    assert result.exit_code == 0, result.stderr
    assert "temperature" in result.stdout and "lossless" in result.stdout
    assert "ok: 10 variables within their bounds" in result.stdout


def test_verify_json_contract(sample_v2, compressed):
    result = runner.invoke(app, ["verify", sample_v2, compressed, "--json", "--vars",
                                 "temperature,2m_temperature"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["complete"] is True and report["problems"] == []
    entry = report["variables"]["temperature"]
    assert entry["problems"] == [] and entry["bound_from"] == "codec"
    for key in ("max_fs_error", "max_abs_error", "bound"):
        assert isinstance(entry[key], float)
    assert entry["ok"] is True and entry["max_fs_error"] <= entry["bound"]
    assert entry["codec_bound"] == pytest.approx(7.62951e-06)
    assert [lev["level"] for lev in entry["levels"]] == [1, 70, 350, 775, 1000]
    assert set(entry["levels"][0]) >= {"level", "max_abs_error", "max_fs_error", "rmse", "ok"}


def test_verify_failure_exits_1(sample_v2, compressed):
    array = zarr.open_array(compressed, path="geopotential", mode="r+")
    array[0, 4, 3, 3] = array[0, 4, 3, 3] + np.float32(50.0)
    result = runner.invoke(app, ["verify", sample_v2, compressed])
    assert result.exit_code == 1
    assert "FAILED: geopotential (bound)" in result.stdout
    assert "bound: geopotential: chunk (0, 0, 0, 0): errors up to " in result.stdout
    result = runner.invoke(app, ["verify", sample_v2, compressed, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["variables"]["geopotential"]["ok"] is False
    assert report["variables"]["temperature"]["ok"] is True
    assert report["variables"]["geopotential"]["problems"] == [
        {"kind": "bound", "chunk": [0, 0, 0, 0], "message": "geopotential: chunk (0, 0, 0, 0): "
         "errors up to 0.208 of the layer's range, beyond the bound (7.63e-06 of the layer's "
         "range)"},
    ]  # fmt: skip
    assert [lev["ok"] for lev in report["variables"]["geopotential"]["levels"]] == [
        True, True, True, True, False,
    ]  # fmt: skip


def test_verify_unknown_variable(sample_v2, compressed):
    result = runner.invoke(app, ["verify", sample_v2, compressed, "--vars", "nope"])
    assert result.exit_code == 2
    assert result.stderr.startswith("lq: error: variable 'nope' not found in ")


def test_verify_stated_bounds_must_be_numbers(sample_v2, compressed):
    result = runner.invoke(app, ["verify", sample_v2, compressed, "--max-abs-error", "-1"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "lq: error: --max-abs-error must be a finite number >= 0, got -1.0"
    )
