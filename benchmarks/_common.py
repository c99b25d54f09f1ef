"""Helpers shared by the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(os.environ.get("SQUEEZENET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def machine() -> dict:
    """The package's machine description (``squeezenet.export.bench``) plus the date."""
    from squeezenet.export.bench import machine_info

    info = machine_info()
    return {**info, "cores": info["usable_cores"], "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
