"""The progress of an ``lq compress`` run, kept inside DST so that ``--resume`` can finish it.

While a run writes, DST holds a hidden folder :data:`PROGRESS_DIR` beside the Zarr
metadata::

    DST/.lq-progress/manifest.json        what is being written (the plan's description)
    DST/.lq-progress/metadata             the Zarr metadata of every array is written
    DST/.lq-progress/done/VAR/B           units B*1024 .. B*1024+1023 of VAR (numbered in C
                                          order of the variable's unit grid): which of them
                                          have every chunk stored, each with the size and
                                          version of the source objects it read
    DST/.lq-progress/complete             consolidated metadata written; only cleanup left

The markers are batched (:data:`BATCH_UNITS` units per object) so that a whole store of
millions of units keeps thousands of marker objects, not millions: a million PUTs and a
listing of a million objects on GCS were the cost of one object per unit. The parent
process writes them (:class:`Ledger`) from what the workers report once a unit's chunks
are all stored: a batch's object when its last unit is done, and every
:data:`FLUSH_SECONDS` the batches still open, so that a kill loses at most those seconds
of work. A unit not in a marker is written again in full on resume: a chunk half-written
when the process died is never taken for a complete one (and zarr's local and GCS writes
replace an object whole; so do the markers: locally written to a temporary file then
renamed). The consolidated metadata is written last, then the folder is removed, markers
first and the manifest last, so the finished store holds exactly what an uninterrupted
run writes. Zarr and xarray ignore the folder (no Zarr metadata in it); ``lq inspect``
skips it.

On resume the units not recorded are written first: a run with a million units done
starts writing at once. Then the recorded units are checked, one job per batch
(:class:`layerquantizer.dataset._unit.CheckJob`): a worker looks their source objects up
together and skips each unit whose objects have the size and version (GCS generation,
etag or mtime) its marker records (``_unit.source_fingerprint``); a unit whose source
changed between the runs is written again.

The manifest records a description of the plan (source, variables and their bits or
tolerance, selection, chunks, Zarr format); resuming with options that describe another
plan is refused with the differences named.

Example::

    lq compress era5.zarr out.zarr --config configs/era5.yaml   # killed after 2 days
    lq compress era5.zarr out.zarr --config configs/era5.yaml --resume
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from layerquantizer.dataset._unit import PROGRESS_DIR

if TYPE_CHECKING:
    from layerquantizer.dataset._plan import Plan

__all__ = ["PROGRESS_DIR", "Progress", "describe_plan", "differences"]

#: Version of the manifest's layout; a different one is not resumed. 2: batched markers.
MANIFEST_FORMAT = 2

#: Units recorded by one marker object.
BATCH_UNITS = 1024
#: Seconds between writes of the markers of batches still being written.
FLUSH_SECONDS = 5.0

# A batch's marker name, as Progress.marker_key writes it.
_BATCH_NAME = re.compile(r"^\d+$")
# The temporary file zarr's LocalStore writes an object to before renaming it into place
# (``0.0.0.<uuid hex>.partial``); a process killed meanwhile leaves it behind.
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little"))
        hasher.update(part)
    return hasher.hexdigest()[:16]


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def normalize_location(location: str) -> str:
    """The location as :func:`layerquantizer.storage.normalize_location` spells it, so that
    ``a.zarr``, ``./a.zarr/`` and ``file://$PWD/a.zarr`` describe one source."""
    from layerquantizer.storage import normalize_location as normalize

    return normalize(location)


def describe_plan(plan: Plan, src: str) -> dict[str, Any]:
    """What decides the bytes of a run's output, as JSON values: two runs with equal
    descriptions write identical stores.

    Coordinates, attributes and the source positions selected along each dimension are
    summarized by digests; the rest is spelled out so that a mismatch can be named.
    """
    source = plan.source
    variables = {}
    for name in source.data_vars:
        var = source[name]
        variables[str(name)] = {
            "dims": [str(d) for d in var.dims],
            "shape": list(var.shape),
            "dtype": str(var.dtype),
            "nbits": plan.quantized.get(str(name)),
            "attrs": _digest(_json_bytes(var.attrs)),
        }
        tolerance = plan.tolerances.get(str(name))
        if tolerance is not None:  # only then: the descriptions of nbits runs stay as they were
            variables[str(name)]["tolerance"] = tolerance
    coords = {}
    for name in source.coords:
        values = source[name].values
        coords[str(name)] = _digest(
            values.tobytes() if values.dtype.kind != "O" else _json_bytes(values.tolist()),
            str(values.dtype).encode(),
            _json_bytes(source[name].attrs),
        )
    description = {
        "format": MANIFEST_FORMAT,
        "src": normalize_location(src),
        "zarr_format": plan.zarr_format,
        "chunks": dict(plan.chunks),
        "variables": variables,
        "selection": {
            dim: _digest(positions.astype("<i8").tobytes())
            for dim, positions in sorted(plan.source_positions.items())
        },
        "coords": coords,
        "attrs": _digest(_json_bytes(source.attrs)),
    }
    if plan.shards:  # only then: the descriptions of unsharded runs stay as they were
        description["shards"] = dict(plan.shards)
    return description


