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
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, RESULTS, add_tiny_option, machine, test_loader, tiny_archive
from bench_train_cifar10 import CIFAR_SPEC, cifar_config
from squeezenet.compression import CompressionConfig, compress, iterative_prune, paper_tables
from squeezenet.compression.pruning import prunable, resolve_densities
from squeezenet.compression.report import markdown
from squeezenet.data.folders import collate_skipping_bad
from squeezenet.data.preprocessing import build_transform
from squeezenet.data.sources import open_dataset
from squeezenet.inference.fidelity import compare
from squeezenet.models.spec import FireSpec
from squeezenet.training import TrainConfig, train
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


def layer_kind(name: str, names: list[str]) -> str:
    for kind in ("squeeze", "expand1x1", "expand3x3"):
        if f".{kind}." in name:
            return kind
    return "classifier" if name == names[-1] else "stem"


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


# --- engine hooks -------------------------------------------------------------------------


def deadline_hook(minutes: float | None):
    """Stop the run after ``minutes`` (the engine finishes the epoch's evaluation and export)."""
    if not minutes:
        return None
    end = time.monotonic() + minutes * 60

    def hook(ctx) -> None:
        if time.monotonic() > end:
            ctx.stopped = True

    return hook


def mask_hook(masks: dict[str, torch.Tensor]):
    """Fixed masks: zero the pruned weights after every optimiser step (model and EMA copy)."""
    cache: dict = {}

    @torch.no_grad()
    def hook(ctx) -> None:
        modules = [ctx.model] + ([ctx.ema.module] if ctx.ema is not None else [])
        for module in modules:
            params = dict(module.named_parameters())
            for k, m in masks.items():
                p = params[k]
                key = (k, p.device, p.dtype)
                if key not in cache:
                    cache[key] = m.to(device=p.device, dtype=p.dtype)
                p.mul_(cache[key])

    return hook


def chain(*hooks):
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None

    def hook(ctx) -> None:
        for h in hooks:
            h(ctx)

    return hook


# --- data and evaluation ------------------------------------------------------------------


def top1(model, loader) -> dict:
    model = model.to(memory_format=torch.channels_last)
    r = evaluate(model, loader, torch.device("cpu"), model.num_classes, None, True)
    return {"top1": r["top1"], "top5": r["top5"], "n": r["n"], "skipped": r["skipped"]}


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


# --- stages -------------------------------------------------------------------------------


def train_base(args, work: Path) -> Path:
    out = work / "base"
    if (out / "last.pt").exists():
        raise SystemExit(
            f"{out} already holds a run: pass --weights {out / 'last.safetensors'} to reuse it, "
            "or remove the folder / choose another --work"
        )
    cfg = cifar_config(
        augment=args.augment,
        data=args.data,
        output=str(out),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        amp=args.amp,
        max_steps=args.max_steps,
        seed=args.seed,
        **({"spec": TINY_SPEC.to_dict()} if args.tiny else {}),
    )
    result = train(cfg, on_step=deadline_hook(args.max_minutes))
    print(f"base training: {result.steps} steps, {result.epochs} epoch(s)", file=sys.stderr)
    return result.last_weights


