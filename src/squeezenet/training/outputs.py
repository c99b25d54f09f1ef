"""What a run leaves behind: checkpoints to resume from and weights to use.

``last.pt`` / ``best.pt`` hold every state the next step depends on (see
``squeezenet.training.checkpoint``); ``last.safetensors`` / ``best.safetensors`` are the
project's weights format (architecture, class names and preprocessing inside), BatchNorm
folded, so that ``squeezenet eval/predict --weights`` and every export take them as they are.
Under torchrun every rank takes part in gathering RNG states; rank 0 alone writes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from squeezenet.training import checkpoint as ckpt_io
from squeezenet.training import distributed as dist_utils
from squeezenet.training.config import TrainConfig
from squeezenet.training.engine import ResumableSampler, TrainContext
from squeezenet.training.resume import Position


def checkpoint_writer(
    ctx: TrainContext, cfg: TrainConfig, run_dir: Path, sampler: ResumableSampler, position: Position, run_meta, info
):
    """save(epoch, next micro-batch, names): every rank's RNG states gathered, rank 0 writes."""

    def save(epoch: int, batch: int, path_names=("last.pt",)) -> None:
        rngs = dist_utils.all_gather_object(ckpt_io.capture_rng_state())
        exchanges = dist_utils.all_gather_object(ctx.exchange.state_dict()) if ctx.exchange is not None else None
        if not ctx.dist.is_main:
            return
        obj = {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            **_states(ctx),
            "epoch": epoch,
            "batch": batch,
            "step": ctx.step,
            "best": position.best,
            "best_epoch": position.best_epoch,
            "rng": rngs,
            "grad_exchange": exchanges if exchanges and any(exchanges) else None,
            "sampler": {
                "seed": cfg.seed, "epoch": sampler.epoch, "batch": batch, "generator": sampler.generator().get_state()
            },
            "classes": list(info.classes),
            "run": run_meta,
            "config": cfg.to_dict(),
            "weights_info": info.to_metadata(),
        }  # fmt: skip
        for name in path_names:
            ckpt_io.atomic_save(obj, run_dir / name)

    return save


def _states(ctx: TrainContext) -> dict:
    """The state dicts of everything that learns or schedules."""
    return {
        "model": ctx.model.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "scheduler": ctx.scheduler.state_dict(),
        "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None,
        "ema": ctx.ema.state_dict() if ctx.ema is not None else None,
    }


def export(model: nn.Module, info, path: Path, main: bool, record: dict) -> None:
    """``model`` as project weights at ``path``, with the epoch it comes from in its provenance."""
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
