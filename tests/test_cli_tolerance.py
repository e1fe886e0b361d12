"""Precision in the variable's units through ``lq`` (issue 10): ``--tolerance`` and config
tolerances on compress, the attributes they record, ``lq verify`` checking them (its JSON
``mode`` and ``abs_bound``, chunks looser than claimed), ``lq inspect`` showing them,
``--resume`` refusing another tolerance; and verify's one-row-per-variable report.
"""

from __future__ import annotations

import json
import subprocess
import warnings

import numpy as np
import pytest
import zarr
from test_cli_subprocess import lq_command
from typer.testing import CliRunner

from cli.main import app
from layerquantizer import dataset
from layerquantizer.codec import LayerQuantizer
from layerquantizer.zarr3 import LayerQuantizerCodec

runner = CliRunner()


def invoke(*args) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def verify_json(src, dst, *args) -> tuple[int, dict]:
    code, out, err = invoke("verify", src, dst, "--json", *args)
    assert code in (0, 1) and out, err
    return code, json.loads(out)


def attrs_of(store: str, name: str) -> dict:
    return dict(zarr.open_array(store, path=name, mode="r").attrs)


def test_compress_with_a_tolerance_then_verify_and_inspect(sample_store, tmp_path):
    dst = tmp_path / "tol.zarr"
    code, _, err = invoke("compress", sample_store, dst, "--vars", "temperature,geopotential",
                          "--tolerance", "0.01")  # fmt: skip
    assert code == 0, err
    attrs = attrs_of(str(dst), "temperature")
    assert attrs["layerquantizer_mode"] == "tolerance"
    assert attrs["layerquantizer_tolerance"] == 0.01
    assert "layerquantizer_nbits" not in attrs and "layerquantizer_error_bound" not in attrs

    code, report = verify_json(sample_store, dst)
    assert code == 0 and report["ok"] is True
    entry = report["variables"]["temperature"]
    assert (entry["mode"], entry["tolerance"], entry["nbits"], entry["units"]) == (
        "tolerance", 0.01, None, "K",
    )  # fmt: skip
    # The largest error allowed anywhere: the tolerance plus one float32 ulp (of ~300 K).
    assert 0.01 < entry["abs_bound"] < 0.01 + 1e-4
    assert 0 < entry["max_abs_error"] <= entry["abs_bound"]
    assert entry["codec_bound"] is None and entry["bound_from"] == "codec"
    # Every variable has the two keys; nbits and lossless ones keep today's meaning.
    copy = report["variables"]["2m_temperature"]
    assert copy["mode"] is None and copy["abs_bound"] == 0.0

    code, out, _ = invoke("inspect", dst)
    assert code == 0
    line = next(row for row in out.splitlines() if row.strip().startswith("temperature "))
    assert "tol 0.01 K" in line
    code, out, _ = invoke("inspect", dst, "--json")
    array = json.loads(out)["variables"]["temperature"]
    assert (array["mode"], array["tolerance"], array["error_bound"]) == ("tolerance", 0.01, None)


