"""layerquantizer.storage: opening, probing and removing stores; classifying their failures.

Local and memory stores need nothing; gs:// runs against the GCS emulator of tests/servers.py.
The emulator grants everything, so permission errors come from a loopback HTTP server that
answers like GCS refusing a caller, spoken to by the real gcsfs.
"""

import asyncio
import http.server
import json
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from layerquantizer.storage import (
    StoreError,
    StoreNotFound,
    StorePermissionDenied,
    StoreUnreachable,
    classify_store_error,
    gcs_token,
    locations_overlap,
    normalize_location,
    open_store,
    remove_store,
    store_errors,
    store_exists,
    stored_bytes,
)


def small_dataset() -> xr.Dataset:
    values = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), values)})


def write_small_store(store) -> xr.Dataset:
    dataset = small_dataset()
    dataset.to_zarr(store, zarr_format=2, consolidated=True, mode="w")
    return dataset


def local_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- the module itself ----------------------------------------------------------------------


def test_importing_the_package_and_storage_imports_no_cloud_or_dataframe_library():
    code = (
        "import sys, layerquantizer, layerquantizer.storage; "
        "print(sorted(m for m in ('xarray', 'dask', 'distributed', 'gcsfs', 'fsspec', "
        "'aiohttp', 'google') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("mode", "token", "emulator", "expected"),
    [
        ("r", None, None, "anon"),
        ("w", None, None, "google_default"),
        ("r+", None, None, "google_default"),
        ("w", None, "http://127.0.0.1:1", "anon"),
        ("r", "key.json", None, "key.json"),
        ("w", {"type": "service_account"}, "http://127.0.0.1:1", {"type": "service_account"}),
    ],
)
def test_gcs_token_reads_anonymously_and_writes_with_default_credentials(
    monkeypatch, mode, token, emulator, expected
):
    if emulator is None:
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    assert gcs_token(mode, token) == expected


# --- exceptions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (StoreNotFound, FileNotFoundError),
        (StorePermissionDenied, PermissionError),
        (StoreUnreachable, ConnectionError),
    ],
)
def test_store_errors_are_one_line_pickle_and_match_the_builtin_kinds(cls, builtin):
    error = cls("gs://b/x.zarr", "permission denied; pass --gcs-token FILE")
    assert isinstance(error, StoreError) and isinstance(error, builtin)
    assert str(error) == "gs://b/x.zarr: permission denied; pass --gcs-token FILE"
    assert "\n" not in str(error)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls and str(back) == str(error) and back.url == "gs://b/x.zarr"


def refused_connection() -> Exception:
    """The aiohttp error for a loopback port nothing listens on."""
    import aiohttp
    from servers import free_port

    async def connect():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{free_port()}/"):
                pass

    try:
        asyncio.run(connect())
    except Exception as error:
        return error
    raise AssertionError("a connection to a closed port succeeded")


def gcsfs_response_error(status: int, message: str = "") -> Exception:
    """What gcsfs raises for an HTTP error response (its own response check)."""
    from gcsfs.retry import validate_response

    body = json.dumps({"error": {"code": status, "message": message}}).encode()
    try:
        validate_response(status, body, "b/bucket/o/x.zarr%2Fzarr.json")
    except Exception as error:
        return error
    raise AssertionError(f"gcsfs accepted HTTP {status}")


