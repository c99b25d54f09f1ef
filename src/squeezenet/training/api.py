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

from squeezenet.data.folders import collate_skipping_bad
from squeezenet.data.preprocessing import IMAGENET_DEFAULT, Preprocessing, build_transform, grayscale
from squeezenet.data.sources import LabeledImages, open_splits
from squeezenet.errors import DataError
from squeezenet.training import checkpoint as ckpt_io
from squeezenet.training import distributed as dist_utils
from squeezenet.training.allocator import keep_freed_memory
from squeezenet.training.config import DEFAULT_MODEL, TrainConfig
from squeezenet.training.engine import ModelEma, ResumableSampler, TrainContext, evaluate, train_one_epoch
from squeezenet.training.errors import TrainingError
from squeezenet.training.metrics import RunLog
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


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    amp = cfg.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("--amp fp16 needs CUDA; use --amp bf16 on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _preprocessing(cfg: TrainConfig, recipe: Recipe, base: Preprocessing | None, in_chans: int) -> Preprocessing:
    pre = base or IMAGENET_DEFAULT
    crop = cfg.image_size or (pre.crop if base is not None else recipe.crop)
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
    from squeezenet.models import create_model, from_spec

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
    if cfg.spec is not None:
        model = from_spec(cfg.spec, **kwargs)
        arch = cfg.model or "squeezenet_custom"
    else:
        arch = cfg.model or DEFAULT_MODEL
        model = create_model(arch, **kwargs, **cfg.model_kwargs)
    if recipe.init == "xavier":
        caffe_xavier_init(model)
    init_classifier(model)  # positive conv10 bias: every class starts alive
    return model, _preprocessing(cfg, recipe, None, in_chans), arch, None


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


def _find_resume(cfg: TrainConfig, run_dir: Path) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        path = run_dir / "last.pt"
        return path if path.is_file() else None
    path = Path(cfg.resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise TrainingError(f"--resume {cfg.resume}: no such checkpoint")
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
    run_dir = Path(cfg.output)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"--output {run_dir}: exists and is not a folder")
    resume_path = _find_resume(cfg, run_dir)
    state = ckpt_io.load_checkpoint(resume_path) if resume_path else None
    if state is None and (run_dir / "last.pt").exists() and not cfg.resume:
        raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --output")

    # data
    classes = tuple(state["classes"]) if state else None
    # the hold-out (--val-split, ELPV's test cells) is part of the data, drawn with the same fixed
    # seed for every run: --seed varies initialisation and order, so runs compare on one val set
    train_ds, val_ds = open_splits(cfg.data, cfg.val_split, val_spec=cfg.val_data, classes=classes)
    num_classes = len(train_ds.classes)
    if num_classes < 2:
        raise DataError(f"{cfg.data}: found {num_classes} class; training needs at least 2")
    in_chans = cfg.in_chans or (1 if train_ds.mode == "L" else 3)

    # model
    torch.manual_seed(cfg.seed)
    model, pre, arch, base_info = build_model(cfg, recipe, num_classes, in_chans)
    if state:
        for key in ("arch", "num_classes", "in_chans"):
            if state["run"][key] != {"arch": arch, "num_classes": num_classes, "in_chans": in_chans}[key]:
                raise TrainingError(f"{resume_path}: checkpoint is for another model ({key} {state['run'][key]})")
    if min(pre.crop, pre.crop) < model.min_input_size:
        raise TrainingError(f"image size {pre.crop} is below {arch}'s minimum input of {model.min_input_size} pixels")
    if cfg.adapt_normalization:
        pre = _adapt_normalization(train_ds.with_transform(None, pre.image_mode), pre, dist.is_main)
    augment = cfg.augment or recipe.augment
    train_ds = train_ds.with_transform(build_train_transform(pre, augment), pre.image_mode)
    if val_ds is not None:
        val_ds = val_ds.with_transform(build_transform(pre), pre.image_mode)
    if cfg.cache_images:
        train_ds, val_ds = _cache(train_ds, val_ds, cfg.workers, dist.is_main)

    # batch geometry
    per_step = cfg.batch_size * dist.world_size
    global_batch = cfg.global_batch or recipe.global_batch or per_step
    if global_batch % per_step:
        raise TrainingError(
            f"global batch {global_batch} is not a multiple of batch size {cfg.batch_size} "
            f"x {dist.world_size} process(es)"
        )
    accum = global_batch // per_step
    steps_per_epoch = len(train_ds) // global_batch
    if steps_per_epoch == 0:
        raise DataError(
            f"{cfg.data}: {len(train_ds)} training images, fewer than one global batch of {global_batch} "
            "(lower --global-batch / --batch-size)"
        )
    epochs = cfg.epochs or recipe.epochs
    total_steps = epochs * steps_per_epoch
    optimizer_kind = cfg.optimizer or recipe.optimizer
    if optimizer_kind != recipe.optimizer and not cfg.lr:
        raise TrainingError(f"--optimizer {optimizer_kind} is not the {recipe.name} recipe's; give its --lr too")
    lr = cfg.lr or recipe.lr * global_batch / recipe.ref_batch * (recipe.pretrained_lr_scale if cfg.weights else 1.0)
    momentum = recipe.momentum if cfg.momentum is None else cfg.momentum
    weight_decay = recipe.weight_decay if cfg.weight_decay is None else cfg.weight_decay
    warmup = recipe.warmup_epochs if cfg.warmup_epochs is None else cfg.warmup_epochs
    smoothing = recipe.label_smoothing if cfg.label_smoothing is None else cfg.label_smoothing
    ema_decay = recipe.ema_decay if cfg.ema_decay is None else cfg.ema_decay
    clip = recipe.clip_grad_norm if cfg.clip_grad_norm is None else cfg.clip_grad_norm
    mixup = recipe.mixup if cfg.mixup is None else cfg.mixup
    amp_dtype = _amp_dtype(cfg, device)

    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.named_parameters(), recipe, lr, momentum, weight_decay, optimizer_kind)
    warmup_steps = round(warmup * steps_per_epoch)
    if cfg.warmup_epochs is None:  # the recipe's warmup never takes more than a quarter of a short run
        warmup_steps = min(warmup_steps, total_steps // 4)
    scheduler = build_scheduler(optimizer, recipe, total_steps, warmup_steps)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEma(model, ema_decay) if ema_decay > 0 else None

    start_epoch, start_batch, step, best, best_epoch = 0, 0, 0, None, None
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
        best, best_epoch = state.get("best"), state.get("best_epoch")
        rngs = state["rng"]
        if len(rngs) != dist.world_size:
            _log(f"squeezenet: warning: checkpoint from {len(rngs)} process(es), resuming on {dist.world_size}", main)
        ckpt_io.restore_rng_state(rngs[dist.rank % len(rngs)])
        _log(f"resumed {resume_path} at epoch {start_epoch}, batch {start_batch} (step {step})", main)
    elif dist.rank:
        torch.manual_seed(cfg.seed + 1000 * dist.rank)  # dropout masks differ per rank

    net: nn.Module = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    if cfg.compile:
        net = torch.compile(net)

    # data loading
    num_micro = steps_per_epoch * accum
    sampler = ResumableSampler(len(train_ds), cfg.batch_size, num_micro, dist.rank, dist.world_size, cfg.seed)
    train_loader = _loader(train_ds, cfg.batch_size, sampler, cfg, device, cfg.seed)
    val_loader = None
    if val_ds is not None:
        shard = list(range(dist.rank, len(val_ds), dist.world_size))
        val_loader = _loader(val_ds, cfg.eval_batch_size or cfg.batch_size, shard, cfg, device, cfg.seed + 1)

    info = _weights_info(cfg, arch, model, pre, train_ds.classes, base_info, recipe)
    log = RunLog(run_dir, main, cfg.tensorboard)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        log.truncate_from(start_epoch)  # a resumed run writes these epochs again
        _log(
            f"training {arch} ({sum(p.numel() for p in model.parameters()):,} params) on {len(train_ds)} images, "
            f"{num_classes} classes{f', validating on {len(val_ds)}' if val_ds is not None else ''}; "
            f"recipe {recipe.name} ({optimizer_kind}), {epochs} epochs x {steps_per_epoch} steps, "
            f"global batch {global_batch} "
            f"({cfg.batch_size} x {accum} accumulation x {dist.world_size} process(es)), lr {lr:g}, "
            f"{f'gradient norm clipped at {clip:g}, ' if clip else ''}"
            f"{device.type}{', ' + str(amp_dtype).split('.')[-1] if amp_dtype else ''}",
            main,
        )
    skip_messages = [0]

    def on_skip(message: str) -> None:
        skip_messages[0] += 1
        if skip_messages[0] <= 10:
            _log(f"squeezenet: warning: skipped {message}", main)
        elif skip_messages[0] == 11:
            _log("squeezenet: warning: more bad images skipped (counted in metrics)", main)

    ctx = TrainContext(
        model=model,
        net=net,
        criterion=nn.CrossEntropyLoss(label_smoothing=smoothing),
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        dist=dist,
        accum=accum,
        amp_dtype=amp_dtype,
        scaler=scaler,
        ema=ema,
        channels_last=cfg.channels_last,
        clip_grad_norm=clip,
        mixup_alpha=mixup,
        step=step,
        max_steps=cfg.max_steps,
        checkpoint_every=cfg.checkpoint_every,
        on_step=on_step,
        on_skip=on_skip,
        progress=cfg.progress,
    )
    meta = {"best": best, "best_epoch": best_epoch}
    run_meta = {"arch": arch, "num_classes": num_classes, "in_chans": in_chans}

    def save(epoch: int, batch: int, path_names=("last.pt",)) -> None:
        rngs = dist_utils.all_gather_object(ckpt_io.capture_rng_state())
        if not main:
            return
        gen = sampler.generator()
        obj = {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "epoch": epoch,
            "batch": batch,
            "step": ctx.step,
            "best": meta["best"],
            "best_epoch": meta["best_epoch"],
            "rng": rngs,
            "sampler": {"seed": cfg.seed, "epoch": sampler.epoch, "batch": batch, "generator": gen.get_state()},
            "classes": list(train_ds.classes),
            "run": run_meta,
            "config": cfg.to_dict(),
            "weights_info": info.to_metadata(),
        }
        for name in path_names:
            ckpt_io.atomic_save(obj, run_dir / name)

    ctx.save = save
    eval_model = ema.module if ema is not None else model
    history: list[dict] = []
    last_record: dict = {}
    epoch = start_epoch
    try:
        if step >= (cfg.max_steps or total_steps) and main:
            _log("nothing to do: the run already finished", main)
        while epoch < epochs and not ctx.stopped and ctx.step < (cfg.max_steps or total_steps):
            first = start_batch if epoch == start_epoch else 0
            sampler.set_epoch(epoch, first)
            train_stats = train_one_epoch(ctx, train_loader, epoch, first, num_micro)
            val = None
            if val_loader is not None:
                val = evaluate(eval_model, val_loader, device, num_classes, amp_dtype, cfg.channels_last, on_skip)
            finished = not ctx.stopped or train_stats["micro_batches"] >= num_micro
            record = {
                "epoch": epoch,
                "step": ctx.step,
                **{k: v for k, v in train_stats.items() if k != "micro_batches"},
            }
            if val is not None:
                record.update(
                    val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], val_n=val["n"],
                    val_skipped=val["skipped"],
                )  # fmt: skip
                if num_classes <= 100:
                    record["val_per_class"] = dict(zip(train_ds.classes, val["per_class"], strict=True))
            score = val["top1"] if val is not None else -train_stats["train_loss"]
            improved = meta["best"] is None or score > meta["best"]
            if improved:
                meta["best"], meta["best_epoch"] = score, epoch
            record["best_top1" if val is not None else "best_score"] = meta["best"]
            next_pos = (epoch + 1, 0) if finished else (epoch, train_stats["micro_batches"])
            if not finished:
                record["partial"] = True  # stopped by --max-steps; a resumed run rewrites this epoch
            log.log_epoch(record)
            history.append(record)
            last_record = record
            if main:
                _log(_epoch_line(record, epochs), main)
            if improved:
                save(*next_pos, path_names=("best.pt", "last.pt"))
                _export(eval_model, info, run_dir / "best.safetensors", main, record)
            else:
                save(*next_pos)
            _export(eval_model, info, run_dir / "last.safetensors", main, record)
            if val is not None and main:
                _write_val_report(run_dir / "val_report", train_ds.classes, val["confusion"])
            epoch += 1
    finally:
        log.close()
    return TrainResult(
        run_dir=run_dir,
        steps=ctx.step,
        epochs=epoch,
        best_top1=meta["best"] if val_loader is not None else None,
        last=last_record,
        best_weights=run_dir / "best.safetensors",
        last_weights=run_dir / "last.safetensors",
        history=history,
    )


def _write_val_report(out: Path, classes, confusion: torch.Tensor) -> None:
    """per_class.csv / confusion.csv (+ .png when matplotlib is there) of the latest validation."""
    import importlib.util

    from squeezenet.training.reports import write_per_class

    plot = len(classes) <= 50 and importlib.util.find_spec("matplotlib") is not None
    write_per_class(out, classes, confusion.tolist(), plot=plot)


def _epoch_line(r: dict, epochs: int) -> str:
    line = f"epoch {r['epoch'] + 1}/{epochs}  loss {r['train_loss']:.4f}  train top-1 {r['train_top1']:.2%}"
    if "val_top1" in r:
        line += f"  val top-1 {r['val_top1']:.2%} top-5 {r['val_top5']:.2%}"
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
