"""Shared fixtures. The shared data folder is ``$SQUEEZENET_DATA`` (default ``../shared/data``).

Tests that need it, or an optional extra, skip with a reason when it is absent on a
developer's machine; ``.ci/run`` refuses to run without the data and sets
``SQUEEZENET_REQUIRE_DATA=1``, so in CI they fail instead of skipping (``require`` and
``require_module`` below: never ``pytest.importorskip``).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from squeezenet.data.root import data_root

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (pyproject's addopts) the workers share the cores: each takes its share of
# them, or PyTorch's spinning threads would fight over them; the programs a test starts (the CLI,
# servers, benchmark scripts) inherit the same share through OMP_NUM_THREADS.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = max(1, (os.cpu_count() or 1) // _WORKERS)
    torch.set_num_threads(_SHARE)
    os.environ.setdefault("OMP_NUM_THREADS", str(_SHARE))
DATA = data_root().resolve()
DC_WEIGHTS = DATA / "deepcompression" / "compressed_SqueezeNet.net"
IMAGENET_SAMPLES = DATA / "imagenet-samples"


def _missing(message: str) -> None:
    """Skip on a developer's machine; fail in CI (SQUEEZENET_REQUIRE_DATA=1)."""
    if os.environ.get("SQUEEZENET_REQUIRE_DATA"):
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


def require(path: Path) -> Path:
    """A shared data file or folder, or skip (fail in CI)."""
    if not path.exists():
        _missing(f"shared data not found: {path} (set SQUEEZENET_DATA)")
    return path


def require_module(name: str, extra: str = "dev"):
    """An optional dependency, imported, or skip (fail in CI, which installs every extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"{name} is not installed (pip install -e '.[{extra}]')")


_require = require


@pytest.fixture(scope="session")
def dc_weights_path() -> Path:
    return _require(DC_WEIGHTS)


@pytest.fixture(scope="session")
def imagenet_samples() -> Path:
    return _require(IMAGENET_SAMPLES)


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    return require(DATA / "cifar10-jpeg.tar.gz")


@pytest.fixture(scope="session")
def dc_model(dc_weights_path):
    from squeezenet.weights import build_model_from_weights

    return build_model_from_weights(dc_weights_path)


@pytest.fixture(scope="session")
def release_data_free_sqz(dc_weights_path, tmp_path_factory, worker_id) -> Path:
    """The release through ``compress``'s default (output-aware on synthetic images, no data):
    half a minute of work that several tests read, made once per run for every xdist worker
    (their temporary folders share the run's folder; a lock makes the others wait for it)."""
    from filelock import FileLock

    from squeezenet.compression.pipeline import compress

    base = tmp_path_factory.getbasetemp()
    path = (base if worker_id == "master" else base.parent) / "release-data-free.sqz"
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            compress(str(dc_weights_path)).save(path)
    return path


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, "SQUEEZENET_DATA": str(DATA), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "squeezenet.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


def cli_in_process(capsys, *args) -> tuple[int, str, str]:
    """main() in-process -> (exit code, stdout, stderr): a subprocess would spend seconds importing torch."""
    from squeezenet.cli.main import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- a real browser (the page's tests)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: apt-get install -y chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()
