"""The training loop in the style of torchvision's references: ``train_one_epoch`` and ``evaluate``.

One loop serves a laptop CPU and many GPUs: DDP, gradient accumulation, autocast (bf16
or fp16 with a grad scaler), channels_last, an EMA of the weights and step checkpoints
are all options of the same code path.

Determinism: ``ResumableSampler`` derives each epoch's order from (seed, epoch) and hands
every sample its own augmentation seed, so the data a step sees depends neither on the
number of DataLoader workers nor on where a run was resumed; with the RNG states in the
checkpoint this makes a resumed run bit-identical to an uninterrupted one (CPU).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Sampler
from tqdm import tqdm

from squeezenet.errors import NonFiniteLossError
from squeezenet.inference.scoring import score_batches
from squeezenet.training.distributed import DistInfo, all_reduce_sum, any_true
from squeezenet.training.metrics import MetricLogger


def sample_seed(seed: int, epoch: int, position: int) -> int:
    return ((seed & 0xFFFFFF) << 40) | ((epoch & 0xFFFF) << 24) | (position & 0xFFFFFF)


class ResumableSampler(Sampler):
    """Seeded shuffled order per epoch, sharded over ranks, startable at any micro-batch.

    Global micro-batch j holds the samples at positions [j*M*R, (j+1)*M*R) of the epoch's
    permutation (M = micro-batch, R = ranks); rank r takes every R-th of them. A single
    process with micro-batch M*R therefore sees exactly the same samples per step as R
    processes with M. Yields ``(index, augmentation seed)`` pairs.
    """

    def __init__(
        self, n: int, micro_batch: int, num_micro: int, rank: int = 0, world: int = 1, seed: int = 0, shuffle=True
    ) -> None:
        self.n, self.micro_batch, self.num_micro = n, micro_batch, num_micro
        self.rank, self.world, self.seed, self.shuffle = rank, world, seed, shuffle
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return g

    def __len__(self) -> int:
        return max(0, self.num_micro - self.start_batch) * self.micro_batch

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator()) if self.shuffle else torch.arange(self.n)
        block = self.micro_batch * self.world
        for j in range(self.start_batch, self.num_micro):
            for k in range(self.rank, block, self.world):
                position = j * block + k
                yield int(order[position]), sample_seed(self.seed, self.epoch, position)


class ModelEma:
    """Exponential moving average of a model's weights (warmed up as in timm)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.lerp_(p.detach(), 1.0 - d)
            else:
                e.copy_(p)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


@dataclass
class TrainContext:
    """What ``train_one_epoch`` needs besides the data; built by ``squeezenet.training.api``."""

    model: nn.Module  # the bare model (state dicts, EMA, export)
    net: nn.Module  # what runs forward: the model, DDP-wrapped and/or compiled
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    accum: int = 1
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: ModelEma | None = None
    channels_last: bool = False
    clip_grad_norm: float | None = None
    mixup_alpha: float = 0.0
    step: int = 0
    max_steps: int | None = None
    checkpoint_every: int = 0
    save: Callable[[int, int], None] | None = None  # (epoch, next micro-batch) -> None
    on_step: Callable[[TrainContext], None] | None = None
    on_skip: Callable[[str], None] | None = None
    progress: bool = False
    stopped: bool = False
    skipped: int = 0
    exchange: object | None = None  # the DDP gradient hook (squeezenet.training.communication)
    sent_bytes: int = 0  # what the hook handed to collectives, all steps of this invocation

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, images: torch.Tensor, targets: torch.Tensor):
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.to(self.device, non_blocking=True)


def mixup(images: torch.Tensor, targets: torch.Tensor, alpha: float):
    """Blend each image with another of the batch, by a weight ``lam`` ~ Beta(alpha, alpha)
    (Zhang et al. 2018): the loss then weighs both labels by it, so that the net learns
    linear behaviour between examples instead of memorising each one (a regulariser for
    small datasets). -> (images, partner targets or None, lam). The draws come from torch's
    CPU generator, which checkpoints save, so a resumed run mixes the same pairs."""
    if not alpha or images.shape[0] < 2:
        return images, None, 1.0
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(images.shape[0]).to(images.device)
    return images * lam + images[order] * (1.0 - lam), targets[order], lam


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def train_one_epoch(ctx: TrainContext, loader, epoch: int, start_batch: int = 0, total_batches: int | None = None):
    """One epoch (or its rest, from micro-batch ``start_batch``); returns the epoch's train metrics."""
    ctx.net.train()
    metrics = MetricLogger()
    params = _trainable(ctx.model)
    is_ddp = isinstance(ctx.net, nn.parallel.DistributedDataParallel) or hasattr(ctx.net, "no_sync")
    micro = start_batch
    total = total_batches if total_batches is not None else start_batch + len(loader)
    bar = tqdm(
        total=total,
        initial=start_batch,
        disable=not (ctx.progress and ctx.dist.is_main),
        desc=f"epoch {epoch}",
        unit="batch",
        dynamic_ncols=True,
    )
    ctx.optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    seen, first_step, sent_before = 0, ctx.step, ctx.sent_bytes
    try:
        for batch in loader:
            _count_skipped(ctx, batch, metrics)
            last_micro = micro % ctx.accum == ctx.accum - 1
            sync = ctx.net.no_sync() if (is_ddp and not last_micro and hasattr(ctx.net, "no_sync")) else None
            with sync or contextlib.nullcontext():  # DDP all-reduces only on the last micro-batch of a step
                loss, logits, targets = _forward_backward(ctx, batch, params, epoch)
            if batch.paths:
                n = len(batch.paths)
                seen += n
                correct = (logits.detach().argmax(1) == targets).sum().item()
                metrics.update(n=n, loss=float(loss.detach()), top1=correct / n)
            micro += 1
            if last_micro:
                _optimizer_step(ctx, params, epoch, micro)
            if not bar.disable:
                elapsed = time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{metrics['loss'].avg:.4f}",
                    lr=f"{ctx.optimizer.param_groups[0]['lr']:.3g}",
                    img_s=f"{seen * ctx.dist.world_size / max(elapsed, 1e-9):.0f}",
                    refresh=False,
                )
            bar.update(1)
            if ctx.stopped:
                break
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    metrics.synchronize(ctx.device)
    return {
        "train_loss": metrics["loss"].global_avg,
        "train_top1": metrics["top1"].global_avg,
        "lr": ctx.optimizer.param_groups[0]["lr"],
        "images_per_s": seen * ctx.dist.world_size / max(elapsed, 1e-9),
        "epoch_seconds": elapsed,
        "skipped": int(metrics["skipped"].total),
        "micro_batches": micro,
        **_traffic(ctx, ctx.step - first_step, ctx.sent_bytes - sent_before),
    }


