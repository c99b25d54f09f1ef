"""Output-aware weight sharing: codes chosen for what a layer outputs, not for its weights.

Nearest-value assignment minimises ``|w - q|`` weight by weight; what the network needs is
a small change of what each layer outputs, ``E|(W - Q) x|^2``, weighted by how much each
output channel moves the predictions. ``quantize_layer`` does that for one convolution:

- error feedback (GPTQ / Optimal Brain Quantization): the weights of a row are coded one
  at a time, most influential input first, and the rounding error of each is compensated
  by the not-yet-coded weights of the row through the inverse of the input covariance
  ``C`` restricted to the row's stored positions (pruned weights stay zero);
- entropy-constrained choice (rate-distortion): a weight takes the codebook entry that
  minimises ``0.5 * fisher_row * err^2 / [C^-1]_ii + lam * bits(code)``, so rare codes, which
  cost the entropy coder more bits, are used only where the outputs need them; with
  ``allow_prune`` zero is one more choice, priced by what its position costs;
- codebook refit: given the codes, the centroids solve the least-squares problem of the
  layer's output error (a K x K system), and the three steps alternate;
- bias correction: the mean output shift ``(W - Q) E[x]`` goes into the float bias.

The distortion it reports is the second-order estimate of the mean KL divergence this
layer alone adds to the network's predictions (``layer_statistics`` explains the units), so the
allocation over layers (``budget``) compares layers and bytes in one currency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from squeezenet.compression.layer_statistics import LayerStats

CHUNK_ROWS = 128
PRUNE_START_DENSITY = 0.5
WINDOW = 6  # codebook entries on each side of the nearest one that the rate-distortion choice considers


@dataclass
class RowChunk:
    """Rows of similar stored count, with their slots ordered for error feedback."""

    rows: np.ndarray  # (R,) row indices
    idx: np.ndarray  # (R, s) flat column of the j-th stored weight of each row (most influential first)
    valid: np.ndarray  # (R, s) bool: slot holds a stored weight
    w: np.ndarray  # (R, s) float64 original stored weights (0 in empty slots)
    factor: np.ndarray  # (R, s, s) upper Cholesky factor of the inverse of C restricted to the slots
    cov: np.ndarray  # (R, s, s) float32 C restricted to the slots
    fisher: np.ndarray  # (R,)


@dataclass
class LayerPlan:
    """One layer's stored weights and covariances (computed once, reused by every setting)."""

    shape: tuple[int, ...]
    chunks: list[RowChunk]
    mean: np.ndarray  # (d,) mean input column
    density: float
    stored: int


def prepare_layer(
    weight: np.ndarray,
    stats: LayerStats,
    damp: float = 0.01,
    fisher_prior: float = 0.5,
    coherence: float = 1.0,
    own_blend: float = 0.0,
) -> LayerPlan:
    """Slots, covariances and inverse factors of one layer (the expensive part, done once).

    ``fisher_prior`` adds that share of the layer's mean Fisher to every row: a class that no
    calibration image made likely still matters on the images that show it.

    ``own_blend`` (with ``stats.row_grads``) gives each row a share of its own curvature
    (``own_curvature``) beside the shared one, scaled to the shared one's trace: the rows
    then differ in direction, not in weight, so they all take the layer's mean Fisher."""
    out = weight.shape[0]
    w2 = np.asarray(weight, dtype=np.float64).reshape(out, -1)
    mask = w2 != 0
    cov = stats.hessian(coherence)
    d = w2.shape[1]
    if cov.shape != (d, d):
        raise ValueError(f"{stats.name}: statistics for {cov.shape[0]} inputs, weight has {d}")
    influence = np.diag(cov)
    order = np.argsort(-influence, kind="stable")  # most influential inputs first
    scale = float(np.mean(influence[influence > 0])) if np.any(influence > 0) else 1.0
    fisher = np.asarray(stats.fisher, dtype=np.float64)
    if fisher.shape != (out,) or not np.any(fisher > 0):
        fisher = np.ones(out)
    fisher = (fisher + fisher_prior * fisher.mean()) / (1.0 + fisher_prior)
    own = own_blend > 0 and stats.row_grads is not None
    if own:
        fisher = np.full(out, fisher.mean())
    counts = mask.sum(1)
    by_count = np.argsort(-counts, kind="stable")
    cov_t = torch.from_numpy(cov)
    chunks = []
    for start in range(0, out, CHUNK_ROWS):
        rows = by_count[start : start + CHUNK_ROWS]
        s = max(1, int(counts[rows].max()))
        m = mask[rows][:, order]
        rank = np.cumsum(m, 1) - 1
        idx = np.zeros((len(rows), s), np.int64)
        r_i, c_i = np.nonzero(m)
        idx[r_i, rank[r_i, c_i]] = order[c_i]
        valid = np.arange(s)[None, :] < counts[rows][:, None]
        w = np.where(valid, np.take_along_axis(w2[rows], idx, 1), 0.0)
        i = torch.from_numpy(idx)
        v = torch.from_numpy(valid).double()
        h = cov_t[i[:, :, None], i[:, None, :]] * v[:, :, None] * v[:, None, :]
        if own:
            h = blend_curvature(h, own_curvature(stats, rows, idx, valid), own_blend)
        c32 = h.float().numpy()
        diag = torch.diagonal(h, dim1=1, dim2=2)
        diag += damp * scale * v + (1.0 - v) * scale  # dampening; empty slots decoupled
        factor = _inverse_factor(h, scale).float().numpy()
        chunks.append(RowChunk(rows, idx, valid, w, factor, c32, fisher[rows]))
    return LayerPlan(tuple(weight.shape), chunks, stats.mean, float(mask.mean()), int(mask.sum()))


