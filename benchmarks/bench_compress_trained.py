"""Deep Compression of a model this project trained (CIFAR-10, ELPV, ...): size and fidelity, end to end.

Two roads from the trained model to a ``.sqz`` file, both scored on the test split against
the trained model's own predictions (top-1 agreement, mean KL) and against the labels:

A. output-aware quantization to a byte budget (``squeezenet compress --data TRAIN_IMAGES
   --unlabelled --max-bytes fp32/RATIO``): no training; calibrated on ``--calib-images``
   images of the training split (no labels, no test image), the budget spent where the
   outputs need it, pruning included. Target: >= 12x smaller than the fp32 safetensors
   with >= 98 % top-1 agreement on the test split.
B. the Deep Compression pipeline with retraining (at least 10x smaller, at most 0.5 points
   of test top-1 lost). Stages (Han et al.):

1. train the 32-px CIFAR SqueezeNet (``bench_train_cifar10.CIFAR_SPEC``) with the training
   engine, or take ``--weights`` of an existing run; measure its test top-1 and file size;
2. magnitude pruning to per-layer densities (``--density`` preset) in ``--rounds`` geometric
   steps (``compression.iterative_prune``), each followed by retraining through the training
   engine with the masks held fixed (its ``on_step`` hook re-applies them after every
   optimiser step, to the EMA copy too);
3. per-layer k-means weight sharing (``--bits``, ``--bits-expand3x3``) and trained
   quantization (centroid fine-tuning on the training split, ``--quant-steps``);
4. entropy coding into a ``.sqz`` file, reloaded with ``build_model_from_weights`` and
   scored on the test split.

    python benchmarks/bench_compress_trained.py [--epochs 4] [--max-minutes 12] [--rounds 2]
    python benchmarks/bench_compress_trained.py --weights runs/cifar10/last.safetensors
    python benchmarks/bench_compress_trained.py --tiny OUT   # CI's smoke test: a few images, a few steps

Any dataset spec of the training engine works with ``--weights`` (e.g. ``--data elpv:4
--weights runs/elpv4/last.safetensors``); training without ``--weights`` builds the CIFAR
SqueezeNet. Datasets split by a seed (ELPV, ``--val-split``) are split with the seed the
weights were trained with (their provenance), in every stage, so that retraining and trained
quantization never see a test image.

The model compared against is the trained run's ``last.safetensors`` (no checkpoint is
picked on the test split); retraining adds training steps, which an under-trained base
model can turn into an accuracy gain (the report states the extra steps). Writes
``compress_trained.{json,md}`` to ``--results-dir`` (benchmarks/results by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, RESULTS, add_tiny_option, machine, test_loader, tiny_archive
from _compress_trained_report import layer_kind, pct, render_markdown
from _compress_trained_runs import retrain_fn, train_base
from squeezenet.compression import CompressionConfig, compress, iterative_prune, paper_tables
from squeezenet.compression.choices import NEAREST, OUTPUT_AWARE
from squeezenet.compression.pruning import prunable, resolve_densities
from squeezenet.data.folders import collate_skipping_bad
from squeezenet.data.preprocessing import build_transform
from squeezenet.data.sources import open_dataset
from squeezenet.inference.fidelity import compare
from squeezenet.training.api import cpu_has_native_bf16
from squeezenet.training.engine import evaluate
from squeezenet.training.recipes import build_train_transform
from squeezenet.weights import LoadedWeights, build_model_from_weights, load_weights, write_safetensors

# Per-layer densities by layer kind (stem conv, squeeze 1x1, expand 1x1, expand 3x3, final conv).
# The expand 3x3 layers hold ~76 % of the weights of the CIFAR SqueezeNet, so they set the size.
DENSITY_PRESETS: dict[str, dict[str, float]] = {
    "conservative": {"stem": 1.0, "squeeze": 0.7, "expand1x1": 0.55, "expand3x3": 0.4, "classifier": 0.6},
    "default": {"stem": 0.9, "squeeze": 0.6, "expand1x1": 0.45, "expand3x3": 0.3, "classifier": 0.5},
    "aggressive": {"stem": 0.8, "squeeze": 0.45, "expand1x1": 0.35, "expand3x3": 0.22, "classifier": 0.4},
}


def provenance(weights: Path) -> str:
    """How ``--weights`` was trained, from the ``config.json`` the training engine writes beside
    a run's weights: the figures of a compressed model mean little without its training."""
    config = weights.parent / "config.json"
    try:
        c = json.loads(config.read_text())
        start = f"from `{c['weights']}`" if c.get("weights") else "from scratch"
        return (f"`squeezenet train` in `{weights.parent}`: data `{c['data']}`, {c['epochs']} epochs, "
                f"recipe {c.get('recipe') or 'default'}, {start}")  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return "given (--weights; no training run's config.json beside it)"