def retrain_fn(args, work: Path, info, log: list):
    """``iterative_prune``'s train_fn: a fine-tuning run of the engine from the pruned weights."""
    counter = [0]

    def train_fn(model, keeper) -> None:
        counter[0] += 1
        rdir = work / f"prune_round{counter[0]}"
        if rdir.exists():
            shutil.rmtree(rdir)  # this script's own scratch folder
        rdir.mkdir(parents=True)
        pruned = rdir / "pruned.safetensors"
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        write_safetensors(LoadedWeights(info, state), pruned)
        cfg = TrainConfig(
            data=args.data,
            output=str(rdir / "run"),
            weights=str(pruned),
            recipe="modern",
            epochs=args.retrain_epochs,
            batch_size=args.batch_size,
            lr=args.retrain_lr,
            weight_decay=5e-4,
            warmup_epochs=0,
            ema_decay=args.retrain_ema,
            dropout=0.1,
            image_size=None,  # the trained model's own input size (its weights carry it)
            augment=args.retrain_augment,
            workers=args.workers,
            amp=args.amp,
            max_steps=args.retrain_max_steps,
            seed=args.seed,  # initialisation and order only: held-out images never move between rounds
        )
        t0 = time.perf_counter()
        result = train(cfg, on_step=mask_hook(keeper.masks))
        retrained = load_weights(result.last_weights).state_dict
        model.load_state_dict(retrained)
        keeper.step()
        density = {k: float((retrained[k] != 0).float().mean()) for k in keeper.masks}
        leaked = sum(int(((retrained[k] != 0) & ~m).sum()) for k, m in keeper.masks.items())
        log.append(
            {
                "round": counter[0],
                "steps": result.steps,
                "seconds": round(time.perf_counter() - t0, 1),
                "val_top1_engine": result.last.get("val_top1"),
                "min_density": round(min(density.values()), 4) if density else 1.0,
                "pruned_weights_nonzero_after_retrain": leaked,
            }
        )
        print(f"prune round {counter[0]}: {json.dumps(log[-1])}", file=sys.stderr)

    return train_fn


