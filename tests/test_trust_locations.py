"""``lq compress`` never touches its source, removes only what it wrote, and two runs never
write one destination at once (issue 8).

Each spelling of "DST is SRC" runs ``lq`` with ``--overwrite`` and checks the source byte
for byte afterwards: one spelling of each kind (relative to the working directory, under
``~``, through a symlink, on gs://) as a subprocess, as a user would, the others through the
same app in this process (no interpreter to start; the refusal is the same code). gs://
spellings run on the GCS emulator of tests/servers.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from layerquantizer import dataset
from layerquantizer.dataset._destination import LOCK_SUFFIX, MARKER, DestinationLock
from layerquantizer.dataset._resume import PROGRESS_DIR

pytestmark = pytest.mark.slow  # lq subprocesses, the GCS emulator


def lq(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "lq"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cli"]
    return subprocess.run(
        [*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def lq_here(*args) -> subprocess.CompletedProcess:
    """The same ``lq`` app run in this process (Typer's runner), as a finished process."""
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, [*map(str, args)])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}  # fmt: skip


def assert_one_line(result: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lq: error: "), result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "victim.zarr"
    dataset.write_sample(str(path), levels=2, grid=(8, 16), times=2)
    return path


@pytest.fixture
def victim(small_source, tmp_path) -> Path:
    """A fresh copy of the small source in the test's folder."""
    path = tmp_path / "victim.zarr"
    shutil.copytree(small_source, path)
    return path


# --------------------------------------------------------------------------------------
# DST is SRC, in every spelling


LOCAL_SPELLINGS = {
    "FILE-url": lambda p: f"FILE://{p}",
    "file-url": lambda p: f"file://{p}",
    "file-url-trailing": lambda p: f"file://{p}/",
    "trailing-slash": lambda p: f"{p}/",
    "double-slash": lambda p: f"{p.parent}//{p.name}",
    "dot-segments": lambda p: f"{p.parent}/./sub/../{p.name}",
    "relative": lambda p: p.name,
    "inside": lambda p: f"{p}/temperature",
    "parent": lambda p: str(p.parent),
}


@pytest.mark.parametrize("spelling", LOCAL_SPELLINGS)
def test_dst_spelled_as_the_local_source_is_refused(victim, spelling, monkeypatch):
    before = tree(victim)
    dst = LOCAL_SPELLINGS[spelling](victim)
    args = ("compress", victim, dst, "--vars", "temperature", "--overwrite")
    if spelling == "relative":  # as typed in a shell, from the source's folder
        result = lq(*args, cwd=victim.parent)
    else:
        monkeypatch.chdir(victim.parent)
        result = lq_here(*args)
    assert_one_line(result, 2, "is the source or inside it")
    assert tree(victim) == before


def test_dst_spelled_with_home_is_refused(victim, monkeypatch):
    before = tree(victim)
    env = {**os.environ, "HOME": str(victim.parent)}
    result = lq("compress", victim, "~/victim.zarr", "--vars", "temperature", "--overwrite",
                env=env)  # fmt: skip
    assert_one_line(result, 2, "is the source or inside it")
    monkeypatch.setenv("HOME", str(victim.parent))
    result = lq_here("compress", "~/victim.zarr", victim, "--vars", "temperature", "--overwrite")
    assert_one_line(result, 2, "is the source or inside it")
    assert tree(victim) == before


def test_dst_through_a_symlinked_directory_is_refused(victim, tmp_path):
    before = tree(victim)
    (tmp_path / "link.zarr").symlink_to(victim, target_is_directory=True)
    (tmp_path / "folder-link").symlink_to(tmp_path, target_is_directory=True)
    run = lq  # the first as a user meets it, the others in this process
    for dst in (tmp_path / "link.zarr", tmp_path / "folder-link" / "victim.zarr"):
        result = run("compress", victim, dst, "--vars", "temperature", "--overwrite")
        assert_one_line(result, 2, "is the source or inside it")
        run = lq_here
        result = run("compress", dst, victim, "--vars", "temperature", "--overwrite")
        assert_one_line(result, 2, "is the source or inside it")
    assert tree(victim) == before


GS_SPELLINGS = {
    "gcs": "gcs://{bucket}/x.zarr",
    "GS": "GS://{bucket}/x.zarr",
    "Gcs": "Gcs://{bucket}/x.zarr",
    "double-slash": "gs://{bucket}//x.zarr",
    "trailing-slash": "gs://{bucket}/x.zarr/",
    "inside": "gs://{bucket}/x.zarr/temperature",
}


def gs_tree(bucket: str) -> dict[str, bytes]:
    from servers import emulator_filesystem

    fs = emulator_filesystem()
    return {path: fs.cat_file(path) for path in sorted(fs.find(bucket))}


@pytest.fixture
def gs_victim(gcs_bucket, small_source) -> str:
    ds = dataset.open_dataset(str(small_source))
    ds.to_zarr(f"gs://{gcs_bucket}/x.zarr", zarr_format=2, consolidated=True,
               storage_options={"token": "anon"})  # fmt: skip
    return gcs_bucket


def test_dst_spelled_as_the_gs_source_is_refused(gs_victim):
    """Every spelling on one source (one bucket to fill): the first as a subprocess."""
    before = gs_tree(gs_victim)
    assert before
    run = lq
    for spelling, template in GS_SPELLINGS.items():
        dst = template.format(bucket=gs_victim)
        result = run("compress", f"gs://{gs_victim}/x.zarr", dst, "--vars", "temperature",
                     "--overwrite")  # fmt: skip
        assert_one_line(result, 2, "is the source or inside it")
        assert gs_tree(gs_victim) == before, spelling
        run = lq_here


def test_a_source_that_cannot_be_opened_removes_nothing(victim, tmp_path):
    out = tmp_path / "out.zarr"
    assert lq_here("compress", victim, out, "--vars", "temperature").returncode == 0
    before = tree(out)
    result = lq("compress", tmp_path / "missing.zarr", out, "--vars", "temperature",
                "--overwrite")  # fmt: skip
    assert_one_line(result, 1, "cannot open")
    result = lq_here("compress", victim, out, "--vars", "no_such_variable", "--overwrite")
    assert result.returncode == 2
    assert tree(out) == before


# --------------------------------------------------------------------------------------
# --overwrite removes only what lq wrote


def test_overwrite_refuses_what_lq_did_not_write(victim, tmp_path):
    zgroup = tmp_path / "project"
    zgroup.mkdir()
    (zgroup / ".zgroup").write_text('{"zarr_format": 2}')
    (zgroup / "thesis.tex").write_text("keep me")
    progress = tmp_path / "results"
    (progress / PROGRESS_DIR).mkdir(parents=True)
    (progress / PROGRESS_DIR / "manifest.json").write_text("")
    (progress / "results.csv").write_text("keep me too")
    run = lq  # the first as a user meets it, the others in this process
    for dst in (zgroup, progress):
        before = tree(dst)
        result = run("compress", victim, dst, "--vars", "temperature", "--overwrite")
        assert_one_line(result, 1, str(dst), "not written by lq compress",
                        "remove it yourself or choose another DST")  # fmt: skip
        run = lq_here
        result = run("compress", victim, dst, "--vars", "temperature", "--resume")
        assert_one_line(result, 1, str(dst))
        assert tree(dst) == before
    # The progress folder makes it look like a run to resume, but its manifest is empty.
    assert "remove it yourself or choose another DST" in result.stderr


def test_overwrite_replaces_lq_outputs_old_and_new(victim, tmp_path):
    out = tmp_path / "out.zarr"
    assert lq_here("compress", victim, out, "--vars", "temperature").returncode == 0
    assert json.loads((out / MARKER).read_text())["written_by"] == "lq compress"
    xr.open_zarr(out).load()  # the marker is no Zarr node: consolidated readers never see it
    result = lq("compress", victim, out, "--vars", "geopotential", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "layerquantizer_nbits" in xr.open_zarr(out)["geopotential"].attrs
    # A store finished by the previous version has no marker: consolidated, with
    # layerquantizer attributes and nothing else inside, it may still be replaced...
    (out / MARKER).unlink()
    result = lq_here("compress", victim, out, "--vars", "temperature", "--overwrite")
    assert result.returncode == 0, result.stderr
    # ... but not with a stranger's file inside.
    (out / MARKER).unlink()
    (out / "notes.txt").write_text("mine")
    result = lq("compress", victim, out, "--vars", "temperature", "--overwrite")
    assert_one_line(result, 1, "holds notes.txt", "remove it yourself or choose another DST")
    assert (out / "notes.txt").read_text() == "mine"
    # Nor a file among the chunks of an array.
    (out / "notes.txt").unlink()
    (out / "temperature" / "notes.txt").write_text("mine")
    result = lq_here("compress", victim, out, "--vars", "temperature", "--overwrite")
    assert_one_line(result, 1, "holds temperature/notes.txt")


MARKER_BYTES = b'{"written_by": "lq compress"}'
REMOVABLE = {
    # what is in DST -> whether --overwrite may remove it
    "empty": ({}, True),
    "marker only": ({MARKER: MARKER_BYTES}, True),
    "cut manifest only": ({f"{PROGRESS_DIR}/manifest.json": b'{"descr'}, True),
    "marker and progress": ({MARKER: MARKER_BYTES, f"{PROGRESS_DIR}/done/t/0.0": b""}, True),
    "marker and arrays": (
        {
            MARKER: MARKER_BYTES,
            ".zgroup": b"{}",
            ".zmetadata": b"{}",
            "t/.zarray": b"{}",
            "t/.zattrs": b"{}",
            "t/0.0": b"x",
            "u/zarr.json": b"{}",
            "u/c/0/0": b"x",
        },
        True,
    ),
    "marker and a killed metadata write": (
        {MARKER: MARKER_BYTES, "t/.zarray." + "ab" * 16 + ".partial": b"{"},
        True,
    ),
    "marker and a stranger": ({MARKER: MARKER_BYTES, ".zgroup": b"{}", "x.txt": b"x"}, False),
    "foreign marker": ({MARKER: b'{"written_by": "me"}', ".zgroup": b"{}"}, False),
    "marker of lq sample": ({MARKER: b'{"written_by": "lq sample"}', ".zgroup": b"{}"}, True),
    "manifest of an earlier version": (
        {
            f"{PROGRESS_DIR}/manifest.json": b'{"description": {}}',
            ".zgroup": b"{}",
            "t/.zarray": b"{}",
            "t/0.0": b"x",
        },
        True,
    ),
    "empty manifest beside files": (
        {f"{PROGRESS_DIR}/manifest.json": b"", "results.csv": b"x"},
        False,
    ),
    "zgroup and files": ({".zgroup": b"{}", "thesis.tex": b"x"}, False),
    "zarr store of someone else": ({".zgroup": b"{}", "t/.zarray": b"{}", "t/0.0": b"x"}, False),
}


@pytest.mark.parametrize("case", REMOVABLE)
def test_check_removable_table(tmp_path, case):
    from layerquantizer.dataset._destination import check_removable

    files, removable = REMOVABLE[case]
    dst = tmp_path / "dst.zarr"
    dst.mkdir()
    for key, value in files.items():
        (dst / key).parent.mkdir(parents=True, exist_ok=True)
        (dst / key).write_bytes(value)
    if removable:
        check_removable(str(dst))
    else:
        with pytest.raises(ValueError, match="remove it yourself or choose another DST"):
            check_removable(str(dst))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_stores_of_the_previous_version_are_recognised(victim, tmp_path, zarr_format):
    from layerquantizer.dataset._destination import check_removable

    out = tmp_path / "out.zarr"
    dataset.compress(str(victim), str(out), variables=["temperature"], zarr_format=zarr_format)
    (out / MARKER).unlink()  # as the previous version wrote it
    check_removable(str(out))
    (out / "temperature" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds temperature/notes.txt"):
        check_removable(str(out))


# --------------------------------------------------------------------------------------
# Symbolic links out of a source


def test_symlink_out_of_a_local_source_is_refused(victim, tmp_path):
    secret = tmp_path / "private.key"
    secret.write_bytes(b"\x00" * 64)
    chunk = next(p for p in sorted((victim / "temperature").iterdir()) if p.name[0] != ".")
    chunk.unlink()
    chunk.symlink_to(secret)
    out = tmp_path / "out.zarr"
    result = lq("compress", victim, out, "--vars", "temperature")
    assert_one_line(result, 2, f"temperature/{chunk.name}", "outside the source")
    assert not out.exists() and not Path(f"{out}{LOCK_SUFFIX}").exists()


# --------------------------------------------------------------------------------------
# Locks


def test_a_second_run_into_a_destination_being_written_is_refused(victim, tmp_path):
    out = tmp_path / "out.zarr"
    assert lq_here("compress", victim, out, "--vars", "temperature").returncode == 0
    assert not Path(f"{out}{LOCK_SUFFIX}").exists()  # released at the end
    before = tree(out)
    run = lq  # the first as a user meets it, the others in this process
    with DestinationLock(str(out)) as held:  # this process is "the other run"
        for spelling in (out, f"file://{out}/", out.parent / "." / out.name):
            result = run("compress", victim, spelling, "--vars", "temperature", "--overwrite")
            run = lq_here
            assert_one_line(result, 1, "is being written by another lq compress",
                            f"pid {os.getpid()}", held.info["host"], held.info["started"],
                            "--break-lock", f"{out}{LOCK_SUFFIX}")  # fmt: skip
            assert tree(out) == before
        assert Path(held.path).exists()
    assert not Path(held.path).exists()
    # A lock left by a run that died (SIGKILL) on this host is stale: taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Path(f"{out}{LOCK_SUFFIX}").write_text(
        json.dumps({**held.info, "pid": dead.pid, "token": "dead"})
    )
    result = lq("compress", victim, out, "--vars", "temperature", "--overwrite")
    assert result.returncode == 0, result.stderr
    # Another host's lock cannot be judged: --break-lock takes it.
    Path(f"{out}{LOCK_SUFFIX}").write_text(json.dumps({**held.info, "host": "elsewhere"}))
    result = lq_here("compress", victim, out, "--vars", "temperature", "--overwrite")
    assert_one_line(result, 1, "host elsewhere")
    result = lq_here("compress", victim, out, "--vars", "temperature", "--overwrite",
                     "--break-lock")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not Path(f"{out}{LOCK_SUFFIX}").exists()


def test_lq_sample_takes_the_lock_of_its_destination(tmp_path):
    """Before: lq sample took no lock, so two lq sample runs, or lq sample while lq compress
    wrote the same DST, interleaved their writes. Now it takes DST.lq-lock as compress does:
    the same one-line error and exit code, and the lock it leaves behind is none."""
    out = tmp_path / "s.zarr"
    args = ("sample", out, "--levels", "1", "--grid", "16x8", "--times", "1")
    with DestinationLock(str(out)) as held:  # this process is "the other run"
        result = lq(*args, "--overwrite")
        assert_one_line(result, 1, "is being written by another lq compress",
                        f"pid {os.getpid()}", "--break-lock", f"{out}{LOCK_SUFFIX}")  # fmt: skip
        assert not out.exists()
    # What lq sample writes the lock names as its own, for a run that comes meanwhile.
    with DestinationLock(str(out), writer="lq sample"):
        result = lq(*args)
        assert_one_line(result, 1, "is being written by another lq sample")
    # Another host's lock cannot be judged: --break-lock takes it.
    Path(f"{out}{LOCK_SUFFIX}").write_text(json.dumps({**held.info, "host": "elsewhere"}))
    assert_one_line(lq(*args), 1, "host elsewhere", "--break-lock")
    result = lq(*args, "--break-lock")
    assert result.returncode == 0, result.stderr
    assert not Path(f"{out}{LOCK_SUFFIX}").exists()
    assert xr.open_zarr(out)["temperature"].sizes["longitude"] == 16


def test_a_bucket_is_no_destination(victim):
    with pytest.raises(dataset.RequestError, match="name a store inside the bucket"):
        dataset.compress(str(victim), "gs://some-bucket/", variables=["temperature"])


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("error", [_Interrupted, KeyboardInterrupt])
def test_the_lock_is_released_on_error_and_ctrl_c(victim, tmp_path, error):
    out = tmp_path / "out.zarr"

    def progress(*_):
        raise error

    with pytest.raises(error):
        dataset.compress(str(victim), str(out), variables=["temperature"], progress=progress)
    assert not Path(f"{out}{LOCK_SUFFIX}").exists()
    dataset.compress(str(victim), str(out), variables=["temperature"], resume=True)
    assert dataset.verify(str(victim), str(out)).ok


def test_gs_lock_refuses_a_second_run(gs_victim):
    from servers import emulator_filesystem

    src, out = f"gs://{gs_victim}/x.zarr", f"gs://{gs_victim}/out.zarr"
    assert lq_here("compress", src, out, "--vars", "temperature").returncode == 0
    fs = emulator_filesystem()
    assert not fs.exists(f"{gs_victim}/out.zarr{LOCK_SUFFIX}")
    with DestinationLock(out) as held:
        before = gs_tree(gs_victim)
        assert f"{gs_victim}/out.zarr{LOCK_SUFFIX}" in before
        for spelling in (out, f"GCS://{gs_victim}//out.zarr/"):
            result = lq("compress", src, spelling, "--vars", "temperature", "--overwrite")
            assert_one_line(result, 1, "is being written by another lq compress",
                            f"pid {os.getpid()}", held.info["started"],
                            f"gs://{gs_victim}/out.zarr{LOCK_SUFFIX}")  # fmt: skip
        assert gs_tree(gs_victim) == before
    assert gs_tree(gs_victim) == {k: v for k, v in before.items() if not k.endswith(LOCK_SUFFIX)}
    result = lq("compress", src, out, "--vars", "geopotential", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not fs.exists(f"{gs_victim}/out.zarr{LOCK_SUFFIX}")
    # A missing destination bucket is named as such, before any lock is written.
    result = lq_here("compress", src, "gs://lq-no-such-bucket/o.zarr", "--vars", "temperature")
    assert_one_line(result, 1, "bucket 'lq-no-such-bucket' does not exist")