def densities_for(state: dict, preset: str) -> dict[str, float]:
    names = prunable(state)
    if preset == "paper":
        return resolve_densities(state, "paper")
    if preset in DENSITY_PRESETS:
        table = DENSITY_PRESETS[preset]
        return {k: table[layer_kind(k, names)] for k in names}
    try:
        return resolve_densities(state, float(preset))
    except ValueError:
        raise SystemExit(f"--density: a preset ({', '.join([*DENSITY_PRESETS, 'paper'])}) or a number") from None


def bits_for(state: dict, bits: int, bits_e3: int) -> dict[str, int]:
    return {k: bits_e3 if ".expand3x3." in k else bits for k in prunable(state)}


# --- data and evaluation ------------------------------------------------------------------


def top1(model, loader) -> dict:
    model = model.to(memory_format=torch.channels_last)
    r = evaluate(model, loader, torch.device("cpu"), model.num_classes, None, True)
    return {"top1": r["top1"], "top5": r["top5"], "n": r["n"], "skipped": r["skipped"]}


def timed_top1(path: Path, tests, times: dict, stage: str, t0: float) -> dict:
    """``top1`` of the weights at ``path``; the seconds since ``t0`` recorded as ``stage``."""
    scores = top1(build_model_from_weights(path), tests)
    times[stage] = time.perf_counter() - t0
    return scores


class LabelledBatches:
    """Re-iterable (images, labels) over the training split, for trained quantization."""

    def __init__(self, data: str, info, batch: int, workers: int, augment: str, seed: int = 0):
        pre = info.preprocessing
        ds = open_dataset(data, "train", classes=info.classes)
        ds = ds.with_transform(build_train_transform(pre, augment), pre.image_mode)
        g = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(
            ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_skipping_bad, generator=g
        )

    def __iter__(self):
        for b in self.loader:
            if b.paths:
                yield b.images, b.targets


BASE_KEYS = ("epochs", "max_steps", "max_minutes", "lr", "augment", "batch_size", "amp")


