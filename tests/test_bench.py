"""The deployment benchmark: engines run in subprocesses, results render as JSON and Markdown."""

from __future__ import annotations

import json

import pytest

from conftest import require_module
from squeezenet.benchmarking.engines import _median_pair, format_markdown, machine_info, run_bench, target_lines
from squeezenet.benchmarking.int8_accuracy import accuracy_markdown, accuracy_target_lines, int8_parts

require_module("onnxruntime", "deploy")


def test_machine_info():
    info = machine_info()
    assert info["cpu"] and info["logical_cores"] >= 1 and info["torch"] and info["onnxruntime"]


@pytest.mark.slow
def test_quick_bench_two_engines_small_input(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # an environment that pins numpy's BLAS kernels
    engines = ("ort_fp32", "numpy", "numpy_env_blas")
    result = run_bench(archs=("squeezenet1_1",), engines=engines, quick=True, size=64)
    block = result["archs"]["squeezenet1_1"]
    assert block["params"] == 1_235_496 and block["macs"] > 0
    rows = {r["engine"]: r for r in block["engines"]}
    for row in rows.values():
        assert "error" not in row, row
        assert row["b1_median_ms"] > 0 and row["b32_images_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["file_bytes"] > 1_000_000
    json.dumps(result)
    text = format_markdown(result)
    assert "squeezenet1_1 at 64x64" in text and "| numpy (OpenBLAS " in text
    # the runtime's own kernel choice is measured without the pin; the pinned one beside it
    assert rows["numpy_env_blas"]["blas_coretype"] == "Haswell" and rows["numpy"]["blas_coretype"] != "Haswell"
    # and each against ONNX Runtime in one process too, under the same kernel choice
    paired = {p["pair"][0]: p for p in block["paired"]}
    assert paired["numpy_env_blas"]["blas_coretype"] == "Haswell" and paired["numpy"]["blas_coretype"] != "Haswell"
    assert all(p["b1_ratio"] > 0 and p["b32_ratio"] > 0 for p in paired.values())


def test_format_markdown_reports_failures_and_accuracy():
    result = {
        "machine": machine_info(),
        "threads": 2,
        "reference": "torchvision_eager",
        "quick": True,
        "archs": {
            "squeezenet1_0": {
                "input_size": 227,
                "params": 1,
                "macs": 2,
                "engines": [{"engine": "torch_compile", "error": "did not finish within the 120 s budget"}],
            }
        },
        "accuracy": {
            "protocol": "p",
            "reported": {"images": 122, "fp32_top1": 0.6, "int8_top1": 0.59, "agreement": 0.95},
            "chose": {"images": 250, "fp32_top1": 0.64, "int8_top1": 0.64, "agreement": 0.97},
            "lost_points_reported": 1.0,
        },
    }
    text = format_markdown(result)
    assert "failed: did not finish" in text
    # which images chose the int8 design and which are reported, said in the rows themselves
    assert "| reported: even-indexed, after calibration (no int8 choice made on them) | 122 | 60.0% | 59.0% |" in text
    assert "| odd-indexed: where the int8 design was chosen (not held out) | 250 | 64.0% |" in text
    assert (
        "| squeezenet1_0_caffe | int8 top-1 lost (122 even-indexed images the design was not chosen on) | 1.0 points "
        "| <= 1 | met |"
    ) in text


def test_int8_parts_are_disjoint_and_the_reported_ones_chose_nothing():
    parts = int8_parts(500, 128)
    assert {k: len(v) for k, v in parts.items()} == {"calibration": 128, "reported": 122, "chose": 250}
    assert sorted(set().union(*map(set, parts.values()))) == list(range(500))
    assert all(i % 2 == 0 for i in parts["reported"]) and all(i % 2 for i in parts["chose"])


def test_a_record_of_the_old_protocol_says_its_eval_half_chose_the_design():
    """Records written before 2026-12-01 called the odd half, where the design was chosen, held out."""
    old = {"protocol": "... 'eval half' = the 250 odd-indexed images (held out) ...", "images": 500,
           "fp32": {"top1_eval_half": 0.624, "top1_all": 0.642}, "int8": {"top1_eval_half": 0.624, "top1_all": 0.652},
           "lost_points_eval_half": 0.0}  # fmt: skip
    text = "\n".join(accuracy_markdown(old) + accuracy_target_lines(old))
    assert "is where the int8 design was chosen: not held out" in text
    assert "int8 top-1 lost (the odd-indexed half the design was chosen on) | 0.0 points" in text


def test_run_bench_refuses_unknown_engines_and_zero_rounds():
    """The CLI's parser refuses both (tests/test_cli_usage.py); the library says so to a Python caller."""
    from squeezenet.errors import DeployError

    with pytest.raises(DeployError, match="unknown engine"):
        run_bench(engines=("tensorrt",))
    with pytest.raises(DeployError, match="--rounds must be at least 1, not 0"):
        run_bench(rounds=0)


def test_rounds_are_combined_by_median():
    from squeezenet.benchmarking.engines import _median_row

    runs = [
        {
            "engine": "ort_fp32",
            "b1_median_ms": t,
            "b1_p90_ms": t,
            "b32_images_per_s": 100 / t,
            "peak_rss_mb": 1.0,
            "rss_increase_mb": 1.0,
        }
        for t in (3.0, 9.0, 4.0)
    ]
    row = _median_row(runs)
    assert row["b1_median_ms"] == 4.0 and row["b32_images_per_s"] == 25.0 and row["rounds"] == 3
    assert _median_row([{"engine": "x", "error": "boom"}])["error"] == "boom"


@pytest.mark.slow
def test_default_against_onnxruntime_is_timed_paired_in_one_process():
    engines = ("torchvision_eager", "default", "ort_fp32")
    result = run_bench(archs=("squeezenet1_1",), engines=engines, quick=True, size=64)
    [paired] = result["archs"]["squeezenet1_1"]["paired"]
    assert "error" not in paired, paired
    assert paired["pair"] == ["default", "ort_fp32"] and paired["b1_blocks"] >= 4 and paired["b32_blocks"] >= 2
    assert paired["b1_ratio"] > 0 and paired["b32_ratio"] > 0 and len(paired["b1_ratio_iqr"]) == 2
    text = format_markdown(result)
    # the separate-process ratios stay in the table for comparison; the paired ones carry the verdict
    assert "| default b1 vs ONNX Runtime fp32 (separate processes) |" in text and "| see paired |" in text
    verdict = "met" if paired["b1_ratio"] >= 1.0 else "MISSED"
    assert f"pairs in one process) | {paired['b1_ratio']}x | >= 1.00x | {verdict} |" in text


def _engine_rows(numpy_engine: str, blas: str) -> list[dict]:
    """Separate-process rows of a run: the reference, the default path, ORT fp32 and one NumPy engine."""
    return [
        {"engine": "torchvision_eager", "b1_median_ms": 10.0, "b32_images_per_s": 80.0},
        {"engine": "default", "b1_median_ms": 1.5, "b32_images_per_s": 500.0},
        {"engine": "ort_fp32", "b1_median_ms": 1.6, "b32_images_per_s": 480.0},
        {"engine": numpy_engine, "blas_coretype": blas, "b1_median_ms": 4.0, "b32_images_per_s": 150.0},
    ]


def test_numpy_runtime_is_checked_at_both_batch_sizes_by_its_paired_ratio():
    engines = _engine_rows("numpy_env_blas", "Haswell")
    paired = [{"pair": ["numpy_env_blas", "ort_fp32"], "b1_ratio": 0.34, "b1_blocks": 40, "b32_ratio": 0.29,
               "b32_blocks": 10}]  # fmt: skip
    result = {"archs": {"squeezenet1_1": {"engines": engines, "paired": paired}}}
    lines = "\n".join(target_lines(result))
    assert "NumPy runtime b1 (environment's BLAS: Haswell) vs ONNX Runtime fp32 (paired: 40 block pairs" in lines
    assert "| 0.34x | >= 0.33x | met |" in lines
    assert "NumPy runtime b32 (environment's BLAS: Haswell) vs ONNX Runtime fp32 (separate processes) | 0.312x" in lines
    assert "| 0.29x | >= 0.33x | MISSED |" in lines


def test_paired_ratios_of_several_rounds_are_combined_by_median():
    rounds = [{"pair": ["numpy", "ort_fp32"], "b1_ratio": r1, "b1_ratio_iqr": [0, 1], "b1_blocks": 40,
               "b32_ratio": r32, "b32_blocks": 10} for r1, r32 in ((0.30, 0.5), (0.36, 0.4), (0.37, 0.45))]  # fmt: skip
    pair = _median_pair([*rounds, {"pair": ["numpy", "ort_fp32"], "error": "worker died"}])
    assert pair["b1_ratio"] == 0.36 and pair["b32_ratio"] == 0.45 and pair["rounds"] == 3
    assert pair["b1_ratio_rounds"] == [0.30, 0.36, 0.37] and "b1_ratio_iqr" not in pair
    assert _median_pair(rounds[:1]) == rounds[0]  # one round: as measured
    engines = _engine_rows("numpy", "SkylakeX")
    lines = "\n".join(target_lines({"archs": {"squeezenet1_1": {"engines": engines, "paired": [pair]}}}))
    assert (
        "(paired: median of 3 rounds of 40 block pairs in one process: 0.3, 0.36, 0.37) | 0.36x | >= 0.33x | met |"
        in lines
    )
