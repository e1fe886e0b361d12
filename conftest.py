"""Shared by the doctests in ``layerquantizer/`` (the tests' own fixtures are in tests/).

The examples make their folders with ``tempfile.mkdtemp()``, as a reader would; under
pytest those land in a per-test temporary folder that pytest cleans up, not in /tmp.
"""

from __future__ import annotations

import tempfile

import pytest


@pytest.fixture(autouse=True)
def _doctest_temporary_folders(request, tmp_path_factory, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("doctest")))
