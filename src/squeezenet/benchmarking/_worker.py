"""One benchmark engine in a fresh process: ``python _worker.py CONFIG_JSON`` -> JSON on stdout.

Run as a script (not ``-m``) so that the NumPy engine never imports torch: the peak
memory of each engine is then its own. Latency is measured at batch 1 (median, p90),
throughput at batch 32 (images per second).
"""

from __future__ import annotations

import sys

# Run as a script, this folder would be sys.path[0] and its onnx.py would shadow the real onnx.
sys.path[:] = [p for p in sys.path if p and __import__("os").path.abspath(p) != __import__("os").path.dirname(__file__)]

import importlib.util  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402


def _load_numpy_runtime(path: str):
    """The runtime module, loaded once; first of all for the NumPy engine (see below)."""
    if "numpy_runtime" not in sys.modules:
        spec = importlib.util.spec_from_file_location("numpy_runtime", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["numpy_runtime"] = module
    return sys.modules["numpy_runtime"]


_CFG = json.loads(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 else {}
if any(engine.startswith("numpy") for engine in _CFG.get("pair", [_CFG.get("engine", "")])):
    # as in a user's script: the runtime is imported before numpy, so that it can choose
    # numpy's BLAS kernels (numpy_runtime._prefer_avx512_blas)
    _load_numpy_runtime(_CFG["numpy_runtime"])

import numpy as np  # noqa: E402


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _torch_model(cfg: dict):
    import torch

    from squeezenet.weights import build_model_from_weights

    torch.set_num_threads(cfg["threads"])
    return build_model_from_weights(cfg["safetensors"])


def build(engine: str, cfg: dict):
    """-> callable taking a float32 NCHW numpy array."""
    threads = cfg["threads"]
    if engine.startswith("numpy"):
        cfg["blas_coretype"] = __import__("os").environ.get("OPENBLAS_CORETYPE", "auto")
        return _load_numpy_runtime(cfg["numpy_runtime"]).SqueezeNetNumpy(cfg["safetensors"])
    if engine in ("ort_fp32", "ort_int8"):
        import onnxruntime as ort

        options = ort.SessionOptions()  # plain ONNX Runtime, as a user would start it
        path = cfg["onnx"] if engine == "ort_fp32" else cfg["onnx_int8"]
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    import torch

    if engine == "torchvision_eager":
        import torchvision
        from safetensors.torch import load_file

        torch.set_num_threads(threads)
        model = getattr(torchvision.models, cfg["tv_arch"])().eval()
        model.load_state_dict(load_file(cfg["safetensors"]))

        def run(x):
            with torch.no_grad():
                return model(torch.from_numpy(x))

        return run
    model = _torch_model(cfg)
    if engine == "default":
        from squeezenet.inference import InferenceRunner

        runner = InferenceRunner(model)
        cfg["backend"] = runner.backend
        return lambda x: runner(torch.from_numpy(x))
    if engine == "torch_channels_last":
        from squeezenet.inference import InferenceRunner

        runner = InferenceRunner(model, backend="torch")
        return lambda x: runner(torch.from_numpy(x))
    if engine == "torchscript_frozen":
        from squeezenet.export.torchscript import to_torchscript

        module = torch.jit.optimize_for_inference(to_torchscript(model, cfg["size"]))

        def run_ts(x):
            with torch.inference_mode():
                return module(torch.from_numpy(x))

        return run_ts
    if engine == "torch_compile":
        compiled = torch.compile(model.to(memory_format=torch.channels_last))

        def run_compiled(x):
            with torch.inference_mode():
                return compiled(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

        return run_compiled
    raise SystemExit(f"unknown engine {engine}")


def _timed(fn, x, min_iters: int, max_iters: int, budget: float) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return times


def _paired_ratios(first, second, x, calls: int, pairs: int, settle: float) -> list[float]:
    """Per pair of adjacent blocks: second's median call time / first's (> 1: first is faster).

    The engines alternate in blocks of ``calls`` calls, so both see the same moment of a
    shared machine (clock and neighbours drift over seconds, and between processes by more
    than the few per cent a 1.0x target needs). Before each block the process idles for
    ``settle`` seconds: the other engine's worker threads busy-wait after their last call
    (OpenBLAS for ~0.1 s) and would otherwise take cores from this block's first calls; the
    first call of each block, which warms the caches, is not timed."""
    ratios = []
    for _ in range(pairs):
        medians = []
        for fn in (first, second):
            time.sleep(settle)
            fn(x)
            medians.append(float(np.median(_timed(fn, x, calls, calls, 0.0))))
        ratios.append(medians[1] / medians[0])
    return ratios


def _inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same random batch-1 and batch-32 inputs for every engine and run."""
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((1, 3, size, size), dtype=np.float32),
        rng.standard_normal((32, 3, size, size), dtype=np.float32),
    )


def paired(cfg: dict) -> dict:
    """Two engines in one process, timed in alternating blocks: the first one's speed
    relative to the second (> 1: faster), as median of per-block-pair ratios."""
    names = cfg["pair"]
    first, second = build(names[0], cfg), build(names[1], dict(cfg))
    x1, x32 = _inputs(cfg["size"])
    quick = cfg["quick"]
    settle = 0.05 if quick else 0.25
    b1 = _paired_ratios(first, second, x1, 10 if quick else 25, 4 if quick else 40, settle)
    b32 = _paired_ratios(first, second, x32, 1 if quick else 2, 2 if quick else 10, settle)
    return {
        "engine": "paired",
        "pair": names,
        "b1_ratio": round(float(np.median(b1)), 3),
        "b1_ratio_iqr": [round(float(q), 3) for q in np.percentile(b1, [25, 75])],
        "b1_blocks": len(b1),
        "b32_ratio": round(float(np.median(b32)), 3),
        "b32_blocks": len(b32),
        **{k: cfg[k] for k in ("backend", "blas_coretype") if k in cfg},
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg["engine"] == "paired":
        print(json.dumps(paired(cfg)))
        return
    engine, size, quick = cfg["engine"], cfg["size"], cfg["quick"]
    rss_start = _status_mb("VmRSS")
    t0 = time.perf_counter()
    fn = build(engine, cfg)
    x1, x32 = _inputs(size)
    fn(x1)  # first call: compiles / plans
    setup = time.perf_counter() - t0
    for _ in range(2 if quick else 5):
        fn(x1)
    lat = _timed(fn, x1, *((5, 20, 1.0) if quick else (30, 300, 10.0)))
    fn(x32)
    thr = _timed(fn, x32, *((1, 2, 1.0) if quick else (3, 20, 15.0)))
    result = {
        "engine": engine,
        "setup_s": round(setup, 3),
        "b1_median_ms": round(float(np.median(lat)) * 1e3, 3),
        "b1_p90_ms": round(float(np.percentile(lat, 90)) * 1e3, 3),
        "b1_iters": len(lat),
        "b32_images_per_s": round(32 / float(np.median(thr)), 2),
        "b32_iters": len(thr),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "rss_increase_mb": round(_status_mb("VmHWM") - rss_start, 1),
    }
    for key in ("backend", "blas_coretype"):
        if key in cfg:
            result[key] = cfg[key]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
