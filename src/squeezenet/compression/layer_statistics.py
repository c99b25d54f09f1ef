"""What each convolution sees and what its outputs are worth: the statistics output-aware quantization needs.

For every convolution the quantizer needs the second moments of the columns it multiplies
(``C = E[x x^T] - E[x] E[x]^T`` over im2col patches, the Hessian of the layer's output error
once the bias absorbs the mean shift), the mean column ``E[x]`` (for that bias correction) and
how much an error in each output channel moves the network's predictions: the diagonal
Fisher information of the outputs, estimated by back-propagating the log-likelihood of a
label sampled from the model's own prediction (no label is needed). With these, the
expected KL divergence between the original and a perturbed model is about
``0.5 * sum_layers sum_rows fisher[r] * dw_r^T C dw_r``: one unit (nats of KL) in which
every layer's error and every byte can be traded, whatever the layer.

For the layer that makes the logits, one pooled input cannot stand for every class: the
positions where row r is active, and the images where its class is in doubt, differ from row
to row. With real images ``collect_stats(row_curvature=key)`` also keeps, per image i and row
r, ``g_ri = d logit_r / d w_r`` and the weight ``p_ri (1 - p_ri)``: the exact Gauss-Newton
curvature of row r's logit (``output_aware.own_curvature``).

Three sources: images (``collect_stats``), random images shaped like the preprocessed
inputs (``synthetic_images``), or none: ``moment_stats`` propagates per-channel means and
variances through the network analytically (data-free).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeezenet.compression.pruning import prunable


@dataclass
class LayerStats:
    """Input statistics of one convolution (im2col columns of length ``d``) and its output Fisher."""

    name: str
    xx: np.ndarray  # (d, d) sum of x x^T over columns
    xsum: np.ndarray  # (d,) sum of x
    n: float  # columns seen
    fisher: np.ndarray  # (out_channels,) E_image[sum over positions of (dlogp/dy)^2]
    image_xx: np.ndarray | None = None  # (d, d) sum over images of xbar xbar^T, xbar = the image's mean column
    positions: float = 1.0  # columns per image
    images: int = 0
    # the last layer's own curvature (``collect_stats(row_curvature=...)``): per image and output
    # channel r, the gradient of logit r with respect to row r's weights, and p_r (1 - p_r)
    row_grads: np.ndarray | None = None  # (images, out_channels, d) float32
    row_weights: np.ndarray | None = None  # (images, out_channels)

    @property
    def mean(self) -> np.ndarray:
        return self.xsum / max(self.n, 1.0)

    @property
    def cov(self) -> np.ndarray:
        m = self.mean
        c = self.xx / max(self.n, 1.0) - np.outer(m, m)
        return (c + c.T) / 2

    @property
    def between(self) -> np.ndarray:
        """Covariance over images of each image's mean column: the part of the input that
        does not average out over an image's positions."""
        if self.image_xx is None or not self.images:
            return np.zeros_like(self.xx)
        m = self.mean
        c = self.image_xx / self.images - np.outer(m, m)
        return (c + c.T) / 2

    def hessian(self, coherence: float = 1.0) -> np.ndarray:
        """What the layer's output error costs per unit of Fisher: the per-position covariance
        plus, for an error that is the same at every position of an image (a weight error is)
        and that the network sums over positions (global pooling does), the between-image
        covariance once more per further position; ``coherence`` in [0, 1] scales that part."""
        return self.cov + coherence * max(self.positions - 1.0, 0.0) * self.between


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """{weight key: module} for every prunable convolution, in state-dict order."""
    modules = dict(model.named_modules())
    out = {}
    for key in prunable(model):
        module = modules.get(key.rsplit(".", 1)[0])
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            out[key] = module
    return out


