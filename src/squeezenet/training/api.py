"""``train(config)``: build data, model, optimizer from a ``TrainConfig`` and run the loop.

The run folder (``config.output``) receives ``config.json``, ``metrics.jsonl`` /
``metrics.csv``, the checkpoints ``last.pt`` and ``best.pt`` and the exported weights
``last.safetensors`` / ``best.safetensors`` (the project's format: architecture, class
names and preprocessing inside, so ``squeezenet eval/predict --weights`` use them as is).
Under ``torchrun`` every process runs this same function; rank 0 alone writes files.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from squeezenet.atomic import atomic_write_text
from squeezenet.data.folders import collate_skipping_bad
from squeezenet.data.labeled import LabeledImages
from squeezenet.data.preprocessing import IMAGENET_DEFAULT, Preprocessing, build_transform, grayscale
from squeezenet.data.sources import open_splits
from squeezenet.errors import DataError, TrainingError
from squeezenet.training import checkpoint as ckpt_io
from squeezenet.training import distributed as dist_utils
from squeezenet.training.allocator import keep_freed_memory
from squeezenet.training.config import DEFAULT_MODEL, TrainConfig
from squeezenet.training.engine import ModelEma, ResumableSampler, TrainContext, evaluate, train_one_epoch
from squeezenet.training.metrics import RunLog
from squeezenet.training.plan import RunPlan, plan_run
from squeezenet.training.recipes import (
    Recipe,
    build_optimizer,
    build_scheduler,
    build_train_transform,
    caffe_xavier_init,
    get_recipe,
    init_classifier,
)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs: int
    best_top1: float | None
    last: dict = field(default_factory=dict)
    best_weights: Path | None = None
    last_weights: Path | None = None
    history: list[dict] = field(default_factory=list)


def _log(message: str, main: bool = True) -> None:
    if main:
        print(message, file=sys.stderr, flush=True)


def _resolve_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device is available")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Without it,
    PyTorch emulates bf16 and autocast runs several times *slower* than fp32 (measured on an
    AVX2-only EPYC: 16 against 106 images/s for the CIFAR-10 model)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _amp_dtype(cfg: TrainConfig, device: torch.device, main: bool = True) -> torch.dtype | None:
    """``auto``: bf16 where the hardware has it (a CUDA GPU that supports it, a CPU with
    AVX512-BF16 or AMX), else fp32."""
    amp = cfg.amp
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    if amp == "auto":
        amp = "bf16" if native else "none"
    elif amp == "bf16" and not native:
        _log(f"squeezenet: warning: --amp bf16 on a {device.type} without native bfloat16 is emulated and slower "
             "than fp32 (--amp auto chooses for you)", main)  # fmt: skip
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("--amp fp16 needs CUDA; use --amp bf16 on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _preprocessing(
    cfg: TrainConfig, recipe: Recipe, base: Preprocessing | None, in_chans: int, own_size: int | None = None
) -> Preprocessing:
    """``own_size``: the input size a model from scratch was registered with, when it is not
    the usual one (squeezenet_cifar's 32 px, the Caffe v1.0's 227): it wins over the recipe's
    crop, which is ImageNet's."""
    pre = base or IMAGENET_DEFAULT
    crop = cfg.image_size or (pre.crop if base is not None else own_size or recipe.crop)
    if cfg.resize:
        if cfg.resize < crop:  # the crop would be mostly padding
            raise TrainingError(f"--resize {cfg.resize} is smaller than the {crop} px crop (--image-size)")
        resize: int | tuple[int, int] = cfg.resize
    elif base is not None and crop == base.crop:
        resize = pre.resize
    elif crop <= 64:
        resize = crop
    else:
        resize = 256 if crop in (224, 227) else round(crop * 256 / 224)
        if isinstance(pre.resize, tuple):
            resize = (resize, resize)
    pre = replace(pre, crop=crop, resize=resize)
    if in_chans == 1 and pre.channel_order != "L":
        pre = grayscale(pre)
    elif in_chans == 3 and pre.channel_order == "L":
        raise TrainingError("these weights are for one-channel images; use --in-chans 1")
    return pre


