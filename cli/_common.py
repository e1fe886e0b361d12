"""What the commands share: consoles, error handling, number formatting, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

DebugOption = Annotated[
    bool, typer.Option("--debug", help="Show the traceback of an error.", show_default=False)
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print a machine-readable JSON summary.", show_default=False),
]
PlotOption = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="FILE.png",
        help="Also draw the report as a PNG picture (needs the plot extra: matplotlib).",
        show_default=False,
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers", min=1, help="Parallel threads (default: one per core).", show_default=False
    ),
]
# Where the work of lq compress and lq verify runs (layerquantizer.dataset._parallel).
ClusterWorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        metavar="N",
        help="Start a local dask cluster of N single-threaded worker processes. "
        "Default: one thread per core in this process (measured faster on one machine).",
        show_default=False,
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="Send the work to the workers of a running dask scheduler (`dask scheduler`, "
        "dask-jobqueue, dask-kubernetes); they need layerquantizer installed and access "
        "to SRC and DST. A scheduler that does not answer within 10 s is refused (set "
        "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT to wait otherwise).",
        show_default=False,
    ),
]
WorkerTimeoutOption = Annotated[
    float,
    typer.Option(
        "--worker-timeout",
        metavar="SECONDS",
        help="With --scheduler: how long the cluster may be without workers, at the "
        "start (exit 2) or after losing them all mid-run (exit 1), before lq gives up.",
    ),
]
# The lock of the run writing DST (layerquantizer.dataset._destination), for lq compress and
# lq sample alike.
BreakLockOption = Annotated[
    bool,
    typer.Option(
        "--break-lock",
        help="Take DST's lock (DST.lq-lock) even if another run holds it: for a run on "
        "another host that is gone. A dead run on this host is recognised by itself.",
    ),
]
GcsTokenOption = Annotated[
    str | None,
    typer.Option(
        "--gcs-token",
        metavar="FILE|anon|google_default|cloud",
        help="Google Cloud Storage credentials for gs:// stores: a service-account JSON file, "
        "'anon', 'google_default' (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth "
        "application-default login) or 'cloud' (the VM's metadata server). Default: public "
        "gs:// sources are read anonymously, destinations written with 'google_default'.",
        show_default=False,
    ),
]


def quiet_libraries(debug: bool) -> None:
    """gcsfs logs a full traceback at ERROR level for every refused request, and
    distributed and tornado log their cluster's chatter (tracebacks of lost workers and
    cancelled futures among it); the one-line error says what matters, and lq itself
    logs nothing. distributed sets the levels of its own loggers when imported, so
    levels alone cannot silence it: logging is switched off below CRITICAL."""
    import logging

    if not debug:
        for name in ("gcsfs", "distributed", "fsspec"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        logging.disable(logging.ERROR)


def stdout_console() -> Console:
    """Console for results; when not a terminal, COLUMNS wide or else wide enough that
    tables do not wrap in a pipe or a log."""
    console = Console(highlight=False)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(highlight=False, width=200)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """One line on stderr."""
    stderr_console().print(f"lq: error: {message}", markup=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def handle_errors(debug: bool) -> Iterator[None]:
    """Turn library errors into one line on stderr and exit status 2 (usage) or 1.

    With ``debug`` the exception propagates, with its traceback.
    """
    import logging

    from layerquantizer.config import ConfigError
    from layerquantizer.dataset import DatasetError, RequestError
    from layerquantizer.storage import StoreError, StoreURLError

    disabled = logging.root.manager.disable
    quiet_libraries(debug)
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, RequestError | ConfigError | StoreURLError):
            print_error(str(exc))
            raise typer.Exit(code=2) from None
        if isinstance(exc, DatasetError | StoreError):
            print_error(str(exc))
        elif isinstance(exc, OSError) and exc.strerror:
            # The system's own words, with the path they concern, not the exception's name.
            where = f"{exc.filename}: " if exc.filename else ""
            print_error(f"{where}{exc.strerror.lower()}; check the path and its permissions")
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            print_error(f"{type(exc).__name__}: {first} (run with --debug for the traceback)")
        raise typer.Exit(code=1) from None
    finally:
        logging.disable(disabled)  # as it was, for callers in the same process (tests)


def usage_value(option: str, parse, text: str | None):
    """``parse(text)`` with the option name put in front of an error; None passes."""
    from layerquantizer.dataset import RequestError

    if text is None:
        return None
    try:
        return parse(text)
    except RequestError as exc:
        raise RequestError(f"{option}: {exc}") from exc


def plural(count: int, noun: str) -> str:
    """``"1 variable"``, ``"10 variables"``.

    >>> plural(1, "variable"), plural(0, "chunk")
    ('1 variable', '0 chunks')
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


#: Names a one-line list shows before it counts the rest.
LISTED_NAMES = 5


def listed(label: str, names: Sequence[str], noun: str = "variable") -> str:
    """``label`` and ``names`` on one line: all of them when few, else their count, the first
    :data:`LISTED_NAMES` and how many more (the ``--json`` output lists them all).

    >>> listed("dropped", ["a", "b"])
    'dropped: a, b'
    >>> listed("skipped", [f"v{i}" for i in range(8)])
    'skipped 8 variables: v0, v1, v2, v3, v4 and 3 more (--json lists them all)'
    """
    names = list(names)
    if len(names) <= LISTED_NAMES:
        return f"{label}: {', '.join(names)}"
    first = ", ".join(names[:LISTED_NAMES])
    rest = len(names) - LISTED_NAMES
    return f"{label} {plural(len(names), noun)}: {first} and {rest} more (--json lists them all)"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def error_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def settings_text(codec: str, settings: dict, bound: float | None) -> str:
    """``nbits=16 level=1 (fs bound 7.6e-06)`` or the lossless codec's settings."""
    text = " ".join(
        f"{k}={v}"
        for k, v in settings.items()
        if not isinstance(v, dict | list) and not (k == "blocksize" and v == 0)  # Blosc's auto
    )
    if bound:
        text += f" (fs bound {bound:.2g})"
    return text or "-"
