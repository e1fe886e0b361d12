"""The YAML config schema: the shipped ERA5 config, and errors that name the key and file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from layerquantizer import LayerQuantizer
from layerquantizer.config import Config, ConfigError, load_config, parse_config

ERA5_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "era5.yaml"


def test_era5_config_is_valid():
    cfg = load_config(ERA5_CONFIG)
    for name in (
        "geopotential",
        "temperature",
        "specific_humidity",
        "u_component_of_wind",
        "v_component_of_wind",
        "vertical_velocity",
        "potential_vorticity",
    ):
        assert name in cfg.variables
    assert cfg.nbits_for("temperature") == 16
    assert cfg.nbits_for("specific_humidity") == 20
    assert cfg.chunks == {"time": 1}
    assert cfg.on_missing == "skip"
    assert cfg.zarr_format == 2


def test_empty_document_is_the_default_config():
    assert parse_config(None, source="x.yaml") == Config(source="x.yaml")


def test_nbits_precedence():
    cfg = parse_config({"nbits": 12, "variables": {"a": None, "b": {"nbits": 20}}})
    assert (cfg.nbits_for("a"), cfg.nbits_for("b"), cfg.nbits_for("other")) == (12, 20, 12)
    assert parse_config({"variables": {"a": {}}}).nbits_for("a") is None


def test_tolerance_precedence():
    cfg = parse_config(
        {"tolerance": 0.5, "variables": {"a": None, "b": {"nbits": 20}, "c": {"tolerance": 2}}}
    )
    assert cfg.setting_for("a") == (None, 0.5)
    assert cfg.setting_for("b") == (20, None)
    assert cfg.setting_for("c") == (None, 2.0)
    assert (cfg.nbits_for("a"), cfg.tolerance_for("c")) == (None, 2.0)
    cfg = parse_config({"nbits": 12, "variables": {"a": {"tolerance": 0.01}, "b": None}})
    assert (cfg.setting_for("a"), cfg.setting_for("b")) == ((None, 0.01), (12, None))
    assert parse_config({"variables": {"a": {}}}).setting_for("a") == (None, None)


def test_precision_source_precedence():
    """precision: source is a third setting: a variable's own one wins over the default, and
    a variable setting nothing takes the default, whichever of the three it is."""
    cfg = parse_config(
        {"precision": "source", "variables": {"a": None, "b": {"nbits": 20}, "c": {}}}
    )
    assert [cfg.precision_for(n) for n in "abc"] == ["source", None, "source"]
    assert (cfg.setting_for("a"), cfg.setting_for("b")) == ((None, None), (20, None))
    cfg = parse_config({"nbits": 12, "variables": {"a": {"precision": "source"}, "b": None}})
    assert (cfg.precision_for("a"), cfg.setting_for("a")) == ("source", (None, None))
    assert (cfg.precision_for("b"), cfg.setting_for("b")) == (None, (12, None))


def test_full_config_parses():
    cfg = parse_config(
        {
            "description": "d",
            "nbits": 14,
            "zarr_format": 3,
            "chunks": {"time": 2, "level": -1},
            "time": "2020-01-01:2020-01-02",
            "levels": [500, 850.0],
            "on_missing": "skip",
            "drop": ["x"],
            "variables": {"t": {"nbits": 10}},
        }
    )
    assert cfg.chunks == {"time": 2, "level": -1}
    assert cfg.levels == (500, 850.0)
    assert cfg.drop == ("x",)


@pytest.mark.parametrize(
    ("document", "match"),
    [
        pytest.param({"nbit": 16}, r"unknown key 'nbit' \(expected one of: description, nbits",
                     id="unknown-top-key"),
        pytest.param({"variables": {"t": {"bits": 3}}},
                     r"unknown key 'bits' in 'variables.t' \(expected one of: nbits, tolerance, "
                     r"precision\)",
                     id="unknown-variable-key"),
        pytest.param({"nbits": "16"}, r"'nbits' must be an integer, got str '16'", id="nbits-str"),
        pytest.param({"nbits": True}, r"'nbits' must be an integer, got bool", id="nbits-bool"),
        pytest.param({"nbits": 25}, r"'nbits' must be in 1..24, got 25", id="nbits-range"),
        pytest.param({"variables": {"t": {"nbits": 0}}}, r"'variables.t.nbits' must be in 1..24",
                     id="variable-nbits"),
        pytest.param({"variables": {"t": 16}}, r"'variables.t' must be a mapping", id="var-int"),
        pytest.param({"variables": ["t"]}, r"'variables' must be a mapping", id="vars-list"),
        pytest.param({"zarr_format": 4}, r"'zarr_format' must be 2 or 3, got 4", id="format"),
        pytest.param({"chunks": {"time": 0}}, r"'chunks.time' must be a positive integer or -1",
                     id="chunk-zero"),
        pytest.param({"chunks": [1]}, r"'chunks' must be a mapping", id="chunks-list"),
        pytest.param({"levels": "500"}, r"'levels' must be a non-empty list", id="levels-str"),
        pytest.param({"time": 2020}, r"'time' must be text START:END", id="time-int"),
        pytest.param({"on_missing": "warn"}, r"'on_missing' must be error or skip", id="missing"),
        pytest.param({"drop": "x"}, r"'drop' must be a list of names", id="drop-str"),
        pytest.param({"drop": ["t"], "variables": {"t": None}}, r"'drop' lists variables",
                     id="drop-overlap"),
        pytest.param([1, 2], r"must be a mapping of keys to values, got list", id="not-mapping"),
        pytest.param({"variables": {"t": {"nbits": 8, "tolerance": 0.1}}},
                     r"variables\.t\.nbits and variables\.t\.tolerance are both given; keep one",
                     id="variable-both"),
        pytest.param({"nbits": 8, "tolerance": 0.1}, r"nbits and tolerance are both given",
                     id="default-both"),
        pytest.param({"tolerance": 0}, r"'tolerance' must be a positive, finite number",
                     id="tolerance-zero"),
        pytest.param({"tolerance": True}, r"'tolerance' must be a number, got bool",
                     id="tolerance-bool"),
        pytest.param({"variables": {"t": {"tolerance": "1e-3"}}},
                     r"'variables\.t\.tolerance' must be a number, got text '1e-3' \(YAML reads",
                     id="tolerance-text"),
        pytest.param({"precision": "grib"}, r"'precision' must be source \(keep the source's",
                     id="precision-value"),
        pytest.param({"variables": {"t": {"precision": 16}}},
                     r"'variables\.t\.precision' must be source", id="variable-precision-value"),
        pytest.param({"variables": {"t": {"precision": "source", "nbits": 8}}},
                     r"variables\.t\.nbits and variables\.t\.precision are both given; keep one",
                     id="variable-precision-and-nbits"),
        pytest.param({"tolerance": 0.1, "precision": "source"},
                     r"tolerance and precision are both given", id="default-precision-both"),
    ],
)  # fmt: skip
def test_bad_config_names_file_and_key(document, match):
    with pytest.raises(ConfigError, match=r"^my\.yaml: .*" + match):
        parse_config(document, source="my.yaml")


def test_bad_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nbits: 16\nvariables:\n  temperature: {nbits: sixteen}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: 'variables.temperature.nbits' must be an"):
        load_config(path)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("variables: [a\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({"copy": "soil_type"}, r"c.yaml: 'copy' must be a list of names"),
        ({"copy": ["a"], "drop": ["a"]}, r"'copy' lists variables that 'drop' leaves out: \['a'\]"),
        ({"copy": ["a"], "variables": {"a": None}}, r"'copy' lists variables that 'variables'"),
    ],
)
def test_copy_lists_variables_copied_losslessly(document, match):
    assert parse_config({"copy": ["soil_type"]}).copy == ("soil_type",)
    with pytest.raises(ConfigError, match=match):
        parse_config(document, source="c.yaml")


# A comment in configs/era5.yaml stating what the codec measured on real_fields.npz:
# "measured on real_fields.npz KEY: error E UNIT, bound B UNIT".
_MEASURED = re.compile(
    r"measured on real_fields\.npz (\w+): error ([0-9.e+-]+)[^,]*, bound ([0-9.e+-]+)"
)


def _stated_measurement(name: str) -> tuple[str, float, float]:
    """The real field, error and bound the comment of variable ``name`` states."""
    for line in ERA5_CONFIG.read_text().splitlines():
        if line.lstrip().startswith(f"{name}:"):
            match = _MEASURED.search(line)
            if match is None:
                pytest.fail(f"the comment of {name} in {ERA5_CONFIG} states no measurement")
            return match[1], float(match[2]), float(match[3])
    pytest.fail(f"{name} is not in {ERA5_CONFIG}")


def _two_digits(value: float) -> float:
    """``value`` as the comments write it: two significant digits."""
    return float(f"{value:.2g}")


@pytest.mark.parametrize("name", ["temperature", "geopotential"])
def test_era5_config_states_what_the_codec_gives_on_real_fields(name, real_fields):
    """The error and bound that era5.yaml's comment gives for a variable, measured on the
    real field it names, are what the codec gives now with the variable's setting: a
    change of setting or codec that the comment does not follow fails here."""
    key, stated_error, stated_bound = _stated_measurement(name)
    nbits, tolerance = load_config(ERA5_CONFIG).setting_for(name)
    field = real_fields[key]
    codec = LayerQuantizer(nbits=nbits, tolerance=tolerance)
    back = codec.decode(codec.encode(field)).reshape(field.shape)
    error = float(np.abs(back.astype(np.float64) - field).max())
    if tolerance is None:
        layers = field.reshape(-1, *field.shape[-2:]).astype(np.float64)
        spans = layers.max(axis=(1, 2)) - layers.min(axis=(1, 2))
        bound = float(spans.max()) / ((1 << nbits) - 1) / 2
    else:
        bound = tolerance
    assert (_two_digits(error), _two_digits(bound)) == (stated_error, stated_bound)
