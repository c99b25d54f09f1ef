"""Sequential quantization at a tight byte budget, on half A only: does choosing each layer's codes on
the quantized model's inputs lower the error that unseen images see?

    python benchmarks/studies/compress_sequential.py             # the record (hours on 2 cores)
    python benchmarks/studies/compress_sequential.py --tiny OUT  # a smoke run on a tiny model

`compress` calibrates every layer on the float model's activations: each layer's codes are chosen
as if the layers before it were not quantized. GPTQ quantizes layer after layer on the inputs that
the already quantized layers give, and GPTAQ (Li et al., 2025, "asymmetric calibration") also aims
each layer at the float model's output, so that a layer corrects part of the error it receives.
This script refits the command's choice at 400 kB (each layer's price and pruning, as the byte
allocation picked them) a second time, layer by layer in network order:

- **sequential**: each layer's input statistics from the model whose earlier layers are already
  quantized, its own weights the target (GPTQ);
- **sequential, aimed at the float outputs**: the same inputs, the float model's output ``W x``
  the target: on each row's stored positions the weights first move by the least-squares
  correction ``w' = w + (C~ + damp)^-1 (E[x~ x^T] - C~) w`` (the dampening shrinks the
  correction, not the weights), then are quantized as ``compress`` does (GPTAQ).

In both, bias correction restores the float model's mean output (``W E[x] - Q E[x~]``), and the
Fisher and conv10's row gradients stay the float model's. Five-fold cross-validation on half A
(``compress_study``'s folds; half B is not read), each variant paired with the command's
fit of the same fold on the same held-back images. Both keep each layer's price, not its bytes:
a file can end a little over the budget (the table lists every file's size).
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
from squeezenet.compression import (
    DAMP,
    OWN_CURVATURE,
    LayerStats,
    calibration_copy,
    collect_stats,
    compact,
    conv_layers,
    patch_columns,
    prepare_layer,
    quantize_layer,
)
from squeezenet.weights.sqz_codec import SparseTensor

BUDGET = 400_000
MAX_COLUMNS = 65536  # as collect_stats: a seeded sample of a batch's columns (the same ones in both models)
VARIANTS = {
    "as `compress` does (every layer on the float model's inputs)": None,
    "sequential (quantized inputs, own weights the target: GPTQ)": False,
    "sequential, aimed at the float outputs (GPTAQ)": True,
}


class _Reached(Exception):
    """Raised by a forward hook once the layer's input is caught: the rest of the network is not run."""


def layer_input(model, module_name: str, images: torch.Tensor) -> torch.Tensor:
    caught = {}

    def hook(module, inputs, output):
        caught["x"] = inputs[0].detach().float()
        raise _Reached

    handle = dict(model.named_modules())[module_name].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(images)
    except _Reached:
        pass
    finally:
        handle.remove()
    return caught["x"]


def paired_moments(reference, quantized, key: str, batches, coherence: float, float_stats: LayerStats, seed: int = 0):
    """(statistics of the layer's input in the quantized model, carrying the float model's Fisher and
    row gradients; the cross covariance ``E[x~ x^T]`` with the float input, centred, with the same
    between-image part as ``LayerStats.hessian``; the float input's mean)."""
    name = key.rsplit(".", 1)[0]
    module = dict(reference.named_modules())[name]
    gen = torch.Generator().manual_seed(seed)
    acc: dict = {}
    for images in batches:
        cols_f = patch_columns(module, layer_input(reference, name, images))
        cols_q = patch_columns(module, layer_input(quantized, name, images))
        positions = len(cols_f) // len(images)
        mean_f = cols_f.reshape(len(images), positions, -1).mean(1).double()
        mean_q = cols_q.reshape(len(images), positions, -1).mean(1).double()
        scale = 1.0
        if len(cols_f) > MAX_COLUMNS:
            chosen = torch.randperm(len(cols_f), generator=gen)[:MAX_COLUMNS]
            scale, cols_f, cols_q = len(cols_f) / MAX_COLUMNS, cols_f[chosen], cols_q[chosen]
        cols_f, cols_q = cols_f.double(), cols_q.double()
        parts = {"qq": scale * (cols_q.T @ cols_q), "qf": scale * (cols_q.T @ cols_f), "sq": scale * cols_q.sum(0),
                 "sf": scale * cols_f.sum(0), "n": scale * len(cols_f), "iqq": mean_q.T @ mean_q,
                 "iqf": mean_q.T @ mean_f, "images": len(images)}  # fmt: skip
        for k, v in parts.items():
            acc[k] = acc.get(k, 0) + v
    n, images = acc["n"], acc["images"]
    mq, mf = (acc["sq"] / n).numpy(), (acc["sf"] / n).numpy()
    s = float_stats
    stats = LayerStats(key, acc["qq"].numpy(), acc["sq"].numpy(), n, s.fisher, acc["iqq"].numpy(), positions, images,
                       s.row_grads, s.row_weights)  # fmt: skip
    between = acc["iqf"].numpy() / images - np.outer(mq, mf)
    cross = acc["qf"].numpy() / n - np.outer(mq, mf) + coherence * max(positions - 1, 0) * between
    return stats, cross, mf


def aimed_at_float(weight: np.ndarray, hessian: np.ndarray, cross: np.ndarray, damp: float) -> np.ndarray:
    """Each row's stored weights moved to the least-squares fit of the float output on the quantized
    input (pruned weights stay zero); the dampening acts on the correction only."""
    w = weight.reshape(len(weight), -1).astype(np.float64)
    diag = np.diag(hessian)
    damped = hessian + damp * float(np.mean(diag[diag > 0])) * np.eye(len(hessian))
    pull = w @ cross.T  # row r: E[x~ x^T] w_r
    out = np.zeros_like(w)
    for r in range(len(w)):
        s = np.nonzero(w[r])[0]
        if len(s):
            out[r, s] = w[r, s] + np.linalg.solve(damped[np.ix_(s, s)], pull[r, s] - hessian[np.ix_(s, s)] @ w[r, s])
    return out.reshape(weight.shape)


