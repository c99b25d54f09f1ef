"""Every benchmark script runs in CI, in its --tiny mode (a few images, one round, results written
to a temporary folder): a script broken by a change in the library (an argument order, a renamed
function) fails here instead of publishing a wrong figure later. The figures mean nothing. The
studies in benchmarks/studies/ (what was tried for compression, and why it was not kept) measure
no product figure and are not run here."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, ROOT

BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
# script -> (arguments before --tiny, the result name it writes); bench_gpu.py has its own CPU test
TINY_RUNS = {
    "bench_eval.py": ([], "eval"),
    "bench_deploy.py": ([], "deploy"),
    "bench_train_throughput.py": ([], "train_throughput"),
    "bench_train_cifar10.py": ([], "train_cifar10"),
    "bench_train_elpv.py": ([], "train_elpv"),
    "bench_elpv_variants.py": (["late"], "elpv_variant_late"),
    "bench_compress.py": ([], "compress"),
    "bench_compress_trained.py": ([], "compress_trained"),
    "bench_distributed.py": ([], "distributed"),
    "bench_browser.py": ([], "browser"),
    "bench_delta.py": ([], "delta"),
}
COVERED_ELSEWHERE = {"bench_gpu.py": "tests/test_bench_gpu.py"}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*")) if p.is_file()}


def test_every_benchmark_script_has_a_tiny_run():
    scripts = {p.name for p in BENCHMARKS.glob("bench_*.py")}
    assert scripts == set(TINY_RUNS) | set(COVERED_ELSEWHERE) | _helper_scripts(), "add the new script to TINY_RUNS"


def _helper_scripts() -> set[str]:
    """Scripts whose tiny run is tested beside their feature (listed in their own test modules)."""
    found = set()
    for test in (ROOT / "tests").glob("test_*.py"):
        text = test.read_text()
        found |= {name for name in (p.name for p in BENCHMARKS.glob("bench_*.py")) if f'"{name}", "--tiny"' in text}
    return found - set(TINY_RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TINY_RUNS))
def test_tiny_run_writes_its_results_elsewhere(script, tmp_path):
    args, name = TINY_RUNS[script]
    before = _digest(RESULTS)
    env = {**os.environ, "SQUEEZENET_DATA": str(DATA), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--tiny", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / f"{name}.json").read_text())
    assert payload and (tmp_path / "out" / f"{name}.md").read_text().startswith("# ")
    assert _digest(RESULTS) == before, "a --tiny run must not touch the recorded results"


def test_compressed_figures_name_how_the_given_weights_were_trained(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_compress_trained import provenance
    finally:
        sys.path.remove(str(BENCHMARKS))
    run = tmp_path / "run"
    run.mkdir()
    config = {"data": "elpv:4", "epochs": 12, "recipe": "modern", "weights": "release.net"}
    (run / "config.json").write_text(json.dumps(config))
    said = provenance(run / "last.safetensors")
    assert "data `elpv:4`, 12 epochs, recipe modern, from `release.net`" in said
    (run / "config.json").write_text("{not json")
    assert "no training run's config.json" in provenance(run / "last.safetensors")
    assert "no training run's config.json" in provenance(tmp_path / "elsewhere.safetensors")


def test_the_studies_use_the_public_compression_api_only():
    """The studies are not run here, so what keeps them runnable is importing only what
    ``squeezenet.compression`` exports (and its torch-free ``choices``), never a module inside it."""
    import ast

    import squeezenet.compression as compression

    public = {"squeezenet.compression", "squeezenet.compression.choices"}
    modules, names = set(), set()
    for script in (BENCHMARKS / "studies").glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("squeezenet.compression"):
                modules.add(node.module)
                names |= {a.name for a in node.names} if node.module == "squeezenet.compression" else set()
            elif isinstance(node, ast.Import):
                modules |= {a.name for a in node.names if a.name.startswith("squeezenet.compression")}
    assert modules <= public and names and names <= set(compression.__all__)


# every recorded result -> the script whose ``markdown(payload)`` renders its page from the JSON alone
RENDERERS = {
    "eval": "bench_eval",
    "deploy": "bench_deploy",
    "export_c": "bench_export_c",
    "serve": "bench_serve",
    "gpu": "bench_gpu",
    "compress": "bench_compress",
    "compress_trained": "bench_compress_trained",
    "distributed": "bench_distributed",
    "browser": "bench_browser",
    "delta": "bench_delta",
    "train_throughput": "bench_train_throughput",
    "train_cifar10": "bench_train_cifar10",
    "train_cifar10_base_light": "bench_train_cifar10",
    "train_elpv": "bench_train_elpv",
    "train_elpv_crop256": "bench_train_elpv",
    "train_elpv_light": "bench_train_elpv",
    "elpv_variant_late": "bench_elpv_variants",
    "elpv_variant_avgmax": "bench_elpv_variants",
    "compress_study": "compress_study",
    "compress_sequential": "compress_sequential",
    "compress_scaling": "compress_scaling",
    "patch_steps": "patch_steps",
    "table_delta": "table_delta",
}
RECORDS = sorted([*RESULTS.glob("*.json"), *(BENCHMARKS / "studies" / "results").glob("*.json")])


def _renderer(script: str):
    for folder in (BENCHMARKS, BENCHMARKS / "studies"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import importlib

    return importlib.import_module(script).markdown


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.stem)
def test_every_recorded_page_is_its_json_rendered_again(record):
    """A results page is what its script's ``markdown`` makes of the recorded JSON today: a page
    edited by hand, or a JSON the script can no longer read (an older script's fields), fails."""
    assert record.stem in RENDERERS, f"name the script that renders {record.name}"
    page = _renderer(RENDERERS[record.stem])(json.loads(record.read_text()))
    assert page.rstrip() + "\n" == record.with_suffix(".md").read_text(), f"re-render {record.with_suffix('.md')}"


def test_distributed_accuracy_runs_of_other_epochs_move_to_earlier_and_keep_their_verdict():
    """A change of --epochs never compares runs of different lengths: the saved rows of other
    epochs leave the table for an 'earlier' entry, whose powersgd:2 gap is still a verdict row."""
    _renderer("bench_distributed")
    from _distributed_report import markdown, verdicts
    from bench_distributed import split_by_epochs

    def row(top1: float, epochs: int) -> dict:
        return {"epochs": epochs, "val_top1": top1, "val_n": 5000, "test_top1": top1, "test_n": 10000,
                "sent_bytes_per_step": 1e6, "minutes": 1.0, "date": "d"}  # fmt: skip

    saved = {"epochs": 6, "argv": "--part accuracy --epochs 6", "machine": {"cpu": "cpu"},
             "runs": {"none": row(0.81, 6), "bf16": row(0.82, 6), "powersgd:2": row(0.79, 6)}}  # fmt: skip
    kept, earlier = split_by_epochs(saved, 12)
    assert kept == {} and [e["epochs"] for e in earlier] == [6] and set(earlier[0]["runs"]) == set(saved["runs"])
    assert earlier[0]["argv"] == saved["argv"]
    kept, again = split_by_epochs({**saved, "epochs": 12, "earlier": earlier,
                                   "runs": {"none": row(0.85, 12), "bf16": row(0.82, 6)}}, 12)  # fmt: skip
    assert list(kept) == ["none"] and len(again) == 1 and again[0]["runs"]["bf16"]["epochs"] == 6
    result = json.loads((RESULTS / "distributed.json").read_text())
    result["accuracy"] = {**result["accuracy"], "epochs": 12, "earlier": earlier,
                          "runs": {"none": row(0.85, 12), "powersgd:2": row(0.845, 12)}}  # fmt: skip
    gaps = {v[0]: (v[1], v[3]) for v in verdicts(result) if v[0].startswith("CIFAR-10")}
    assert gaps == {"CIFAR-10 validation top-1, powersgd:2 below none (12 epochs)": ("+0.50 points", True),
                    "CIFAR-10 validation top-1, powersgd:2 below none (6 epochs, earlier run)": ("+2.00 points", False)}
    page = markdown(result)
    assert "Earlier, at 6 epochs (`python benchmarks/bench_distributed.py --part accuracy --epochs 6`)" in page


def test_distributed_efficiency_verdicts_are_the_median_rounds_where_a_record_has_rounds():
    """bench_distributed's efficiency targets: with headline rounds the median round's figure decides
    (one slow round does not), without them the main table's single run does."""
    _renderer("bench_distributed")  # the benchmarks' folder on the path
    from _distributed_report import verdicts

    result = json.loads((RESULTS / "distributed.json").read_text())
    steps = [0.70, 0.60, 0.61, 0.62, 0.90]  # bf16 two-node steps against a 0.6 s worker: median 0.62
    result["headline"]["rounds"] = [{"alone_s": 0.6, "step_s": {"none": 1.0, "bf16": s, "powersgd:2": 0.6}}
                                    for s in steps]  # fmt: skip
    bf16 = next(v for v in verdicts(result) if "bf16: scaling efficiency" in v[0])
    assert bf16[1].startswith("96.8% (median of 5 rounds, 66.7% to 100.0%") and bf16[3] is True
    for slow in (1, 2):  # three rounds of five now at 0.70 s or more: the median round is 80.0 %
        result["headline"]["rounds"][slow]["step_s"]["bf16"] = 0.75
    assert next(v for v in verdicts(result) if "bf16: scaling" in v[0])[3] is False
    del result["headline"]
    single = next(v for v in verdicts(result) if "bf16: scaling efficiency" in v[0])
    run = result["rates"]["100 Mbit/s"]["runs"]["squeezenet1_1/bf16"]
    assert single[1] == f"{result['alone']['alone']['squeezenet1_1']['step_s'] / run['step_s']:.1%}"
