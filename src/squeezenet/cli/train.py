"""``squeezenet train``: train or fine-tune any model of the zoo (one process, or many under torchrun)."""

from __future__ import annotations

import argparse
import json


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _number(option: str):
    """The argparse type of a numeric option: its range from ``TrainConfig``'s ``BOUNDS``."""
    from squeezenet.cli.common import ranged
    from squeezenet.training.config import BOUNDS

    return ranged(BOUNDS[option])


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model on class folders, a tar archive or ELPV",
        description="Train or fine-tune; for several processes launch it with torchrun (see docs/training.md).",
    )
    for add_options in (_data_options, _model_options, _optimization_options, _input_options, _execution_options):
        add_options(p)
    p.set_defaults(run=run)


def _data_options(p) -> None:
    from squeezenet.training.config import DEFAULT_VAL_SPLIT

    p.add_argument("data", help="class-folder tree (train/, val/ or flat), .tar/.tar.gz archive, or elpv / elpv:2")
    p.add_argument("--output", "-o", help="run folder (checkpoints, metrics, weights; default runs/train)")
    p.add_argument("--val-data", help="separate validation dataset (default: val/ of DATA, or a hold-out of train/)")
    p.add_argument(
        "--val-split",
        type=_number("val_split"),
        help=f"hold out this fraction of every class of the training images to validate on (default: "
        f"{DEFAULT_VAL_SPLIT:g} when DATA has a test split but no val/ split, which then is scored once, after the "
        "last epoch; 0: validate on DATA's own held-out split, even a test split)",
    )


def _model_options(p) -> None:
    p.add_argument(
        "--model", "-m", help="registered model name (squeezenet info; default squeezenet1_1, with --weights their own)"
    )
    p.add_argument(
        "--model-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
        help="model builder argument, e.g. base_e=32 for squeezenet_design (repeatable)",
    )  # fmt: skip
    p.add_argument("--weights", "-w", help="fine-tune from these weights (file or catalogue tag); new head")
    p.add_argument("--freeze-features", action="store_true", default=None, help="train only the classifier (conv10)")
    from squeezenet.compression.choices import DEFAULT_UPDATE_LEVEL, UPDATE_LEVELS

    p.add_argument(
        "--update-of",
        metavar="BASE.sqz",
        help="fine-tune from this .sqz and write the result as an update of it (update.sqz, update.sqzd)",
    )
    p.add_argument(
        "--update-level",
        choices=UPDATE_LEVELS,
        help=f"with --update-of, what trains: head (the classifier), codebooks (shared values, biases, classifier; "
        f"masks and indices frozen) or full (default {DEFAULT_UPDATE_LEVEL})",
    )
    p.add_argument("--in-chans", type=int, choices=(1, 3), help="input channels (1: grayscale; default from data)")
    p.add_argument("--dropout", type=_number("dropout"))


