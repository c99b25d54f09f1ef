"""How the error of a tight byte budget falls with the number of calibration images, on half A only.

    python benchmarks/studies/compress_scaling.py             # the record (hours on 2 cores)
    python benchmarks/studies/compress_scaling.py --tiny OUT  # a smoke run on a tiny model

The study (``compress_study``) reads the 400 kB miss as a shortage of calibration images:
the error that unseen images see is several times the second-order estimate the byte
allocation trusts, most for conv10 and the last Fires. If that is the limit, the held-back
error falls as images are added and the gap between estimate and measurement narrows; if it
does not fall, the limit is elsewhere. This script measures it: in each of the study's five
folds of half A (each fifth held back in turn), ``compress --max-bytes 400000`` as the command
runs it, calibrated on 50, 100, 150 and all 200 of the fold's other images (nested subsets, a
seeded order per fold), each file scored on the same held-back images (250 in all, paired
across sizes). Half B is not read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' helpers

import half_a

from _common import machine, write_results
from squeezenet.compression import CompressionConfig, compress
from squeezenet.compression.choices import OUTPUT_AWARE

BUDGET = 400_000
SIZES = (50, 100, 150, 200)


def fold_scores(source, reference, images: torch.Tensor, budget: int, fold: int, sizes: list[int]):
    """Per size: (KL and agreement on the fold's held-back images, file bytes, predicted KL)."""
    kept, held = half_a.split(images, fold)
    order = torch.from_numpy(np.random.default_rng(fold).permutation(len(kept)))
    config = CompressionConfig(method=OUTPUT_AWARE, max_bytes=budget, prune=True)
    out = {}
    for n in sizes:
        calibration = kept[order[: min(n, len(kept))].sort().values]
        cm = compress(source, config, calibration=calibration)
        data, model = cm.to_bytes(), cm.build_model().eval()
        kl, agree = half_a.kl_per_image(reference, model, images[held])
        out[n] = (kl, agree, len(data), float(cm.notes["predicted_kl"]))
        print(f"fold {fold}, {len(calibration)} images: {len(data):,} B, KL {kl.mean():.4f}, agreement "
              f"{agree.mean():.1%}, predicted {cm.notes['predicted_kl']:.4f}", flush=True)  # fmt: skip
    return out


def scaling(source, reference, images: torch.Tensor, budget: int, folds: list[int], sizes: list[int]) -> dict:
    per_fold = [fold_scores(source, reference, images, budget, f, sizes) for f in folds]
    joined = {n: [np.concatenate([f[n][i] for f in per_fold]) for i in (0, 1)] for n in sizes}
    base_kl, base_agree = joined[sizes[-1]]
    rows = {}
    for n in sizes:
        kl, agree = joined[n]
        rows[f"{n} calibration images"] = {
            **half_a.paired(base_kl, base_agree, kl, agree),
            "predicted_kl": float(np.mean([f[n][3] for f in per_fold])),
            "bytes": [f[n][2] for f in per_fold],
        }
    return rows


def slope(rows: dict, sizes: list[int]) -> float | None:
    """Exponent a of mean KL ~ n^-a between the two largest sizes (a least-squares line in log-log
    over all sizes would weigh the smallest, least relevant ones as much)."""
    if len(sizes) < 2:
        return None
    a, b = (rows[f"{n} calibration images"]["mean_kl"] for n in sizes[-2:])
    return float(-np.log(b / a) / np.log(sizes[-1] / sizes[-2])) if a > 0 and b > 0 else None


def markdown(p: dict) -> str:
    md = [
        *half_a.header(
            "Calibration images against the error of a tight budget (half A only)",
            __file__,
            p,
            f"; {p['seconds'] / 60:.0f} min",
        ),
        f"`compress --max-bytes {p['budget']:,}` as the command runs it, calibrated on nested subsets of each "
        f"fold's calibration images (folds {', '.join(map(str, p['folds']))} of half A, each fifth held back in "
        f"turn); every figure rests on the same {p['scored']} held-back images, paired against the largest size "
        "(KL change with a 95 % bootstrap interval; flips: predictions that agree with the release at one size "
        "and not at the other). Predicted: the mean over folds of the second-order KL the byte allocation "
        "trusted. Half B is not read.",
        "",
        *_renamed(half_a.variant_table({"variants": p["rows"]})),
        "",
        "| calibration images | predicted KL | measured / predicted | files (bytes) |",
        "|---:|---:|---:|---|",
    ]
    for name, r in p["rows"].items():
        ratio = f"{r['mean_kl'] / r['predicted_kl']:.1f}x" if r["predicted_kl"] > 0 else "n/a"
        md.append(f"| {name.split()[0]} | {r['predicted_kl']:.4f} | {ratio} | "
                  f"{', '.join(f'{b:,}' for b in r['bytes'])} |")  # fmt: skip
    if p["slope"] is not None:
        md += ["", f"Between the two largest sizes the mean KL falls as n^-{p['slope']:.2f} (n: calibration "
               f"images; a local exponent from two points of {p['scored']} paired images each)."]  # fmt: skip
    return "\n".join(md) + "\n"


def _renamed(table: list[str]) -> list[str]:
    return [table[0].replace("variant", "calibrated on", 1), *table[1:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="calibration images, ascending")
    run = half_a.start_folds(ap, BUDGET)
    if run is None:
        return 1
    args, source, reference, images, budget, folds = run
    tiny = args.tiny is not None
    sizes = [4, 16] if tiny else sorted(set(args.sizes))
    t0 = time.perf_counter()
    rows = scaling(source, reference, images, budget, folds, sizes)
    payload = {"source": source.name, "budget": budget, "folds": folds, "sizes": sizes, "images": len(images),
               "scored": len(images) // half_a.FOLDS * len(folds), "rows": rows, "slope": slope(rows, sizes),
               "seconds": time.perf_counter() - t0, "machine": machine(), "tiny": tiny}  # fmt: skip
    write_results("compress_scaling", payload, markdown(payload), args.tiny or half_a.RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
