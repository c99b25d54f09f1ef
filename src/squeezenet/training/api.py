"""``train(config)``: build data, model, optimizer from a ``TrainConfig`` and run the loop.

The run folder (``config.output``) receives ``config.json``, ``metrics.jsonl`` /
``metrics.csv``, the checkpoints ``last.pt`` and ``best.pt`` and the exported weights
``last.safetensors`` / ``best.safetensors`` (the project's format: architecture, class
names and preprocessing inside, so ``squeezenet eval/predict --weights`` use them as is),
``val_report/`` and, where the data has a test split, ``test_report/``.
Under ``torchrun`` every process runs this same function; rank 0 alone writes files.

This module puts the pieces together; each lives in its own: the device and precision
(``device``), the model and its preprocessing (``model_setup``), the images and their roles
(``run_data``), resuming (``resume``), the epoch loop (``loop``), checkpoints and exported
weights (``outputs``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from squeezenet.atomic import atomic_write_text
from squeezenet.data.preprocessing import build_transform
from squeezenet.errors import DataError, TrainingError
from squeezenet.training import distributed as dist_utils
from squeezenet.training import updates
from squeezenet.training.config import TrainConfig
from squeezenet.training.device import (
    amp_dtype,
    check_grad_compression,
    cpu_has_native_bf16,
    device_type,
    prepare_process,
    resolve_device,
    runnable,
)
from squeezenet.training.distributed import DistInfo, log_main
from squeezenet.training.engine import ModelEma, TrainContext
from squeezenet.training.loop import Run, run_line, skip_reporter
from squeezenet.training.metrics import RunLog
from squeezenet.training.model_setup import build_model, weights_info
from squeezenet.training.outputs import checkpoint_writer
from squeezenet.training.plan import RunPlan, plan_run
from squeezenet.training.recipes import Recipe, build_optimizer, build_scheduler, get_recipe
from squeezenet.training.resume import (
    Position,
    check_same_options,
    check_same_run,
    find_resume_checkpoint,
    open_run_dir,
    restore,
)
from squeezenet.training.run_data import RunData, evaluation_loader, open_run_data, training_loader, transformed
from squeezenet.weights import load_weights

# where they were defined before the split into modules: scripts import them from here
__all__ = ["TrainResult", "build_model", "cpu_has_native_bf16", "find_resume_checkpoint", "rewrite_update", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs: int
    best_top1: float | None  # the validation top-1 best was chosen by
    last: dict = field(default_factory=dict)
    best_weights: Path | None = None
    last_weights: Path | None = None
    history: list[dict] = field(default_factory=list)
    test_top1: float | None = None  # the test split, scored once with the last epoch's weights
    test: dict = field(default_factory=dict)  # test_loss, test_top1, test_top5, test_n, test_skipped
    protocol: str = ""  # which images validated and which were scored once (as logged)
    images: dict[str, int] = field(default_factory=dict)  # image count per role: train, val, test
    update: dict = field(default_factory=dict)  # with --update-of: update.json's sizes and hashes


def train(config: TrainConfig | dict, on_step: Callable[[TrainContext], None] | None = None) -> TrainResult:
    """Train or fine-tune per ``config``; ``on_step(ctx)`` runs after every optimizer step."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    cfg = updates.resolved(cfg)
    recipe = get_recipe(cfg.recipe)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    dist = dist_utils.init_distributed(device_type(cfg))
    try:
        return _train(cfg, recipe, dist, on_step)
    finally:
        dist_utils.cleanup()


def rewrite_update(config: TrainConfig | dict) -> dict:
    """A finished ``--update-of`` run's update written again from its last weights, as the run's
    end writes it (the new classifier's bits chosen on the run's validation images, with the
    preprocessing its weights carry): after a codec change, without training again. The test
    split is not read."""
    cfg = updates.resolved(config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config))
    if not cfg.update_of:
        raise TrainingError("rewrite_update: the run has no --update-of")
    run_dir = Path(cfg.output)
    last = run_dir / "last.safetensors"
    if not last.is_file():
        raise TrainingError(f"{run_dir}: no last.safetensors (has the run finished?)")
    device = resolve_device(cfg, 0)
    info = load_weights(last).info
    pre, data = info.preprocessing, open_run_data(cfg, info.classes)
    val = data.val.with_transform(build_transform(pre), pre.image_mode) if data.val is not None else None
    return updates.write_update(cfg, run_dir, last, evaluation_loader(cfg, val, DistInfo(), device), device)


