"""Resuming: which checkpoint ``--resume`` names, whether it belongs to this run, and putting it back.

A resumed run continues the run it resumes, bit for bit: the checkpoint restores every
state (model, optimizer, scheduler, scaler, EMA, RNGs, sampler position), and the run's
options, model and training images must be the ones it was started with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from squeezenet.errors import TrainingError
from squeezenet.training import checkpoint as ckpt_io
from squeezenet.training.config import TrainConfig
from squeezenet.training.distributed import DistInfo, log_main


@dataclass
class Position:
    """Where the run stands: the next epoch and micro-batch, the optimizer step, the best score."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None


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


def open_run_dir(cfg: TrainConfig) -> tuple[Path, Path | None, dict | None]:
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
# when it stops early. ``model`` is compared as the resolved architecture (check_same_run), the
# training images by their count (a new --val-data would change the default hold-out).
RESUME_MAY_CHANGE = frozenset(
    {"output", "resume", "data", "val_data", "workers", "threads", "progress", "tensorboard", "checkpoint_every",
     "max_steps", "eval_batch_size", "cache_images", "device", "amp", "compile", "channels_last", "deterministic",
     "model"}
)  # fmt: skip


def check_same_options(started: dict, cfg: TrainConfig, resume_path: Path | None) -> None:
    """A resumed run continues the run it resumes: the schedule, batch geometry, recipe and
    seed come from the checkpoint's run, so a changed --lr or --epochs would be silently
    overridden (the scheduler state) or break the sample order (a new batch size). Refuse,
    naming each difference, instead."""
    now = cfg.to_dict()
    changed = [k for k in sorted(set(started) & set(now) - RESUME_MAY_CHANGE) if started[k] != now[k]]
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


def check_same_run(state: dict, resume_path: Path | None, run_meta: dict) -> None:
    """The checkpoint's model and training images are this run's (``run_meta``: arch, classes,
    channels, training images; a checkpoint older than a key is not checked on it)."""
    started = state["run"]
    for key, value in run_meta.items():
        if started.get(key, value) == value:
            continue
        if key == "train_images":
            raise TrainingError(
                f"{resume_path}: the run trained on {started[key]} images, this one would on {value} "
                "(another dataset, or another validation hold-out: --val-split, --val-data)"
            )
        raise TrainingError(f"{resume_path}: checkpoint is for another model ({key} {started[key]})")


def restore(state: dict, model, optimizer, scheduler, scaler, ema, dist: DistInfo) -> Position:
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
        log_main(f"squeezenet: warning: checkpoint from {len(rngs)} process(es), resuming on {dist.world_size}",
                 dist.is_main)  # fmt: skip
    ckpt_io.restore_rng_state(rngs[dist.rank % len(rngs)])
    return Position(state["epoch"], state["batch"], state["step"], state.get("best"), state.get("best_epoch"))
