"""What ``lq compress`` (and ``lq sample``) owns in a destination: the marker that says it
wrote the store, the check before ``--overwrite`` removes anything, the lock of a run, and the
check that a local source does not link out of itself.

A run of ``lq compress SRC DST`` works like this::

    with DestinationLock(DST):                 # DST.lq-lock, beside DST: one run per DST
        check_removable(DST)                   # --overwrite: only what lq wrote, nothing else
        remove_store(DST)
        write_marker(DST)                      # DST/.lq-store.json, before any metadata
        ...                                    # metadata, chunks, consolidated metadata

The lock sits beside DST rather than in it, so that it exists before DST does and outlives
the removal of an old DST; it is made atomically (``O_CREAT | O_EXCL`` on a local disk,
``ifGenerationMatch=0`` on Google Cloud Storage), and holds the host, the pid and the start
time of the run holding it, and which command it is (one of :data:`WRITERS`). A lock whose
process is gone on this host (``kill -9``) is stale and taken over; a lock of another host is
only broken on request (``--break-lock``).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import sys
import uuid
from typing import Any

from layerquantizer.dataset._unit import PROGRESS_DIR

__all__ = [
    "LOCK_SUFFIX",
    "MARKER",
    "WRITERS",
    "DestinationLock",
    "DestinationLocked",
    "check_removable",
    "check_source_links",
    "marker_writer",
    "write_marker",
]

#: Name of the object at the root of every store ``lq compress`` (and ``lq sample``)
#: writes, written first.
MARKER = ".lq-store.json"

#: The commands a marker may name: what they wrote, ``--overwrite`` may remove.
WRITERS = ("lq compress", "lq sample")

#: Appended to DST's path to name the lock of the run writing DST.
LOCK_SUFFIX = ".lq-lock"

#: Version of the marker's layout.
MARKER_FORMAT = 1

_ROOT_METADATA = (".zgroup", ".zattrs", ".zmetadata", "zarr.json")
_ARRAY_METADATA = (".zarray", ".zattrs", "zarr.json")
# The temporary file zarr's LocalStore writes before renaming it into place.
_PARTIAL = r"(\.[0-9a-f]{32}\.partial)?"
_PARTIAL_SUFFIX = re.compile(r"\.[0-9a-f]{32}\.partial$")
_CHUNK_KEY = re.compile(r"^(\d+(\.\d+)*|c(/\d+)*|\d+(/\d+)*)$")
_PROGRESS_KEY = re.compile(
    rf"^(manifest\.json|metadata|complete|done/[^/]+/\d+(\.\d+)*){_PARTIAL}$"
)


def marker_contents(written_by: str = "lq compress") -> bytes:
    """The marker's bytes: the same for every store of one version, so that a resumed run
    writes the store an uninterrupted one does."""
    from layerquantizer import __version__

    content = {"written_by": written_by, "layerquantizer": __version__, "format": MARKER_FORMAT}
    return json.dumps(content, sort_keys=True).encode()


def write_marker(url: str, token: Any = None, written_by: str = "lq compress") -> None:
    """Write :data:`MARKER` at the root of the store at ``url``, naming the command that
    writes it (one of :data:`WRITERS`)."""
    from layerquantizer.storage import filesystem

    if written_by not in WRITERS:
        raise ValueError(f"written_by must be one of {', '.join(WRITERS)}, got {written_by!r}")
    fs, root = filesystem(url, "w", token=token)
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root.rstrip('/')}/{MARKER}", marker_contents(written_by))


def marker_writer(url: str, token: Any = None) -> str | None:
    """The command the marker of the store at ``url`` names, None without a readable one."""
    from layerquantizer.storage import filesystem

    fs, root = filesystem(url, "w", token=token)
    value = _json(fs, f"{root.rstrip('/')}/{MARKER}").get("written_by")
    return value if isinstance(value, str) else None


def check_removable(url: str, token: Any = None) -> None:
    """Refuse, with :class:`ValueError`, to remove anything ``lq compress`` or ``lq sample``
    did not write: the one check of both commands' ``--overwrite``.

    Removable: nothing at ``url``; only lq's bookkeeping (:data:`MARKER`, a progress
    folder); or a store of Zarr arrays (metadata and chunk keys, nothing else) that
    lq positively wrote: it holds :data:`MARKER` naming one of :data:`WRITERS`, or (runs of
    earlier versions of ``lq compress``, which wrote no marker) a readable progress
    manifest, or consolidated metadata with ``layerquantizer_*`` attributes.

    Examples
    --------
    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/doc/removable/notes.txt", b"mine")
    >>> try:
    ...     check_removable("memory://doc/removable")
    ... except ValueError as error:
    ...     print(str(error).split(";")[1])
     refusing to remove it: remove it yourself or choose another DST
    """
    from layerquantizer.storage import filesystem

    fs, root = filesystem(url, "w", token=token)
    root = root.rstrip("/")
    try:
        if fs.info(root).get("type") != "directory":
            raise ValueError(
                f"{url}: a file, not a store; refusing to remove it: remove it yourself or "
                "choose another DST"
            )
        keys = sorted(path[len(root) + 1 :] for path in fs.find(root, withdirs=False))
    except FileNotFoundError:
        return
    if all(_is_bookkeeping(key) for key in keys):
        return
    written_by_lq = (
        _json(fs, f"{root}/{MARKER}").get("written_by") in WRITERS
        or isinstance(_json(fs, f"{root}/{PROGRESS_DIR}/manifest.json").get("description"), dict)
        or _has_lq_attributes(fs, root)
    )
    if not written_by_lq:
        raise ValueError(
            f"{url}: not written by lq compress or lq sample (no {MARKER}, no progress "
            "manifest, no layerquantizer attributes); refusing to remove it: remove it "
            "yourself or choose another DST"
        )
    stranger = _first_stranger(keys)
    if stranger is not None:
        raise ValueError(
            f"{url}: holds {stranger}, which lq compress does not write; refusing to remove "
            "it: remove it yourself or choose another DST"
        )


def _is_bookkeeping(key: str) -> bool:
    head, _, rest = key.partition("/")
    return key == MARKER or (head == PROGRESS_DIR and bool(_PROGRESS_KEY.match(rest)))


def _first_stranger(keys: list[str]) -> str | None:
    """The first key that is neither lq's bookkeeping nor a part of a Zarr array."""
    arrays: dict[str, list[str]] = {}
    for key in keys:
        if _is_bookkeeping(key) or key in _ROOT_METADATA:
            continue
        head, _, rest = key.partition("/")
        if not rest:
            return key
        arrays.setdefault(head, []).append(rest)
    for name, inside in arrays.items():
        has_metadata = any(key in (".zarray", "zarr.json") for key in inside)
        for key in inside:
            whole = _PARTIAL_SUFFIX.sub("", key)
            if whole not in _ARRAY_METADATA and not _CHUNK_KEY.match(whole):
                return f"{name}/{key}"
            # A run killed while writing an array's metadata leaves only temporary files.
            if not has_metadata and whole == key:
                return f"{name}/{key}"
    return None


