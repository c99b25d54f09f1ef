"""``TrainConfig``: every option of a training run, as plain data (stored in checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from squeezenet.errors import TrainingError

# the choices of the options below, shared by the CLI and squeezenet.training.recipes
AUGMENTS = ("none", "light", "strong", "symmetric", "symmetric_jitter", "cutout")
RECIPE_NAMES = ("paper", "modern", "finetune")
OPTIMIZERS = ("sgd", "adamw")
DEFAULT_MODEL = "squeezenet1_1"


@dataclass
class TrainConfig:
    """Options of ``squeezenet.training.train``; ``None`` means "the recipe's default".

    batch_size is the micro-batch of one process; global_batch = batch_size x accumulation
    steps x processes (the paper's 512 is reached by gradient accumulation when needed).
    lr is the peak learning rate for the global batch. ``model`` and ``model_kwargs`` build a
    new model; with ``weights`` the architecture is the weights' (``model`` may only repeat it).
    """

    data: str
    output: str = "runs/train"
    val_data: str | None = None
    val_split: float = 0.0
    model: str | None = None  # DEFAULT_MODEL, or with ``weights`` the weights' own architecture
    model_kwargs: dict = field(default_factory=dict)
    spec: dict | None = None
    weights: str | None = None
    freeze_features: bool = False
    in_chans: int | None = None
    dropout: float | None = None
    recipe: str = "modern"
    optimizer: str | None = None
    epochs: int | None = None
    batch_size: int = 64
    global_batch: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    mixup: float | None = None
    ema_decay: float | None = None
    augment: str | None = None
    image_size: int | None = None
    resize: int | None = None
    clip_grad_norm: float | None = None
    workers: int = 2
    cache_images: bool = False
    adapt_normalization: bool = False
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    seed: int = 0
    threads: int | None = None
    resume: str | None = None
    checkpoint_every: int = 0
    max_steps: int | None = None
    eval_batch_size: int | None = None
    progress: bool = False
    tensorboard: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TrainingError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)

    def validate(self) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise TrainingError(message)

        need(bool(self.data), "no training data given")
        need(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        need(self.global_batch is None or self.global_batch >= 1, "global batch must be at least 1")
        need(self.epochs is None or self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(self.lr is None or self.lr > 0, f"learning rate must be positive, got {self.lr}")
        need(0.0 <= self.val_split < 1.0, f"--val-split must lie in [0, 1), got {self.val_split}")
        need(
            not (self.val_split and self.val_data),
            "--val-split and --val-data both name a validation set (the split's images would be used by neither)",
        )
        need(self.workers >= 0, "workers must be 0 or more")
        need(self.recipe in RECIPE_NAMES, f"unknown recipe {self.recipe!r}: expected {', '.join(RECIPE_NAMES)}")
        optimizers = " or ".join(OPTIMIZERS)
        need(self.optimizer in (None, *OPTIMIZERS), f"unknown optimizer {self.optimizer!r}: expected {optimizers}")
        need(self.amp in ("auto", "none", "bf16", "fp16"), f"unknown --amp {self.amp!r}: auto, none, bf16 or fp16")
        need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"), f"unknown device {self.device!r}")
        need(self.augment in (None, *AUGMENTS), f"unknown --augment {self.augment!r}: expected {', '.join(AUGMENTS)}")
        need(self.in_chans in (None, 1, 3), f"in_chans must be 1 or 3, got {self.in_chans}")
        need(self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout must lie in [0, 1)")
        need(self.image_size is None or self.image_size >= 8, "image size must be at least 8 pixels")
        need(self.checkpoint_every >= 0, "--checkpoint-every must be 0 (epochs only) or more")
        need(self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1")
        need(self.clip_grad_norm is None or self.clip_grad_norm >= 0, "--clip-grad-norm must be 0 (off) or more")
        need(self.ema_decay is None or 0.0 <= self.ema_decay < 1.0, "EMA decay must lie in [0, 1)")
        need(self.label_smoothing is None or 0.0 <= self.label_smoothing < 1.0, "label smoothing must lie in [0, 1)")
        need(self.mixup is None or self.mixup >= 0, "--mixup must be 0 (off) or more")
        need(not (self.freeze_features and not self.weights), "--freeze-features needs --weights to fine-tune from")
        need(self.weight_decay is None or self.weight_decay >= 0, "--weight-decay must be 0 or more")
        need(self.momentum is None or 0.0 <= self.momentum < 1.0, "--momentum must lie in [0, 1)")
        need(self.warmup_epochs is None or self.warmup_epochs >= 0, "--warmup-epochs must be 0 or more")
        need(self.resize is None or self.resize >= 8, "--resize must be at least 8 pixels")
        need(self.eval_batch_size is None or self.eval_batch_size >= 1, "--eval-batch-size must be at least 1")
        need(self.threads is None or self.threads >= 1, "--threads must be at least 1")
        need(0 <= self.seed < 2**32, f"--seed must lie in [0, 2**32), got {self.seed}")
        need(
            not (self.weights and self.model_kwargs),
            "--model-arg builds a new model; fine-tuning --weights keeps their architecture "
            "(--dropout and --in-chans still apply)",
        )