def _train(cfg: TrainConfig, recipe: Recipe, dist: DistInfo, on_step) -> TrainResult:
    device = resolve_device(cfg, dist.local_rank)
    main = dist.is_main
    check_grad_compression(cfg, dist)
    prepare_process(cfg, device)
    run_dir, resume_path, state = open_run_dir(cfg)
    if state:
        check_same_options(state.get("config", {}), cfg, resume_path)
    # the hold-out is part of the data, drawn with one fixed seed for every run (see run_data)
    data = open_run_data(cfg, tuple(state["classes"]) if state else None)
    model, pre, arch, base_info, run_meta = _model(cfg, recipe, data, state, resume_path)
    data, pre = transformed(cfg, recipe, data, pre, main)
    plan = plan_run(cfg, recipe, dist.world_size, len(data.train))
    amp = amp_dtype(cfg, device, main)
    ctx = _context(cfg, recipe, model, plan, amp, device, dist, on_step)
    position = Position()
    if state:
        position = restore(state, model, ctx.optimizer, ctx.scheduler, ctx.scaler, ctx.ema, dist)
        ctx.step = position.step
        log_main(f"resumed {resume_path} at epoch {position.epoch}, batch {position.batch} (step {position.step})",
                 main)  # fmt: skip
    elif dist.rank:
        torch.manual_seed(cfg.seed + 1000 * dist.rank)  # dropout masks differ per rank
    ctx.net, ctx.exchange = runnable(model, cfg, dist, device, plan.warmup_steps)
    if state and ctx.exchange is not None:
        ctx.exchange.load_state_dict(_own(state.get("grad_exchange"), dist))
    sampler, train_loader = training_loader(cfg, plan, data.train, dist, device)
    info = weights_info(cfg, arch, model, pre, data.classes, base_info, recipe)
    log = RunLog(run_dir, main, cfg.tensorboard)
    if main:
        _start_run_dir(cfg, run_dir, log, position)
        log_main(run_line(cfg, recipe, plan, arch, model, data.classes, len(data.train), dist, device, amp))
    _announce(data, main)
    ctx.save = checkpoint_writer(ctx, cfg, run_dir, sampler, position, run_meta, info)
    val_loader = evaluation_loader(cfg, data.val, dist, device)
    run = Run(ctx, cfg, plan, run_dir, info, data.classes, train_loader, val_loader, sampler, log)
    try:
        history = run.epochs(position)
        test_loader = evaluation_loader(cfg, data.test, dist, device)  # made now: nothing reads it before
        test = run.score_test(test_loader, data.test.split if data.test is not None else "", history)
    finally:
        log.close()
    update = (updates.write_update(cfg, run_dir, run_dir / "last.safetensors", val_loader, device)
              if cfg.update_of and main else {})  # fmt: skip
    return TrainResult(
        run_dir=run_dir,
        steps=ctx.step,
        epochs=run.epoch,
        best_top1=position.best if val_loader is not None else None,
        last=history[-1] if history else {},
        best_weights=run_dir / "best.safetensors",
        last_weights=run_dir / "last.safetensors",
        history=history,
        test_top1=test.get("test_top1"),
        test=test,
        protocol=data.protocol,
        images=data.sizes(),
        update=update,
    )


def _model(cfg: TrainConfig, recipe: Recipe, data: RunData, state: dict | None, resume_path: Path | None):
    """(model, preprocessing, arch, base weights info, the run's identity a checkpoint keeps)."""
    num_classes = len(data.classes)
    if num_classes < 2:
        raise DataError(f"{cfg.data}: found {num_classes} class; training needs at least 2")
    in_chans = cfg.in_chans or (1 if data.train.mode == "L" else 3)
    torch.manual_seed(cfg.seed)
    model, pre, arch, base_info = build_model(cfg, recipe, num_classes, in_chans)
    if cfg.update_of and cfg.update_level == "codebooks":
        updates.pool_gradients(model, Path(cfg.update_of).read_bytes())
    run_meta = {"arch": arch, "num_classes": num_classes, "in_chans": in_chans, "train_images": len(data.train)}
    if state:
        check_same_run(state, resume_path, run_meta)
    if pre.crop < model.min_input_size:
        raise TrainingError(f"image size {pre.crop} is below {arch}'s minimum input of {model.min_input_size} pixels")
    return model, pre, arch, base_info, run_meta


def _optimization(model: nn.Module, recipe: Recipe, plan: RunPlan, amp):
    """(optimizer, scheduler, fp16 grad scaler or None, EMA of the weights or None)."""
    optimizer = build_optimizer(
        model.named_parameters(), recipe, plan.lr, plan.momentum, plan.weight_decay, plan.optimizer
    )
    scheduler = build_scheduler(optimizer, recipe, plan.total_steps, plan.warmup_steps)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    ema = ModelEma(model, plan.ema_decay) if plan.ema_decay > 0 else None
    return optimizer, scheduler, scaler, ema


def _context(cfg: TrainConfig, recipe: Recipe, model: nn.Module, plan: RunPlan, amp, device, dist, on_step):
    """The loop's context at the start of a run: the model on its device, the optimizer,
    schedule, scaler and EMA, every option of the step."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler, scaler, ema = _optimization(model, recipe, plan, amp)
    return TrainContext(
        model=model, net=model, criterion=nn.CrossEntropyLoss(label_smoothing=plan.label_smoothing),
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema, amp_dtype=amp,
        device=device, dist=dist, channels_last=cfg.channels_last,
        accum=plan.accum, clip_grad_norm=plan.clip_grad_norm, mixup_alpha=plan.mixup,
        max_steps=cfg.max_steps, checkpoint_every=cfg.checkpoint_every, progress=cfg.progress,
        on_step=on_step, on_skip=skip_reporter(dist.is_main),
    )  # fmt: skip


def _own(per_rank: list | None, dist: DistInfo):
    """This rank's entry of a per-rank list a checkpoint keeps (None when there is none)."""
    return per_rank[dist.rank % len(per_rank)] if per_rank else None


def _start_run_dir(cfg: TrainConfig, run_dir: Path, log: RunLog, position: Position) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n", TrainingError)
    log.truncate_from(position.epoch)  # a resumed run writes these epochs again


def _announce(data: RunData, main: bool) -> None:
    """Which images validate and which are scored once, before the first epoch."""
    if data.warning:
        log_main(data.warning, main)
    log_main(data.protocol, main)