def parse_args() -> argparse.Namespace:
    """The options; a --tiny run's settings make every stage run in seconds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--weights", help="a trained run's .safetensors: skip training")
    ap.add_argument("--work", default="runs/compress_trained", help="scratch folder for runs and files")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("base training (without --weights)")
    g.add_argument("--epochs", type=int, default=4)
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--max-minutes", type=float, default=None, help="stop base training after this long")
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--augment", default="light", choices=("none", "light", "strong"), help="strong for long runs")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--amp", default="auto", help="autocast for training (auto: bf16 where the CPU has it natively)")
    g = ap.add_argument_group("pruning + retraining with fixed masks")
    g.add_argument("--density", default="default", help=f"{', '.join([*DENSITY_PRESETS, 'paper'])} or a number")
    g.add_argument("--rounds", type=int, default=2, help="geometric pruning steps, each retrained")
    g.add_argument("--retrain-epochs", type=int, default=1, help="epochs of retraining per round")
    g.add_argument("--retrain-max-steps", type=int, default=None)
    g.add_argument("--retrain-lr", type=float, default=0.02)
    g.add_argument("--retrain-ema", type=float, default=0.0)
    g.add_argument("--retrain-augment", default="light", choices=("none", "light", "strong"))
    g = ap.add_argument_group("weight sharing + trained quantization")
    g.add_argument("--bits", type=int, default=6, help="bits of the codebooks (all layers but expand 3x3)")
    g.add_argument("--bits-expand3x3", type=int, default=5)
    g.add_argument("--quant-steps", type=int, default=300, help="centroid fine-tuning steps (0: k-means only)")
    g.add_argument("--quant-lr", type=float, default=1e-4)
    g.add_argument("--quant-batch", type=int, default=128)
    g.add_argument(
        "--quant-amp",
        default="auto",
        choices=("auto", "none", "bf16"),
        help="auto: bf16 where the CPU has it natively (emulated bf16 is slower than fp32)",
    )
    g = ap.add_argument_group("evaluation")
    g.add_argument("--limit-test", type=int, default=None, help="score on a seeded subset of the test split")
    g.add_argument("--eval-batch", type=int, default=500)
    g = ap.add_argument_group("output-aware quantization to a byte budget")
    g.add_argument("--ratio", type=float, default=12.0, help="budget: the fp32 safetensors size / RATIO")
    g.add_argument("--calib-images", type=int, default=256, help="training-split images to calibrate on")
    add_tiny_option(ap)
    args = ap.parse_args()
    if args.tiny:
        args.tiny.mkdir(parents=True, exist_ok=True)
        args.data = str(tiny_archive(Path(args.data), args.tiny / "cifar10-tiny.tar", per_class=6))
        args.work, args.results_dir = str(args.tiny / "work"), str(args.tiny)
        args.weights, args.epochs, args.max_steps, args.batch_size = None, 1, 2, 8
        args.rounds, args.retrain_max_steps, args.quant_steps, args.quant_batch = 1, 1, 1, 8
        args.limit_test, args.eval_batch, args.calib_images, args.workers = 16, 8, 8, 0
        args.ratio = 3.0  # a 20 KB model cannot shrink 12x: the metadata alone is a few KB
    return args


def main() -> int:
    args = parse_args()
    if not args.data.lower().startswith("elpv") and not Path(args.data).exists():
        print(f"dataset not found: {args.data} (set SQUEEZENET_DATA)", file=sys.stderr)
        return 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    base = trained_base(args, work, times)
    road_a = output_aware_road(args, base, work, times)
    pruned = prune_and_retrain(args, base, work, times)
    shared = weight_sharing(args, base, pruned, times)
    scored = encode_and_score(shared["cm"], base, road_a["model"], work, times)
    times["total"] = time.perf_counter() - t_all
    payload = results(args, base, road_a, pruned, shared, scored, times)
    md = markdown(payload)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compress_trained.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out / "compress_trained.md").write_text(md)
    print(md)
    return 0


def trained_base(args, work: Path, times: dict) -> dict:
    """Stage 1: the trained model as an fp32 safetensors file (trained here unless --weights), the
    test split and its top-1 there."""
    t0 = time.perf_counter()
    if args.weights:
        fp32_path = Path(args.weights)
        trained_by = provenance(fp32_path)
    else:
        fp32_path = train_base(args, work)
        trained_by = "this run"
    times["train"] = time.perf_counter() - t0
    loaded = load_weights(fp32_path)
    if fp32_path.suffix != ".safetensors" or any(v.dtype != torch.float32 for v in loaded.state_dict.values()):
        fp32_path = write_safetensors(
            LoadedWeights(loaded.info, {k: v.float() for k, v in loaded.state_dict.items()}), work / "fp32.safetensors"
        )
    fp32_bytes = fp32_path.stat().st_size
    info = loaded.info
    t0 = time.perf_counter()
    tests = test_loader(args.data, info, args.eval_batch, args.workers, limit=args.limit_test, seed=args.seed)
    trained_eval = timed_top1(fp32_path, tests, times, "eval_trained", t0)
    print(f"trained: {pct(trained_eval['top1'])} on {trained_eval['n']} test images, {fp32_bytes:,} bytes")
    return {"path": fp32_path, "trained_by": trained_by, "bytes": fp32_bytes, "info": info, "tests": tests,
            "eval": trained_eval}  # fmt: skip


def output_aware_road(args, base: dict, work: Path, times: dict) -> dict:
    """Road A: output-aware quantization to a byte budget, calibrated on training images (no labels)."""
    t0 = time.perf_counter()
    info, tests = base["info"], base["tests"]
    trained_model = build_model_from_weights(base["path"]).eval()
    budget = int(base["bytes"] / args.ratio)
    calib = calibration_images(args.data, info, args.calib_images, args.seed)
    config = CompressionConfig(method=OUTPUT_AWARE, max_bytes=budget, prune=True)
    cm = compress(base["path"], config, calibration=calib)
    path = work / "output_aware.sqz"
    cm.save(path)
    times["output_aware"] = time.perf_counter() - t0
    model = build_model_from_weights(path).eval()
    scores = top1(model, tests)
    fidelity = compare(model, trained_model, tests, info.num_classes).to_dict()
    size = path.stat().st_size
    print(f"output-aware: {size:,} bytes ({base['bytes'] / size:.2f}x), agreement "
          f"{pct(fidelity['top1_agreement'])}, top-1 {pct(scores['top1'])}")  # fmt: skip
    return {"model": trained_model, "budget": budget, "calibration_images": len(calib), "cm": cm, "eval": scores,
            "fidelity": fidelity, "bytes": size}  # fmt: skip


def prune_and_retrain(args, base: dict, work: Path, times: dict) -> dict:
    """Road B, stage 2: magnitude pruning in rounds, each retrained with the masks fixed."""
    t0 = time.perf_counter()
    info = base["info"]
    model = build_model_from_weights(base["path"])
    densities = densities_for(model.state_dict(), args.density)
    rounds_log: list[dict] = []
    masks = iterative_prune(model, densities, retrain_fn(args, work, info, rounds_log), rounds=args.rounds)
    path = write_safetensors(
        LoadedWeights(info, {k: v.detach().clone() for k, v in model.state_dict().items()}),
        work / "pruned.safetensors",
    )
    times["prune_retrain"] = time.perf_counter() - t0
    scores = timed_top1(path, base["tests"], times, "eval_pruned", time.perf_counter())
    print(f"pruned + retrained: {pct(scores['top1'])}")
    return {"model": model, "densities": densities, "rounds": rounds_log, "masks": masks, "path": path,
            "eval": scores}  # fmt: skip


def weight_sharing(args, base: dict, pruned: dict, times: dict) -> dict:
    """Road B, stage 3: k-means weight sharing of the pruned weights, then trained quantization."""
    t0 = time.perf_counter()
    bits = bits_for(pruned["model"].state_dict(), args.bits, args.bits_expand3x3)
    config = CompressionConfig(bits=bits, densities=None, method=NEAREST)  # None: keep the pruned zeros
    source = build_model_from_weights(pruned["path"])
    losses: list[float] = []
    if args.quant_steps > 0:
        info = base["info"]
        batches = LabelledBatches(args.data, info, args.quant_batch, args.workers, args.retrain_augment, args.seed)
        # cache_enabled=False: train_codebooks writes the weights in place between forwards, and
        # autocast's cache would keep feeding the first step's bf16 copies (the loss would not move).
        amp = (
            torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
            if args.quant_amp == "bf16" or (args.quant_amp == "auto" and cpu_has_native_bf16())
            else contextlib.nullcontext()
        )
        with amp:
            cm = compress(
                source, config, data=batches, steps=args.quant_steps, lr=args.quant_lr,
                on_step=lambda s, loss: losses.append(loss),
            )  # fmt: skip
    else:
        cm = compress(source, config)
    loss = {"first": losses[0], "last_10_mean": sum(losses[-10:]) / len(losses[-10:])} if losses else {}
    times["quantize"] = time.perf_counter() - t0
    return {"cm": cm, "config": config, "bits": bits, "loss": loss}


def encode_and_score(cm, base: dict, trained_model, work: Path, times: dict) -> dict:
    """Road B, stage 4: entropy coding into a .sqz file, reloaded and scored."""
    t0 = time.perf_counter()
    path = work / "compressed.sqz"
    report = cm.save(path)
    times["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reloaded = build_model_from_weights(path)
    scores = top1(reloaded, base["tests"])
    fidelity = compare(reloaded.eval(), trained_model, base["tests"], base["info"].num_classes).to_dict()
    times["eval_compressed"] = time.perf_counter() - t0
    return {"report": report, "bytes": path.stat().st_size, "model": reloaded, "eval": scores, "fidelity": fidelity}


def results(args, base: dict, road_a: dict, pruned: dict, shared: dict, scored: dict, times: dict) -> dict:
    """The JSON record: both roads, the targets they answer, and every setting."""
    state = scored["model"].state_dict()  # the reloaded weights keep the masks
    leaked = sum(int(((state[k] != 0) & ~m).sum()) for k, m in pruned["masks"].items())
    ratio = base["bytes"] / scored["bytes"]
    lost = 100 * (base["eval"]["top1"] - scored["eval"]["top1"])
    oa_ratio = base["bytes"] / road_a["bytes"]
    agreement = road_a["fidelity"]["top1_agreement"]
    targets = {
        f"A (output-aware): >= {args.ratio:g}x smaller": {"value": round(oa_ratio, 2), "met": oa_ratio >= args.ratio},
        "A (output-aware): top-1 agreement >= 98 %": {"value": round(100 * agreement, 2), "met": agreement >= 0.98},
        "B (pruning + retraining): ratio >= 10x": {"value": round(ratio, 2), "met": ratio >= 10},
        "B (pruning + retraining): top-1 lost <= 0.5 points": {"value": round(lost, 2), "met": lost <= 0.5},
    }
    report = scored["report"]
    return {
        "benchmark": f"Deep Compression of a SqueezeNet trained by this project ({args.data})",
        "data": args.data,
        "weights": str(base["path"]),
        "trained_by": base["trained_by"],
        "test_images": base["eval"]["n"],
        "test_subset": args.limit_test,
        "trained": base["eval"],
        "pruned_retrained": pruned["eval"],
        "compressed": scored["eval"],
        "compressed_fidelity": scored["fidelity"],
        "output_aware": {
            "budget": road_a["budget"],
            "bytes": road_a["bytes"],
            "ratio": round(oa_ratio, 3),
            "calibration_images": road_a["calibration_images"],
            "test": road_a["eval"],
            "fidelity": road_a["fidelity"],
            "notes": road_a["cm"].notes,
        },
        "points_lost": round(lost, 3),
        "fp32_safetensors_bytes": base["bytes"],
        "sqz_bytes": scored["bytes"],
        "ratio": round(ratio, 3),
        "weights_total": sum(state[k].numel() for k in prunable(state)),
        "weights_nonzero": sum(int((state[k] != 0).sum()) for k in prunable(state)),
        "pruned_weights_nonzero_in_sqz": leaked,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "settings": settings(args, pruned, shared),
        "prune_rounds": pruned["rounds"],
        "trained_quantization_loss": shared["loss"],
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "machine": machine(),
        "argv": " ".join(sys.argv[1:]),
        "tables": paper_tables(shared["cm"], report),
        "sqz_report_total": report.get("total"),
        "tiny": bool(args.tiny),
    }


def settings(args, pruned: dict, shared: dict) -> dict:
    return {
        "density_preset": args.density,
        "densities": {k: round(v, 4) for k, v in pruned["densities"].items()},
        "bits": shared["bits"],
        "rounds": args.rounds,
        "retrain_epochs_per_round": args.retrain_epochs,
        "retrain_max_steps": args.retrain_max_steps,
        "retrain_lr": args.retrain_lr,
        "retrain_ema": args.retrain_ema,
        "retrain_augment": args.retrain_augment,
        "retrain_steps_total": sum(r["steps"] for r in pruned["rounds"]),
        "quant_steps": args.quant_steps,
        "quant_lr": args.quant_lr,
        "quant_batch": args.quant_batch,
        "quant_amp": args.quant_amp,
        "base_training": None if args.weights else {k: getattr(args, k) for k in BASE_KEYS},
        "batch_size": args.batch_size,
        "compression_config": shared["config"].to_dict(),
        "seed": args.seed,
    }


def calibration_images(data: str, info, count: int, seed: int) -> torch.Tensor:
    """``count`` images of the training split (seeded), preprocessed for evaluation: what
    ``squeezenet compress --data`` would read from a folder of them. Their labels are not used."""
    pre = info.preprocessing
    ds = open_dataset(data, "train", classes=info.classes).with_transform(build_transform(pre), pre.image_mode)
    g = torch.Generator().manual_seed(seed)
    ds = ds.subset(sorted(torch.randperm(len(ds), generator=g)[:count].tolist()))
    loader = DataLoader(ds, batch_size=32, collate_fn=collate_skipping_bad)
    return torch.cat([b.images for b in loader if b.paths])


def markdown(payload: dict) -> str:
    """The results page, from the recorded JSON alone (tests/test_benchmark_scripts.py re-renders it)."""
    return render_markdown(payload, payload["tables"])


if __name__ == "__main__":
    sys.exit(main())