def own_curvature(stats: LayerStats, rows: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    """(R, s, s): each row's own curvature on its slots, ``sum_i a_ri (g_ri - m_r)(g_ri - m_r)^T``
    with ``a_ri = p_ri (1 - p_ri)`` normalised over the images and ``m_r`` its mean of ``g``.

    The shared covariance weighs every image's pooled input alike for every row; the Gauss-Newton
    curvature of logit r weighs the images where class r is in doubt and the positions where
    row r is active. Centred, because bias correction takes the mean shift."""
    weights = torch.from_numpy(stats.row_weights[:, rows]).double()  # (n, R)
    weights = weights / weights.sum(0).clamp_min(1e-300)
    grads = torch.from_numpy(stats.row_grads[:, rows, :])  # (n, R, d) float32
    g = torch.gather(grads, 2, torch.from_numpy(idx)[None].expand(len(grads), -1, -1)).double()  # (n, R, s)
    g = g - torch.einsum("nr,nrs->rs", weights, g)[None]
    g = g * torch.from_numpy(valid)[None]
    weighted = (g * weights[:, :, None]).permute(1, 2, 0)  # (R, s, n)
    return torch.bmm(weighted, g.permute(1, 0, 2))


def blend_curvature(shared: torch.Tensor, own: torch.Tensor, share: float) -> torch.Tensor:
    """``(1 - share) * shared + share * own``, ``own`` scaled row by row to the trace of ``shared``."""
    trace_shared = torch.diagonal(shared, dim1=1, dim2=2).sum(1)
    trace_own = torch.diagonal(own, dim1=1, dim2=2).sum(1)
    scale = (trace_shared / trace_own.clamp_min(1e-300))[:, None, None]
    blended = (1.0 - share) * shared + share * scale * own
    return torch.where((trace_own > 0)[:, None, None], blended, shared)  # a row never active: the shared one


@dataclass
class LayerResult:
    codebook: np.ndarray  # float32 (K,)
    codes: np.ndarray  # int64 per stored weight, in the order of positions
    positions: np.ndarray  # int64 flat positions (increasing)
    bias_delta: np.ndarray  # (O,) to add to the bias
    distortion: float  # estimated mean KL (nats) added by this layer
    code_bits: float  # entropy of the codes (bits), about what the entropy coder spends
    kept: int  # stored weights


def _inverse_factor(h: torch.Tensor, scale: float) -> torch.Tensor:
    """Upper U with U^T U = h^-1 (what error feedback needs), from one Cholesky factorisation:
    with J the reversal, chol(J h J) = L gives U = J L^-1 J."""
    flipped = h.flip(1, 2)
    chol, info = torch.linalg.cholesky_ex(flipped)
    if bool((info != 0).any()):  # a degenerate covariance: more dampening
        torch.diagonal(flipped, dim1=1, dim2=2).add_(scale)
        chol = torch.linalg.cholesky(flipped)
    eye = torch.eye(h.shape[-1], dtype=h.dtype).expand_as(h)
    return torch.linalg.solve_triangular(chol, eye, upper=False).flip(1, 2)


def round_to_grid(weight: np.ndarray, step: np.ndarray, limit: int, covariance: np.ndarray, damp: float = 0.01):
    """Integers ``q`` (``|q| <= limit``) with ``weight[o] ~ step[o] * q[o]`` for what the layer
    outputs, not weight by weight: each row's rounding errors are compensated by its not yet
    rounded weights through the input covariance (GPTQ), so ``E|(W - step * q) x|^2`` ends
    far below nearest rounding's at the same grid. Zero weights (pruned) stay zero.

    ``covariance``: ``E[x x^T]`` of the layer's im2col columns, in ``weight.reshape(cout, -1)``'s
    column order; ``damp`` (times its mean diagonal) keeps the inverse well conditioned."""
    w = torch.from_numpy(np.asarray(weight, np.float64).reshape(len(weight), -1)).clone()
    h = torch.from_numpy(np.array(covariance, np.float64))
    dead = torch.diagonal(h) <= 0  # inputs that were always zero: any value serves
    h[dead, dead] = 1.0
    ridge = damp * float(torch.diagonal(h).mean())
    torch.diagonal(h).add_(ridge)
    factor = _inverse_factor(h[None], ridge)[0]
    stored = w != 0
    s = torch.from_numpy(np.asarray(step, np.float64))
    q = torch.zeros_like(w)
    for j in range(w.shape[1]):
        q[:, j] = torch.clamp(torch.round(w[:, j] / s), -limit, limit) * stored[:, j]
        err = (w[:, j] - q[:, j] * s) / factor[j, j]
        w[:, j + 1 :] -= err[:, None] * factor[j, j + 1 :][None, :]
    return q.numpy().astype(np.int64).reshape(weight.shape)


def _code_lengths(codes: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=k).astype(np.float64) + 0.5
    return -np.log2(counts / counts.sum())


def _feedback_pass(
    plan: LayerPlan, codebook: np.ndarray, lengths: np.ndarray, lam: float, prune_bits: float | None, feedback: bool
):
    """Codes chosen one slot at a time with error feedback (without ``feedback``: each on its
    own, as nearest-value rounding does) -> per chunk (R, s) codes, -1 = zero."""
    k = len(codebook)
    cb = codebook.astype(np.float32)
    mids = (cb[1:] + cb[:-1]) / 2
    rate = (lam * lengths).astype(np.float32)
    offsets = np.arange(-WINDOW, WINDOW + 1) if lam > 0 else None
    result = []
    for chunk in plan.chunks:
        u = chunk.factor
        w = chunk.w.astype(np.float32)
        valid = chunk.valid
        half_f = (0.5 * chunk.fisher).astype(np.float32)
        rows = np.arange(len(w))
        codes = np.full(w.shape, -1, np.int64)
        for j in range(w.shape[1]):
            wj = w[:, j]
            dj = u[:, j, j]
            near = np.searchsorted(mids, wj)
            if offsets is None:
                best = near
                q = cb[best]
            else:
                scale = half_f / (dj * dj)
                cand = np.clip(near[:, None] + offsets[None, :], 0, k - 1)
                cost = scale[:, None] * (wj[:, None] - cb[cand]) ** 2 + rate[cand]
                pick = cost.argmin(1)
                best = cand[rows, pick]
                q = cb[best]
                if prune_bits is not None:
                    pruned = scale * wj * wj + lam * prune_bits < cost[rows, pick]
                    q = np.where(pruned, np.float32(0), q)
                    best = np.where(pruned, -1, best)
            v = valid[:, j]
            codes[:, j] = np.where(v, best, -1)
            if feedback and j + 1 < w.shape[1]:
                err = np.where(v, (wj - q) / dj, np.float32(0))
                w[:, j + 1 :] -= err[:, None] * u[:, j, j + 1 :]
        result.append(codes)
    return result


def _refit_codebook(plan: LayerPlan, codes: list[np.ndarray], codebook: np.ndarray, ridge: float = 1e-6):
    """Centroids minimising sum_r fisher_r (w_r - Q_r)^T C (w_r - Q_r) for fixed codes (a K x K system)."""
    k = len(codebook)
    m = np.zeros((k + 1) * (k + 1))
    b = np.zeros(k + 1)
    for chunk, a in zip(plan.chunks, codes, strict=True):
        a = np.where(a < 0, k, a)  # zeros and empty slots: the dummy bin k
        fh = chunk.fisher[:, None, None] * chunk.cov.astype(np.float64)
        pair = a[:, :, None] * (k + 1) + a[:, None, :]
        m += np.bincount(pair.ravel(), weights=fh.ravel(), minlength=(k + 1) ** 2)
        hw = np.einsum("rij,rj->ri", fh, chunk.w)
        b += np.bincount(a.ravel(), weights=hw.ravel(), minlength=k + 1)
    m = m.reshape(k + 1, k + 1)[:k, :k]
    b = b[:k]
    used = np.diag(m) > 0
    if not used.any():
        return codebook
    mu = m[np.ix_(used, used)]
    reg = ridge * np.trace(mu) / len(mu)
    try:
        sol = np.linalg.solve(mu + reg * np.eye(len(mu)), b[used] + reg * codebook[used])
    except np.linalg.LinAlgError:
        return codebook
    out = codebook.astype(np.float64).copy()
    out[used] = sol
    return out


def _errors(plan: LayerPlan, codes: list[np.ndarray], codebook: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """(estimated KL of the layer's error, per chunk the weight errors in slot order)."""
    total, errs = 0.0, []
    for chunk, a in zip(plan.chunks, codes, strict=True):
        q = np.where(a >= 0, codebook[np.maximum(a, 0)], 0.0)
        e = np.where(chunk.valid, chunk.w - q, 0.0)
        total += float(np.sum(chunk.fisher * np.einsum("ri,rij,rj->r", e, chunk.cov.astype(np.float64), e)))
        errs.append(e)
    return 0.5 * total, errs


def quantize_layer(
    plan: LayerPlan,
    codebook: np.ndarray,
    lam: float = 0.0,
    iters: int = 3,
    allow_prune: bool = False,
    refit: bool = True,
    storage: str = "float16",
    feedback: bool = True,
) -> LayerResult:
    """Output-aware codes and centroids for one layer (see the module docstring); ``storage``
    is the codebook's dtype in the file, so that codes are chosen for the values decoded."""
    storage = np.dtype(storage)
    codebook = np.unique(np.asarray(codebook, dtype=storage).astype(np.float64))
    k = len(codebook)
    stored = np.concatenate([c.w[c.valid] for c in plan.chunks])
    mids = (codebook[1:] + codebook[:-1]) / 2
    lengths = _code_lengths(np.searchsorted(mids, stored), k)
    # position bits a zero saves (Bernoulli positions); a dense layer starts as if half were zero,
    # or no zero would ever pay for the mask it needs; later passes use the share actually kept
    density = min(max(plan.density, 1e-6), PRUNE_START_DENSITY)
    prune_bits = float(np.log2(density / (1 - density))) if allow_prune else None
    codes: list[np.ndarray] = []
    for _ in range(max(1, iters)):
        codes = _feedback_pass(plan, codebook, lengths, lam, prune_bits, feedback)
        kept = np.concatenate([a[a >= 0] for a in codes])
        if refit:
            codebook = _refit_codebook(plan, codes, codebook).astype(storage).astype(np.float64)
        lengths = _code_lengths(kept, k)
        if prune_bits is not None:
            share = min(max(len(kept) / max(plan.stored, 1) * plan.density, 1e-6), 1 - 1e-6)
            prune_bits = float(np.log2(share / (1 - share)))
    distortion, errs = _errors(plan, codes, codebook)
    out = plan.shape[0]
    per_row = int(np.prod(plan.shape[1:]))
    bias_delta = np.zeros(out)
    flat_parts, code_parts = [], []
    for chunk, a, e in zip(plan.chunks, codes, errs, strict=True):
        # bias correction: the mean output shift of the (W - Q) error goes into the bias
        bias_delta[chunk.rows] = np.einsum("rs,rs->r", e, plan.mean[chunk.idx])
        keep = a >= 0
        flat_parts.append((chunk.rows[:, None] * per_row + chunk.idx)[keep])
        code_parts.append(a[keep])
    flat = np.concatenate(flat_parts)
    order = np.argsort(flat, kind="stable")
    kept_codes = np.concatenate(code_parts)[order]
    counts = np.bincount(kept_codes, minlength=k)
    nz = counts[counts > 0]
    bits = float(-(nz * np.log2(nz / nz.sum())).sum()) if len(kept_codes) else 0.0
    return LayerResult(
        codebook=codebook.astype(np.float32),
        codes=kept_codes,
        positions=flat[order],
        bias_delta=bias_delta,
        distortion=distortion,
        code_bits=bits,
        kept=len(kept_codes),
    )
