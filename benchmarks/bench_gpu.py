"""GPU inference throughput at batch 256: the project's fast path against torchvision eager.

For sessions lent a GPU (the deployment issue's GPU figure). Both models carry the same
random weights (the project's SqueezeNet loads torchvision's state dict unchanged), so the
run also checks that the fast path agrees with the reference:

- ``torchvision_eager``: ``torchvision.models.squeezenet1_1``, fp32, NCHW, ``torch.no_grad``;
  the reference every ratio is taken against.
- ``bf16_channels_last``: the project's model under bf16 autocast in channels_last.
- ``compiled``: the same through ``torch.compile`` (inductor's default mode: fused ReLU and
  concat around cuDNN convolutions, no CUDA graphs; no autotuning, whose minutes of search a
  short GPU loan cannot spare).
- ``compiled_cudagraphs``: ``torch.compile(mode="reduce-overhead")``: the whole batch replayed
  as one CUDA graph, no per-kernel launch cost.

    PYTHONPATH=src python benchmarks/bench_gpu.py                  # on the GPU machine
    python benchmarks/bench_gpu.py --device cpu --batch 2 --steps 2 --no-compile --out /tmp/x   # smoke test

Each figure is the median images/s over ``--repeats`` timed windows of ``--steps`` batches
(CUDA events around each window, after warm-up). Writes benchmarks/results/gpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="squeezenet1_1", choices=("squeezenet1_0", "squeezenet1_1"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=50, help="batches per timed window")
    ap.add_argument("--repeats", type=int, default=5, help="timed windows per engine (median)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile engines")
    ap.add_argument("--out", default=str(RESULTS), help="output folder")
    return ap.parse_args(argv)


def check_device(name: str):
    """The torch.device to run on, or SystemExit with one line when it is not there."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SystemExit(f"bench_gpu: error: bad --device {name!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: error: no CUDA device visible here (run it on the GPU machine, or --device cpu)")
    return device


def build_engines(arch: str, device, compile_too: bool) -> dict:
    """name -> (callable taking an NCHW fp32 batch, logits as fp32). Same weights in all."""
    import torch
    import torchvision

    from squeezenet.models import build_architecture

    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)(weights=None).to(device).eval()
    fast = build_architecture(arch).eval()
    fast.load_state_dict(reference.state_dict())
    fast = fast.to(device, memory_format=torch.channels_last)

    def bf16(module):
        def run(x):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return module(x.contiguous(memory_format=torch.channels_last)).float()

        return run

    engines = {"torchvision_eager": reference, "bf16_channels_last": bf16(fast)}
    if compile_too:
        engines["compiled"] = bf16(torch.compile(fast))
        engines["compiled_cudagraphs"] = bf16(torch.compile(fast, mode="reduce-overhead"))
    return engines


def throughput(fn, x, steps: int, repeats: int, warmup: int) -> list[float]:
    """images/s of each timed window."""
    import torch

    cuda = x.device.type == "cuda"
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        rates = []
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                for _ in range(steps):
                    fn(x)
                end.record()
                torch.cuda.synchronize()
                seconds = start.elapsed_time(end) / 1e3
            else:
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn(x)
                seconds = time.perf_counter() - t0
            rates.append(x.shape[0] * steps / seconds)
    return rates


def agreement(reference_logits, logits) -> dict:
    """How far the fast path's logits are from the fp32 reference (bf16 rounds them)."""
    from squeezenet.inference.fidelity import fidelity_from_logits

    return {
        "max_abs_diff": float((reference_logits - logits).abs().max()),
        "top1_agreement": fidelity_from_logits(reference_logits, logits).agreement,
    }


def run(args: argparse.Namespace) -> dict:
    import torch

    device = check_device(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    engines = build_engines(args.arch, device, compile_too=not args.no_compile)
    rows, reference_logits = {}, None
    for name, fn in engines.items():  # the reference first: the others are compared with its logits
        print(f"bench_gpu: {name}", file=sys.stderr)
        rates = throughput(fn, x, args.steps, args.repeats, args.warmup)
        with torch.inference_mode():
            logits = fn(x).float()
        reference_logits = logits if reference_logits is None else reference_logits
        rows[name] = {"images_per_s": statistics.median(rates), "windows": rates, **agreement(reference_logits, logits)}
    base = rows["torchvision_eager"]["images_per_s"]
    for row in rows.values():
        row["speedup"] = row["images_per_s"] / base
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "benchmark": f"{args.arch} inference throughput at batch {args.batch}, {args.size} px",
        "device": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "settings": {k: getattr(args, k) for k in ("arch", "batch", "size", "steps", "repeats", "warmup")},
        "engines": rows,
        "best": max(rows, key=lambda k: rows[k]["images_per_s"]),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# GPU throughput: {result['benchmark']}",
        "",
        f"Device: {result['device']}; torch {result['torch']} (CUDA {result['cuda']}). Reference: torchvision "
        "eager fp32 NCHW. Same random weights in every engine; images/s = median of the timed windows.",
        "",
        "| engine | images/s | speedup | max abs diff vs reference | top-1 agreement |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in result["engines"].items():
        lines.append(
            f"| {name} | {row['images_per_s']:,.0f} | {row['speedup']:.2f}x | {row['max_abs_diff']:.3g} "
            f"| {row['top1_agreement']:.1%} |"
        )
    lines += ["", f"Fastest: {result['best']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:  # before the measurement: a loan's minutes are not spent on results that cannot be kept
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise SystemExit(f"bench_gpu: error: cannot write the results to {out} ({exc.strerror})") from None
    result = run(args)
    (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
