"""Where the shared data lives: one rule for the library, the tests and the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SQUEEZENET_DATA"
DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"  # the folder beside a project checkout


def data_root() -> Path:
    """``$SQUEEZENET_DATA``, else ``../shared/data`` seen from the working folder (the project's
    root when the README's commands run): catalogue weights, tests and benchmarks read it."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT)
