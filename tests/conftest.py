"""Shared fixtures. The shared data folder is ``$SQUEEZENET_DATA`` (default ``../shared/data``).

Tests that need it skip with a reason when it is absent; ``.ci/run`` refuses to run
without it and sets ``SQUEEZENET_REQUIRE_DATA=1``, so in CI they fail instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SQUEEZENET_DATA", ROOT.parent / "shared" / "data")).resolve()
DC_WEIGHTS = DATA / "deepcompression" / "compressed_SqueezeNet.net"
IMAGENET_SAMPLES = DATA / "imagenet-samples"


def _require(path: Path) -> Path:
    """Skip without the shared data, except in CI (SQUEEZENET_REQUIRE_DATA=1), where it fails."""
    if not path.exists():
        message = f"shared data not found: {path} (set SQUEEZENET_DATA)"
        if os.environ.get("SQUEEZENET_REQUIRE_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def dc_weights_path() -> Path:
    return _require(DC_WEIGHTS)


@pytest.fixture(scope="session")
def imagenet_samples() -> Path:
    return _require(IMAGENET_SAMPLES)


@pytest.fixture(scope="session")
def dc_model(dc_weights_path):
    from squeezenet.weights import build_model_from_weights

    return build_model_from_weights(dc_weights_path)


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
