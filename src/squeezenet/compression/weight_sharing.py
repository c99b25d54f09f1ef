"""Weight sharing (Deep Compression, stage 2): per-layer k-means and trained quantization.

``kmeans_1d`` uses the paper's linear initialisation over [min, max]; ``quantize_array``
turns the non-zero weights of one tensor into a ``SparseTensor`` (codebook, codes,
positions). ``train_codebooks`` fine-tunes the centroids with gradients summed per
cluster, against labels or, when only unlabelled images are at hand, against the
uncompressed model's outputs (distillation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from squeezenet.weights.sqz_codec import SparseTensor


def kmeans_1d(values: np.ndarray, k: int, weights: np.ndarray | None = None, iters: int = 30):
    """Weighted 1-D k-means, linear init over [min, max] -> (centroids float64, assignment)."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(values) == 0:
        return np.zeros(1), np.zeros(0, np.int64)
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    c = np.linspace(v[0], v[-1], k) if k > 1 else np.array([np.average(v, weights=w)])
    for _ in range(iters):
        cuts = np.searchsorted(v, (c[1:] + c[:-1]) / 2)
        a = np.zeros(len(v), np.int64)
        a[cuts[cuts < len(v)]] += 1
        a = np.cumsum(a)
        a = np.minimum(a, k - 1)
        s = np.bincount(a, w * v, k)
        n = np.bincount(a, w, k)
        new = np.where(n > 0, s / np.maximum(n, 1e-300), c)
        if np.allclose(new, c, rtol=0, atol=1e-12):
            c = new
            break
        c = np.sort(new)
    assign = np.empty(len(v), np.int64)
    mids = (c[1:] + c[:-1]) / 2
    assign[order] = np.searchsorted(mids, v)
    return c, assign


def compact(t: SparseTensor) -> SparseTensor:
    """Drop unused and zero-valued entries, sort the codebook by value (smaller tables)."""
    keep = t.codebook[t.codes] != 0
    codes, positions = t.codes[keep], t.positions[keep]
    used = np.unique(codes)
    if len(used) == 0:
        return SparseTensor(t.shape, np.zeros(1, np.float32), codes[:0], positions[:0], t.bits)
    cb = t.codebook[used]
    order = np.argsort(cb, kind="stable")
    remap = np.zeros(len(t.codebook), np.int64)
    remap[used[order]] = np.arange(len(used))
    return SparseTensor(t.shape, cb[order].astype(np.float32), remap[codes], positions, t.bits)


def quantize_array(w: np.ndarray, bits: int) -> SparseTensor:
    """K-means (2**bits clusters) over the non-zero entries of ``w``; zeros stay pruned."""
    flat = np.asarray(w, dtype=np.float32).ravel()
    positions = np.flatnonzero(flat)
    vals, counts = np.unique(flat[positions], return_inverse=False, return_counts=True)
    inv = np.searchsorted(vals, flat[positions])
    k = min(1 << bits, max(1, len(vals)))
    centroids, assign = kmeans_1d(vals, k, counts)
    t = SparseTensor(tuple(w.shape), centroids.astype(np.float32), assign[inv], positions, bits)
    return compact(t)


def requantize(t: SparseTensor, bits: int) -> SparseTensor:
    """Re-cluster an already quantized tensor to 2**bits centroids (k-means on its codebook, weighted)."""
    t = compact(t)
    if len(t.codebook) <= 1 << bits:
        return SparseTensor(t.shape, t.codebook, t.codes, t.positions, bits)
    counts = np.bincount(t.codes, minlength=len(t.codebook))
    centroids, assign = kmeans_1d(t.codebook.astype(np.float64), 1 << bits, counts)
    return compact(SparseTensor(t.shape, centroids.astype(np.float32), assign[t.codes], t.positions, bits))


def train_codebooks(
    model: torch.nn.Module,
    quantized: dict[str, SparseTensor],
    batches: Iterable,
    steps: int = 100,
    lr: float = 1e-4,
    teacher: torch.nn.Module | None = None,
    temperature: float = 2.0,
    on_step: Callable[[int, float], None] | None = None,
    biases: bool = False,
) -> dict[str, SparseTensor | np.ndarray]:
    """Trained quantization: the gradient of every weight is summed into its centroid.

    ``batches`` yields images or (images, labels); with ``teacher`` the loss is the KL
    divergence to the teacher's softened outputs (distillation, no labels needed).
    Masks and codes stay fixed; only the codebooks move, and with ``biases`` the biases of
    the quantized layers (stored as floats, they cost nothing to tune). Returns the updated
    tensors (and biases, as arrays).
    """
    params = dict(model.named_parameters())
    books = {k: torch.tensor(t.codebook, dtype=torch.float32, requires_grad=True) for k, t in quantized.items()}
    bias_keys = [k[: -len("weight")] + "bias" for k in quantized] if biases else []
    tuned = {k: params[k] for k in bias_keys if k in params}
    for p in params.values():
        p.requires_grad_(False)
    for k in quantized:
        params[k].requires_grad_(True)
    for p in tuned.values():
        p.requires_grad_(True)
    index = {
        k: (torch.from_numpy(t.positions.astype(np.int64)), torch.from_numpy(t.codes.astype(np.int64)))
        for k, t in quantized.items()
    }
    opt = torch.optim.Adam([*books.values(), *tuned.values()], lr=lr)
    model.train(False)
    step = 0
    while step < steps:
        progressed = False
        for batch in batches:
            images, labels = (batch if isinstance(batch, tuple | list) else (batch, None))[:2]
            for k, book in books.items():
                pos, codes = index[k]
                flat = torch.zeros(params[k].numel())
                flat = flat.index_put((pos,), book[codes])
                params[k].data.copy_(flat.view_as(params[k]).detach())
            for p in params.values():
                p.grad = None
            logits = model(images)
            if teacher is not None:
                with torch.no_grad():
                    target = F.softmax(teacher(images) / temperature, dim=1)
                loss = F.kl_div(F.log_softmax(logits / temperature, dim=1), target, reduction="batchmean")
            else:
                loss = F.cross_entropy(logits, labels)
            loss.backward()
            for k, book in books.items():
                pos, codes = index[k]
                g = params[k].grad.reshape(-1)[pos]
                book.grad = torch.zeros_like(book).index_add_(0, codes, g)
            opt.step()
            if on_step:
                on_step(step, float(loss.detach()))
            step += 1
            progressed = True
            if step >= steps:
                break
        if not progressed:
            break
    out: dict[str, SparseTensor | np.ndarray] = {}
    for k, t in quantized.items():
        cb = books[k].detach().numpy().astype(np.float32)
        out[k] = SparseTensor(t.shape, cb, t.codes, t.positions, t.bits)
        params[k].data.copy_(torch.from_numpy(out[k].to_dense()))
    for k, p in tuned.items():
        out[k] = p.detach().numpy().astype(np.float32).copy()
    return out
