"""``TrainConfig``: every option of a training run, as plain data (stored in checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from squeezenet.bounds import COUNT, NON_NEGATIVE_COUNT, Bounds
from squeezenet.compression.choices import DEFAULT_UPDATE_LEVEL, UPDATE_LEVELS
from squeezenet.errors import TrainingError

# the choices of the options below, shared by the CLI and squeezenet.training.recipes
AUGMENTS = ("none", "light", "strong", "symmetric", "symmetric_jitter", "cutout")
RECIPE_NAMES = ("paper", "modern", "finetune")
OPTIMIZERS = ("sgd", "adamw")
DEFAULT_MODEL = "squeezenet1_1"
# the share of every class of the training images that validates when the data has a test
# split but no validation split of its own (``val_split`` None): ``best`` is chosen on them,
# and the test split is scored once, after the last epoch
DEFAULT_VAL_SPLIT = 0.1
# the draw of that hold-out, the same for every run: ``--seed`` varies initialisation and
# sample order, so runs with other seeds compare on one validation set (and resume exactly)
VAL_SPLIT_SEED = 0

# what DDP workers send each other (squeezenet.training.communication): torch's comm hooks
GRAD_COMPRESSIONS = ("none", "fp16", "bf16", "powersgd")
DEFAULT_GRAD_COMPRESSION = "none"
DEFAULT_POWERSGD_RANK = 2


@dataclass(frozen=True)
class GradCompression:
    """A parsed ``--grad-compression`` value: the hook, and PowerSGD's rank."""

    kind: str = DEFAULT_GRAD_COMPRESSION
    rank: int = DEFAULT_POWERSGD_RANK

    def __str__(self) -> str:
        return f"powersgd:{self.rank}" if self.kind == "powersgd" else self.kind


def parse_grad_compression(text: str) -> GradCompression:
    """'none', 'fp16', 'bf16', 'powersgd' or 'powersgd:RANK' (RANK a positive integer)."""
    kind, _, rank = str(text).strip().lower().partition(":")
    choices = "none, fp16, bf16, powersgd or powersgd:RANK"
    if kind not in GRAD_COMPRESSIONS or (rank and kind != "powersgd"):
        raise TrainingError(f"--grad-compression {text!r}: expected {choices}")
    if not rank:
        return GradCompression(kind)
    if not rank.isdigit() or int(rank) < 1:
        raise TrainingError(f"--grad-compression {text!r}: the PowerSGD rank must be a positive integer")
    return GradCompression(kind, int(rank))


_UNIT = Bounds(0.0, 1.0, high_open=True)  # [0, 1)
_NON_NEGATIVE = Bounds(0.0)
# the range of every numeric option, checked by validate() and parsed by `squeezenet train`
BOUNDS: dict[str, Bounds] = {
    "val_split": _UNIT,
    "epochs": COUNT,
    "batch_size": COUNT,
    "global_batch": COUNT,
    "lr": Bounds(0.0, low_open=True),
    "momentum": _UNIT,
    "weight_decay": _NON_NEGATIVE,
    "warmup_epochs": _NON_NEGATIVE,
    "label_smoothing": _UNIT,
    "mixup": _NON_NEGATIVE,
    "ema_decay": _UNIT,
    "dropout": _UNIT,
    "image_size": Bounds(8, integer=True),
    "resize": Bounds(8, integer=True),
    "clip_grad_norm": _NON_NEGATIVE,
    "workers": NON_NEGATIVE_COUNT,
    "seed": Bounds(0, 2**32, high_open=True, integer=True),
    "threads": COUNT,
    "checkpoint_every": NON_NEGATIVE_COUNT,
    "max_steps": COUNT,
    "eval_batch_size": COUNT,
}


@dataclass
class TrainConfig:
    """Options of ``squeezenet.training.train``; ``None`` means "the recipe's default".

    batch_size is the micro-batch of one process; global_batch = batch_size x accumulation
    steps x processes (the paper's 512 is reached by gradient accumulation when needed).
    lr is the peak learning rate for the global batch. ``model`` and ``model_kwargs`` build a
    new model; with ``weights`` the architecture is the weights' (``model`` may only repeat it).
    ``val_split``: None holds out ``DEFAULT_VAL_SPLIT`` of the training images when the data's
    own held-out split is a test split (and validates on a val/ split as it is); 0 holds out
    nothing (validation on the data's own held-out split, even a test split); a fraction holds
    out that share. See ``squeezenet.training.run_data``.
    """

    data: str
    output: str = "runs/train"
    val_data: str | None = None
    val_split: float | None = None
    model: str | None = None  # DEFAULT_MODEL, or with ``weights`` the weights' own architecture
    model_kwargs: dict = field(default_factory=dict)
    spec: dict | None = None
    weights: str | None = None
    freeze_features: bool = False
    update_of: str | None = None  # a .sqz: fine-tune from it and write the result as an update of it
    update_level: str = DEFAULT_UPDATE_LEVEL
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
    grad_compression: str = DEFAULT_GRAD_COMPRESSION
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
        for name, bounds in BOUNDS.items():
            value = getattr(self, name)
            need(
                value is None or bounds.contains(value),
                f"--{name.replace('_', '-')} must {bounds.describe()}, got {value}",
            )
        need(
            not (self.val_split and self.val_data),
            "--val-split and --val-data both name a validation set (the split's images would be used by neither)",
        )
        need(self.recipe in RECIPE_NAMES, f"unknown recipe {self.recipe!r}: expected {', '.join(RECIPE_NAMES)}")
        optimizers = " or ".join(OPTIMIZERS)
        need(self.optimizer in (None, *OPTIMIZERS), f"unknown optimizer {self.optimizer!r}: expected {optimizers}")
        need(self.amp in ("auto", "none", "bf16", "fp16"), f"unknown --amp {self.amp!r}: auto, none, bf16 or fp16")
        need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"), f"unknown device {self.device!r}")
        need(self.augment in (None, *AUGMENTS), f"unknown --augment {self.augment!r}: expected {', '.join(AUGMENTS)}")
        parse_grad_compression(self.grad_compression)
        need(self.in_chans in (None, 1, 3), f"in_chans must be 1 or 3, got {self.in_chans}")
        need(not (self.freeze_features and not self.weights), "--freeze-features needs --weights to fine-tune from")
        need(
            self.update_level in UPDATE_LEVELS,
            f"unknown --update-level {self.update_level!r}: expected {', '.join(UPDATE_LEVELS)}",
        )
        need(
            not (self.weights and self.model_kwargs),
            "--model-arg builds a new model; fine-tuning --weights keeps their architecture "
            "(--dropout and --in-chans still apply)",
        )