def raised_from(cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as error:
            raise RuntimeError("zarr failed to write a chunk") from error
    except RuntimeError as wrapper:
        return wrapper


def missing_local_file() -> Exception:
    try:
        open("/nonexistent-lq-test/zarr.json", "rb")
    except FileNotFoundError as error:
        return error
    raise AssertionError("/nonexistent-lq-test exists")


def default_credentials_error() -> Exception:
    from google.auth.exceptions import DefaultCredentialsError

    return DefaultCredentialsError("Your default credentials were not found.")


@dataclass
class Expect:
    error: object  # a callable making the real exception
    kind: type[StoreError] | None
    message: str = ""
    url: str = "gs://bucket/x.zarr"


CLASSIFICATIONS = {
    "gcsfs 403": Expect(
        lambda: gcsfs_response_error(403, "caller does not have storage.objects.get access"),
        StorePermissionDenied,
        "permission denied; pass --gcs-token FILE (token=) or set GOOGLE_APPLICATION_CREDENTIALS",
    ),
    "gcsfs 401 anonymous": Expect(
        lambda: gcsfs_response_error(401, "Anonymous caller does not have access"),
        StorePermissionDenied,
        "HTTP 401",
    ),
    "gcsfs 404": Expect(lambda: gcsfs_response_error(404), StoreNotFound, "check the path"),
    "gcsfs 503 after retries": Expect(
        lambda: gcsfs_response_error(503, "backend error"), StoreUnreachable, "HTTP 503"
    ),
    "gcsfs 400": Expect(lambda: gcsfs_response_error(400, "bad thing"), None),
    "no credentials": Expect(
        default_credentials_error, StorePermissionDenied, "GOOGLE_APPLICATION_CREDENTIALS"
    ),
    "connection refused": Expect(refused_connection, StoreUnreachable, "cannot reach"),
    "local permission": Expect(
        lambda: PermissionError(13, "Permission denied", "/data/x.zarr"),
        StorePermissionDenied,
        "check the permissions",
        url="/data/x.zarr",
    ),
    "local missing": Expect(missing_local_file, StoreNotFound, "check the path", url="/x.zarr"),
    "wrapped 404": Expect(lambda: raised_from(gcsfs_response_error(404)), StoreNotFound),
    "local Forbidden-looking OSError": Expect(
        lambda: OSError("Forbidden: not a gcsfs error"), None, url="/x.zarr"
    ),
    "unrelated": Expect(lambda: ValueError("bad nbits"), None),
}


@pytest.mark.parametrize("case", CLASSIFICATIONS.values(), ids=CLASSIFICATIONS.keys())
def test_classify_store_error_on_the_exceptions_the_libraries_raise(case):
    error = case.error()
    classified = classify_store_error(error, case.url)
    if case.kind is None:
        assert classified is None
        return
    assert type(classified) is case.kind
    assert str(classified).startswith(f"{case.url}: ")
    assert case.message in str(classified)
    assert "\n" not in str(classified)


def test_store_errors_converts_known_errors_and_lets_others_through():
    with pytest.raises(StoreNotFound, match=r"^gs://b/x.zarr: not found") as caught:
        with store_errors("gs://b/x.zarr"):
            raise gcsfs_response_error(404)
    assert isinstance(caught.value.__cause__, FileNotFoundError)

    with pytest.raises(ValueError, match="bad nbits"):
        with store_errors("gs://b/x.zarr"):
            raise ValueError("bad nbits")


# --- local and memory stores ----------------------------------------------------------------


def test_open_store_local_modes(tmp_path):
    path = tmp_path / "out.zarr"
    store = open_store(path, mode="w")
    assert isinstance(store, zarr.storage.LocalStore) and not store.read_only
    dataset = write_small_store(store)

    for url in (str(path), f"file://{path}", path):
        source = open_store(url)
        assert isinstance(source, zarr.storage.LocalStore) and source.read_only
        xr.testing.assert_equal(xr.open_zarr(source).load(), dataset)
    assert not open_store(path, mode="r+").read_only


def test_open_store_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_small_store(tmp_path / "home.zarr")
    assert Path(open_store("~/home.zarr").root) == tmp_path / "home.zarr"


def test_open_store_reading_nothing_or_not_zarr_is_store_not_found(tmp_path):
    missing = tmp_path / "missing.zarr"
    with pytest.raises(StoreNotFound, match=r"missing.zarr: no such file or directory; check"):
        open_store(missing)
    with pytest.raises(FileNotFoundError):  # StoreNotFound is one
        open_store(missing, mode="r+")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    with pytest.raises(StoreNotFound, match=r"no Zarr store there \(no zarr.json, .zgroup"):
        open_store(tmp_path / "plain")


@pytest.mark.parametrize(
    ("url", "mode", "message"),
    [
        ("out.zarr", "a", "mode must be one of 'r', 'r\\+', 'w', got 'a'"),
        ("s3://bucket/x.zarr", "r", "unsupported scheme 's3'; use a local path, file://"),
        ("gs://", "r", "no bucket named; write gs://BUCKET/PATH"),
    ],
)
def test_open_store_rejects_modes_and_schemes_it_does_not_support(url, mode, message):
    with pytest.raises(ValueError, match=message):
        open_store(url, mode=mode)


def test_memory_store_round_trip():
    url = "memory://test-storage/round-trip.zarr"
    dataset = write_small_store(open_store(url, mode="w"))
    assert isinstance(open_store(url), zarr.storage.FsspecStore)
    xr.testing.assert_equal(xr.open_zarr(open_store(url)).load(), dataset)
    assert remove_store(url)
    with pytest.raises(StoreNotFound, match="no Zarr store there"):
        open_store(url)


@pytest.mark.parametrize("where", ["local", "file-url", "memory"])
def test_exists_stored_bytes_and_remove(tmp_path, where):
    url = {
        "local": str(tmp_path / "x.zarr"),
        "file-url": f"file://{tmp_path}/x.zarr",
        "memory": f"memory://test-storage/{tmp_path.name}/x.zarr",
    }[where]
    assert not store_exists(url)
    assert not remove_store(url)
    with pytest.raises(StoreNotFound, match="nothing is there"):
        stored_bytes(url)

    write_small_store(open_store(url, mode="w"))
    assert store_exists(url)
    total = stored_bytes(url)
    assert total > 0 and 0 < stored_bytes(url, "t2m") < total
    assert stored_bytes(url, "no-such-variable") == 0
    if where != "memory":
        assert total == local_size(tmp_path / "x.zarr")

    assert remove_store(url)
    assert not store_exists(url)


def test_remove_store_removes_an_empty_directory_but_never_other_data(tmp_path):
    (tmp_path / "empty").mkdir()
    assert remove_store(tmp_path / "empty") and not (tmp_path / "empty").exists()

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "paper.tex").write_text("keep me")
    with pytest.raises(ValueError, match="not a Zarr store .* refusing to remove it"):
        remove_store(tmp_path / "results")
    assert (tmp_path / "results" / "paper.tex").read_text() == "keep me"

    for url in ("/", "~", "gs://some-bucket", "gs://some-bucket/"):
        with pytest.raises(ValueError, match="refusing to remove"):
            remove_store(url)


