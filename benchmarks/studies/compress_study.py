"""Why a tight byte budget misses its agreement target, and what changing the per-layer estimate gives: half A only.

    python benchmarks/studies/compress_study.py             # the record (hours on 2 cores)
    python benchmarks/studies/compress_study.py --tiny OUT  # a smoke run on a tiny model

A study, not a product benchmark: it varies parts of the output-aware method
(``squeezenet.compression``'s public parts) and records what it found in
``benchmarks/studies/results/compress_study.md``; docs/compression.md keeps the conclusions.

`squeezenet compress --max-bytes 400000` keeps 95.6 % of the release's top-1 predictions on
half B but scores a top-1 below the release's (``compress.md``). This script looks for what
limits it without touching half B (``bench_compress`` splits imagenet-samples by class; half A
chose settings and calibrates, half B only reports):

1. **each layer alone** (``compress`` on half A as the command runs it: every fifth image held
   back): the fitted file's layer put into the release, the KL divergence from the release that
   it adds, measured on 50 calibration images and on the 50 held-back ones, against the
   second-order estimate the byte allocation used;
2. **five-fold cross-validation on half A**: each fifth held back in turn, the other four fifths
   calibrate; variants of the estimate (conv10's own curvature, each layer's measured KL or
   gradient coherence, mirrored calibration images) each scored on the same 250 images, paired
   (per-image KL differences with a bootstrap interval, predictions that flip);
3. **distillation by function matching** (fold 4): the command's fit, then its codebooks and
   biases trained to match the release on random crops, flips and mixes of the calibration
   images (teacher and student see the same view: Beyer et al. 2022, "Knowledge distillation:
   a good teacher is patient and consistent"); the KL on calibration and held-back images as
   training goes on says whether more passes over the same images can close the gap.

The variants keep everything else of the command (budget, ladder, pruning, bias correction).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' helpers

import half_a

from _common import machine, write_results
from bench_compress import read
from squeezenet.compression import (
    OWN_CURVATURE,
    CompressedModel,
    CompressionConfig,
    calibration_copy,
    collect_stats,
    compress,
    conv_layers,
    train_codebooks,
)
from squeezenet.compression.choices import OUTPUT_AWARE

BUDGETS = (400_000,)
# variant -> how it differs from the command: prepare_layer settings for the last layer (conv10)
# and for every other layer ("coherence": "gradient" takes each layer's measured gradient
# coherence), "allocation": "measured" (each layer's candidates weighed by its KL measured alone
# on calibration images over its estimate), "stats": "mirrored" (calibration images and their
# mirror images). Earlier variants (conv10 dampened 100x more, rows weighted alike, 20 % and 80 %
# own curvature) are in this file's history and docs/compression.md.
VARIANTS: dict[str, dict] = {
    f"as `compress` does (conv10 rows: {OWN_CURVATURE:.0%} their own curvature)": {},
    "conv10: the shared curvature only (`compress` before)": {"last": {"own_blend": 0.0}},
    "bytes weighed by each layer's KL measured alone (calibration images)": {"allocation": "measured"},
    "every layer's image-mean error weighed by its gradient coherence": {"other": {"coherence": "gradient"}},
    "calibration images and their mirror images": {"stats": "mirrored"},
}

# distillation (part 3): steps, KL measured every so many steps, Adam's rate, images per step
DISTILL = {"steps": 200, "every": 50, "lr": 1e-5, "batch": 32}
DISTILL_TINY = {"steps": 4, "every": 2, "lr": 1e-5, "batch": 4}
CROP_SCALE = (0.3, 1.0)  # share of the image a random crop keeps


def fit_variant(source, reference, stats: dict, kept: torch.Tensor, coherence: dict, budget: int,
                variant: dict) -> tuple[CompressedModel, dict]:  # fmt: skip
    """(the file, layer -> (price, pruned)) of ``half_a.fit_picks``."""
    fit = half_a.fit_picks(source, reference, stats, kept, coherence, budget, variant)
    picks = {k: (c.lam, c.prune) for k, c in fit.picked.items()}
    return fit.compressed(half_a.with_picked(fit.tensors, fit.picked)), picks


def gradient_coherence(reference, images: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Per layer, ``(E[(sum_p g_p)^2] / E[sum_p g_p^2] - 1) / (positions - 1)`` of the output
    gradients (log-likelihood of a class sampled from the model's prediction, as the Fisher is
    estimated): 1 when every position has the same gradient (conv10 before global pooling), 0
    when they are independent. Used as ``prepare_layer``'s coherence, it weighs the error that
    is the same at every position of an image (the between-image covariance) by how much of the
    gradient survives summing over positions."""
    model = calibration_copy(reference)  # out-of-place ReLUs: the outputs' gradient hooks need them
    sums: dict[str, list[float]] = {}

    def forward_hook(key):
        def hook(module, inputs, output):
            def on_grad(g):
                g = g.double()
                s = sums.setdefault(key, [0.0, 0.0, 1.0])
                s[0] += float((g**2).sum())
                s[1] += float((g.sum((2, 3)) ** 2).sum())
                s[2] = float(g.shape[2] * g.shape[3])

            output.register_hook(on_grad)

        return hook

    handles = [m.register_forward_hook(forward_hook(k)) for k, m in conv_layers(model).items()]
    gen = torch.Generator().manual_seed(seed)
    try:
        for batch in half_a.batches_of(images):
            logits = model(batch.clone().requires_grad_(True))
            sampled = torch.multinomial(logits.detach().softmax(1), 1, generator=gen)[:, 0]
            F.cross_entropy(logits, sampled, reduction="sum").backward()
    finally:
        for h in handles:
            h.remove()
    return {k: float(np.clip((b / a - 1) / (p - 1), 0.0, 1.0)) if a > 0 and p > 1 else 0.0
            for k, (a, b, p) in sums.items()}  # fmt: skip


