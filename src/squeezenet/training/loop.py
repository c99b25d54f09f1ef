"""The epoch loop of a run: train, validate, log, checkpoint and export, epoch after epoch; then
the test images, once.

``best`` is the epoch with the top validation top-1 (without validation images: the lowest
training loss). The test split, where the run has one, is scored after the last epoch with
that epoch's weights (the EMA's where there is one, as exported to ``last.safetensors``),
so the figure reported chose nothing (see ``squeezenet.training.run_data``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from squeezenet.training.config import TrainConfig
from squeezenet.training.distributed import log_main
from squeezenet.training.engine import ResumableSampler, TrainContext, evaluate, train_one_epoch
from squeezenet.training.metrics import RunLog
from squeezenet.training.outputs import export
from squeezenet.training.plan import RunPlan
from squeezenet.training.resume import Position

_SCORES = ("loss", "top1", "top5", "n", "skipped")  # what a scoring records, as val_* or test_*


@dataclass
class Run:
    """The epoch loop: train, validate, log, checkpoint and export, epoch after epoch."""

    ctx: TrainContext
    cfg: TrainConfig
    plan: RunPlan
    run_dir: Path
    info: object
    classes: tuple[str, ...]
    train_loader: DataLoader
    val_loader: DataLoader | None
    sampler: ResumableSampler
    log: RunLog
    epoch: int = 0

    @property
    def main(self) -> bool:
        return self.ctx.dist.is_main

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated, tested and exported: the EMA of the weights where there is one."""
        return self.ctx.ema.module if self.ctx.ema is not None else self.ctx.model

    def epochs(self, position: Position) -> list[dict]:
        ctx = self.ctx
        last_step = self.cfg.max_steps or self.plan.total_steps
        if position.step >= last_step:
            log_main("nothing to do: the run already finished", self.main)
        history = []
        self.epoch = position.epoch
        while self.epoch < self.plan.epochs and not ctx.stopped and ctx.step < last_step:
            first = position.batch if self.epoch == position.epoch else 0
            history.append(self._one_epoch(self.epoch, first, position))
            self.epoch += 1
        return history

    def _one_epoch(self, epoch: int, first: int, position: Position) -> dict:
        ctx = self.ctx
        self.sampler.set_epoch(epoch, first)
        stats = train_one_epoch(ctx, self.train_loader, epoch, first, self.plan.micro_batches)
        val = self._score(self.val_loader) if self.val_loader is not None else None
        finished = not ctx.stopped or stats["micro_batches"] >= self.plan.micro_batches
        record = self._record(epoch, stats, val)
        score = val["top1"] if val is not None else -stats["train_loss"]
        improved = position.best is None or score > position.best
        if improved:
            position.best, position.best_epoch = score, epoch
        record["best_top1" if val is not None else "best_score"] = position.best
        next_position = (epoch + 1, 0) if finished else (epoch, stats["micro_batches"])
        if not finished:
            record["partial"] = True  # stopped by --max-steps; a resumed run rewrites this epoch
        self.log.log_epoch(record)
        log_main(epoch_line(record, self.plan.epochs), self.main)
        if improved:
            ctx.save(*next_position, path_names=("best.pt", "last.pt"))
            export(self.eval_model, self.info, self.run_dir / "best.safetensors", self.main, record)
        else:
            ctx.save(*next_position)
        export(self.eval_model, self.info, self.run_dir / "last.safetensors", self.main, record)
        if val is not None and self.main:
            write_report(self.run_dir / "val_report", self.classes, val["confusion"])
        return record

    def _score(self, loader: DataLoader) -> dict:
        ctx = self.ctx
        return evaluate(
            self.eval_model, loader, ctx.device, len(self.classes), ctx.amp_dtype, ctx.channels_last, ctx.on_skip
        )

    def _record(self, epoch: int, stats: dict, val: dict | None) -> dict:
        record = {"epoch": epoch, "step": self.ctx.step, **{k: v for k, v in stats.items() if k != "micro_batches"}}
        if val is not None:
            record.update({f"val_{k}": val[k] for k in _SCORES})
            if len(self.classes) <= 100:
                record["val_per_class"] = dict(zip(self.classes, val["per_class"], strict=True))
        return record

    def score_test(self, loader: DataLoader | None, name: str, history: list[dict]) -> dict:
        """The test images scored once, after this invocation's last epoch, with its weights;
        the scores join that epoch's record (in ``history`` and metrics.jsonl) as test_*.
        {} when there is no test split or no epoch was run."""
        if loader is None or not history:
            return {}
        scores = self._score(loader)
        fields = {f"test_{k}": scores[k] for k in _SCORES}
        history[-1].update(fields)
        self.log.amend_last(fields)
        if self.main:
            write_report(self.run_dir / "test_report", self.classes, scores["confusion"])
        log_main(final_score_line(fields, name, history[-1], self.plan.epochs), self.main)
        return fields