def _json(fs, path: str) -> dict:
    try:
        value = json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _has_lq_attributes(fs, root: str) -> bool:
    """Whether the store's consolidated metadata (v2 or v3) gives an array a
    ``layerquantizer_*`` attribute, as every store of ``lq compress`` does."""
    v2 = _json(fs, f"{root}/.zmetadata").get("metadata")
    v3 = _json(fs, f"{root}/zarr.json").get("consolidated_metadata")
    documents = []
    if isinstance(v2, dict):
        documents = [doc for key, doc in v2.items() if key.endswith("/.zattrs")]
    elif isinstance(v3, dict) and isinstance(v3.get("metadata"), dict):
        documents = [doc.get("attributes") for doc in v3["metadata"].values()
                     if isinstance(doc, dict)]  # fmt: skip
    return any(
        isinstance(doc, dict) and any(str(k).startswith("layerquantizer_") for k in doc)
        for doc in documents
    )


# --------------------------------------------------------------------------------------
# The lock


class DestinationLocked(RuntimeError):
    """Another run holds the lock of the destination; the message names it and the way out."""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a live
    process from a new one that reuses the pid of a dead run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The command name (field 2) may hold spaces and parentheses: split after it.
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _process_alive(pid: Any, start: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return start is None or _process_start(pid) in (None, start)


class DestinationLock:
    """The lock of the run writing ``url``: ``url`` + :data:`LOCK_SUFFIX`, beside the store.

    A context manager: entering takes the lock (or raises :class:`DestinationLocked`),
    leaving releases it, on success, error or Ctrl-C alike. ``memory://`` stores live in one
    process and take no lock.

    Parameters
    ----------
    url : str
        The destination store's path or URL, in any spelling (see
        :func:`layerquantizer.storage.normalize_location`).
    token : optional
        gcsfs credentials for a ``gs://`` destination.
    break_lock : bool
        Take the lock even if another run holds it (for a lock left by a run on another host
        that is gone).
    writer : str
        The command taking the lock (one of :data:`WRITERS`), named to a run that finds it.

    Examples
    --------
    >>> import tempfile
    >>> dst = f"{tempfile.mkdtemp()}/out.zarr"
    >>> with DestinationLock(dst) as lock:
    ...     try:
    ...         DestinationLock(dst).acquire()
    ...     except DestinationLocked as error:
    ...         print(str(error).split(" (")[0] == f"{dst} is being written by another lq compress")
    True
    """

    def __init__(
        self, url: str, token: Any = None, *, break_lock: bool = False,
        writer: str = "lq compress",
    ) -> None:  # fmt: skip
        from layerquantizer.storage import _split_url, filesystem

        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {', '.join(WRITERS)}, got {writer!r}")

        protocol, root = _split_url(url)
        self.url = url
        self.break_lock = break_lock
        self.fs = None
        self.path: str | None = None
        self.where = ""
        self.held = False
        if protocol == "memory":
            return
        if protocol == "gs" and "/" not in root:
            raise ValueError(
                f"{url}: name a store inside the bucket (gs://{root}/NAME.zarr), not the bucket"
            )
        self.fs, _ = filesystem(url, "w", token=token)
        self.path = f"{root.rstrip('/')}{LOCK_SUFFIX}"
        self.where = self.path if protocol == "file" else f"gs://{self.path}"
        now = datetime.datetime.now(datetime.UTC)
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": " ".join(sys.argv)[:500],
            "writer": writer,
            "token": uuid.uuid4().hex,
        }

    def __enter__(self) -> DestinationLock:
        return self if self.held else self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except Exception:
            if exc is None:
                raise
            # Never hide the error that ended the run behind a failed release.

    def acquire(self) -> DestinationLock:
        """Take the lock; a stale one (its process gone, on this host) is taken over."""
        if self.path is None:
            return self
        holder: dict | None = None
        for _ in range(3):
            try:
                self._create()
                self.held = True
                return self
            except FileExistsError:
                holder = self._read()
            if holder == {}:
                continue  # released meanwhile
            if self.break_lock or (holder is not None and self._stale(holder)):
                self._remove_if(holder)
                continue
            break
        raise DestinationLocked(self._message(holder))

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.path is None or not self.held:
            return
        self.held = False
        if (self._read() or {}).get("token") == self.info["token"]:
            self.fs.rm_file(self.path)

    def _create(self) -> None:
        data = json.dumps(self.info, sort_keys=True).encode()
        from fsspec.implementations.local import LocalFileSystem

        if isinstance(self.fs, LocalFileSystem):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            # Written whole to a file of our own, then linked into place: link() fails if
            # the lock exists, and a kill never leaves a lock without its holder's record.
            partial = f"{self.path}.{self.info['token']}"
            descriptor = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                with os.fdopen(descriptor, "wb") as lock:
                    lock.write(data)
                try:
                    os.link(partial, self.path)
                except FileExistsError:
                    raise
                except OSError:  # a filesystem without hard links
                    descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    with os.fdopen(descriptor, "wb") as lock:
                        lock.write(data)
            finally:
                os.unlink(partial)
            return
        # GCS creates the object only if it is absent (ifGenerationMatch=0, sent by gcsfs's
        # mode="create"; HTTP 412 becomes FileExistsError). gcp-storage-emulator ignores the
        # precondition, so look first and read back: there, two runs starting within the
        # same request or two can still both win, a live lock is always seen.
        if self._read() != {}:
            raise FileExistsError(self.path)
        self.fs.pipe_file(self.path, data, mode="create")
        if (self._read() or {}).get("token") != self.info["token"]:
            raise FileExistsError(self.path)

    def _read(self) -> dict | None:
        """The holder's record; ``{}`` if there is no lock, None if it is unreadable."""
        try:
            value = json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return {}
        except ValueError:
            return None
        return value if isinstance(value, dict) and value else None

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") != self.info["host"]:
            return False
        return not _process_alive(holder.get("pid"), holder.get("process_start"))

    def _remove_if(self, holder: dict | None) -> None:
        # Another run may have taken the stale lock meanwhile: remove only what was judged.
        if self._read() == holder:
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass

    def _message(self, holder: dict | None) -> str:
        if holder:
            who = (
                f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
                f"started {holder.get('started', '?')}"
            )
        else:
            who = "an unreadable lock"
        # Locks of versions before lq sample took one name no writer: lq compress's.
        writer = (holder or {}).get("writer")
        writer = writer if writer in WRITERS else "lq compress"
        return (
            f"{self.url} is being written by another {writer} ({who}); wait for it to end, "
            f"or if that run is gone, pass --break-lock (or delete {self.where})"
        )


# --------------------------------------------------------------------------------------
# Links out of a local source


def check_source_links(url: str) -> None:
    """Refuse, with :class:`ValueError`, a local source holding a symbolic link to anything
    outside it: its target would be copied into DST, e.g. a private file linked as a chunk.

    Links inside the source, and the source's own path being a link, are fine. Other
    schemes have no links.
    """
    from layerquantizer.storage import _split_url

    protocol, root = _split_url(url)
    if protocol != "file" or not os.path.isdir(root):
        return
    inside = root.rstrip("/") + "/"
    pending = [root]
    while pending:
        # scandir's entries know from the directory listing whether they are links: no
        # stat per chunk, so a local ERA5 store of 10^5 chunks takes a fraction of a second.
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if target != root and not target.startswith(inside):
                        raise ValueError(
                            f"{url}: {os.path.relpath(entry.path, root)} is a symbolic link to "
                            f"{target}, outside the source; lq does not follow links out of "
                            "SRC: copy what it points to into SRC or remove the link"
                        )
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