def command_fit(source, images: torch.Tensor, budget: int):
    """``compress --data`` on half A as the command runs it (fold 4 held back): the CompressedModel."""
    kept, _ = half_a.split(images, half_a.FOLDS - 1)
    config = CompressionConfig(method=OUTPUT_AWARE, max_bytes=budget, prune=True)
    return compress(source, config, calibration=kept)


def layers_alone(reference, cm, images: torch.Tensor) -> tuple[list[dict], dict]:
    """Each layer of the command's fit (fold 4) alone in the release: predicted and measured KL."""
    kept, held = half_a.split(images, half_a.FOLDS - 1)
    fitted = cm.build_model().state_dict()
    seen = kept[: len(held)]
    rows = []
    for key, note in cm.layers.items():
        model = half_a.layer_alone(reference, key, fitted[key], fitted[key[: -len("weight")] + "bias"])
        rows.append({
            "layer": key.removesuffix(".weight"), "stored": note["stored"], "predicted_kl": note["predicted_kl"],
            "calibration_kl": float(half_a.kl_per_image(reference, model, seen)[0].mean()),
            "held_back_kl": float(half_a.kl_per_image(reference, model, images[held])[0].mean()),
        })  # fmt: skip
    return rows, {k: (n["rate"], n["pruning"]) for k, n in cm.layers.items()}


def cross_validate(reference, source, images: torch.Tensor, budget: int) -> tuple[dict, dict, dict]:
    """variant -> per-image KL and agreement over the folds; the fold-4 picks of each variant;
    and each layer's gradient coherence on fold 4's calibration images."""
    kl = {v: np.zeros(len(images)) for v in VARIANTS}
    agree = {v: np.zeros(len(images)) for v in VARIANTS}
    picks = {}
    layers = list(conv_layers(reference))
    for fold in range(half_a.FOLDS):
        kept, held = half_a.split(images, fold)
        coherence = gradient_coherence(reference, kept)
        stats = {}
        for name, variant in VARIANTS.items():
            kind = variant.get("stats", "plain")
            if kind not in stats:
                seen = torch.cat([kept, kept.flip(-1)]) if kind == "mirrored" else kept
                found = collect_stats(reference, half_a.batches_of(seen), fisher=True, row_curvature=layers[-1])
                stats[kind] = {k: found[k] for k in layers}
            fitted, chosen = fit_variant(source, reference, stats[kind], kept, coherence, budget, variant)
            kl[name][held], agree[name][held] = half_a.kl_per_image(
                reference, fitted.build_model().eval(), images[held]
            )
            size = len(fitted.to_bytes())
            print(f"{budget:,} fold {fold} {name}: {size:,} B, KL {kl[name][held].mean():.4f}", flush=True)
            if fold == half_a.FOLDS - 1:
                picks[name] = chosen
    return {"kl": kl, "agree": agree}, picks, coherence  # the last fold's coherence: fold 4, the command's


