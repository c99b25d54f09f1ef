"""Bytes where the outputs need them: per-layer settings chosen for a file-size budget.

Every layer is quantized at a ladder of rate-distortion trade-offs (``RATE_LADDER``: the
price ``lam`` of one bit in nats of KL divergence, plus, optionally, pruning as one more
choice). Each candidate is measured twice: its bytes, by encoding the layer alone (section
plus its expected share of the rANS data), and its distortion, the layer's estimated KL
(``output_aware``). The allocation is the classic Lagrangian one for a multiple-choice
knapsack (Shoham and Gersho): for a price ``mu`` every layer takes the candidate that
minimises ``distortion + mu * bytes``; ``mu`` is bisected until the file fits the budget,
then layers are upgraded greedily while the budget allows. Because every layer's
distortion is in the same unit, this is HAWQ/HAQ-style mixed precision without a search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from squeezenet.compression.output_aware import LayerPlan, LayerResult, quantize_layer
from squeezenet.compression.weight_sharing import compact
from squeezenet.weights.sqz_codec import SparseTensor, TensorPlan, encode_tensor

# price of a bit, in nats of KL per image: 0 keeps the starting codebook's nearest values
RATE_LADDER: tuple[float, ...] = (0.0, 2e-9, 5e-9, 1e-8, 2e-8, 4e-8, 8e-8, 1.6e-7, 3.2e-7, 6.4e-7, 1.3e-6)


@dataclass
class Candidate:
    lam: float
    prune: bool
    result: LayerResult
    bytes: float
    tensor: SparseTensor


def tensor_bytes(name: str, tensor: SparseTensor, codebook_dtype: str) -> float:
    """Bytes the layer will take in the file: its section plus its expected rANS share."""
    body, _, info = encode_tensor(TensorPlan(name, tensor, codebook_dtype=codebook_dtype))
    return len(body) + 12 + info.get("rans_estimate", 0.0)


def candidates_for(
    name: str,
    plan: LayerPlan,
    codebook: np.ndarray,
    bits: int,
    codebook_dtype: str,
    ladder: tuple[float, ...] = RATE_LADDER,
    prune: bool = True,
    iters: int = 3,
) -> list[Candidate]:
    out = []
    for lam in ladder:
        for pruning in (False, True) if prune and lam > 0 else (False,):
            r = quantize_layer(plan, codebook, lam=lam, iters=iters, allow_prune=pruning, storage=codebook_dtype)
            t = compact(SparseTensor(plan.shape, r.codebook, r.codes, r.positions, bits))
            out.append(Candidate(lam, pruning, r, tensor_bytes(name, t, codebook_dtype), t))
    return out


def allocate(options: dict[str, list[Candidate]], budget: float) -> dict[str, Candidate] | None:
    """The smallest total distortion with sum of bytes <= ``budget`` (Lagrangian + greedy fill);
    None when even the smallest candidates do not fit."""
    hulls = {k: _pareto(v) for k, v in options.items()}
    if sum(h[0].bytes for h in hulls.values()) > budget:
        return None

    def pick(log_mu: float) -> dict[str, Candidate]:
        mu = 10.0**log_mu
        return {k: min(h, key=lambda c: c.result.distortion + mu * c.bytes) for k, h in hulls.items()}

    def fits(log_mu: float) -> bool:
        return sum(c.bytes for c in pick(log_mu).values()) <= budget

    lo, hi = -40.0, 10.0  # at 10^10 nats per byte every layer takes its smallest candidate
    if fits(lo):
        return _fill(hulls, pick(lo), budget)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return _fill(hulls, pick(hi), budget)


def _pareto(cands: list[Candidate]) -> list[Candidate]:
    """Candidates that no other one beats in both bytes and distortion, smallest first."""
    ordered = sorted(cands, key=lambda c: (c.bytes, c.result.distortion))
    front: list[Candidate] = []
    for c in ordered:
        if not front or c.result.distortion < front[-1].result.distortion:
            front.append(c)
    return front


def _fill(hulls: dict[str, list[Candidate]], chosen: dict[str, Candidate], budget: float) -> dict[str, Candidate]:
    """Spend what the Lagrangian choice left over: best distortion saved per byte first."""
    chosen = dict(chosen)
    total = sum(c.bytes for c in chosen.values())
    while True:
        best, best_gain = None, 0.0
        for k, h in hulls.items():
            cur = chosen[k]
            for c in h:
                extra = c.bytes - cur.bytes
                saved = cur.result.distortion - c.result.distortion
                if extra > 0 and saved > 0 and total + extra <= budget and saved / extra > best_gain:
                    best, best_gain = (k, c), saved / extra
        if best is None:
            return chosen
        k, c = best
        total += c.bytes - chosen[k].bytes
        chosen[k] = c
