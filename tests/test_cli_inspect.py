"""``lq inspect`` through CliRunner: table and JSON contract."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_inspect_json_contract(sample_store):
    result = runner.invoke(app, ["inspect", sample_store, "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["variables"]) == {
        "geopotential", "temperature", "u_component_of_wind", "v_component_of_wind",
        "specific_humidity", "vertical_velocity", "2m_temperature", "mean_sea_level_pressure",
        "10m_u_component_of_wind", "10m_v_component_of_wind",
    }  # fmt: skip
    entry = report["variables"]["temperature"]
    for key in ("codec", "dims", "shape", "chunks", "dtype", "settings", "objects"):
        assert key in entry
    assert isinstance(entry["logical_bytes"], int) and isinstance(entry["stored_bytes"], int)
    assert isinstance(entry["ratio"], float)
    assert entry["dims"] == ["time", "level", "latitude", "longitude"]
    assert set(report["coordinates"]) == {"time", "level", "latitude", "longitude"}
    total = report["total"]
    assert total["stored_bytes"] >= sum(v["stored_bytes"] for v in report["variables"].values())
    assert total["variables"] == 10


def test_inspect_table_of_a_compressed_store(sample_v2, tmp_path):
    dst = str(tmp_path / "out.zarr")
    assert runner.invoke(app, ["compress", sample_v2, dst, "--vars", "temperature"]).exit_code == 0
    result = runner.invoke(app, ["inspect", dst])
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("  temperature "))
    assert "layerquantizer1" in line and "nbits=16" in line and "(fs bound 7.6e-06)" in line


def test_inspect_not_a_store(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == f"lq: error: {tmp_path} is not a Zarr store (no .zgroup or "
        "zarr.json at its root)"
    )