# --- normalised locations: the one spelling that checks and removals compare ---------------


@dataclass(frozen=True)
class Spelling:
    location: str
    normalized: str
    id: str


def spellings(home: Path, here: Path) -> list[Spelling]:
    return [
        Spelling("a.zarr", f"{here}/a.zarr", "relative"),
        Spelling("./a.zarr/", f"{here}/a.zarr", "dot-trailing"),
        Spelling(f"{here}//a.zarr", f"{here}/a.zarr", "double-slash"),
        Spelling(f"{here}/b/../a.zarr", f"{here}/a.zarr", "dot-dot"),
        Spelling(f"file://{here}/a.zarr", f"{here}/a.zarr", "file-url"),
        Spelling(f"FILE://{here}/a.zarr/", f"{here}/a.zarr", "FILE-url"),
        Spelling("file://a.zarr", f"{here}/a.zarr", "file-url-relative"),
        Spelling("~/v.zarr", f"{home}/v.zarr", "home"),
        Spelling("file://~/v.zarr", f"{home}/v.zarr", "file-url-home"),
        Spelling(f"{here}/link/a.zarr", f"{here}/real/a.zarr", "symlinked-parent"),
        Spelling("gs://b/x.zarr", "gs://b/x.zarr", "gs"),
        Spelling("gcs://b/x.zarr", "gs://b/x.zarr", "gcs"),
        Spelling("GS://b/x.zarr", "gs://b/x.zarr", "GS"),
        Spelling("Gcs://b/x.zarr", "gs://b/x.zarr", "Gcs"),
        Spelling("gs://b//x.zarr", "gs://b/x.zarr", "gs-double-slash"),
        Spelling("gs://b/x.zarr///", "gs://b/x.zarr", "gs-trailing"),
        Spelling("gs:///b/x.zarr", "gs://b/x.zarr", "gs-leading"),
        Spelling("memory://m//x.zarr/", "memory://m/x.zarr", "memory"),
        Spelling("MEMORY://m/x.zarr", "memory://m/x.zarr", "MEMORY"),
    ]


def test_normalize_location_table(tmp_path, monkeypatch):
    home, here = tmp_path / "home", tmp_path / "work"
    for folder in (home, here, here / "real"):
        folder.mkdir(parents=True, exist_ok=True)
    (here / "link").symlink_to(here / "real", target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    found = {case.id: normalize_location(case.location) for case in spellings(home, here)}
    assert found == {case.id: case.normalized for case in spellings(home, here)}


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("gs://b/x.zarr", "GCS://b//x.zarr/", True),
        ("gs://b/x.zarr", "gs://b/x.zarr/t2m", True),
        ("gs://b/x.zarr/t2m", "gs://b/x.zarr", True),
        ("gs://b/x.zarr", "gs://b/x.zarr-lq", False),
        ("gs://b/x.zarr", "gs://c/x.zarr", False),
        ("gs://b/x.zarr", "memory://b/x.zarr", False),
        ("memory://m/x.zarr", "memory://m//x.zarr", True),
    ],
)
def test_locations_overlap_urls(a, b, overlap):
    assert locations_overlap(a, b) is overlap


