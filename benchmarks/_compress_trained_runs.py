"""The training engine's runs in ``bench_compress_trained``: the base model, and retraining after
each pruning round with the masks held fixed (the engine's ``on_step`` hook re-applies them)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench_train_cifar10 import CIFAR_SPEC, cifar_config
from squeezenet.models.spec import FireSpec
from squeezenet.training import TrainConfig, train
from squeezenet.weights import LoadedWeights, load_weights, write_safetensors

# --tiny: the CIFAR layout at a tenth of its width, so that every stage runs in seconds
TINY_SPEC = replace(CIFAR_SPEC, stem_channels=16, fires=tuple(FireSpec(4, 8, 8) for _ in CIFAR_SPEC.fires))


def deadline_hook(minutes: float | None):
    """Stop the run after ``minutes`` (the engine finishes the epoch's evaluation and export)."""
    if not minutes:
        return None
    end = time.monotonic() + minutes * 60

    def hook(ctx) -> None:
        if time.monotonic() > end:
            ctx.stopped = True

    return hook


def mask_hook(masks: dict[str, torch.Tensor]):
    """Fixed masks: zero the pruned weights after every optimiser step (model and EMA copy)."""
    cache: dict = {}

    @torch.no_grad()
    def hook(ctx) -> None:
        modules = [ctx.model] + ([ctx.ema.module] if ctx.ema is not None else [])
        for module in modules:
            params = dict(module.named_parameters())
            for k, m in masks.items():
                p = params[k]
                key = (k, p.device, p.dtype)
                if key not in cache:
                    cache[key] = m.to(device=p.device, dtype=p.dtype)
                p.mul_(cache[key])

    return hook


def train_base(args, work: Path) -> Path:
    out = work / "base"
    if (out / "last.pt").exists():
        raise SystemExit(
            f"{out} already holds a run: pass --weights {out / 'last.safetensors'} to reuse it, "
            "or remove the folder / choose another --work"
        )
    cfg = cifar_config(
        augment=args.augment,
        data=args.data,
        output=str(out),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        amp=args.amp,
        max_steps=args.max_steps,
        seed=args.seed,
        **({"spec": TINY_SPEC.to_dict()} if args.tiny else {}),
    )
    result = train(cfg, on_step=deadline_hook(args.max_minutes))
    print(f"base training: {result.steps} steps, {result.epochs} epoch(s)", file=sys.stderr)
    return result.last_weights


def retrain_fn(args, work: Path, info, log: list):
    """``iterative_prune``'s train_fn: a fine-tuning run of the engine from the pruned weights."""
    counter = [0]

    def train_fn(model, keeper) -> None:
        counter[0] += 1
        rdir = work / f"prune_round{counter[0]}"
        if rdir.exists():
            shutil.rmtree(rdir)  # this script's own scratch folder
        rdir.mkdir(parents=True)
        pruned = rdir / "pruned.safetensors"
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        write_safetensors(LoadedWeights(info, state), pruned)
        cfg = TrainConfig(
            data=args.data,
            output=str(rdir / "run"),
            weights=str(pruned),
            recipe="modern",
            epochs=args.retrain_epochs,
            batch_size=args.batch_size,
            lr=args.retrain_lr,
            weight_decay=5e-4,
            warmup_epochs=0,
            ema_decay=args.retrain_ema,
            dropout=0.1,
            image_size=None,  # the trained model's own input size (its weights carry it)
            augment=args.retrain_augment,
            workers=args.workers,
            amp=args.amp,
            max_steps=args.retrain_max_steps,
            seed=args.seed,  # initialisation and order only: held-out images never move between rounds
        )
        t0 = time.perf_counter()
        result = train(cfg, on_step=mask_hook(keeper.masks))
        retrained = load_weights(result.last_weights).state_dict
        model.load_state_dict(retrained)
        keeper.step()
        density = {k: float((retrained[k] != 0).float().mean()) for k in keeper.masks}
        leaked = sum(int(((retrained[k] != 0) & ~m).sum()) for k, m in keeper.masks.items())
        log.append(
            {
                "round": counter[0],
                "steps": result.steps,
                "seconds": round(time.perf_counter() - t0, 1),
                "val_top1_engine": result.last.get("val_top1"),
                "min_density": round(min(density.values()), 4) if density else 1.0,
                "pruned_weights_nonzero_after_retrain": leaked,
            }
        )
        print(f"prune round {counter[0]}: {json.dumps(log[-1])}", file=sys.stderr)

    return train_fn
