"""``lq advise`` and the pictures: the bit information against known cases, the advice on
real fields, the written config through ``lq compress`` and ``lq verify``, and ``--plot``."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import yaml
from test_cli_subprocess import lq
from typer.testing import CliRunner

from cli.main import app
from layerquantizer import dataset
from layerquantizer.config import load_config
from layerquantizer.dataset._advise import _free_entropy, bitround_error

runner = CliRunner()

# xbitinfo 0.0.7's Python implementation (xbitinfo/_py_bitinfo.py: signed_exponent, then
# bitinformation along axis 1, no significance threshold) on real_fields.npz
# eraint_u[0, 1] (January, 500 hPa), computed once with that package.
XBITINFO_ERAINT_U = [
    0.768539, 0.491966, 0.0, 0.0, 2.19313e-07, 0.0, 0.616023, 0.821719, 0.711704, 0.555329,
    0.411577, 0.244059, 0.10167, 0.0257486, 0.00551279, 0.00366563, 0.0023983, 0.00945479,
    0.00771476, 0.00435545, 0.00183643, 0.000449962, 0.000307538, 0.000187365, 0.00222827,
    0.00254856, 0.00159261, 0.00106005, 0.000731971, 0.00204249, 0.0132719, 0.130197,
]  # fmt: skip


def test_bitinformation_matches_xbitinfo_on_a_real_field(real_fields):
    counts = dataset.bit_pair_counts(real_fields["eraint_u"][0, 1], axis=-1)
    info = dataset.bitinformation(counts, confidence=None)
    np.testing.assert_allclose(info, XBITINFO_ERAINT_U, rtol=1e-5, atol=1e-12)
    # With the paper's significance threshold the noise of the last bits goes; sign,
    # exponent and the leading mantissa bits stay.
    significant = dataset.bitinformation(counts)
    threshold = _free_entropy(int(counts[0].sum()), 0.99)
    assert (significant[info <= threshold] == 0).all()
    assert (significant[info > threshold] == info[info > threshold]).all()
    assert dataset.keepbits(significant) == 3


def test_free_entropy_is_the_papers_binomial_threshold():
    # Klöwer et al. 2021: p = 1/2 + z / (2 sqrt(n)), z the 99.5 % normal quantile;
    # threshold 1 - H(p).
    n = 10_000
    p = 0.5 + 2.5758293035489004 / (2 * math.sqrt(n))
    expected = 1 + p * math.log2(p) + (1 - p) * math.log2(1 - p)
    assert _free_entropy(n, 0.99) == pytest.approx(expected, rel=1e-9)
    assert _free_entropy(1, 0.99) == 1.0  # one pair proves nothing


def test_bitinformation_of_copied_and_independent_bits():
    rng = np.random.default_rng(0)
    # The first mantissa bit (1.0 or 1.5) repeated once: equal to its neighbour's in every
    # other pair, independent in the others; joint probabilities 3/8 (equal) and 1/8
    # (different), so 2 * 3/8 log2(3/2) + 2 * 1/8 log2(1/2) bits. Random low bits: nothing
    # significant.
    steps = np.repeat(rng.integers(0, 2, 200_000), 2)
    values = (1 + 0.5 * steps + rng.random(400_000) * 2.0**-10).astype(np.float32)
    info = dataset.bitinformation(dataset.bit_pair_counts(values))
    assert info[9] == pytest.approx(0.75 * math.log2(1.5) - 0.25, abs=0.005)
    assert (info[-10:] == 0).all()


@pytest.mark.parametrize("noise_bits", [8, 12, 16])
def test_keepbits_stop_where_the_noise_starts(noise_bits):
    """A smooth signal of magnitude 1.x plus uniform noise of 2**-k: the real information
    ends within a few mantissa bits of bit k."""
    rng = np.random.default_rng(1)
    x = np.linspace(0, 20, 200_000)
    noise = rng.uniform(-1, 1, x.size) * 2.0**-noise_bits
    values = (1.25 + 0.2 * np.sin(x) + noise).astype(np.float32)
    kept = dataset.keepbits(dataset.bitinformation(dataset.bit_pair_counts(values)))
    assert noise_bits - 3 <= kept <= noise_bits


def test_bitround_error():
    assert bitround_error(1.0, 0) == 0.5
    assert bitround_error(300.0, 7) == 1.0  # 2**8 <= 300 < 2**9: last kept bit 2**1
    assert bitround_error(0.0, 5) == 0.0


@pytest.fixture(scope="module")
def ensemble_v2(tmp_path_factory):
    from conftest import ensemble_dataset

    path = tmp_path_factory.mktemp("ens") / "era5ens.zarr"
    ds = ensemble_dataset()
    ds["temperature"].attrs["units"] = "K"
    ds.chunk({"number": 1, "time": 1}).to_zarr(path, zarr_format=2, consolidated=True)
    return str(path)


def test_advise_finds_the_packing_grid_and_keeps_it(ensemble_v2):
    """ERA5 ensemble geopotential sits on a grid of 0.125 m**2 s**-2 (GRIB packing):
    advised as half that tolerance, which measures lossless on the sample."""
    report = dataset.advise(ensemble_v2, variables=["geopotential", "temperature"], sample=2)
    z = report.variables["geopotential"]
    assert z.source_step == 0.125
    assert z.layers_on_grid == z.layers == 4  # 2 chunks x 2 levels
    assert z.source_bits == 16
    rec = z.recommendation
    assert rec.tolerance == 0.0625 and rec.trial.max_abs_error == 0.0
    # Every measured nbits keeps the bound it promises on the sample.
    for trial in z.trials:
        if trial.mode == "nbits":
            assert trial.max_fs_error <= 0.5 / (2 ** int(trial.value) - 1) + 1e-6
        else:
            assert trial.max_abs_error <= trial.value * (1 + 1e-6) + 2.0**-8
    ratios = {t.value: t.ratio for t in z.trials if t.mode == "nbits"}
    assert ratios[8] > ratios[12] > 1
    assert report.variables["temperature"].units == "K"


def test_advise_sample_is_seeded(ensemble_v2):
    first = dataset.advise(ensemble_v2, variables=["temperature"], sample=3, seed=5, nbits=[12])
    again = dataset.advise(ensemble_v2, variables=["temperature"], sample=3, seed=5, nbits=[12])
    other = dataset.advise(ensemble_v2, variables=["temperature"], sample=3, seed=6, nbits=[12])
    chunks = first.variables["temperature"].chunks
    assert len(chunks) == 3 and chunks == again.variables["temperature"].chunks
    assert chunks != other.variables["temperature"].chunks
    assert first.to_dict() == again.to_dict()


def test_advise_json_and_requests(ensemble_v2):
    result = runner.invoke(
        app, ["advise", ensemble_v2, "--vars", "temperature", "--sample", "1", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["seed"] == 0 and report["sample"] == 1
    entry = report["variables"]["temperature"]
    assert len(entry["sampled_chunks"]) == 1
    assert entry["information"]["level"] == 0.99
    assert {t["value"] for t in entry["trials"] if t["mode"] == "nbits"} == {8, 10, 12, 14, 16, 20}
    assert entry["recommendation"]["measured"]["ratio"] > 1

    bad = runner.invoke(app, ["advise", ensemble_v2, "--sample", "0"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().count("\n") == 0 and "--sample" in bad.stderr
    missing = runner.invoke(app, ["advise", ensemble_v2, "--vars", "ozone"])
    assert missing.exit_code == 2 and "ozone" in missing.stderr


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
def test_advised_config_round_trips_through_compress_and_verify(real_store, tmp_path):
    """lq advise --config-out writes a config lq compress takes as is; lq verify passes;
    the three pictures are PNGs of the promised size."""
    names = "geopotential,u_component_of_wind,v_component_of_wind"
    result = lq(
        "advise", real_store, "--vars", names, "--config-out", "advised.yaml",
        "--plot", "advise.png", cwd=tmp_path,
    )  # fmt: skip
    assert "wrote advised.yaml" in result.stdout
    assert "seed 0" in result.stdout
    config = load_config(tmp_path / "advised.yaml")
    assert set(config.variables) == set(names.split(","))
    document = yaml.safe_load((tmp_path / "advised.yaml").read_text())
    lq("compress", real_store, "out.zarr", "--config", "advised.yaml", cwd=tmp_path)
    verified = lq("verify", real_store, "out.zarr", "--json", "--plot", "verify.png", cwd=tmp_path)
    assert json.loads(verified.stdout)["ok"] is True
    lq("inspect", "out.zarr", "--plot", "inspect.png", cwd=tmp_path)
    import xarray as xr

    back = xr.open_zarr(tmp_path / "out.zarr")
    for name, setting in document["variables"].items():
        if "nbits" in setting:
            assert back[name].attrs["layerquantizer_nbits"] == setting["nbits"]
    assert _png_size(tmp_path / "advise.png") == (1200, 720)
    assert _png_size(tmp_path / "inspect.png") == (1200, 720)
    assert _png_size(tmp_path / "verify.png") == (1680, 720)
    for picture in ("advise.png", "inspect.png", "verify.png"):
        assert (tmp_path / picture).stat().st_size < 200_000
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "verify.png").shape[:2] == (720, 1680)


def test_advise_config_keeps_the_input_configs_other_keys(ensemble_v2, tmp_path):
    given = tmp_path / "given.yaml"
    given.write_text("zarr_format: 3\nchunks: {time: 1}\nvariables: {temperature: , ozone: }\n")
    result = runner.invoke(
        app, ["advise", ensemble_v2, "--config", str(given), "--sample", "1",
              "--config-out", str(tmp_path / "out.yaml")],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "not in the source, skipped: ozone" in result.stdout
    config = load_config(tmp_path / "out.yaml")
    assert config.zarr_format == 3 and config.chunks == {"time": 1}
    setting = config.variables["temperature"]
    stated = [v for v in (setting.nbits, setting.tolerance, setting.precision) if v is not None]
    assert len(stated) == 1  # one precision, stated


def test_verify_names_the_worst_layer_of_each_level(sample_v2, tmp_path):
    """The verify picture reads back one layer: the one LevelStats.worst_layer names."""
    import xarray as xr

    dst = str(tmp_path / "out.zarr")
    dataset.compress(sample_v2, dst, variables=["temperature"], nbits=6)
    check = dataset.verify(sample_v2, dst, variables=["temperature"]).variables["temperature"]
    source, back = xr.open_zarr(sample_v2)["temperature"], xr.open_zarr(dst)["temperature"]
    for stats in check.levels:
        error = abs(back.sel(level=stats.level) - source.sel(level=stats.level)).max(
            ["latitude", "longitude"]
        )
        worst = error["time"].values[int(np.argmax(error.values))]
        assert stats.worst_layer == {"time": worst}
        assert float(error.max()) == pytest.approx(stats.max_abs_error, rel=1e-6)


def test_large_samples_are_measured_on_a_share_of_their_layers(ensemble_v2, monkeypatch):
    from layerquantizer.dataset import _advise

    full = dataset.advise(ensemble_v2, variables=["temperature"], sample=4, nbits=[12])
    monkeypatch.setattr(_advise, "_MAX_TRIAL_VALUES", 2 * 61 * 120)
    thin = dataset.advise(ensemble_v2, variables=["temperature"], sample=4, nbits=[12])
    before, after = full.variables["temperature"], thin.variables["temperature"]
    assert before.values == after.values == 4 * 2 * 61 * 120
    assert before.measured_values == before.values and after.measured_values == 4 * 61 * 120
    assert after.trials[0].ratio == pytest.approx(before.trials[0].ratio, rel=0.1)
    assert after.source_step == before.source_step  # the grid from every layer still


def test_matplotlib_only_with_plot(sample_v2, tmp_path, monkeypatch):
    import subprocess
    import sys

    code = (
        "import sys; import cli.main, layerquantizer.dataset as d; "
        "d.inspect(sys.argv[1]); print('matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, sample_v2], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr
    # Without the plot extra: one line naming the way out, exit 2, nothing drawn.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    picture = tmp_path / "inspect.png"
    result = runner.invoke(app, ["inspect", sample_v2, "--plot", str(picture)])
    assert result.exit_code == 2
    assert "pip install 'layerquantizer[plot]'" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not picture.exists()


def test_advise_on_nan_layers_and_constant_fields(tmp_path):
    """Masked fields (NaN over land), a layer all NaN and a constant field: advice without
    warnings (errors under the tests' settings)."""
    import xarray as xr

    rng = np.random.default_rng(3)
    sst = (280 + 10 * rng.random((2, 2, 30, 40))).astype(np.float32)
    sst[:, :, :10] = np.nan
    sst[1, 1] = np.nan
    dims = ("time", "level", "latitude", "longitude")
    xr.Dataset(
        {"sst": (dims, sst), "flat": (dims, np.full(sst.shape, 5.0, np.float32))},
        coords={"latitude": np.linspace(90, -90, 30), "longitude": np.arange(40) * 9.0},
    ).to_zarr(tmp_path / "masked.zarr", zarr_format=2)
    report = dataset.advise(str(tmp_path / "masked.zarr"), sample=2)
    assert report.variables["flat"].recommendation.trial.max_abs_error == 0.0
    sst_advice = report.variables["sst"]
    assert 1 <= sst_advice.recommendation.nbits <= 24
    assert all(math.isfinite(t.ratio) for t in sst_advice.trials)


def test_verify_picture_measures_a_tolerance_against_its_absolute_bound(
    sample_v2, tmp_path, monkeypatch
):
    """Before: a tolerance variable has no full-scale bound, so the picture left its levels
    blank ("no bound") and drew no error map ("no lossy variable with an error"). Now its
    max absolute error over the absolute bound, as verify checks it."""
    from layerquantizer.dataset import _plots

    dst = str(tmp_path / "out.zarr")
    dataset.compress(sample_v2, dst, variables=["temperature"], tolerance=0.05)
    report = dataset.verify(sample_v2, dst, variables=["temperature", "2m_temperature"])
    figures = []
    monkeypatch.setattr(_plots, "_save", lambda fig, path: figures.append(fig))
    _plots.plot_verify(report, tmp_path / "verify.png")
    (figure,) = figures
    heatmap, error_map = figure.axes[:2]  # then their colour bars
    shares = np.ma.filled(heatmap.images[0].get_array(), np.nan)
    rows = [label.get_text() for label in heatmap.get_yticklabels()]
    temperature = shares[rows.index("temperature")]
    levels = report.variables["temperature"].levels
    expected = [lev.max_abs_error / lev.bound_abs for lev in levels]
    np.testing.assert_allclose(temperature[: len(levels)], expected, rtol=1e-6)
    assert 0.9 < max(expected) <= 1.0
    copied = shares[rows.index("2m_temperature")]
    assert (copied[np.isfinite(copied)] == 0).all() and np.isfinite(copied).any()  # lossless
    assert error_map.images and error_map.get_title().startswith(
        "error of the worst layer: temperature"
    )
