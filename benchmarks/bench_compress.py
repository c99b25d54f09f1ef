"""Compression of the SqueezeNet v1.0 release: file size against fidelity, on images that chose nothing.

    python benchmarks/bench_compress.py            # the record (about 40 min on 2 shared cores)
    python benchmarks/bench_compress.py --tiny OUT # CI's smoke test: a tiny model, a few images

imagenet-samples is split by class: its wnid folders in sorted order, alternately. Half A
(positions 0, 2, 4, ...: 250 images of 250 classes) chose every setting of the data-free
default (during development) and is the calibration data of the data path (``--data`` of
``squeezenet compress``: 80 % calibrates, every fifth image is held back, as the command
does). Half B (positions 1, 3, 5, ...: 250 images of 250 other classes) chose nothing and
calibrated nothing: every figure below is measured on it, against the release's own
predictions (top-1 agreement, mean KL divergence) and against the labels (top-1, top-5).
Writes benchmarks/results/compress.{json,md,png}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, RESULTS, add_tiny_option, machine, write_results
from squeezenet.compression import CompressionConfig, compress, paper_tables
from squeezenet.compression.choices import DATA_FREE_KIND_BITS, HOLDOUT, NEAREST
from squeezenet.compression.report import baselines
from squeezenet.compression.report import markdown as paper_tables_markdown
from squeezenet.inference.fidelity import compare
from squeezenet.inference.runner import InferenceRunner
from squeezenet.weights import build_model_from_weights, load_weights
from squeezenet.weights.sqz import decode_sqz_bytes

ROOT = Path(__file__).resolve().parents[1]
RELEASE = DATA / "deepcompression" / "compressed_SqueezeNet.net"
IMAGES = DATA / "imagenet-samples"
TINY_MODEL = ROOT / "tests" / "data" / "sqz_v1_lossless.sqz"

BUDGETS = (360_000, 400_000, 430_000, 470_000, 500_000)
TARGETS = {"data-free": (470_000, 0.95), 470_000: 0.97, 400_000: 0.95}
LOAD_TARGET_MS = 200.0
HOLDOUT_PERIOD = round(1 / HOLDOUT)  # as `squeezenet compress --data`: every fifth image is held back


def halves(images: Path, classes: int | None = None) -> tuple[list[Path], list[Path]]:
    """(A, B): the wnid folders in sorted order, alternately; each folder's images."""
    folders = sorted(p for p in images.iterdir() if p.is_dir())[:classes]
    files = [sorted(p for p in f.iterdir() if p.is_file()) for f in folders]
    return [x for f in files[0::2] for x in f], [x for f in files[1::2] for x in f]


def source_and_reference(tiny: bool):
    """(weights file, its model) of a run (the release, or a tiny model for --tiny); None, after
    one line on stderr, when the data is missing."""
    source = TINY_MODEL if tiny else RELEASE
    for needed in (source, IMAGES):
        if not needed.exists():
            print(f"not found: {needed} (set SQUEEZENET_DATA)", file=sys.stderr)
            return None
    return source, build_model_from_weights(source).eval()