def _adapt_stem(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """conv1 for another channel count: summed for grayscale, averaged and tiled otherwise."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight.mean(dim=1, keepdim=True).repeat(1, in_chans, 1, 1)


def build_model(cfg: TrainConfig, recipe: Recipe, num_classes: int, in_chans: int):
    """-> (model, preprocessing, arch name, base weights info or None)."""
    from squeezenet.models import build_architecture, default_input_size, from_spec
    from squeezenet.models.registry import DEFAULT_INPUT_SIZE

    dropout = recipe.dropout if cfg.dropout is None else cfg.dropout
    if cfg.weights:
        from squeezenet.weights import load_weights

        loaded = load_weights(cfg.weights)
        info = loaded.info
        if cfg.model not in (None, info.arch):
            raise TrainingError(
                f"--model {cfg.model}: {cfg.weights} holds a {info.arch}, and fine-tuning keeps the weights' "
                "architecture (leave --model out)"
            )
        model = from_spec(info.spec, num_classes=num_classes, in_chans=in_chans, dropout=dropout)
        state = dict(loaded.state_dict)
        if in_chans != info.in_chans:
            state["features.0.weight"] = _adapt_stem(state["features.0.weight"], in_chans)
        if num_classes != info.num_classes:
            state.pop("classifier.1.weight", None)
            state.pop("classifier.1.bias", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier.1.") for k in missing):
            raise TrainingError(f"{cfg.weights}: weights do not fit {info.arch} (missing {missing[:3]})")
        if missing:  # a new conv10 for the new classes: zero weights, positive bias (no dead class)
            init_classifier(model, zero_weight=True)
        if cfg.freeze_features:
            model.features.requires_grad_(False)
        pre = _preprocessing(cfg, recipe, info.preprocessing, in_chans)
        return model, pre, info.arch, info
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, "dropout": dropout}
    own_size = None
    if cfg.spec is not None:
        model = from_spec(cfg.spec, **kwargs)
        arch = cfg.model or "squeezenet_custom"
    else:
        arch = cfg.model or DEFAULT_MODEL
        model = build_architecture(arch, **kwargs, **cfg.model_kwargs)
        registered = default_input_size(arch)
        own_size = registered if registered != DEFAULT_INPUT_SIZE else None
    if recipe.init == "xavier":
        caffe_xavier_init(model)
    init_classifier(model)  # positive conv10 bias: every class starts alive
    return model, _preprocessing(cfg, recipe, None, in_chans, own_size), arch, None


def _loader(ds: LabeledImages, batch: int, sampler, cfg: TrainConfig, device: torch.device, seed: int) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    workers = cfg.workers
    return DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping_bad,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=g,
    )


def _adapt_normalization(train_ds: LabeledImages, pre: Preprocessing, main: bool) -> Preprocessing:
    """``--adapt-normalization``: mean/std from the training images (see squeezenet.data.statistics)."""
    from squeezenet.data.statistics import adapted_preprocessing, pixel_statistics

    mean, std = pixel_statistics(train_ds)
    adapted = adapted_preprocessing(pre, mean, std)
    _log(f"normalisation from the data: pixel mean {np.round(mean, 1).tolist()}, std {np.round(std, 1).tolist()} "
         f"-> preprocessing mean {[round(m, 3) for m in adapted.mean]}, std {[round(s, 4) for s in adapted.std]}",
         main)  # fmt: skip
    return adapted


def _cache(train_ds: LabeledImages, val_ds: LabeledImages | None, workers: int, main: bool):
    """Both splits decoded once into memory (``--cache-images``)."""
    from squeezenet.data.cache import cache_in_memory

    start = time.perf_counter()
    train_ds = cache_in_memory(train_ds, workers)
    val_ds = cache_in_memory(val_ds, workers) if val_ds is not None else None
    _log(f"decoded {len(train_ds) + (len(val_ds) if val_ds else 0):,} images into memory "
         f"in {time.perf_counter() - start:.0f} s", main)  # fmt: skip
    return train_ds, val_ds


def find_resume_checkpoint(resume: str | None, output: str | Path) -> Path | None:
    """The checkpoint ``--resume`` names: "auto" is OUTPUT/last.pt when there is one (a
    fresh run otherwise), a folder its last.pt, else the file itself, which must exist."""
    if not resume:
        return None
    if resume == "auto":
        path = Path(output) / "last.pt"
        return path if path.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise TrainingError(f"--resume {resume}: no such checkpoint")
    return path


def train(config: TrainConfig | dict, on_step: Callable[[TrainContext], None] | None = None) -> TrainResult:
    """Train or fine-tune per ``config``; ``on_step(ctx)`` runs after every optimizer step."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    recipe = get_recipe(cfg.recipe)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device_pref = (
        "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    dist = dist_utils.init_distributed(device_pref)
    try:
        return _train(cfg, recipe, dist, on_step)
    finally:
        dist_utils.cleanup()


def _train(cfg: TrainConfig, recipe: Recipe, dist, on_step) -> TrainResult:
    device = _resolve_device(cfg, dist.local_rank)
    main = dist.is_main
    _prepare_process(cfg, device)
    run_dir, resume_path, state = _open_run_dir(cfg)
    if state:
        _check_same_options(state.get("config", {}), cfg, resume_path)

    # data; the hold-out (--val-split, ELPV's test cells) is part of the data, drawn with the same
    # fixed seed for every run: --seed varies initialisation and order, so runs compare on one val set
    classes = tuple(state["classes"]) if state else None
    train_ds, val_ds = open_splits(cfg.data, cfg.val_split, val_spec=cfg.val_data, classes=classes)
    num_classes = len(train_ds.classes)
    if num_classes < 2:
        raise DataError(f"{cfg.data}: found {num_classes} class; training needs at least 2")
    in_chans = cfg.in_chans or (1 if train_ds.mode == "L" else 3)

    # model, and the data's transforms (they follow the model's preprocessing)
    torch.manual_seed(cfg.seed)
    model, pre, arch, base_info = build_model(cfg, recipe, num_classes, in_chans)
    run_meta = {"arch": arch, "num_classes": num_classes, "in_chans": in_chans}
    if state:
        _check_same_model(state, resume_path, run_meta)
    if pre.crop < model.min_input_size:
        raise TrainingError(f"image size {pre.crop} is below {arch}'s minimum input of {model.min_input_size} pixels")
    train_ds, val_ds, pre = _transformed(cfg, recipe, train_ds, val_ds, pre, main)

    # optimization
    plan = plan_run(cfg, recipe, dist.world_size, len(train_ds))
    amp_dtype = _amp_dtype(cfg, device, main)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler, scaler, ema = _optimization(model, recipe, plan, amp_dtype)
    position = _Position()
    if state:
        position = _restore(state, model, optimizer, scheduler, scaler, ema, dist)
        _log(f"resumed {resume_path} at epoch {position.epoch}, batch {position.batch} (step {position.step})", main)
    elif dist.rank:
        torch.manual_seed(cfg.seed + 1000 * dist.rank)  # dropout masks differ per rank
    net = _runnable(model, cfg, dist, device)

    sampler, train_loader, val_loader = _loaders(cfg, plan, train_ds, val_ds, dist, device)

    info = _weights_info(cfg, arch, model, pre, train_ds.classes, base_info, recipe)
    log = RunLog(run_dir, main, cfg.tensorboard)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n", TrainingError)
        log.truncate_from(position.epoch)  # a resumed run writes these epochs again
        _log(_run_line(cfg, recipe, plan, arch, model, train_ds, val_ds, dist, device, amp_dtype), main)
    ctx = TrainContext(
        model=model,
        net=net,
        criterion=nn.CrossEntropyLoss(label_smoothing=plan.label_smoothing),
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        dist=dist,
        accum=plan.accum,
        amp_dtype=amp_dtype,
        scaler=scaler,
        ema=ema,
        channels_last=cfg.channels_last,
        clip_grad_norm=plan.clip_grad_norm,
        mixup_alpha=plan.mixup,
        step=position.step,
        max_steps=cfg.max_steps,
        checkpoint_every=cfg.checkpoint_every,
        on_step=on_step,
        on_skip=_skip_reporter(main),
        progress=cfg.progress,
    )
    ctx.save = _checkpoint_writer(ctx, cfg, run_dir, sampler, position, train_ds.classes, run_meta, info)
    run = _Run(ctx, cfg, plan, run_dir, info, train_ds.classes, train_loader, val_loader, sampler, log)
    try:
        history = run.epochs(position)
    finally:
        log.close()
    return TrainResult(
        run_dir=run_dir,
        steps=ctx.step,
        epochs=run.epoch,
        best_top1=position.best if val_loader is not None else None,
        last=history[-1] if history else {},
        best_weights=run_dir / "best.safetensors",
        last_weights=run_dir / "last.safetensors",
        history=history,
    )


def _prepare_process(cfg: TrainConfig, device: torch.device) -> None:
    """Threads, determinism and the seeds of this process, before anything draws a random number."""
    if device.type == "cpu":
        keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


def _open_run_dir(cfg: TrainConfig) -> tuple[Path, Path | None, dict | None]:
    """(run folder, checkpoint to resume or None, its contents); refuses to overwrite a run."""
    run_dir = Path(cfg.output)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"--output {run_dir}: exists and is not a folder")
    resume_path = find_resume_checkpoint(cfg.resume, run_dir)
    state = ckpt_io.load_checkpoint(resume_path) if resume_path else None
    if state is None and (run_dir / "last.pt").exists() and not cfg.resume:
        raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --output")
    return run_dir, resume_path, state


