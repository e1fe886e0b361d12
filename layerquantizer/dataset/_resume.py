"""The progress of an ``lq compress`` run, kept inside DST so that ``--resume`` can finish it.

While a run writes, DST holds a hidden folder :data:`PROGRESS_DIR` beside the Zarr
metadata::

    DST/.lq-progress/manifest.json        what is being written (the plan's description)
    DST/.lq-progress/metadata             the Zarr metadata of every array is written
    DST/.lq-progress/done/VAR/I.J.K.L     every chunk of the unit starting at chunk I.J.K.L
                                          of VAR is stored; holds the size and version of
                                          each source object the unit read
    DST/.lq-progress/complete             consolidated metadata written; only cleanup left

A unit's marker is written only after all of its chunk objects were stored, so a unit
without a marker is written again in full on resume: a chunk half-written when the process
died is never taken for a complete one (and zarr's local and GCS writes replace an object
whole). The consolidated metadata is written last, then the folder is removed, markers
first and the manifest last, so the finished store holds exactly what an uninterrupted run
writes. Zarr and xarray ignore the folder (no Zarr metadata in it); ``lq inspect`` skips it.

On resume a unit with a marker is still sent to a worker, which skips it only if the
source objects it reads have the size and version (GCS generation, etag or mtime) the
marker records (``_unit.source_fingerprint``); a unit whose source changed between the
runs is written again.

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

#: Version of the manifest's layout; a different one is not resumed.
MANIFEST_FORMAT = 1

# A unit's marker key, as Progress.marker_key writes it.
_MARKER = re.compile(rf"^{re.escape(PROGRESS_DIR)}/done/[^/]+/\d+(\.\d+)*$")
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

    # keys relative to DST, as the workers write them through the Zarr store
    @staticmethod
    def marker_key(variable: str, index: tuple[int, ...]) -> str:
        return f"{PROGRESS_DIR}/done/{variable}/{'.'.join(map(str, index))}"

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

    def done_units(self) -> set[str]:
        """Keys (as :meth:`marker_key` makes them) of the units whose chunks are all stored."""
        done = self._path("done")
        try:
            found = self.fs.find(done, withdirs=False)
        except FileNotFoundError:
            return set()
        prefix = self.root + "/"
        keys = (path[len(prefix) :] for path in found if path.startswith(prefix))
        return {key for key in keys if _MARKER.match(key)}

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
        try:
            yield from sorted(self.fs.find(path, withdirs=False))
        except FileNotFoundError:
            return
