"""``precision: source`` (issue 10): keep what the source had. ``lq compress`` finds the
packing grid of each such variable in a few sampled chunks and quantizes with half its step
as the tolerance, so that real GRIB-packed fields come back bit for bit; a field on no grid
is refused before anything is written; ``lq advise --config-out`` writes the setting where
the source's grid decides, and ``--dry-run`` shows the grid found.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import yaml
from test_cli_subprocess import lq
from typer.testing import CliRunner

from cli.main import app
from conftest import ensemble_dataset
from layerquantizer import dataset
from layerquantizer.dataset._source_grid import (
    SOURCE_SAMPLE,
    _sample_chunks,
    find_source_grid,
    snap_step,
)

runner = CliRunner()


def _ensemble_store(path) -> str:
    """ERA5 ensemble geopotential (on 0.125 m**2 s**-2, some layers 0.25) and temperature
    (on 2**-10 K, some layers 2**-9), from real_fields.npz, as Zarr v2."""
    ds = ensemble_dataset()
    ds["temperature"].attrs["units"] = "K"
    ds.chunk({"number": 1, "time": 1}).to_zarr(path, zarr_format=2, consolidated=True)
    return str(path)


def _uk_store(path) -> str:
    """ERA5 2 m temperature over the UK, hourly for a month (on 2**-9 K), as Zarr v3."""
    from conftest import _load_real

    t2m = _load_real()["era5uk_t2m"]
    ds = xr.Dataset(
        {"2m_temperature": (("time", "latitude", "longitude"), t2m, {"units": "K"})},
        coords={
            "time": np.datetime64("2020-01-01T00", "ns") + np.arange(744) * np.timedelta64(1, "h"),
            "latitude": np.linspace(61, 49, t2m.shape[1]),
            "longitude": np.linspace(-11, 1, t2m.shape[2]),
        },
    )
    ds.chunk({"time": 24}).to_zarr(path, zarr_format=3, consolidated=False)
    return str(path)


CASES = {
    # The default of the config, for every variable it quantizes.
    "ensemble-default": (
        _ensemble_store,
        "precision: source\nvariables: {geopotential: , temperature: }\n",
        {"geopotential": 0.125, "temperature": 2.0**-10},
    ),
    # A variable's own setting, over a default nbits.
    "uk-t2m-per-variable": (
        _uk_store,
        "nbits: 12\nvariables: {2m_temperature: {precision: source}}\n",
        {"2m_temperature": 2.0**-9},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_grib_packed_fields_come_back_bit_for_bit(tmp_path, case):
    """Before: no `precision: source` (advise wrote `tolerance: step/2` rounded to 6
    digits, 2**-10 / 2 as 0.000488281, and the values came back within it but not
    exact). Now the grid step is found and snapped to the packing's own (2**-10, not
    0.00097656217), and every value comes back bit for bit; verify checks the bound."""
    make, config, steps = CASES[case]
    src = make(tmp_path / "src.zarr")
    (tmp_path / "source.yaml").write_text(config)
    lq("compress", src, "out.zarr", "--config", "source.yaml", cwd=tmp_path)
    verified = json.loads(lq("verify", src, "out.zarr", "--json", cwd=tmp_path).stdout)
    assert verified["ok"] is True
    before, after = xr.open_zarr(src, consolidated=False), xr.open_zarr(tmp_path / "out.zarr")
    for name, step in steps.items():
        attrs = after[name].attrs
        assert attrs["layerquantizer_mode"] == "source"
        assert attrs["layerquantizer_source_step"] == step
        assert attrs["layerquantizer_tolerance"] == step / 2
        assert np.array_equal(after[name].values, before[name].values), name
        entry = next(v for k, v in verified["variables"].items() if k == name)
        # verify's JSON gives 6 significant digits
        assert entry["mode"] == "source" and entry["tolerance"] == pytest.approx(step / 2, 1e-6)
        assert entry["max_abs_error"] == 0.0
    if case == "ensemble-default":  # the table says the mode from the attributes: once
        inspected = lq("inspect", "out.zarr", cwd=tmp_path).stdout
        assert "source, tol" in inspected


@pytest.mark.slow
def test_a_field_on_no_grid_is_refused_before_anything_is_written(tmp_path):
    """The synthetic sample's fields are smooth float32 waves, on no packing grid: one line
    naming the variable and the ways out, exit 2, no DST and no lock."""
    # As `lq sample sample.zarr --levels 3 --grid 48x25 --times 2` writes it, in process.
    dataset.write_sample(str(tmp_path / "sample.zarr"), levels=3, grid=(25, 48), times=2)
    (tmp_path / "source.yaml").write_text("variables: {temperature: {precision: source}}\n")
    for args in (("--config", "source.yaml"), ("--vars", "temperature", "--precision", "source")):
        result = lq("compress", "sample.zarr", "out.zarr", *args, cwd=tmp_path, check=False)
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert message.count("\n") == 0, message
        assert "'temperature'" in message and "no packing grid" in message
        for way_out in ("tolerance:", "nbits:", "copy:"):
            assert way_out in message
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.zarr", "source.yaml"]


def test_precision_is_exclusive_and_takes_only_source(tmp_path):
    src = _ensemble_store(tmp_path / "ens.zarr")
    for extra, expected in (
        (["--nbits", "12"], "--nbits and --precision are exclusive"),
        (["--tolerance", "0.1"], "--tolerance and --precision are exclusive"),
    ):
        result = runner.invoke(
            app, ["compress", src, str(tmp_path / "out.zarr"), "--vars", "geopotential",
                  "--precision", "source", *extra],
        )  # fmt: skip
        assert result.exit_code == 2 and expected in result.stderr
    result = runner.invoke(
        app, ["compress", src, str(tmp_path / "out.zarr"), "--vars", "geopotential",
              "--precision", "grib"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--precision must be 'source'" in result.stderr
    assert not (tmp_path / "out.zarr").exists()


def test_dry_run_shows_the_grid_found(tmp_path):
    src = _ensemble_store(tmp_path / "ens.zarr")
    common = ["compress", src, str(tmp_path / "out.zarr"), "--vars", "geopotential",
              "--precision", "source", "--dry-run"]  # fmt: skip
    result = runner.invoke(app, [*common, "--json"])
    assert result.exit_code == 0, result.stderr
    entry = json.loads(result.stdout)["variables"]["geopotential"]
    assert entry["precision"] == "source" and entry["nbits"] is None
    assert (entry["source_step"], entry["tolerance"]) == (0.125, 0.0625)
    table = runner.invoke(app, common)
    assert "source (step 0.125, tol 0.0625)" in table.stdout
    assert not (tmp_path / "out.zarr").exists()


def test_advise_writes_precision_source_where_the_grid_decides(tmp_path):
    """Before: `tolerance: 0.0625`, a number the user could not tell from a choice of
    their own. Now `precision: source`, which lq compress finds again and keeps."""
    src = _ensemble_store(tmp_path / "ens.zarr")
    out = tmp_path / "advised.yaml"
    result = runner.invoke(
        app, ["advise", src, "--vars", "geopotential", "--sample", "2", "--config-out", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(out.read_text())["variables"] == {"geopotential": {"precision": "source"}}
    assert "precision=source" in result.stdout
    report = dataset.compress(src, str(tmp_path / "out.zarr"), config=_load(out))
    assert report.store.variables["geopotential"].mode == "source"
    assert dataset.verify(src, str(tmp_path / "out.zarr")).ok


def _load(path):
    from layerquantizer.config import load_config

    return load_config(path)


def test_a_layer_on_a_finer_grid_than_the_sample_keeps_the_bound(tmp_path):
    """The documented promise: the step comes from the sampled chunks; a chunk outside the
    sample on a finer grid is held to half that step (+ one ulp), exact only on the grid."""
    shape, chunks = (8, 20, 30), (1, 20, 30)
    sampled = _sample_chunks(shape, chunks, SOURCE_SAMPLE, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    values = 250.0 + 0.5 * rng.integers(0, 200, shape)  # on a grid of 0.5
    finer = next(t for t in range(shape[0]) if (t, 0, 0) not in sampled)
    values[finer] += 0.125 * rng.integers(0, 4, shape[1:])  # on 0.125 only
    ds = xr.Dataset(
        {"t": (("time", "latitude", "longitude"), values.astype(np.float32))},
        coords={"latitude": np.linspace(90, -90, 20), "longitude": np.arange(30) * 12.0},
    )
    src, dst = str(tmp_path / "src.zarr"), str(tmp_path / "out.zarr")
    ds.chunk({"time": 1}).to_zarr(src, zarr_format=2, consolidated=True)
    assert find_source_grid(xr.open_zarr(src)["t"]).step == 0.5
    dataset.compress(src, dst, variables=["t"], precision="source")
    check = dataset.verify(src, dst)
    assert check.ok
    back = xr.open_zarr(dst)["t"].values
    others = [t for t in range(shape[0]) if t != finer]
    assert np.array_equal(back[others], values[others].astype(np.float32))
    assert 0 < np.abs(back[finer] - values[finer]).max() <= 0.25


def test_snap_step_takes_the_packings_round_step():
    assert snap_step(0.0009765621719527655) == 2.0**-10  # ERA5 temperature, as detected
    assert snap_step(0.125) == 0.125
    assert snap_step(0.0100000003) == 0.01
    assert snap_step(1.72502708164403) == 1.72502708164403  # netCDF scale_factor: kept


def test_the_plan_finds_the_same_step_again(tmp_path):
    """The sample is seeded per variable: a --resume re-plans to the same description."""
    from layerquantizer.dataset._resume import describe_plan

    src = _ensemble_store(tmp_path / "ens.zarr")
    plans = [
        dataset.plan_compress(
            dataset.open_dataset(src),
            variables=["geopotential", "temperature"],
            precision="source",
        )  # fmt: skip
        for _ in range(2)
    ]
    assert plans[0].source_steps == {"geopotential": 0.125, "temperature": 2.0**-10}
    assert plans[0].tolerances == {"geopotential": 0.0625, "temperature": 2.0**-11}
    assert describe_plan(plans[0], src) == describe_plan(plans[1], src)


def _many_grids_dataset(count: int = 6) -> xr.Dataset:
    """``count`` variables, each on a grid of its own (2**-k and decimal steps), in chunks of
    one time step: more sampled chunks than the threads that read them."""
    rng = np.random.default_rng(1)
    dims = ("time", "level", "latitude", "longitude")
    steps = [2.0**-9, 2.0**-6, 0.125, 0.01, 0.5, 2.0**-12][:count]
    data = {
        f"field_{i}": (dims, (250 + rng.integers(0, 4000, (5, 2, 19, 36)) * step).astype("f4"))
        for i, step in enumerate(steps)
    }
    return xr.Dataset(data).chunk({"time": 1})


def test_the_grids_read_at_once_are_those_read_one_by_one(tmp_path):
    """precision: source reads the sampled chunks of all its variables concurrently (before:
    one after another): the same chunks, the same grids, the same plan."""
    from layerquantizer.dataset._source_grid import find_source_grids

    src = tmp_path / "many.zarr"
    _many_grids_dataset().to_zarr(src, zarr_format=2, consolidated=True)
    ds = dataset.open_dataset(str(src))
    variables = {str(name): ds[name] for name in ds.data_vars}
    one_by_one = {name: find_source_grid(var) for name, var in variables.items()}
    assert find_source_grids(variables, threads=1) == one_by_one
    assert find_source_grids(variables, threads=8) == one_by_one
    assert find_source_grids(variables, seed=3) != one_by_one  # the seed picks the chunks
    plan = dataset.plan_compress(ds, variables=list(variables), precision="source")
    assert plan.source_steps == {
        "field_0": 2.0**-9, "field_1": 2.0**-6, "field_2": 0.125, "field_3": 0.01,
        "field_4": 0.5, "field_5": 2.0**-12,
    }  # fmt: skip
    assert list(plan.quantized) == list(variables)  # in the order asked, as before


@pytest.mark.slow
def test_precision_source_on_gcs(gcs_bucket):
    """The concurrent reads through gcsfs (the emulator of tests/servers.py)."""
    src = f"gs://{gcs_bucket}/many.zarr"
    _many_grids_dataset().to_zarr(src, zarr_format=2, consolidated=True,
                                  storage_options={"token": "anon"})  # fmt: skip
    ds = dataset.open_dataset(src, token="anon")
    plan = dataset.plan_compress(ds, variables=list(ds.data_vars), precision="source")
    assert plan.source_steps == {
        "field_0": 2.0**-9, "field_1": 2.0**-6, "field_2": 0.125, "field_3": 0.01,
        "field_4": 0.5, "field_5": 2.0**-12,
    }  # fmt: skip
    # A variable on no grid is still named, whatever the order the reads ended in.
    noisy = _many_grids_dataset(2)
    noisy["field_1"] = noisy["field_1"] + np.float32(1e-3) * np.sin(np.arange(36, dtype="f4"))
    noisy.to_zarr(f"gs://{gcs_bucket}/noisy.zarr", zarr_format=2, consolidated=True,
                  storage_options={"token": "anon"})  # fmt: skip
    with pytest.raises(dataset.RequestError, match="source precision of 'field_1'"):
        dataset.plan_compress(
            dataset.open_dataset(f"gs://{gcs_bucket}/noisy.zarr", token="anon"),
            variables=["field_0", "field_1"], precision="source",
        )  # fmt: skip