# options a resumed run may change: where files and data are, how fast and how visibly it runs,
# when it stops early. ``model`` is compared as the resolved architecture (_check_same_model).
_RESUME_MAY_CHANGE = frozenset(
    {"output", "resume", "data", "val_data", "workers", "threads", "progress", "tensorboard", "checkpoint_every",
     "max_steps", "eval_batch_size", "cache_images", "device", "amp", "compile", "channels_last", "deterministic",
     "model"}
)  # fmt: skip


def _check_same_options(started: dict, cfg: TrainConfig, resume_path: Path | None) -> None:
    """A resumed run continues the run it resumes: the schedule, batch geometry, recipe and
    seed come from the checkpoint's run, so a changed --lr or --epochs would be silently
    overridden (the scheduler state) or break the sample order (a new batch size). Refuse,
    naming each difference, instead."""
    now = cfg.to_dict()
    changed = [k for k in sorted(set(started) & set(now) - _RESUME_MAY_CHANGE) if started[k] != now[k]]
    if changed:
        diffs = ", ".join(f"--{k.replace('_', '-')} {_shown(started[k])} (now {_shown(now[k])})" for k in changed)
        raise TrainingError(
            f"--resume {resume_path}: the run was started with {diffs}; resume with its options, "
            f"or start a new run from its weights (--weights {Path(resume_path).parent / 'last.safetensors'})"
        )