def differences(recorded: Mapping, wanted: Mapping, prefix: str = "") -> list[str]:
    """The paths (``variables.temperature.nbits``) where two descriptions differ.

    >>> differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}})
    ['b.c: 2 -> 3']
    """
    found = []
    for key in sorted(set(recorded) | set(wanted), key=str):
        path = f"{prefix}{key}"
        old, new = recorded.get(key, "(none)"), wanted.get(key, "(none)")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found.extend(differences(old, new, path + "."))
        elif old != new:
            if isinstance(old, str) and len(old) == 16 and isinstance(new, str):
                found.append(f"{path} differs")  # digests say nothing to a reader
            else:
                found.append(f"{path}: {old} -> {new}")
    return found


class Progress:
    """The progress folder of the run writing ``dst``.

    Parameters
    ----------
    dst : str
        The destination store's path or URL.
    token : optional
        gcsfs credentials for a ``gs://`` destination.
    """

    def __init__(self, dst: str, token: Any = None) -> None:
        from layerquantizer.storage import filesystem

        self.dst = dst
        self.fs, root = filesystem(dst, "w", token=token)
        self.root = root.rstrip("/")
        self.folder = f"{self.root}/{PROGRESS_DIR}"

    @staticmethod
    def marker_key(variable: str, batch: int) -> str:
        """The key (inside DST) of the marker of batch ``batch`` of ``variable``."""
        return f"{PROGRESS_DIR}/done/{variable}/{batch}"

    def _path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def _exists(self, path: str) -> bool:
        try:
            self.fs.info(path)
        except FileNotFoundError:
            return False
        return True

    def exists(self) -> bool:
        """Whether DST holds a progress folder (with or without a manifest)."""
        return self._exists(self.folder) or bool(self.fs.find(self.folder))

    def manifest(self) -> dict | None:
        """The recorded manifest, or None if there is none (or it is unreadable)."""
        try:
            return json.loads(self.fs.cat_file(self._path("manifest.json")))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # cut short by a kill: the run never got past its first write

    def start(self, description: Mapping) -> None:
        """Record the plan being written; the first thing a run writes into DST."""
        self.fs.makedirs(self.folder, exist_ok=True)
        manifest = {"description": dict(description), "dst": self.dst}
        self.fs.pipe_file(self._path("manifest.json"), _json_bytes(manifest))

    def mark(self, name: str) -> None:
        self.fs.pipe_file(self._path(name), b"")

    def marked(self, name: str) -> bool:
        return self._exists(self._path(name))

    def read_batches(self, variable: str) -> dict[int, dict[int, bytes]]:
        """Batch -> {unit ordinal: source fingerprint} of the units of ``variable`` recorded
        done: one listing of the variable's few marker objects and one (concurrent on an
        object store) read of them. A marker that cannot be read records nothing."""
        folder = f"{self._path('done')}/{variable}"
        try:
            paths = [
                path
                for path in self.fs.find(folder, withdirs=False)
                if _BATCH_NAME.match(path.rsplit("/", 1)[-1])
            ]
        except FileNotFoundError:
            return {}
        if not paths:
            return {}
        contents = self.fs.cat(paths, on_error="omit")
        batches = {}
        for path, data in contents.items():
            entries = _parse_marker(data)
            if entries is not None:
                batches[int(path.rsplit("/", 1)[-1])] = entries
        return batches

    def read_batch(self, variable: str, batch: int) -> dict[int, bytes]:
        """{unit ordinal: source fingerprint} of the units one marker records (none if the
        marker is missing or cannot be read)."""
        try:
            data = self.fs.cat_file(f"{self.root}/{self.marker_key(variable, batch)}")
        except FileNotFoundError:
            return {}
        return _parse_marker(data) or {}

    def write_batch(self, variable: str, batch: int, entries: Mapping[int, bytes]) -> None:
        """Record ``entries`` (unit ordinal -> source fingerprint) as the units of the batch
        done, replacing its marker whole."""
        data = _json_bytes(
            {
                "format": MANIFEST_FORMAT,
                "units": {str(o): entries[o].decode() for o in sorted(entries)},
            }
        )
        path = f"{self.root}/{self.marker_key(variable, batch)}"
        self._replace(path, data)

    def _replace(self, path: str, data: bytes) -> None:
        from fsspec.implementations.local import LocalFileSystem

        if not isinstance(self.fs, LocalFileSystem):
            self.fs.pipe_file(path, data)  # an object store replaces an object whole
            return
        import os
        import uuid

        # A kill mid-write leaves the temporary file (removed on resume), never a cut marker.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.partial"
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)

    def done_units(self) -> set[tuple[str, int]]:
        """(variable, unit ordinal) of every unit recorded done (reads every marker: for
        tests and reports, not for the run itself)."""
        done = self._path("done")
        try:
            variables = [p.rsplit("/", 1)[-1] for p in self.fs.ls(done, detail=False)]
        except FileNotFoundError:
            return set()
        return {
            (variable, ordinal)
            for variable in variables
            for entries in self.read_batches(variable).values()
            for ordinal in entries
        }

    def remove_partial_files(self) -> int:
        """Remove the temporary files of writes cut short by a kill (local stores only:
        an object store replaces an object whole or not at all). Returns how many."""
        from fsspec.implementations.local import LocalFileSystem

        if not isinstance(self.fs, LocalFileSystem):
            return 0
        stale = [path for path in self.fs.find(self.root) if _PARTIAL.search(path)]
        for path in stale:
            self.fs.rm_file(path)
        return len(stale)

    def remove(self) -> None:
        """Remove the folder: markers first, the manifest last, so that an interruption
        here leaves either a resumable run or a finished store with a little to clean."""
        for path in self._listing(self._path("done")):
            self.fs.rm_file(path)
        for name in ("metadata", "complete", "manifest.json"):
            path = self._path(name)
            if self._exists(path):
                self.fs.rm_file(path)
        for path in self._listing(self.folder):  # anything else, e.g. a stray temporary file
            self.fs.rm_file(path)
        if self._exists(self.folder):  # an empty local directory
            self.fs.rm(self.folder, recursive=True)

    def _listing(self, path: str) -> Iterator[str]:
        """Every object under ``path``, sorted."""
        try:
            yield from sorted(self.fs.find(path, withdirs=False))
        except FileNotFoundError:
            return