def test_nbits_stores_keep_their_attributes(sample_v2, tmp_path):
    dst = tmp_path / "nbits.zarr"
    code, _, err = invoke("compress", sample_v2, dst, "--vars", "temperature", "--nbits", "12")
    assert code == 0, err
    attrs = attrs_of(str(dst), "temperature")
    assert {k: v for k, v in attrs.items() if k.startswith("layerquantizer_")} == {
        "layerquantizer_codec": "layerquantizer1",
        "layerquantizer_nbits": 12,
        "layerquantizer_error_bound": 0.5 / 4095,
    }
    code, report = verify_json(sample_v2, dst, "--vars", "temperature")
    entry = report["variables"]["temperature"]
    assert code == 0 and entry["mode"] == "nbits" and entry["tolerance"] is None
    assert entry["max_abs_error"] <= entry["abs_bound"]
    assert entry["abs_bound"] == pytest.approx(max(lev["bound_abs"] for lev in entry["levels"]))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_config_tolerances_on_real_fields(real_store, tmp_path, zarr_format):
    config = tmp_path / "tol.yaml"
    config.write_text(
        f"zarr_format: {zarr_format}\nnbits: 12\nvariables:\n"
        "  geopotential: {tolerance: 1.0}\n"  # m**2 s**-2: 0.1 m of height
        "  u_component_of_wind: {tolerance: 0.05}\n"
        "  v_component_of_wind:\n"  # the default: 12 bits
        "  geopotential_float64: {tolerance: 0.5}\n"
    )
    dst = tmp_path / "real.zarr"
    code, _, err = invoke("compress", real_store, dst, "--config", config)
    assert code == 0, err
    group = zarr.open_group(str(dst), mode="r")
    codec = (
        group["geopotential"].metadata.compressor
        if zarr_format == 2
        else group["geopotential"].metadata.codecs[0]
    )
    assert isinstance(codec, LayerQuantizer if zarr_format == 2 else LayerQuantizerCodec)
    assert codec.tolerance == 1.0 and codec.nbits is None
    code, report = verify_json(real_store, dst)
    assert code == 0, report
    modes = {n: (e["mode"], e["tolerance"], e["nbits"]) for n, e in report["variables"].items()}
    assert modes["geopotential"] == ("tolerance", 1.0, None)
    assert modes["u_component_of_wind"] == ("tolerance", 0.05, None)
    assert modes["v_component_of_wind"] == ("nbits", None, 12)
    assert modes["geopotential_float64"] == ("tolerance", 0.5, None)  # float64 via float32
    for name in ("geopotential", "u_component_of_wind", "geopotential_float64"):
        entry = report["variables"][name]
        assert entry["max_abs_error"] <= entry["abs_bound"], name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("variables: {temperature: {nbits: 12, tolerance: 0.01}}",
         "variables.temperature.nbits and variables.temperature.tolerance are both given"),
        ("nbits: 12\ntolerance: 0.5\nvariables: {temperature: }",
         "nbits and tolerance are both given; keep one"),
        ("variables: {temperature: {tolerance: 1e-3}}",
         "'variables.temperature.tolerance' must be a number, got text '1e-3' (YAML reads"),
        ("tolerance: -1\nvariables: {temperature: }",
         "'tolerance' must be a positive, finite number (an absolute error), got -1"),
        ("variables: {temperature: {tolerance: .inf}}",
         "'variables.temperature.tolerance' must be a positive, finite number"),
    ],
)  # fmt: skip
def test_config_errors_name_the_file_and_key(sample_v2, tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code, _, err = invoke("compress", sample_v2, tmp_path / "out.zarr", "--config", config)
    assert code == 2
    assert err.startswith(f"lq: error: {config}: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nbits", "12", "--tolerance", "0.1"], "--nbits and --tolerance are exclusive"),
        (["--tolerance", "0"], "temperature: tolerance must be a positive, finite number"),
        (["--tolerance", "nan"], "temperature: tolerance must be a positive, finite number"),
    ],
)
def test_tolerance_option_errors(sample_v2, tmp_path, args, message):
    code, _, err = invoke("compress", sample_v2, tmp_path / "o.zarr", "--vars", "temperature",
                          *args)  # fmt: skip
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.slow
def test_chunks_looser_than_the_tolerance_claimed_are_a_metadata_mismatch(sample_v2, tmp_path):
    dst = tmp_path / "loose.zarr"
    dataset.compress(sample_v2, str(dst), variables=["temperature"], tolerance=0.01)
    claimed, loose = LayerQuantizer(tolerance=0.01), LayerQuantizer(tolerance=0.05)
    path = dst / "temperature" / "1.0.0.0"
    path.write_bytes(loose.encode(claimed.decode(path.read_bytes())))
    result = subprocess.run(
        [*lq_command(), "verify", sample_v2, str(dst), "--json", "--vars", "temperature"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    entry = json.loads(result.stdout)["variables"]["temperature"]
    found = sorted((p["kind"], p["chunk"]) for p in entry["problems"])
    assert found == [("bound", [1, 0, 0, 0]), ("metadata_mismatch", [1, 0, 0, 0])]
    message = next(p["message"] for p in entry["problems"] if p["kind"] == "metadata_mismatch")
    assert (
        "(temperature/1.0.0.0) is quantized with steps up to 0.1, coarser than twice the "
        "tolerance 0.01" in message
    )
    bound = next(p["message"] for p in entry["problems"] if p["kind"] == "bound")
    assert "beyond the tolerance (0.01 K + one float32 ulp)" in bound
    # Attributes that promise less than the codec metadata says are named too.
    array = zarr.open_array(str(dst), path="temperature", mode="r+")
    array.attrs["layerquantizer_tolerance"] = 0.001
    with warnings.catch_warnings():
        # zarr names lq's own marker (.lq-store.json) as no Zarr component: harmless here.
        warnings.filterwarnings("ignore", message=r"Object at \.lq-store\.json is not")
        zarr.consolidate_metadata(str(dst))
    code, report = verify_json(sample_v2, dst, "--vars", "temperature")
    messages = [p["message"] for p in report["variables"]["temperature"]["problems"]]
    assert code == 1
    assert (
        "temperature: the attribute layerquantizer_tolerance says 0.001, the codec metadata "
        "tolerance 0.01"
    ) in messages


def test_a_coarse_step_that_keeps_the_tolerance_is_no_mismatch(sample_v2, tmp_path):
    """Steps over twice the tolerance are the encoder's own choice where values keep it
    (coarse grids, the float32 spacing of large values): not a mismatch."""
    dst = tmp_path / "gph.zarr"
    # geopotential near 5e5 has a float32 spacing of 0.03 to 0.06: a 1e-3 tolerance takes it.
    code, _, err = invoke("compress", sample_v2, dst, "--vars", "geopotential",
                          "--tolerance", "0.001")  # fmt: skip
    assert code == 0, err
    code, report = verify_json(sample_v2, dst, "--vars", "geopotential")
    assert code == 0 and report["variables"]["geopotential"]["problems"] == []


def test_verify_prints_one_row_per_variable_and_by_level_on_demand(sample_v2, tmp_path):
    dst = tmp_path / "out.zarr"
    config = tmp_path / "c.yaml"
    config.write_text("variables: {temperature: {tolerance: 0.02}, geopotential: }")
    code, _, err = invoke("compress", sample_v2, dst, "--config", config)
    assert code == 0, err
    code, out, _ = invoke("verify", sample_v2, dst)
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 10  # one per variable, whatever the levels
    temperature = next(row for row in rows if row.startswith("│ temperature "))
    cells = [cell.strip() for cell in temperature.strip("│").split("│")]
    assert cells[0] == "temperature" and cells[1] == "K" and cells[-2:] == ["tol 0.02 K", "ok"]
    geopotential = next(row for row in rows if row.startswith("│ geopotential "))
    assert "16 bits, fs 1.02e-05" in geopotential  # the codec's 7.63e-06 + one ulp
    assert "lossless" in next(row for row in rows if row.startswith("│ 2m_temperature "))
    assert out.splitlines()[-1] == "ok: 10 variables within their bounds"

    code, out, _ = invoke("verify", sample_v2, dst, "--by-level", "--vars", "temperature")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│")]
    levels = [cell.strip() for cell in (row.strip("│").split("│")[1] for row in rows)]
    assert levels == ["1", "70", "350", "775", "1000"]
    assert all("tol 0.02 K" in row for row in rows)


def test_no_progress_bar_off_a_terminal(sample_v2, tmp_path):
    dst = tmp_path / "out.zarr"
    assert invoke("compress", sample_v2, dst, "--vars", "temperature")[0] == 0
    code, _, err = invoke("verify", sample_v2, dst)
    assert code == 0 and err == ""


def test_verify_progress_counts_every_chunk(sample_v2, tmp_path):
    dst = tmp_path / "out.zarr"
    dataset.compress(sample_v2, str(dst), variables=["temperature"], tolerance=0.1)
    calls = []
    dataset.verify(sample_v2, str(dst), variables=["temperature", "2m_temperature"],
                   progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)  # 3 time steps x 2 variables
    assert sorted(done for done, _ in calls) == list(range(7))


@pytest.mark.slow
def test_resume_with_another_tolerance_is_refused(sample_v2, tmp_path):
    class Interrupted(Exception):
        pass

    def interrupt(done, *_):
        if done >= 1:
            raise Interrupted

    dst = tmp_path / "run.zarr"
    with pytest.raises(Interrupted):
        dataset.compress(sample_v2, str(dst), variables=["temperature"], tolerance=0.01,
                         progress=interrupt, scheduler="synchronous")  # fmt: skip
    result = subprocess.run(
        [*lq_command(), "compress", sample_v2, str(dst), "--vars", "temperature",
         "--tolerance", "0.02", "--resume"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "variables.temperature.tolerance: 0.01 -> 0.02" in result.stderr
    # The same tolerance finishes it; then a finished store refuses another one.
    report = dataset.compress(sample_v2, str(dst), variables=["temperature"], tolerance=0.01,
                              resume=True)  # fmt: skip
    assert report.units_resumed >= 1
    with pytest.raises(dataset.ResumeMismatchError, match="temperature tolerance 0.01"):
        dataset.compress(sample_v2, str(dst), variables=["temperature"], tolerance=0.05,
                         resume=True)  # fmt: skip
    array = np.asarray(zarr.open_array(str(dst), path="temperature", mode="r")[:])
    assert np.isfinite(array).all()


@pytest.mark.slow
def test_looser_nbits_chunks_with_the_interpolation_predictor_are_a_mismatch(sample_v2, tmp_path):
    """Chunks in format versions 2 and 3 (the interpolation predictor, chosen at 12 bits or
    fewer) have the same prefix: their nbits are read as those of version 1."""
    from layerquantizer import chunk

    dst = tmp_path / "v2chunks.zarr"
    dataset.compress(sample_v2, str(dst), variables=["temperature"], nbits=16)
    path = dst / "temperature" / "0.0.0.0"
    values = LayerQuantizer(nbits=16).decode(path.read_bytes())
    path.write_bytes(chunk.encode(values, nbits=8, level=1, predictor="interpolation"))
    assert path.read_bytes()[4] in (2, 3)  # format version 2, or 3 (range-coded blocks)
    result = subprocess.run(
        [*lq_command(), "verify", sample_v2, str(dst), "--json", "--vars", "temperature"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    entry = json.loads(result.stdout)["variables"]["temperature"]
    assert ("metadata_mismatch", [0, 0, 0, 0]) in [
        (p["kind"], p["chunk"]) for p in entry["problems"]
    ]


@pytest.mark.slow
def test_verify_draws_a_progress_bar_on_a_terminal(sample_v2, tmp_path):
    """stderr a terminal (a pseudo-terminal here), stdout a pipe: the bar goes to stderr
    only, and the report stays clean."""
    import os
    import threading

    dst = tmp_path / "out.zarr"
    dataset.compress(sample_v2, str(dst), variables=["temperature"], tolerance=0.1)
    leader, follower = os.openpty()
    seen = bytearray()

    def drain():
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the follower side closed
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "COLUMNS": "120"}
    try:
        result = subprocess.run(
            [*lq_command(), "verify", sample_v2, str(dst), "--vars", "temperature"],
            stdout=subprocess.PIPE, stderr=follower, text=True, timeout=300, env=env,
        )  # fmt: skip
    finally:
        os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    assert result.returncode == 0
    assert b"verifying" in seen and b"chunks" in seen
    assert "verifying" not in result.stdout
    assert result.stdout.splitlines()[-1] == "ok: 1 variable within its bound"