def patch_columns(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B * L, C * kh * kw): the patches the convolution multiplies, as rows."""
    if module.kernel_size == (1, 1) and module.stride == (1, 1) and module.padding in ((0, 0), 0):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def calibration_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy whose ReLUs work out of place (gradient hooks on outputs need them)."""
    model = copy.deepcopy(model).float().eval()
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def collect_stats(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    fisher: bool = True,
    max_columns: int = 65536,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    row_curvature: str | None = None,
) -> dict[str, LayerStats]:
    """One pass over ``batches`` (image tensors): input moments of every convolution and, with
    ``fisher``, its output Fisher. Layers with many positions use a seeded random subset of
    at most ``max_columns`` columns per batch (moments only need a sample). ``row_curvature``
    names the layer whose outputs become the logits channel by channel (SqueezeNet's conv10,
    then ReLU and pooling): its per-image, per-row logit gradients are kept too."""
    model = calibration_copy(model)
    collector = _StatsPass(fisher, max_columns, torch.Generator().manual_seed(seed), row_curvature)
    handles = [module.register_forward_hook(collector.hook(key, module)) for key, module in conv_layers(model).items()]
    try:
        for images in batches:
            collector.run(model, images.float())
            if on_batch:
                on_batch(len(images))
    finally:
        for h in handles:
            h.remove()
    return collector.finish()


class _StatsPass:
    """What ``collect_stats`` accumulates while the model runs: each convolution's forward hook adds
    its input moments (and hooks its output's gradient for the Fisher); ``run`` drives one batch."""

    def __init__(self, fisher: bool, max_columns: int, gen: torch.Generator, row_curvature: str | None) -> None:
        self.fisher, self.max_columns, self.gen, self.row_curvature = fisher, max_columns, gen, row_curvature
        self.stats: dict[str, LayerStats] = {}
        self.pending: dict[str, tuple] = {}  # row curvature: (columns, output, Fisher hook) of this batch
        self.row_parts: list[tuple[np.ndarray, np.ndarray]] = []

    def hook(self, key: str, conv: nn.Conv2d):
        d = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        zeros = np.zeros((d, d))
        self.stats[key] = LayerStats(key, zeros, np.zeros(d), 0.0, np.zeros(conv.out_channels), zeros.copy())

        def forward_hook(module, inputs, output):
            x = inputs[0].detach().float()
            cols = patch_columns(module, x)
            per_image = cols.reshape(x.shape[0], -1, cols.shape[1])
            xbar = per_image.mean(1).double()
            if len(cols) > self.max_columns:
                cols = cols[torch.randperm(len(cols), generator=self.gen)[: self.max_columns]]
                scale = _columns_count(module, x) / self.max_columns
            else:
                scale = 1.0
            cols64 = cols.double()
            s = self.stats[key]
            s.xx += scale * (cols64.T @ cols64).numpy()
            s.xsum += scale * cols64.sum(0).numpy()
            s.n += scale * len(cols)
            s.image_xx += (xbar.T @ xbar).numpy()
            s.positions = per_image.shape[1]
            handle = None
            if self.fisher and output.requires_grad:
                handle = output.register_hook(lambda g, s=s: _add_fisher(s, g))
            if key == self.row_curvature:
                self.pending[key] = (per_image, output, handle)

        return forward_hook

    def run(self, model: nn.Module, images: torch.Tensor) -> None:
        """One batch forward (the hooks take the moments) and, for the Fisher or the logits' own
        rows, backward."""
        if self.fisher or self.row_curvature:
            images = images.clone().requires_grad_(True)  # so that every output gets a gradient
            with torch.enable_grad():
                logits = model(images)
                probs = logits.detach().float().softmax(1)
                if self.fisher:
                    sampled = torch.multinomial(probs, 1, generator=self.gen)[:, 0]
                    loss = F.cross_entropy(logits.float(), sampled, reduction="sum")
                    loss.backward(retain_graph=self.row_curvature is not None)
                if self.row_curvature:
                    self._keep_row_gradients(logits, probs)
        else:
            with torch.no_grad():
                model(images)
        for s in self.stats.values():
            s.images += len(images)

    def _keep_row_gradients(self, logits: torch.Tensor, probs: torch.Tensor) -> None:
        columns, output, handle = self.pending.pop(self.row_curvature)
        if handle is not None:  # the Fisher has its gradient: not the logits' sum too
            handle.remove()
        if logits.shape[1] == output.shape[1]:  # else not a channel-per-logit head: none kept
            self.row_parts.append(_row_gradients(logits, probs, columns, output))

    def finish(self) -> dict[str, LayerStats]:
        for s in self.stats.values():
            s.fisher /= max(s.images, 1)
        if self.row_curvature and self.row_parts:
            self.stats[self.row_curvature].row_grads = np.concatenate([g for g, _ in self.row_parts])
            self.stats[self.row_curvature].row_weights = np.concatenate([w for _, w in self.row_parts])
        return self.stats