def _traffic(ctx: TrainContext, steps: int, sent: int) -> dict:
    """Bytes per optimizer step that this worker's gradient hook handed to collectives (counted)."""
    if ctx.exchange is None:
        return {}
    return {"grad_compression": str(ctx.exchange.spec), "sent_bytes_per_step": sent / steps if steps else 0.0}


def _count_skipped(ctx: TrainContext, batch, metrics: MetricLogger) -> None:
    for message in batch.skipped:
        ctx.skipped += 1
        metrics.update(skipped=1)
        if ctx.on_skip:
            ctx.on_skip(message)


def _forward_backward(ctx: TrainContext, batch, params: list[nn.Parameter], epoch: int):
    """Loss of one micro-batch, its gradient accumulated (scaled by 1/accum); a non-finite
    loss on any rank stops every rank before the optimizer sees it."""
    logits = targets = None
    if batch.paths:
        images, targets = ctx.to_device(batch.images, batch.targets)
        images, partners, lam = mixup(images, targets, ctx.mixup_alpha)
        with ctx.autocast():
            logits = ctx.net(images)
        scores = logits.float()
        loss = ctx.criterion(scores, targets)
        if partners is not None:
            loss = lam * loss + (1.0 - lam) * ctx.criterion(scores, partners)
    else:  # every image of the batch was bad: a zero loss keeps DDP's all-reduce in step
        loss = sum((p * 0).sum() for p in params)
    bad = not bool(torch.isfinite(loss.detach()).all())
    if any_true(bad, ctx.device):
        raise NonFiniteLossError(
            f"loss became {float(loss.detach()):g} at epoch {epoch}, step {ctx.step + 1} "
            f"(lr {ctx.optimizer.param_groups[0]['lr']:.3g}); stopped, the last good checkpoint is kept "
            "(lower the learning rate or enable --clip-grad-norm)"
        )
    scaled = loss / ctx.accum
    if ctx.scaler is not None:
        ctx.scaler.scale(scaled).backward()
    else:
        scaled.backward()
    return loss, logits, targets


def _optimizer_step(ctx: TrainContext, params: list[nn.Parameter], epoch: int, micro: int) -> None:
    """Clip, step, schedule, EMA; then the step's hooks: on_step, a step checkpoint, --max-steps."""
    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
    if ctx.clip_grad_norm:
        norm = torch.nn.utils.clip_grad_norm_(params, ctx.clip_grad_norm)
        if ctx.scaler is None and not math.isfinite(float(norm)):
            raise NonFiniteLossError(
                f"gradient norm became {float(norm):g} at epoch {epoch}, step {ctx.step + 1}; "
                "stopped, the last good checkpoint is kept"
            )
    if ctx.scaler is not None:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.exchange is not None:
        ctx.sent_bytes += ctx.exchange.take_bytes()[0]
    ctx.scheduler.step()
    if ctx.ema is not None:
        ctx.ema.update(ctx.model)
    ctx.step += 1
    if ctx.on_step is not None:
        ctx.on_step(ctx)
    if ctx.save is not None and ctx.checkpoint_every and ctx.step % ctx.checkpoint_every == 0:
        ctx.save(epoch, micro)
    if ctx.max_steps is not None and ctx.step >= ctx.max_steps:
        ctx.stopped = True


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    num_classes: int,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    on_skip: Callable[[str], None] | None = None,
    progress: bool = False,
) -> dict:
    """Loss, top-1, top-5 (None for five classes or fewer), per-class accuracy and the confusion
    matrix (rows: true class) over all ranks, scored by ``squeezenet.inference.scoring``: the
    same loop as ``squeezenet eval``."""
    model.eval()

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
            return model(images)

    scores = score_batches(forward, loader, num_classes, device, on_skip, progress)
    scores.reduce(all_reduce_sum)
    skipped = int(all_reduce_sum(torch.tensor([len(scores.skipped)], dtype=torch.float64, device=device)).item())
    return {
        "loss": scores.loss,
        "top1": scores.top1,
        "top5": scores.top5,
        "n": scores.n,
        "skipped": skipped,
        "per_class": [acc or 0.0 for acc in scores.per_class()],
        "confusion": scores.confusion_matrix(),
    }
