import sys
from pathlib import Path

import numpy as np
import pytest

# tests/reference.py is imported as a plain module by the kernel tests.
sys.path.insert(0, str(Path(__file__).parent))

# Real servers on loopback (a GCS emulator, a dask cluster): see tests/servers.py.
from servers import (  # noqa: E402, F401
    dask_cluster,
    gcs_bucket,
    gcs_emulator,
    gcs_emulator_server,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def real_fields():
    """The real ERA5 / ERA-Interim fields of ../shared (see its README)."""
    path = SHARED / "data" / "real_fields.npz"
    if not path.exists():
        pytest.skip(f"{path} is not there (the project expects ../shared beside the clone)")
    with np.load(path) as data:
        return dict(data)
