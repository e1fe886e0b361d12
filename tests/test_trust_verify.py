"""``lq verify`` names what is wrong with a broken store, and ``lq inspect`` knows an
incomplete one (issue 8).

Each broken store is built for real: written by ``lq``, then a chunk's bytes corrupted, a
chunk file deleted, a variable rewritten with a numcodecs lossy codec, chunks re-encoded
with fewer bits than the attributes claim, a variable deleted, or a run interrupted. The
commands run as the user runs them, as subprocesses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from test_cli_subprocess import lq_command

from layerquantizer import dataset
from layerquantizer.codec import LayerQuantizer
from layerquantizer.dataset._resume import PROGRESS_DIR

pytestmark = pytest.mark.slow


def consolidate_by_hand(store) -> None:
    """What a user's ``zarr.consolidate_metadata`` does to an lq store after editing it."""
    with warnings.catch_warnings():
        # zarr names lq's own marker (.lq-store.json) as no Zarr component: harmless here.
        warnings.filterwarnings("ignore", message=r"Object at \.lq-store\.json is not")
        zarr.consolidate_metadata(str(store))


def lq_json(*args) -> tuple[int, dict]:
    result = subprocess.run(
        [*lq_command(), *map(str, args), "--json"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode in (0, 1) and result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def kinds(entry: dict) -> list[tuple[str, list[int] | None]]:
    return sorted(
        ((p["kind"], p["chunk"]) for p in entry["problems"]), key=lambda kc: (kc[0], kc[1] or [])
    )


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("trust") / "in.zarr"
    dataset.write_sample(str(path), levels=2, grid=(25, 48), times=3, zarr_format=2)
    return str(path)


@pytest.fixture(scope="module")
def clean_store(small_source, tmp_path_factory) -> str:
    dst = tmp_path_factory.mktemp("trust") / "clean.zarr"
    dataset.compress(small_source, str(dst), variables=["temperature", "geopotential"])
    return str(dst)


@pytest.fixture
def store(clean_store, tmp_path) -> Path:
    """A fresh copy of a good ``lq compress`` output, to break."""
    dst = tmp_path / "out.zarr"
    shutil.copytree(clean_store, dst)
    return dst


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_clean_store_has_no_problems(small_source, clean_store):
    code, report = lq_json("verify", small_source, clean_store)
    assert code == 0 and report["ok"] is True and report["complete"] is True
    assert all(entry["problems"] == [] for entry in report["variables"].values())
    _, inspected = lq_json("inspect", clean_store)
    assert inspected["complete"] is True


def test_corrupt_chunks_are_named_and_the_rest_is_checked(small_source, store):
    _flip(store / "temperature" / "1.0.0.0", 40)
    # Blosc keeps no checksum: a flipped byte decodes to other values, a cut object fails.
    cut = store / "2m_temperature" / "2.0.0"
    cut.write_bytes(cut.read_bytes()[:40])
    code, report = lq_json("verify", small_source, store)
    assert code == 1 and report["ok"] is False
    temperature = report["variables"]["temperature"]
    assert kinds(temperature) == [("corrupt_chunk", [1, 0, 0, 0])]
    assert "temperature/1.0.0.0" in temperature["problems"][0]["message"]
    assert kinds(report["variables"]["2m_temperature"]) == [("corrupt_chunk", [2, 0, 0])]
    # Every other variable was checked, and is fine.
    others = {n: e for n, e in report["variables"].items() if "temperature" not in n}
    assert len(others) == 8 and all(e["ok"] and e["levels"] for e in others.values())


def test_nan_where_the_source_has_a_value_is_nonfinite(small_source, store):
    array = zarr.open_array(store, path="temperature", mode="r+")
    array[1, 0, 3, 4] = np.nan  # within any bound "by distance": only the NaN check sees it
    code, report = lq_json("verify", small_source, store)
    assert code == 1 and report["ok"] is False
    assert kinds(report["variables"]["temperature"]) == [("nonfinite", [1, 0, 0, 0])]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_missing_chunks_are_named_not_bound_failures(small_source, tmp_path, zarr_format):
    dst = tmp_path / "out.zarr"
    dataset.compress(small_source, str(dst), variables=["temperature"], zarr_format=zarr_format)
    key = "2.0.0.0" if zarr_format == 2 else "c/2/0/0/0"
    (dst / "temperature" / key).unlink()
    code, report = lq_json("verify", small_source, dst)
    assert code == 1
    temperature = report["variables"]["temperature"]
    assert kinds(temperature) == [("missing_chunk", [2, 0, 0, 0])]
    assert f"temperature/{key}" in temperature["problems"][0]["message"]
    # The values that are there are within the bound.
    assert all(level["ok"] for level in temperature["levels"])


def test_a_missing_chunk_of_nan_is_fine(small_source, tmp_path):
    src = tmp_path / "in.zarr"
    shutil.copytree(small_source, src)
    array = zarr.open_array(str(src), path="temperature", mode="r+")
    array[0] = np.nan
    dst = tmp_path / "out.zarr"
    dataset.compress(str(src), str(dst), variables=["temperature"])
    assert not (dst / "temperature" / "0.0.0.0").exists()  # lq skips all-NaN chunks
    code, report = lq_json("verify", src, dst)
    assert code == 0 and report["variables"]["temperature"]["problems"] == []


@pytest.mark.parametrize(
    "codec", [numcodecs.BitRound(keepbits=6), numcodecs.Quantize(digits=1, dtype="f4")],
    ids=["bitround", "quantize"],
)  # fmt: skip
def test_a_lossy_codec_lq_cannot_bound_is_unverifiable(small_source, tmp_path, codec):
    dst = tmp_path / "other.zarr"
    source = xr.open_zarr(small_source)
    encoding = {"temperature": {"filters": [codec]}}
    source.to_zarr(dst, zarr_format=2, consolidated=True, encoding=encoding)
    code, report = lq_json("verify", small_source, dst)
    assert code == 1
    assert kinds(report["variables"]["temperature"]) == [("unverifiable", None)]
    assert report["variables"]["2m_temperature"]["ok"] is True
    # A bound stated by the user is checked instead.
    code, report = lq_json("verify", small_source, dst, "--max-abs-error", "100")
    assert code == 0 and report["variables"]["temperature"]["problems"] == []
    code, report = lq_json("verify", small_source, dst, "--max-fs-error", "1e-9")
    assert code == 1
    assert {k for k, _ in kinds(report["variables"]["temperature"])} == {"bound"}


def test_values_identical_to_the_source_pass_under_any_codec(small_source, tmp_path):
    dst = tmp_path / "copy.zarr"
    encoding = {"temperature": {"filters": [numcodecs.BitRound(keepbits=23)]}}
    xr.open_zarr(small_source).to_zarr(dst, zarr_format=2, consolidated=True, encoding=encoding)
    code, report = lq_json("verify", small_source, dst)
    assert code == 0, report["variables"]["temperature"]


def test_chunks_looser_than_the_attributes_claim(small_source, store):
    loose, claimed = LayerQuantizer(nbits=8), LayerQuantizer(nbits=16)
    for index in (0, 2):
        path = store / "temperature" / f"{index}.0.0.0"
        path.write_bytes(loose.encode(claimed.decode(path.read_bytes())))
    code, report = lq_json("verify", small_source, store)
    assert code == 1
    found = kinds(report["variables"]["temperature"])
    assert [p for p in found if p[0] == "metadata_mismatch"] == [
        ("metadata_mismatch", [0, 0, 0, 0]), ("metadata_mismatch", [2, 0, 0, 0]),
    ]  # fmt: skip
    message = next(
        p["message"] for p in report["variables"]["temperature"]["problems"]
        if p["kind"] == "metadata_mismatch"
    )  # fmt: skip
    assert "(temperature/0.0.0.0) is encoded with 8 bits" in message and "16 bits" in message
    # The values are checked too: at 8 bits they miss the 16-bit bound.
    assert ("bound", [0, 0, 0, 0]) in found
    assert report["variables"]["geopotential"]["ok"] is True


def test_a_deleted_variable_is_missing(small_source, store):
    shutil.rmtree(store / "geopotential")
    consolidate_by_hand(store)
    code, report = lq_json("verify", small_source, store)
    assert code == 1
    assert kinds(report["variables"]["geopotential"]) == [("missing_variable", None)]
    assert report["variables"]["temperature"]["ok"] is True


def test_a_variable_dropped_by_the_config_is_not_missing(small_source, tmp_path):
    from layerquantizer.config import Config, VariableConfig

    dst = tmp_path / "out.zarr"
    config = Config(variables={"temperature": VariableConfig()}, drop=("geopotential",))
    dataset.compress(small_source, str(dst), config=config)
    assert xr.open_zarr(dst).attrs["layerquantizer_dropped"] == ["geopotential"]
    code, report = lq_json("verify", small_source, dst)
    assert code == 0 and "geopotential" not in report["variables"]
    assert report["skipped"] == {"geopotential": "dropped by the config it was written with"}


class _Interrupted(Exception):
    pass


def test_an_interrupted_run_is_incomplete(small_source, tmp_path):
    dst = tmp_path / "partial.zarr"
    calls = []

    def progress(*_):
        calls.append(1)
        if len(calls) > 4:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        dataset.compress(small_source, str(dst), variables=["temperature"], progress=progress,
                         scheduler="synchronous")  # fmt: skip
    assert (dst / PROGRESS_DIR).exists()
    code, inspected = lq_json("inspect", dst)
    assert code == 0 and inspected["complete"] is False
    assert all(e["ratio"] is None for e in inspected["variables"].values())
    table = subprocess.run([*lq_command(), "inspect", str(dst)], capture_output=True, text=True)
    assert "incomplete" in table.stdout and "x " not in table.stdout.replace("×", " ")
    code, report = lq_json("verify", small_source, dst)
    assert code == 1 and report["complete"] is False and report["ok"] is False
    assert [p["kind"] for p in report["problems"]] == ["incomplete"]


def test_a_store_without_its_completion_state_is_incomplete(small_source, store):
    (store / ".zmetadata").unlink()
    code, inspected = lq_json("inspect", store)
    assert inspected["complete"] is False
    code, report = lq_json("verify", small_source, store)
    assert code == 1 and report["complete"] is False
    assert [p["kind"] for p in report["problems"]] == ["incomplete"]


def test_the_table_lists_problems_capped(small_source, tmp_path):
    store = tmp_path / "out.zarr"
    dataset.compress(small_source, str(store), variables=["temperature"], chunks={"level": 1})
    for time in range(3):
        for level in range(2):
            _flip(store / "temperature" / f"{time}.{level}.0.0", 40)
    (store / "geopotential" / "1.1.0.0").unlink()
    result = subprocess.run(
        [*lq_command(), "verify", small_source, str(store)], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("corrupt_chunk: temperature: chunk (") for line in lines) == 5
    assert "... and 1 more problem of temperature (see --json)" in lines
    assert (
        "missing_chunk: geopotential: chunk (1, 1, 0, 0) (geopotential/1.1.0.0) is missing, "
        "but the source there is not all fill values"
    ) in lines
    assert lines[-1] == "FAILED: geopotential (missing_chunk); temperature (corrupt_chunk)"


def test_a_variable_gone_from_a_consolidated_store_has_its_chunks_missing(small_source, store):
    shutil.rmtree(store / "u_component_of_wind")  # still listed by the consolidated metadata
    code, report = lq_json("verify", small_source, store)
    assert code == 1
    assert kinds(report["variables"]["u_component_of_wind"]) == [
        ("missing_chunk", [t, 0, 0, 0]) for t in range(3)
    ]


def test_attributes_that_contradict_the_codec(small_source, store):
    array = zarr.open_array(str(store), path="temperature", mode="r+")
    array.attrs["layerquantizer_nbits"] = 20  # the codec metadata says 16
    consolidate_by_hand(store)
    code, report = lq_json("verify", small_source, store)
    assert code == 1
    assert kinds(report["variables"]["temperature"]) == [
        ("metadata_mismatch", None),  # nbits 20 vs the codec's 16
        ("metadata_mismatch", None),  # the error bound attribute is that of 16 bits
        *[("metadata_mismatch", [t, 0, 0, 0]) for t in range(3)],  # chunks at 16 bits
    ]


def test_resume_redoes_the_units_whose_source_changed(small_source, tmp_path):
    from layerquantizer.dataset._resume import Progress

    src, dst = tmp_path / "in.zarr", tmp_path / "out.zarr"
    shutil.copytree(small_source, src)
    calls = []

    def progress(*_):
        calls.append(1)
        if len(calls) > 3:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        dataset.compress(str(src), str(dst), variables=["temperature"], progress=progress,
                         scheduler="synchronous")  # fmt: skip
    done = Progress(str(dst)).done_units()
    assert ("temperature", 0) in done
    # Between the runs the source changes under a unit already written.
    array = zarr.open_array(str(src), path="temperature", mode="r+")
    array[0] = array[0] + np.float32(1.0)
    report = dataset.compress(str(src), str(dst), variables=["temperature"], resume=True)
    assert report.units_resumed == len(done) - 1
    code, verified = lq_json("verify", src, dst)
    assert code == 0, verified["variables"]["temperature"]["problems"]


def test_a_run_killed_before_its_metadata_is_named(small_source, tmp_path):
    from layerquantizer.dataset._resume import Progress

    dst = tmp_path / "early.zarr"
    Progress(str(dst)).start({"src": "in.zarr"})  # what a run writes first
    for command in (["inspect", dst], ["verify", small_source, dst]):
        result = subprocess.run(
            [*lq_command(), *map(str, command)], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"lq: error: {dst} holds an interrupted lq compress run that wrote no metadata "
            "yet; run the same lq compress command with --resume or --overwrite"
        )