def write_report(out: Path, classes, confusion: torch.Tensor) -> None:
    """per_class.csv / confusion.csv (+ .png when matplotlib is there) of a scoring."""
    import importlib.util

    from squeezenet.training.reports import write_per_class

    plot = len(classes) <= 50 and importlib.util.find_spec("matplotlib") is not None
    write_per_class(out, classes, confusion.tolist(), plot=plot)


def _top(r: dict, prefix: str) -> str:
    line = f"{prefix} top-1 {r[f'{prefix}_top1']:.2%}"
    if r.get(f"{prefix}_top5") is not None:  # None for five classes or fewer
        line += f" top-5 {r[f'{prefix}_top5']:.2%}"
    return line


def epoch_line(r: dict, epochs: int) -> str:
    line = f"epoch {r['epoch'] + 1}/{epochs}  loss {r['train_loss']:.4f}  train top-1 {r['train_top1']:.2%}"
    if "val_top1" in r:
        line += "  " + _top(r, "val")
    line += f"  lr {r['lr']:.3g}  {r['images_per_s']:.0f} img/s"
    if "sent_bytes_per_step" in r:
        line += f"  sent {r['sent_bytes_per_step'] / 1e6:.3g} MB/step ({r['grad_compression']})"
    if r.get("skipped"):
        line += f"  ({r['skipped']} bad images skipped)"
    return line


def final_score_line(scores: dict, name: str, last: dict, epochs: int) -> str:
    stopped = ", stopped early by --max-steps" if last.get("partial") else ""
    return (
        f"{_top(scores, 'test')} on the {scores['test_n']} {name} images, scored once with the weights of the "
        f"last epoch ({last['epoch'] + 1}/{epochs}, step {last['step']}{stopped})"
    )


def run_line(cfg, recipe, plan: RunPlan, arch, model, classes, train_images: int, dist, device, amp_dtype) -> str:
    """The one line that says what this run is (on stderr before the first epoch)."""
    params = sum(p.numel() for p in model.parameters())
    clip = f"gradient norm clipped at {plan.clip_grad_norm:g}, " if plan.clip_grad_norm else ""
    amp = f", {str(amp_dtype).split('.')[-1]}" if amp_dtype else ""
    if dist.enabled:
        amp += f", gradients exchanged: {cfg.grad_compression}"
    return (
        f"training {arch} ({params:,} params) on {train_images} images, {len(classes)} classes; "
        f"recipe {recipe.name} ({plan.optimizer}), {plan.epochs} epochs x {plan.steps_per_epoch} steps, "
        f"global batch {plan.global_batch} ({cfg.batch_size} x {plan.accum} accumulation x {dist.world_size} "
        f"process(es)), lr {plan.lr:g}, {clip}{device.type}{amp}"
    )


def skip_reporter(main: bool) -> Callable[[str], None]:
    """on_skip for unreadable images: the first ten are named, the rest only counted."""
    count = [0]

    def on_skip(message: str) -> None:
        count[0] += 1
        if count[0] <= 10:
            log_main(f"squeezenet: warning: skipped {message}", main)
        elif count[0] == 11:
            log_main("squeezenet: warning: more bad images skipped (counted in metrics)", main)

    return on_skip
