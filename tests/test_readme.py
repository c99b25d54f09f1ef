"""The README's generated tables must match the code's metadata (run scripts/update_readme.py)."""

from __future__ import annotations

import re
import sys

from conftest import ROOT
from squeezenet.cli.info import markdown_tables

sys.path.insert(0, str(ROOT / "scripts"))
import update_readme


def _block(readme: str, name: str) -> str:
    found = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", readme, re.S)
    assert found, f"README lacks the generated {name} block"
    return found.group(1).strip()


def test_readme_status_and_results_are_the_recorded_ones():
    """The status paragraph and the results section are written from benchmarks/results/ by
    scripts/update_readme.py: a figure typed by hand, or a result file changed without
    regenerating the README, fails here."""
    readme = (ROOT / "README.md").read_text()
    assert _block(readme, "status") == update_readme.status_paragraph().strip(), "run: python scripts/update_readme.py"
    assert _block(readme, "results") == update_readme.results_markdown().strip(), "run: python scripts/update_readme.py"


def test_status_reads_its_figures_from_the_result_files(tmp_path, monkeypatch):
    """Change a recorded figure and the generated status says the new one."""
    import json

    monkeypatch.setattr(update_readme, "RESULTS", tmp_path)
    (tmp_path / "eval.json").write_text(
        json.dumps({"top1": 0.5, "top5": 0.75, "n": 8, "images_per_second_median": 9.5})
    )
    text = update_readme.status_paragraph()
    assert "top-1 50.0 % / top-5 75.0 % on the 8 imagenet-samples images at 9.5 images/s" in text
    assert "the GPU figure is not measured" in text


def test_readme_tables_match_metadata():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tables:start -->\n(.*?)<!-- tables:end -->", readme, re.S)
    assert block, "README lacks the generated tables block"
    assert block.group(1).strip() == markdown_tables().strip(), "run: python scripts/update_readme.py"


def test_readme_has_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- setup -->" in readme and "<!-- test -->" in readme
    assert 'pip install -e ".[dev]"' in readme