def function_matching(wide: torch.Tensor, crop: int, batch: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """Endless batches of views of ``wide`` (preprocessed images, uncropped): a random crop of
    ``CROP_SCALE`` of the image resized to ``crop``, flipped half the time, mixed with another
    view by a uniform weight (mixup), so that 200 images give new inputs at every step."""
    torch.manual_seed(seed)  # the transforms draw from torch's global generator
    augment = T.Compose([T.RandomResizedCrop(crop, scale=CROP_SCALE, antialias=True), T.RandomHorizontalFlip()])
    mix = torch.distributions.Beta(1.0, 1.0)
    while True:
        views = torch.stack([augment(wide[i]) for i in torch.randint(len(wide), (batch,))])
        weight = mix.sample((batch, 1, 1, 1))
        yield weight * views + (1 - weight) * views[torch.randperm(batch)]


def distillation(reference, cm, images: torch.Tensor, wide: torch.Tensor, settings: dict) -> dict:
    """Part 3: the command's fit (fold 4) trained by function matching; KL as it goes."""
    kept, held = half_a.split(images, half_a.FOLDS - 1)
    wide_kept, _ = half_a.split(wide, half_a.FOLDS - 1)
    seen = kept[: len(held)]
    model = cm.build_model().eval()
    quantized = {k: cm.tensors[k] for k in cm.layers}

    def measure(step: int) -> dict:
        with torch.no_grad():
            held_kl, held_agree = half_a.kl_per_image(reference, model, images[held])
            seen_kl, _ = half_a.kl_per_image(reference, model, seen)
        row = {"step": step, "calibration_kl": float(seen_kl.mean()), "held_back_kl": float(held_kl.mean()),
               "held_back_agreement": float(held_agree.mean())}  # fmt: skip
        print(f"distillation step {step}: KL {row['calibration_kl']:.4f} calibration, "
              f"{row['held_back_kl']:.4f} held back", flush=True)  # fmt: skip
        return row

    trajectory = [measure(0)]

    def on_step(step: int, _loss: float) -> None:  # the codebooks this step used, the biases one update on
        if (step + 1) % settings["every"] == 0:
            trajectory.append(measure(step + 1))

    views = function_matching(wide_kept, images.shape[-1], settings["batch"])
    train_codebooks(model, quantized, views, steps=settings["steps"], lr=settings["lr"], teacher=reference,
                    temperature=1.0, biases=True, on_step=on_step)  # fmt: skip
    return {**settings, "crop_scale": list(CROP_SCALE), "calibration_images": len(kept),
            "measured_images": len(held), "trajectory": trajectory}  # fmt: skip


def layer_table(r: dict) -> list[str]:
    n = r["measured_images"]
    out = [
        f"Calibrated on {r['calibration_images']} images; measured on {n} of them and on the {n} held back. "
        f"The study's own fit of the command picks the same price and pruning as `compress` in "
        f"{r['same_picks']} of {len(r['layers'])} layers.",
        "",
        half_a.table_row(
            "layer",
            "stored",
            "predicted KL",
            "measured, calibration",
            "measured, held back",
            "held / predicted",
            "gradient coherence",
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("predicted_kl", "calibration_kl", "held_back_kl")
    for x in r["layers"]:
        ratio = x["held_back_kl"] / max(x["predicted_kl"], 1e-12)
        out.append(half_a.table_row(x["layer"], f"{x['stored']:,}", *(f"{x[k]:.5f}" for k in keys), f"{ratio:.1f}",
                        f"{x['gradient_coherence']:.3f}"))  # fmt: skip
    out.append(half_a.table_row("sum", "", *(f"{sum(x[k] for x in r['layers']):.5f}" for k in keys), "", ""))
    return out


def distillation_table(d: dict) -> list[str]:
    lo, hi = d["crop_scale"]
    out = [
        f"The command's fit, then its codebooks and biases trained (Adam, rate {d['lr']:g}, {d['batch']} views a step, "
        f"KL at temperature 1) to match the release on views of its {d['calibration_images']} calibration images: "
        f"random crops of {lo:.0%}-{hi:.0%} of the image, flips, pairs mixed by a uniform weight. KL measured on "
        f"{d['measured_images']} calibration images and the {d['measured_images']} held back.",
        "",
        half_a.table_row("step", "KL, calibration", "KL, held back", "agreement, held back"),
        "|---:|---:|---:|---:|",
    ]
    for t in d["trajectory"]:
        out.append(half_a.table_row(t["step"], f"{t['calibration_kl']:.4f}", f"{t['held_back_kl']:.4f}",
                        f"{t['held_back_agreement']:.1%}"))  # fmt: skip
    return out


def markdown(p: dict) -> str:
    lines = [
        *half_a.header(
            "A tight byte budget on half A: where the error comes from, what changing the estimate or distilling gives",
            __file__,
            p,
        ),
        f"Images: half A of `bench_compress`'s split only ({p['images']} images, one per class); half B is not read.",
        "",
    ]
    for budget, r in p["budgets"].items():
        lines += [f"## `--max-bytes {int(budget):,}`: five-fold cross-validation ({r['images']} images, paired)", ""]
        lines += [*half_a.variant_table(r), "", _layers_summary(r), ""]
        lines += [f"## `--max-bytes {int(budget):,}`: distillation by function matching (fold {half_a.FOLDS - 1})", ""]
        lines += [*distillation_table(r["distillation"]), ""]
    lines.append("<!-- details -->")
    for budget, r in p["budgets"].items():
        lines += [
            f"## `--max-bytes {int(budget):,}`: each layer alone (the command's fit, fold {half_a.FOLDS - 1})",
            "",
        ]
        lines += [*layer_table(r), ""]
    return "\n".join(lines)


def _layers_summary(r: dict) -> str:
    total = {k: sum(x[k] for x in r["layers"]) for k in ("predicted_kl", "calibration_kl", "held_back_kl")}
    last = r["layers"][-1]
    return (
        f"Each layer alone (fold {half_a.FOLDS - 1}, {r['measured_images']} images each): the estimates add up to KL "
        f"{total['predicted_kl']:.4f}, the layers measured alone to {total['calibration_kl']:.4f} on calibration "
        f"images and {total['held_back_kl']:.4f} on held-back ones; {last['layer']} alone: predicted "
        f"{last['predicted_kl']:.4f}, measured {last['calibration_kl']:.4f} / {last['held_back_kl']:.4f}."
    )


def uncropped(pre):
    """The preprocessing without its centre crop (the whole resized image), for random crops."""
    return dataclasses.replace(pre, crop=max(pre.resize) if isinstance(pre.resize, tuple) else pre.resize)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="*", default=list(BUDGETS), help="--max-bytes to study")
    run = half_a.start(ap)
    if run is None:
        return 1
    args, source, reference, paths, images = run
    tiny = args.tiny is not None
    wide, _ = read(paths, reference.weights_info, labelled=False, pre=uncropped(reference.weights_info.preprocessing))
    budgets = [half_a.tiny_budget(source)] if tiny else args.budgets
    results = {}
    for budget in budgets:
        cm = command_fit(source, images, budget)
        layers, command_picks = layers_alone(reference, cm, images)
        scores, picks, coherence = cross_validate(reference, source, images, budget)
        distilled = distillation(reference, cm, images, wide, DISTILL_TINY if tiny else DISTILL)
        base = next(iter(VARIANTS))
        kl, agree = scores["kl"], scores["agree"]
        variants = {name: half_a.paired(kl[base], agree[base], kl[name], agree[name]) for name in VARIANTS}
        same = sum(picks[base].get(k) == v for k, v in command_picks.items())
        for row in layers:
            row["gradient_coherence"] = coherence[row["layer"] + ".weight"]
        results[str(budget)] = {"layers": layers, "variants": variants, "images": len(images), "same_picks": same,
                                "distillation": distilled,
                                "calibration_images": len(images) - len(images) // half_a.FOLDS,
                                "measured_images": len(range(half_a.FOLDS - 1, len(images), half_a.FOLDS))}  # fmt: skip
    payload = {"source": source.name, "budgets": results, "images": len(images), "machine": machine(), "tiny": tiny}
    write_results("compress_study", payload, markdown(payload), args.tiny or half_a.RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
