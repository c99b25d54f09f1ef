"""Full deployment comparison: writes benchmarks/results/deploy.json and deploy.md.

    python benchmarks/bench_deploy.py            # the real measurement (quiet machine!), 3 rounds
    python benchmarks/bench_deploy.py --quick    # a smoke test of the output format
    python benchmarks/bench_deploy.py --tiny OUT # CI's smoke test: 4 engines, v1.1 at 64 px, 8 images

Speed: random weights, v1.0 at 227 px and v1.1 at 224 px, every engine in its own process
(see ``squeezenet.benchmarking.engines``). Two NumPy rows: ``numpy`` is the runtime as shipped,
which picks numpy's OpenBLAS kernels itself (AVX-512 on AMD CPUs that have it), so its
worker starts without OPENBLAS_CORETYPE; ``numpy_env_blas`` keeps this environment's pin
(the project's CI machine sets OPENBLAS_CORETYPE=Haswell: AVX2 kernels). Accuracy: the Deep Compression v1.0 weights on
``$SQUEEZENET_DATA/imagenet-samples`` (default ../shared/data), sorted paths: int8 calibrated on
the first even-indexed images (as many as ``squeezenet export`` takes by default); reported on the
even-indexed images left, on which no int8 choice was made; the odd-indexed images, where the int8
design was chosen, shown apart (``squeezenet.benchmarking.int8_accuracy``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _common import add_tiny_option, write_results
from bench_eval import tiny_samples
from squeezenet.benchmarking.engines import format_markdown, run_bench
from squeezenet.benchmarking.int8_accuracy import int8_accuracy
from squeezenet.benchmarking.names import ENGINES

markdown = format_markdown  # the results page from the recorded JSON alone (re-rendered by the tests)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SQUEEZENET_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations, to check the output only")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurements per engine (median)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the int8 top-1 check")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    add_tiny_option(parser)
    args = parser.parse_args()
    weights = DATA / "deepcompression" / "compressed_SqueezeNet.net"
    samples = DATA / "imagenet-samples"
    tiny = {}
    if args.tiny:
        args.out, args.quick, args.engines = args.tiny, True, ["torchvision_eager", "default", "ort_fp32", "ort_int8"]
        tiny = {"archs": ("squeezenet1_1",), "size": 64}
        samples = tiny_samples(samples, args.tiny / "samples", classes=8)
    result = run_bench(
        engines=tuple(args.engines),
        quick=args.quick,
        rounds=1 if args.quick else args.rounds,
        progress=lambda m: print(f"bench: {m}", file=sys.stderr),
        **tiny,
    )
    if not args.no_accuracy:
        if weights.exists() and samples.exists():
            print("bench: int8 accuracy", file=sys.stderr)
            result["accuracy"] = int8_accuracy(weights, samples)
        else:
            print(f"bench: {DATA} not found; int8 accuracy skipped", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results("deploy", result, format_markdown(result), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