def _shown(value) -> str:
    """An option's value as a user would write it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _check_same_model(state: dict, resume_path: Path | None, run_meta: dict) -> None:
    for key, value in run_meta.items():
        if state["run"][key] != value:
            raise TrainingError(f"{resume_path}: checkpoint is for another model ({key} {state['run'][key]})")


def _transformed(cfg: TrainConfig, recipe: Recipe, train_ds, val_ds, pre: Preprocessing, main: bool):
    """(train, val, preprocessing) with the training augmentation and the evaluation
    transform attached, normalisation adapted and images cached when asked."""
    if cfg.adapt_normalization:
        pre = _adapt_normalization(train_ds.with_transform(None, pre.image_mode), pre, main)
    train_ds = train_ds.with_transform(build_train_transform(pre, cfg.augment or recipe.augment), pre.image_mode)
    if val_ds is not None:
        val_ds = val_ds.with_transform(build_transform(pre), pre.image_mode)
    if cfg.cache_images:
        train_ds, val_ds = _cache(train_ds, val_ds, cfg.workers, main)
    return train_ds, val_ds, pre


@dataclass
class _Position:
    """Where the run stands: the next epoch and micro-batch, the optimizer step, the best score."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None


def _optimization(model: nn.Module, recipe: Recipe, plan: RunPlan, amp_dtype):
    """(optimizer, scheduler, fp16 grad scaler or None, EMA of the weights or None)."""
    optimizer = build_optimizer(
        model.named_parameters(), recipe, plan.lr, plan.momentum, plan.weight_decay, plan.optimizer
    )
    scheduler = build_scheduler(optimizer, recipe, plan.total_steps, plan.warmup_steps)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEma(model, plan.ema_decay) if plan.ema_decay > 0 else None
    return optimizer, scheduler, scaler, ema