def _row_gradients(logits, probs, columns, output) -> tuple[np.ndarray, np.ndarray]:
    """(g, p (1 - p)) of one batch: ``g[i, r] = d logit_r / d w_r`` for image i, the columns
    summed with the weight each position's output has in logit r (ReLU and pooling included).
    A head that maps each channel to its own logit (SqueezeNet's) makes the gradient of the
    logits' sum with respect to channel r that of logit r alone."""
    (slope,) = torch.autograd.grad(logits.sum(), output)  # the batch's graph is not used again
    slope = slope.reshape(slope.shape[0], slope.shape[1], -1)  # (B, O, positions)
    grads = torch.bmm(slope.float(), columns.detach().float())  # (B, O, d)
    return grads.numpy(), (probs * (1 - probs)).double().numpy()


def _columns_count(module: nn.Conv2d, x: torch.Tensor) -> int:
    h, w = x.shape[-2:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    return x.shape[0] * ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1) * ((w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def _add_fisher(s: LayerStats, grad: torch.Tensor) -> None:
    s.fisher += (grad.double() ** 2).sum((0, 2, 3)).numpy()


def synthetic_images(n: int, size: int, channels: int, pre, seed: int = 0, shapes: int = 200) -> torch.Tensor:
    """ "Dead leaves" images (overlapping discs of random colour with power-law radii, plus a
    little blurred texture), preprocessed as ``pre`` expects: calibration input for the
    data-free path (no user image is read). Their edges, flat regions and scale-free sizes
    give the first layers natural-image statistics (docs/compression.md)."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, channels, size, size)
    blur = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    kernel = (blur[:, None] * blur[None, :]).expand(channels, 1, 5, 5)
    for i in range(n):
        radius = (0.02 * size / (torch.rand(shapes, generator=gen) ** (1 / 1.5) + 1e-3)).clamp(max=0.6 * size)
        centre = torch.rand(shapes, 2, generator=gen) * size
        colours = (torch.rand(shapes + 1, channels, generator=gen) * 0.8 + 0.1).numpy()
        canvas = np.empty((size, size, channels), np.float32)
        canvas[:] = colours[0]
        grid = np.arange(size, dtype=np.float32)
        for (cy, cx), r, colour in zip(centre.tolist(), radius.tolist(), colours[1:], strict=True):
            y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)  # painted back to front: later discs occlude
            x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
            if y0 < y1 and x0 < x1:
                disc = (grid[y0:y1, None] - cy) ** 2 + (grid[None, x0:x1] - cx) ** 2 < r * r
                canvas[y0:y1, x0:x1][disc] = colour
        image = torch.from_numpy(canvas).permute(2, 0, 1)
        texture = torch.randn(1, channels, size, size, generator=gen)
        texture = F.conv2d(texture, kernel, padding=2, groups=channels)[0] * 0.3
        out[i] = (image + texture).clamp(0, 1)
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (out * pre.pixel_range - mean) / std
