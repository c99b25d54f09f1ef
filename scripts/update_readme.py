"""Regenerate the README's generated blocks: model/weights tables and measured results.

    python scripts/update_readme.py

Tables come from ``squeezenet info --markdown`` (the code's own metadata); results are the
Markdown files the benchmark scripts wrote to ``benchmarks/results/``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULT_ORDER = (
    "eval",
    "deploy",
    "export_c",
    "serve",
    "gpu",
    "compress",
    "compress_trained",
    "train_throughput",
    "train_cifar10",
    "train_elpv",
)


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md lacks the <!-- {name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def results_markdown() -> str:
    files = [RESULTS / f"{name}.md" for name in RESULT_ORDER if (RESULTS / f"{name}.md").is_file()]
    parts = []
    for path in files:
        body = path.read_text().split("<!-- details -->")[0].strip()  # long tables stay in the file
        body = re.sub(r"^## ", "#### ", body, flags=re.M)
        parts.append(re.sub(r"^# ", "### ", body, count=1) + f"\n\n(full output: `{path.relative_to(ROOT)}`)")
    return "\n\n".join(parts) if parts else "No benchmark has been recorded yet."


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from squeezenet.cli.info import markdown_tables

    readme = ROOT / "README.md"
    text = readme.read_text()
    text = replace_block(text, "tables", markdown_tables())
    text = replace_block(text, "results", results_markdown())
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
