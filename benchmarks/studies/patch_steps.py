"""Where the patch time of a ``full`` update goes: the compiled rANS loops against the NumPy
coder, and what fewer rANS steps per lane would buy.

    python benchmarks/studies/patch_steps.py            # about three minutes on 2 cores

``bench_delta`` recorded ``full`` updates patched in 339 and 414 ms (AMD EPYC) against a target
of 100 ms, with the NumPy coder, which takes one vectorised step per symbol of a lane. The pair:
the release compressed data-free (``bench_delta``'s base) and the same weights with every kept
weight of every quantized layer moved by 5 % of its layer's standard deviation (seeded),
compressed against the base as ``train --update-of BASE --update-level full`` does: every layer's
codes change, the masks do not (the worst case of a ``full`` update). Both files are then written
again with 4096 (the writer's default), 2048, 1024 and 512 steps per lane (the content
unchanged), and each pair's delta is patched seven times (median) with the compiled loops
(``sqz_codec/_rans.c``) and seven times with the NumPy coder, in the same process. The breakdown
at the default is cProfile's, with the compiled loops (cumulative time of the patch's parts; the
profiler adds its own cost). No image is read.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' helpers

from _common import machine, page_head, write_results
from bench_delta import RELEASE, coder_patch_ms
from squeezenet.compression import CompressionConfig, compress, compress_update
from squeezenet.weights import load_weights
from squeezenet.weights.deltas import delta_bytes
from squeezenet.weights.sqz_codec import compiled
from squeezenet.weights.sqz_codec.layout import read_layout, write_layout
from squeezenet.weights.sqz_codec.patch import apply_delta

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = (4096, 2048, 1024, 512)
PARTS = {  # the patch's parts, by the function that does each
    "read the delta (LZMA)": "read_delta",
    "parse BASE": "parse_sqz",
    "decode BASE's groups": "decode_groups",
    "rebuild the changed tensors": "_rebuild",
    "write their sections (positions, codebooks, tables)": "encode_tensor",
    "code NEW's groups": "encode_groups",
    "pack the metadata (LZMA)": "pack_metadata",
}
CODERS = ("compiled", "numpy")


def moved_pair(work: Path, noise: float) -> tuple[bytes, bytes]:
    base = work / "base.sqz"
    compress(str(RELEASE), CompressionConfig.data_free()).save(base)
    tuned = load_weights(str(base))
    generator = torch.Generator().manual_seed(0)
    for name, value in tuned.state_dict.items():
        if value.dtype.is_floating_point and value.dim() > 1:
            moved = torch.randn(value.shape, generator=generator) * value.std() * noise
            tuned.state_dict[name] = value + (value != 0) * moved
    return base.read_bytes(), compress_update(base.read_bytes(), tuned, "full")


def breakdown(old: bytes, delta: bytes) -> dict[str, float]:
    profile = cProfile.Profile()
    profile.runcall(apply_delta, old, delta)
    stats = pstats.Stats(profile).stats
    total = max(row[3] for row in stats.values())
    cumulative = {key[2]: row[3] for key, row in stats.items()}
    shares = {part: round(cumulative.get(function, 0.0) / total, 3) for part, function in PARTS.items()}
    return {"profiled_ms": round(total * 1000, 1), "shares": shares}


def markdown(payload: dict) -> str:
    lines = [
        *page_head("Patch time of a `full` update against rANS steps per lane", payload),
        f"Pair: the release compressed data-free and every kept weight moved by {payload['noise']:.0%} of its "
        f"layer's standard deviation, compressed against it (`full`); delta ops {payload['ops']}.",
        "",
        "| steps per lane | BASE bytes | NEW bytes | delta bytes | patch ms, compiled loops | patch ms, NumPy coder |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        ms = r["patch_ms"]
        lines.append(f"| {r['steps']} | {r['base_bytes']:,} | {r['new_bytes']:,} | {r['delta_bytes']:,} "
                     f"| {ms['compiled']:.1f} | {ms['numpy']:.1f} |")  # fmt: skip
    b = payload["breakdown"]
    profiled = f"At {STEPS[0]} steps with the compiled loops, under cProfile ({b['profiled_ms']} ms in all):"
    lines += ["", "Patch times: the median of 7 patches each, in one process.", "", profiled, ""]
    lines += [f"- {part}: {share:.0%}" for part, share in b["shares"].items()]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, default=0.05, help="the move, in units of each layer's std")
    ap.add_argument("--work", type=Path, default=Path("runs/patch_steps"))
    args = ap.parse_args()
    if not compiled.AVAILABLE:
        raise SystemExit("patch_steps: the compiled rANS loops were not built (pip install -e . with a C compiler)")
    args.work.mkdir(parents=True, exist_ok=True)
    old, new = moved_pair(args.work, args.noise)
    base, update = read_layout(old), read_layout(new)
    rows, deltas = [], {}
    for steps in STEPS:
        base.steps = update.steps = steps
        a, b = write_layout(base), write_layout(update)
        deltas[steps] = (a, delta_bytes(a, b))
        delta = deltas[steps][1].data
        times = {coder: coder_patch_ms(coder == "compiled", a, delta, b) for coder in CODERS}
        rows.append({"steps": steps, "base_bytes": len(a), "new_bytes": len(b), "delta_bytes": len(delta),
                     "patch_ms": times})  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    a, delta = deltas[STEPS[0]]
    payload = {"command": "python benchmarks/studies/patch_steps.py", "machine": machine(), "noise": args.noise,
               "ops": delta.report["ops"], "rows": rows, "breakdown": breakdown(a, delta.data)}  # fmt: skip
    write_results("patch_steps", payload, markdown(payload), RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