def _loaders(cfg: TrainConfig, plan: RunPlan, train_ds, val_ds, dist, device: torch.device):
    """(resumable sampler, train loader, val loader or None); each rank validates its own shard."""
    sampler = ResumableSampler(len(train_ds), cfg.batch_size, plan.micro_batches, dist.rank, dist.world_size, cfg.seed)
    train_loader = _loader(train_ds, cfg.batch_size, sampler, cfg, device, cfg.seed)
    val_loader = None
    if val_ds is not None:
        shard = list(range(dist.rank, len(val_ds), dist.world_size))
        val_loader = _loader(val_ds, cfg.eval_batch_size or cfg.batch_size, shard, cfg, device, cfg.seed + 1)
    return sampler, train_loader, val_loader


def _restore(state: dict, model, optimizer, scheduler, scaler, ema, dist) -> _Position:
    """Everything a checkpoint holds back in place, this process's RNG states included."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if ema is not None and state.get("ema"):
        ema.load_state_dict(state["ema"])
    rngs = state["rng"]
    if len(rngs) != dist.world_size:
        warning = f"checkpoint from {len(rngs)} process(es), resuming on {dist.world_size}"
        _log(f"squeezenet: warning: {warning}", dist.is_main)
    ckpt_io.restore_rng_state(rngs[dist.rank % len(rngs)])
    return _Position(state["epoch"], state["batch"], state["step"], state.get("best"), state.get("best_epoch"))


def _runnable(model: nn.Module, cfg: TrainConfig, dist, device: torch.device) -> nn.Module:
    """What runs forward: the model, DDP-wrapped under torchrun, compiled on request."""
    net: nn.Module = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    return torch.compile(net) if cfg.compile else net


def _run_line(cfg, recipe, plan: RunPlan, arch, model, train_ds, val_ds, dist, device, amp_dtype) -> str:
    """The one line that says what this run is (on stderr before the first epoch)."""
    params = sum(p.numel() for p in model.parameters())
    validating = f", validating on {len(val_ds)}" if val_ds is not None else ""
    clip = f"gradient norm clipped at {plan.clip_grad_norm:g}, " if plan.clip_grad_norm else ""
    amp = f", {str(amp_dtype).split('.')[-1]}" if amp_dtype else ""
    return (
        f"training {arch} ({params:,} params) on {len(train_ds)} images, {len(train_ds.classes)} classes{validating}; "
        f"recipe {recipe.name} ({plan.optimizer}), {plan.epochs} epochs x {plan.steps_per_epoch} steps, "
        f"global batch {plan.global_batch} ({cfg.batch_size} x {plan.accum} accumulation x {dist.world_size} "
        f"process(es)), lr {plan.lr:g}, {clip}{device.type}{amp}"
    )


def _skip_reporter(main: bool) -> Callable[[str], None]:
    """on_skip for unreadable images: the first ten are named, the rest only counted."""
    count = [0]

    def on_skip(message: str) -> None:
        count[0] += 1
        if count[0] <= 10:
            _log(f"squeezenet: warning: skipped {message}", main)
        elif count[0] == 11:
            _log("squeezenet: warning: more bad images skipped (counted in metrics)", main)

    return on_skip


def _checkpoint_writer(ctx: TrainContext, cfg, run_dir: Path, sampler, position: _Position, classes, run_meta, info):
    """save(epoch, next micro-batch, names): every rank's RNG states gathered, rank 0 writes."""

    def save(epoch: int, batch: int, path_names=("last.pt",)) -> None:
        rngs = dist_utils.all_gather_object(ckpt_io.capture_rng_state())
        if not ctx.dist.is_main:
            return
        obj = {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "model": ctx.model.state_dict(),
            "optimizer": ctx.optimizer.state_dict(),
            "scheduler": ctx.scheduler.state_dict(),
            "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None,
            "ema": ctx.ema.state_dict() if ctx.ema is not None else None,
            "epoch": epoch,
            "batch": batch,
            "step": ctx.step,
            "best": position.best,
            "best_epoch": position.best_epoch,
            "rng": rngs,
            "sampler": {
                "seed": cfg.seed, "epoch": sampler.epoch, "batch": batch, "generator": sampler.generator().get_state()
            },
            "classes": list(classes),
            "run": run_meta,
            "config": cfg.to_dict(),
            "weights_info": info.to_metadata(),
        }  # fmt: skip
        for name in path_names:
            ckpt_io.atomic_save(obj, run_dir / name)

    return save


