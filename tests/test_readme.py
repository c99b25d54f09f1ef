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
    assert "| release weights on the 8 imagenet-samples images | top-1 50.0 % / top-5 75.0 % |" in text
    assert "| `squeezenet eval` end to end | 9.5 images/s |" in text
    assert "| GPU throughput | not measured" in text


def test_status_is_a_table_that_names_each_figure_s_target_verdict_and_machine(tmp_path, monkeypatch):
    """One row per figure: what, figure, target, met, machine; a missed target says MISSED."""
    import json

    monkeypatch.setattr(update_readme, "RESULTS", tmp_path)
    (tmp_path / "train_throughput.json").write_text(
        json.dumps({"speedup_vs_baseline": {"a": 1.2}, "target_speedup": 1.5, "machine": {"cpu": "Test CPU"}})
    )
    lines = update_readme.status_paragraph().splitlines()
    assert "| what | figure | target | met | machine |" in lines
    assert "| training step / a plain PyTorch loop | 1.20x | >= 1.5x | MISSED | Test CPU |" in lines


def test_readme_tables_match_metadata():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tables:start -->\n(.*?)<!-- tables:end -->", readme, re.S)
    assert block, "README lacks the generated tables block"
    assert block.group(1).strip() == markdown_tables().strip(), "run: python scripts/update_readme.py"


def test_readme_has_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- setup -->" in readme and "<!-- test -->" in readme
    assert 'pip install -e ".[dev]"' in readme


def test_the_gpu_row_reads_what_bench_gpu_writes(tmp_path, monkeypatch):
    """bench_gpu.py's own result shape (engines, best, device) gives the GPU row: the row once read
    a 'summary' key that the script never wrote."""
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    same = {"max_abs_diff": 0.0, "top1_agreement": 1.0}
    engines = {"torchvision_eager": {"images_per_s": 1000.0, "speedup": 1.0, **same},
               "fast": {"images_per_s": 2500.0, "speedup": 2.5, **same}}  # fmt: skip
    result = {"benchmark": "squeezenet1_1 inference throughput at batch 256, 224 px", "device": "NVIDIA H100",
              "torch": "2.14.1", "cuda": "13.0", "engines": engines, "best": "fast"}  # fmt: skip
    assert bench_gpu.markdown(result).startswith("# GPU throughput")  # the shape bench_gpu renders itself
    monkeypatch.setattr(update_readme, "RESULTS", tmp_path)
    (tmp_path / "gpu.json").write_text(json.dumps(result))
    row = [line for line in update_readme.status_paragraph().splitlines() if line.startswith("| GPU throughput")]
    assert row == ["| GPU throughput, squeezenet1_1 inference throughput at batch 256, 224 px | 2,500 images/s (fast, "
                   "2.50x torchvision eager) |  |  | NVIDIA H100 |"]  # fmt: skip