# --tiny: the CIFAR layout at a tenth of its width, so that every stage runs in seconds
TINY_SPEC = replace(CIFAR_SPEC, stem_channels=16, fires=tuple(FireSpec(4, 8, 8) for _ in CIFAR_SPEC.fires))
BASE_KEYS = ("epochs", "max_steps", "max_minutes", "lr", "augment", "batch_size", "amp")


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def main() -> int:
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
    if not args.data.lower().startswith("elpv") and not Path(args.data).exists():
        print(f"dataset not found: {args.data} (set SQUEEZENET_DATA)", file=sys.stderr)
        return 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. the trained model and its fp32 safetensors file
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

    # 2. its test top-1
    t0 = time.perf_counter()
    tests = test_loader(args.data, info, args.eval_batch, args.workers, limit=args.limit_test, seed=args.seed)
    trained_eval = top1(build_model_from_weights(fp32_path), tests)
    times["eval_trained"] = time.perf_counter() - t0
    print(f"trained: {pct(trained_eval['top1'])} on {trained_eval['n']} test images, {fp32_bytes:,} bytes")

    # A. output-aware quantization to a byte budget, calibrated on training images (no labels)
    t0 = time.perf_counter()
    trained_model = build_model_from_weights(fp32_path).eval()
    budget = int(fp32_bytes / args.ratio)
    calib = calibration_images(args.data, info, args.calib_images, args.seed)
    oa_config = CompressionConfig(bits=8, method="output-aware", max_bytes=budget, prune=True)
    oa_cm = compress(fp32_path, oa_config, calibration=calib)
    oa_path = work / "output_aware.sqz"
    oa_cm.save(oa_path)
    times["output_aware"] = time.perf_counter() - t0
    oa_model = build_model_from_weights(oa_path).eval()
    oa_eval = top1(oa_model, tests)
    oa_fidelity = compare(oa_model, trained_model, tests, info.num_classes).to_dict()
    oa_bytes = oa_path.stat().st_size
    print(f"output-aware: {oa_bytes:,} bytes ({fp32_bytes / oa_bytes:.2f}x), agreement "
          f"{pct(oa_fidelity['top1_agreement'])}, top-1 {pct(oa_eval['top1'])}")  # fmt: skip

    # B. prune + retrain with fixed masks
    t0 = time.perf_counter()
    model = build_model_from_weights(fp32_path)
    densities = densities_for(model.state_dict(), args.density)
    rounds_log: list[dict] = []
    masks = iterative_prune(model, densities, retrain_fn(args, work, info, rounds_log), rounds=args.rounds)
    pruned_path = write_safetensors(
        LoadedWeights(info, {k: v.detach().clone() for k, v in model.state_dict().items()}),
        work / "pruned.safetensors",
    )
    times["prune_retrain"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pruned_eval = top1(build_model_from_weights(pruned_path), tests)
    times["eval_pruned"] = time.perf_counter() - t0
    print(f"pruned + retrained: {pct(pruned_eval['top1'])}")

    # 4. k-means weight sharing + trained quantization
    t0 = time.perf_counter()
    bits = bits_for(model.state_dict(), args.bits, args.bits_expand3x3)
    config = CompressionConfig(bits=bits, densities=None)  # None: keep the pruned zeros
    source = build_model_from_weights(pruned_path)
    if args.quant_steps > 0:
        batches = LabelledBatches(args.data, info, args.quant_batch, args.workers, args.retrain_augment, args.seed)
        losses: list[float] = []
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
        quant_loss = {"first": losses[0], "last_10_mean": sum(losses[-10:]) / len(losses[-10:])} if losses else {}
    else:
        cm = compress(source, config)
        quant_loss = {}
    times["quantize"] = time.perf_counter() - t0

    # 5. entropy coding into .sqz, reload, score
    t0 = time.perf_counter()
    sqz_path = work / "compressed.sqz"
    report = cm.save(sqz_path)
    sqz_bytes = sqz_path.stat().st_size
    times["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reloaded = build_model_from_weights(sqz_path)
    compressed_eval = top1(reloaded, tests)
    dc_fidelity = compare(reloaded.eval(), trained_model, tests, info.num_classes).to_dict()
    times["eval_compressed"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all

    # consistency: the reloaded weights keep the masks
    state = reloaded.state_dict()
    leaked = sum(int(((state[k] != 0) & ~m).sum()) for k, m in masks.items())
    total_w = sum(state[k].numel() for k in prunable(state))
    nonzero_w = sum(int((state[k] != 0).sum()) for k in prunable(state))

    ratio = fp32_bytes / sqz_bytes
    lost = 100 * (trained_eval["top1"] - compressed_eval["top1"])
    oa_ratio = fp32_bytes / oa_bytes
    targets = {
        f"A (output-aware): >= {args.ratio:g}x smaller": {"value": round(oa_ratio, 2), "met": oa_ratio >= args.ratio},
        "A (output-aware): top-1 agreement >= 98 %": {
            "value": round(100 * oa_fidelity["top1_agreement"], 2),
            "met": oa_fidelity["top1_agreement"] >= 0.98,
        },
        "B (pruning + retraining): ratio >= 10x": {"value": round(ratio, 2), "met": ratio >= 10},
        "B (pruning + retraining): top-1 lost <= 0.5 points": {"value": round(lost, 2), "met": lost <= 0.5},
    }
    tables = paper_tables(cm, report)
    retrain_steps = sum(r["steps"] for r in rounds_log)
    payload = {
        "benchmark": f"Deep Compression of a SqueezeNet trained by this project ({args.data})",
        "data": args.data,
        "weights": str(fp32_path),
        "trained_by": trained_by,
        "test_images": trained_eval["n"],
        "test_subset": args.limit_test,
        "trained": trained_eval,
        "pruned_retrained": pruned_eval,
        "compressed": compressed_eval,
        "compressed_fidelity": dc_fidelity,
        "output_aware": {
            "budget": budget,
            "bytes": oa_bytes,
            "ratio": round(oa_ratio, 3),
            "calibration_images": len(calib),
            "test": oa_eval,
            "fidelity": oa_fidelity,
            "notes": oa_cm.notes,
        },
        "points_lost": round(lost, 3),
        "fp32_safetensors_bytes": fp32_bytes,
        "sqz_bytes": sqz_bytes,
        "ratio": round(ratio, 3),
        "weights_total": total_w,
        "weights_nonzero": nonzero_w,
        "pruned_weights_nonzero_in_sqz": leaked,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "settings": {
            "density_preset": args.density,
            "densities": {k: round(v, 4) for k, v in densities.items()},
            "bits": bits,
            "rounds": args.rounds,
            "retrain_epochs_per_round": args.retrain_epochs,
            "retrain_max_steps": args.retrain_max_steps,
            "retrain_lr": args.retrain_lr,
            "retrain_ema": args.retrain_ema,
            "retrain_augment": args.retrain_augment,
            "retrain_steps_total": retrain_steps,
            "quant_steps": args.quant_steps,
            "quant_lr": args.quant_lr,
            "quant_batch": args.quant_batch,
            "quant_amp": args.quant_amp,
            "base_training": None if args.weights else {k: getattr(args, k) for k in BASE_KEYS},
            "batch_size": args.batch_size,
            "compression_config": config.to_dict(),
            "seed": args.seed,
        },
        "prune_rounds": rounds_log,
        "trained_quantization_loss": quant_loss,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "machine": machine(),
        "tables": tables,
        "sqz_report_total": report.get("total"),
        "tiny": bool(args.tiny),
    }
    md = render_markdown(payload, tables)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compress_trained.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out / "compress_trained.md").write_text(md)
    print(md)
    return 0


def calibration_images(data: str, info, count: int, seed: int) -> torch.Tensor:
    """``count`` images of the training split (seeded), preprocessed for evaluation: what
    ``squeezenet compress --data`` would read from a folder of them. Their labels are not used."""
    pre = info.preprocessing
    ds = open_dataset(data, "train", classes=info.classes).with_transform(build_transform(pre), pre.image_mode)
    g = torch.Generator().manual_seed(seed)
    ds = ds.subset(sorted(torch.randperm(len(ds), generator=g)[:count].tolist()))
    loader = DataLoader(ds, batch_size=32, collate_fn=collate_skipping_bad)
    return torch.cat([b.images for b in loader if b.paths])


def render_markdown(p: dict, tables: dict) -> str:
    s = p["settings"]
    yes = {True: "met", False: "NOT met"}
    cap = "" if s["retrain_max_steps"] is None else f" (at most {s['retrain_max_steps']} steps)"
    subset = f" (seeded subset of {p['test_subset']})" if p["test_subset"] else ""
    lines = [
        f"# Deep Compression of a trained SqueezeNet ({p.get('data', 'CIFAR-10')})",
        "",
        f"Command: `python benchmarks/bench_compress_trained.py {' '.join(sys.argv[1:])}`",
        "",
        f"Weights: `{p['weights']}` (trained by {p['trained_by']}). Test images: {p['test_images']:,}{subset}.",
        "",
        *_road_a(p),
        "| target | value | status |",
        "|---|---|---|",
    ]
    for name, t in p["targets"].items():
        lines.append(f"| {name} | {t['value']} | {yes[t['met']]} |")
    lines += [
        "",
        "Road B: magnitude pruning in "
        f"{s['rounds']} round(s) with retraining through the training engine (masks fixed), per-layer k-means "
        "weight sharing, trained quantization, entropy coding into `.sqz`; the `.sqz` is reloaded with "
        "`build_model_from_weights` and scored.",
        "",
        "| | test top-1 | bytes |",
        "|---|---|---|",
        f"| trained (fp32 safetensors) | {pct(p['trained']['top1'])} | {p['fp32_safetensors_bytes']:,} |",
        f"| pruned + retrained (fp32) | {pct(p['pruned_retrained']['top1'])} | |",
        f"| compressed `.sqz`, reloaded | {pct(p['compressed']['top1'])} | {p['sqz_bytes']:,} |",
        "",
        f"Ratio {p['ratio']:.2f}x; top-1 points lost {p['points_lost']:+.2f} (negative: a gain); "
        f"{p['weights_nonzero']:,} of {p['weights_total']:,} conv weights non-zero "
        f"({p['weights_nonzero'] / max(1, p['weights_total']):.1%}); pruned weights non-zero after reload: "
        f"{p['pruned_weights_nonzero_in_sqz']}.",
    ]
    lines += [
        "",
        f"Retraining added {s['retrain_steps_total']:,} optimiser steps (batch {s['batch_size']}) and trained "
        f"quantization {s['quant_steps']} steps (batch {s['quant_batch']}) after the base model's training; a "
        "short, under-trained base run can gain accuracy from them, so read the points lost with that in mind.",
        "",
        "<!-- details -->",
        "## Settings",
        "",
        f"- densities (preset `{s['density_preset']}`): {_kinds(s['densities'])}",
        f"- bits: {sorted(set(s['bits'].values()))} (expand 3x3: {_e3_bits(s['bits'])})",
        f"- retraining: {s['retrain_epochs_per_round']} epoch(s) per round{cap}, "
        f"lr {s['retrain_lr']}, EMA {s['retrain_ema']}, augment {s['retrain_augment']}",
        f"- trained quantization: {s['quant_steps']} steps, Adam lr {s['quant_lr']}, autocast {s['quant_amp']}",
        f"- base training: {json.dumps(s['base_training'])}",
        "",
        "## Wall time per stage (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in p["seconds"].items()]
    m = p["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"Python {m['python']}, {m['date']}.",
        "",
        "## Per layer (paper Table 1 style) and per stage (Table 2 style)",
        "",
        markdown(tables),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _road_a(p: dict) -> list[str]:
    a, t = p["output_aware"], p["trained"]
    f = a["fidelity"]
    return [
        f"Test split: {p['test_images']:,} images, scored against the trained model's own predictions (agreement,"
        " mean KL) and the labels. Nothing below was chosen or calibrated on a test image.",
        "",
        "| road | bytes | vs fp32 | top-1 agreement | mean KL | test top-1 | training after the base run |",
        "|---|---|---|---|---|---|---|",
        f"| trained model (fp32 safetensors) | {p['fp32_safetensors_bytes']:,} | 1x | 100 % | 0 | {pct(t['top1'])} | |",
        f"| A. output-aware, `--max-bytes` fp32/{p['fp32_safetensors_bytes'] / a['budget']:.0f}, calibrated on "
        f"{a['calibration_images']} training images | {a['bytes']:,} | {a['ratio']:.2f}x | "
        f"{pct(f['top1_agreement'])} | {f['mean_kl']:.4f} | {pct(a['test']['top1'])} | none |",
        f"| B. pruning + retraining + trained quantization | {p['sqz_bytes']:,} | {p['ratio']:.2f}x | "
        f"{pct(p['compressed_fidelity']['top1_agreement'])} | {p['compressed_fidelity']['mean_kl']:.4f} | "
        f"{pct(p['compressed']['top1'])} | {p['settings']['retrain_steps_total']:,} + "
        f"{p['settings']['quant_steps']} steps |",
        "",
    ]


def _kinds(densities: dict[str, float]) -> str:
    """'stem 90 %, squeeze 60 %, ...' when every layer of a kind has one density, else per layer."""
    names = list(densities)
    kinds: dict[str, set] = {}
    for k, v in densities.items():
        kinds.setdefault(layer_kind(k, names), set()).add(v)
    if all(len(v) == 1 for v in kinds.values()):
        return ", ".join(f"{k} {next(iter(v)):.0%}" for k, v in kinds.items())
    return ", ".join(f"{k} {v:.1%}" for k, v in densities.items())


def _e3_bits(bits: dict[str, int]) -> str:
    e3 = sorted({b for k, b in bits.items() if ".expand3x3." in k})
    return ", ".join(map(str, e3)) or "n/a"


if __name__ == "__main__":
    sys.exit(main())
