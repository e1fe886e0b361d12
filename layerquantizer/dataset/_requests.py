"""Parsing of command-line style arguments (pure, tested on their own)."""

from __future__ import annotations

import json
import os

import numpy as np

from layerquantizer.dataset._errors import RequestError


def parse_variables(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; duplicates and empty names are errors.

    >>> parse_variables("temperature,geopotential")
    ['temperature', 'geopotential']
    """
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not name for name in names):
        raise RequestError(f"expected comma-separated variable names, got {text!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RequestError(f"variable listed twice: {', '.join(duplicates)}")
    return names


def _parses_as_time(text: str) -> bool:
    if not text:
        return True
    try:
        np.datetime64(text)
    except ValueError:
        return False
    return True


def parse_time_range(text: str) -> tuple[str | None, str | None]:
    """``"START:END"`` -> ``(START, END)``, both inclusive and either one may be empty.

    Dates may hold colons themselves (``2020-01-01T06:00``), so the split is the colon
    that leaves a valid date on both sides; ``START..END`` is accepted as well.

    >>> parse_time_range("2020-01-01T06:00:2020-01-02")
    ('2020-01-01T06:00', '2020-01-02')
    >>> parse_time_range("2020-01-03:")
    ('2020-01-03', None)
    """
    text = text.strip()
    if ".." in text:
        candidates = [tuple(text.split("..", 1))]
    else:
        candidates = [(text[:i], text[i + 1 :]) for i, char in enumerate(text) if char == ":"]
    for start, end in candidates:
        start, end = start.strip(), end.strip()
        if _parses_as_time(start) and _parses_as_time(end) and (start or end):
            if start and end and np.datetime64(start) > np.datetime64(end):
                raise RequestError(f"time range {text!r} ends before it starts")
            return (start or None, end or None)
    raise RequestError(
        f"expected a time range START:END of ISO dates (either may be empty), got {text!r}"
    )


def parse_levels(text: str) -> tuple[float, ...]:
    """``"500,850"`` -> ``(500, 850)``; integers stay integers.

    >>> parse_levels("500, 850")
    (500, 850)
    """
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            values.append(int(part))
        except ValueError:
            try:
                values.append(float(part))
            except ValueError:
                raise RequestError(
                    f"expected comma-separated pressure levels such as 500,850, got {text!r}"
                ) from None
    return tuple(values)


def _dim_sizes(text: str, expected: str) -> dict[str, int]:
    """``"DIM=SIZE,..."`` -> ``{DIM: SIZE}``, SIZE a positive integer or -1 (the whole
    dimension); anything else a RequestError that begins with ``expected``."""
    sizes: dict[str, int] = {}
    for part in text.split(","):
        dim, sep, size = part.partition("=")
        dim = dim.strip()
        try:
            value = int(size)
        except ValueError:
            value = 0
        if not sep or not dim or value == 0 or value < -1:
            raise RequestError(f"{expected}, got {text!r}")
        sizes[dim] = value
    return sizes


def parse_chunks(text: str) -> dict[str, int]:
    """``"time=1,level=-1"`` -> ``{"time": 1, "level": -1}`` (-1: the whole dimension).

    >>> parse_chunks("time=4, latitude=-1")
    {'time': 4, 'latitude': -1}
    """
    return _dim_sizes(
        text,
        "expected DIM=SIZE pairs such as time=1,level=37 (SIZE a positive integer or -1 for "
        "the whole dimension)",
    )


def parse_shards(text: str) -> dict[str, int]:
    """``"time=4"`` -> ``{"time": 4}``: the Zarr v3 shard size per dimension, in elements
    (a multiple of the chunk size there; -1: the whole dimension).

    >>> parse_shards("time=28")
    {'time': 28}
    """
    return _dim_sizes(
        text,
        "--shards: expected DIM=SIZE pairs such as time=28 (SIZE time steps per shard, a "
        "multiple of the chunk size, or -1 for the whole dimension)",
    )


#: The ``--gcs-token`` values that name a way of finding credentials rather than a file.
GCS_TOKEN_METHODS = ("anon", "google_default", "cloud", "browser")


def parse_gcs_token(text: str) -> str:
    """``--gcs-token``: one of :data:`GCS_TOKEN_METHODS`, or a readable JSON key file
    (checked now, so that a bad file is named before anything is read or written).

    >>> parse_gcs_token("anon")
    'anon'
    """
    if text in GCS_TOKEN_METHODS:
        return text
    path = os.path.expanduser(text)
    way_out = f"pass a service-account JSON key file or one of {', '.join(GCS_TOKEN_METHODS[:3])}"
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except FileNotFoundError:
        raise RequestError(f"{text}: no such file; {way_out}") from None
    except OSError as exc:
        raise RequestError(f"{text}: cannot read it ({exc.strerror or exc}); {way_out}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        raise RequestError(
            f"{text}: not a JSON key file (invalid JSON{where}); {way_out}"
        ) from None
    if not isinstance(document, dict):
        raise RequestError(f"{text}: not a JSON key file (no JSON object); {way_out}")
    return text
