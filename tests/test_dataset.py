"""The Python API behind ``lq``: parsing helpers, planning, and whole-store round trips."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from layerquantizer import dataset
from layerquantizer.config import parse_config
from layerquantizer.dataset import (
    ChunkWriteError,
    DestinationExistsError,
    RequestError,
    SourceError,
    parse_chunks,
    parse_levels,
    parse_time_range,
    parse_variables,
    plan_compress,
)
from layerquantizer.synthetic import sample_dataset, sample_levels

# --------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-01:2020-01-31", ("2020-01-01", "2020-01-31")),
        ("2020-01-01T06:00:2020-01-02T18:00", ("2020-01-01T06:00", "2020-01-02T18:00")),
        ("2020-01-01T06:00:00:2020-01-02", ("2020-01-01T06:00:00", "2020-01-02")),
        (":2020-02", (None, "2020-02")),
        ("2020:", ("2020", None)),
        ("2020-01-01..2020-01-02", ("2020-01-01", "2020-01-02")),
    ],
)
def test_parse_time_range(text, expected):
    assert parse_time_range(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("2020-01-01", "expected a time range START:END"),
        ("yesterday:today", "expected a time range"),
        (":", "expected a time range"),
        ("2020-02-01:2020-01-01", "ends before it starts"),
    ],
)
def test_parse_time_range_errors(text, match):
    with pytest.raises(RequestError, match=match):
        parse_time_range(text)


def test_parse_levels_chunks_variables():
    assert parse_levels("500,850, 1000") == (500, 850, 1000)
    assert parse_levels("0.5") == (0.5,)
    assert parse_chunks("time=1,level=-1") == {"time": 1, "level": -1}
    assert parse_variables("a, b") == ["a", "b"]


@pytest.mark.parametrize(
    ("parse", "text", "match"),
    [
        (parse_levels, "500,abc", "expected comma-separated pressure levels"),
        (parse_levels, "", "expected comma-separated pressure levels"),
        (parse_chunks, "time:1", "expected DIM=SIZE pairs"),
        (parse_chunks, "time=0", "expected DIM=SIZE pairs"),
        (parse_chunks, "time=-2", "expected DIM=SIZE pairs"),
        (parse_chunks, "=3", "expected DIM=SIZE pairs"),
        (parse_variables, "a,,b", "expected comma-separated variable names"),
        (parse_variables, "a,a", "variable listed twice: a"),
    ],
)
def test_parse_errors(parse, text, match):
    with pytest.raises(RequestError, match=match):
        parse(text)


def test_full_scale_bound():
    assert dataset.full_scale_bound(16) == pytest.approx(7.6295e-6, rel=1e-4)


def test_storage_options_spell_the_token_only():
    assert dataset._token(None, {"token": "anon"}) == "anon"
    assert dataset._token("t", {"token": "anon"}) == "t"
    assert dataset._token(None, None) is None
    with pytest.raises(RequestError, match="only 'token' is supported"):
        dataset._token(None, {"project": "p"})


# --------------------------------------------------------------------------------------
# Synthetic sample


def test_sample_dataset_layout():
    ds = sample_dataset(levels=3, grid=(19, 36), times=2)
    assert dict(ds.sizes) == {"time": 2, "level": 3, "latitude": 19, "longitude": 36}
    assert ds["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("time", "latitude", "longitude")
    assert all(var.dtype == np.float32 for var in ds.data_vars.values())
    assert ds["level"].values.tolist() == list(sample_levels(3))
    assert ds["latitude"].values[0] == 90 and ds["latitude"].values[-1] == -90
    # Level-dependent ranges, as in ERA5.
    z = ds["geopotential"].isel(time=0)
    assert float(z.sel(level=1).min()) > float(z.sel(level=1000).max())
    # Each time step differs, and the same seed gives the same data.
    assert not np.array_equal(ds["temperature"][0], ds["temperature"][1])
    xr.testing.assert_identical(ds, sample_dataset(levels=3, grid=(19, 36), times=2))


def test_sample_dataset_lazy_equals_eager():
    kwargs = {"levels": 2, "grid": (10, 20), "times": 2, "variables": ["temperature"]}
    lazy = sample_dataset(lazy=True, **kwargs)
    assert lazy["temperature"].chunks is not None
    xr.testing.assert_identical(lazy.compute(), sample_dataset(**kwargs))


def test_sample_levels():
    assert len(sample_levels(37)) == 37
    assert sample_levels(13)[-1] == 1000 and 500 in sample_levels(13)
    assert sample_levels(1) == (1000,)
    with pytest.raises(ValueError, match="levels must be between 1 and 37"):
        sample_levels(40)


# --------------------------------------------------------------------------------------
# Planning


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    ds = sample_dataset(levels=3, grid=(10, 20), times=4)
    ds["temperature"].attrs["layerquantizer_nbits"] = 3  # stale, from an earlier run
    ds["flag"] = ("time", np.arange(4, dtype=np.int16))
    ds["t64"] = ds["temperature"].astype(np.float64)
    ds["transposed"] = ds["temperature"].transpose("time", "latitude", "longitude", "level")
    return ds


def test_plan_defaults(small):
    plan = plan_compress(small, variables=["temperature", "2m_temperature"])
    assert plan.quantized == {"temperature": 16, "2m_temperature": 16}
    assert "geopotential" in plan.copied and "flag" in plan.copied
    assert plan.chunks == {"time": 1, "level": 3, "latitude": 10, "longitude": 20}
    assert plan.encoding["temperature"]["chunks"] == (1, 3, 10, 20)
    assert plan.encoding["temperature"]["compressors"][0].get_config()["nbits"] == 16
    assert plan.encoding["geopotential"]["chunks"] == (1, 3, 10, 20)
    (copy_codec,) = plan.encoding["geopotential"]["compressors"]  # a copy: lossless
    assert copy_codec.get_config() == {
        "id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0
    }  # fmt: skip
    attrs = plan.source["temperature"].attrs
    assert attrs["layerquantizer_codec"] == "layerquantizer1"
    assert attrs["layerquantizer_nbits"] == 16
    assert attrs["layerquantizer_error_bound"] == dataset.full_scale_bound(16)
    assert attrs["units"] == "K"
    # The caller's dataset is not modified.
    assert small["temperature"].attrs["layerquantizer_nbits"] == 3
    # The Zarr chunks are the encoding's; the template is one dask chunk per variable, so
    # that writing its metadata costs no task per chunk (issue 9).
    assert plan.encoding["temperature"]["chunks"] == (1, 3, 10, 20)
    assert plan.template["temperature"].chunks == ((4,), (3,), (10,), (20,))
    assert plan.total_chunks == sum(1 for _ in plan.tasks())
    tasks = list(plan.tasks(["temperature"]))
    assert [t.index for t in tasks] == [(i, 0, 0, 0) for i in range(4)]
    assert tasks[1].region["time"] == slice(1, 2)


def test_plan_quantizes_float64_through_float32(small):
    plan = plan_compress(small, variables=["t64"])
    assert plan.source["t64"].dtype == np.float64  # what the workers read
    assert plan.template["t64"].dtype == np.float32  # what the store holds
    assert plan.template["t64"].attrs["layerquantizer_source_dtype"] == "float64"
    assert "layerquantizer_source_dtype" not in plan.template["temperature"].attrs


def test_plan_zarr3_uses_the_serializer(small):
    from layerquantizer.zarr3 import LayerQuantizerCodec

    plan = plan_compress(small, variables=["temperature"], zarr_format=3, nbits=12)
    encoding = plan.encoding["temperature"]
    assert isinstance(encoding["serializer"], LayerQuantizerCodec)
    assert encoding["serializer"].nbits == 12 and encoding["compressors"] is None
    assert plan.source["temperature"].attrs["layerquantizer_codec"] == "layerquantizer"


def test_plan_options_override_config(small):
    cfg = parse_config(
        {
            "nbits": 12,
            "zarr_format": 3,
            "chunks": {"level": 1},
            "drop": ["flag"],
            "variables": {"temperature": {"nbits": 20}, "geopotential": None},
        }
    )
    plan = plan_compress(small, config=cfg)
    assert plan.quantized == {"temperature": 20, "geopotential": 12}
    assert plan.zarr_format == 3 and plan.chunks["level"] == 1 and plan.chunks["time"] == 1
    assert plan.dropped == ("flag",) and "flag" not in plan.source
    plan = plan_compress(
        small, config=cfg, variables=["flag_free" and "geopotential"], nbits=10,
        zarr_format=2, chunks={"time": 2, "level": -1},
    )  # fmt: skip
    assert plan.quantized == {"geopotential": 10}
    assert plan.zarr_format == 2 and plan.chunks["time"] == 2 and plan.chunks["level"] == 3


def test_plan_chunks_clamp_to_the_dimension(small):
    plan = plan_compress(small, variables=["temperature"], chunks={"time": 3, "latitude": 99})
    assert plan.chunks["latitude"] == 10
    assert [t.region["time"] for t in plan.tasks(["temperature"])] == [slice(0, 3), slice(3, 4)]


@pytest.mark.parametrize("block", [4096, 2])
def test_unit_jobs_are_made_from_tables_per_dimension(tmp_path, monkeypatch, block):
    """The jobs of a whole store are made from per-dimension tables (the per-unit work was
    28 us, 2 minutes of the parent's CPU for the 4.6 million units of the WB2 store): each
    job holds what the per-unit code gave, index arrays for a list of levels included.
    The first dimension's tables are made a block of units at a time, as the jobs reach
    them (the 93,544 steps of the WB2 store at once: 0.3-0.4 s before the first unit)."""
    import layerquantizer.dataset._write as _write
    from layerquantizer.dataset._write import (
        _describe_region,
        _source_selection,
        _UnitTables,
    )

    monkeypatch.setattr(_write, "TABLE_BLOCK", block)

    ds = sample_dataset(
        levels=4, grid=(8, 16), times=9, variables=["temperature", "2m_temperature"]
    )
    src = str(tmp_path / "src.zarr")
    encoding = {"temperature": {"chunks": (3, 2, 8, 16)}}
    ds.to_zarr(src, encoding=encoding, zarr_format=2, consolidated=True)
    source = dataset.open_dataset(src)
    levels = source["level"].values.tolist()
    plans = [
        plan_compress(source, variables=["temperature"], chunks={"level": 1}),
        plan_compress(source, variables=["temperature"], levels=[levels[0], levels[2]]),
        plan_compress(
            source, variables=["temperature"], time=(str(source.time.values[2]), None),
            chunks={"time": 2, "latitude": 3},
        ),
    ]  # fmt: skip
    for plan in plans:
        labels = {str(d): plan.source.indexes[d].values for d in plan.source.dims}
        tables = _UnitTables(plan, labels)
        for name in plan.source.data_vars:
            tasks = list(plan.tasks([name]))
            if block == 2:  # the first job is made from the first block of the tables
                fresh = _UnitTables(plan, labels)
                next(fresh.jobs(str(name), "run", "dst", None))
                assert list(fresh.variable(str(name))[1][0]._blocks) == [0]
            jobs = list(tables.jobs(str(name), "run", "dst", None))
            assert len(jobs) == len(tasks) == plan.unit_grid(str(name)).size
            for ordinal, (task, job) in enumerate(zip(tasks, jobs, strict=True)):
                assert job.ordinal == ordinal and job.index == task.index
                assert job.region == tuple(task.region.values())
                assert (job.nbytes, job.chunks) == (task.nbytes, task.chunks)
                assert job.label == _describe_region(task.region, labels)
                expected = _source_selection(plan.source_positions, task.region)
                for got, want in zip(job.source, expected, strict=True):
                    assert type(got) is type(want)
                    assert (
                        np.array_equal(got, want) if isinstance(want, np.ndarray) else got == want
                    )
                at = tables.job_at(str(name), ordinal, "run", "dst", None, b"")
                assert (at.region, at.label, at.recorded) == (job.region, job.label, b"")


def test_variables_chunked_alike_share_their_source_chunk_ids(tmp_path):
    """A plan keeps one array of source chunk ids per dimension and chunk size, not one
    per variable (46 MB for the 62 variables of the 93,544-step WB2 store)."""
    ds = sample_dataset(
        levels=2, grid=(8, 16), times=5, variables=["temperature", "2m_temperature"]
    )
    src = str(tmp_path / "src.zarr")
    encoding = {"temperature": {"chunks": (2, 2, 8, 16)}, "2m_temperature": {"chunks": (2, 4, 8)}}
    ds.to_zarr(src, encoding=encoding, zarr_format=2, consolidated=True)
    plan = plan_compress(
        dataset.open_dataset(src), variables=["temperature", "2m_temperature"], nbits=12
    )
    ids = plan.source_chunk_ids
    assert ids["temperature"]["time"] is ids["2m_temperature"]["time"]
    assert ids["temperature"]["latitude"] is not ids["2m_temperature"]["latitude"]
    assert ids["2m_temperature"]["latitude"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_write_units_follow_the_source_chunks(tmp_path, monkeypatch):
    ds = sample_dataset(levels=2, grid=(8, 16), times=7, variables=["temperature"])
    src = str(tmp_path / "src.zarr")
    encoding = {"temperature": {"chunks": (3, 2, 8, 16)}}
    ds.to_zarr(src, encoding=encoding, zarr_format=2, consolidated=True)
    source = dataset.open_dataset(src)

    def units(plan):
        return [(t.region["time"], t.region["level"], t.chunks) for t in plan.tasks()]

    # Output chunks of 1 time x 1 level, grouped so that each source chunk is read once.
    plan = plan_compress(source, variables=["temperature"], chunks={"level": 1})
    assert units(plan) == [
        (slice(0, 3), slice(0, 2), 6), (slice(3, 6), slice(0, 2), 6), (slice(6, 7), slice(0, 2), 2),
    ]  # fmt: skip
    assert plan.total_chunks == 14
    # A subset shifts the source chunk boundaries.
    plan = plan_compress(source, variables=["temperature"], time=("2020-01-01T06", None))
    assert [u[0] for u in units(plan)] == [slice(0, 2), slice(2, 5), slice(5, 6)]
    dst = str(tmp_path / "out.zarr")
    dataset.write_plan(plan, dst)
    back = xr.open_zarr(dst)
    assert back["temperature"].encoding["chunks"] == (1, 2, 8, 16)
    assert _layer_bound_holds(ds["temperature"].values[1:], back["temperature"].values, 16)
    # Units too large to hold: one task per output chunk.
    monkeypatch.setattr(dataset._plan, "MAX_UNIT_BYTES", 1)
    plan = plan_compress(source, variables=["temperature"])
    assert [u[0] for u in units(plan)] == [slice(i, i + 1) for i in range(7)]


def test_plan_subset(small):
    plan = plan_compress(
        small, variables=["temperature"], time=("2020-01-01T06", "2020-01-01T12"), levels=[1000]
    )
    assert dict(plan.source.sizes)["time"] == 2
    assert plan.source["level"].values.tolist() == [1000]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"variables": ["temprature"]},
                     r"variable 'temprature' not found; available: geopotential, temperature",
                     id="unknown"),
        pytest.param({"variables": ["level"]}, r"'level' is a coordinate, not a data variable",
                     id="coordinate"),
        pytest.param({"variables": ["flag"]},
                     r"cannot quantize 'flag': its dtype is int16, and the layerquantizer codec "
                     r"encodes float32 \(and float64 through float32\) only", id="int16"),
        pytest.param({"variables": ["transposed"]},
                     r"cannot quantize 'transposed' with dims \(time, latitude, longitude, level\)"
                     r": .* must be \(latitude, longitude\)", id="dims"),
        pytest.param({"variables": ["temperature"], "nbits": 30},
                     r"temperature: nbits must be between 1 and 24, got 30", id="nbits"),
        pytest.param({"variables": []}, r"no variables to quantize: .*candidates: geopotential",
                     id="none"),
        pytest.param({"variables": ["temperature"], "levels": [1000, 123]},
                     r"level\(s\) 123 not in the source; available: 1, 350, 1000", id="levels"),
        pytest.param({"variables": ["temperature"], "time": ("2021-01-01", None)},
                     r"time range 2021-01-01: selects no time step; the source has 4 from "
                     r"2020-01-01T00:00:00.000000000", id="time-empty"),
        pytest.param({"variables": ["temperature"], "chunks": {"tme": 1}},
                     r"chunks name unknown dimension\(s\) tme; dimensions: time, level",
                     id="chunks"),
        pytest.param({"variables": ["temperature"], "zarr_format": 4},
                     r"zarr format must be 2 or 3, got 4", id="format"),
    ],
)  # fmt: skip
def test_plan_errors(small, kwargs, match):
    with pytest.raises(RequestError, match=match):
        plan_compress(small, **kwargs)


def test_plan_without_time_or_level(small):
    static = small.isel(time=0, level=0).drop_vars(["time", "level"])
    with pytest.raises(RequestError, match="the source has no 'time' dimension"):
        plan_compress(static, variables=["temperature"], time=("2020", None))
    with pytest.raises(RequestError, match="the source has no 'level' dimension"):
        plan_compress(static, variables=["temperature"], levels=[500])


def test_plan_config_missing_variables(small):
    cfg = parse_config({"variables": {"temperature": None, "ozone": None}}, source="c.yaml")
    with pytest.raises(RequestError, match=r"variable 'ozone' \(from c.yaml\) not found"):
        plan_compress(small, config=cfg)
    cfg = parse_config({"on_missing": "skip", "variables": {"temperature": None, "ozone": None}})
    plan = plan_compress(small, config=cfg)
    assert plan.quantized == {"temperature": 16} and plan.skipped == ("ozone",)


# --------------------------------------------------------------------------------------
# Whole stores


def _layer_bound_holds(src: np.ndarray, dec: np.ndarray, nbits: int) -> bool:
    """The codec's promise per 2-D layer, computed here independently of verify()."""
    with np.errstate(invalid="ignore"):
        return _layer_bound_holds_quiet(src, dec, nbits)


def _layer_bound_holds_quiet(src: np.ndarray, dec: np.ndarray, nbits: int) -> bool:
    a = src.reshape(-1, *src.shape[-2:]).astype(np.float64)
    b = dec.reshape(a.shape).astype(np.float64)
    ulp = np.spacing(np.abs(src.reshape(a.shape))).astype(np.float64)
    for layer_a, layer_b, layer_ulp in zip(a, b, ulp, strict=True):
        finite = np.isfinite(layer_a)
        if not np.array_equal(np.isnan(layer_a), np.isnan(layer_b)):
            return False
        half_step = np.ptp(layer_a[finite]) / (2**nbits - 1) / 2 if finite.any() else 0.0
        if (np.abs(layer_a - layer_b)[finite] > half_step + layer_ulp[finite]).any():
            return False
        if not np.array_equal(layer_a[~finite & ~np.isnan(layer_a)],
                              layer_b[~finite & ~np.isnan(layer_a)]):  # fmt: skip
            return False
    return True


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_compress_real_fields_round_trip(real_store, tmp_path, zarr_format, tree_digest):
    before = tree_digest(real_store)
    dst = str(tmp_path / "out.zarr")
    report = dataset.compress(
        real_store, dst, variables=["geopotential", "u_component_of_wind"], nbits=14,
        zarr_format=zarr_format, workers=2,
    )  # fmt: skip
    assert tree_digest(real_store) == before  # the source is only read
    source = xr.open_zarr(real_store).load()
    back = xr.open_zarr(dst)
    assert back["geopotential"].encoding["chunks"] == (1, 3, 241, 480)
    back = back.load()
    for name in ("geopotential", "u_component_of_wind"):
        assert _layer_bound_holds(source[name].values, back[name].values, 14), name
        assert back[name].attrs["layerquantizer_nbits"] == 14
        assert back[name].attrs["units"] == source[name].attrs["units"]
        assert not np.array_equal(back[name].values, source[name].values)  # lossy indeed
    # Everything else, coordinates and attributes included, comes back exactly.
    rest = ["v_component_of_wind", "land_sea_mask", "geopotential_float64"]
    xr.testing.assert_identical(back[rest], source[rest])
    assert back.attrs == source.attrs
    # The report describes the destination.
    entry = report.store.variables["geopotential"]
    assert entry.codec == ("layerquantizer1" if zarr_format == 2 else "layerquantizer")
    assert entry.nbits == 14 and entry.ratio > 2
    assert report.store.variables["v_component_of_wind"].error_bound == 0.0
    assert report.to_dict()["variables"]["geopotential"]["quantized"] is True
    assert report.bytes_written == source.nbytes - sum(c.nbytes for c in source.coords.values())
    # verify() agrees with the independent check.
    result = dataset.verify(real_store, dst)
    assert result.ok
    assert result.variables["geopotential"].codec_bound == dataset.full_scale_bound(14)
    assert result.variables["v_component_of_wind"].max_abs_error == 0
    assert [lev.level for lev in result.variables["geopotential"].levels] == [200, 500, 850]


def test_compress_subset_and_rechunk_with_ensemble(ensemble_store, tmp_path):
    dst = str(tmp_path / "ens.zarr")
    dataset.compress(
        ensemble_store, dst, variables=["temperature"], time=("2020-01-01T06", None),
        levels=[500], chunks={"number": 4, "latitude": 32}, zarr_format=3,
    )  # fmt: skip
    back = xr.open_zarr(dst)
    assert dict(back.sizes) == {"number": 10, "time": 3, "level": 1, "latitude": 61,
                                "longitude": 120}  # fmt: skip
    assert back["temperature"].encoding["chunks"] == (4, 1, 1, 32, 120)
    source = xr.open_zarr(ensemble_store, consolidated=False).sel(
        time=slice("2020-01-01T06", None), level=[500]
    )
    assert _layer_bound_holds(source["temperature"].values, back["temperature"].values, 16)
    xr.testing.assert_identical(back["geopotential"].load(), source["geopotential"].load())
    # verify() compares the subset with the matching part of the source.
    result = dataset.verify(ensemble_store, dst)
    assert result.ok
    assert [lev.level for lev in result.variables["temperature"].levels] == [500]


def test_compress_keeps_nan_and_inf(tmp_path):
    ds = sample_dataset(levels=2, grid=(16, 32), times=2, variables=["temperature"])
    values = ds["temperature"].values
    values[0, 0, :3, :5] = np.nan
    values[1, 1, 4, 4] = np.inf
    values[1, 0, :, :] = np.nan  # a layer without any finite value
    src, dst = str(tmp_path / "nan.zarr"), str(tmp_path / "out.zarr")
    ds.to_zarr(src, zarr_format=2, consolidated=True)
    dataset.compress(src, dst, variables=["temperature"])
    back = xr.open_zarr(dst)["temperature"].values
    assert _layer_bound_holds(values, back, 16)
    assert back[1, 1, 4, 4] == np.inf
    assert dataset.verify(src, dst).ok


def test_memory_store_destination(sample_v2):
    dst = "memory://lq-test/out.zarr"
    try:
        dataset.compress(sample_v2, dst, variables=["temperature"], zarr_format=3)
        report = dataset.inspect(dst)
        assert report.variables["temperature"].codec == "layerquantizer"
        assert dataset.verify(sample_v2, dst, variables=["temperature"]).ok
    finally:
        import fsspec

        fsspec.filesystem("memory").rm("/lq-test", recursive=True)


def test_destination_checks(sample_v2, tmp_path):
    dst = tmp_path / "out.zarr"
    dataset.compress(sample_v2, str(dst), variables=["temperature", "geopotential"])
    with pytest.raises(
        DestinationExistsError, match="already exists; pass --overwrite to replace it, or --resume"
    ):
        dataset.compress(sample_v2, str(dst), variables=["temperature"])
    dataset.compress(sample_v2, str(dst), variables=["temperature"], overwrite=True)
    assert xr.open_zarr(dst)["geopotential"].attrs.get("layerquantizer_nbits") is None
    with pytest.raises(RequestError, match="is the source or inside it"):
        dataset.compress(sample_v2, sample_v2, variables=["temperature"], overwrite=True)
    with pytest.raises(RequestError, match="is the source or inside it"):
        dataset.compress(sample_v2, f"{sample_v2}/sub", variables=["temperature"])
    with pytest.raises(RequestError, match="--overwrite and --resume exclude each other"):
        dataset.compress(sample_v2, str(dst), variables=["temperature"], resume=True,
                         overwrite=True)  # fmt: skip
    # A directory of other files is never removed by --overwrite.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(
        DestinationExistsError,
        match=r"not written by lq compress or lq sample \(no .*\); refusing to remove it",
    ):
        dataset.compress(sample_v2, str(other), variables=["temperature"], overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_unreadable_source(tmp_path):
    with pytest.raises(SourceError, match=r"cannot open .*nothing\.zarr as a Zarr dataset"):
        dataset.compress(str(tmp_path / "nothing.zarr"), str(tmp_path / "o.zarr"),
                         variables=["t"])  # fmt: skip
    with pytest.raises(SourceError, match="is not a Zarr store"):
        dataset.inspect(str(tmp_path))


def test_failed_chunk_is_named(sample_v2, tmp_path, monkeypatch):
    from layerquantizer.dataset import _unit

    real_write = _unit.write_region

    def flaky(job, data):
        if job.variable == "temperature" and job.region[0] == slice(2, 3):
            raise OSError("disk full")
        return real_write(job, data)

    monkeypatch.setattr(_unit, "write_region", flaky)
    with pytest.raises(
        ChunkWriteError,
        match=r"temperature: chunk \(2, 0, 0, 0\) \(time=2020-01-01T12:00:00.000000000\) "
        r"failed: disk full",
    ):
        dataset.compress(sample_v2, str(tmp_path / "o.zarr"), variables=["temperature"],
                         scheduler="synchronous")  # fmt: skip


def test_progress_counts_every_chunk(sample_v2, tmp_path):
    calls = []
    report = dataset.compress(
        sample_v2, str(tmp_path / "o.zarr"), variables=["temperature"],
        progress=lambda *args: calls.append(args),
    )  # fmt: skip
    total_chunks = 10 * 3  # 10 variables, 3 time steps
    assert calls[0] == (0, total_chunks, 0, report.bytes_written)
    assert calls[-1] == (total_chunks, total_chunks, report.bytes_written, report.bytes_written)
    assert len(calls) == total_chunks + 1


# --------------------------------------------------------------------------------------
# verify and inspect


@pytest.fixture
def compressed(sample_v2, tmp_path) -> str:
    dst = str(tmp_path / "out.zarr")
    dataset.compress(sample_v2, dst, variables=["temperature", "geopotential"])
    return dst


def test_verify_detects_values_beyond_the_bound(sample_v2, compressed):
    array = zarr.open_array(compressed, path="temperature", mode="r+")
    layer = array[1, 2]
    layer[5, 7] += 0.05  # far more than half a step of a ~60 K range at 16 bits
    array[1, 2] = layer
    result = dataset.verify(sample_v2, compressed)
    assert not result.ok
    check = result.variables["temperature"]
    assert [lev.ok for lev in check.levels] == [True, True, False, True, True]
    assert check.max_abs_error == pytest.approx(0.05, rel=0.01)
    assert result.variables["geopotential"].ok


def test_verify_detects_nan_mismatch_and_lossless_change(sample_v2, compressed):
    array = zarr.open_array(compressed, path="temperature", mode="r+")
    array[0, 0, 0, 0] = np.nan
    lossless = zarr.open_array(compressed, path="2m_temperature", mode="r+")
    lossless[0, 0, 0] = lossless[0, 0, 0] + np.float32(1e-3)
    result = dataset.verify(sample_v2, compressed)
    assert result.variables["temperature"].levels[0].nonfinite_mismatches == 1
    assert not result.variables["temperature"].ok
    assert not result.variables["2m_temperature"].ok
    assert result.variables["2m_temperature"].codec_bound == 0.0


def test_verify_names_a_corrupt_chunk_and_checks_the_others(sample_v2, compressed):
    from pathlib import Path

    path = Path(compressed) / "temperature" / "2.0.0.0"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    result = dataset.verify(sample_v2, compressed)
    assert not result.ok and result.complete
    (problem,) = result.variables["temperature"].problems
    assert problem.kind == "corrupt_chunk" and problem.chunk == (2, 0, 0, 0)
    assert problem.message.startswith(
        "temperature: chunk (2, 0, 0, 0) (temperature/2.0.0.0) cannot be decoded: "
        "chunk checksum (CRC-32C) mismatch"
    )
    assert all(lev.ok for lev in result.variables["temperature"].levels)  # what was read
    assert set(dataset.PROBLEM_KINDS) >= {p.kind for p in result.variables["temperature"].problems}
    assert all(check.ok for name, check in result.variables.items() if name != "temperature")


def test_verify_report_shape(sample_v2, compressed):
    result = dataset.verify(sample_v2, compressed, variables=["temperature", "2m_temperature"])
    data = result.to_dict()
    assert data["ok"] is True and set(data["variables"]) == {"temperature", "2m_temperature"}
    entry = data["variables"]["temperature"]
    assert set(entry) >= {"max_fs_error", "max_abs_error", "bound", "codec_bound", "ok", "levels"}
    assert entry["max_fs_error"] <= entry["bound"]
    assert len(entry["levels"]) == 5 and entry["levels"][0]["level"] == 1
    assert data["variables"]["2m_temperature"]["levels"][0]["level"] is None


def test_verify_errors(sample_v2, real_store, compressed, tmp_path):
    with pytest.raises(RequestError, match=r"variable 'nope' not found in .*; available:"):
        dataset.verify(sample_v2, compressed, variables=["nope"])
    with pytest.raises(RequestError, match="geopotential: the destination's 'time' values are "):
        dataset.verify(real_store, compressed)
    other = str(tmp_path / "other.zarr")
    xr.Dataset({"foo": ("x", np.zeros(3))}).to_zarr(other, zarr_format=2, consolidated=True)
    with pytest.raises(RequestError, match="have no data variable in common"):
        dataset.verify(sample_v2, other)


def test_inspect_counts_objects_and_bytes(compressed):
    import os

    report = dataset.inspect(compressed)
    files = [os.path.join(d, f) for d, _, names in os.walk(compressed) for f in names]
    assert report.objects == len(files)
    assert report.stored_bytes == sum(os.path.getsize(f) for f in files)
    assert set(report.coordinates) == {"time", "level", "latitude", "longitude"}
    temperature = report.variables["temperature"]
    assert temperature.dims == ("time", "level", "latitude", "longitude")
    assert temperature.shape == (3, 5, 37, 72) and temperature.chunks == (1, 5, 37, 72)
    assert temperature.logical_bytes == 3 * 5 * 37 * 72 * 4
    assert temperature.objects == 3 + 2  # chunks, .zarray, .zattrs
    assert temperature.settings["nbits"] == 16
    assert temperature.error_bound == dataset.full_scale_bound(16)
    total = report.to_dict()["total"]
    assert total["variables"] == 10 and total["stored_bytes"] == report.stored_bytes
    assert report.complete and report.to_dict()["complete"] is True


def test_inspect_zarr3(sample_store):
    report = dataset.inspect(sample_store)
    entry = report.variables["temperature"]
    assert entry.dtype == "float32" and entry.codec != "layerquantizer1"
    assert entry.error_bound == 0.0


def test_importing_the_package_imports_neither_xarray_nor_dask():
    import subprocess
    import sys

    code = (
        "import sys, layerquantizer, layerquantizer.config, layerquantizer.synthetic; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('xarray', 'dask')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_write_plan_takes_the_lock_of_its_destination(sample_v2, tmp_path):
    """write_plan from Python is as safe as lq compress: it takes DST.lq-lock. Before: only
    compress took it, so a plan written from a notebook while a run held DST wrote into it."""
    from layerquantizer.dataset._destination import LOCK_SUFFIX, DestinationLock

    plan = dataset.plan_compress(dataset.open_dataset(sample_v2), variables=["temperature"])
    dst = str(tmp_path / "out.zarr")
    with DestinationLock(dst):  # another run writing dst
        with pytest.raises(DestinationExistsError, match="being written by another lq compress"):
            dataset.write_plan(plan, dst)
    assert not (tmp_path / "out.zarr").exists()
    dataset.write_plan(plan, dst)  # and released when it ends
    assert not (tmp_path / f"out.zarr{LOCK_SUFFIX}").exists()
    assert dataset.verify(sample_v2, dst).variables["temperature"].ok


@pytest.mark.parametrize("where", ["local", "memory"])
def test_unit_store_access_same_on_every_store(where, tmp_path):
    # A local store is read and written on the unit's thread (its synchronous methods),
    # other stores through zarr's event loop: both store the same bytes, read a missing
    # object as None, and delete a missing object quietly.
    from layerquantizer.dataset import _unit
    from layerquantizer.storage import open_store

    url = str(tmp_path / "s.zarr") if where == "local" else f"memory://unit-io-{tmp_path.name}"
    store = open_store(url, "w")
    assert hasattr(store, "set_sync") == (where == "local")
    _unit._set(store, "v/0.0", b"\x00chunk")
    assert _unit._get(store, "v/0.0").to_bytes() == b"\x00chunk"
    _unit._set(store, "v/0.0", b"again")  # replaced whole
    assert _unit._get(store, "v/0.0").to_bytes() == b"again"
    _unit._delete(store, "v/0.0")
    _unit._delete(store, "v/0.0")
    assert _unit._get(store, "v/0.0") is None
    if where == "local":  # written through a temporary file renamed over the key
        assert sorted(p.name for p in (tmp_path / "s.zarr").rglob("*")) == ["v"]


def test_warm_codec_loads_the_kernels_in_the_background():
    # compress starts it before planning when units run in this process, so that the first
    # unit's encode finds the kernels loaded instead of loading them in the writing time
    # (the other unit threads waiting on numba's lock meanwhile).
    from layerquantizer import _kernels
    from layerquantizer.dataset import _unit

    thread = _unit.warm_codec()
    assert thread.daemon  # never holds up the end of a run
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert _kernels.encode_rows.signatures and _kernels.finite_ranges.signatures
