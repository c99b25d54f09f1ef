"""``RunPlan``: the batch geometry and every hyperparameter of a run, resolved once.

A ``TrainConfig`` leaves most values to the recipe (``None``); the plan holds what the run
actually uses, so the loop, the log line and the checks read one object instead of
repeating "the option if given, else the recipe's".
"""

from __future__ import annotations

from dataclasses import dataclass

from squeezenet.errors import DataError, TrainingError
from squeezenet.training.config import TrainConfig
from squeezenet.training.recipes import Recipe


@dataclass(frozen=True)
class RunPlan:
    global_batch: int  # images per optimizer step, all processes together
    accum: int  # micro-batches accumulated per optimizer step
    steps_per_epoch: int
    epochs: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    warmup_steps: int
    label_smoothing: float
    ema_decay: float
    clip_grad_norm: float
    mixup: float

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def micro_batches(self) -> int:
        """Micro-batches per epoch and process (what the sampler yields)."""
        return self.steps_per_epoch * self.accum


def _option(value, default):
    return default if value is None else value


def plan_run(cfg: TrainConfig, recipe: Recipe, world_size: int, train_images: int) -> RunPlan:
    """The plan of a run on ``train_images`` images over ``world_size`` processes.

    Without ``--lr`` the recipe's lr scales linearly with the global batch (and by the
    recipe's factor when fine-tuning); the recipe's warmup never takes more than a quarter
    of a short run, a warmup given explicitly is kept as given.
    """
    per_step = cfg.batch_size * world_size
    global_batch = cfg.global_batch or recipe.global_batch or per_step
    if global_batch % per_step:
        raise TrainingError(
            f"global batch {global_batch} is not a multiple of batch size {cfg.batch_size} x {world_size} process(es)"
        )
    steps_per_epoch = train_images // global_batch
    if steps_per_epoch == 0:
        raise DataError(
            f"{cfg.data}: {train_images} training images, fewer than one global batch of {global_batch} "
            "(lower --global-batch / --batch-size)"
        )
    epochs = cfg.epochs or recipe.epochs
    optimizer = cfg.optimizer or recipe.optimizer
    if optimizer != recipe.optimizer and not cfg.lr:
        raise TrainingError(f"--optimizer {optimizer} is not the {recipe.name} recipe's; give its --lr too")
    lr = cfg.lr or recipe.lr * global_batch / recipe.ref_batch * (recipe.pretrained_lr_scale if cfg.weights else 1.0)
    warmup_steps = round(_option(cfg.warmup_epochs, recipe.warmup_epochs) * steps_per_epoch)
    if cfg.warmup_epochs is None:
        warmup_steps = min(warmup_steps, epochs * steps_per_epoch // 4)
    return RunPlan(
        global_batch=global_batch,
        accum=global_batch // per_step,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        optimizer=optimizer,
        lr=lr,
        momentum=_option(cfg.momentum, recipe.momentum),
        weight_decay=_option(cfg.weight_decay, recipe.weight_decay),
        warmup_steps=warmup_steps,
        label_smoothing=_option(cfg.label_smoothing, recipe.label_smoothing),
        ema_decay=_option(cfg.ema_decay, recipe.ema_decay),
        clip_grad_norm=_option(cfg.clip_grad_norm, recipe.clip_grad_norm),
        mixup=_option(cfg.mixup, recipe.mixup),
    )
