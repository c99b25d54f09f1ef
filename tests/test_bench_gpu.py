"""benchmarks/bench_gpu.py, the GPU throughput script, exercised on the CPU: output format,
the fast path's agreement with torchvision, and its one-line refusals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
SMOKE = ["--device", "cpu", "--batch", "2", "--size", "64", "--steps", "1", "--repeats", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_writes_results(bench_gpu, tmp_path):
    assert bench_gpu.main([*SMOKE, "--no-compile", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = result["engines"]
    assert set(rows) == {"torchvision_eager", "bf16_channels_last"}
    assert rows["torchvision_eager"]["speedup"] == 1.0 and rows["torchvision_eager"]["max_abs_diff"] == 0.0
    assert all(len(r["windows"]) == 2 and r["images_per_s"] > 0 for r in rows.values())
    # same weights: the bf16 path differs from the fp32 reference by rounding only
    assert rows["bf16_channels_last"]["max_abs_diff"] < 0.05
    text = (tmp_path / "gpu.md").read_text()
    assert "| bf16_channels_last |" in text and "Device: cpu" in text and result["best"] in rows


def test_missing_cuda_is_one_line(bench_gpu, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        bench_gpu.main(["--device", "cuda", "--out", str(tmp_path)])
    assert str(exc.value).startswith("bench_gpu: error: no CUDA device") and "\n" not in str(exc.value)


def test_bad_device_and_unwritable_output(bench_gpu, tmp_path):
    with pytest.raises(SystemExit, match="bench_gpu: error: bad --device 'tpu9'"):
        bench_gpu.main(["--device", "tpu9", "--out", str(tmp_path)])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="bench_gpu: error: cannot write the results to"):
        bench_gpu.main([*SMOKE, "--no-compile", "--out", str(blocker / "sub")])
    with pytest.raises(SystemExit, match="bench_gpu: error: cannot write the results to"):
        bench_gpu.main(["--device", "cuda", "--out", str(blocker / "sub")])  # before any device check