def _optimization_options(p) -> None:
    from squeezenet.training.config import OPTIMIZERS, RECIPE_NAMES  # the choices, defined once

    p.add_argument(
        "--recipe", choices=RECIPE_NAMES,
        help="default modern; finetune: AdamW for pretrained weights (see docs/training.md)",
    )  # fmt: skip
    p.add_argument("--epochs", type=_number("epochs"))
    p.add_argument("--batch-size", "-b", type=_number("batch_size"), help="micro-batch per process (default 64)")
    p.add_argument(
        "--global-batch",
        type=_number("global_batch"),
        help="images per optimizer step; reached by gradient accumulation",
    )
    p.add_argument(
        "--lr", type=_number("lr"), help="peak learning rate (default: the recipe's, scaled to the global batch)"
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the recipe's (finetune: adamw)")
    p.add_argument("--momentum", type=_number("momentum"), help="SGD momentum, or AdamW's beta1")
    p.add_argument("--weight-decay", type=_number("weight_decay"))
    p.add_argument("--warmup-epochs", type=_number("warmup_epochs"))
    p.add_argument("--label-smoothing", type=_number("label_smoothing"))
    p.add_argument(
        "--mixup",
        type=_number("mixup"),
        metavar="ALPHA",
        help="blend pairs of images and their labels by a Beta(ALPHA, ALPHA) weight (0: off, the default; try 0.2)",
    )
    p.add_argument("--ema-decay", type=_number("ema_decay"), help="EMA of the weights (0 disables)")
    p.add_argument(
        "--clip-grad-norm",
        type=_number("clip_grad_norm"),
        help="max gradient norm (0: off; default: the recipe's, modern 1.0)",
    )


def _input_options(p) -> None:
    from squeezenet.training.config import AUGMENTS

    p.add_argument(
        "--augment",
        choices=AUGMENTS,
        help="symmetric: light + vertical flips + 90-degree turns (images without an up, e.g. solar cells); "
        "symmetric_jitter: symmetric + small rotations, shifts, scaling, brightness and contrast changes; "
        "cutout: light + a quarter-size square erased half the time (a regulariser for nets with capacity to spare)",
    )
    p.add_argument(
        "--image-size",
        type=_number("image_size"),
        help="training crop side (default: the weights', the model's own (squeezenet_cifar: 32) or the recipe's)",
    )
    p.add_argument("--resize", type=_number("resize"), help="shorter side before cropping (evaluation)")
    p.add_argument(
        "--workers", "-j", type=_number("workers"), help="decoding processes per training process (default 2)"
    )
    p.add_argument(
        "--adapt-normalization",
        action="store_true",
        default=None,
        help="mean/std from the training images, so that they reach pretrained weights with ImageNet's contrast",
    )
    p.add_argument(
        "--cache-images",
        action="store_true",
        default=None,
        help="decode every image once and keep it in memory (small images)",
    )


def _execution_options(p) -> None:
    from squeezenet.training.config import DEFAULT_GRAD_COMPRESSION, DEFAULT_POWERSGD_RANK, GRAD_COMPRESSIONS

    p.add_argument("--device", help="auto (the default), cpu, cuda or cuda:N")
    p.add_argument(
        "--amp",
        choices=("auto", "none", "bf16", "fp16"),
        help="autocast (auto, the default: bf16 where the GPU or CPU has it natively, else fp32)",
    )
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument(
        "--grad-compression",
        metavar="{" + ",".join(GRAD_COMPRESSIONS) + "[:RANK]}",
        help=f"under torchrun: what workers send (default {DEFAULT_GRAD_COMPRESSION}; fp16/bf16: 16-bit buckets; "
        f"powersgd[:RANK]: low-rank factors with error feedback, rank {DEFAULT_POWERSGD_RANK} unless given)",
    )
    p.add_argument("--deterministic", action="store_true", default=None, help="deterministic algorithms only")
    p.add_argument("--seed", type=_number("seed"), help="initialisation and sample order (default 0)")
    p.add_argument("--threads", type=_number("threads"), help="CPU threads for PyTorch")
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CKPT",
        help="continue OUTPUT/last.pt (or CKPT) with the options it was started with; fresh if there is none",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint-every", type=_number("checkpoint_every"), metavar="STEPS", help="also checkpoint every N steps"
    )
    p.add_argument("--max-steps", type=_number("max_steps"), help="stop after this many optimizer steps")
    p.add_argument("--eval-batch-size", type=_number("eval_batch_size"))
    p.add_argument("--progress", action="store_true", default=None, help="progress bar (loss, lr, images/s, ETA)")
    p.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard scalars")


def config_from_args(args: argparse.Namespace):
    """The options given on the command line (the rest: TrainConfig's defaults); with
    ``--resume``, the run's own options fill in what is not given, so that the short
    ``squeezenet train DATA -o RUN --resume`` continues a run as it was started, and an
    option given anew is checked against the run's by the engine."""
    from squeezenet.training import TrainConfig

    keys = set(TrainConfig.__dataclass_fields__) - {"model_kwargs", "spec"}
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if args.model_arg:
        given["model_kwargs"] = dict(args.model_arg)
    cfg = TrainConfig(**given)
    if cfg.resume:  # cfg.output: the given folder or TrainConfig's default
        cfg = TrainConfig(**{**_run_options(cfg.resume, cfg.output), **given})
    return cfg


def _run_options(resume: str, output: str) -> dict:
    """The options the checkpoint's run was started with ({} when a fresh run starts)."""
    from squeezenet.training import TrainConfig
    from squeezenet.training.checkpoint import load_checkpoint
    from squeezenet.training.resume import find_resume_checkpoint

    path = find_resume_checkpoint(resume, output)
    if path is None:
        return {}
    started = load_checkpoint(path).get("config") or {}
    # where this invocation writes and when it stops are its own; weights name their model
    skip = {"output", "resume", "max_steps"} | ({"model"} if started.get("weights") else set())
    return {k: v for k, v in started.items() if k in TrainConfig.__dataclass_fields__ and k not in skip}


def run(args: argparse.Namespace) -> int:
    from squeezenet.training import train

    result = train(config_from_args(args))
    from squeezenet.training.distributed import launched_by_torchrun

    if not launched_by_torchrun() or int(__import__("os").environ.get("RANK", 0)) == 0:
        best = f", best val top-1 {result.best_top1:.2%}" if result.best_top1 is not None else ""
        test = f", test top-1 {result.test_top1:.2%} (last epoch)" if result.test_top1 is not None else ""
        print(f"{result.run_dir}: {result.steps} steps{best}{test}; weights {result.best_weights}")
        if result.update:
            u = result.update
            print(f"{result.run_dir / 'update.sqz'}: {u['sqz_bytes']:,} bytes; update from {u['base']}: "
                  f"{result.run_dir / 'update.sqzd'}, {u['delta_bytes']:,} bytes ({u['level']})")  # fmt: skip
    return 0