def _parse_marker(data: bytes) -> dict[int, bytes] | None:
    try:
        recorded = json.loads(data)
        units = recorded["units"]
        return {int(ordinal): str(fingerprint).encode() for ordinal, fingerprint in units.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


class Ledger:
    """The parent's record of the units done, written to the batched markers of
    :class:`Progress`.

    Parameters
    ----------
    progress : Progress
        The progress folder to write to.
    unit_counts : mapping
        Variable -> number of its units, so that a batch is known complete.
    batch_units : int
        Units per marker object.
    flush_seconds : float
        Largest time an open batch's completed units wait before being written.
    """

    def __init__(
        self,
        progress: Progress,
        unit_counts: Mapping[str, int],
        batch_units: int = BATCH_UNITS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        import time

        self.progress = progress
        self.unit_counts = dict(unit_counts)
        self.batch_units = batch_units
        self.flush_seconds = flush_seconds
        self._open: dict[tuple[str, int], dict[int, bytes]] = {}
        self._dirty: set[tuple[str, int]] = set()
        self._flushed = time.monotonic()
        self.markers_written = 0

    def batch_size(self, variable: str, batch: int) -> int:
        start = batch * self.batch_units
        return max(0, min(self.batch_units, self.unit_counts[variable] - start))

    def preload(self, variable: str, batch: int, entries: Mapping[int, bytes]) -> None:
        """Keep the recorded units of a batch whose other units this run writes, so that
        its marker is rewritten with all of them."""
        self._open[(variable, batch)] = dict(entries)

    def record(self, variable: str, ordinal: int, fingerprint: bytes) -> None:
        """Unit ``ordinal`` of ``variable`` has all its chunks stored."""
        import time

        key = (variable, ordinal // self.batch_units)
        entries = self._open.get(key)
        if entries is None:
            entries = self._open[key] = {}
        entries[ordinal] = fingerprint
        if len(entries) >= self.batch_size(*key):
            self._write(key)
            del self._open[key]
        else:
            self._dirty.add(key)
        if self._dirty and time.monotonic() - self._flushed >= self.flush_seconds:
            self.flush()

    def update(self, variable: str, batch: int, changed: Mapping[int, bytes]) -> None:
        """Units of a batch recorded before were written again (their source changed):
        record their new fingerprints in the batch's marker."""
        key = (variable, batch)
        if key in self._open:
            self._open[key].update(changed)
            self._dirty.add(key)
            return
        entries = self.progress.read_batch(variable, batch)
        entries.update(changed)
        self.progress.write_batch(variable, batch, entries)
        self.markers_written += 1

    def flush(self) -> None:
        """Write the markers of the open batches that recorded units since their last write."""
        import time

        for key in sorted(self._dirty):
            self._write(key)
        self._dirty.clear()
        self._flushed = time.monotonic()

    def _write(self, key: tuple[str, int]) -> None:
        self.progress.write_batch(key[0], key[1], self._open[key])
        self._dirty.discard(key)
        self.markers_written += 1