def test_locations_overlap_local(tmp_path, monkeypatch):
    store = tmp_path / "v.zarr"
    store.mkdir()
    (tmp_path / "link.zarr").symlink_to(store, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for other in ("v.zarr", "./v.zarr/", f"FILE://{store}", "~/v.zarr", "link.zarr",
                  f"{tmp_path}//v.zarr/c", str(tmp_path)):  # fmt: skip
        assert locations_overlap(store, other) and locations_overlap(other, store), other
    assert not locations_overlap(store, tmp_path / "v.zarr-lq")


# --- gs:// against the emulator -------------------------------------------------------------


@pytest.mark.slow
def test_gs_missing_bucket_and_missing_store_are_store_not_found(gcs_bucket):
    with pytest.raises(StoreNotFound, match=r"bucket 'lq-no-such-bucket' does not exist"):
        open_store("gs://lq-no-such-bucket/x.zarr")
    with pytest.raises(StoreNotFound, match=r"bucket 'lq-no-such-bucket' does not exist"):
        open_store("gs://lq-no-such-bucket/x.zarr", mode="w")
    with pytest.raises(StoreNotFound, match=rf"^gs://{gcs_bucket}/x.zarr: no Zarr store there"):
        open_store(f"gs://{gcs_bucket}/x.zarr")
    assert not store_exists("gs://lq-no-such-bucket/x.zarr")
    assert not store_exists(f"gs://{gcs_bucket}/x.zarr")


@pytest.mark.slow
def test_gs_exists_stored_bytes_and_remove(gcs_bucket):
    from servers import emulator_filesystem

    url = f"gs://{gcs_bucket}/x.zarr"
    write_small_store(open_store(url, mode="w"))
    assert store_exists(url)
    objects = emulator_filesystem().find(f"{gcs_bucket}/x.zarr", detail=True)
    assert stored_bytes(url) == sum(info["size"] for info in objects.values()) > 0
    assert 0 < stored_bytes(url, "t2m/") < stored_bytes(url)
    with pytest.raises(ValueError, match="refusing to remove a whole bucket"):
        remove_store(f"gs://{gcs_bucket}")
    assert remove_store(url)
    assert not store_exists(url)
    assert emulator_filesystem().find(gcs_bucket) == []


@pytest.mark.slow
def test_gs_store_sees_what_another_process_did(gcs_bucket):
    """No listing or instance cache hides another process's writes or removals."""
    url = f"gs://{gcs_bucket}/shared.zarr"
    write_small_store(open_store(url, mode="w"))
    assert store_exists(url)
    code = f"from layerquantizer.storage import remove_store; print(remove_store({url!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    assert not store_exists(url)
    with pytest.raises(StoreNotFound):
        open_store(url)


@pytest.mark.slow
def test_gs_store_keeps_its_endpoint_when_pickled_to_a_process_without_the_environment(
    gcs_bucket, monkeypatch
):
    from servers import free_port

    url = f"gs://{gcs_bucket}/pinned.zarr"
    dataset = write_small_store(open_store(url, mode="w"))
    shipped = pickle.dumps(open_store(url))
    # What a dask worker started elsewhere sees: no emulator variable, or another one.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    xr.testing.assert_equal(xr.open_zarr(pickle.loads(shipped)).load(), dataset)


class RefusingGCS(http.server.ThreadingHTTPServer):
    """Answers every request as GCS answers a caller it refuses."""

    def __init__(self, status: int, message: str):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def refuse(self):
                body = json.dumps({"error": {"code": status, "message": message}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                server.requests += 1

            do_GET = do_POST = do_PUT = do_DELETE = refuse

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.requests = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        # gcsfs drops the listing it sent beside a refused GET; that is no server error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def refusing_gcs(request, monkeypatch):
    server = RefusingGCS(*request.param)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


REFUSALS = [
    pytest.param(
        (403, "reader@p.iam.gserviceaccount.com does not have storage.objects.get access"),
        id="403",
    ),
    pytest.param((401, "Anonymous caller does not have storage.objects.get access"), id="401"),
]


@pytest.mark.parametrize("refusing_gcs", REFUSALS, indirect=True)
def test_gs_refused_access_is_permission_denied_at_once(refusing_gcs):
    url = "gs://private-bucket/x.zarr"
    with pytest.raises(StorePermissionDenied, match=r"^gs://private-bucket/x.zarr: permission"):
        open_store(url)
    # gcsfs probes an object with a GET and a listing side by side; neither is retried,
    # which would make six tries of each, 30 s apart in all.
    assert refusing_gcs.requests < 6
    with pytest.raises(StorePermissionDenied, match="GOOGLE_APPLICATION_CREDENTIALS"):
        store_exists(url)
    with pytest.raises(StorePermissionDenied):
        stored_bytes(url)
