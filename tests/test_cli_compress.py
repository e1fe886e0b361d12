"""``lq compress`` through Typer's CliRunner: output, JSON contract, options and errors."""

from __future__ import annotations

import json

import pytest
import xarray as xr
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, code: int, match: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lq: error: ")
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_compress_prints_a_report_table(sample_store, tmp_path):
    dst = tmp_path / "out.zarr"
    result = run("compress", sample_store, dst, "--vars", "temperature,geopotential")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for text in ("temperature*", "geopotential*", "2m_temperature", "ratio", "nbits=16", "total"):
        assert text in out
    assert "MiB/s" in out.splitlines()[-1]
    assert result.stderr == ""  # no progress bar when not on a terminal


def test_compress_json_contract(sample_store, tmp_path):
    dst = tmp_path / "out.zarr"
    result = run(
        "compress", sample_store, dst, "--vars", "temperature", "--nbits", "12", "--json",
        "--zarr-format", "3", "--chunks", "level=2", "--workers", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    temperature = report["variables"]["temperature"]
    assert temperature["quantized"] is True
    assert temperature["codec"] == "layerquantizer"
    assert temperature["settings"]["nbits"] == 12
    assert temperature["chunks"] == [1, 2, 37, 72]
    assert isinstance(temperature["logical_bytes"], int)
    assert isinstance(temperature["stored_bytes"], int)
    assert temperature["ratio"] > 1
    assert report["variables"]["geopotential"]["quantized"] is False
    assert report["zarr_format"] == 3
    assert set(report["total"]) >= {"logical_bytes", "stored_bytes", "ratio", "objects"}
    assert set(report["timing"]) == {"seconds", "logical_bytes", "mib_per_s"}
    back = xr.open_zarr(dst)
    assert back["temperature"].attrs["layerquantizer_nbits"] == 12


def test_config_and_overrides(sample_v2, tmp_path):
    config = tmp_path / "lq.yaml"
    config.write_text(
        "nbits: 12\nzarr_format: 3\non_missing: skip\n"
        "variables:\n  temperature:\n  specific_humidity: {nbits: 18}\n  ozone:\n"
    )
    result = run("compress", sample_v2, tmp_path / "a.zarr", "--config", config, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["variables"]["temperature"]["settings"]["nbits"] == 12
    assert report["variables"]["specific_humidity"]["settings"]["nbits"] == 18
    assert report["zarr_format"] == 3 and report["skipped"] == ["ozone"]
    result = run(
        "compress", sample_v2, tmp_path / "b.zarr", "--config", config, "--json", "--nbits", "10",
        "--zarr-format", "2", "--vars", "geopotential",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["zarr_format"] == 2
    assert [n for n, v in report["variables"].items() if v["quantized"]] == ["geopotential"]
    assert report["variables"]["geopotential"]["settings"]["nbits"] == 10


def test_time_and_levels_subset(sample_v2, tmp_path):
    dst = tmp_path / "sub.zarr"
    result = run(
        "compress", sample_v2, dst, "--vars", "temperature", "--time", "2020-01-01T06:00:",
        "--levels", "1000,350",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    back = xr.open_zarr(dst)
    # The source's order (1, 70, 350, 775, 1000), not the order asked.
    assert back.sizes["time"] == 2 and back["level"].values.tolist() == [350, 1000]


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        pytest.param(["--vars", "temprature"], 2,
                     "variable 'temprature' not found; available: 10m_u_component_of_wind, ",
                     id="unknown-variable"),
        pytest.param(["--vars", "temperature", "--time", "2020-01-01"], 2,
                     "--time: expected a time range START:END", id="bad-time"),
        pytest.param(["--vars", "temperature", "--time", "2030:"], 2,
                     "time range 2030: selects no time step", id="empty-time"),
        pytest.param(["--vars", "temperature", "--levels", "500,x"], 2,
                     "--levels: expected comma-separated pressure levels", id="bad-levels"),
        pytest.param(["--vars", "temperature", "--levels", "500"], 2,
                     "level(s) 500 not in the source; available: 1, 70, 350, 775, 1000",
                     id="missing-level"),
        pytest.param(["--vars", "temperature", "--levels", "350,350"], 2,
                     "level(s) 350 listed twice", id="repeated-level"),
        pytest.param(["--vars", "temperature", "--chunks", "time"], 2,
                     "--chunks: expected DIM=SIZE pairs", id="bad-chunks"),
        pytest.param(["--vars", "temperature", "--nbits", "40"], 2,
                     "temperature: nbits must be between 1 and 24, got 40", id="bad-nbits"),
        pytest.param(["--vars", "temperature", "--zarr-format", "4"], 2,
                     "zarr format must be 2 or 3, got 4", id="bad-format"),
        pytest.param(["--vars", "time"], 2, "'time' is a coordinate, not a data variable",
                     id="coordinate"),
        pytest.param([], 2, "no variables to quantize: name them with --vars", id="no-vars"),
    ],
)  # fmt: skip
def test_usage_errors(sample_v2, tmp_path, args, code, match):
    result = run("compress", sample_v2, tmp_path / "out.zarr", *args)
    assert_one_line_error(result, code, match)
    assert not (tmp_path / "out.zarr").exists()


def test_float64_and_2d_variables_are_quantized(real_store, tmp_path):
    result = run("compress", real_store, tmp_path / "o.zarr", "--vars", "geopotential_float64")
    assert result.exit_code == 0, result.stderr  # through float32, within the float64 bound
    back = xr.open_zarr(tmp_path / "o.zarr")["geopotential_float64"]
    assert back.dtype == "float32" and back.attrs["layerquantizer_source_dtype"] == "float64"
    result = run("compress", real_store, tmp_path / "p.zarr", "--vars", "land_sea_mask")
    assert result.exit_code == 0, result.stderr  # 2-D is fine


def test_bad_config(sample_v2, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("variables:\n  temperature: {nbit: 12}\n")
    result = run("compress", sample_v2, tmp_path / "o.zarr", "--config", config)
    assert_one_line_error(result, 2, f"{config}: unknown key 'nbit' in 'variables.temperature'")
    result = run("compress", sample_v2, tmp_path / "o.zarr", "--config", tmp_path / "none.yaml")
    assert_one_line_error(result, 2, "none.yaml: cannot read config file")


def test_existing_destination(sample_v2, tmp_path):
    dst = tmp_path / "out.zarr"
    assert run("compress", sample_v2, dst, "--vars", "temperature").exit_code == 0
    result = run("compress", sample_v2, dst, "--vars", "temperature")
    assert_one_line_error(result, 1, "already exists; pass --overwrite to replace it")
    result = run("compress", sample_v2, dst, "--vars", "geopotential", "--overwrite", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["variables"]["temperature"]["quantized"] is False
    result = run("compress", sample_v2, dst, "--vars", "t", "--overwrite", "--resume")
    assert_one_line_error(result, 2, "--overwrite and --resume exclude each other")


def test_unreadable_source(tmp_path):
    result = run("compress", tmp_path / "missing.zarr", tmp_path / "o.zarr", "--vars", "t")
    assert_one_line_error(result, 1, "missing.zarr as a Zarr dataset")


def test_debug_lets_the_exception_through(tmp_path):
    result = run("compress", tmp_path / "missing.zarr", tmp_path / "o.zarr", "--vars", "t",
                 "--debug")  # fmt: skip
    assert result.exit_code == 1
    from layerquantizer.dataset import SourceError

    assert isinstance(result.exception, SourceError)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("compress", "verify", "inspect", "sample"):
        assert command in result.stdout


def test_config_mistakes_are_named(sample_v2, tmp_path):
    dst = tmp_path / "o.zarr"
    config = tmp_path / "drop.yaml"
    config.write_text("variables: {temperature: }\ndrop: [2m_temperatur]\n")
    result = run("compress", sample_v2, dst, "--config", config)
    assert_one_line_error(
        result, 2, f"{config}: 'drop' lists '2m_temperatur', not in the source; available: "
    )  # fmt: skip
    config.write_text("variables: {temperature: }\ndrop: [time]\n")
    result = run("compress", sample_v2, dst, "--config", config)
    assert_one_line_error(result, 2, "'drop' lists 'time', a coordinate, not a data variable")
    # With on_missing: skip, a name the source lacks is skipped, as in 'variables'.
    config.write_text("on_missing: skip\nvariables: {temperature: }\ndrop: [ozone]\n")
    result = run("compress", sample_v2, dst, "--config", config)
    assert result.exit_code == 0, result.stderr
    assert "not in the source, skipped: ozone" in result.stdout

    config = tmp_path / "twice.yaml"
    config.write_text("nbits: 12\nvariables:\n  temperature:\n  temperature: {nbits: 20}\n")
    result = run("compress", sample_v2, tmp_path / "p.zarr", "--config", config)
    assert_one_line_error(
        result, 2, f"{config}: line 4: key 'temperature' given twice (first on line 3); keep one"
    )  # fmt: skip
    assert not (tmp_path / "p.zarr").exists()