@dataclass
class _Run:
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

    def epochs(self, position: _Position) -> list[dict]:
        ctx, main = self.ctx, self.ctx.dist.is_main
        last_step = self.cfg.max_steps or self.plan.total_steps
        if position.step >= last_step:
            _log("nothing to do: the run already finished", main)
        history = []
        self.epoch = position.epoch
        while self.epoch < self.plan.epochs and not ctx.stopped and ctx.step < last_step:
            first = position.batch if self.epoch == position.epoch else 0
            history.append(self._one_epoch(self.epoch, first, position))
            self.epoch += 1
        return history

    def _one_epoch(self, epoch: int, first: int, position: _Position) -> dict:
        ctx, main = self.ctx, self.ctx.dist.is_main
        self.sampler.set_epoch(epoch, first)
        stats = train_one_epoch(ctx, self.train_loader, epoch, first, self.plan.micro_batches)
        eval_model = ctx.ema.module if ctx.ema is not None else ctx.model
        val = None
        if self.val_loader is not None:
            val = evaluate(
                eval_model, self.val_loader, ctx.device, len(self.classes), ctx.amp_dtype, ctx.channels_last,
                ctx.on_skip,
            )  # fmt: skip
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
        _log(_epoch_line(record, self.plan.epochs), main)
        if improved:
            ctx.save(*next_position, path_names=("best.pt", "last.pt"))
            _export(eval_model, self.info, self.run_dir / "best.safetensors", main, record)
        else:
            ctx.save(*next_position)
        _export(eval_model, self.info, self.run_dir / "last.safetensors", main, record)
        if val is not None and main:
            _write_val_report(self.run_dir / "val_report", self.classes, val["confusion"])
        return record

    def _record(self, epoch: int, stats: dict, val: dict | None) -> dict:
        record = {"epoch": epoch, "step": self.ctx.step, **{k: v for k, v in stats.items() if k != "micro_batches"}}
        if val is not None:
            record.update(
                val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], val_n=val["n"],
                val_skipped=val["skipped"],
            )  # fmt: skip
            if len(self.classes) <= 100:
                record["val_per_class"] = dict(zip(self.classes, val["per_class"], strict=True))
        return record


def _write_val_report(out: Path, classes, confusion: torch.Tensor) -> None:
    """per_class.csv / confusion.csv (+ .png when matplotlib is there) of the latest validation."""
    import importlib.util

    from squeezenet.training.reports import write_per_class

    plot = len(classes) <= 50 and importlib.util.find_spec("matplotlib") is not None
    write_per_class(out, classes, confusion.tolist(), plot=plot)


def _epoch_line(r: dict, epochs: int) -> str:
    line = f"epoch {r['epoch'] + 1}/{epochs}  loss {r['train_loss']:.4f}  train top-1 {r['train_top1']:.2%}"
    if "val_top1" in r:
        line += f"  val top-1 {r['val_top1']:.2%}"
        if r.get("val_top5") is not None:  # None for five classes or fewer
            line += f" top-5 {r['val_top5']:.2%}"
    line += f"  lr {r['lr']:.3g}  {r['images_per_s']:.0f} img/s"
    if r.get("skipped"):
        line += f"  ({r['skipped']} bad images skipped)"
    return line


def _weights_info(cfg, arch, model, pre, classes, base_info, recipe):
    from squeezenet.weights import WeightsInfo

    provenance = {
        "source": "squeezenet train",
        "recipe": recipe.name,
        "data": str(cfg.data),
        "seed": cfg.seed,
    }
    if base_info is not None:
        provenance["fine_tuned_from"] = base_info.provenance.get("source", str(cfg.weights))
    return WeightsInfo(
        arch=arch,
        spec=model.spec,
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        preprocessing=pre,
        classes=tuple(classes),
        provenance=provenance,
        license=base_info.license if base_info is not None else "",
    )


def _export(model: nn.Module, info, path: Path, main: bool, record: dict) -> None:
    if not main:
        return
    from squeezenet.models import fold_batchnorm
    from squeezenet.weights import LoadedWeights, write_safetensors

    provenance = {**info.provenance, "epoch": record.get("epoch"), "step": record.get("step")}
    if "val_top1" in record:
        provenance["val_top1"] = record["val_top1"]
    if model.spec.batch_norm:  # exported weights are a plain SqueezeNet: BN folded into the convolutions
        model = fold_batchnorm(model)
        provenance["batch_norm"] = "folded"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_safetensors(LoadedWeights(replace(info, spec=model.spec, provenance=provenance), state), path)