def refit_sequential(reference, fit: half_a.Fit, stats: dict, batches, aim: bool) -> dict:
    """The fit's tensors with every layer re-quantized in network order at its picked price and
    pruning, on the inputs the quantized layers before it give."""
    quantized = calibration_copy(reference)
    state = {k: v.clone() for k, v in quantized.state_dict().items()}
    tensors = dict(fit.tensors)
    layers = list(fit.picked)
    for k in layers:
        last = k == layers[-1]
        coherence = 1.0 if last else 0.0  # as the command
        inputs, cross, mean_f = paired_moments(reference, quantized, k, batches, coherence, stats[k])
        weight = fit.state[k].numpy()
        target = aimed_at_float(weight, inputs.hessian(coherence), cross, DAMP) if aim else weight
        plan = prepare_layer(target.astype(np.float32), inputs, damp=DAMP, coherence=coherence,
                             own_blend=OWN_CURVATURE if last else 0.0)  # fmt: skip
        c = fit.picked[k]
        r = quantize_layer(plan, fit.tensors[k].codebook, lam=c.lam, allow_prune=c.prune,
                           storage=fit.config.codebook_dtype)  # fmt: skip
        tensors[k] = compact(SparseTensor(plan.shape, r.codebook, r.codes, r.positions, fit.bits[k]))
        bias = k[: -len("weight")] + "bias"
        w2 = weight.reshape(len(weight), -1).astype(np.float64)
        t2 = target.reshape(len(target), -1).astype(np.float64)
        shift = r.bias_delta + w2 @ mean_f - t2 @ inputs.mean  # W E[x] - Q E[x~]
        tensors[bias] = (np.asarray(fit.tensors[bias], np.float64) + shift).astype(np.float32)
        state[k] = torch.from_numpy(tensors[k].to_dense()).float()
        state[bias] = torch.from_numpy(tensors[bias])
        quantized.load_state_dict(state)
    return tensors


def cross_validate(reference, source, images: torch.Tensor, budget: int, folds: list[int]) -> tuple[dict, dict]:
    """variant -> per-image KL and agreement on the held-back images of ``folds``; file bytes per variant and fold."""
    held_all = [i for i in range(len(images)) if i % half_a.FOLDS in folds]
    kl = {v: np.zeros(len(images)) for v in VARIANTS}
    agree = {v: np.zeros(len(images)) for v in VARIANTS}
    sizes: dict[str, list[int]] = {v: [] for v in VARIANTS}
    layers = list(conv_layers(reference))
    for fold in folds:
        t0 = time.perf_counter()
        kept, held = half_a.split(images, fold)
        found = collect_stats(reference, half_a.batches_of(kept), fisher=True, row_curvature=layers[-1])
        stats = {k: found[k] for k in layers}
        fit = half_a.fit_picks(source, reference, stats, kept, {}, budget, {})
        for name, aim in VARIANTS.items():
            if aim is None:
                tensors = half_a.with_picked(fit.tensors, fit.picked)
            else:
                tensors = refit_sequential(reference, fit, stats, half_a.batches_of(kept), aim)
            fitted = fit.compressed(tensors)
            data, model = fitted.to_bytes(), fitted.build_model().eval()
            kl[name][held], agree[name][held] = half_a.kl_per_image(reference, model, images[held])
            sizes[name].append(len(data))
            print(f"fold {fold} {name}: {len(data):,} B, KL {kl[name][held].mean():.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    return {v: (kl[v][held_all], agree[v][held_all]) for v in VARIANTS}, sizes


def markdown(p: dict) -> str:
    folds = ", ".join(str(f) for f in p["folds"])
    lines = [
        *half_a.header(
            "Sequential quantization at a tight budget (half A): quantized inputs, float outputs as the target",
            __file__,
            p,
        ),
        f"Images: half A of `bench_compress`'s split only ({p['images']} images; half B is not read). "
        f"`--max-bytes {p['budget']:,}`, folds {folds} of `compress_study` (each fifth held back in turn, "
        f"the other four fifths calibrate): {p['scored']} held-back images, paired with the command's fit.",
        "",
        *half_a.variant_table(p),
        "",
        "| variant | file bytes per fold |",
        "|---|---|",
        *(f"| {name} | {', '.join(f'{b:,}' for b in sizes)} |" for name, sizes in p["sizes"].items()),
        "",
        f"Time: {p['seconds'] / 60:.0f} min.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run = half_a.start_folds(ap, BUDGET)
    if run is None:
        return 1
    args, source, reference, images, budget, folds = run
    tiny = args.tiny is not None
    t0 = time.perf_counter()
    scores, sizes = cross_validate(reference, source, images, budget, folds)
    base_kl, base_agree = next(iter(scores.values()))
    variants = {name: half_a.paired(base_kl, base_agree, kl, agree) for name, (kl, agree) in scores.items()}
    payload = {"source": source.name, "budget": budget, "folds": folds, "images": len(images),
               "scored": len(base_kl), "variants": variants, "sizes": sizes,
               "seconds": time.perf_counter() - t0, "machine": machine(), "tiny": tiny}  # fmt: skip
    write_results("compress_sequential", payload, markdown(payload), args.tiny or half_a.RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