def read(paths: list[Path], info, labelled: bool, pre=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) as the weights expect them (``pre``: other preprocessing, e.g. a wider crop)."""
    from torch.utils.data import DataLoader

    from squeezenet.data import ImageListDataset, build_transform, collate_skipping_bad
    from squeezenet.inference.labels import folder_targets

    targets = folder_targets(sorted({p.parent.name for p in paths}), info, IMAGES) if labelled else {}
    ds = ImageListDataset(
        [(p, targets.get(p.parent.name, -1)) for p in paths], build_transform(pre or info.preprocessing)
    )
    batches = list(DataLoader(ds, batch_size=25, num_workers=2, collate_fn=collate_skipping_bad))
    return torch.cat([b.images for b in batches]), torch.cat([b.targets for b in batches])


class Scorer:
    """Fidelity of any model against the reference on half B (the reference's logits computed once)."""

    def __init__(self, reference, images: torch.Tensor, labels: torch.Tensor):
        from squeezenet.data.folders import Batch

        self.batches = [Batch(images[i : i + 25], labels[i : i + 25], ["B"] * len(images[i : i + 25]))
                        for i in range(0, len(images), 25)]  # fmt: skip
        runner = InferenceRunner(reference)
        self.ref = {id(b.images): runner(b.images) for b in self.batches}
        self.num_classes = reference.weights_info.num_classes

    def __call__(self, model) -> dict:
        runner = InferenceRunner(model.eval())
        return compare(runner, lambda x: self.ref[id(x)], self.batches, self.num_classes).to_dict()


def load_ms(data: bytes, repeats: int = 9) -> dict:
    """File bytes -> ready model (decode, rebuild, load_state_dict), as every command does it."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        build_model_from_weights(decode_sqz_bytes(data))
        times.append((time.perf_counter() - t0) * 1000)
    times = sorted(times[1:])  # the first load also imports and warms caches
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(times[-1], 1), "repeats": repeats}


def run_setting(name: str, mode: str, source, config, score, calibration=None, **train) -> tuple[dict, object, bytes]:
    t0 = time.perf_counter()
    cm = compress(source, config, calibration=calibration, **train)
    data, _ = cm.encode()
    seconds = time.perf_counter() - t0
    row = {"setting": name, "mode": mode, "bytes": len(data), "compress_s": round(seconds, 1),
           **score(build_model_from_weights(decode_sqz_bytes(data))), "config": config.to_dict()}  # fmt: skip
    print(f"{name}: {len(data):,} bytes, agreement {row['top1_agreement']:.1%}, KL {row['mean_kl']:.4f}, "
          f"{seconds:.0f} s", flush=True)  # fmt: skip
    return row, cm, data


def settings(tiny: bool) -> list[tuple[str, str, CompressionConfig]]:
    synth = 4 if tiny else 64
    rows = [
        ("lossless (release values, fp32)", "lossless", CompressionConfig.lossless()),
        ("8 bit everywhere (the release's codebooks, fp16)", "lossless", CompressionConfig(bits=8, method=NEAREST)),
        ("data-free default: output-aware, synthetic images; stem + expand3x3 7 bit", "data-free",
         CompressionConfig.data_free()),
        ("nearest at the default's bits (stem + expand3x3 7 bit)", "nearest",
         CompressionConfig(method=NEAREST, kind_bits=dict(DATA_FREE_KIND_BITS))),
        ("nearest, format-1 default (expand3x3 + conv10 7 bit)", "nearest", CompressionConfig.data_free(NEAREST)),
        ("nearest 7 bit everywhere", "nearest", CompressionConfig(bits=7, method=NEAREST)),
        ("nearest 6 bit everywhere", "nearest", CompressionConfig(bits=6, method=NEAREST)),
    ]  # fmt: skip
    for label, kinds, bits in (
        ("output-aware, synthetic: stem + expand3x3 + conv10 7 bit", {"stem": 7, "expand3x3": 7, "classifier": 7}, 8),
        ("output-aware, synthetic: 7 bit everywhere", {}, 7),
        ("output-aware, synthetic: stem + expand3x3 6 bit", {"stem": 6, "expand3x3": 6}, 8),
        ("output-aware, synthetic: 6 bit everywhere", {}, 6),
    ):
        rows.append((label, "data-free", CompressionConfig(bits=bits, method="output-aware", kind_bits=kinds)))
    default_bits = dict(DATA_FREE_KIND_BITS)
    for label, parts in (  # the default's parts, added one at a time (the last row is the default itself)
        ("ablation: nearest codes + bias correction", {"feedback": False, "refit": False}),
        ("ablation: nearest codes + bias correction + refitted centroids", {"feedback": False}),
        ("ablation: error feedback + refitted centroids, no bias correction", {"bias_correction": False}),
    ):
        rows.append((label, "ablation", CompressionConfig(bits=8, method="output-aware", kind_bits=default_bits,
                                                          **parts)))  # fmt: skip
    for _, _, cfg in rows:
        cfg.synthetic_images = synth
    return rows[:4] + rows[-1:] if tiny else rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="*", default=list(BUDGETS), help="--max-bytes of the data path")
    ap.add_argument("--distill-steps", type=int, default=150, help="steps of codebook distillation in its row")
    add_tiny_option(ap)
    args = ap.parse_args()
    if args.tiny:
        args.distill_steps = 2
    torch.set_num_threads(2)
    tiny = args.tiny is not None
    found = source_and_reference(tiny)
    if found is None:
        return 1
    source_path, reference = found
    info = reference.weights_info
    half_a, half_b = halves(IMAGES, 8 if tiny else None)
    b_images, b_labels = read(half_b, info, labelled=not tiny)
    a_images, _ = read(half_a, info, labelled=False)
    kept = torch.stack([x for i, x in enumerate(a_images) if i % HOLDOUT_PERIOD != HOLDOUT_PERIOD - 1])
    score = Scorer(reference, b_images, b_labels)
    release_row = {"setting": "the release (reference)", "mode": "reference", "bytes": source_path.stat().st_size,
                   **score(reference)}  # fmt: skip
    rows, files = [release_row], {}
    for name, mode, cfg in settings(tiny):
        row, cm, data = run_setting(name, mode, source_path, cfg, score)
        rows.append(row)
        files[name] = (cm, data)
    cfg = CompressionConfig.data_free()
    name = "--data half A (unlabelled), the default's bits, no budget"
    rows.append(run_setting(name, "ablation", source_path, cfg, score, calibration=kept)[0])
    budgets = [max(r["bytes"] for r in rows[1:]) - 100] if tiny else args.budgets
    for budget in budgets:
        cfg = CompressionConfig(bits=8, method="output-aware", max_bytes=budget, prune=True)
        name = f"--data half A (unlabelled), --max-bytes {budget:,}"
        row, cm, data = run_setting(name, "data", source_path, cfg, score, calibration=kept)
        row["calibration_images"] = len(kept)
        rows.append(row)
        files[name] = (cm, data)
    budget = budgets[-2] if len(budgets) > 1 else budgets[0]  # 470,000 in the record
    cfg = CompressionConfig(bits=8, method="output-aware", max_bytes=budget, prune=True)
    name = f"--data half A (unlabelled), --max-bytes {budget:,}, then {args.distill_steps} distillation steps"
    train = {"data": _batches(kept, 16), "steps": args.distill_steps, "teacher": reference, "biases": True}
    row, _, _ = run_setting(name, "ablation", source_path, cfg, score, calibration=kept, **train)
    rows.append(row)
    default_name = next(n for n, m, _ in settings(tiny) if m == "data-free")
    last_budget = next(r["setting"] for r in reversed(rows) if r["mode"] == "data")
    load = {name: load_ms(files[name][1], 3 if tiny else 9) for name in (default_name, last_budget)}
    default_cm = files[default_name][0]
    tables = paper_tables(default_cm, default_cm.encode()[1])
    lossless = lossless_savings(source_path)
    payload = {
        "source": source_path.name,
        "protocol": {
            "split": "imagenet-samples wnid folders in sorted order, alternately",
            "chose_settings_and_calibrated": f"half A (even positions): {len(half_a)} images; the data path "
            f"calibrated on {len(kept)} of them (every fifth held back, as the command does)",
            "scored": f"half B (odd positions): {len(half_b)} images, used for nothing else",
        },
        "rows": rows,
        "load": load,
        "targets": targets(rows, load),
        "lossless_savings": lossless,
        "default_tables": tables,
        "baselines": baselines(load_weights(source_path).state_dict),
        "machine": machine(),
        "tiny": tiny,
    }
    out = args.tiny or RESULTS
    write_results("compress", payload, markdown(payload), args.tiny)
    plot(rows, Path(out) / "compress.png")
    return 0


def markdown(payload: dict) -> str:
    """The results page, from the recorded JSON alone (tests/test_benchmark_scripts.py re-renders it)."""
    return render(payload, payload["default_tables"])


def _batches(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [images[i : i + size] for i in range(0, len(images), size)]


def lossless_savings(source) -> dict:
    """What each lossless change of format version 2 saves on the 8-bit file (same values)."""
    from squeezenet.weights.sqz_codec import TensorPlan, encode_sqz

    cm = compress(source, CompressionConfig(bits=8, method=NEAREST))
    out = {}
    for label, packed, shared in (("format 1 (no packing)", False, False), ("+ shared class list", False, True),
                                  ("+ packed codebooks, deflated biases and tables", True, True)):  # fmt: skip
        plans = [TensorPlan(k, t, codebook_dtype="float16", dense_dtype="float16", packed=packed)
                 for k, t in cm.tensors.items()]  # fmt: skip
        data, report = encode_sqz(cm.metadata(), plans, shared_metadata=shared)
        out[label] = {"bytes": len(data), "metadata": report["metadata"]}
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def targets(rows: list[dict], load: dict) -> list[dict]:
    """The issue's checks, each as {check, measured, target, verdict} (README's status reads them)."""
    out = []
    n = rows[0]["n"]
    default = next(r for r in rows if r["mode"] == "data-free")
    size, agree = TARGETS["data-free"]
    out.append(_check("data-free default", f"{default['bytes']:,} bytes, agreement {_pct(default['top1_agreement'])} "
                      f"({n} images)", f"<= {size:,} bytes, >= {agree:.0%}",
                      default["bytes"] <= size and default["top1_agreement"] >= agree))  # fmt: skip
    release = rows[0]
    for budget in (470_000, 400_000):
        row = next((r for r in rows if r["mode"] == "data" and f"{budget:,}" in r["setting"]), None)
        if row is None:
            continue
        need = TARGETS[budget]
        ok = row["bytes"] <= budget and row["top1_agreement"] >= need
        measured = f"{row['bytes']:,} bytes, agreement {_pct(row['top1_agreement'])}"
        target = f">= {need:.0%}"
        if budget == 400_000 and row.get("top1") is not None:
            ok = ok and row["top1"] >= release["top1"]
            measured += f", top-1 {_pct(row['top1'])} (release {_pct(release['top1'])}; {_change(row)})"
            target += ", top-1 >= the release's"
        measured += f" in {row['compress_s']:.0f} s"
        out.append(_check(f"`--data` (unlabelled) `--max-bytes {budget:,}`", measured, target, ok))
    for name, t in load.items():
        out.append(_check(f"load a `.sqz` ({name.split(':')[0].split(',')[0]})", f"median {t['median_ms']} ms "
                          f"(max {t['max_ms']}, {t['repeats']} loads)", f"< {LOAD_TARGET_MS:.0f} ms",
                          t["median_ms"] < LOAD_TARGET_MS))  # fmt: skip
    return out


def _change(row: dict) -> str:
    """The top-1 change image by image: a few images either way is what a coin toss gives."""
    return (f"{row['top1_lost']} images lost, {row['top1_gained']} gained, "
            f"exact McNemar p = {row['top1_change_p']:.2f}")  # fmt: skip


def _lost_gained(row: dict) -> str:
    return "" if row.get("top1_lost") is None else f"{row['top1_lost']} / {row['top1_gained']}"


def _check(check: str, measured: str, target: str, ok: bool) -> dict:
    return {"check": check, "measured": measured, "target": target, "verdict": "met" if ok else "missed"}


def render(p: dict, tables: dict) -> str:
    m, rows = p["machine"], p["rows"]
    n = rows[0]["n"]
    md = [
        "# Compression of the SqueezeNet v1.0 release: bytes against fidelity",
        "",
        f"Command: `python benchmarks/bench_compress.py{' --tiny' if p['tiny'] else ''}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared with other work while it ran), torch {m['torch']}, "
        f"{m['date']}",
        "",
        f"Protocol: {p['protocol']['split']}. Chose the settings and calibrated: "
        f"{p['protocol']['chose_settings_and_calibrated']}. Scored: {p['protocol']['scored']}. Agreement = share "
        f"of the {n} images whose top-1 class is the release's; KL = mean KL(release || compressed) in nats.",
        "",
        "| check | measured | target | status |",
        "|---|---|---|---|",
        *(f"| {t['check']} | {t['measured']} | {t['target']} | {t['verdict']} |" for t in p["targets"]),
        "",
        "| setting | bytes | top-1 agreement | mean KL | top-1 | top-1 lost / gained | top-5 | compress s |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        md.append(f"| {r['setting']} | {r['bytes']:,} | {_pct(r['top1_agreement'])} | {r['mean_kl']:.4f} | "
                  f"{_pct(r.get('top1'))} | {_lost_gained(r)} | {_pct(r.get('top5'))} | "
                  f"{r.get('compress_s', '')} |")  # fmt: skip
    md += [
        "",
        f"Each figure rests on {n} images of half B. Top-1 lost / gained: images the release classifies "
        "right and the compressed model wrong, and the other way round (the top-1 change is their difference "
        "over the images). The curve: `compress.png`.",
        "",
    ]
    md += parts_table(rows)
    md += ["", "<!-- details -->"]
    md += ["## Lossless savings of format version 2 (the 8-bit file, same values)", "",
           "| file | bytes | metadata bytes |", "|---|---|---|"]  # fmt: skip
    md += [f"| {k} | {v['bytes']:,} | {v['metadata']:,} |" for k, v in p["lossless_savings"].items()]
    md += ["", "## Data-free default: Table 1 / Table 2", "", paper_tables_markdown(tables, p["baselines"])]
    return "\n".join(md) + "\n"


def parts_table(rows: list[dict]) -> list[str]:
    """What each part of the output-aware method gives: the default's bits, one part at a time."""
    nearest = next(r for r in rows if r["setting"].startswith("nearest at the default's bits"))
    default = next(r for r in rows if r["mode"] == "data-free")
    chain = [nearest, *(r for r in rows if r["setting"].startswith("ablation")), default]
    chain += [r for r in rows if r["mode"] == "ablation" and r["setting"].startswith("--data")]
    md = ["## What each part gives", "",
          "Same bits as the default (stem and fire expand 3x3 at 7 bits, the rest at 8) unless a budget is named; "
          "synthetic calibration unless half A is named.", "",
          "| quantization | bytes | top-1 agreement | mean KL |", "|---|---|---|---|"]  # fmt: skip
    md += [f"| {r['setting']} | {r['bytes']:,} | {_pct(r['top1_agreement'])} | {r['mean_kl']:.4f} |" for r in chain]
    return md


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = {
        "data": ("o-", "output-aware, --data half A + --max-bytes"),
        "data-free": ("s", "output-aware, data-free"),
        "nearest": ("x", "nearest k-means (format-1 method)"),
        "lossless": ("D", "8 bit / lossless"),
    }
    for mode, (style, label) in styles.items():
        pts = sorted((r["bytes"] / 1000, 100 * r["top1_agreement"]) for r in rows if r["mode"] == mode)
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=label, ms=5)
    ax.axvline(470, ls=":", c="red", lw=0.8)
    ax.axvline(400, ls=":", c="gray", lw=0.8)
    ax.set_xlabel("file size (KB)")
    ax.set_ylabel(f"top-1 agreement with the release, % ({rows[0]['n']} images of half B)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
