"""The README's generated tables must match the code's metadata (run scripts/update_readme.py)."""

from __future__ import annotations

import re

from conftest import ROOT
from squeezenet.cli.info import markdown_tables


def test_readme_tables_match_metadata():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tables:start -->\n(.*?)<!-- tables:end -->", readme, re.S)
    assert block, "README lacks the generated tables block"
    assert block.group(1).strip() == markdown_tables().strip(), "run: python scripts/update_readme.py"


def test_readme_has_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- setup -->" in readme and "<!-- test -->" in readme
    assert 'pip install -e ".[dev]"' in readme
